"""The embedded chain (eth-tester + py-evm) served over JSON-RPC on 127.0.0.1.

``parley chain serve`` lets several processes (the nodes of a local channel, `parley exit`, a
script) share one embedded chain, with no external program: the same EVM as the in-process
default, reached through `settlement.chain.RpcChain` like anvil or a testnet. It answers the
standard ``eth_*`` methods through web3's `EthereumTesterProvider`, plus anvil's development
methods ``evm_increaseTime``, ``evm_mine``, ``evm_snapshot`` and ``evm_revert``, so the dispute
window can be fast-forwarded in demos and tests.

Requests are handled one at a time on one trio task (eth-tester is not thread safe), and the
server binds to a loopback address only.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import trio
from eth_account import Account
from eth_tester.exceptions import TransactionFailed
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from web3 import Web3

from crdt.jsontext import MAX_NESTING, deeper_than_limit
from settlement.chain import EmbeddedChain
from settlement.client import _tester_revert_bytes
from settlement.errors import SettlementError

MAX_REQUEST_BYTES = 4 << 20  # a deploy with its bytecode is about 40 KB


class ChainServer:
    def __init__(self, chain: EmbeddedChain | None = None) -> None:
        self.chain = chain or EmbeddedChain()
        # Through web3's request manager, so the provider's middleware turns JSON-RPC's hex
        # params into what eth-tester takes; results are serialised with Web3.to_json.
        self.manager = self.chain.w3.manager

    def handle(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            return {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "invalid request"}}
        method, params, request_id = request["method"], request.get("params") or [], request.get("id")
        try:
            params = checksummed(params)
            result = self._development(method, params)
            if result is NotImplemented:
                response = dict(self.manager._make_request(method, params))
            else:
                response = {"result": result}
        except TransactionFailed as exc:
            # As anvil answers: code 3 with the revert data, so clients decode custom errors.
            data = _tester_revert_bytes(exc.args[0]) if exc.args else None
            error: dict[str, Any] = {"code": 3, "message": "execution reverted"}
            if data is not None:
                error["data"] = "0x" + data.hex()
            response = {"error": error}
        except Exception as exc:  # eth-tester raises many types; each becomes a JSON-RPC error
            response = {"error": {"code": -32000, "message": f"{type(exc).__name__}: {exc}"}}
        response.update(jsonrpc="2.0", id=request_id)
        return response

    def _development(self, method: str, params: list[Any]) -> Any:
        chain = self.chain
        if method == "evm_increaseTime":
            chain.increase_time(int(params[0], 16) if isinstance(params[0], str) else int(params[0]))
            return True
        if method == "evm_mine":
            chain.mine(1)
            return "0x0"
        if method == "evm_snapshot":
            return hex(chain.snapshot())
        if method == "evm_revert":
            chain.revert(int(params[0], 16) if isinstance(params[0], str) else int(params[0]))
            return True
        return NotImplemented

    def app(self) -> Starlette:
        async def rpc(request: Request) -> Response:
            declared = request.headers.get("content-length", "")
            if not (declared.isascii() and declared.isdigit() and int(declared) <= MAX_REQUEST_BYTES):
                error = {"code": -32600, "message": f"a request needs a Content-Length of at most {MAX_REQUEST_BYTES}"}
                return JSONResponse({"jsonrpc": "2.0", "id": None, "error": error}, status_code=413)
            body = await request.body()
            if deeper_than_limit(body) is not None:  # before json.loads can run out of C stack
                error = {"code": -32600, "message": f"JSON nested deeper than {MAX_NESTING}"}
                return JSONResponse({"jsonrpc": "2.0", "id": None, "error": error})
            try:
                payload = json.loads(body)
            except (ValueError, RecursionError) as exc:
                return JSONResponse({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": str(exc)}})
            answer = [self.handle(item) for item in payload] if isinstance(payload, list) else self.handle(payload)
            return Response(Web3.to_json(answer), media_type="application/json")  # type: ignore[arg-type]

        return Starlette(routes=[Route("/", rpc, methods=["POST"])])


def dev_accounts(chain: EmbeddedChain) -> list[tuple[str, str, int]]:
    """The embedded chain's funded accounts: (address, private key, wei). eth-tester derives
    them from the private keys 1, 2, 3, …, public knowledge like anvil's mnemonic."""
    accounts = list(chain.w3.eth.accounts)
    keys = [f"0x{index:064x}" for index in range(1, len(accounts) + 1)]
    found = []
    for address, key in zip(accounts, keys, strict=True):
        if Account.from_key(key).address != address:
            raise SettlementError(f"eth-tester's account {address} is not the one of key {key}")
        found.append((str(address), key, int(chain.w3.eth.get_balance(address))))
    return found


def checksummed(value: Any) -> Any:
    """`value` with every 20-byte hex string in EIP-55 case: web3's tester provider refuses
    lowercase addresses, which anvil, foundry and Parley itself send (hex case carries no
    meaning in JSON-RPC, so data of that length is unchanged in value)."""
    if isinstance(value, str) and len(value) == 42 and value[:2] in ("0x", "0X"):
        try:
            return Web3.to_checksum_address(value)
        except ValueError:
            return value
    if isinstance(value, list):
        return [checksummed(item) for item in value]
    if isinstance(value, dict):
        return {key: checksummed(item) for key, item in value.items()}
    return value


async def serve_chain(
    host: str = "127.0.0.1", port: int = 8545, *, server: ChainServer | None = None, block_time: float = 1.0,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; reports the URL once bound. With `block_time` > 0 an (empty)
    block is mined that often, as anvil's --block-time does, so confirmations advance on a
    quiet chain too; transactions are mined at once either way."""
    if not ipaddress.ip_address(host).is_loopback:
        raise SettlementError(f"the embedded chain serves on loopback only, not {host}")
    config = HypercornConfig()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None
    server = server or ChainServer()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, server.app(), config)
        task_status.started(str(binds[0]))
        while block_time > 0:
            await trio.sleep(block_time)
            server.chain.mine(1)


class ChainServerProcess:
    """``parley chain serve`` as a child process on a free port (for demos and tests)."""

    def __init__(self, timeout: float = 60.0, block_time: float = 1.0, extra: list[str] | None = None) -> None:
        import subprocess
        import sys
        import time

        self.process = subprocess.Popen(
            [sys.executable, "-m", "channel", "chain", "serve", "--port", "0", "--block-time", str(block_time),
             *(extra or [])],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline and self.process.poll() is None:
            line = self.process.stdout.readline()
            if line.startswith("embedded chain on "):
                self.url = line.split(" on ", 1)[1].strip()
                return
        self.stop()
        raise SettlementError(f"the embedded chain server did not start: {line!r}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except Exception:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
