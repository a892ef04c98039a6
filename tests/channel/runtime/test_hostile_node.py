"""Attacks on real node processes on 127.0.0.1 that once crashed or corrupted an honest node.

A hostile peer (keyless, or a participant), a hostile local process and a failing disk, as
they would attack. Each test fails on the code before the fix it names, and must keep passing.
No timed assertions: waits are for conditions under generous deadlines.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.pubsub import pubsub as pubsub_module
from libp2p.pubsub import rpc_queue
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11

from channel.api.client import ApiError, Client, Endpoint
from crdt import cbor
from crdt.genesis import Token
from crdt.ops import sign_op
from p2p.host import open_libp2p_transport
from p2p.peer import ops_topic
from p2p.wire import encode_batch, encode_varint
from simulations.cluster import USDC_UNIT, Cluster, NodeProcess, create_cluster, start_all, stop_all, wait_until
from tests.channel.runtime.hostile_kit import (
    NOT_READY,
    STORAGE,
    alive,
    participant_key,
    refused_start,
    rogue_config,
    run_cli,
    stats,
    transfer_when_ready,
)

pytestmark = [pytest.mark.slow, pytest.mark.hostile]

E9 = 10**9
USDC = Token("USDC", b"\x33" * 20, 6)  # type: ignore[arg-type]
DEADLINE = 90


@pytest.fixture
def cluster(tmp_path: Path) -> Cluster:
    return create_cluster(tmp_path / "cluster", 4, tokens=[USDC], initial=10_000 * E9)


@pytest.fixture
def processes(cluster: Cluster) -> Iterator[list[NodeProcess]]:
    nodes = [NodeProcess(cluster.config(i)) for i in range(4)]
    yield nodes
    stop_all(nodes)


def address(cluster: Cluster, index: int) -> str:
    return "0x" + cluster.genesis.participants[index].address.hex()


def converged(endpoints: list[Endpoint], at_least: int) -> list[dict[str, object]]:
    def check() -> list[dict[str, object]] | None:
        found = [stats(e) for e in endpoints]
        same = len({s["state_hash"] for s in found}) == 1 and len({s["operations"] for s in found}) == 1
        return found if same and all(int(s["operations"]) >= at_least for s in found) else None  # type: ignore[call-overload]

    result: list[dict[str, object]] = wait_until(check, DEADLINE, "convergence")
    return result


def evidence(endpoint: Endpoint) -> list[object]:
    with Client(endpoint) as client:
        found: list[object] = client.call("parley_evidence")
        return found


class _BigRpcQueue(rpc_queue.RpcQueue):
    """The rogue's own queue lets it send RPCs of any size (an honest one caps them at 1 MiB)."""

    def __init__(self, max_size: int = 4096, max_message_size: int = 8 << 20) -> None:
        super().__init__(max_size=max_size, max_message_size=max_message_size)


# -- hostile peers -------------------------------------------------------------------------------------


