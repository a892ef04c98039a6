"""Shared helpers for the crdt tests: keys, a genesis, workloads, a reference model, and an
independent canonical CBOR encoder that can deviate from canonical form on purpose.

Nothing here trusts the code under test for what it checks: heights, closures, the epoch order,
the ledger rules and the CBOR encoding are written again, plainly, from DESIGN.md and the module
docstrings.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_utils import keccak
from hypothesis import strategies as st

from crdt import testing
from crdt.genesis import Genesis, InitialBalance, Role, Token
from crdt.ledger import Deposit, Reason
from crdt.ops import Context, SignedOp, address_of, sign_op
from crdt.replica import Cut, Replica
from crdt.units import from_e9

# -- keys and the channel --------------------------------------------------------------------


def private_key(index: int) -> bytes:
    """A fixed, valid secp256k1 key per index: failures replay, nothing is random."""
    return keccak(b"parley-tests/key/%d" % index)


KEYS = [private_key(i) for i in range(8)]
ADDR = [address_of(key) for key in KEYS]
# 0-3 traders, 4 observer, 5 oracle; 6 and 7 are not participants.
ROLES = [Role.TRADER, Role.TRADER, Role.TRADER, Role.TRADER, Role.OBSERVER, Role.ORACLE]
N_PARTICIPANTS = len(ROLES)
OUTSIDER = 6

USDC = Token("USDC", bytes.fromhex("a0" * 20), 6)
WETH = Token("WETH", bytes.fromhex("c0" * 20), 18)
TOKENS = (USDC, WETH)
E9 = 10**9
INITIAL = 100 * E9 + 777  # odd, so payouts in 6 decimals round down
ADJUDICATOR = bytes.fromhex("11" * 20)


def make_genesis(chain_id: int = 31337, nonce: int = 0) -> Genesis:
    balances = [InitialBalance(ADDR[i], token.symbol, INITIAL) for i in range(4) for token in TOKENS]
    return testing.make_genesis(
        KEYS[: len(ROLES)], TOKENS, roles=ROLES, initial=balances, chain_id=chain_id, adjudicator=ADJUDICATOR,
        nonce=nonce,
    )


GENESIS = make_genesis()
CTX = GENESIS.context()
OTHER_GENESIS = make_genesis(chain_id=31337, nonce=1)  # another channel, same participants
OTHER_CTX = OTHER_GENESIS.context()

_SIGNED: dict[tuple[Any, ...], SignedOp] = {}


def sign(
    author: int,
    seq: int,
    parents: Iterable[bytes],
    kind: str,
    body: Mapping[str, Any],
    ts: int = 0,
    ctx: Context = CTX,
) -> SignedOp:
    """sign_op with a cache (signing is deterministic, RFC 6979), so shrinking stays fast."""
    parents = tuple(sorted(set(parents)))
    key = (id(ctx), author, seq, parents, kind, repr(sorted(body.items())), ts)
    op = _SIGNED.get(key)
    if op is None:
        op = _SIGNED[key] = sign_op(ctx, KEYS[author], seq, parents, kind, body, ts)
    return op


def transfer(to: int, amount: int, token: str = "USDC") -> dict[str, Any]:
    return {"to": ADDR[to], "token": token, "amount": amount}


# -- an independent view of the graph ---------------------------------------------------------


def heights(ops: Iterable[SignedOp]) -> dict[bytes, int]:
    """height = 1 + max(parent heights), for a causally closed set."""
    by_id = {op.op_id: op for op in ops}
    result: dict[bytes, int] = {}

    def height(op_id: bytes) -> int:
        stack = [op_id]
        while stack:
            current = stack[-1]
            todo = [p for p in by_id[current].parents if p not in result]
            if todo:
                stack.extend(todo)
                continue
            stack.pop()
            result[current] = 1 + max((result[p] for p in by_id[current].parents), default=0)
        return result[op_id]

    for op_id in by_id:
        height(op_id)
    return result


def closure(by_id: Mapping[bytes, SignedOp], heads: Iterable[bytes]) -> set[bytes]:
    found: set[bytes] = set()
    stack = list(heads)
    while stack:
        current = stack.pop()
        if current not in found:
            found.add(current)
            stack.extend(by_id[current].parents)
    return found


def heads_of(by_id: Mapping[bytes, SignedOp], ids: Iterable[bytes]) -> list[bytes]:
    ids = set(ids)
    covered = {p for i in ids for p in by_id[i].parents}
    return sorted(ids - covered)


def closed_subset(ops: Sequence[SignedOp], ids: Iterable[bytes]) -> set[bytes]:
    """The largest causally closed subset of `ids`."""
    by_id = {op.op_id: op for op in ops}
    height = heights(ops)
    result: set[bytes] = set()
    for op_id in sorted(set(ids), key=lambda i: height[i]):
        if all(p in result for p in by_id[op_id].parents):
            result.add(op_id)
    return result


# -- the reference model: a sequential ledger written again from the docs ---------------------


@dataclass
class Model:
    """The ledger rules of crdt/ledger.py's docstring and DESIGN.md, sequential and plain."""

    genesis: Genesis
    balances: dict[tuple[bytes, str], int] = field(default_factory=dict)
    locks: dict[bytes, tuple[bytes, str, int, int, str]] = field(default_factory=dict)
    withdrawn: dict[tuple[bytes, str], int] = field(default_factory=dict)  # cumulative
    deposits: dict[str, int] = field(default_factory=dict)
    time: int = 0
    used_seq: set[tuple[bytes, int]] = field(default_factory=set)

    def __post_init__(self) -> None:
        for entry in self.genesis.initial_balances:
            key = (entry.account, entry.token)
            self.balances[key] = self.balances.get(key, 0) + entry.amount
            self.deposits[entry.token] = self.deposits.get(entry.token, 0) + entry.amount

    def apply(self, op: SignedOp, stale: bool = False) -> str | None:
        """Returns the reason code, or None when the operation took effect."""
        if (op.author, op.seq) in self.used_seq:
            return Reason.EQUIVOCATION
        self.used_seq.add((op.author, op.seq))  # the first at a seq uses it, whatever its outcome
        if stale:
            return Reason.STALE
        if op.kind not in ("transfer", "withdraw", "lock"):
            return Reason.UNKNOWN_KIND
        return self._apply(op)

    def _mover_ok(self, op: SignedOp) -> bool:
        participant = self.genesis.participant(op.author)
        assert participant is not None
        return participant.role != Role.OBSERVER

    def _token_amount(self, op: SignedOp) -> tuple[str | None, str, int]:
        token, amount = op.body.get("token"), op.body.get("amount")
        if type(token) is not str or type(amount) is not int:
            return Reason.BAD_BODY, "", 0
        if self.genesis.token(token) is None:
            return Reason.UNKNOWN_TOKEN, "", 0
        if amount <= 0:
            return Reason.BAD_AMOUNT, "", 0
        if self.balances.get((op.author, token), 0) < amount:
            return Reason.INSUFFICIENT_BALANCE, "", 0
        return None, token, amount

    def _move(self, table: dict[Any, int], key: Any, delta: int) -> None:
        value = table.get(key, 0) + delta
        assert value >= 0
        if value:
            table[key] = value
        else:
            table.pop(key, None)

    def _apply(self, op: SignedOp) -> str | None:
        body = op.body
        if op.kind == "transfer":
            if set(body) != {"to", "token", "amount"} or type(body["to"]) is not bytes:
                return Reason.BAD_BODY
            if not self._mover_ok(op):
                return Reason.NOT_PERMITTED
            if body["to"] not in self.genesis.addresses:
                return Reason.UNKNOWN_RECIPIENT
            if body["to"] == op.author:
                return Reason.SELF_TRANSFER
            reason, token, amount = self._token_amount(op)
            if reason:
                return reason
            self._move(self.balances, (op.author, token), -amount)
            self._move(self.balances, (body["to"], token), amount)
            return None
        if op.kind == "withdraw":
            if set(body) != {"token", "amount"}:
                return Reason.BAD_BODY
            if not self._mover_ok(op):
                return Reason.NOT_PERMITTED
            reason, token, amount = self._token_amount(op)
            if reason:
                return reason
            decimals = self.genesis.token(token).decimals  # type: ignore[union-attr]
            if decimals < 9 and amount % 10 ** (9 - decimals):
                return Reason.BAD_AMOUNT  # withdrawals are whole units of the token
            self._move(self.balances, (op.author, token), -amount)
            self._move(self.withdrawn, (op.author, token), amount)
            return None
        # lock
        if set(body) != {"token", "amount", "until", "reason"}:
            return Reason.BAD_BODY
        if type(body["until"]) is not int or type(body["reason"]) is not str:
            return Reason.BAD_BODY
        if len(body["reason"].encode()) > 64:
            return Reason.BAD_BODY
        if not self._mover_ok(op):
            return Reason.NOT_PERMITTED
        if body["until"] <= self.time:
            return Reason.LOCK_IN_PAST
        reason, token, amount = self._token_amount(op)
        if reason:
            return reason
        self._move(self.balances, (op.author, token), -amount)
        self.locks[op.op_id] = (op.author, token, amount, body["until"], body["reason"])
        return None

    def credit(self, deposit: Deposit) -> None:
        self._move(self.balances, (deposit.account, deposit.token), deposit.amount)
        self._move(self.deposits, deposit.token, deposit.amount)

    def close(self, time: int) -> None:
        self.time = time
        for op_id, (account, token, amount, until, _) in sorted(self.locks.items()):
            if until <= time:
                del self.locks[op_id]
                self._move(self.balances, (account, token), amount)

    def locked(self, account: bytes, token: str) -> int:
        return sum(a for (acc, t, a, _, _) in self.locks.values() if acc == account and t == token)

    def views(self) -> dict[str, dict[str, dict[str, int]]]:
        """Replica.balances() shape."""
        return {
            "0x" + p.address.hex(): {
                t.symbol: {
                    "free": self.balances.get((p.address, t.symbol), 0),
                    "held": 0,  # the model has no order books
                    "locked": self.locked(p.address, t.symbol),
                    "withdrawn": self.withdrawn.get((p.address, t.symbol), 0),
                }
                for t in self.genesis.tokens
            }
            for p in self.genesis.participants
        }


