"""Certificates on disk: the store writes each one as ``certificates/v<N>.cbor``, `parley
checkpoints` and `parley certificate` read them with no node running, and `parley exit` takes
the data directory or the folder; bad folders and files get one line, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from channel.cli.main import app
from channel.errors import StorageUnavailable
from channel.runtime.genesis_file import save_genesis
from channel.runtime.store import Store
from crdt import testing
from crdt.certificate import Certificate
from crdt.ops import sign_op
from crdt.replica import Cut, Replica
from crdt.testing import from_replica
from tests.crdt.test_certificate import KEYS, make_genesis

GENESIS = make_genesis()


def certificates(count: int) -> list[Certificate]:
    """Checkpoints 1..count of a replica that makes one transfer between each."""
    replica = Replica(GENESIS)
    ctx = GENESIS.context()
    found, parents = [], []
    for version in range(1, count + 1):
        op = sign_op(ctx, KEYS[0], version, parents, "transfer",
                     {"to": GENESIS.participants[1].address, "token": "USDC", "amount": 10**6})
        replica.receive(op)
        parents = [op.op_id]
        replica.certify(Cut(version, (op.op_id,), 1000 * version))
        found.append(from_replica(replica, version, 0, 1000 * version, KEYS[:3]))
    return found


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    store = Store(tmp_path / "node" / "node.sqlite")
    try:
        for certificate in certificates(3):
            store.put_certificate(certificate.version, certificate.encode())
    finally:
        store.close()
    return tmp_path / "node"


@pytest.fixture
def genesis_file(tmp_path: Path) -> Path:
    save_genesis(GENESIS, tmp_path / "genesis.toml")
    return tmp_path / "genesis.toml"


def test_the_store_writes_each_certificate_as_a_file_and_restores_missing_ones(data_dir: Path) -> None:
    made = certificates(3)
    for certificate in made:
        assert (data_dir / "certificates" / f"v{certificate.version}.cbor").read_bytes() == certificate.encode()
    (data_dir / "certificates" / "v2.cbor").unlink()
    store = Store(data_dir / "node.sqlite")
    try:
        assert store.export_certificates() == 1
        assert store.export_certificates() == 0
    finally:
        store.close()
    assert (data_dir / "certificates" / "v2.cbor").read_bytes() == made[1].encode()
    assert not list((data_dir / "certificates").glob("*.tmp"))


def test_a_certificate_file_that_cannot_be_written_is_storage_unavailable(tmp_path: Path) -> None:
    store = Store(tmp_path / "node.sqlite")
    try:
        (tmp_path / "certificates").write_bytes(b"a file where the folder goes")
        with pytest.raises(StorageUnavailable, match="certificate file"):
            store.put_certificate(1, certificates(1)[0].encode())
    finally:
        store.close()


def test_checkpoints_and_certificate_read_the_files_with_no_node(
    data_dir: Path, genesis_file: Path, tmp_path: Path
) -> None:
    code, output = invoke("checkpoints", "--node", str(data_dir), "--genesis", str(genesis_file), "--json")
    assert code == 0, output
    rows = json.loads(output)
    made = certificates(3)
    assert [row["version"] for row in rows] == [1, 2, 3]
    assert [row["payout_root"] for row in rows] == ["0x" + c.checkpoint.payout_root.hex() for c in made]
    assert all(row["verified"] is True and row["signatures"] == 3 for row in rows)

    code, output = invoke("certificate", "--node", str(data_dir), "--json")  # the newest, unchecked
    assert code == 0, output
    newest = json.loads(output)
    assert (newest["version"], newest["verified"]) == (3, None)
    assert [(p["account"], p["token"], p["kind"], p["amount"]) for p in newest["payouts"]] == [
        ("0x" + leaf.account.hex(), "0x" + leaf.token.hex(), leaf.kind, str(leaf.amount)) for leaf in made[2].leaves
    ]  # no genesis: tokens by address

    out = tmp_path / "v2.cbor"
    code, output = invoke("certificate", "--node", str(data_dir), "--version", "2", "--out", str(out),
                          "--genesis", str(genesis_file))
    assert code == 0, output
    assert Certificate.decode(out.read_bytes()) == made[1]
    assert "USDC" in output
    assert "payout leaves" in output


def test_bad_folders_and_files_get_one_line(data_dir: Path, genesis_file: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, output = invoke("checkpoints", "--node", str(empty))
    assert (code, output.count("\n")) == (1, 1)
    assert "no certificate files in" in output
    code, output = invoke("certificate", "--node", str(data_dir), "--version", "9")
    assert code == 1
    assert "no certificate of version 9" in output
    assert "1..3" in output
    (data_dir / "certificates" / "v4.cbor").write_bytes(b"\xff garbage")
    code, output = invoke("checkpoints", "--node", str(data_dir))
    assert code == 1
    assert "cannot read the certificate" in output
    assert "v4.cbor" in output
    (data_dir / "certificates" / "v4.cbor").write_bytes(certificates(1)[0].encode())  # v1's, misnamed
    code, output = invoke("checkpoints", "--node", str(data_dir))
    assert code == 1
    assert "holds the certificate of version 1" in output
    (data_dir / "certificates" / "v4.cbor").unlink()
    other = tmp_path / "other.toml"
    save_genesis(testing.make_genesis(KEYS, GENESIS.tokens, adjudicator=b"\x02" * 20), other)  # another channel
    code, output = invoke("checkpoints", "--node", str(data_dir), "--genesis", str(other))
    assert code == 1
    assert "fails its checks" in output
    code, output = invoke("exit", "--genesis", str(genesis_file), "--certificate", str(empty))
    assert code != 0
    assert "no certificate files in" in output
    assert "Traceback" not in output
