"""The network of a fault run: one Linux network namespace per node, a veth pair per link.

Layout for n nodes (names carry the harness's pid, so two runs on one machine never meet)::

    namespace  parley-f<pid>-<i>      lo: 127.0.0.1 and 10.77.1.<i+1>/32 (the node's own listen address)
    link i-j   veth "v<j>" in ns i  <->  veth "v<i>" in ns j
               ns i: 10.77.0.<i+1>/32 on v<j>, route 10.77.0.<j+1>/32 dev v<j> src 10.77.0.<i+1>

So every node's public address 10.77.0.<i+1> (the genesis bootstrap, where the fault proxy
listens) is reached from node j over exactly one link, and ``ip link set v<j> down`` in ns i
cuts exactly the link i-j, whatever the other links do: a partition is a set of cut links, so
halves, a majority/minority split, an isolated node and the bridge (one node that still reaches
both sides) are all the same operation. The node itself listens on 10.77.1.<i+1>, which no other
namespace routes to: an address a peer learns by libp2p's identify fails at once (ENETUNREACH)
instead of going around the proxy.

Invariants:
- the root namespace gets no interface, address or route: nothing of a run is reachable from
  outside its namespaces except through sockets the harness itself makes inside them
  (`socket_in`, by ``setns`` on the calling thread and straight back, so no other code of the
  process ever runs in a node's namespace);
- `Topology.close` deletes every namespace it made (deleting a namespace deletes its veths), and
  is safe to call twice and after a failed `create`.

Where namespaces cannot be made (not root, no ``ip``), `loopback_topology` stands in: every node
on 127.0.0.1 with distinct ports, no links to cut (`Topology.netns` is False and the run says so).
"""

from __future__ import annotations

import ctypes
import itertools
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass, field

from simulations.faults.errors import FaultsError

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/var/run/netns"
P2P_PORT = 4001  # inside each namespace: the proxy on the public address, the node on its own


class NamespaceError(FaultsError):
    """A namespace, link or address could not be made or changed."""


def namespaces_available() -> tuple[bool, str]:
    """Whether this process can make network namespaces, and if not, why."""
    if os.geteuid() != 0:
        return False, "not root"
    if shutil.which("ip") is None:
        return False, "no ip command (iproute2)"
    return True, ""


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NamespaceError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")


_libc: ctypes.CDLL | None = None


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise NamespaceError(f"setns: {os.strerror(errno)}")


def socket_in(namespace: str | None) -> socket.socket:
    """A TCP socket that belongs to `namespace` (None: this process's own). A socket keeps the
    namespace it was made in for its whole life, so it can then be bound, connected and used
    from any thread; only its creation needs the calling thread inside the namespace."""
    if namespace is None:
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"{NETNS_DIR}/{namespace}", os.O_RDONLY)
        try:
            _setns(target)
            try:
                return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            finally:
                _setns(home)
        finally:
            os.close(target)
    finally:
        os.close(home)


@dataclass
class Topology:
    """Where each node lives and listens, and the links between them."""

    n: int
    netns: bool  # False: the loopback stand-in (no links, no partitions)
    namespaces: tuple[str | None, ...]
    public: tuple[tuple[str, int], ...]  # (host, port) peers dial: the fault proxy in front of node i
    listen: tuple[tuple[str, int], ...]  # (host, port) node i's libp2p listens on, inside its namespace
    down: set[frozenset[int]] = field(default_factory=set)  # links cut now
    made: list[str] = field(default_factory=list)

    def namespace(self, node: int) -> str | None:
        return self.namespaces[node]

    def node_of(self, host: str) -> int | None:
        """The node whose public address is `host` (the source of a connection into a proxy)."""
        for index, (address, _) in enumerate(self.public):
            if address == host and self.netns:
                return index
        return None

    def exec_prefix(self, node: int) -> tuple[str, ...]:
        """What to put before a command that must run in node's namespace."""
        namespace = self.namespaces[node]
        return ("ip", "netns", "exec", namespace) if namespace else ()

    def links(self) -> list[frozenset[int]]:
        return [frozenset(pair) for pair in itertools.combinations(range(self.n), 2)]

    def cut(self, links: set[frozenset[int]]) -> None:
        """Take the links' veths down on both ends: packets on them are lost, new connections
        get ENETUNREACH, established ones stall until the link returns (TCP retransmits)."""
        if not self.netns:
            raise NamespaceError("partitions need network namespaces (this run is on loopback)")
        for link in links - self.down:
            i, j = sorted(link)
            for a, b in ((i, j), (j, i)):
                _ip("-n", self._ns(a), "link", "set", f"v{b}", "down")
            self.down.add(link)

    def heal(self, links: set[frozenset[int]] | None = None) -> None:
        """Bring the links back up, and their routes (a device going down drops its routes)."""
        for link in set(self.down if links is None else links) & self.down:
            i, j = sorted(link)
            for a, b in ((i, j), (j, i)):
                _ip("-n", self._ns(a), "link", "set", f"v{b}", "up")
            for a, b in ((i, j), (j, i)):
                _ip("-n", self._ns(a), "route", "replace", f"{self.public[b][0]}/32", "dev", f"v{b}",
                    "src", self.public[a][0])
            self.down.discard(link)

    def _ns(self, node: int) -> str:
        namespace = self.namespaces[node]
        assert namespace is not None
        return namespace

    def close(self) -> None:
        """Delete every namespace this topology made (and with them their veths)."""
        while self.made:
            name = self.made.pop()
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def public_address(node: int) -> str:
    return f"10.77.0.{node + 1}"


def listen_address(node: int) -> str:
    return f"10.77.1.{node + 1}"


def create_topology(n: int, tag: str | None = None) -> Topology:
    """n namespaces joined by a full mesh of veth pairs (see the module docstring)."""
    if not 1 <= n <= 200:
        raise NamespaceError(f"between 1 and 200 nodes, not {n}")
    tag = tag or f"parley-f{os.getpid()}"
    names = tuple(f"{tag}-{i}" for i in range(n))
    topology = Topology(
        n, True, names,
        public=tuple((public_address(i), P2P_PORT) for i in range(n)),
        listen=tuple((listen_address(i), P2P_PORT) for i in range(n)),
    )
    try:
        for i, name in enumerate(names):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)  # a leftover
            _ip("netns", "add", name)
            topology.made.append(name)
            _ip("-n", name, "link", "set", "lo", "up")
            _ip("-n", name, "addr", "add", f"{listen_address(i)}/32", "dev", "lo")
        for i, j in itertools.combinations(range(n), 2):
            _ip("link", "add", f"v{j}", "netns", names[i], "type", "veth", "peer", "name", f"v{i}", "netns", names[j])
            for a, b in ((i, j), (j, i)):
                _ip("-n", names[a], "addr", "add", f"{public_address(a)}/32", "dev", f"v{b}")
                _ip("-n", names[a], "link", "set", f"v{b}", "up")
                _ip("-n", names[a], "route", "add", f"{public_address(b)}/32", "dev", f"v{b}",
                    "src", public_address(a))
    except BaseException:
        topology.close()
        raise
    return topology


def loopback_topology(n: int) -> Topology:
    """The stand-in without namespaces: every node and proxy on 127.0.0.1, ports picked free."""
    ports = _free_ports(2 * n)
    return Topology(
        n, False, (None,) * n,
        public=tuple(("127.0.0.1", ports[i]) for i in range(n)),
        listen=tuple(("127.0.0.1", ports[n + i]) for i in range(n)),
    )


def _free_ports(count: int) -> list[int]:
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]
    finally:
        for probe in probes:
            probe.close()
