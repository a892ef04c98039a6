"""The node's libp2p identity key, encrypted at rest with the node's password.

Once a peer id speaks for a participant (`p2p.admission`), its key is a credential: whoever
holds it and the participant's signed binding can act as that participant's node on the
network. So it is kept like the participant key: ``<data_dir>/p2p-identity.json`` holds the
libp2p-serialised Ed25519 private key sealed with ChaCha20-Poly1305 under a key derived from
the password with scrypt (n = 2**15, r = 8, p = 1: about 0.1 s and 32 MiB here), with a random
salt and nonce, and the peer id in clear (it is public: the genesis lists it). The associated
data is the peer id, so a file whose peer id was edited does not decrypt.

Migration: a data directory from before this format holds the key unencrypted in
``p2p-identity.key`` (libp2p's `save_identity`). `load_or_create` reads it once, writes the
encrypted file (atomically, fsync'd), and only then deletes the old file, so the peer id —
which other participants' genesis files list — stays the same.

Every failure is a `channel`-independent `IdentityError` with a message a user can act on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.serialization import deserialize_private_key
from libp2p.identity_utils import load_identity
from libp2p.peer.id import ID

from p2p.errors import P2PError

IDENTITY_FILE = "p2p-identity.json"
LEGACY_IDENTITY_FILE = "p2p-identity.key"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
FORMAT_VERSION = 1


class IdentityError(P2PError):
    """The identity file is missing, damaged, or the password is wrong."""


def peer_id_of(key_pair: KeyPair) -> str:
    return str(ID.from_pubkey(key_pair.public_key).to_base58())


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(password.encode())


def seal(key_pair: KeyPair, password: str) -> bytes:
    """The JSON document of the encrypted file."""
    salt, nonce = os.urandom(16), os.urandom(12)
    peer_id = peer_id_of(key_pair)
    ciphertext = ChaCha20Poly1305(_derive(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)).encrypt(
        nonce, key_pair.private_key.serialize(), peer_id.encode()
    )
    document = {
        "version": FORMAT_VERSION,
        "peer_id": peer_id,
        "kdf": {"name": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P, "salt": salt.hex()},
        "cipher": {"name": "chacha20-poly1305", "nonce": nonce.hex()},
        "ciphertext": ciphertext.hex(),
    }
    return json.dumps(document, indent=2).encode()


def unseal(data: bytes, password: str, where: Path) -> KeyPair:
    try:
        document = json.loads(data)
        kdf, cipher = document["kdf"], document["cipher"]
        if document["version"] != FORMAT_VERSION or kdf["name"] != "scrypt" or cipher["name"] != "chacha20-poly1305":
            raise IdentityError(f"{where}: unsupported identity format")
        n, r, p = int(kdf["n"]), int(kdf["r"]), int(kdf["p"])
        if not (2**10 <= n <= 2**20 and 1 <= r <= 16 and 1 <= p <= 4):  # a damaged file must not DoS us
            raise IdentityError(f"{where}: scrypt parameters out of range")
        key = _derive(password, bytes.fromhex(kdf["salt"]), n, r, p)
        plain = ChaCha20Poly1305(key).decrypt(
            bytes.fromhex(cipher["nonce"]), bytes.fromhex(document["ciphertext"]), str(document["peer_id"]).encode()
        )
        private_key = deserialize_private_key(plain)
    except InvalidTag as exc:
        raise IdentityError(f"cannot decrypt {where}: wrong password, or the file was changed") from exc
    except IdentityError:
        raise
    except Exception as exc:  # JSON, hex, key types, protobuf: all "damaged"
        raise IdentityError(f"{where} is damaged: {type(exc).__name__}: {exc}") from exc
    key_pair = KeyPair(private_key, private_key.get_public_key())
    if peer_id_of(key_pair) != document["peer_id"]:
        raise IdentityError(f"{where} is damaged: its key does not match its peer id")
    return key_pair


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def load_or_create(data_dir: Path, password: str) -> KeyPair:
    """The identity of `data_dir`: decrypted, migrated from the unencrypted file, or created."""
    data_dir = Path(data_dir)
    path, legacy = data_dir / IDENTITY_FILE, data_dir / LEGACY_IDENTITY_FILE
    if path.exists():
        key_pair = unseal(path.read_bytes(), password, path)
        legacy.unlink(missing_ok=True)  # a migration interrupted after the new file was written
        return key_pair
    data_dir.mkdir(parents=True, exist_ok=True)
    if legacy.exists():
        try:
            key_pair = load_identity(legacy)
        except ValueError as exc:
            raise IdentityError(str(exc)) from exc
    else:
        key_pair = create_new_key_pair()
    _write_atomic(path, seal(key_pair, password))
    legacy.unlink(missing_ok=True)
    return key_pair


def stored_peer_id(data_dir: Path) -> str | None:
    """The peer id recorded in `data_dir`'s identity file, read without the password."""
    path = Path(data_dir) / IDENTITY_FILE
    try:
        return str(json.loads(path.read_bytes())["peer_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
