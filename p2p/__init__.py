"""Networking: the libp2p host, gossip of operations, the sync protocol and its codec."""
