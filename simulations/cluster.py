"""A local cluster: one channel, N real node processes on 127.0.0.1, talking over libp2p.

`create_cluster` writes the whole layout into a folder::

    genesis.toml  keys/  password
    node0/node.toml  node1/node.toml  …   (each node's data directory is its own folder)

Each node's libp2p identity is created first, so the genesis can list every participant's
bootstrap multiaddr (``/ip4/127.0.0.1/tcp/PORT/p2p/PEER_ID``). `NodeProcess` starts ``python -m
channel node run`` for one of them and waits until its API answers. Used by the demo, the
crash-recovery tests and the network benchmarks; nothing here is a stand-in for a real part.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from channel.api.client import Client, Endpoint
from channel.errors import ChannelError
from channel.runtime import keystore
from channel.runtime.chain_worker import ChainConfig
from channel.runtime.config import NodeConfig
from channel.runtime.genesis_file import create_genesis_folder
from crdt.genesis import Genesis, Role, Token
from crdt.markets.config import Market
from p2p.identity import load_or_create, peer_id_of

CLUSTER_PASSWORD = "parley-local-cluster"  # throwaway keys in a folder the caller owns
USDC_UNIT = 1000  # one unit of a 6-decimal USDC in e9 (10**(9 - 6)): the finest amount the API takes


def wait_until(condition: Callable[[], Any], within: float = 90.0, what: str = "a condition") -> Any:
    """Poll `condition` until it returns something truthy (returned), or raise TimeoutError."""
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within:.0f} s waiting for {what}")
        time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Cluster:
    root: Path
    genesis: Genesis
    node_dirs: tuple[Path, ...]
    byzantine: dict[int, tuple[str, ...]] = field(default_factory=dict)  # index: `simulations.byzantine` names

    def config(self, index: int) -> Path:
        return self.node_dirs[index] / "node.toml"

    def process(self, index: int) -> NodeProcess:
        """Node `index` as a process: ``parley node run``, or a Byzantine node if it is one."""
        return NodeProcess(self.config(index), behaviours=self.byzantine.get(index, ()))


def create_cluster(
    root: Path, n: int, *, tokens: list[Token], initial: int, roles: list[Role] | None = None,
    finality_interval: float = 1.0, node_chain: ChainConfig | None = None,
    byzantine: dict[int, tuple[str, ...]] | None = None, seed: int | None = None,
    markets: Sequence[Market] | None = None,
    addresses: Sequence[tuple[tuple[str, int], tuple[str, int]]] | None = None,
    api_ports: Sequence[int] | None = None, **chain: Any,
) -> Cluster:
    """The layout of an n-node channel in `root`. `chain` passes chain_id, adjudicator and
    dispute_window through to the genesis (for a channel opened on a real chain). With a `seed`
    the participants' keys derive from it (`keystore.seeded_keys`), else they are new.
    `addresses` gives each node's ((host, port) peers dial, (host, port) it listens on), for
    nodes behind a proxy or in their own network namespace (`simulations.faults`); by default
    both are 127.0.0.1 and one free port. `api_ports` fixes each node's API port (default: 0)."""
    root.mkdir(parents=True, exist_ok=True)
    made = keystore.seeded_keys(seed, n) if seed is not None else [keystore.new_key() for _ in range(n)]
    keys = sorted(made, key=lambda key: key.address)
    node_dirs = tuple(root / f"node{i}" for i in range(n))
    if addresses is None:
        addresses = [(("127.0.0.1", port), ("127.0.0.1", port)) for port in (free_port() for _ in range(n))]
    bootstraps = [
        f"/ip4/{host}/tcp/{port}/p2p/{peer_id_of(load_or_create(folder, CLUSTER_PASSWORD))}"
        for ((host, port), _), folder in zip(addresses, node_dirs, strict=True)
    ]
    genesis, _ = create_genesis_folder(
        root, n, password=CLUSTER_PASSWORD, tokens=tokens, initial=initial, roles=roles, light_kdf=True,
        keys=keys, bootstraps=bootstraps, markets=markets, **chain,
    )
    (root / "password").write_text(CLUSTER_PASSWORD)
    for key, (_, (host, port)), api_port, folder in zip(keys, addresses, api_ports or [0] * n, node_dirs, strict=True):
        config = NodeConfig(
            data_dir=folder, genesis=root / "genesis.toml", keystore=keystore.find(root / "keys", key.address),
            password_file=root / "password", p2p_listen=(f"/ip4/{host}/tcp/{port}",), api_port=api_port,
            finality_interval=finality_interval, chain=node_chain,
        )
        (folder / "node.toml").write_text(tomli_w.dumps(config.to_mapping(folder)))
    return Cluster(root, genesis, node_dirs, dict(byzantine or {}))


@dataclass
class NodeProcess:
    """One ``parley node run`` process. ``fresh_channel``: pass ``--fresh-channel`` when the
    node has no store yet (the cluster was just created, so nothing was signed anywhere)."""

    config: Path
    process: subprocess.Popen[bytes] | None = None
    fresh_channel: bool = True
    behaviours: tuple[str, ...] = ()  # non-empty: a `simulations.byzantine` process instead
    prefix: tuple[str, ...] = ()  # run under this, e.g. ("ip", "netns", "exec", NS) (it must exec the command)
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.config.parent / "node.log"

    @property
    def data_dir(self) -> Path:
        return self.config.parent

    def start(self, timeout: float = 60.0) -> Endpoint:
        self.launch()
        return self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the process without waiting for it (see `start_all`)."""
        (self.data_dir / "api.json").unlink(missing_ok=True)
        if self.behaviours:
            command = [sys.executable, "-m", "simulations.byzantine", "--config", str(self.config)]
            command += [arg for name in self.behaviours for arg in ("--behaviour", name)]
        else:
            command = [sys.executable, "-m", "channel", "node", "run", "--config", str(self.config)]
        if self.fresh_channel and not (self.data_dir / "node.sqlite").exists():
            command.append("--fresh-channel")
        command = [*self.prefix, *command]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def wait_ready(self, timeout: float) -> Endpoint:
        deadline = time.monotonic() + timeout
        info_path = self.data_dir / "api.json"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ChannelError(f"node {self.config} exited with {self.process.returncode}; see {self.log}")
            if info_path.exists():
                info = json.loads(info_path.read_text())
                if self.process is not None and info.get("pid") == self.process.pid:
                    endpoint = Endpoint.for_node(self.data_dir)
                    with Client(endpoint) as client:
                        client.stats()
                    return endpoint
            time.sleep(0.05)
        raise ChannelError(f"node {self.config} did not start within {timeout} s; see {self.log}")

    def terminate(self) -> None:
        """Send SIGTERM once (a second one could land after the node restored the default
        handler on its way out, and kill it)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 20.0) -> int | None:
        """Wait for the exit code; SIGKILL if the node does not exit in time."""
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in time. Returns the exit code."""
        self.terminate()
        return self.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: the crash the store must survive."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def start_all(processes: list[NodeProcess], timeout: float = 90.0) -> list[Endpoint]:
    """Launch every node at once (they dial each other), then wait until each API answers."""
    for process in processes:
        process.launch()
    try:
        return [process.wait_ready(timeout) for process in processes]
    except BaseException:
        stop_all(processes)
        raise


def stop_all(processes: list[NodeProcess]) -> list[int | None]:
    """SIGTERM to every node at once, then their exit codes."""
    for process in processes:
        process.terminate()
    return [process.wait() for process in processes]
