"""Shared pieces of the CLI: the consoles and the decorator that turns user errors into one line."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from channel.api.client import ApiError
from channel.errors import UserError

console = Console()
errors = Console(stderr=True, soft_wrap=True)  # an error is one line, however long

P = ParamSpec("P")
R = TypeVar("R")


def user_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn a `UserError`, or an error the node answered (`ApiError`: a rejected request, bad
    params), into one red line on stderr and exit code 1, instead of a traceback, also when it
    comes out of a trio nursery inside an exception group."""

    @wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (UserError, ApiError) as exc:
            errors.print(f"[red]error:[/red] {escape(str(exc))}")  # the message is text, not markup
            raise typer.Exit(1) from exc
        except BaseExceptionGroup as group:
            found, rest = group.split((UserError, ApiError))
            if found is None or rest is not None:
                raise
            first = _first_leaf(found)
            errors.print(f"[red]error:[/red] {escape(str(first))}")
            raise typer.Exit(1) from first

    return wrapper


def _first_leaf(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


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
