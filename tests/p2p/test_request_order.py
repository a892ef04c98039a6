"""Which ids a node asks for, and in what order, never depends on the hash seed.

`AddResult.missing` was a set of bytes, so the parent ids a node asked its peers for after a
delivery (and which of them were cut off by ``max_inflight_wants``), and the gaps it kept under
``max_gaps``, came in an order that changed with PYTHONHASHSEED. The probe below (run as
``python -m tests.p2p.test_request_order``) prints what each path asks for; the test runs it
under different hash seeds and asserts the same, sorted, answers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio
from hypothesis import example, given
from hypothesis import strategies as st

from crdt.graph import HashGraph
from crdt.hashing import keccak256
from crdt.ops import sign_op
from crdt.replica import Replica
from crdt.types import OpId
from p2p.memory import MemoryNetwork
from p2p.peer import PeerConfig, open_peer
from p2p.sync import HashGraphView, SyncConfig, SyncSession
from p2p.wire import Want
from tests.p2p.p2p_kit import TOKEN, authors, make_genesis, private_key

ROOT = Path(__file__).resolve().parents[2]
UNKNOWN = [OpId(keccak256(b"never-seen-%d" % i)) for i in range(40)]
LIMIT = 8  # under the 40 unknown ids: what is cut off shows the order


def ops_with_unknown_parents() -> list[Any]:
    genesis = make_genesis(2)
    ctx, people = genesis.context(), authors(genesis)
    body = {"to": people[1].address, "token": TOKEN, "amount": 1}
    return [
        sign_op(ctx, private_key(0), 1, UNKNOWN[:20], "transfer", body, ts=1),
        sign_op(ctx, private_key(1), 1, UNKNOWN[20:], "transfer", body, ts=1),
    ]


def probe() -> dict[str, list[str]]:
    genesis = make_genesis(2)
    ops = ops_with_unknown_parents()
    out: dict[str, list[str]] = {}

    graph = HashGraph()
    out["graph_add"] = [i.hex() for i in graph.add(ops[0]).missing]

    replica = Replica(genesis)
    result = replica.receive_many(ops)
    out["receive_many"] = [i.hex() for i in result.missing]
    session = SyncSession(genesis.channel_id, SyncConfig(max_inflight_wants=LIMIT))
    wants = session.after_delivery(HashGraphView(replica.graph), result.missing)
    out["after_delivery"] = [i.hex() for want in wants if isinstance(want, Want) for i in want.ids]

    async def through_a_peer() -> None:
        network = MemoryNetwork()
        async with (
            network.open_transport(b"\x01" * 8) as transport,
            open_peer(Replica(genesis), transport, PeerConfig(max_gaps=LIMIT)) as peer,
        ):
            submitted = await peer.submit_many(ops)
            out["peer_submit_many"] = [i.hex() for i in submitted.missing]
            peer.request(frozenset(UNKNOWN))  # what the driver passes for a checkpoint's cut
            out["peer_gaps"] = [i.hex() for i in peer._gaps]

    trio.run(through_a_peer)
    return out


def run_probe(seed: str) -> dict[str, list[str]]:
    env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "tests.p2p.test_request_order"], cwd=ROOT, env=env, capture_output=True,
        text=True, check=False, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    answer: dict[str, list[str]] = json.loads(done.stdout)
    return answer


def test_what_is_asked_for_is_sorted_and_the_same_under_any_hash_seed() -> None:
    first, second = run_probe("1"), run_probe("2")
    assert first == second
    every = sorted(i.hex() for i in UNKNOWN)
    assert first["graph_add"] == sorted(i.hex() for i in UNKNOWN[:20])
    assert first["receive_many"] == every
    assert first["peer_submit_many"] == every
    assert first["after_delivery"] == every[:LIMIT]  # the smallest are asked first, the rest wait
    assert first["peer_gaps"] == every[:LIMIT]


@given(st.sets(st.integers(0, 39), min_size=1, max_size=40))
@example(parents={0, 1, 2, 3})
def test_add_reports_the_missing_parents_sorted(parents: set[int]) -> None:
    """`AddResult.missing` is the sorted tuple of the parents not accepted (nor waiting)."""
    genesis = make_genesis(2)
    people = authors(genesis)
    graph = HashGraph()
    ids = sorted(UNKNOWN[i] for i in parents)
    op = sign_op(genesis.context(), private_key(0), 1, ids, "transfer", {"to": people[1].address, "token": TOKEN,
                 "amount": 1})
    result = graph.add(op)
    assert isinstance(result.missing, tuple)
    assert list(result.missing) == ids


if __name__ == "__main__":
    print(json.dumps(probe()))
