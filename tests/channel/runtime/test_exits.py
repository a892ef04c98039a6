"""The node's emergency exit (`channel.runtime.exits`) on the embedded chain: the real contract,
real certificates, the exit's worker thread and its trio task, as the node runs them. The
certificate source is the part of the consensus driver the exit reads (its certificates)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import trio

from channel.runtime.exits import MAX_ATTEMPTS, NodeExit
from channel.runtime.service import ALREADY_EXITING, NO_CERTIFICATE, ExitRefused
from crdt.certificate import Certificate
from settlement.chain import EmbeddedChain
from settlement.client import AdjudicatorClient
from tests.settlement.settlement_kit import E9, WINDOW, World, build_world, two_versions


@pytest.fixture
def embedded_world(request: pytest.FixtureRequest) -> World:
    return build_world(EmbeddedChain(), salt=request.node.name.encode())


class Certificates:
    """What the exit reads of the consensus driver: the certificates it holds."""

    def __init__(self, *held: Certificate) -> None:
        self.certificates = {c.version: c for c in held}

    def latest_certificate(self) -> Certificate | None:
        return self.certificates[max(self.certificates)] if self.certificates else None


def advance(world: World) -> Callable[[float], None]:
    return lambda _: world.chain.increase_time(WINDOW // 3)


async def finished(exits: NodeExit) -> dict[str, Any]:
    with trio.fail_after(60):
        return await exits.wait_ended()


def run(test: Callable[[trio.Nursery], Any]) -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await test(nursery)
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_exit_closes_waits_finalizes_and_claims(embedded_world: World) -> None:
    world = embedded_world
    _, old, new = two_versions(world)
    exits = NodeExit(world.genesis, world.address(3), Certificates(old, new), lambda: world.client(3),
                     sleep=advance(world))

    async def test(nursery: trio.Nursery) -> None:
        nursery.start_soon(exits.run)
        started = exits.start()
        assert (started["phase"], started["running"], started["version"]) == ("starting", True, 2)
        status = await finished(exits)
        assert status["phase"] == "claimed", status
        assert (status["attempts"], status["version"], status["finalized"], status["error"]) == (1, 2, True, None)
        assert [e["step"] for e in status["events"]] == ["close", "finalize", "claim", "done"]
        assert status["window"] == WINDOW
        assert status["finalizes_at"] > 0
        assert status["claimed"] == [
            {"token": "USDC", "kind": "balance", "amount": "25000000", "amount_e9": str(25 * E9)}]

    run(test)
    assert world.adjudicator.channel(world.channel).status == "concluded"
    assert world.token.balance_of(world.accounts[3].address) == 10**30 + 25_000_000


def test_exit_challenges_an_older_close(embedded_world: World) -> None:
    world = embedded_world
    _, old, new = two_versions(world)
    world.client(1).close(old)  # participant 1 would rather be paid 60 than 35
    exits = NodeExit(world.genesis, world.address(3), Certificates(new), lambda: world.client(3),
                     sleep=advance(world))

    async def test(nursery: trio.Nursery) -> None:
        nursery.start_soon(exits.run)
        exits.start()
        status = await finished(exits)
        assert status["phase"] == "claimed", status
        assert (status["challenged"], status["proposed"], status["version"]) == (True, False, 2)
        assert status["events"][0]["step"] == "challenge"

    run(test)
    assert world.adjudicator.finalized(world.channel).payout_root == new.checkpoint.payout_root


def test_exit_refusals(embedded_world: World) -> None:
    world = embedded_world
    _, _, new = two_versions(world)
    with pytest.raises(ExitRefused) as refused:
        NodeExit(world.genesis, world.address(3), Certificates(), lambda: world.client(3)).start()
    assert refused.value.reason == NO_CERTIFICATE
    waiting, release = threading.Event(), threading.Event()

    def held(_: float) -> None:  # the dispute window, until the test lets it pass
        waiting.set()
        release.wait(30)
        world.chain.increase_time(WINDOW)

    exits = NodeExit(world.genesis, world.address(3), Certificates(new), lambda: world.client(3), sleep=held)

    async def test(nursery: trio.Nursery) -> None:
        nursery.start_soon(exits.run)
        exits.start()
        with trio.fail_after(30):
            await trio.to_thread.run_sync(waiting.wait)
        assert exits.status["phase"] == "waiting"
        assert exits.status["remaining"] == WINDOW
        with pytest.raises(ExitRefused) as again:
            exits.start()
        assert again.value.reason == ALREADY_EXITING
        release.set()
        assert (await finished(exits))["phase"] == "claimed"

    run(test)


def test_exit_without_gas_fails_and_can_start_again(request: pytest.FixtureRequest) -> None:
    world = build_world(EmbeddedChain(), n=7, salt=request.node.name.encode())  # 6 is not funded
    world.deposit(0, 40 * E9)
    certificate = world.certify(world.replica(), 1)
    exits = NodeExit(world.genesis, world.address(6), Certificates(certificate), lambda: world.client(6),
                     sleep=advance(world))

    async def test(nursery: trio.Nursery) -> None:
        nursery.start_soon(exits.run)
        exits.start()
        status = await finished(exits)
        assert (status["phase"], status["attempts"]) == ("failed", 1)  # no retry: more tries cannot pay
        assert "cannot pay the gas" in status["error"]
        assert exits.start()["phase"] == "starting"  # a failed exit is not running: it may start again
        assert (await finished(exits))["phase"] == "failed"

    run(test)
    assert world.adjudicator.channel(world.channel).status == "open"  # nothing was sent


def test_exit_plans_again_when_a_newer_checkpoint_gets_there_first(embedded_world: World) -> None:
    """Participant 1 proposes v3 just before the exit's close of v2 is sent: the contract reverts
    VersionNotNewer, and the next attempt closes at v3 and claims with its certificate."""
    world = embedded_world
    replica, _, new = two_versions(world)
    world.transfer(replica, 0, 3, 5 * E9, seq=1)
    newer = world.certify(replica, 3)
    source = Certificates(new)

    class Raced(AdjudicatorClient):
        raced = False

        def close(self, certificate: Certificate) -> Any:
            if not Raced.raced:  # another participant's proposal lands first (a real transaction)
                Raced.raced = True
                world.client(1).propose(newer)
                source.certificates[newer.version] = newer  # as consensus certified it here
            return super().close(certificate)

    me = world.client(3)
    exits = NodeExit(world.genesis, world.address(3), source, lambda: Raced(me.sender, me.address),
                     sleep=advance(world), retry_delay=0)

    async def test(nursery: trio.Nursery) -> None:
        nursery.start_soon(exits.run)
        exits.start()
        status = await finished(exits)
        assert status["phase"] == "claimed", status
        assert 1 < status["attempts"] <= MAX_ATTEMPTS
        assert status["version"] == 3
        assert status["claimed"] == [
            {"token": "USDC", "kind": "balance", "amount": "30000000", "amount_e9": str(30 * E9)}]

    run(test)
    assert Raced.raced
    assert world.token.balance_of(world.accounts[3].address) == 10**30 + 30_000_000
