"""Helpers for the p2p tests: a small channel with deterministic keys, and signed operations."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio
from libp2p.peer.id import ID

from crdt import testing
from crdt.genesis import Genesis, Token
from crdt.hashing import keccak256
from crdt.ops import Context, SignedOp, address_of, sign_op
from crdt.types import Address, OpId, Symbol
from p2p.admission import Admission, sign_binding
from p2p.host import HostConfig
from p2p.identity import load_or_create

TOKEN = Symbol("USDC")


def private_key(index: int) -> bytes:
    return keccak256(b"parley-p2p-test-key-%d" % index)


def make_genesis(n: int, bootstrap: list[str] | None = None) -> Genesis:
    keys = [private_key(i) for i in range(n)]
    return testing.make_genesis(keys, [Token(TOKEN, Address(b"\x22" * 20), 6)], initial=10**15, bootstraps=bootstrap)


@dataclass
class Author:
    """One participant signing its own chain of operations."""

    ctx: Context
    key: bytes
    seq: int = 0
    heads: set[OpId] = field(default_factory=set)

    @property
    def address(self) -> Address:
        return address_of(self.key)

    def transfer(self, to: bytes, amount: int = 1, extra_parents: tuple[OpId, ...] = ()) -> SignedOp:
        self.seq += 1
        parents = set(self.heads) | set(extra_parents)
        op = sign_op(
            self.ctx, self.key, self.seq, parents, "transfer", {"to": to, "token": TOKEN, "amount": amount}, ts=self.seq
        )
        self.heads = {op.op_id}
        return op


def authors(genesis: Genesis) -> list[Author]:
    ctx = genesis.context()
    return [Author(ctx, private_key(i)) for i in range(len(genesis.participants))]


def random_dag(genesis: Genesis, count: int, seed: int = 0, forks: int = 0) -> list[SignedOp]:
    """`count` operations by all participants, each also citing a few earlier ones; with `forks`
    extra operations that equivocate (same author and seq as an existing one)."""
    rng = random.Random(seed)
    people = authors(genesis)
    ops: list[SignedOp] = []
    for _ in range(count):
        author = rng.choice(people)
        extra = tuple(rng.sample([op.op_id for op in ops], min(len(ops), rng.randint(0, 2))))
        ops.append(author.transfer(people[0].address, rng.randint(1, 9), extra))
    for index in range(forks):
        victim = rng.choice(ops)
        author = next(a for a in people if a.address == victim.author)
        fork = sign_op(
            author.ctx,
            author.key,
            victim.seq,
            victim.parents,
            "transfer",
            {"to": people[0].address, "token": TOKEN, "amount": 1000 + index},
            ts=0,
        )
        ops.append(fork)
    return ops


def host_config(genesis: Genesis, data_dir: Path, participant: int | None, boot: tuple[str, ...] = ()) -> HostConfig:
    """A libp2p host for participant `participant` (None: a keyless host, which honest nodes do
    not admit), with its identity kept (encrypted) in `data_dir`."""
    identity = load_or_create(data_dir, "p2p-test")
    admission = None
    if participant is not None:
        ctx = genesis.context()
        peer_id = ID.from_pubkey(identity.public_key).to_bytes()
        admission = Admission(ctx, sign_binding(ctx, private_key(participant), peer_id))
    return HostConfig(identity=identity, bootstrap=boot, admission=admission)


async def poll_until(predicate: Callable[[], bool], interval: float = 0.02) -> None:
    """For conditions no event announces (bans, connections): re-check every `interval`."""
    while not predicate():  # noqa: ASYNC110 - nothing to wait on: the libraries announce no event
        await trio.sleep(interval)
