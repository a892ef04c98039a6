"""Errors of the networking layer.

There is one root, `P2PError`. Everything caused by bytes or behaviour of a remote peer is a
`PeerInputError`, which is also a `crdt.errors.InvalidInput`: a caller that already handles
invalid input from the core (``except InvalidInput``) handles peers' garbage the same way, and
each way peer input can be wrong has its own class and a short ``code`` (used for scoring and
logs). Errors of the core (`crdt.errors.InvalidInput` subclasses such as `BadSignature`) pass
through unchanged where they describe an operation; wire-level garbage found by the canonical
CBOR codec is re-raised as `MalformedMessage` with the core error as its cause.

`TransportError` is a failure of our own side of the network (a dial that failed, a stream that
closed); it is not the peer's fault and never scores anyone down.
"""

from __future__ import annotations

from crdt.errors import InvalidInput


class P2PError(Exception):
    """Root of every error raised by `p2p`."""


class PeerInputError(P2PError, InvalidInput):
    """Bytes or behaviour of a remote peer were wrong. The input is dropped; nothing changes."""

    code = "peer_input"


class MalformedMessage(PeerInputError):
    """Not a message of the protocol: garbage bytes, bad CBOR, wrong shape or field types."""

    code = "malformed"


class OversizedMessage(PeerInputError):
    """A frame, batch or list is larger than its limit."""

    code = "oversized"


class UnexpectedMessage(PeerInputError):
    """A well-formed message that the protocol does not allow here (wrong channel, ...)."""

    code = "unexpected"


class RateLimited(PeerInputError):
    """The peer sent more than its budget of messages or bytes."""

    code = "rate_limited"


class TransportError(P2PError):
    """Our side of the network failed (dial, stream, closed transport). Not a peer's fault."""


class StreamClosed(TransportError):
    """The stream ended (end of file, reset or closed)."""


class Banned(TransportError):
    """The peer is banned on this node; no stream to or from it is allowed."""


class NotPersisted(P2PError):
    """The write-ahead hook could not store operations (the disk is full): nothing was applied."""
