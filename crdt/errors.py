"""Errors of the pure core.

There is one root, `CrdtError`. Everything caused by bytes or values that came from outside
(a peer, a client, a file, the chain) is an `InvalidInput`, and each way such input can be wrong
has its own class, so callers can score a peer or answer a client precisely. `InternalError`
marks a bug: nothing catches it.
"""

from __future__ import annotations

from typing import ClassVar


class CrdtError(Exception):
    """Root of every error raised by `crdt`."""


class InternalError(CrdtError):
    """A broken invariant inside the core. It is a bug, never an input problem."""


class InvalidInput(CrdtError):
    """Input from outside the process is wrong. The input is dropped; nothing changes."""

    # A class variable (the compiled build would make a bare `code = ...` in a subclass compiled
    # with mypyc, as crdt.kinds's are, an instance attribute that such exceptions never set).
    code: ClassVar[str] = "invalid_input"


class Truncated(InvalidInput):
    code = "truncated"


class NonCanonical(InvalidInput):
    """Well-formed CBOR that is not the one canonical encoding of its value."""

    code = "non_canonical"


class WrongType(InvalidInput):
    """A field has the wrong CBOR type, length or range."""

    code = "wrong_type"


class Oversized(InvalidInput):
    """A size limit was exceeded: bytes, parents, body depth or item count."""

    code = "oversized"


class BadSignature(InvalidInput):
    """The signature is malformed, has a high s, or does not recover to the author."""

    code = "bad_signature"


class WrongChannel(InvalidInput):
    code = "wrong_channel"


class UnknownAuthor(InvalidInput):
    code = "unknown_author"


class BadSequence(InvalidInput):
    """seq is 0, or seq > 1 and the author's seq-1 is not in the causal past."""

    code = "bad_sequence"


class PendingFull(InvalidInput):
    """The bounded buffer of operations waiting for parents has no room for this operation.

    The operation is dropped, not lost: sync brings it again later, parents first. It is not
    the forwarder's fault (honest peers relay whatever is well-formed and signed), so a caller
    must not penalise the peer that sent it. The subclasses say whose share is used up.
    """

    code = "pending_full"


class AuthorPendingFull(PendingFull):
    """The author's own share of the pending buffer is used up: its waiting operations, their
    links to parents not yet accepted, or the missing parent ids they wait for
    (`crdt.graph.PendingBuffer`). Other authors' operations still have room."""

    code = "pending_full_author"


class AuthorQuarantined(PendingFull):
    """The author's waiting operations expired (their parents never came) often enough that,
    until its fault count decays, its operations that lack a parent are not buffered at all.
    Its operations whose parents are all known are still accepted."""

    code = "author_quarantined"


class InvalidGenesis(InvalidInput):
    code = "invalid_genesis"


class MissingOperations(InvalidInput):
    """A checkpoint cut names operations this replica has not accepted (yet)."""

    code = "missing_operations"

    def __init__(self, message: str, missing: frozenset[bytes] = frozenset()) -> None:
        super().__init__(message)
        self.missing = missing


class InvalidCut(InvalidInput):
    """A checkpoint cut that cannot follow the previous one."""

    code = "invalid_cut"


class InvalidSnapshot(InvalidInput):
    """A snapshot file that is not one, is damaged, forged, or of another channel (crdt/snapshot.py)."""

    code = "invalid_snapshot"