def model_replay(
    genesis: Genesis, ops: Sequence[SignedOp], cuts: Sequence[Cut] = ()
) -> tuple[Model, dict[bytes, str | None]]:
    """The epoch order of DESIGN.md, computed from scratch: each cut's new closure sorted by
    (height, op_id) with the freshness rule, its deposits, its time; then the tentative rest."""
    by_id = {op.op_id: op for op in ops}
    height = heights(ops)
    model = Model(genesis)
    outcome: dict[bytes, str | None] = {}
    done: set[bytes] = set()
    closures: list[set[bytes]] = []

    def is_stale(op_id: bytes, epoch: int) -> bool:
        if epoch < 3:
            return False
        return not set(cuts[epoch - 3].heads) <= closure(by_id, [op_id])

    def run(ids: Iterable[bytes], epoch: int) -> None:
        for op_id in sorted(ids, key=lambda i: (height[i], i)):
            outcome[op_id] = model.apply(by_id[op_id], stale=is_stale(op_id, epoch))

    for version, cut in enumerate(cuts, start=1):
        new = closure(by_id, cut.heads) - done
        closures.append(new)
        run(new, version)
        done |= new
        for deposit in cut.deposits:
            model.credit(deposit)
        model.close(cut.time)
    run(set(by_id) - done, len(cuts) + 1)
    return model, outcome


