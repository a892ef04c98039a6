"""Several replicas, honest and Byzantine authors, and a sequential model (STYLE.md, "Tests").

Honest authors 0-2 sign transfers on the heads of their own replica. Byzantine author 3 (a
trader) equivocates, skips sequence numbers, withholds parents, replays old operations and
sends bad signatures or another channel's operations; author 4 is an observer. Byzantine
transfers go only between Byzantine accounts, so the honest accounts must behave exactly as in a
sequential model of the honest operations alone (while nothing is certified).

Certification interleaves (as consensus would drive it, without the network): a replica
proposes its heads as the next cut, with a deposit or none; the cut is then certified, and
each replica applies the certified cuts in order as soon as it holds their operations (or by
sync). Operations signed on a replica that lags behind the cuts arrive late and may be stale.
Every replica must then match the epoch-order model of its operations and cuts; the roots at a
certified version must be the ones its proposer previewed, on every replica that applied it
and forever after; certified cuts and final outcomes never change; and every token is conserved
to the base unit (e9 in the state, the token's own decimals in the payout leaves).
"""

from __future__ import annotations

import contextlib

from eth_account.messages import _hash_eip191_message, encode_typed_data
from eth_keys import keys as eth_keys
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from crdt.eip712 import op_typed_data
from crdt.errors import BadSequence, BadSignature, WrongChannel
from crdt.ledger import Deposit
from crdt.merkle import BALANCE, WITHDRAWN
from crdt.ops import SignedOp
from crdt.replica import Cut, Replica
from crdt.testing import forge, receive_bytes
from crdt.types import Hash32, OpId
from crdt.units import from_e9
from tests.crdt.crdt_support import (
    ADDR,
    GENESIS,
    KEYS,
    N_PARTICIPANTS,
    OTHER_CTX,
    Model,
    check_replica,
    fingerprint,
    model_replay,
    op_set,
    sign,
    transfer,
)

HONEST = (0, 1, 2)
BYZANTINE = 3
REPLICAS = 3
amounts = st.integers(1, 60).map(lambda units: units * 10**9)


def recovers_to(author: bytes, op_id: bytes, signature: bytes) -> bool:
    v, r, s = signature[64] - 27, int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:64], "big")
    public = eth_keys.Signature(vrs=(v, r, s)).recover_public_key_from_msg_hash(op_id)
    return public.to_canonical_address() == author


