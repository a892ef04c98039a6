"""The libp2p identity key on disk: encrypted with the node's password, migrated from the old
unencrypted file with the same peer id, and refused with a clear error when damaged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.identity_utils import save_identity

from p2p.identity import (
    IDENTITY_FILE,
    LEGACY_IDENTITY_FILE,
    IdentityError,
    load_or_create,
    peer_id_of,
    stored_peer_id,
)


def test_the_identity_persists_encrypted(tmp_path: Path) -> None:
    first = load_or_create(tmp_path, "secret")
    again = load_or_create(tmp_path, "secret")
    assert peer_id_of(first) == peer_id_of(again)
    path = tmp_path / IDENTITY_FILE
    assert path.stat().st_mode & 0o077 == 0
    assert first.private_key.serialize() not in path.read_bytes()
    assert first.private_key.serialize().hex() not in path.read_text()
    assert stored_peer_id(tmp_path) == peer_id_of(first)


def test_a_wrong_password_is_refused(tmp_path: Path) -> None:
    load_or_create(tmp_path, "secret")
    with pytest.raises(IdentityError, match="wrong password"):
        load_or_create(tmp_path, "not the secret")


def test_an_unencrypted_identity_is_migrated_with_its_peer_id(tmp_path: Path) -> None:
    old = create_new_key_pair()
    save_identity(old, tmp_path / LEGACY_IDENTITY_FILE)
    migrated = load_or_create(tmp_path, "secret")
    assert peer_id_of(migrated) == peer_id_of(old)
    assert not (tmp_path / LEGACY_IDENTITY_FILE).exists()
    assert peer_id_of(load_or_create(tmp_path, "secret")) == peer_id_of(old)


@pytest.mark.parametrize(
    "damage",
    [
        lambda doc: {**doc, "ciphertext": "00" + doc["ciphertext"][2:]},
        lambda doc: {**doc, "peer_id": "12D3KooWSomeoneElse"},
        lambda doc: {**doc, "kdf": {**doc["kdf"], "n": 2**40}},
        lambda doc: {"version": 1},
    ],
    ids=["ciphertext", "peer-id", "scrypt-cost", "truncated"],
)
def test_a_damaged_identity_file_is_a_clear_error(tmp_path: Path, damage: object) -> None:
    load_or_create(tmp_path, "secret")
    path = tmp_path / IDENTITY_FILE
    path.write_text(json.dumps(damage(json.loads(path.read_text()))))  # type: ignore[operator]
    with pytest.raises(IdentityError):
        load_or_create(tmp_path, "secret")


def test_garbage_in_the_identity_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / IDENTITY_FILE).write_bytes(b"\xff\x00 not json")
    with pytest.raises(IdentityError, match="damaged"):
        load_or_create(tmp_path, "secret")