def test_a_keyless_host_can_neither_crash_nor_read_the_channel(
    cluster: Cluster, processes: list[NodeProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attack of the issue: a host with no participant key dialled the nodes and published
    one gossip message of 1.8 MB, then two of 189 KB. py-libp2p's pubsub reader raised
    protobuf's DecodeError out of the connection's task group and 3 of 3 honest nodes exited
    with code 1; the rogue also received every gossip batch."""
    endpoints = start_all(processes[:3])
    monkeypatch.setattr(pubsub_module, "RpcQueue", _BigRpcQueue)
    received: list[bytes] = []

    async def attack() -> None:
        async with open_libp2p_transport(rogue_config(cluster, tmp_path / "rogue", None)) as rogue:
            topic = ops_topic(cluster.genesis.channel_id)
            subscription = await rogue.subscribe(topic, lambda forwarder, data: True)

            async def listen() -> None:
                async for _origin, data in subscription:
                    received.append(data)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(listen)
                with trio.fail_after(DEADLINE):
                    while len(rogue.host.get_connected_peers()) < 3:  # noqa: ASYNC110 - no event to wait on
                        await trio.sleep(0.1)
                await rogue.publish(topic, b"\x99" * 1_800_000)
                await rogue.publish(topic, b"\x98" * 189_000)
                await rogue.publish(topic, b"\x97" * 189_000)
                for i in range(10):  # honest traffic the rogue must not see
                    await trio.to_thread.run_sync(transfer_when_ready, endpoints[i % 3], address(cluster, 3), 1 + i)
                await trio.sleep(3)
                nursery.cancel_scope.cancel()

    trio.run(attack)
    assert alive(processes[:3]) == [True, True, True]
    assert received == []
    found = converged(endpoints, 10)
    assert all(s["peers"] == 2 for s in found)  # the rogue was never counted as a peer


def test_garbled_pubsub_frames_from_a_participant_get_it_banned_and_the_nodes_live(
    cluster: Cluster, processes: list[NodeProcess], tmp_path: Path
) -> None:
    """A participant (its node replaced by a rogue) writes length-prefixed garbage on pubsub
    streams: the frame the yamux interleaving produced, and what a hostile peer writes."""
    endpoints = start_all(processes[:3])
    garbage = b"\x12\x81\xc5\x0b" + b"\x00" * 300 + b"\x1a\x08\x18\xed"

    async def attack() -> None:
        async with open_libp2p_transport(rogue_config(cluster, tmp_path / "rogue", 3)) as rogue:
            with trio.fail_after(DEADLINE):
                while len(rogue.connected_peers()) < 3:  # noqa: ASYNC110 - no event to wait on
                    await trio.sleep(0.1)
            for _ in range(12):
                for peer in list(rogue.connected_peers()):
                    try:
                        stream = await rogue.host.new_stream(ID(peer), [TProtocol(PROTOCOL_ID_V11)])
                        await stream.write(encode_varint(len(garbage)) + garbage)
                    except Exception:  # refused once it is banned
                        continue
                await trio.sleep(0.3)

    trio.run(attack)
    assert alive(processes[:3]) == [True, True, True]
    for endpoint in endpoints:
        with Client(endpoint) as client:
            peers = client.peers()
        assert peers["penalties"].get("malformed", 0) >= 1
        assert len(peers["banned"]) >= 1
    for i in range(6):
        transfer_when_ready(endpoints[i % 3], address(cluster, (i + 1) % 3), 1 + i)
    converged(endpoints, 6)


def test_an_unknown_parents_flood_by_a_participant_stays_bounded_and_honest_work_goes_on(
    cluster: Cluster, processes: list[NodeProcess], tmp_path: Path
) -> None:
    """6,000 validly signed operations (4.5 KB each, batches of 100) naming 128 parents that
    do not exist: 1,300-1,600 of them waited on every node, memory grew by 131-155 MB per node,
    and for minutes every honest transfer that was answered at all timed out."""
    endpoints = start_all(processes[:3])
    ctx = cluster.genesis.context()
    key = participant_key(cluster, 3).private_key
    body = {"to": cluster.genesis.participants[0].address, "token": "USDC", "amount": 1}
    flood = [sign_op(ctx, key, seq, [os.urandom(32) for _ in range(128)], "transfer", body) for seq in range(1, 6001)]
    honest: list[str] = []

    async def attack() -> None:
        async with open_libp2p_transport(rogue_config(cluster, tmp_path / "rogue", 3)) as rogue:
            with trio.fail_after(DEADLINE):
                while len(rogue.connected_peers()) < 3:  # noqa: ASYNC110 - no event to wait on
                    await trio.sleep(0.1)
            topic = ops_topic(cluster.genesis.channel_id)

            async def transfers() -> None:
                for i in range(60):
                    to = address(cluster, 3)
                    receipt = await trio.to_thread.run_sync(transfer_when_ready, endpoints[i % 3], to, 1)
                    honest.append(receipt["op_id"])

            async with trio.open_nursery() as nursery:
                nursery.start_soon(transfers)
                for start in range(0, len(flood), 100):
                    await rogue.publish(topic, encode_batch([op.raw for op in flood[start : start + 100]]))
                    await trio.sleep(0.01)

    trio.run(attack)
    assert alive(processes[:3]) == [True, True, True]
    assert len(honest) == 60
    found = converged(endpoints, 60)
    for node_stats, process in zip(found, processes[:3], strict=True):
        assert int(node_stats["pending"]) <= 1024  # type: ignore[call-overload]
        assert (process.data_dir / "node.sqlite").stat().st_size < 8 << 20  # the flood is not stored
    for endpoint in endpoints:
        with Client(endpoint) as client:
            assert {client.status(op_id)["status"] for op_id in honest} <= {"tentative", "final"}


# -- a lost or damaged store -----------------------------------------------------------------------------


def drop_store(data_dir: Path, how: str) -> None:
    for suffix in ("-wal", "-shm"):
        (data_dir / f"node.sqlite{suffix}").unlink(missing_ok=True)
    path = data_dir / "node.sqlite"
    if how == "deleted":
        path.unlink()
    else:
        path.write_bytes(b"")


@pytest.mark.parametrize("how", ["deleted", "truncated"])
def test_a_node_that_lost_its_store_does_not_reuse_its_seq(
    cluster: Cluster, processes: list[NodeProcess], how: str
) -> None:
    """node.sqlite deleted, or truncated to 0 bytes: the node started with 0 operations and
    signed its next transfer with seq 1, although its last seq was 15. Every peer then held
    equivocation evidence against an honest participant. Now it learns its seq from a quorum
    of peers first (and refuses to sign until then)."""
    endpoints = start_all(processes)
    for i in range(15):
        transfer_when_ready(endpoints[0], address(cluster, 1 + i % 3), 1 + i)
    converged(endpoints, 15)
    processes[0].stop()
    drop_store(processes[0].data_dir, how)
    processes[0].fresh_channel = False
    restarted = processes[0].start()
    receipt = transfer_when_ready(restarted, address(cluster, 1), 7)
    assert receipt["seq"] == 16
    converged([restarted, *endpoints[1:]], 16)
    for endpoint in [restarted, *endpoints[1:]]:
        assert evidence(endpoint) == []
    # and it votes again, from two heights above the newest checkpoint its peers showed it
    voting = wait_until(lambda: stats(restarted)["voting_from"], DEADLINE, "the vote floor to be learnt")
    assert voting >= 2

    def checkpoint_it_may_vote_on() -> bool:
        transfer_when_ready(restarted, address(cluster, 2), 1)  # news, so checkpoints come
        return int(stats(restarted)["version"]) >= voting

    wait_until(checkpoint_it_may_vote_on, DEADLINE, "a checkpoint it may vote on")
    for endpoint in [restarted, *endpoints[1:]]:
        with Client(endpoint) as client:
            assert [e for e in client.call("parley_evidence") if e["kind"] != "equivocation"] == []


def test_a_node_that_lost_its_store_refuses_to_sign_without_a_quorum(
    cluster: Cluster, processes: list[NodeProcess]
) -> None:
    endpoints = start_all(processes)
    transfer_when_ready(endpoints[0], address(cluster, 1), 5)
    converged(endpoints, 1)
    stop_all(processes)
    drop_store(processes[0].data_dir, "deleted")
    processes[0].fresh_channel = False
    alone = processes[0].start()  # no peer is up to answer
    with Client(alone) as client, pytest.raises(ApiError) as refused:
        client.transfer(address(cluster, 1), "USDC", 5 * USDC_UNIT)
    assert refused.value.code == NOT_READY
    assert "0 of 2 answered" in refused.value.message
    assert stats(alone)["signing"] != "ready"
    others = [p.start() for p in processes[1:3]]  # a quorum comes back
    receipt = transfer_when_ready(alone, address(cluster, 1), 5)
    assert receipt["seq"] == 2
    converged([alone, *others], 2)


def tamper_last_operation(store: Path) -> int:
    """Change the amount of the last stored operation, its signature left as it was."""
    db = sqlite3.connect(store)
    position, raw = db.execute("SELECT position, raw FROM ops ORDER BY position DESC LIMIT 1").fetchone()
    fields = cbor.decode(bytes(raw), max_bytes=1 << 16)
    fields[5] = {**fields[5], "amount": fields[5]["amount"] + 1}
    db.execute("UPDATE ops SET raw = ? WHERE position = ?", (cbor.encode(fields), position))
    db.commit()
    db.close()
    return int(position)


def test_a_tampered_store_refuses_to_start_and_repair_recovers(
    cluster: Cluster, processes: list[NodeProcess]
) -> None:
    """The amount of the last stored operation was changed, its signature kept. The node
    replayed it unchecked, started with another state hash, was banned by its peers for bad
    signatures and reported false equivocation evidence against an honest participant."""
    endpoints = start_all(processes)
    for i in range(8):
        transfer_when_ready(endpoints[i % 4], address(cluster, (i + 1) % 4), 1 + i)
    converged(endpoints, 8)
    processes[2].stop()
    row = tamper_last_operation(processes[2].data_dir / "node.sqlite")
    code, output = refused_start(processes[2])
    assert code == 1
    assert f"row {row}" in output
    assert "parley node repair" in output
    assert "Traceback" not in output
    repaired = run_cli("node", "repair", "--config", str(processes[2].config), "--json")
    assert repaired.returncode == 0, repaired.stderr
    assert '"operations": 1' in repaired.stdout
    back = processes[2].start()
    found = converged([back, *endpoints[:2], endpoints[3]], 8)
    assert len({s["state_hash"] for s in found}) == 1
    for endpoint in [back, *endpoints[:2], endpoints[3]]:
        assert evidence(endpoint) == []
        with Client(endpoint) as client:
            assert client.peers()["banned"] == []


@pytest.mark.parametrize("damage", ["half", "header"])
def test_a_damaged_store_file_gets_one_clear_line_and_repair_resyncs(
    cluster: Cluster, processes: list[NodeProcess], damage: str
) -> None:
    endpoints = start_all(processes)
    for i in range(40):
        transfer_when_ready(endpoints[1], address(cluster, i % 4 if i % 4 != 1 else 0), 1 + i)
    converged(endpoints, 40)
    processes[0].stop()
    path = processes[0].data_dir / "node.sqlite"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "half" else b"\x00" * 100 + data[100:])
    code, output = refused_start(processes[0])
    assert code == 1
    assert "parley node repair" in output
    assert "Traceback" not in output
    repaired = run_cli("node", "repair", "--config", str(processes[0].config))
    assert repaired.returncode == 0, repaired.stderr
    back = processes[0].start()
    converged([back, *endpoints[1:]], 40)
    assert transfer_when_ready(back, address(cluster, 1), 3)["seq"] == 1  # it had signed nothing


# -- a full disk -------------------------------------------------------------------------------------------


def mount_small_disk(folder: Path, size: str = "6m") -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    return result.returncode == 0


def test_a_full_disk_refuses_submissions_keeps_the_node_up_and_loses_nothing(tmp_path: Path) -> None:
    """With a nearly full filesystem, 9 transfers were acknowledged, the 10th got a non-JSON
    500, and the node died with an unhandled sqlite3.OperationalError while storing a vote."""
    root = tmp_path / "cluster"
    disk = root / "node0"
    if not mount_small_disk(disk):
        pytest.fail("this test mounts a small tmpfs for node 0's data directory: run it as root")
    nodes: list[NodeProcess] = []
    try:
        cluster = create_cluster(root, 4, tokens=[USDC], initial=10_000 * E9, finality_interval=0.25)
        nodes = [NodeProcess(cluster.config(i)) for i in range(4)]
        endpoints = start_all(nodes)
        filler = disk / "filler"
        free = os.statvfs(disk)
        filler.write_bytes(b"\x00" * (free.f_bavail * free.f_frsize - 160 * 1024))  # leave 160 KiB
        acknowledged: list[str] = []
        refusal: ApiError | None = None
        with Client(endpoints[0]) as client:
            for i in range(5000):
                try:
                    receipt = client.transfer(address(cluster, 1 + i % 3), "USDC", (1 + i) * USDC_UNIT)
                    acknowledged.append(receipt["op_id"])
                except ApiError as exc:
                    refusal = exc
                    break
        assert refusal is not None
        assert refusal.code == STORAGE, refusal
        assert "full" in refusal.message
        assert alive(nodes) == [True] * 4
        assert "storage_error" in stats(endpoints[0])
        for i in range(20):  # the others go on; node 0 keeps answering reads
            transfer_when_ready(endpoints[1 + i % 3], address(cluster, 0), 1 + i)
        filler.unlink()  # space comes back
        wait_until(lambda: "storage_error" not in stats(endpoints[0]), DEADLINE, "the store to be writable")
        again = transfer_when_ready(endpoints[0], address(cluster, 2), 9)
        assert again["seq"] == len(acknowledged) + 1  # no seq skipped or reused
        found = converged(endpoints, len(acknowledged) + 21)
        assert alive(nodes) == [True] * 4
        with Client(endpoints[0]) as client:
            assert {client.status(op_id)["status"] for op_id in acknowledged} <= {"tentative", "final"}
        assert len({s["state_hash"] for s in found}) == 1
        for endpoint in endpoints:
            assert evidence(endpoint) == []
    finally:
        stop_all(nodes)
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


# -- a local process ---------------------------------------------------------------------------------------


def test_the_same_node_cannot_run_twice(cluster: Cluster, processes: list[NodeProcess]) -> None:
    """Starting the same node twice worked: two processes signed with one key and one store
    (an equivocation waiting to happen) and clobbered api.json."""
    start_all(processes[:1])
    code, output = refused_start(NodeProcess(cluster.config(0)))
    assert code == 1
    assert processes[0].process is not None
    assert f"in use by process {processes[0].process.pid}" in output
    assert "Traceback" not in output
    assert alive(processes[:1]) == [True]