class Channel(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.replicas = [Replica(GENESIS) for _ in range(REPLICAS)]
        self.pool: list[SignedOp] = []  # every validly signed op anyone may deliver
        self.honest: set[bytes] = set()
        self.withheld: list[SignedOp] = []
        self.seq = dict.fromkeys(range(5), 0)
        self.last: dict[int, SignedOp] = {}
        self.forks: list[tuple[SignedOp, SignedOp]] = []
        self.vv = [dict[bytes, int]() for _ in range(REPLICAS)]
        self.cuts: list[Cut] = []  # certified, in version order (what consensus decided)
        self.roots: dict[int, tuple[Hash32, Hash32]] = {}  # version -> its proposer's preview
        self.finals: list[dict[OpId, tuple[int, str | None]]] = [{} for _ in range(REPLICAS)]

    def byzantine_op(self, body: dict, seq: int, extra_parents: list[bytes] = ()) -> SignedOp:  # type: ignore[assignment]
        parents = list(extra_parents)
        if BYZANTINE in self.last:
            parents.append(self.last[BYZANTINE].op_id)
        return sign(BYZANTINE, seq, parents, "transfer", body)

    # -- honest -----------------------------------------------------------------------------

    @rule(author=st.sampled_from(HONEST), offset=st.integers(1, 3), amount=amounts)
    def honest_transfer(self, author: int, offset: int, amount: int) -> None:
        to = (author + offset) % 4  # another trader, honest or Byzantine
        replica = self.replicas[author]
        self.seq[author] += 1
        op = sign(author, self.seq[author], sorted(replica.graph.heads)[:64], "transfer", transfer(to, amount))
        assert replica.receive(op).accepted == [op]
        self.pool.append(op)
        self.honest.add(op.op_id)

    # -- delivery and sync ------------------------------------------------------------------

    @precondition(lambda self: self.pool)
    @rule(index=st.integers(0, 10**6), where=st.integers(0, REPLICAS - 1))
    def deliver(self, index: int, where: int) -> None:
        op = self.pool[index % len(self.pool)]
        replica = self.replicas[where]
        before = fingerprint(replica), replica.replayed
        try:
            replica.receive(op)
        except BadSequence:
            assert (fingerprint(replica), replica.replayed) == before
            return
        if op.op_id in replica.graph.ops and before[0][0][0] >= {op.raw}:  # a replay
            assert (fingerprint(replica), replica.replayed) == before

    @rule(a=st.integers(0, REPLICAS - 1), b=st.integers(0, REPLICAS - 1))
    def sync(self, a: int, b: int) -> None:
        x, y = self.replicas[a], self.replicas[b]
        x.merge(y)
        y.merge(x)
        assert fingerprint(x) == fingerprint(y)

    # -- certification ----------------------------------------------------------------------

    def apply_certified_cuts(self, replica: Replica) -> None:
        """What the node does with decided cuts: certify them in order, once it holds their
        operations (it would fetch the missing ones; here they come by delivery or sync)."""
        while replica.version < len(self.cuts):
            cut = self.cuts[replica.version]
            if not all(head in replica.graph.ops for head in cut.heads):
                return
            replica.certify(cut)

    @rule(
        where=st.integers(0, REPLICAS - 1),
        deposit=st.none() | st.tuples(st.integers(0, N_PARTICIPANTS - 1), st.sampled_from(["USDC", "WETH"]), amounts),
    )
    def certify(self, where: int, deposit: tuple[int, str, int] | None) -> None:
        proposer = self.replicas[where]
        self.apply_certified_cuts(proposer)
        if proposer.version < len(self.cuts):
            return  # it lacks operations of a certified cut: it cannot propose the next one
        version = len(self.cuts) + 1
        nonce = proposer.ledger.deposit_nonce + 1
        deposits = () if deposit is None else (Deposit(nonce, ADDR[deposit[0]], deposit[1], deposit[2]),)
        cut = Cut(version, tuple(sorted(proposer.graph.heads)), 1000 * version, deposits)
        before = fingerprint(proposer)
        preview = proposer.preview(cut)
        assert fingerprint(proposer) == before
        self.cuts.append(cut)
        self.roots[version] = (preview.state_hash, preview.payout_root)
        for replica in self.replicas:
            self.apply_certified_cuts(replica)

    @rule(where=st.integers(0, REPLICAS - 1))
    def apply_certified(self, where: int) -> None:
        self.apply_certified_cuts(self.replicas[where])

    # -- Byzantine --------------------------------------------------------------------------

    @rule(a=amounts, b=amounts, on=st.integers(0, REPLICAS - 1))
    def equivocate(self, a: int, b: int, on: int) -> None:
        seq = self.seq[BYZANTINE] + 1
        heads = sorted(self.replicas[on].graph.heads)[:8]
        first = self.byzantine_op(transfer(4, a), seq, heads)
        second = self.byzantine_op(transfer(4, b + 1), seq, heads)
        if first.op_id == second.op_id:
            return
        self.seq[BYZANTINE] = seq
        self.last[BYZANTINE] = first
        self.pool += [first, second]
        self.forks.append((first, second))

    @rule(amount=amounts)
    def skip_a_sequence_number(self, amount: int) -> None:
        self.pool.append(self.byzantine_op(transfer(4, amount), self.seq[BYZANTINE] + 2))

    @rule(amount=amounts, where=st.integers(0, REPLICAS - 1))
    def withhold_parent(self, amount: int, where: int) -> None:
        parent = self.byzantine_op(transfer(4, amount), self.seq[BYZANTINE] + 1)
        child = sign(BYZANTINE, parent.seq + 1, [parent.op_id], "transfer", transfer(4, amount))
        self.seq[BYZANTINE] += 2
        self.last[BYZANTINE] = child
        self.withheld.append(parent)
        self.pool.append(child)
        self.replicas[where].receive(child)
        assert self.replicas[where].status(child.op_id) == "pending"

    @precondition(lambda self: self.withheld)
    @rule()
    def release_withheld_parent(self) -> None:
        self.pool.append(self.withheld.pop(0))

    @rule(where=st.integers(0, REPLICAS - 1), kind=st.sampled_from(["wrong-key", "garbage", "high-s"]))
    def bad_signature(self, where: int, kind: str) -> None:
        honest = sign(0, 10**6, [], "transfer", transfer(1, 1))
        stolen = sign(BYZANTINE, 10**6, [], "transfer", transfer(1, 1)).signature
        signature = {
            "wrong-key": stolen,
            "garbage": bytes([7]) * 64 + b"\x1b",
            "high-s": honest.signature[:32]
            + (
                0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
                - int.from_bytes(honest.signature[32:64], "big")
            ).to_bytes(32, "big")
            + bytes([55 - honest.signature[64]]),
        }[kind]
        data = forge(
            self.replicas[where].ctx,
            author=ADDR[0],
            seq=honest.seq,
            parents=[],
            kind="transfer",
            body=honest.body,
            ts=0,
            signature=signature,
        )
        replica = self.replicas[where]
        before = fingerprint(replica)
        try:
            receive_bytes(replica, data)
        except BadSignature:
            pass
        else:
            raise AssertionError("a forged signature was accepted")
        assert fingerprint(replica) == before

    @rule(where=st.integers(0, REPLICAS - 1))
    def another_channels_op(self, where: int) -> None:
        op = sign(BYZANTINE, 1, [], "transfer", transfer(0, 10**9), ctx=OTHER_CTX)
        replica = self.replicas[where]
        before = fingerprint(replica)
        try:
            receive_bytes(replica, op.raw)
        except WrongChannel:
            pass
        else:
            raise AssertionError("another channel's operation was accepted")
        assert fingerprint(replica) == before

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def conservation_everywhere(self) -> None:
        for replica in self.replicas:
            check_replica(replica)

    @invariant()
    def version_vectors_only_grow(self) -> None:
        for i, replica in enumerate(self.replicas):
            for author, seq in self.vv[i].items():
                assert replica.graph.version_vector[author] >= seq
            self.vv[i] = dict(replica.graph.version_vector)

    @invariant()
    def synced_replicas_are_equal(self) -> None:
        for i, x in enumerate(self.replicas):
            for y in self.replicas[i + 1 :]:
                if op_set(x) == op_set(y) and x.cuts == y.cuts:
                    assert fingerprint(x) == fingerprint(y)

    @invariant()
    def certified_cuts_never_change(self) -> None:
        for i, replica in enumerate(self.replicas):
            assert replica.cuts == self.cuts[: replica.version]
            finals = {op_id: (epoch, replica.outcome[op_id]) for op_id, epoch in replica.epoch_of.items()}
            assert {op_id: finals[op_id] for op_id in self.finals[i]} == self.finals[i]
            self.finals[i] = finals

    @invariant()
    def a_certified_version_has_its_previewed_roots_on_every_replica(self) -> None:
        """Rebuilt from the replica's own final operations, one epoch at a time, so nothing
        else it holds (tentative, late, stale or pending operations) can count: the state at
        version v is what v's proposer previewed, on every replica that applied v, and stays so."""
        for replica in self.replicas:
            rebuilt = Replica(GENESIS)
            for cut in replica.cuts:
                epoch = [replica.graph.ops[op_id] for op_id, e in replica.epoch_of.items() if e == cut.version]
                rebuilt.receive_many(sorted(epoch, key=lambda op: op.op_id))
                rebuilt.certify(cut)
                assert (rebuilt.state_hash(), rebuilt.payout_root()) == self.roots[cut.version], cut.version
                check_replica(rebuilt)

    @invariant()
    def every_token_is_conserved_to_the_base_unit(self) -> None:
        accounts = GENESIS.addresses
        for replica in self.replicas:
            ledger, leaves = replica.ledger, replica.payout_tree().leaves
            for token in GENESIS.tokens:
                symbol = token.symbol
                credited = sum(b.amount for b in GENESIS.initial_balances if b.token == symbol) + sum(
                    d.amount for cut in replica.cuts for d in cut.deposits if d.token == symbol
                )
                entitled = sum(ledger.entitlement(a, symbol) for a in accounts)
                withdrawn = sum(ledger.withdrawn_by(a, symbol) for a in accounts)
                fees = ledger.fees(symbol) + ledger.insurance.get(symbol, 0)
                assert entitled + withdrawn + fees == credited, symbol  # e9, exactly
                paid = [sum(x.amount for x in leaves if x.token == token.address and x.kind == k) for k in (0, 1)]
                assert paid[BALANCE] == from_e9(entitled, token.decimals)  # apportioned: nothing lost
                assert paid[WITHDRAWN] == from_e9(withdrawn, token.decimals)
                assert withdrawn % ledger.unit(symbol) == 0  # withdrawals are whole units
                assert sum(paid) <= from_e9(credited, token.decimals)

    @invariant()
    def replicas_match_the_epoch_order_model(self) -> None:
        for replica in self.replicas:
            model, outcome = model_replay(GENESIS, list(replica.graph.ops.values()), replica.cuts)
            assert replica.outcome == outcome
            assert replica.balances() == model.views()

    @invariant()
    def honest_operations_match_the_sequential_model(self) -> None:
        for replica in self.replicas:
            if replica.cuts:
                continue  # an epoch order: replicas_match_the_epoch_order_model
            graph = replica.graph
            honest = sorted((op_id for op_id in self.honest if op_id in graph.ops), key=graph.key)
            model = Model(GENESIS)
            for op_id in honest:
                expected = model.apply(graph.ops[op_id])
                assert replica.outcome[op_id] == expected, replica.status(op_id)
            for i in HONEST:
                for token in ("USDC", "WETH"):
                    assert replica.ledger.balance(ADDR[i], token) == model.balances.get((ADDR[i], token), 0)

    @invariant()
    def honest_operations_delivered_everywhere_are_accepted(self) -> None:
        for op_id in self.honest:
            if all(op_id in r.graph.ops or op_id in r.graph.pending for r in self.replicas):
                # an honest op waits only for Byzantine parents still withheld somewhere
                for replica in self.replicas:
                    assert replica.status(op_id) != "unknown"

    @invariant()
    def equivocation_is_proven(self) -> None:
        for first, second in self.forks:
            for replica in self.replicas:
                if first.op_id in replica.graph.ops and second.op_id in replica.graph.ops:
                    evidence = replica.graph.evidence[(first.author, first.seq)]
                    channel, author, seq, hash_a, sig_a, hash_b, sig_b = evidence.contract_args()
                    assert author == ADDR[BYZANTINE]
                    assert hash_a != hash_b
                    for content_hash, signature in ((hash_a, sig_a), (hash_b, sig_b)):
                        message = op_typed_data(GENESIS.domain, channel, author, seq, content_hash)
                        digest = bytes(_hash_eip191_message(encode_typed_data(full_message=message)))
                        assert recovers_to(author, digest, signature)
                    assert {replica.status(first.op_id), replica.status(second.op_id)} & {
                        "rejected:equivocation",
                        "rejected:insufficient_balance",
                    }

    def teardown(self) -> None:
        # deliver everything, sync everyone: all replicas end equal, honest ops all accepted
        for op in self.pool + self.withheld:
            for replica in self.replicas:
                with contextlib.suppress(BadSequence):
                    replica.receive(op)
        for _ in range(2):
            for x in self.replicas:
                for y in self.replicas:
                    x.merge(y)
        first = fingerprint(self.replicas[0])
        for replica in self.replicas:
            assert fingerprint(replica) == first
            assert replica.cuts == self.cuts
            allowed = ("tentative", "final", "rejected:insufficient_balance", "rejected:stale")
            for op_id in self.honest:
                assert replica.status(op_id) in allowed
        self.honest_operations_match_the_sequential_model()
        self.replicas_match_the_epoch_order_model()


_ = KEYS
Channel.TestCase.settings = settings(max_examples=max(10, settings.default.max_examples // 2), stateful_step_count=40)
TestChannel = Channel.TestCase
