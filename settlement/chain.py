"""Chain backends: the embedded eth-tester/py-evm chain, any JSON-RPC URL, and a local anvil.

Invariants:
- every backend is a `Chain`: a `Web3` plus the few test-chain controls the flows need (time,
  mining, snapshots, funding from an unlocked account), so the same flow runs unchanged on
  eth-tester, anvil, a testnet or mainnet (where the controls raise `SettlementError`);
- the chain id is always read from the chain, never assumed;
- `start_anvil` binds to 127.0.0.1 on a free port, waits until ``eth_blockNumber`` answers,
  and `AnvilProcess.stop` ends exactly the process it started (by its PID).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_tester import EthereumTester, PyEVMBackend
from web3 import EthereumTesterProvider, HTTPProvider, Web3

from settlement.errors import RpcUnavailable, SettlementError

ROOT = Path(__file__).resolve().parent.parent
ANVIL_CANDIDATES = (
    ROOT / "contracts" / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil",
    ROOT / "contracts" / "node_modules" / "@foundry-rs" / "anvil-linux-arm64" / "bin" / "anvil",
    ROOT / "contracts" / "node_modules" / "@foundry-rs" / "anvil-darwin-arm64" / "bin" / "anvil",
    ROOT / "contracts" / "node_modules" / "@foundry-rs" / "anvil-darwin-amd64" / "bin" / "anvil",
)


class Chain:
    """A connected chain. Subclasses add the controls their backend has."""

    kind = "rpc"
    #: When set, transactions are checked with one ``eth_call`` and sent with this gas limit
    #: instead of being estimated (py-evm's estimate is a binary search: ~10 executions).
    fixed_gas: int | None = None

    def __init__(self, w3: Web3) -> None:
        self.w3 = w3

    @property
    def chain_id(self) -> int:
        return int(retrying(lambda: self.w3.eth.chain_id, what="chain_id"))

    def now(self) -> int:
        """The timestamp of the latest block."""
        return int(retrying(lambda: self.w3.eth.get_block("latest"), what="get_block")["timestamp"])

    def block_number(self) -> int:
        return int(self.w3.eth.block_number)

    def funded_accounts(self) -> list[str]:
        """Unlocked accounts of a development chain (none on a real network)."""
        return list(retrying(lambda: self.w3.eth.accounts, what="accounts"))

    def fund(self, address: str, wei: int) -> None:
        """Send `wei` from the first unlocked account (development chains only)."""
        accounts = self.funded_accounts()
        if not accounts:
            raise SettlementError("this chain has no unlocked account to fund from")
        request: Any = {"from": accounts[0], "to": address, "value": wei}
        tx = self.w3.eth.send_transaction(request)
        self.w3.eth.wait_for_transaction_receipt(tx)

    def increase_time(self, seconds: int) -> None:
        raise SettlementError(f"a {self.kind} chain cannot travel in time")

    def mine(self, blocks: int = 1) -> None:
        raise SettlementError(f"a {self.kind} chain cannot mine on demand")

    def snapshot(self) -> Any:
        raise SettlementError(f"a {self.kind} chain has no snapshots")

    def revert(self, snapshot: Any) -> None:
        raise SettlementError(f"a {self.kind} chain has no snapshots")


class EmbeddedChain(Chain):
    """eth-tester with py-evm, in this process."""

    kind = "embedded"
    fixed_gas = 20_000_000

    def __init__(self) -> None:
        self.tester = EthereumTester(PyEVMBackend())
        super().__init__(Web3(EthereumTesterProvider(self.tester)))

    def increase_time(self, seconds: int) -> None:
        self.tester.time_travel(self.now() + seconds)

    def mine(self, blocks: int = 1) -> None:
        self.tester.mine_blocks(blocks)

    def snapshot(self) -> Any:
        return self.tester.take_snapshot()

    def revert(self, snapshot: Any) -> None:
        self.tester.revert_to_snapshot(snapshot)


class RpcChain(Chain):
    """Any JSON-RPC endpoint. The development controls use anvil's (and hardhat's) methods."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url
        super().__init__(Web3(HTTPProvider(url, request_kwargs={"timeout": timeout})))

    def _rpc(self, method: str, params: list[Any]) -> Any:
        # connection failures retried as the client's calls are (seen once under load: the chain
        # server dropped the connection of an evm_increaseTime, RemoteDisconnected)
        response = retrying(lambda: self.w3.provider.make_request(method, params), what=method)  # type: ignore[arg-type]
        if "error" in response:
            raise SettlementError(f"{method} failed: {response['error']}")
        return response.get("result")

    def increase_time(self, seconds: int) -> None:
        self._rpc("evm_increaseTime", [seconds])
        self._rpc("evm_mine", [])

    def mine(self, blocks: int = 1) -> None:
        for _ in range(blocks):
            self._rpc("evm_mine", [])

    def snapshot(self) -> Any:
        return self._rpc("evm_snapshot", [])

    def revert(self, snapshot: Any) -> None:
        if self._rpc("evm_revert", [snapshot]) is False:
            raise SettlementError(f"evm_revert to {snapshot} failed")


