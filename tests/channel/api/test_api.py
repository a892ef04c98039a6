"""The local API end to end: a node (store + replica, no network) behind the real HTTP and
WebSocket server, driven by the real clients."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channel.api.client import KEEP_ALIVE, ApiError, AsyncClient, Client, Endpoint, Unauthorized
from channel.api.server import INVALID_PARAMS, SERVER_KEEP_ALIVE, RpcError, openrpc_document, parse_body
from channel.runtime import keystore
from channel.runtime.genesis_file import create_genesis_folder, load_genesis
from channel.runtime.node import Node
from crdt.genesis import Role, Token
from crdt.kinds import AMOUNT, KINDS
from crdt.ops import sign_op
from tests.channel.api.trading_kit import serve_node
from tests.crdt.kinds_kit import ANY_JSON, MEMO, TRICKY_JSON, WITH_MEMO, json_body

PASSWORD = "pw"
E9 = 10**9


@pytest.fixture(scope="module")
def channel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("api-channel")
    usdc = Token("USDC", b"\x22" * 20, 6)  # type: ignore[arg-type]
    create_genesis_folder(folder, 4, password=PASSWORD, tokens=[usdc], initial=100 * E9, light_kdf=True,
                          roles=[Role.TRADER, Role.TRADER, Role.TRADER, Role.OBSERVER])
    return folder


def with_node(channel_dir: Path, tmp_path: Path, body: Callable[[Node, Endpoint], Awaitable[None]],
              participant: int = 0) -> None:
    genesis = load_genesis(channel_dir / "genesis.toml")
    address = genesis.participants[participant].address
    key = keystore.load(keystore.find(channel_dir / "keys", address), PASSWORD)
    serve_node(genesis, key, tmp_path / f"node{participant}", body)


def others(node: Node) -> list[str]:
    return ["0x" + p.address.hex() for p in node.genesis.participants if p.address != node.address]


def test_wrong_or_missing_token_gets_401(channel_dir: Path, tmp_path: Path) -> None:
    async def body(node: Node, endpoint: Endpoint) -> None:
        request = {"jsonrpc": "2.0", "id": 1, "method": "parley_stats"}
        async with httpx.AsyncClient(base_url=endpoint.url) as http:
            assert (await http.post("/rpc", json=request)).status_code == 401
            wrong = {"authorization": "Bearer not-the-token"}
            assert (await http.post("/rpc", json=request, headers=wrong)).status_code == 401
            right = {"authorization": f"Bearer {endpoint.token}"}
            assert (await http.post("/rpc", json=request, headers=right)).status_code == 200
        async with AsyncClient(Endpoint(endpoint.url, "nope")) as wrong_client:
            with pytest.raises(Unauthorized):
                await wrong_client.stats()
            with pytest.raises(Unauthorized):
                async with wrong_client.subscribe("ops"):
                    pass

        def watch_with_wrong_token() -> None:
            with Client(Endpoint(endpoint.url, "nope")) as sync_client:
                next(iter(sync_client.watch("ops")))

        with pytest.raises(Unauthorized):
            await trio.to_thread.run_sync(watch_with_wrong_token)

    with_node(channel_dir, tmp_path, body)


def test_transfer_updates_balances_and_status(channel_dir: Path, tmp_path: Path) -> None:
    async def body(node: Node, endpoint: Endpoint) -> None:
        async with AsyncClient(endpoint) as client:
            to = others(node)[0]
            receipt = await client.transfer(to, "USDC", 5 * E9)
            assert receipt["status"] == "tentative"
            assert receipt["seq"] == 1
            status = await client.status(receipt["op_id"])
            assert status == {"op_id": receipt["op_id"], "status": "tentative", "author": "0x" + node.address.hex(),
                              "seq": 1, "kind": "transfer"}
            balances = await client.balances()
            assert balances["0x" + node.address.hex()]["USDC"]["free"] == str(95 * E9)
            assert balances[to]["USDC"]["free"] == str(105 * E9)
            second = await client.submit("withdraw", {"token": "USDC", "amount": "1000"})
            assert second["seq"] == 2
            mine = await client.balances("0x" + node.address.hex())
            assert list(mine) == ["0x" + node.address.hex()]
            assert mine["0x" + node.address.hex()]["USDC"]["withdrawn"] == "1000"
            heads = await client.heads()
            assert heads["heads"] == [second["op_id"]]
            assert heads["version_vector"] == {"0x" + node.address.hex(): 2}
            stats = await client.stats()
            assert stats["operations"] == 2
            assert stats["submitted"] == 2
        assert node.store.count_ops() == 2

    with_node(channel_dir, tmp_path, body)


def test_request_ids_make_submits_idempotent(channel_dir: Path, tmp_path: Path) -> None:
    async def body(node: Node, endpoint: Endpoint) -> None:
        async with AsyncClient(endpoint) as client:
            to = others(node)[1]
            first = await client.transfer(to, "USDC", 7 * 10**6, request_id="order-1")
            again = await client.transfer(to, "USDC", 7 * 10**6, request_id="order-1")
            assert again == first
            assert (await client.stats())["operations"] == 1
            with pytest.raises(ApiError) as conflict:  # the same key for another request signs nothing
                await client.transfer(to, "USDC", 8 * 10**6, request_id="order-1")
            assert (conflict.value.code, conflict.value.data) == (-32602, {"reason": "request_id_conflict"})
            assert "order-1" in str(conflict.value)
            assert (await client.stats())["operations"] == 1

    with_node(channel_dir, tmp_path, body)


def test_a_request_id_survives_a_restart_with_its_fingerprint(channel_dir: Path, tmp_path: Path) -> None:
    """A retry after the node restarted still gets the first answer, and a conflict is still
    seen: the fingerprint is in the store with the request id."""
    answers: list[Any] = []

    async def first(node: Node, endpoint: Endpoint) -> None:
        async with AsyncClient(endpoint) as client:
            answers.append(await client.transfer(others(node)[1], "USDC", 5 * 10**6, request_id="r"))

    async def second(node: Node, endpoint: Endpoint) -> None:
        async with AsyncClient(endpoint) as client:
            again = await client.transfer(others(node)[1], "USDC", 5 * 10**6, request_id="r")
            assert again["op_id"] == answers[0]["op_id"]
            with pytest.raises(ApiError) as conflict:
                await client.transfer(others(node)[2], "USDC", 5 * 10**6, request_id="r")
            assert conflict.value.data == {"reason": "request_id_conflict"}

    with_node(channel_dir, tmp_path, first)
    with_node(channel_dir, tmp_path, second)


@pytest.mark.parametrize(
    ("method", "params", "code", "message"),
    [
        ("parley_nope", [], -32601, "no method"),
        ("parley_transfer", ["0x1234", "USDC", "5"], -32602, "expected 20 bytes"),
        ("parley_transfer", [None, "USDC", "5"], -32602, "missing parameters"),
        ("parley_transfer", ["0x" + "11" * 20, "USDC", "-5"], -32602, "positive integer"),
        ("parley_transfer", ["0x" + "11" * 20, "USDC", 1.5], -32602, "positive integer"),
        ("parley_submit", ["funding.pay", {}], -32602, "unknown kind"),
        ("parley_submit", ["transfer", {"to": "0x" + "11" * 20, "token": "USDC"}], -32602, "missing ['amount']"),
        ("parley_submit", ["lock", {"token": "USDC", "amount": 1, "until": -1, "reason": "x"}], -32602, "until"),
        ("parley_status", ["0xzz"], -32602, "op_id"),
        ("parley_balances", ["0x" + "11" * 20], -32602, "not a participant"),
        ("parley_subscribe", ["ops"], -32601, "only available over the WebSocket"),
        ("parley_stats", {"bogus": 1}, -32602, "unknown parameters"),
    ],
)
def test_malformed_requests_get_json_rpc_errors(
    channel_dir: Path, tmp_path: Path, method: str, params: Any, code: int, message: str
) -> None:
    async def body(node: Node, endpoint: Endpoint) -> None:
        async with httpx.AsyncClient(base_url=endpoint.url, headers=endpoint.headers) as http:
            response = await http.post("/rpc", json={"jsonrpc": "2.0", "id": 9, "method": method, "params": params})
            error = response.json()["error"]
            assert error["code"] == code
            assert message in error["message"]
            assert response.json()["id"] == 9
        assert len(node.replica.graph) == 0

    with_node(channel_dir, tmp_path, body)


def test_garbage_payloads(channel_dir: Path, tmp_path: Path) -> None:
    async def body(node: Node, endpoint: Endpoint) -> None:
        async with httpx.AsyncClient(base_url=endpoint.url, headers=endpoint.headers) as http:
            async def post(content: bytes) -> Any:
                return (await http.post("/rpc", content=content)).json()

            assert (await post(b"\xff\xfe{"))["error"]["code"] == -32700
            assert (await post(b"[]"))["error"]["code"] == -32600
            assert (await post(b'{"jsonrpc": "1.0", "method": "x"}'))["error"]["code"] == -32600
            assert (await post(json.dumps([{"jsonrpc": "2.0", "method": "parley_stats"}] * 101).encode()))[
                "error"]["message"].startswith("a batch holds at most")
            batch = [{"jsonrpc": "2.0", "id": 1, "method": "parley_heads"}, {"jsonrpc": "2.0", "id": 2, "method": "x"}]
            answers = await post(json.dumps(batch).encode())
            assert [a["id"] for a in answers] == [1, 2]
            assert "result" in answers[0]
            assert answers[1]["error"]["code"] == -32601
            notification = await http.post("/rpc", json={"jsonrpc": "2.0", "method": "parley_stats"})
            assert notification.status_code == 204
            huge = await http.post("/rpc", content=b" " * ((1 << 20) + 1))
            assert huge.status_code == 413

    with_node(channel_dir, tmp_path, body)


@pytest.mark.parametrize(
    ("participant", "request_body", "reason"),
    [
        (0, {"token": "USDC", "amount": str(101 * E9)}, "insufficient_balance"),
        (0, {"token": "EUR", "amount": "1"}, "unknown_token"),
        (3, {"token": "USDC", "amount": "1000"}, "not_permitted"),  # an observer
    ],
)
def test_requests_replay_would_reject_are_refused_unsigned(
    channel_dir: Path, tmp_path: Path, participant: int, request_body: dict[str, Any], reason: str
) -> None:
    async def body(node: Node, endpoint: Endpoint) -> None:
        async with AsyncClient(endpoint) as client:
            with pytest.raises(ApiError) as caught:
                await client.submit("withdraw", request_body)
            assert caught.value.code == -32001
            assert caught.value.data == {"reason": reason}
            assert node.next_seq() == 1  # no seq consumed
            assert node.store.count_ops() == 0

    with_node(channel_dir, tmp_path, body, participant)


@pytest.mark.parametrize(
    ("kind", "extra"),
    [("transfer", {}), ("withdraw", {}), ("lock", {"until": 10**6, "reason": "escrow"})],
)
def test_amounts_finer_than_the_tokens_decimals_are_refused_unsigned(
    channel_dir: Path, tmp_path: Path, kind: str, extra: dict[str, Any]
) -> None:
    async def body(node: Node, endpoint: Endpoint) -> None:
        async with AsyncClient(endpoint) as client:
            request_body = {"token": "USDC", **extra}
            if kind == "transfer":
                request_body["to"] = others(node)[0]
            for amount in (1, 999, 5 * E9 + 1):  # USDC has 6 decimals: one unit is 1000 e9
                with pytest.raises(ApiError) as caught:
                    await client.submit(kind, {**request_body, "amount": str(amount)})
                assert caught.value.code == -32001
                assert caught.value.data == {"reason": "bad_amount"}
                assert "6 decimals" in str(caught.value)
            assert node.next_seq() == 1  # nothing signed
            assert node.store.count_ops() == 0
            receipt = await client.submit(kind, {**request_body, "amount": str(5 * E9 + 1000)})
            assert receipt["seq"] == 1

    with_node(channel_dir, tmp_path, body)


def test_self_transfer_and_unknown_recipient_are_refused(channel_dir: Path, tmp_path: Path) -> None:
    async def body(node: Node, endpoint: Endpoint) -> None:
        async with AsyncClient(endpoint) as client:
            for to, reason in (("0x" + node.address.hex(), "self_transfer"), ("0x" + "11" * 20, "unknown_recipient")):
                with pytest.raises(ApiError) as caught:
                    await client.transfer(to, "USDC", 1000)
                assert caught.value.data == {"reason": reason}

    with_node(channel_dir, tmp_path, body)


def test_subscriptions_deliver_ops_balances_and_statuses(channel_dir: Path, tmp_path: Path) -> None:
    """The node spends what participant 1 sent it; then participant 1's equivocating twin of that
    transfer arrives and sorts first, so the spend loses its funding: its status subscription
    reports the change from tentative to rejected."""
    genesis = load_genesis(channel_dir / "genesis.toml")
    keys = {k.address: k.private_key for k in keystore.load_all(channel_dir / "keys", PASSWORD)}
    me, p1, p2 = (p.address for p in genesis.participants[:3])
    ctx = genesis.context()
    gift = sign_op(ctx, keys[p1], 1, [], "transfer", {"to": me, "token": "USDC", "amount": 50 * E9})
    twin = next(
        op for amount in range(1, 1000)
        if (op := sign_op(ctx, keys[p1], 1, [], "transfer", {"to": p2, "token": "USDC", "amount": amount})).op_id
        < gift.op_id
    )

    async def body(node: Node, endpoint: Endpoint) -> None:
        events: dict[str, list[dict[str, Any]]] = {"ops": [], "balances": [], "status": []}

        ready = trio.Semaphore(0)

        async def collect(client: AsyncClient, topic: str, count: int) -> None:
            async with client.subscribe(topic) as stream:  # registered on the node once entered
                ready.release()
                async for event in stream:
                    events[topic].append(event)
                    if len(events[topic]) == count:
                        return

        async with AsyncClient(endpoint) as client, trio.open_nursery() as nursery:
            for topic, count in (("ops", 3), ("balances", 4), ("status", 1)):
                nursery.start_soon(collect, client, topic, count)
            for _ in events:
                await ready.acquire()
            node.receive([gift])
            spend = await client.transfer("0x" + p2.hex(), "USDC", 120 * E9)
            assert spend["status"] == "tentative"
            node.receive([twin])
        assert [e["op_id"] for e in events["ops"]] == ["0x" + gift.op_id.hex(), spend["op_id"], "0x" + twin.op_id.hex()]
        assert events["status"] == [{"op_id": spend["op_id"], "status": "rejected:insufficient_balance"}]
        assert events["balances"][0]["account"] in {"0x" + me.hex(), "0x" + p1.hex()}
        assert node.replica.status(gift.op_id) == "rejected:equivocation"
        assert node.events.subscribers == []

    with_node(channel_dir, tmp_path, body)


def test_openrpc_document_lists_every_method(channel_dir: Path, tmp_path: Path) -> None:
    async def body(node: Node, endpoint: Endpoint) -> None:
        async with AsyncClient(endpoint) as client:
            document = await client.discover()
        names = {m["name"] for m in document["methods"]}
        assert {"parley_submit", "parley_transfer", "parley_balances", "parley_status", "parley_heads",
                "parley_peers", "parley_stats", "parley_subscribe", "parley_unsubscribe"} <= names
        async with httpx.AsyncClient(base_url=endpoint.url) as http:
            assert (await http.get("/openrpc.json")).json() == document
            metrics = (await http.get("/metrics")).text
        assert "parley_operations 0.0" in metrics

    with_node(channel_dir, tmp_path, body)


def test_the_exit_without_a_chain_is_refused_typed(channel_dir: Path, tmp_path: Path) -> None:
    async def body(node: Node, endpoint: Endpoint) -> None:
        async with AsyncClient(endpoint) as client:
            status = await client.exit_status()
            with pytest.raises(ApiError) as refused:
                await client.start_exit()
            document = await client.discover()
        assert (status["phase"], status["running"], status["chain"], status["error"]) == ("idle", False, False, None)
        assert (refused.value.code, refused.value.data) == (-32005, {"reason": "no_chain"})
        assert "no chain configured" in str(refused.value)
        assert {"parley_exit", "parley_exitStatus"} <= {m["name"] for m in document["methods"]}

    with_node(channel_dir, tmp_path, body)


def test_metrics_serve_latency_histograms_and_process_metrics(channel_dir: Path, tmp_path: Path) -> None:
    async def body(node: Node, endpoint: Endpoint) -> None:
        async with AsyncClient(endpoint) as client:
            for units in (1, 2, 3):
                await client.transfer(others(node)[0], "USDC", units * E9)
            stats = await client.stats()
        assert stats["latency"]["submit"]["count"] == 3
        assert stats["latency"]["submit"]["p50_ms"] > 0
        assert stats["latency"]["delivery"]["count"] == 0  # no peer has built on them: no network here
        assert stats["ops_per_s"] > 0  # three operations within the last ten seconds
        async with httpx.AsyncClient(base_url=endpoint.url) as http:
            metrics = (await http.get("/metrics")).text
        assert "parley_submit_seconds_count 3.0" in metrics
        assert "parley_finality_seconds_count 0.0" in metrics
        assert 'parley_submit_seconds_bucket{le="+Inf"} 3.0' in metrics
        assert "process_resident_memory_bytes" in metrics
        assert "parley_operations 3.0" in metrics

    with_node(channel_dir, tmp_path, body)


def test_the_node_keeps_idle_connections_longer_than_its_clients_reuse_them(
    channel_dir: Path, tmp_path: Path
) -> None:
    """Else a client reusing a connection the node is closing gets "Server disconnected without
    sending a response" (the full demo did, once in CI, with both at 5 s)."""
    assert KEEP_ALIVE * 2 <= SERVER_KEEP_ALIVE

    async def body(node: Node, endpoint: Endpoint) -> None:
        async with AsyncClient(endpoint) as client:
            await client.stats()
            await trio.sleep(KEEP_ALIVE + 1)  # idle past the client's expiry, within the server's
            assert (await client.stats())["operations"] == 0

    with_node(channel_dir, tmp_path, body)


