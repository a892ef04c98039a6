"""The watchtower and the emergency exit, driven on the embedded chain and anvil."""

from __future__ import annotations

from pathlib import Path

import pytest

from channel.runtime.watchtower import Watchtower
from crdt.certificate import Certificate
from settlement.client import AdjudicatorClient, Sender, local_account
from settlement.errors import InsufficientGas, NoCertificate, NotYourLeaf
from settlement.exit import ExitEvent, run_exit
from settlement.watcher import ChainWatcher
from tests.settlement.settlement_kit import E9, WINDOW, World, two_versions


def test_watchtower_defeats_a_stale_proposal(world: World, tmp_path: Path) -> None:
    _, old, new = two_versions(world)
    tower = Watchtower(world.client(3), world.genesis, lambda: new)
    watcher = ChainWatcher(world.chain.w3, world.adjudicator.address, world.channel, tmp_path / "w.sqlite",
                           confirmations=0)
    assert tower.step() is None  # nothing pending
    world.client(1).propose(old)  # participant 1 would rather be paid 60 than 35
    action = tower.on_poll(watcher.poll())
    assert action is not None
    assert (action.kind, action.pending_version, action.our_version) == ("challenged", 1, 2)
    assert world.adjudicator.settlement(world.channel).version == 2
    assert tower.on_poll(watcher.poll()) is None  # the challenge itself needs no answer
    world.chain.increase_time(WINDOW + 1)
    world.client(3).finalize(world.channel)
    assert world.adjudicator.finalized(world.channel).payout_root == new.checkpoint.payout_root
    assert world.adjudicator.channel(world.channel).status == "open"  # a periodic settlement
    result = run_exit(world.client(3), world.genesis, [new], world.address(3),
                      sleep=lambda _: world.chain.increase_time(WINDOW))
    assert [leaf.amount for leaf in result.claimed] == [25_000_000]
    assert world.token.balance_of(world.accounts[3].address) == 10**30 + 25_000_000


def test_watchtower_ignores_a_proposal_it_cannot_better(world: World) -> None:
    _, old, new = two_versions(world)
    world.client(1).propose(new)
    assert Watchtower(world.client(3), world.genesis, lambda: old).step() is None
    assert Watchtower(world.client(3), world.genesis, lambda: new).step() is None
    assert world.adjudicator.settlement(world.channel).version == 2


def test_watchtower_too_late_does_not_send(world: World) -> None:
    _, old, new = two_versions(world)
    world.client(1).propose(old)
    world.chain.increase_time(WINDOW + 1)
    action = Watchtower(world.client(3), world.genesis, lambda: new).step()
    assert action is not None
    assert action.kind == "too_late"


def test_exit_alone_with_resume(world: World) -> None:
    _, old, new = two_versions(world)
    me = world.client(3)  # nobody else takes part from here on
    events: list[ExitEvent] = []

    class Interrupted(Exception):
        pass

    def interrupt(_: float) -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        run_exit(me, world.genesis, [old, new], world.address(3), report=events.append, sleep=interrupt)
    assert [e.step for e in events] == ["close", "wait"]
    assert world.adjudicator.channel(world.channel).status == "closing"
    assert world.adjudicator.settlement(world.channel).version == 2

    def advance(_: float) -> None:
        world.chain.increase_time(WINDOW // 3)

    events.clear()
    result = run_exit(me, world.genesis, [new, old], world.address(3), report=events.append, sleep=advance)
    steps = [e.step for e in events]
    assert steps[0] == "reuse"
    assert "close" not in steps
    assert steps[-3:] == ["finalize", "claim", "done"]
    waits = [e for e in events if e.step == "wait"]
    assert waits
    assert all(e.window == WINDOW and e.now <= e.finalizes_at for e in waits)
    assert (result.version, result.finalized, [leaf.amount for leaf in result.claimed]) == (2, True, [25_000_000])
    assert world.token.balance_of(world.accounts[3].address) == 10**30 + 25_000_000

    again = run_exit(me, world.genesis, [new], world.address(3), sleep=advance)
    assert (again.claimed, [leaf.amount for leaf in again.already_claimed]) == ([], [25_000_000])


def test_exit_closes_over_an_older_pending_proposal(world: World) -> None:
    _, old, new = two_versions(world)
    world.client(1).propose(old)  # a periodic proposal in dispute, not a close
    events: list[ExitEvent] = []
    result = run_exit(world.client(3), world.genesis, [new], world.address(3), report=events.append,
                      sleep=lambda _: world.chain.increase_time(WINDOW))
    assert events[0].step == "close"
    assert (result.proposed, result.challenged, result.version) == (True, False, 2)
    assert [leaf.amount for leaf in result.claimed] == [25_000_000]


def test_exit_challenges_an_older_close(world: World) -> None:
    _, old, new = two_versions(world)
    world.client(1).close(old)  # participant 1 would rather be paid 60 than 35
    result = run_exit(world.client(3), world.genesis, [new], world.address(3),
                      sleep=lambda _: world.chain.increase_time(WINDOW))
    assert (result.proposed, result.challenged, result.version) == (False, True, 2)
    assert [leaf.amount for leaf in result.claimed] == [25_000_000]


def test_exit_claims_the_rest_of_withdrawals_and_refunds(world: World) -> None:
    """The exit pays all an account is owed: its balance leaf, the part of its withdrawals not
    claimed yet, and its deposits that no checkpoint credited."""
    world.deposit(0, 40 * E9)
    world.deposit(3, 10 * E9)
    replica = world.replica()
    world.transfer(replica, 0, 3, 5 * E9)
    world.withdraw(replica, 3, 4 * E9)
    cert = world.checkpoint(replica)
    late = world.deposit(3, 2 * E9)
    result = run_exit(world.client(3), world.genesis, [cert], world.address(3),
                      sleep=lambda _: world.chain.increase_time(WINDOW))
    assert sorted((leaf.kind, leaf.amount) for leaf in result.claimed) == [(0, 11_000_000), (1, 4_000_000)]
    assert result.refunded == [late.nonce]
    assert world.token.balance_of(world.accounts[3].address) == 10**30 + 5_000_000
    again = run_exit(world.client(3), world.genesis, [cert], world.address(3))
    assert (again.claimed, again.refunded) == ([], [])
    assert [leaf.amount for leaf in again.already_claimed] == [11_000_000]


def test_exit_refuses_without_gas_or_certificate(world: World) -> None:
    _, _, new = two_versions(world)
    broke = AdjudicatorClient(Sender(world.chain, local_account(b"\x07" * 32)), world.adjudicator.address)
    with pytest.raises(InsufficientGas):
        run_exit(broke, world.genesis, [new], world.address(3))
    assert world.adjudicator.channel(world.channel).status == "open"
    forged = Certificate(new.checkpoint, new.signatures[:2], new.leaves)
    with pytest.raises(NoCertificate):
        run_exit(world.client(3), world.genesis, [forged], world.address(3))
    with pytest.raises(NotYourLeaf):
        run_exit(world.client(3), world.genesis, [new], world.adjudicator.address_bytes)
