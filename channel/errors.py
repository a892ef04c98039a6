"""Errors of the node shell. `UserError` is what the CLI prints as a clean message."""

from __future__ import annotations


class ChannelError(Exception):
    """Root of the errors raised by `channel`."""


class UserError(ChannelError):
    """A problem the user can fix (a missing file, a wrong password, bad arguments)."""


class KeystoreError(UserError):
    pass
