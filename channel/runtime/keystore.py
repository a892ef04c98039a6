"""Participant keys in Ethereum v3 keystore files (eth-account does the cryptography).

A keystore file is named after its address (``0x<address>.json``) and holds the key encrypted
with scrypt. The standard scrypt cost (n = 2**18) takes about a second per key here; the light
cost (n = 2**14) is for throwaway channels such as the demo and the tests, and the CLI says so.
Files are written with mode 0600 and atomically (write to a temporary name, fsync, rename), so
a crash never leaves half a key behind.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from channel.errors import KeystoreError
from crdt.hashing import keccak256
from crdt.ops import address_of
from crdt.types import Address

STANDARD_SCRYPT_N = 2**18
LIGHT_SCRYPT_N = 2**14


@dataclass(frozen=True, slots=True)
class Key:
    address: Address
    private_key: bytes

    def __repr__(self) -> str:  # never print the secret
        return f"Key(0x{self.address.hex()})"


def new_key() -> Key:
    from eth_account import Account

    account = Account.create()
    private_key = bytes(account.key)
    return Key(address_of(private_key), private_key)


SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def seeded_keys(seed: int, count: int) -> list[Key]:
    """`count` keys derived from `seed` alone (keccak256 of the seed and the index, hashed again
    in the 2^-128 case it is no valid key): a demo run again with its seed has the same
    participants, and so the same channel. Throwaway keys only: anyone who knows the seed has them."""
    keys = []
    for index in range(count):
        material = keccak256(b"parley-seeded-key:%d:%d" % (seed, index))
        while not 0 < int.from_bytes(material, "big") < SECP256K1_ORDER:
            material = keccak256(material)
        keys.append(Key(address_of(material), material))
    return keys


def encrypt(key: Key, password: str, *, light: bool = False) -> dict[str, Any]:
    from eth_account import Account

    n = LIGHT_SCRYPT_N if light else STANDARD_SCRYPT_N
    return dict(Account.encrypt(key.private_key, password, kdf="scrypt", iterations=n))


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def save(key: Key, folder: Path, password: str, *, light: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"0x{key.address.hex()}.json"
    write_atomic(path, json.dumps(encrypt(key, password, light=light), indent=2).encode())
    return path


def load(path: Path, password: str) -> Key:
    from eth_account import Account

    try:
        document = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise KeystoreError(f"no keystore at {path}") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise KeystoreError(f"{path} is not a keystore file: {exc}") from exc
    try:
        private_key = bytes(Account.decrypt(document, password))
    except ValueError as exc:
        raise KeystoreError(f"cannot decrypt {path}: wrong password or damaged file ({exc})") from exc
    except (KeyError, TypeError) as exc:
        raise KeystoreError(f"{path} is not a v3 keystore: {exc!r}") from exc
    return Key(address_of(private_key), private_key)


def find(folder: Path, address: bytes) -> Path:
    path = folder / f"0x{address.hex()}.json"
    if not path.exists():
        raise KeystoreError(f"no keystore for 0x{address.hex()} in {folder}")
    return path


def address_in(path: Path) -> Address:
    """The address a keystore file holds the key of, read without its password (the v3 format
    keeps it in the clear); `KeystoreError` if the file is not a keystore."""
    try:
        text = json.loads(path.read_text())["address"]
        address = bytes.fromhex(text.removeprefix("0x"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise KeystoreError(f"{path} is not an Ethereum v3 keystore with an address: {exc}") from exc
    if len(address) != 20:
        raise KeystoreError(f"{path} holds a {len(address)}-byte address")
    return Address(address)


def keystore_files(paths: list[Path]) -> list[Path]:
    """Keystore files, each path a file or a folder of ``0x*.json``."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            files = sorted(path.glob("0x*.json"))
            if not files:
                raise KeystoreError(f"no keystore files in {path}")
            found += files
        else:
            found.append(path)
    return found


def load_all(folder: Path, password: str) -> list[Key]:
    paths = sorted(folder.glob("0x*.json"))
    if not paths:
        raise KeystoreError(f"no keystore files in {folder}")
    return [load(path, password) for path in paths]
