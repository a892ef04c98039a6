"""Seeded workloads through whichever build of the crdt core this process imports; prints one
JSON document of what they leave, for tests/crdt/test_builds.py to compare across builds.

    python -m tests.crdt.build_workload            (PARLEY_PURE=1: the pure build)

Everything printed is bytes or integers the protocol fixes: the operations' wire bytes (signing
goes through the core too), each replay's state hash, payout root, fills, outcomes and open
orders, the roots and certificate after each certified checkpoint, and the errors hostile
inputs get.
"""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any

import crdt
from crdt.errors import InvalidInput
from crdt.genesis import Genesis, Token
from crdt.markets import Market, MarketKind
from crdt.ops import SignedOp, decode_op, encode_ops, sign_op
from crdt.replica import Cut, Replica
from crdt.testing import forge, from_replica, make_genesis, test_keys
from crdt.types import Symbol
from simulations.workload import Workload, order_mix

E9 = 10**9
KEYS = test_keys(b"builds %d", 7)  # the last writes only the late order
MARKET = Market(
    symbol="WETH/USDC", kind=MarketKind.SPOT, base=Symbol("WETH"), quote=Symbol("USDC"), tick_size=10**7,
    step_size=10**6, min_qty=10**6, max_qty=10**6 * E9, min_price=10**7, max_price=10**7 * E9,
    maker_fee=200_000, taker_fee=500_000,
)
TOKENS = [Token(Symbol("USDC"), b"\x22" * 20, 6), Token(Symbol("WETH"), b"\x33" * 20, 18)]


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def state(replica: Replica) -> dict[str, Any]:
    return {
        **replica.summary(),
        "fills": [[field.hex() if isinstance(field, bytes) else field for field in fill] for fill in replica.fills()],
        "outcomes": sorted(["0x" + op.op_id.hex(), str(reason)] for op, reason in replica.rejected()),
        "open_orders": sorted("0x" + order.order_id.hex() for order in replica.open_orders()),
        "balances": replica.balances(),
        "replayed": replica.replayed,
    }


def certified(genesis: Genesis, ops: list[SignedOp], every: int) -> list[dict[str, Any]]:
    """Receive the operations in order, certifying a checkpoint of the heads every `every`."""
    replica = Replica(genesis)
    steps = []
    for start in range(0, len(ops), every):
        replica.receive_many(ops[start : start + every])
        version = replica.version + 1
        cut = Cut(version, tuple(sorted(replica.graph.heads)), version * 1000)
        preview = replica.preview(cut)
        replica.certify(cut)
        certificate = from_replica(replica, version, replica.ledger.deposit_nonce, cut.time, KEYS[:3])
        steps.append({"preview": [preview.state_hash.hex(), preview.payout_root.hex(), list(preview.totals)],
                      "state_hash": replica.state_hash().hex(), "certificate": digest(certificate.encode())})
    return steps


def hostile(genesis: Genesis, op: SignedOp) -> list[str]:
    """The error each mangled copy of `op` gets from decoding."""
    ctx = genesis.context()
    inputs = [
        op.raw[:-1],
        op.raw + b"\x00",
        op.raw[:-65] + bytes(65),
        forge(ctx, author=op.author, seq=op.seq, parents=op.parents, kind=op.kind, body=op.body, ts=op.ts,
              signature=op.signature[:64] + b"\x1d"),
        b"\xff" * 40,
    ]
    errors = []
    for data in inputs:
        try:
            decode_op(data, ctx)
            errors.append("accepted")
        except InvalidInput as exc:
            errors.append(f"{exc.code}: {exc}")
    return errors


def run() -> dict[str, Any]:
    genesis = make_genesis(KEYS, TOKENS, initial=10**6 * E9, markets=[MARKET])
    ops = list(Workload(genesis, KEYS[:-1], seed=7, mix=order_mix(60)).ops(1500))
    in_order = Replica(genesis)
    for start in range(0, len(ops), 100):
        in_order.receive_many(ops[start : start + 100])
    shuffled = ops[:]
    random.Random(3).shuffle(shuffled)
    one_by_one = Replica(genesis)
    for op in shuffled:
        one_by_one.receive(op)
    late = sign_op(genesis.context(), KEYS[-1], 1, [ops[100].op_id], "order.place",
                   {"market": MARKET.symbol, "side": "buy", "type": "limit", "tif": "ioc", "price": 400 * E9,
                    "qty": 5 * E9, "reduce_only": False, "expires": 0})
    in_order.receive(late)  # sorts before most of the applied operations: they re-match
    assert in_order.outcome[late.op_id] is None, in_order.outcome[late.op_id]
    return {
        "build": crdt.BUILD,
        "wire": digest(encode_ops(ops)),
        "in_order": state(in_order),
        "shuffled": state(one_by_one),
        "certified": certified(genesis, ops, 250),
        "hostile": hostile(genesis, ops[-1]),
    }


if __name__ == "__main__":
    print(json.dumps(run(), sort_keys=True))
