"""Errors of the node shell. `UserError` is what the CLI prints as a clean message."""

from __future__ import annotations


class ChannelError(Exception):
    """Root of the errors raised by `channel`."""


class UserError(ChannelError):
    """A problem the user can fix (a missing file, a wrong password, bad arguments). ``hint``,
    when given, is the next step the CLI prints under the error line."""

    def __init__(self, *args: object, hint: str | None = None) -> None:
        super().__init__(*args)
        self.hint = hint


class KeystoreError(UserError):
    pass


class StoreDamaged(UserError):
    """The store on disk is not what this node wrote (a failing disk, an edit, a truncation).
    The node refuses to start rather than run on it; the message says how to get out."""


class StorageUnavailable(ChannelError):
    """A write to the store failed at run time (the disk is full, or an I/O error). Nothing
    that depended on the write happened; the node keeps serving reads and retries."""


class DataDirLocked(UserError):
    """Another process holds the data directory (two nodes with one key would equivocate)."""
