"""Reading and writing the channel genesis as TOML (the validation is `crdt.genesis`)."""

from __future__ import annotations

import re
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


MAX_TOML_NESTING = 32  # tables and arrays; a genesis needs 3

# A dotted key of n parts costs tomllib O(n**2) time and memory (50,000 parts took 53 s; 100,000
# were killed for memory), so keys with more parts than the nesting limit are refused before it
# runs. The pattern is conservative: a string value with as many dots is refused too.
_LONG_DOTTED_KEY = re.compile(
    rf"""(?:\.[ \t]*(?:[A-Za-z0-9_-]+|"(?:[^"\\\n]|\\.)*"|'[^'\n]*')[ \t]*){{{MAX_TOML_NESTING}}}"""
)


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """A TOML file as a mapping, or a `UserError` naming `what` the file should have been.

    Tables and arrays nest at most `MAX_TOML_NESTING` deep. tomllib recurses in Python for each
    level of arrays and inline tables: under the recursion limit the eth stack sets (100,000)
    about 50,000 levels parse, and a value that deep would crash whatever recursed through it
    in C later (repr, ==, json), so the depth is checked on the parsed value as well.
    """
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise UserError(f"no {what} at {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {what} {path}: {exc}") from exc
    too_deep = UserError(f"cannot read {what} {path}: tables and arrays nest deeper than {MAX_TOML_NESTING}")
    if _LONG_DOTTED_KEY.search(text):
        raise too_deep
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"cannot read {what} {path}: {exc}") from exc
    except RecursionError:
        raise too_deep from None  # not chained: its traceback holds one frame per level
    if _nesting(data) > MAX_TOML_NESTING:
        raise too_deep
    return data


def _nesting(value: Any) -> int:
    """How deep dicts and lists nest in `value`, without recursing."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in children)
    return deepest


def load_genesis(path: Path) -> Genesis:
    data = read_toml(path, "genesis file")
    try:
        return Genesis.from_mapping(data)
    except InvalidGenesis as exc:
        raise UserError(f"invalid genesis {path}: {exc}") from exc


def save_genesis(genesis: Genesis, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (HEADER + tomli_w.dumps(genesis.to_mapping())).encode(), mode=0o644)
