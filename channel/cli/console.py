"""Shared pieces of the CLI: the consoles, and the one error style of every command.

An expected failure (a `UserError`, anything the client raises, a settlement error, a bad
parameter a command refuses itself) prints ``error: <what>`` on one line of stderr, then, when
there is a next step to suggest, ``hint: <what to do>`` on a second, and exits with code 1. It
never prints a traceback, also when the error comes out of a trio nursery inside an exception
group. Anything else is a bug, and is left to crash loudly."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from channel.api.client import ClientError, InsufficientBalance, NodeUnavailable, Unauthorized
from channel.errors import DataDirLocked, KeystoreError, UserError
from settlement.errors import InsufficientGas, NoContract, RpcUnavailable, SettlementError

console = Console()
errors = Console(stderr=True, soft_wrap=True)  # an error is one line, however long

P = ParamSpec("P")
R = TypeVar("R")


# An OSError reaching a command is the environment's (a full disk, a refused connection, a
# permission): the user's to fix, and its message names it.
EXPECTED = (UserError, ClientError, SettlementError, typer.BadParameter, OSError)
NOT_READY, STORAGE = -32002, -32003  # the API's codes for a node learning its seq, and a full disk


def command_group(**options: Any) -> typer.Typer:
    """A typer app or sub-app of the CLI: plain help (click's, not rich markup: no ``<bool>``
    type labels on flags, and rich's help renderer stays unimported), usage on a bare call."""
    return typer.Typer(rich_markup_mode=None, no_args_is_help=True, **options)


def hint_for(error: BaseException) -> str | None:
    """The next step to suggest for an expected error (None when the message says it all)."""
    if isinstance(error, UserError) and error.hint:
        return error.hint
    if isinstance(error, NodeUnavailable):
        return ("start the node with `parley node run --config NODE/node.toml`, or point --node (or $PARLEY_NODE) "
                "at its data directory")
    if isinstance(error, Unauthorized):
        return "the api-token file in --node is not the running node's: is --node the data directory it serves?"
    if isinstance(error, InsufficientBalance):
        return "see your balances with `parley balance --node NODE`"
    if isinstance(error, ClientError) and getattr(error, "code", None) == NOT_READY:
        return "the node is learning its last seq from its peers; retry once `parley stats` shows signing: ready"
    if isinstance(error, ClientError) and getattr(error, "code", None) == STORAGE:
        return "free space on the node's disk (or raise [store] max_mb); it resumes by itself"
    if isinstance(error, KeystoreError) and "decrypt" in str(error):
        return "check the password: --password-file, else $PARLEY_PASSWORD, else the prompt"
    if isinstance(error, DataDirLocked):
        return "stop the other process first: two nodes with one key would sign conflicting operations"
    if isinstance(error, InsufficientGas):
        account = error.account or "ADDRESS"
        return f"fund it with `parley chain fund {account}` (a dev chain), or send it ETH"
    if isinstance(error, RpcUnavailable) or type(error).__name__ == "ConnectionError":  # requests' own
        return "is the chain running? check --rpc (or $ETH_RPC_URL)"
    if isinstance(error, NoContract):
        return "deploy it with `parley chain deploy`, or check --rpc and the genesis's adjudicator"
    return None


def message_of(error: BaseException) -> str:
    if isinstance(error, typer.BadParameter):
        return error.format_message().removeprefix("Invalid value: ")
    return str(error)


def fail(error: BaseException) -> typer.Exit:
    """Print `error` in the CLI's one style (``error:`` line, optional ``hint:`` line) and
    return the exit to raise (code 1)."""
    errors.print(f"[red]error:[/red] {escape(message_of(error))}")  # the message is text, not markup
    hint = hint_for(error)
    if hint:
        errors.print(f"[dim]hint:[/dim] {escape(hint)}")
    return typer.Exit(1)


def user_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn an expected error (`EXPECTED`: a `UserError`, an error of the client or the node it
    talks to, of the chain, or a parameter the command refuses) into the CLI's error lines and
    exit code 1, instead of a traceback, also when it comes out of a trio nursery inside an
    exception group."""

    @wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except EXPECTED as exc:
            raise fail(exc) from exc
        except BaseExceptionGroup as group:
            found, rest = group.split(EXPECTED)
            if found is None or rest is not None:
                raise
            first = _first_leaf(found)
            raise fail(first) from first

    return wrapper


def _first_leaf(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


class Output:
    """What a command prints: lines for a person, or with ``--json`` one JSON object of the
    same facts on stdout at the end (`done`), for scripts. Amounts go in as decimal strings."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.fields: dict[str, Any] = {}

    def say(self, text: str, **fields: Any) -> None:
        """Print `text` (without --json) and record `fields`."""
        self.fields.update(fields)
        if not self.as_json:
            typer.echo(text)

    def add(self, key: str, value: Any, text: str | None = None) -> None:
        """Append `value` to the list `key` (and print `text`, without --json)."""
        self.fields.setdefault(key, []).append(value)
        if text is not None and not self.as_json:
            typer.echo(text)

    def done(self, **fields: Any) -> None:
        """The end of the command: with --json, print the object."""
        self.fields.update(fields)
        if self.as_json:
            print(json.dumps(self.fields))


def read_password(password_file: Path | None, *, confirm: bool) -> str:
    """From the file, else $PARLEY_PASSWORD, else a prompt on a terminal; `UserError` otherwise."""
    if password_file is not None:
        try:
            return password_file.read_text().rstrip("\n")
        except OSError as exc:
            raise UserError(f"cannot read password file: {exc}") from exc
    if "PARLEY_PASSWORD" in os.environ:
        return os.environ["PARLEY_PASSWORD"]
    if not sys.stdin.isatty():
        raise UserError("no password: pass --password-file, set PARLEY_PASSWORD, or run in a terminal")
    return str(typer.prompt("Keystore password", hide_input=True, confirmation_prompt=confirm))