def check_replica(replica: Replica) -> None:
    """Conservation, and payout leaves never above deposits (per token, token decimals)."""
    replica.ledger.check_conservation()
    totals = replica.totals()
    for token, total in zip(replica.genesis.tokens, totals, strict=True):
        assert total <= from_e9(replica.ledger.deposits.get(token.symbol, 0), token.decimals)


def op_set(replica: Replica) -> tuple[frozenset[bytes], frozenset[bytes]]:
    """(accepted raw bytes, pending raw bytes)."""
    return (
        frozenset(op.raw for op in replica.graph.ops.values()),
        frozenset(op.raw for op in replica.graph.pending.ops()),
    )


def fingerprint(replica: Replica) -> tuple[Any, ...]:
    return (
        op_set(replica),
        replica.state_hash(),
        replica.payout_root(),
        [(op.op_id, str(reason)) for op, reason in replica.rejected()],
        tuple(replica.cuts),
    )


def copy_of(replica: Replica) -> Replica:
    clone = Replica(replica.genesis)
    clone.merge(replica)
    return clone


def replay_in_key_order(genesis: Genesis, ops: Iterable[SignedOp]) -> Replica:
    ops = list(ops)
    height = heights(ops)
    fresh = Replica(genesis)
    for op in sorted(ops, key=lambda op: (height[op.op_id], op.op_id)):
        fresh.receive(op)
    return fresh


