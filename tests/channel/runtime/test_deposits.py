"""Deposits reach consensus by (nonce, block), and a reorg changes what is credited.

Audit F2: the chain worker handed deposits to consensus by list position and ignored removed
logs, so after a reorg that gave nonce k to another deposit (another account, amount or
token) the nodes kept crediting the orphan: participant 0 could claim 50 USDC it never
deposited while participant 1's 80 USDC could be neither claimed nor refunded. Now the chain
worker hands over the whole confirmed set each poll (`ConsensusDriver.set_confirmed_deposits`), each
deposit carries its block hash, and a proposal is judged against that set.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from channel.core.consensus import Validity
from channel.runtime.chain_worker import ChainConfig
from channel.runtime.driver import ConsensusDriver
from channel.runtime.keystore import Key
from channel.runtime.node import Node
from channel.runtime.store import Store
from crdt.genesis import Genesis, Participant, Role, Token
from crdt.hashing import keccak256
from crdt.ledger import Deposit
from crdt.ops import address_of
from crdt.types import Address, Symbol

USDC = Symbol("USDC")
KEYS = sorted((keccak256(b"parley-deposit-test-%d" % i) for i in range(4)), key=address_of)
E9 = 10**9

pytestmark = pytest.mark.hostile


def finality_of(tmp_path: Path) -> ConsensusDriver:
    genesis = Genesis.create(
        chain_id=31337,
        adjudicator=b"\x11" * 20,
        participants=[Participant(address_of(key), Role.TRADER, "") for key in KEYS],
        tokens=[Token(USDC, Address(b"\x22" * 20), 6)],
    )
    store = Store(tmp_path / "node" / "node.sqlite")
    node = Node.restore(genesis, Key(address_of(KEYS[0]), KEYS[0]), store, fresh_channel=True)
    return ConsensusDriver(node, transport=None)  # type: ignore[arg-type]  # no messages are sent here


def test_a_deposit_a_reorg_replaced_is_never_credited_and_its_replacement_is(tmp_path: Path) -> None:
    finality = finality_of(tmp_path)
    alice, bob = finality.genesis.addresses[:2]
    orphan = Deposit(1, alice, USDC, 50 * E9, b"\x01" * 32)
    replacement = Deposit(1, bob, USDC, 80 * E9, b"\x02" * 32)
    finality.set_confirmed_deposits([orphan])
    assert finality.new_deposits() == [orphan]
    stale_proposal = finality.app.get_value(1, 0)
    assert stale_proposal is not None
    assert stale_proposal.deposits == (orphan,)

    finality.set_confirmed_deposits([replacement])  # the reorg: nonce 1 is bob's now
    assert finality.new_deposits() == [replacement]
    assert finality.app.validate(1, stale_proposal) is Validity.INVALID  # a node that still saw the orphan
    fresh = finality.app.get_value(1, 0)
    assert fresh is not None
    assert fresh.deposits == (replacement,)
    assert finality.app.validate(1, fresh) is Validity.VALID

    finality.set_confirmed_deposits([])  # removed, nothing in its place (yet)
    assert finality.new_deposits() == []
    assert finality.app.validate(1, fresh) is Validity.NOT_YET
    finality.node.store.close()


def test_the_same_deposit_in_another_block_is_another_deposit(tmp_path: Path) -> None:
    """(nonce, account, token, amount) can repeat in a reorg with a new block: consensus keys it
    by block too, so nodes whose watchers disagree on the block do not agree on the deposit."""
    finality = finality_of(tmp_path)
    alice = finality.genesis.addresses[0]
    here, there = Deposit(1, alice, USDC, 5 * E9, b"\x01" * 32), Deposit(1, alice, USDC, 5 * E9, b"\x03" * 32)
    finality.set_confirmed_deposits([here])
    proposal = finality.app.get_value(1, 0)
    assert proposal is not None
    finality.set_confirmed_deposits([there])
    assert finality.app.validate(1, proposal) is Validity.INVALID
    finality.node.store.close()


def test_confirmations_are_safe_for_the_chain_in_use() -> None:
    default = ChainConfig(rpc="http://127.0.0.1:8545")
    assert default.confirmations_for(31337) == 1  # anvil reorganises only when told to
    assert default.confirmations_for(1) == default.confirmations_for(424242) == 64  # mainnet, and unknown chains
    assert default.confirmations_for(42161) > default.confirmations_for(8453) > 64  # fast blocks need more
    assert ChainConfig(rpc="x", confirmations=3).confirmations_for(1) == 3  # the operator's choice wins