def test_restart_restores_state_and_seq(channel_dir: Path, tmp_path: Path) -> None:
    receipts: list[dict[str, Any]] = []

    async def first(node: Node, endpoint: Endpoint) -> None:
        async with AsyncClient(endpoint) as client:
            for amount in (1, 2, 3):
                receipts.append(await client.transfer(others(node)[0], "USDC", amount * 1000))

    async def second(node: Node, endpoint: Endpoint) -> None:
        assert node.next_seq() == 4
        async with AsyncClient(endpoint) as client:
            for receipt in receipts:
                assert (await client.status(receipt["op_id"]))["status"] == "tentative"
            assert (await client.transfer(others(node)[0], "USDC", 4000))["seq"] == 4

    with_node(channel_dir, tmp_path, first)
    with_node(channel_dir, tmp_path, second)


# -- the registry of kinds at the API edge (no node needed) ------------------------------------------


def test_openrpc_has_a_schema_per_kind_from_the_registry() -> None:
    document = openrpc_document()
    schemas = document["components"]["schemas"]
    assert [name for name in schemas if name in KINDS] == list(KINDS)  # beside the result models' schemas
    for name in KINDS:
        schema = schemas[name]
        assert schema == KINDS[name].json_schema()
        assert schema["required"] == [field for field, _ in KINDS[name].fields]
        assert schema["additionalProperties"] is False
        assert "observer" not in schema["x-roles"]
    submit = next(m for m in document["methods"] if m["name"] == "parley_submit")
    params = {p["name"]: p["schema"] for p in submit["params"]}
    assert params["kind"] == {"enum": list(KINDS)}
    assert list(KINDS)[:3] == ["transfer", "withdraw", "lock"]
    assert [ref["$ref"] for ref in params["body"]["oneOf"]] == [f"#/components/schemas/{k}" for k in KINDS]
    transfer = next(m for m in document["methods"] if m["name"] == "parley_transfer")
    assert {p["name"]: p["schema"] for p in transfer["params"]}["amount"] == AMOUNT.schema


