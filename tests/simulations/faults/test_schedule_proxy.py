"""The seeded schedule (a pure function of its seed) and the fault proxy over real loopback
sockets: delay, stall, and bytes passed through unchanged and in order."""

from __future__ import annotations

import random
from itertools import combinations

import pytest
import trio

from simulations.faults.errors import FaultsError
from simulations.faults.netns import loopback_topology
from simulations.faults.proxy import FaultProxy, FaultTable, LinkFault
from simulations.faults.schedule import KINDS, Fault, make_schedule, partition


def test_a_seed_names_one_schedule() -> None:
    assert make_schedule(7, 4, 300) == make_schedule(7, 4, 300)
    assert make_schedule(7, 4, 300) != make_schedule(8, 4, 300)


@pytest.mark.parametrize("seed", range(20))
def test_faults_do_not_overlap_and_leave_the_recovery_tail(seed: int) -> None:
    schedule = make_schedule(seed, 5, 240, recovery=20)
    assert {f.kind for f in schedule.faults} == set(KINDS)  # each kind once first, 240 s has room
    for before, after in zip(schedule.faults, schedule.faults[1:], strict=False):
        assert before.end < after.start
    assert schedule.faults[0].start >= 5.0
    assert schedule.last_heal is not None
    assert schedule.last_heal <= 220
    assert all(Fault.from_json(f.to_json()).to_json() == f.to_json() for f in schedule.faults)


@pytest.mark.parametrize("n", [4, 5, 7])
def test_partition_shapes_cut_exactly_the_links_between_sides(n: int) -> None:
    rng = random.Random(1)
    for shape in ("halves", "majority", "isolate", "bridge"):
        sides, links = partition(shape, n, rng)
        assert sorted(x for side in sides for x in side) == list(range(n))
        cut = set(links)
        for a, b in combinations(range(n), 2):
            side_a = next(i for i, s in enumerate(sides) if a in s)
            side_b = next(i for i, s in enumerate(sides) if b in s)
            bridged = shape == "bridge" and len(sides) - 1 in (side_a, side_b)
            assert ((a, b) in cut) == (side_a != side_b and not bridged), (shape, sides, a, b)
    assert len(partition("isolate", n, rng)[1]) == n - 1
    assert len(partition("majority", n, rng)[0][0]) == n // 2 + 1


def test_unknown_kinds_are_one_clear_error() -> None:
    with pytest.raises(FaultsError, match="unknown fault kind or shape 'clock'"):
        make_schedule(0, 4, 60, kinds=("clock",))


async def _echo(stream: trio.SocketStream) -> None:
    async with stream:
        while data := await stream.receive_some(65536):
            await stream.send_all(data)


async def _round_trip(stream: trio.SocketStream, payload: bytes) -> tuple[bytes, float]:
    started = trio.current_time()
    await stream.send_all(payload)
    got = b""
    while len(got) < len(payload):
        got += await stream.receive_some(65536)
    return got, trio.current_time() - started


async def _proxy_scenario() -> None:
    topology = loopback_topology(1)
    table = FaultTable()
    proxy = FaultProxy(topology, 0, table, random.Random(0))
    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(topology.listen[0][1], host="127.0.0.1")
        nursery.start_soon(trio.serve_listeners, _echo, listeners)
        await nursery.start(proxy.serve)
        stream = await trio.open_tcp_stream(*topology.public[0])
        payload = bytes(range(256)) * 2000  # 512 KB: several chunks, in order
        got, quick = await _round_trip(stream, payload)
        assert got == payload
        table.set([(None, 0)], LinkFault(delay=0.2))  # into the node only: one delay per round trip
        got, slow = await _round_trip(stream, b"ping")
        assert got == b"ping"
        assert 0.2 <= slow < 1.0
        assert quick < 1.0
        table.set([(None, 0)], LinkFault(stall=True))
        await stream.send_all(b"held")
        with trio.move_on_after(0.5) as waited:
            await stream.receive_some(10)
        assert waited.cancelled_caught  # nothing comes through while it stalls
        table.clear()
        assert await stream.receive_some(10) == b"held"  # and all of it afterwards
        assert proxy.statistics().connections == 1
        await stream.aclose()
        nursery.cancel_scope.cancel()


def test_the_proxy_delays_stalls_and_keeps_the_bytes() -> None:
    trio.run(_proxy_scenario)
