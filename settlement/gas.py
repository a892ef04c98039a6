"""Gas used by each adjudicator call, measured on the embedded chain: ``python -m settlement.gas``.

Prints the Markdown table of contracts/README.md. Every number is the ``gasUsed`` of a mined
transaction's receipt (never an estimate). The Merkle depth of a claim is set by building a
proof of that many siblings and certifying the root it folds to, which is exactly what the
contract sees for a tree of 2**depth leaves.
"""

from __future__ import annotations

from typing import Any

from crdt.certificate import Certificate, sign_checkpoint
from crdt.eip712 import Checkpoint
from crdt.genesis import Genesis, Participant, Role, Token
from crdt.graph import Equivocation
from crdt.hashing import keccak256
from crdt.merkle import PayoutLeaf, hash_pair
from crdt.ops import sign_op
from crdt.types import Address, Hash32, Symbol
from settlement.chain import EmbeddedChain
from settlement.client import AdjudicatorClient, Sender, TestTokenClient, address_bytes, local_account

WINDOW = 3600


def _key(i: int) -> bytes:
    return keccak256(b"parley-gas-%d" % i)


class Bench:
    def __init__(self) -> None:
        self.chain = EmbeddedChain()
        self.owner = local_account(_key(10_000))
        self.chain.fund(self.owner.address, 10**22)
        self.sender = Sender(self.chain, self.owner)
        self.adjudicator = AdjudicatorClient.deploy(self.sender)
        self.token = TestTokenClient.deploy(self.sender, "USD Coin (test)", "USDC", 6)
        self.token.mint(self.owner.address, 10**18)
        self.token.approve(self.adjudicator.address, 2**255)
        self.nonce = 0
        self.rows: list[tuple[str, int]] = []

    def record(self, label: str, receipt: Any) -> None:
        self.rows.append((label, int(receipt["gasUsed"])))

    def channel(self, n: int, min_bond: int = 0, label: str | None = None) -> tuple[Genesis, list[bytes]]:
        self.nonce += 1
        keys = [_key(self.nonce * 1000 + i) for i in range(n)]
        participants = [Participant(address_bytes(local_account(k).address), Role.TRADER) for k in keys]
        genesis = Genesis.create(
            chain_id=self.chain.chain_id,
            adjudicator=self.adjudicator.address_bytes,
            participants=participants,
            tokens=[Token(Symbol("USDC"), address_bytes(self.token.address), 6)],
            dispute_window=WINDOW,
            min_bond=min_bond,
            nonce=self.nonce,
        )
        receipt = self.sender.transact(
            self.adjudicator.contract.functions.openChannel(
                [local_account(k).address for k in keys],
                genesis.threshold,
                WINDOW,
                [self.token.address],
                min_bond,
                self.nonce,
            )
        )
        if label is not None:
            self.record(label, receipt)
        return genesis, keys

    def certified(
        self, genesis: Genesis, keys: list[bytes], version: int, root: bytes, total: int, signers: int,
        withdrawn: int = 0,
    ) -> Certificate:
        checkpoint = Checkpoint(
            genesis.channel_id, version, Hash32(root), Hash32(b"\x01" * 32), (total,), (withdrawn,), 1, version
        )
        signatures = [sign_checkpoint(genesis.domain, checkpoint, k) for k in keys[:signers]]
        return Certificate(checkpoint, tuple(signatures), ())

    def deposit(self, genesis: Genesis, account: str, units: int) -> Any:
        return self.sender.transact(
            self.adjudicator.contract.functions.deposit(genesis.channel_id, self.token.address, units, account)
        )


def _root_at_depth(leaf: PayoutLeaf, depth: int) -> tuple[bytes, list[Hash32]]:
    """A root whose proof for `leaf` has `depth` siblings (what a tree of 2**depth leaves gives)."""
    proof = [Hash32(keccak256(b"sibling-%d" % i)) for i in range(depth)]
    node: bytes = leaf.hash()
    for sibling in proof:
        node = hash_pair(node, sibling)
    return node, proof


