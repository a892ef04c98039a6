"""Who may talk to this node: libp2p peer ids bound to participant keys.

A libp2p peer id is an Ed25519 key that Noise authenticates on every connection, but nothing
ties it to a participant of the channel: before this module, any host that dialled a node got
its gossip and a sync session. Now each participant's node signs, with its participant key,

    PeerBinding(bytes32 channel, bytes peerId)     (EIP-712, `crdt.eip712.peer_binding_digest`)

and both sides of every new connection exchange their binding over ``/parley/hello/1.0.0``
(one length-prefixed frame each way). A binding is accepted only if

- it is for this channel,
- its peer id is the one Noise authenticated for this connection (a binding copied from
  another node is useless: the copier cannot be that peer id), and
- its signature recovers to the participant it names, which the genesis lists.

Until a peer is admitted the transport gives it nothing: no gossip (GossipSub never adds it to
a mesh), no sync, checkpoint or other stream, and it is disconnected if it has not proved
itself within the hello timeout. Observers are participants too (with the observer role), so
they are admitted and read everything, as the genesis says they may.

A participant may run several peer ids (a restarted node with a new identity key): each needs
its own binding, and a ban applies to the participant, so it holds against reconnects with a
new identity.

Wire form of a binding (canonical CBOR): ``[channel, peer_id, participant, signature]``.
This module is pure: no I/O and no clock; `p2p.host` runs the exchange.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from crdt import cbor
from crdt.eip712 import peer_binding_digest
from crdt.errors import BadSignature, InvalidInput, UnknownAuthor
from crdt.ops import Context, address_of, sign_digest
from crdt.types import Address
from p2p.errors import MalformedMessage, UnexpectedMessage

HELLO_PROTOCOL = "/parley/hello/1.0.0"
MAX_BINDING_BYTES = 256
MAX_PEER_ID_BYTES = 64


@dataclass(frozen=True, slots=True)
class Binding:
    channel: bytes
    peer_id: bytes
    participant: Address
    signature: bytes

    def encode(self) -> bytes:
        return cbor.encode([self.channel, self.peer_id, self.participant, self.signature])


def sign_binding(ctx: Context, private_key: bytes, peer_id: bytes) -> Binding:
    """This participant's binding of `peer_id` (libp2p's peer id bytes) in `ctx`'s channel."""
    digest = peer_binding_digest(ctx.domain, ctx.channel, peer_id)
    return Binding(ctx.channel, bytes(peer_id), address_of(private_key), sign_digest(private_key, digest))


def decode_binding(data: bytes, ctx: Context, remote: bytes) -> Binding:
    """A peer's binding, checked against the channel, the authenticated peer id `remote` and
    the participants; raises a `PeerInputError` or `BadSignature`/`UnknownAuthor` otherwise."""
    if len(data) > MAX_BINDING_BYTES:
        raise MalformedMessage(f"a binding of {len(data)} bytes is over the limit {MAX_BINDING_BYTES}")
    try:
        value = cbor.decode(data, max_bytes=MAX_BINDING_BYTES, max_depth=1)
    except InvalidInput as exc:
        raise MalformedMessage(f"binding: {exc.code}: {exc}") from exc
    if type(value) is not list or len(value) != 4 or not all(type(item) is bytes for item in value):
        raise MalformedMessage("a binding is [channel, peer_id, participant, signature], all byte strings")
    channel, peer_id, participant, signature = value
    if len(channel) != 32 or len(participant) != 20 or not 0 < len(peer_id) <= MAX_PEER_ID_BYTES:
        raise MalformedMessage("a binding's channel is 32 bytes, its participant 20, its peer id 1 to 64")
    if channel != ctx.channel:
        raise UnexpectedMessage(f"binding for channel 0x{channel.hex()}")
    if peer_id != remote:
        raise UnexpectedMessage("binding for another peer id than the one this connection authenticated")
    if participant not in ctx.participants:
        raise UnknownAuthor(f"0x{participant.hex()} is not a participant of this channel")
    signer = ctx.recover(peer_binding_digest(ctx.domain, ctx.channel, peer_id), signature)
    if signer != participant:
        raise BadSignature(f"binding signature does not recover to 0x{participant.hex()}")
    return Binding(channel, peer_id, Address(participant), signature)


@dataclass(slots=True)
class Admission:
    """The admission state of one node: its own binding, and the peers it has admitted.

    ``admitted`` maps a peer id to the participant it proved it speaks for. ``banned`` holds
    participants (not peer ids): a banned participant is refused whatever identity it dials
    with.
    """

    ctx: Context
    own: Binding
    admitted: dict[bytes, Address] = field(default_factory=dict)
    banned: set[Address] = field(default_factory=set)

    def admit(self, data: bytes, remote: bytes) -> Address:
        """Check a peer's binding frame and admit it; raises like `decode_binding`, or
        `UnexpectedMessage` for a banned participant."""
        binding = decode_binding(data, self.ctx, remote)
        if binding.participant in self.banned:
            raise UnexpectedMessage(f"participant 0x{binding.participant.hex()} is banned here")
        self.admitted[remote] = binding.participant
        return binding.participant

    def participant(self, peer: bytes) -> Address | None:
        return self.admitted.get(peer)

    def forget(self, peer: bytes) -> None:
        self.admitted.pop(peer, None)

    def ban(self, peer: bytes) -> list[bytes]:
        """Ban the participant behind `peer` (if it was admitted); return every peer id of it."""
        participant = self.admitted.get(peer)
        if participant is None:
            return [peer]
        self.banned.add(participant)
        peers = [p for p, who in self.admitted.items() if who == participant]
        for p in peers:
            del self.admitted[p]
        return peers
