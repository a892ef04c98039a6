"""The `parley` commands of the foundation: keys, genesis, workload, replay, demo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from channel.cli.main import app, replay_file
from channel.errors import KeystoreError, UserError
from channel.runtime import keystore
from channel.runtime.genesis_file import create_genesis_folder, load_genesis
from crdt.genesis import Token
from crdt.hashing import keccak256
from crdt.ops import encode_ops, sign_op, split_ops
from simulations.workload import Workload

runner = CliRunner()
PASSWORD = "correct horse"


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    path.write_text(PASSWORD + "\n")
    return path


@pytest.fixture(scope="module")
def channel_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("channel")
    usdc = Token("USDC", b"\x22" * 20, 6)  # type: ignore[arg-type]
    create_genesis_folder(folder, 4, password=PASSWORD, tokens=[usdc], initial=100 * 10**9, light_kdf=True)
    return folder


@pytest.fixture(scope="module")
def ops_bytes(channel_folder: Path) -> bytes:
    genesis = load_genesis(channel_folder / "genesis.toml")
    keys = keystore.load_all(channel_folder / "keys", PASSWORD)
    by_address = {key.address: key.private_key for key in keys}
    ordered = [by_address[p.address] for p in genesis.participants]
    return encode_ops(Workload(genesis, ordered, seed=7).ops(300))


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_keys_new_and_show_round_trip(tmp_path: Path, password_file: Path) -> None:
    code, output = invoke("keys", "new", "--out", str(tmp_path / "k"), "--password-file", str(password_file),
                          "--light-kdf")
    assert code == 0, output
    [path] = list((tmp_path / "k").glob("0x*.json"))
    assert path.stat().st_mode & 0o777 == 0o600
    document = json.loads(path.read_text())
    assert document["crypto"]["kdf"] == "scrypt"
    code, output = invoke("keys", "show", str(path), "--password-file", str(password_file))
    assert code == 0
    assert output.strip() == path.stem.lower()


def test_wrong_password_is_a_clear_error(tmp_path: Path, password_file: Path) -> None:
    key = keystore.new_key()
    path = keystore.save(key, tmp_path, PASSWORD, light=True)
    with pytest.raises(KeystoreError, match="wrong password"):
        keystore.load(path, "not it")
    wrong = tmp_path / "wrong"
    wrong.write_text("nope")
    code, output = invoke("keys", "show", str(path), "--password-file", str(wrong))
    assert code == 1
    assert "wrong password" in output


def test_garbage_keystore_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "0xabc.json"
    path.write_text("{not json")
    with pytest.raises(KeystoreError, match="not a keystore"):
        keystore.load(path, PASSWORD)
    path.write_text("{}")
    with pytest.raises(KeystoreError):
        keystore.load(path, PASSWORD)


def test_genesis_new_writes_a_consistent_channel(tmp_path: Path, password_file: Path) -> None:
    out = tmp_path / "ch"
    code, output = invoke("genesis", "new", "--out", str(out), "-n", "5", "--token", "USDC:6", "--token", "WETH:18",
                          "--initial", "250.5", "--password-file", str(password_file), "--light-kdf")
    assert code == 0, output
    genesis = load_genesis(out / "genesis.toml")
    assert len(genesis.participants) == 5
    assert genesis.threshold == 4  # n - f with f = 1
    assert [t.symbol for t in genesis.tokens] == ["USDC", "WETH"]
    assert {b.amount for b in genesis.initial_balances} == {250_500_000_000}
    keys = keystore.load_all(out / "keys", PASSWORD)
    assert sorted(k.address for k in keys) == sorted(genesis.addresses)
    code, output = invoke("genesis", "new", "--out", str(out), "--password-file", str(password_file))
    assert code == 1
    assert "exists" in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--token", "USDC"], "SYMBOL:DECIMALS"),
        (["--initial", "1.0000000001"], "more than 9 decimal places"),
        (["--threshold", "2", "-n", "4"], "not a BFT quorum"),
        (["--adjudicator", "0x1234"], "expected 20 bytes"),
    ],
)
def test_genesis_new_rejects_bad_arguments(tmp_path: Path, password_file: Path, args: list[str], message: str) -> None:
    code, output = invoke("genesis", "new", "--out", str(tmp_path / "x"), "--password-file", str(password_file),
                          "--light-kdf", *args)
    assert code == 1
    assert message in " ".join(output.split())


def test_tampered_genesis_is_refused(channel_folder: Path, tmp_path: Path) -> None:
    text = (channel_folder / "genesis.toml").read_text().replace("threshold = 3", "threshold = 4")
    (tmp_path / "genesis.toml").write_text(text)
    with pytest.raises(UserError, match="does not match the parameters"):
        load_genesis(tmp_path / "genesis.toml")


def test_workload_then_replay(channel_folder: Path, tmp_path: Path, password_file: Path) -> None:
    ops_file = tmp_path / "ops.cbor"
    code, output = invoke("workload", str(channel_folder), "--out", str(ops_file), "--count", "200", "--seed", "3",
                          "--password-file", str(password_file))
    assert code == 0, output
    code, output = invoke("replay", str(ops_file), "--genesis", str(channel_folder / "genesis.toml"), "--json")
    assert code == 0, output
    report = json.loads(output)
    assert report["operations"] == 200
    assert report["pending"] == 0
    assert report["refused"] == []
    code, table = invoke("replay", str(ops_file), "--genesis", str(channel_folder / "genesis.toml"))
    assert code == 0
    assert report["payout_root"] in table


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_replay_is_independent_of_file_order(channel_folder: Path, ops_bytes: bytes, data: st.DataObject) -> None:
    genesis = load_genesis(channel_folder / "genesis.toml")
    items = split_ops(ops_bytes, genesis.context())
    shuffled = data.draw(st.permutations(items))
    duplicated = shuffled + data.draw(st.lists(st.sampled_from(items), max_size=20))
    expected, _ = replay_file(ops_bytes, genesis)
    replica, refused = replay_file(b"".join(duplicated), genesis)
    assert refused == []
    assert replica.state_hash() == expected.state_hash()
    assert replica.payout_root() == expected.payout_root()
    assert [(op.op_id, r) for op, r in replica.rejected()] == [(op.op_id, r) for op, r in expected.rejected()]


def test_replay_reports_garbage_and_equivocation(channel_folder: Path, ops_bytes: bytes, tmp_path: Path) -> None:
    genesis = load_genesis(channel_folder / "genesis.toml")
    keys = {k.address: k.private_key for k in keystore.load_all(channel_folder / "keys", PASSWORD)}
    author = genesis.participants[0].address
    recipient = genesis.participants[1].address
    ctx = genesis.context()
    first = sign_op(ctx, keys[author], 1, [], "transfer", {"to": recipient, "token": "USDC", "amount": 1})
    twin = sign_op(ctx, keys[author], 1, [], "transfer", {"to": recipient, "token": "USDC", "amount": 2})
    wrong_channel = sign_op(
        type(ctx)(ctx.domain, keccak256(b"other"), ctx.participants), keys[author], 1, [], "transfer",
        {"to": recipient, "token": "USDC", "amount": 1},
    )
    path = tmp_path / "mixed.cbor"
    path.write_bytes(first.raw + twin.raw + wrong_channel.raw + b"\x44abcd")
    code, output = invoke("replay", str(path), "--genesis", str(channel_folder / "genesis.toml"), "--json")
    assert code == 0, output
    report = json.loads(output)
    assert [entry["error"] for entry in report["refused"]] == ["wrong_channel", "wrong_type"]
    [evidence] = report["equivocations"]
    assert evidence["author"] == "0x" + author.hex()
    assert evidence["seq"] == 1
    assert [entry["reason"] for entry in report["rejected"]] == ["equivocation"]


def test_replay_of_a_truncated_file_is_a_clean_error(channel_folder: Path, ops_bytes: bytes, tmp_path: Path) -> None:
    path = tmp_path / "cut.cbor"
    path.write_bytes(ops_bytes[:-5])
    code, output = invoke("replay", str(path), "--genesis", str(channel_folder / "genesis.toml"))
    assert code == 1
    assert "not a CBOR sequence" in output


def test_offline_demo_converges_with_the_same_fills_in_every_delivery_order() -> None:
    code, output = invoke("demo", "--offline", "--transfers", "400", "--json")
    assert code == 0, output
    result = json.loads(output)
    assert result["converged"] is True
    assert len({replica["state_hash"] for replica in result["replicas"]}) == 1
    assert result["state_hash"] == result["replicas"][0]["state_hash"]
    assert result["fills"] > 0  # the workload trades ETH/USDC
    assert {(replica["fills"], replica["fills_hash"]) for replica in result["replicas"]} == {
        (result["fills"], result["fills_hash"])
    }
    assert all(replica["self_fills"] == 0 for replica in result["replicas"])


@pytest.mark.slow
def test_the_network_demo_trades_and_every_node_has_the_same_fills() -> None:
    code, output = invoke("demo", "--no-chain", "--transfers", "40", "--json")
    assert code == 0, output
    result = json.loads(output[output.index("{"):])
    assert result["converged"] is True
    assert result["orders"] > 100  # two ladders re-quoted, and the takers' orders
    assert result["fills"] > 0
    assert result["fills_agree"] is True
    assert result["exit_codes"] == [0, 0, 0, 0]


def assert_perp_phase(perp: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The perp phase both demos run (`simulations.demos.perp_phase`): an order and a liquidation
    refused while halted, longs paying funding, the liquidation's premium split to the base unit
    between the pool and the liquidator, who holds the long. Returns the liquidation and its size."""
    assert perp["halted"] is True
    assert perp["refused_while_halted"] == ["market_halted", "market_halted"]  # an order, a liquidation
    assert int(perp["funding"]["rate"]) > 0  # bids above the oracle: longs pay
    record = perp["liquidation"]
    qty, mark, price, taken = (int(record[k]) for k in ("qty", "mark_price", "price", "taken_at"))
    assert qty == 2_500_000_000
    assert perp["premium"] == mark * qty // 10**9 - price * qty // 10**9 > 0
    assert perp["insurance"] == taken * qty // 10**9 - price * qty // 10**9  # the pool's share, in cash
    liquidator_share = mark * qty // 10**9 - taken * qty // 10**9
    assert perp["insurance"] + liquidator_share == perp["premium"]  # split to the base unit
    assert record["deleveraged"] == []
    sides = {(p["account"], p["side"], p["size"]) for p in perp["positions"]}
    assert (record["liquidator"], "long", str(qty)) in sides
    return record, qty


