"""The adjudicator client: deploy, open, deposit, bond, propose, challenge, finalize, claim, slash.

Invariants:
- the contract is only ever built from the committed artifacts in ``contracts/build/`` (no
  compiler at run time), and `ARTIFACT_VERSION` names the compiler they came from;
- every transaction is estimated first: a revert surfaces before anything is signed, as a
  `ContractReverted` carrying the contract's custom error name and decoded arguments; a
  transaction that still fails when mined is replayed with ``eth_call`` at its block to get the
  same error;
- before sending, the account must hold gas * max fee + value, else `InsufficientGas`, so a
  dispute never silently fails for lack of gas (DESIGN.md, "Disputes that fail for lack of gas");
- amounts cross the edge once: `deposit` takes e9 units (the state's) and converts them to token
  decimals exactly, refusing amounts the token cannot represent; payouts are read in token
  decimals from the certificate, which the core rounded down;
- connection failures are retried with exponential backoff (`settlement.chain.retrying`), and
  become `RpcUnavailable` when they persist.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.abi import function_signature_to_4byte_selector
from eth_utils.address import to_checksum_address
from web3.contract import Contract
from web3.exceptions import ContractCustomError, ContractLogicError, ContractPanicError, Web3RPCError
from web3.logs import DISCARD

from crdt.certificate import Certificate
from crdt.eip712 import Checkpoint
from crdt.genesis import Genesis, Token
from crdt.graph import Equivocation
from crdt.merkle import WITHDRAWN, PayoutLeaf
from crdt.types import Address, ChannelId, Hash32
from crdt.units import from_e9, to_e9
from settlement.chain import Chain, retrying
from settlement.errors import ChainDataError, ContractReverted, InsufficientGas

BUILD = Path(__file__).resolve().parent.parent / "contracts" / "build"
STATUS_NAMES = ("none", "open", "closing", "concluded")
GAS_MARGIN_NUM, GAS_MARGIN_DEN = 5, 4  # send with 25% more gas than estimated
# Rough upper bounds used to check that an account can carry a dispute to its end.
FINALIZE_GAS = 60_000
CLAIM_GAS = 200_000


@cache
def load_artifact(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((BUILD / f"{name}.json").read_text())
    return data


def checksum(address: bytes | str) -> str:
    if isinstance(address, bytes):
        return to_checksum_address("0x" + address.hex())
    return to_checksum_address(address)


def address_bytes(address: str) -> Address:
    return Address(bytes.fromhex(address[2:] if address.startswith("0x") else address))


# -- revert decoding ------------------------------------------------------------------------------


@cache
def _error_table() -> dict[bytes, tuple[str, list[str]]]:
    table: dict[bytes, tuple[str, list[str]]] = {
        bytes.fromhex("08c379a0"): ("Error", ["string"]),
        bytes.fromhex("4e487b71"): ("Panic", ["uint256"]),
    }
    for name in ("Adjudicator", "TestToken", "ReentrantToken"):
        for entry in load_artifact(name)["abi"]:
            if entry["type"] == "error":
                types = [_abi_type(item) for item in entry["inputs"]]
                signature = f"{entry['name']}({','.join(types)})"
                table[function_signature_to_4byte_selector(signature)] = (entry["name"], types)
    return table


def _abi_type(item: dict[str, Any]) -> str:
    kind: str = item["type"]
    if kind.startswith("tuple"):
        inner = ",".join(_abi_type(component) for component in item["components"])
        return f"({inner}){kind[5:]}"
    return kind


def decode_revert(data: bytes) -> ContractReverted:
    """The custom error (or Error/Panic) in revert data, decoded with the committed ABIs."""
    if len(data) < 4:
        return ContractReverted("unknown", (), data)
    entry = _error_table().get(data[:4])
    if entry is None:
        return ContractReverted("unknown", (data[:4],), data)
    name, types = entry
    try:
        args = tuple(abi_decode(types, data[4:]))
    except Exception:
        args = ()
    return ContractReverted(name, args, data)


def _revert_data(exc: BaseException) -> bytes | None:
    data = getattr(exc, "data", None)
    if isinstance(data, dict):  # some providers nest it
        data = data.get("data")
    if isinstance(data, bytes):
        return data
    if isinstance(data, str) and data.startswith("0x"):
        try:
            return bytes.fromhex(data[2:])
        except ValueError:
            return None
    return None


def _chain_of(exc: BaseException) -> list[BaseException]:
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in found:
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


def _tester_revert_bytes(arg: object) -> bytes | None:
    """eth-tester puts the revert data in args[0]: as bytes (transactions), or as the text of a
    bytes literal after "execution reverted: " (calls)."""
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        text = arg.removeprefix("execution reverted: ")
        if text[:2] in ("b'", 'b"'):
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                return None
            return value if isinstance(value, bytes) else None
    return None


def as_revert(exc: BaseException) -> ContractReverted | None:
    """Turn web3's (and eth-tester's) revert exceptions into `ContractReverted`, or None for
    anything else."""
    if type(exc).__name__ == "TransactionFailed":  # eth-tester: raw revert bytes down the chain
        for link in _chain_of(exc):
            data = _tester_revert_bytes(link.args[0] if link.args else None)
            if data is not None:
                return decode_revert(data)
        return ContractReverted("unknown", (str(exc),))
    if isinstance(exc, ContractCustomError | ContractPanicError | ContractLogicError):
        data = _revert_data(exc)
        if data is not None:
            return decode_revert(data)
        return ContractReverted("unknown", (str(exc),))
    if isinstance(exc, Web3RPCError) and "revert" in str(exc).lower():
        data = _revert_data(exc)
        return decode_revert(data) if data is not None else ContractReverted("unknown", (str(exc),))
    return None


# -- transactions -------------------------------------------------------------------------------


class Sender:
    """Signs with a local key and sends: estimate, check funds, sign, send, wait, check status."""

    def __init__(self, chain: Chain, account: LocalAccount) -> None:
        self.chain = chain
        self.w3 = chain.w3
        self.account = account

    @property
    def address(self) -> Any:
        return self.account.address

    def balance(self) -> int:
        return int(retrying(lambda: self.w3.eth.get_balance(self.address), what="get_balance"))

    def max_fee(self) -> int:
        block = retrying(lambda: self.w3.eth.get_block("latest"), what="get_block")
        base = int(block.get("baseFeePerGas", 0) or 0)
        priority = 1_000_000_000 if base else 0
        return max(2 * base + priority, int(retrying(lambda: self.w3.eth.gas_price, what="gas_price")))

    def ensure_can_pay(self, gas: int, value: int = 0, what: str = "this transaction") -> None:
        need = gas * self.max_fee() + value
        have = self.balance()
        if have < need:
            raise InsufficientGas(
                f"{self.address} holds {have} wei but {what} needs up to {need} wei (gas {gas})", self.address
            )

    def estimate(self, call: Any, value: int = 0) -> int:
        params = {"from": self.address, "value": value}
        try:
            if self.chain.fixed_gas is not None and hasattr(call, "call"):
                call.call(params)  # raises on a revert, like the estimate would
                return self.chain.fixed_gas
            return int(retrying(lambda: call.estimate_gas(params), what="estimate"))
        except Exception as exc:
            reverted = as_revert(exc)
            if reverted is not None:
                raise reverted from exc
            text = str(exc).lower()
            if "cannot afford" in text or "insufficient funds" in text:
                raise InsufficientGas(f"{self.address} cannot pay the gas of this transaction: it holds "
                                      f"{self.balance()} wei", self.address) from exc
            raise

    def transact(self, call: Any, value: int = 0, extra_gas: int = 0) -> Any:
        """Send a contract call (or constructor); return the receipt of the mined transaction."""
        gas = self.estimate(call, value)
        if self.chain.fixed_gas is None:
            gas = gas * GAS_MARGIN_NUM // GAS_MARGIN_DEN + 10_000
        self.ensure_can_pay(gas + extra_gas, value)
        fee = self.max_fee()
        nonce = retrying(lambda: self.w3.eth.get_transaction_count(self.address, "pending"), what="nonce")
        params: dict[str, Any] = {
            "from": self.address,
            "value": value,
            "gas": gas,
            "nonce": nonce,
            "chainId": self.chain.chain_id,
            "maxFeePerGas": fee,
            "maxPriorityFeePerGas": min(fee, 1_000_000_000),
        }
        tx = call.build_transaction(params)
        signed = self.account.sign_transaction(tx)
        tx_hash = signed.hash

        def send() -> None:
            try:
                self.w3.eth.send_raw_transaction(signed.raw_transaction)
            except Exception as exc:
                text = str(exc).lower()
                if "already known" in text or "already imported" in text:
                    return  # a retry of a send that reached the node
                raise

        retrying(send, what="send_raw_transaction")
        receipt = retrying(
            lambda: self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=120), what="receipt"
        )
        if receipt["status"] != 1:
            raise self._replay_failure(tx, receipt)
        return receipt

    def _replay_failure(self, tx: dict[str, Any], receipt: Any) -> ContractReverted:
        call = {key: tx[key] for key in ("from", "to", "data", "value", "gas") if key in tx}
        try:
            self.w3.eth.call(call, receipt["blockNumber"])  # type: ignore[arg-type]
        except Exception as exc:
            reverted = as_revert(exc)
            if reverted is not None:
                return reverted
        return ContractReverted("unknown", ("transaction failed (out of gas?)",))


# -- values read from the contract --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    status: str  # "open", "pending" (open, a checkpoint in dispute), "closing" or "concluded" (or "none")
    participants: tuple[Address, ...]
    threshold: int
    dispute_window: int
    tokens: tuple[Address, ...]
    min_bond: int
    deposit_nonce: int
    insurance: int
    fully_bonded: int = 0  # participants with at least min_bond

    @property
    def disputing(self) -> bool:
        """A checkpoint is in its dispute window (proposed, challenged or closing)."""
        return self.status in ("pending", "closing")


@dataclass(frozen=True, slots=True)
class SettlementInfo:
    version: int
    deposit_nonce: int
    time: int
    finalizes_at: int
    payout_root: Hash32
    state_hash: Hash32
    totals: tuple[int, ...]
    withdrawn: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class BondInfo:
    bonded: int
    unbonding: int
    ready_at: int


def checkpoint_arg(checkpoint: Checkpoint) -> tuple[Any, ...]:
    return (
        checkpoint.channel,
        checkpoint.version,
        checkpoint.payout_root,
        checkpoint.state_hash,
        list(checkpoint.totals),
        list(checkpoint.withdrawn),
        checkpoint.deposit_nonce,
        checkpoint.time,
    )


class TestTokenClient:
    """The mintable test ERC-20 (contracts/src/test/TestToken.sol)."""

    __test__ = False  # not a pytest class

    def __init__(self, sender: Sender, address: str) -> None:
        self.sender = sender
        self.address = checksum(address)
        self.contract: Contract = sender.w3.eth.contract(address=self.address, abi=load_artifact("TestToken")["abi"])  # type: ignore[call-overload]

    @classmethod
    def deploy(cls, sender: Sender, name: str = "Test USD", symbol: str = "TUSD", decimals: int = 6) -> TestTokenClient:
        artifact = load_artifact("TestToken")
        factory = sender.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        receipt = sender.transact(factory.constructor(name, symbol, decimals))
        return cls(sender, receipt["contractAddress"])

    def with_sender(self, sender: Sender) -> TestTokenClient:
        return TestTokenClient(sender, self.address)

    def mint(self, to: bytes | str, amount: int) -> None:
        self.sender.transact(self.contract.functions.mint(checksum(to), amount))

    def approve(self, spender: bytes | str, amount: int) -> None:
        self.sender.transact(self.contract.functions.approve(checksum(spender), amount))

    def balance_of(self, owner: bytes | str) -> int:
        return int(self.contract.functions.balanceOf(checksum(owner)).call())

    def decimals(self) -> int:
        return int(self.contract.functions.decimals().call())


class AdjudicatorClient:
    """One adjudicator at `address`, acting as `sender`."""

    def __init__(self, sender: Sender, address: str) -> None:
        self.sender = sender
        self.chain = sender.chain
        self.w3 = sender.w3
        self.address = checksum(address)
        self.contract: Contract = self.w3.eth.contract(address=self.address, abi=load_artifact("Adjudicator")["abi"])  # type: ignore[call-overload]

    @classmethod
    def deploy(cls, sender: Sender) -> AdjudicatorClient:
        artifact = load_artifact("Adjudicator")
        factory = sender.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        receipt = sender.transact(factory.constructor())
        return cls(sender, receipt["contractAddress"])

    def with_sender(self, sender: Sender) -> AdjudicatorClient:
        return AdjudicatorClient(sender, self.address)

    @property
    def address_bytes(self) -> Address:
        return address_bytes(self.address)

    def _call(self, fn: Any) -> Any:
        try:
            return retrying(fn.call, what="eth_call")
        except Exception as exc:
            reverted = as_revert(exc)
            if reverted is not None:
                raise reverted from exc
            raise

    # -- channels --------------------------------------------------------------------------

    def open_channel(
        self,
        participants: Sequence[bytes],
        threshold: int,
        dispute_window: int,
        tokens: Sequence[bytes],
        min_bond: int = 0,
        nonce: int = 0,
    ) -> ChannelId:
        receipt = self.sender.transact(
            self.contract.functions.openChannel(
                [checksum(p) for p in participants],
                threshold,
                dispute_window,
                [checksum(t) for t in tokens],
                min_bond,
                nonce,
            )
        )
        events = self.contract.events.ChannelOpened().process_receipt(receipt, errors=DISCARD)
        return ChannelId(bytes(events[0]["args"]["channelId"]))

    def open_genesis(self, genesis: Genesis) -> ChannelId:
        """Open the channel of `genesis` here; fails if the ids would differ (wrong chain or
        adjudicator in the genesis)."""
        if genesis.chain_id != self.chain.chain_id or genesis.adjudicator != self.address_bytes:
            raise ChainDataError("the genesis names another chain or adjudicator")
        channel = self.open_channel(
            list(genesis.addresses),
            genesis.threshold,
            genesis.dispute_window,
            [t.address for t in genesis.tokens],
            genesis.min_bond,
            genesis.nonce,
        )
        if channel != genesis.channel_id:
            raise ChainDataError("the contract derived another channel id than the genesis")
        return channel

    def deposit(self, channel: bytes, token: Token, amount_e9: int, account: bytes | str) -> int:
        """Deposit `amount_e9` (e9 units) of a genesis token for `account`; approves first if
        needed. Returns the deposit nonce. The amount must be exact in the token's decimals."""
        units = from_e9(amount_e9, token.decimals)
        if to_e9(units, token.decimals) != amount_e9 or units <= 0:
            raise ValueError(
                f"{amount_e9} e9 is not a positive whole amount of {token.symbol} ({token.decimals} decimals)"
            )
        return self.deposit_units(channel, token.address, units, account)

    def deposit_units(self, channel: bytes, token: bytes | str, units: int, account: bytes | str) -> int:
        """Deposit `units` in the token's own decimals."""
        erc20 = TestTokenClient(self.sender, checksum(token))
        allowance = int(erc20.contract.functions.allowance(self.sender.address, self.address).call())
        if allowance < units:
            erc20.approve(self.address, units)
        receipt = self.sender.transact(
            self.contract.functions.deposit(channel, checksum(token), units, checksum(account))
        )
        events = self.contract.events.Deposited().process_receipt(receipt, errors=DISCARD)
        return int(events[0]["args"]["nonce"])

    # -- bonds -----------------------------------------------------------------------------

    def bond(self, channel: bytes, wei: int) -> Any:
        return self.sender.transact(self.contract.functions.bond(channel), value=wei)

    def unbond(self, channel: bytes, wei: int) -> Any:
        return self.sender.transact(self.contract.functions.unbond(channel, wei))

    def withdraw_bond(self, channel: bytes) -> Any:
        return self.sender.transact(self.contract.functions.withdrawBond(channel))

    # -- settlement ------------------------------------------------------------------------

    def propose(self, certificate: Certificate) -> Any:
        return self.propose_raw(certificate.checkpoint, certificate.signatures)

    def propose_raw(self, checkpoint: Checkpoint, signatures: Sequence[bytes]) -> Any:
        call = self.contract.functions.proposeSettlement(checkpoint_arg(checkpoint), list(signatures))
        return self.sender.transact(call, extra_gas=FINALIZE_GAS)

    def challenge(self, certificate: Certificate) -> Any:
        return self.challenge_raw(certificate.checkpoint, certificate.signatures)

    def challenge_raw(self, checkpoint: Checkpoint, signatures: Sequence[bytes]) -> Any:
        call = self.contract.functions.challengeSettlement(checkpoint_arg(checkpoint), list(signatures))
        return self.sender.transact(call, extra_gas=FINALIZE_GAS)

    def close(self, certificate: Certificate) -> Any:
        """Close the channel with `certificate` (one window, then it concludes)."""
        return self.close_raw(certificate.checkpoint, certificate.signatures)

    def close_raw(self, checkpoint: Checkpoint, signatures: Sequence[bytes]) -> Any:
        call = self.contract.functions.closeChannel(checkpoint_arg(checkpoint), list(signatures))
        return self.sender.transact(call, extra_gas=FINALIZE_GAS)

    def request_close(self, channel: bytes) -> Any:
        """Close at the newest checkpoint on-chain, without a certificate (participants only)."""
        return self.sender.transact(self.contract.functions.requestClose(channel), extra_gas=FINALIZE_GAS)

    def finalize(self, channel: bytes) -> Any:
        return self.sender.transact(self.contract.functions.finalizeSettlement(channel))

    def claim(self, channel: bytes, leaf: PayoutLeaf, proof: Sequence[bytes]) -> Any:
        """Pay a leaf: a balance leaf once the channel concluded, or the increase of a withdrawal
        leaf of the finalised checkpoint."""
        if leaf.kind == WITHDRAWN:
            call = self.contract.functions.claimWithdrawal(
                channel, checksum(leaf.account), checksum(leaf.token), leaf.amount, list(proof)
            )
        else:
            call = self.contract.functions.claim(
                channel, checksum(leaf.account), checksum(leaf.token), leaf.amount, list(proof)
            )
        return self.sender.transact(call)

    def refund_deposit(self, channel: bytes, nonce: int) -> Any:
        return self.sender.transact(self.contract.functions.refundDeposit(channel, nonce))

    def slash_equivocation(self, evidence: Equivocation) -> Any:
        channel, author, seq, hash_a, sig_a, hash_b, sig_b = evidence.contract_args()
        call = self.contract.functions.slashEquivocation(
            channel, checksum(author), seq, hash_a, sig_a, hash_b, sig_b
        )
        return self.sender.transact(call)

    def slash_double_sign(
        self, first: Checkpoint, signature_a: bytes, second: Checkpoint, signature_b: bytes
    ) -> Any:
        call = self.contract.functions.slashDoubleSign(
            checkpoint_arg(first), signature_a, checkpoint_arg(second), signature_b
        )
        return self.sender.transact(call)

    # -- views -----------------------------------------------------------------------------

    def channel(self, channel: bytes) -> ChannelInfo:
        status, disputing, participants, threshold, window, tokens, min_bond, nonce, insurance, bonded = self._call(
            self.contract.functions.getChannel(channel)
        )
        name = STATUS_NAMES[status]
        return ChannelInfo(
            "pending" if name == "open" and disputing else name,
            tuple(address_bytes(p) for p in participants),
            int(threshold),
            int(window),
            tuple(address_bytes(t) for t in tokens),
            int(min_bond),
            int(nonce),
            int(insurance),
            int(bonded),
        )

    def settlement(self, channel: bytes) -> SettlementInfo:
        """The checkpoint in dispute (meaningful while the channel is pending or closing)."""
        return self._settlement(self.contract.functions.getSettlement(channel))

    def finalized(self, channel: bytes) -> SettlementInfo:
        """The newest finalised checkpoint (version 0: none yet)."""
        return self._settlement(self.contract.functions.getFinalized(channel))

    def _settlement(self, call: Any) -> SettlementInfo:
        version, nonce, time, finalizes_at, root, state, totals, withdrawn = self._call(call)
        return SettlementInfo(
            int(version), int(nonce), int(time), int(finalizes_at), Hash32(bytes(root)), Hash32(bytes(state)),
            tuple(int(t) for t in totals), tuple(int(w) for w in withdrawn),
        )

    def withdrawal_paid(self, channel: bytes, account: bytes | str, token: bytes | str) -> int:
        return int(self._call(self.contract.functions.withdrawalPaid(channel, checksum(account), checksum(token))))

    def deposit_of(self, channel: bytes, nonce: int) -> tuple[Address, int, bool, int]:
        """(account, token index, refunded, amount in token units) of deposit `nonce`."""
        account, token_index, refunded, amount = self._call(self.contract.functions.depositOf(channel, nonce))
        return address_bytes(account), int(token_index), bool(refunded), int(amount)

    def is_claimed(self, channel: bytes, leaf: PayoutLeaf) -> bool:
        return bool(self._call(self.contract.functions.isClaimed(channel, leaf.hash())))

    def bond_of(self, channel: bytes, participant: bytes | str) -> BondInfo:
        bonded, unbonding, ready_at = self._call(self.contract.functions.bondOf(channel, checksum(participant)))
        return BondInfo(int(bonded), int(unbonding), int(ready_at))

    def token_totals(self, channel: bytes, token: bytes | str) -> tuple[int, int, int, int]:
        """(credited deposits, balance leaves paid, refunds, withdrawals paid) in token units."""
        deposited, claimed, refunded, withdrawn = self._call(
            self.contract.functions.tokenTotals(channel, checksum(token))
        )
        return int(deposited), int(claimed), int(refunded), int(withdrawn)

    def domain_separator(self) -> bytes:
        return bytes(self._call(self.contract.functions.domainSeparator()))

    def checkpoint_digest(self, checkpoint: Checkpoint) -> bytes:
        return bytes(self._call(self.contract.functions.checkpointDigest(checkpoint_arg(checkpoint))))

    def finalize_ready(self, channel: bytes) -> bool:
        """Whether finalizeSettlement would succeed now (judged by the node on its next block)."""
        try:
            self.sender.estimate(self.contract.functions.finalizeSettlement(channel))
        except ContractReverted as reverted:
            if reverted.name == "DisputeWindowOpen":
                return False
            raise
        return True


def local_account(private_key: bytes | str) -> LocalAccount:
    account: LocalAccount = Account.from_key(private_key)
    return account