def measure() -> list[tuple[str, int]]:
    bench = Bench()
    adjudicator = bench.adjudicator

    for n in (4, 10, 100):
        genesis, keys = bench.channel(n, label=f"openChannel, {n} participants, 1 token")
        for i in range(2):
            receipt = bench.deposit(genesis, local_account(keys[i]).address, 1_000_000)
            if n == 4:
                bench.record("deposit (first of the channel)" if i == 0 else "deposit (later)", receipt)
        cert = bench.certified(genesis, keys, 1, b"\x02" * 32, 1_000_000, signers=n)
        bench.record(f"proposeSettlement, {n} signers", adjudicator.propose(cert))
        if n == 4:
            newer = bench.certified(genesis, keys, 2, b"\x03" * 32, 1_000_000, signers=n)
            bench.record("challengeSettlement, 4 signers", adjudicator.challenge(newer))
            bench.chain.increase_time(WINDOW + 1)
            bench.record("finalizeSettlement (the channel stays open)", adjudicator.finalize(genesis.channel_id))
            member = local_account(keys[0])
            bench.chain.fund(member.address, 10**19)
            as_member = adjudicator.with_sender(Sender(bench.chain, member))
            bench.record("requestClose (at the finalised checkpoint)", as_member.request_close(genesis.channel_id))
            bench.chain.increase_time(WINDOW + 1)
            bench.record("finalizeSettlement (concludes)", adjudicator.finalize(genesis.channel_id))

    for depth in (10, 20):
        genesis, keys = bench.channel(4)
        account = local_account(keys[0])
        bench.deposit(genesis, account.address, 5_000_000)
        bench.deposit(genesis, account.address, 1_000_000)  # not credited: refunded at the end
        withdrawal = PayoutLeaf(address_bytes(account.address), address_bytes(bench.token.address), 2_000_000, 1)
        root, proof = _root_at_depth(withdrawal, depth)
        adjudicator.propose(bench.certified(genesis, keys, 1, root, 3_000_000, signers=3, withdrawn=2_000_000))
        bench.chain.increase_time(WINDOW + 1)
        adjudicator.finalize(genesis.channel_id)
        bench.record(f"claimWithdrawal, Merkle depth {depth}", adjudicator.claim(genesis.channel_id, withdrawal, proof))
        balance = PayoutLeaf(withdrawal.account, withdrawal.token, 3_000_000)
        root, proof = _root_at_depth(balance, depth)
        closing = bench.certified(genesis, keys, 2, root, 3_000_000, signers=3, withdrawn=2_000_000)
        receipt = adjudicator.close(closing)
        if depth == 10:
            bench.record("closeChannel, 3 signers", receipt)
        bench.chain.increase_time(WINDOW + 1)
        adjudicator.finalize(genesis.channel_id)
        bench.record(f"claim, Merkle depth {depth}", adjudicator.claim(genesis.channel_id, balance, proof))
        if depth == 10:
            bench.record("refundDeposit", adjudicator.refund_deposit(genesis.channel_id, 2))

    genesis, keys = bench.channel(4, min_bond=10**17)
    offender = local_account(keys[1])
    bench.chain.fund(offender.address, 10**19)
    as_offender = adjudicator.with_sender(Sender(bench.chain, offender))
    bench.record("bond", as_offender.bond(genesis.channel_id, 10**18))
    bench.record("unbond (start)", as_offender.unbond(genesis.channel_id, 10**17))
    ctx = genesis.context()
    body: dict[str, Any] = {"to": Address(b"\x00" * 20), "token": "USDC", "amount": 1}
    first = sign_op(ctx, keys[1], 1, [], "transfer", body)
    second = sign_op(ctx, keys[1], 1, [], "transfer", {**body, "amount": 2})
    bench.record("slashEquivocation", adjudicator.slash_equivocation(Equivocation(first, second)))
    as_offender.bond(genesis.channel_id, 10**18)
    a = Checkpoint(genesis.channel_id, 1, Hash32(b"\x04" * 32), Hash32(b"\x05" * 32), (0,), (0,), 0, 1)
    b = Checkpoint(genesis.channel_id, 1, Hash32(b"\x06" * 32), Hash32(b"\x05" * 32), (0,), (0,), 0, 1)
    bench.record(
        "slashDoubleSign",
        adjudicator.slash_double_sign(
            a, sign_checkpoint(genesis.domain, a, keys[1]), b, sign_checkpoint(genesis.domain, b, keys[1])
        ),
    )
    return bench.rows


def main() -> None:
    rows = measure()
    print("| call | gas used |")
    print("|---|---:|")
    for label, gas in rows:
        print(f"| {label} | {gas:,} |")


if __name__ == "__main__":
    main()