@pytest.mark.slow
def test_the_full_demo_settles_and_pays_the_exit(tmp_path: Path) -> None:
    """`parley demo`: deposits, a Byzantine node, transfers and spot trading, checkpoints settled
    on-chain while the channel stays open (a withdrawal claimed mid-run), a perpetual market run
    by the reference bots (a halt, a liquidation), finality with a node stopped, and an emergency
    exit by a participant holding a position, after which every participant is paid exactly what
    its balances after trading and its positions at the oracle price owe (open orders' holds
    included), as the certificate says."""
    code, output = invoke("demo", "--transfers", "120", "--folder", str(tmp_path / "demo"), "--json")
    assert code == 0, output
    result = json.loads(output[output.index("{"):])
    assert result["states_agree"] is True  # all 5 nodes had every operation and one state hash
    assert result["settlement_ok"] is True
    assert result["perp_ok"] is True
    assert result["converged"] is True
    assert result["paid"] == result["expected"] == result["exit_leaf"] > 0  # the exit paid its leaf
    assert result["withdrawn"] == 100 * 10**6  # claimed on-chain from a periodic checkpoint
    # every transfer and order the Byzantine node sent through its API had a twin
    assert result["equivocations"] == 30 + result["byzantine_orders"]
    assert result["checkpoints"] >= 3
    # trading: the same fills on every node (count and hash), the forged orders judged by all
    assert result["fills"] > 0
    assert result["fills_agree"] is True
    assert result["unfunded"] == result["byzantine_orders"] > 0  # one after each of its orders
    assert result["unfunded_rejected"] == 5 * result["unfunded"]  # insufficient_balance on every node
    assert result["self_trades"] > 0
    assert result["self_trade_removed"] > 0
    assert result["self_fills"] == 0
    # the perp market: the 5 nodes agree on positions, funding and roots; an order refused while
    # halted; the liquidation's premium split to the base unit
    perp = result["perp"]
    assert perp["agree"] is True
    record, qty = assert_perp_phase(perp)
    # the exit is run by the liquidator, holding the long it took
    assert [(p["account"], p["side"], p["size"]) for p in result["exit_positions"]] == [
        (record["liquidator"], "long", str(qty))]
    # the settlement: every participant, both tokens, paid its free + held + locked, and in USDC
    # its positions closed at the oracle price; the liquidated trader's USDC is what its orders hold
    assert result["settlement_ok"] is True
    assert len(result["payouts"]) == 10
    assert all(payout["paid"] == payout["owed"] for payout in result["payouts"])
    assert all(payout["paid"] > 0 for payout in result["payouts"]
               if (payout["account"], payout["token"]) != (record["account"], "USDC"))
    assert any(payout["held"] > 0 for payout in result["payouts"])  # the last ladders rest: paid back


def test_version() -> None:
    from importlib.metadata import version

    code, output = invoke("--version")
    assert (code, output) == (0, f"parley {version('parley')}\n")


@pytest.mark.slow
def test_the_perp_demo_halts_liquidates_with_an_exact_premium_split_and_pays_positions_at_exit(
    tmp_path: Path,
) -> None:
    code, output = invoke("demo", "--perps", "--folder", str(tmp_path / "perps"), "--json")
    assert code == 0, output
    result = json.loads(output[output.index("{"):])
    assert result["converged"] is True  # the 4 nodes agree on positions, funding, margins and roots
    record, _ = assert_perp_phase(result)
    assert all(p["account"] != record["account"] for p in result["positions"])  # the trader holds nothing
    # the exit: every wallet paid its certificate leaf, the account values apportioned (settled); the
    # liquidator's leaf holds the long it took, valued at the oracle price
    assert result["settled"] is True
    assert result["paid"][record["liquidator"]] > 10_000 * 10**6
    assert result["paid"][record["account"]] == 0
    assert sum(result["paid"].values()) <= 40_000 * 10**6
