"""Checkpoint catch-up: the ``/parley/checkpoints/1.0.0`` stream protocol.

Consensus peers keep the proofs of the last few versions in memory and send one to a peer
whose votes show it is one version behind (`Consensus._help`). That does not reach a node
that was down for longer than that window, nor one that decided a version and crashed
before it had gathered that version's commits: nobody sends those commits again. Such a
node fetches what it lacks here, from a peer's store: the `Decision` proof of each version
after its last one, and each version's certificate when the peer holds it.

The same answer also carries the server's own signed proposals and votes of the height it has
not decided yet. Gossip delivers a vote at most once (message ids are content-addressed, and a
peer's seen cache drops the same bytes for minutes), so a vote lost in a partition or to packet
loss was never sent again, and a height whose quorum missed one stalled for good (the
simulator found it: `tests/simulations/sim`). A node that is stuck asks a peer every
`catchup_idle` at the latest, in turn, and each answer gives it that peer's part of the height.

One request per stream; the server answers and closes:

    request  [0, channel, first, count]            1 <= count <= MAX_RECORDS
    record   [1, version, decision, certificate]    versions ascending from `first`;
                                                    certificate: empty if the server has not
                                                    assembled it (canonical CBOR has no null)
    vote     [3, message]                           the server's own signed proposals and votes
                                                    of the heights above `latest`, at most
                                                    MAX_VOTES
    end      [2, latest]                            the server's highest decided version

Each is one length-prefixed frame (`p2p.wire`). This module checks shapes and bounds only
(`decode_*` raise `p2p.errors.MalformedMessage` / `OversizedMessage`); the caller checks each
proof's quorum (`Consensus.catch_up`) and each certificate's signatures
(`Certificate.verify`) before it uses them, so a lying server can waste one request but
cannot make a node apply anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import trio

from channel.core.consensus import (
    MAX_MESSAGE_BYTES,
    Decision,
    Message,
    decode_message,
    decode_signing_record,
    encode_message,
)
from channel.runtime.store import Store
from crdt import cbor
from crdt.certificate import MAX_CERTIFICATE_BYTES, Certificate
from crdt.errors import InvalidInput
from p2p.errors import MalformedMessage, OversizedMessage, RateLimited, TransportError
from p2p.policy import TokenBucket
from p2p.transport import PeerId, Stream, Transport, read_one_frame
from p2p.wire import FrameDecoder, WireLimits, encode_frame

PROTOCOL = "/parley/checkpoints/1.0.0"
REQUEST, RECORD, END, VOTE = 0, 1, 2, 3
MAX_RECORDS = 64  # a few KB each with a handful of participants
MAX_VOTES = 64  # a proposal and two votes a round
MAX_REQUEST_BYTES = 64
MAX_FRAME_BYTES = MAX_MESSAGE_BYTES + MAX_CERTIFICATE_BYTES + 64
READ_CHUNK = 64 * 1024
FETCH_SECONDS = 10.0  # the whole exchange, on either side
RETRY_FETCH_SECONDS = 3.0  # a client may ask a peer again that has not answered for this long
REQUESTS_PER_SECOND, REQUEST_BURST = 2.0, 8.0  # per peer, on the server
_LIMITS = WireLimits(max_frame_bytes=MAX_FRAME_BYTES)


@dataclass(frozen=True, slots=True)
class Request:
    channel: bytes
    first: int
    count: int


@dataclass(frozen=True, slots=True)
class Record:
    version: int
    decision: Decision
    certificate: Certificate | None


@dataclass(frozen=True, slots=True)
class Answer:
    records: tuple[Record, ...]
    latest: int  # the server's highest decided version (a hint: nothing proves it)
    votes: tuple[Message, ...] = ()  # the server's own messages of the heights it has not decided


# -- codec -------------------------------------------------------------------------------------------


def encode_request(request: Request) -> bytes:
    return cbor.encode([REQUEST, request.channel, request.first, request.count])


def decode_request(data: bytes) -> Request:
    value = _decode(data, MAX_REQUEST_BYTES)
    if len(value) != 4 or value[0] != REQUEST:
        raise MalformedMessage("a request is [0, channel, first, count]")
    _, channel, first, count = value
    if type(channel) is not bytes or len(channel) != 32:
        raise MalformedMessage("the request's channel must be 32 bytes")
    if type(first) is not int or first < 1 or first > cbor.UINT64_MAX:
        raise MalformedMessage("the request's first version must be a uint64 of at least 1")
    if type(count) is not int or not 1 <= count <= MAX_RECORDS:
        raise MalformedMessage(f"the request's count must be 1 to {MAX_RECORDS}")
    return Request(channel, first, count)


def encode_record(version: int, decision: bytes, certificate: bytes | None) -> bytes:
    return cbor.encode([RECORD, version, decision, certificate or b""])


def encode_end(latest: int) -> bytes:
    return cbor.encode([END, latest])


def encode_vote(message: bytes) -> bytes:
    return cbor.encode([VOTE, message])


def decode_reply(data: bytes) -> Record | int | Message:
    """A record, the ``latest`` of the end frame, or one of the server's own consensus messages
    (decoded: its signature is the caller's to check, as for gossip)."""
    value = _decode(data, MAX_FRAME_BYTES)
    if value[0] == VOTE:
        if len(value) != 2 or type(value[1]) is not bytes:
            raise MalformedMessage("a vote frame is [3, message]")
        try:
            message = decode_message(value[1])
        except InvalidInput as exc:
            raise MalformedMessage(f"vote frame: {exc.code}: {exc}") from exc
        if isinstance(message, Decision):
            raise MalformedMessage("a vote frame holds a proposal or a vote, not a decision")
        return message
    if value[0] == END:
        if len(value) != 2 or type(value[1]) is not int or not 0 <= value[1] <= cbor.UINT64_MAX:
            raise MalformedMessage("the end frame is [2, latest]")
        return int(value[1])
    if value[0] != RECORD or len(value) != 4:
        raise MalformedMessage("a record is [1, version, decision, certificate]")
    _, version, decision_bytes, certificate_bytes = value
    if type(version) is not int or type(decision_bytes) is not bytes or type(certificate_bytes) is not bytes:
        raise MalformedMessage("a record is a version, then the decision's and the certificate's bytes")
    try:
        decision = decode_message(decision_bytes)
        certificate = Certificate.decode(certificate_bytes) if certificate_bytes else None
    except InvalidInput as exc:
        raise MalformedMessage(f"record {version}: {exc.code}: {exc}") from exc
    if not isinstance(decision, Decision) or decision.height != version:
        raise MalformedMessage(f"record {version} does not hold the decision of version {version}")
    if certificate is not None and certificate.version != version:
        raise MalformedMessage(f"record {version} holds the certificate of version {certificate.version}")
    return Record(version, decision, certificate)


def _decode(data: bytes, max_bytes: int) -> list[Any]:
    if len(data) > max_bytes:
        raise OversizedMessage(f"{len(data)} bytes is more than the limit of {max_bytes}")
    try:
        value = cbor.decode(data, max_bytes=max_bytes, max_depth=2)
    except InvalidInput as exc:
        raise MalformedMessage(f"{exc.code}: {exc}") from exc
    if type(value) is not list or not value or type(value[0]) is not int:
        raise MalformedMessage("a frame is an array that starts with its integer type")
    return value


# -- the two sides -----------------------------------------------------------------------------------


class CatchUpServer:
    """Answers requests from the store, at most `REQUESTS_PER_SECOND` per peer."""

    def __init__(self, channel: bytes, store: Store) -> None:
        self.channel = channel
        self.store = store
        self.served = 0
        self.refused = 0
        self._buckets: dict[PeerId, TokenBucket] = {}

    async def handle(self, stream: Stream) -> None:
        try:
            with trio.fail_after(FETCH_SECONDS):
                request = decode_request(await read_one_frame(stream, MAX_REQUEST_BYTES, FETCH_SECONDS))
                now = trio.current_time()
                bucket = self._buckets.setdefault(stream.remote, TokenBucket(REQUESTS_PER_SECOND, REQUEST_BURST, now))
                if not bucket.take(1, now):
                    raise RateLimited("checkpoint requests flood")
                if request.channel != self.channel:
                    raise MalformedMessage(f"request for channel 0x{request.channel.hex()}")
                for version, decision, certificate in self.store.checkpoint_records(request.first, request.count):
                    await stream.write(encode_frame(encode_record(version, decision, certificate), _LIMITS))
                latest = self.store.latest_decision()
                for message in own_messages(self.store.signed(latest + 1)):
                    await stream.write(encode_frame(encode_vote(message), _LIMITS))
                await stream.write(encode_frame(encode_end(latest), _LIMITS))
                self.served += 1
        except (InvalidInput, trio.TooSlowError):
            self.refused += 1
            await stream.reset()
        except TransportError:  # the peer hung up
            self.refused += 1


def own_messages(records: list[bytes]) -> list[bytes]:
    """The messages of stored signing records (the newest `MAX_VOTES`), encoded for the wire."""
    return [encode_message(decode_signing_record(record).message) for record in records[-MAX_VOTES:]]


async def fetch(transport: Transport, peer: PeerId, request: Request) -> Answer:
    """Ask `peer`; raise `p2p.errors.TransportError` if it cannot be asked, or a
    `PeerInputError` if its answer is malformed, out of order or not what was asked."""
    stream = await transport.open_stream(peer, PROTOCOL)
    try:
        with trio.fail_after(FETCH_SECONDS):
            await stream.write(encode_frame(encode_request(request), _LIMITS))
            records: list[Record] = []
            votes: list[Message] = []
            decoder = FrameDecoder(MAX_FRAME_BYTES)
            while True:
                data = await stream.read(READ_CHUNK)
                if not data:
                    raise MalformedMessage("the answer ended before its end frame")
                for frame in decoder.feed(data):
                    reply = decode_reply(frame)
                    if isinstance(reply, int):
                        return Answer(tuple(records), reply, tuple(votes))
                    if not isinstance(reply, Record):
                        if len(votes) == MAX_VOTES:
                            raise MalformedMessage(f"more than {MAX_VOTES} vote frames")
                        votes.append(reply)
                        continue
                    expected = request.first if not records else records[-1].version + 1
                    if reply.version != expected or len(records) == request.count:
                        raise MalformedMessage(f"record {reply.version} was not asked for or is out of order")
                    records.append(reply)
    except trio.TooSlowError as exc:
        raise TransportError(f"no answer within {FETCH_SECONDS:.0f} s") from exc
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            await stream.close()