# -- workloads ---------------------------------------------------------------------------------


@dataclass
class Workload:
    ops: list[SignedOp]  # in creation order: every prefix is causally closed


amounts = st.builds(
    lambda whole, frac: whole * E9 + frac,
    st.integers(0, 70),
    st.sampled_from([0, 0, 0, 1, 999_999]),
)


@st.composite
def bodies(draw: st.DrawFn, author: int) -> tuple[str, dict[str, Any]]:
    token = draw(st.sampled_from(["USDC", "USDC", "WETH", "DOGE"]))
    kind = draw(st.sampled_from(["transfer"] * 6 + ["withdraw", "lock", "bogus", "broken"]))
    if kind == "transfer":
        to = draw(st.integers(0, N_PARTICIPANTS - 1))  # self-transfers and the observer too
        return kind, transfer(to, draw(amounts), token)
    if kind == "withdraw":
        return kind, {"token": token, "amount": draw(amounts)}
    if kind == "lock":
        return kind, {
            "token": token,
            "amount": draw(amounts),
            "until": draw(st.integers(0, 4500)),
            "reason": "margin",
        }
    if kind == "broken":
        return "transfer", {"to": ADDR[0], "token": token}
    return kind, {}


@st.composite
def workloads(draw: st.DrawFn, max_ops: int = 22, authors: int = 5) -> Workload:
    """Several authors (one an observer); each op chains on its author's previous op and on the
    heads the author has seen, so the DAG has real concurrency. Some authors fork (equivocate)."""
    ops: list[SignedOp] = []
    by_id: dict[bytes, SignedOp] = {}
    known: list[set[bytes]] = [set() for _ in range(authors)]
    seq = [0] * authors
    last: list[SignedOp | None] = [None] * authors
    for _ in range(draw(st.integers(1, max_ops))):
        author = draw(st.integers(0, authors - 1))
        if ops and draw(st.booleans()):
            other = draw(st.integers(0, authors - 1))
            known[author] |= known[other]
        previous = last[author]
        if previous is not None and draw(st.integers(0, 9)) == 0:
            # equivocate: a second op with the same seq and different content
            kind, body = draw(bodies(author))
            fork = sign(author, previous.seq, previous.parents, kind, body, ts=1)
            if fork.op_id in by_id or fork.op_id == previous.op_id:
                continue
            ops.append(fork)
            by_id[fork.op_id] = fork
            witness = (author + 1) % authors
            known[witness] |= closure(by_id, [fork.op_id])
            continue
        kind, body = draw(bodies(author))
        seq[author] += 1
        parents = heads_of(by_id, known[author])
        op = sign(author, seq[author], parents, kind, body)
        ops.append(op)
        by_id[op.op_id] = op
        known[author].add(op.op_id)
        last[author] = op
    return Workload(ops)


# -- an independent canonical CBOR encoder, with deliberate deviations --------------------------

DEVIATIONS = ("long_head", "indefinite", "bignum", "float", "unsorted", "duplicate")


def _head(major: int, argument: int, width: int | None = None) -> bytes:
    """A CBOR head; `width` forces 0 (immediate), 1, 2, 4 or 8 argument bytes."""
    if width is None:
        width = _min_width(argument)
    if width == 0:
        return bytes([major << 5 | argument])
    info = {1: 24, 2: 25, 4: 26, 8: 27}[width]
    return bytes([major << 5 | info]) + argument.to_bytes(width, "big")


def _min_width(argument: int) -> int:
    return 0 if argument < 24 else 1 if argument < 2**8 else 2 if argument < 2**16 else 4 if argument < 2**32 else 8


def _longer_width(argument: int) -> int | None:
    wider = [w for w in (1, 2, 4, 8) if w > _min_width(argument)]
    return wider[0] if wider else None


