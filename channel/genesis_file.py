"""Reading and writing the channel genesis as TOML (the validation is `crdt.genesis`)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from channel.errors import UserError
from channel.keystore import write_atomic
from crdt.errors import InvalidGenesis
from crdt.genesis import Genesis

HEADER = """\
# Parley channel genesis. Amounts are integers in e9 base units (1 token = 1_000_000_000).
# The channel id is derived from the other fields; editing them without recomputing it makes
# the file invalid (`parley genesis new` writes a consistent one).
"""


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """A TOML file as a mapping, or a `UserError` naming `what` the file should have been."""
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise UserError(f"no {what} at {path}") from exc
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {what} {path}: {exc}") from exc


def load_genesis(path: Path) -> Genesis:
    data = read_toml(path, "genesis file")
    try:
        return Genesis.from_mapping(data)
    except InvalidGenesis as exc:
        raise UserError(f"invalid genesis {path}: {exc}") from exc


def save_genesis(genesis: Genesis, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (HEADER + tomli_w.dumps(genesis.to_mapping())).encode(), mode=0o644)
