"""Shared pieces of the CLI: the consoles and the decorator that turns user errors into one line."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console

from channel.errors import UserError

console = Console()
errors = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")


def user_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn a `UserError` into one red line on stderr and exit code 1, instead of a traceback."""

    @wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except UserError as exc:
            errors.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from exc

    return wrapper
