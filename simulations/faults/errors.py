"""The fault harness's one root exception: everything it raises on purpose is a `FaultsError`,
which the CLI prints as one line (it is a `UserError`)."""

from __future__ import annotations

from channel.errors import UserError


class FaultsError(UserError):
    """Root of the fault harness's errors (bad arguments, a namespace that cannot be made, a node
    that does not start)."""
