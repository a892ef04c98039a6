"""Helpers for attacks on real node processes: a rogue libp2p host (keyless, or speaking for a
participant whose node it replaces), and ways to wait on node processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from libp2p.peer.id import ID

from channel.api.client import ApiError, Client, Endpoint
from channel.runtime import keystore
from p2p.admission import Admission, sign_binding
from p2p.host import HostConfig, bootstrap_from_genesis
from p2p.identity import load_or_create
from simulations.cluster import CLUSTER_PASSWORD, USDC_UNIT, Cluster, NodeProcess

NOT_READY, STORAGE = -32002, -32003


def participant_key(cluster: Cluster, index: int) -> keystore.Key:
    address = cluster.genesis.participants[index].address
    return keystore.load(keystore.find(cluster.root / "keys", address), CLUSTER_PASSWORD)


def rogue_config(cluster: Cluster, folder: Path, participant: int | None) -> HostConfig:
    """A host dialling every node of the cluster; with `participant`, it proves that
    participant's key (its node is not running: the rogue takes its place)."""
    identity = load_or_create(folder, "rogue")
    admission = None
    if participant is not None:
        ctx = cluster.genesis.context()
        peer_id = ID.from_pubkey(identity.public_key).to_bytes()
        admission = Admission(ctx, sign_binding(ctx, participant_key(cluster, participant).private_key, peer_id))
    return HostConfig(identity=identity, bootstrap=bootstrap_from_genesis(cluster.genesis), admission=admission)


def alive(processes: list[NodeProcess]) -> list[bool]:
    return [p.process is not None and p.process.poll() is None for p in processes]


def stats(endpoint: Endpoint) -> dict[str, Any]:
    with Client(endpoint) as client:
        result: dict[str, Any] = client.stats()
        return result


def transfer_when_ready(endpoint: Endpoint, to: str, units: int, within: float = 90.0) -> dict[str, Any]:
    """A transfer of `units` whole USDC units, retried while the node answers "not ready" (it is
    learning its own seq)."""
    deadline = time.monotonic() + within
    with Client(endpoint) as client:
        while True:
            try:
                receipt: dict[str, Any] = client.transfer(to, "USDC", units * USDC_UNIT)
                return receipt
            except ApiError as exc:
                if exc.code != NOT_READY or time.monotonic() > deadline:
                    raise
            time.sleep(0.2)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "channel", *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def refused_start(process: NodeProcess, timeout: float = 60.0) -> tuple[int, str]:
    """Launch a node that should refuse to start; its exit code and what this launch printed."""
    before = process.log.stat().st_size if process.log.exists() else 0
    process.launch()
    assert process.process is not None
    code = process.process.wait(timeout)
    return code, process.log.read_bytes()[before:].decode()