class RefEncoder:
    """Encodes a value canonically (RFC 8949 section 4.2.1: shortest heads, definite lengths,
    map keys sorted by the bytewise order of their encodings), except at node number `target`
    (pre-order), where it applies `deviation`."""

    def __init__(self, target: int | None = None, deviation: str | None = None) -> None:
        self.target = target
        self.deviation = deviation
        self.counter = 0
        self.applied = False

    def encode(self, value: Any) -> bytes:
        index = self.counter
        self.counter += 1
        dev = self.deviation if index == self.target else None
        if dev is not None:
            self.applied = True
        if value is True or value is False:
            return b"\xf5" if value else b"\xf4"
        if type(value) is int:
            major, argument = (0, value) if value >= 0 else (1, -1 - value)
            if dev == "long_head":
                return _head(major, argument, _longer_width(argument))
            if dev == "bignum":
                raw = argument.to_bytes((argument.bit_length() + 7) // 8, "big")
                return bytes([0xC2 if major == 0 else 0xC3]) + _head(2, len(raw)) + raw
            if dev == "float":
                return b"\xfb" + struct.pack(">d", float(value))
            return _head(major, argument)
        if type(value) in (bytes, str):
            raw = value if type(value) is bytes else value.encode()
            major = 2 if type(value) is bytes else 3
            if dev == "long_head":
                return _head(major, len(raw), _longer_width(len(raw))) + raw
            if dev == "indefinite":
                return bytes([major << 5 | 31]) + _head(major, len(raw)) + raw + b"\xff"
            return _head(major, len(raw)) + raw
        if type(value) in (list, tuple):
            items = [self.encode(item) for item in value]
            if dev == "long_head":
                return _head(4, len(items), _longer_width(len(items))) + b"".join(items)
            if dev == "indefinite":
                return b"\x9f" + b"".join(items) + b"\xff"
            return _head(4, len(items)) + b"".join(items)
        if type(value) is dict:
            encoded = [_canonical_key(key) + self.encode(value[key]) for key in sorted(value, key=_canonical_key)]
            count = len(encoded)
            if dev == "unsorted":
                encoded = encoded[::-1]
            if dev == "duplicate":
                encoded = [encoded[0], *encoded]
                count += 1
            if dev == "long_head":
                return _head(5, count, _longer_width(count)) + b"".join(encoded)
            if dev == "indefinite":
                return b"\xbf" + b"".join(encoded) + b"\xff"
            return _head(5, count) + b"".join(encoded)
        raise TypeError(f"not encodable here: {type(value).__name__}")


def _canonical_key(key: str) -> bytes:
    raw = key.encode()
    return _head(3, len(raw)) + raw


def ref_encode(value: Any) -> bytes:
    return RefEncoder().encode(value)


def _nodes(value: Any) -> list[Any]:
    """Pre-order list of nodes, visiting map values in encoding order (as RefEncoder does),
    but not map keys (which RefEncoder encodes without counting them)."""
    out = [value]
    if type(value) in (list, tuple):
        for item in value:
            out.extend(_nodes(item))
    elif type(value) is dict:
        for key in sorted(value, key=_canonical_key):
            out.extend(_nodes(value[key]))
    return out


def deviations(value: Any) -> list[tuple[int, str]]:
    """Every (node, deviation) that yields a different, non-canonical encoding of `value`."""
    found = []
    for index, node in enumerate(_nodes(value)):
        kind = type(node)
        if node is True or node is False:
            continue
        if kind is int:
            argument = node if node >= 0 else -1 - node
            if _longer_width(argument) is not None:
                found.append((index, "long_head"))
            found.append((index, "bignum"))
            if float(node) == node and abs(node) < 2**53:
                found.append((index, "float"))
        elif kind in (bytes, str):
            if _longer_width(len(node)) is not None:
                found.append((index, "long_head"))
            found.append((index, "indefinite"))
        elif kind in (list, tuple, dict):
            if _longer_width(len(node)) is not None:
                found.append((index, "long_head"))
            found.append((index, "indefinite"))
            if kind is dict and len(node) >= 2:
                found.append((index, "unsorted"))
            if kind is dict and len(node) >= 1:
                found.append((index, "duplicate"))
    return found


def deviate(value: Any, target: int, deviation: str) -> bytes:
    encoder = RefEncoder(target, deviation)
    data = encoder.encode(value)
    assert encoder.applied
    return data


def op_value(op: SignedOp) -> list[Any]:
    return [op.channel, op.author, op.seq, list(op.parents), op.kind, dict(op.body), op.ts, op.signature]
