"""Networking: the libp2p host, gossip of operations, the sync protocol and its codec.

- `p2p.wire`: every message and frame a peer can send, with limits and typed errors;
- `p2p.sync`: the sync (anti-entropy) protocol as a pure state machine;
- `p2p.policy`: peer scores, bans and token-bucket rate limits (pure; time is passed in);
- `p2p.transport`: the interface shared by `p2p.host` (py-libp2p) and `p2p.memory` (in-process);
- `p2p.peer`: ``open_peer(replica, transport)`` runs gossip batching, validation and sync;
- `p2p.errors`: one root, `P2PError`; peer input errors are also `crdt.errors.InvalidInput`.

Importing `p2p.host` sets ``PY_YAMUX_RELEASE_ON_READ=0`` (unless already set) and enlarges
libp2p's pubsub queues, process wide (see its docstring).
"""
