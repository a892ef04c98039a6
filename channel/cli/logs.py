"""The node's logs: text lines, or with ``--log-json`` one JSON object a line, for a log shipper.

Every record goes through the root logger, libp2p's own included: py-libp2p's import sets its
loggers apart (no propagation, so their warnings reached stderr bare, through Python's
last-resort handler, and with ``LIBP2P_DEBUG`` its own handlers and a log file); `configure`
imports it first and then routes them to the root (at warning and above, or at the levels
``LIBP2P_DEBUG`` names), so every line has one format and one timestamp. A JSON line holds ``ts`` (UTC, ISO 8601 with
milliseconds), ``level``, ``logger``, ``message``, and ``exc`` when the record carries a
traceback; anything passed with ``extra=`` that JSON can hold is kept as well.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in line:
                try:
                    json.dumps(value)
                except (TypeError, ValueError):
                    value = repr(value)
                line[key] = value
        return json.dumps(line)


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler on whatever `sys.stderr` is when a record is written (not when it was made), so
    a configuration made under a redirected stderr (a test runner's) never writes to a closed one."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ sets it; the property decides
        pass


def configure(level: str, as_json: bool) -> None:
    """Send every logger's records to stderr in one format (text or JSON lines) at `level`."""
    import libp2p  # noqa: F401  (its import configures its loggers: this undoes that, after it)

    handler = StderrHandler()
    handler.setFormatter(JsonFormatter() if as_json else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, StderrHandler)] + [handler]  # others stay
    root.setLevel(level.upper())
    if not os.environ.get("LIBP2P_DEBUG"):  # libp2p is chatty below warnings; LIBP2P_DEBUG sets its own levels
        logging.getLogger("libp2p").setLevel(max(logging.WARNING, root.level))
    for name in list(logging.root.manager.loggerDict):
        if name == "libp2p" or name.startswith("libp2p."):
            logger = logging.getLogger(name)
            logger.handlers.clear()  # py-libp2p's own handlers: one format and one timestamp for all
            logger.propagate = True


@contextmanager
def configured(level: str, as_json: bool) -> Iterator[None]:
    """`configure` for as long as the context runs (a node's run), then the logging as it was:
    a command run in-process (a test's CliRunner) leaves no handler or level behind."""
    root = logging.getLogger()
    saved = {name: (logger.handlers[:], logger.propagate, logger.level)
             for name, logger in [("", root), *((n, logging.getLogger(n)) for n in list(logging.root.manager.loggerDict)
                                               if n == "libp2p" or n.startswith("libp2p."))]}
    configure(level, as_json)
    try:
        yield
    finally:
        for name, (handlers, propagate, logger_level) in saved.items():
            logger = logging.getLogger(name) if name else root
            logger.handlers[:], logger.propagate = handlers, propagate
            logger.setLevel(logger_level)