def connect(url: str | None) -> Chain:
    """The embedded chain for None or ``"embedded"``, else a JSON-RPC chain at `url`."""
    if url is None or url == "embedded":
        return EmbeddedChain()
    return RpcChain(url)


# -- anvil ---------------------------------------------------------------------------------------


def anvil_binary() -> Path | None:
    """anvil from contracts/node_modules (``npm install`` in contracts/), else from PATH."""
    override = os.environ.get("PARLEY_ANVIL")
    if override:
        return Path(override)
    for candidate in ANVIL_CANDIDATES:
        if candidate.exists():
            return candidate
    found = shutil.which("anvil")
    return Path(found) if found else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class AnvilProcess:
    process: subprocess.Popen[bytes]
    url: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_anvil(binary: Path | None = None, extra: list[str] | None = None, timeout: float = 30.0) -> AnvilProcess:
    """Start anvil on 127.0.0.1 and a free port; return once it answers ``eth_blockNumber``."""
    path = binary or anvil_binary()
    if path is None:
        raise SettlementError("anvil not found: run `npm install` in contracts/")
    port = free_port()
    process = subprocess.Popen(
        [str(path), "--host", "127.0.0.1", "--port", str(port), "--silent", *(extra or [])],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    anvil = AnvilProcess(process, url)
    w3 = Web3(HTTPProvider(url, request_kwargs={"timeout": 2}))
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise SettlementError(f"anvil exited with code {process.returncode}")
        try:
            w3.eth.block_number  # noqa: B018
            return anvil
        except Exception as exc:  # not up yet: connection refused
            if time.monotonic() > deadline:
                anvil.stop()
                raise RpcUnavailable(f"anvil did not answer within {timeout}s") from exc
            time.sleep(0.05)


def retrying(
    call: Callable[[], Any],
    *,
    attempts: int = 5,
    base_delay: float = 0.2,
    max_delay: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
    what: str = "RPC call",
) -> Any:
    """Run `call`, retrying connection failures with exponential backoff; `RpcUnavailable` after
    the last attempt. Reverts and other answers from the node are not retried."""
    delay = base_delay
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except (OSError, TimeoutError) as exc:  # requests' ConnectionError is an OSError
            if attempt == attempts:
                raise RpcUnavailable(f"{what} failed {attempts} times: {exc}") from exc
        except Exception as exc:
            if not _is_connection_error(exc):
                raise
            if attempt == attempts:
                raise RpcUnavailable(f"{what} failed {attempts} times: {exc}") from exc
        sleep(delay)
        delay = min(delay * 2, max_delay)
    raise AssertionError("unreachable")


def _is_connection_error(exc: BaseException) -> bool:
    from web3.exceptions import ProviderConnectionError

    return isinstance(exc, ProviderConnectionError) or type(exc).__name__ in {
        "ConnectionError",
        "ReadTimeout",
        "ConnectTimeout",
        "ChunkedEncodingError",
    }