def test_a_kind_added_to_a_registry_reaches_the_parser_and_the_openrpc_document() -> None:
    body = {"to": "0x" + "11" * 20, "note": "hello"}
    with pytest.raises(RpcError, match="unknown kind 'memo'; this node signs transfer, withdraw, lock, order"):
        parse_body("memo", body)
    assert parse_body("memo", body, WITH_MEMO) == {"to": bytes.fromhex("11" * 20), "note": "hello"}
    with pytest.raises(RpcError, match="note must be a non-empty string of at most 64 bytes") as caught:
        parse_body("memo", {**body, "note": 5}, WITH_MEMO)
    assert caught.value.code == INVALID_PARAMS
    assert "memo" not in openrpc_document()["components"]["schemas"]
    document = openrpc_document(WITH_MEMO)
    assert document["components"]["schemas"]["memo"] == MEMO.json_schema()
    assert document["components"]["schemas"]["memo"]["x-roles"] == ["oracle"]
    submit = next(m for m in document["methods"] if m["name"] == "parley_submit")
    assert {p["name"]: p["schema"] for p in submit["params"]}["kind"]["enum"][-1] == "memo"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), name=st.sampled_from([*KINDS, "memo", "bogus"]))
def test_parse_body_answers_invalid_params_or_a_body_the_registry_takes(data: st.DataObject, name: str) -> None:
    if name in WITH_MEMO and data.draw(st.booleans()):
        body: Any = data.draw(json_body(WITH_MEMO[name], canonical=False))
        if data.draw(st.booleans()):
            body[data.draw(st.sampled_from(sorted(body)))] = data.draw(TRICKY_JSON | ANY_JSON)
    else:
        body = data.draw(ANY_JSON)
    code = None
    try:
        parsed = parse_body(name, body, WITH_MEMO)
    except RpcError as error:
        code = error.code
    if code is None:
        assert WITH_MEMO[name].conforms(parsed)
    else:
        assert code == INVALID_PARAMS
