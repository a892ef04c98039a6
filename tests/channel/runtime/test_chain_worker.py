"""The chain worker's thread boundary, without a chain: fakes for the driver, the node, the
watcher and the adjudicator client, and the worker's poll run in a real worker thread.

The driver fake records the thread of every call and every read of its certificates, so a test
fails if the worker thread reads the driver's state (a ``max()`` over a dict the trio thread
inserts into raises RuntimeError)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from channel.runtime import chain_worker as chain_worker_module
from channel.runtime.chain_worker import ChainConfig, ChainWorker
from settlement.watcher import PollResult
from tests.p2p.p2p_kit import make_genesis

GENESIS = make_genesis(3)


@dataclass(frozen=True)
class FakeCheckpoint:
    version: int
    deposit_nonce: int = 0


@dataclass(frozen=True)
class FakeCertificate:
    checkpoint: FakeCheckpoint

    @property
    def version(self) -> int:
        return self.checkpoint.version


def certificate(version: int) -> FakeCertificate:
    return FakeCertificate(FakeCheckpoint(version))


class WatchedCertificates(dict[int, FakeCertificate]):
    """The driver's ``certificates``: notes the thread of every read."""

    def __init__(self, owner: ThreadCheckedDriver) -> None:
        super().__init__()
        self.owner = owner

    def __iter__(self) -> Any:
        self.owner.note("iterate certificates")
        return super().__iter__()

    def __getitem__(self, key: int) -> FakeCertificate:
        self.owner.note("read a certificate")
        return super().__getitem__(key)


class ThreadCheckedDriver:
    """The parts of `ConsensusDriver` the worker uses; every call notes its thread."""

    def __init__(self) -> None:
        self.trio_thread = threading.get_ident()
        self.foreign: list[str] = []  # what was done from another thread than the trio one
        self.certificates = WatchedCertificates(self)
        self.on_certified: list[Any] = []
        self.confirmed: list[Any] = []

    def note(self, what: str) -> None:
        if threading.get_ident() != self.trio_thread:
            self.foreign.append(what)

    def certify(self, cert: FakeCertificate) -> None:
        """What `ConsensusDriver._certified` does (on the trio thread)."""
        self.certificates[cert.version] = cert
        for callback in self.on_certified:
            callback(cert)

    def latest_certificate(self) -> FakeCertificate | None:
        self.note("latest_certificate")
        return self.certificates[max(self.certificates)] if self.certificates else None

    def set_confirmed_deposits(self, deposits: list[Any]) -> None:
        self.note("set_confirmed_deposits")
        self.confirmed = deposits

    def credited_deposits(self, first: int, last: int) -> list[Any]:
        self.note("credited_deposits")
        return []


@dataclass
class FakeNode:
    genesis: Any = GENESIS
    address: bytes = GENESIS.participants[0].address
    key: Any = None


@dataclass(frozen=True)
class Info:
    status: str
    disputing: bool


@dataclass(frozen=True)
class Settlement:
    version: int
    finalizes_at: int
    deposit_nonce: int = 0


class FakeChain:
    w3: Any = None
    chain_id = 31337

    def now(self) -> int:
        return 1_000


@dataclass
class FakeClient:
    """A channel with checkpoint `disputed` in dispute (window open), none finalised."""

    disputed: int = 1
    chain: FakeChain = field(default_factory=FakeChain)
    challenges: list[int] = field(default_factory=list)

    def channel(self, channel: bytes) -> Info:
        return Info("pending", True)

    def finalized(self, channel: bytes) -> Settlement:
        return Settlement(0, 0)

    def settlement(self, channel: bytes) -> Settlement:
        return Settlement(self.disputed, 2_000)

    def challenge(self, cert: FakeCertificate) -> None:
        self.challenges.append(cert.version)
        self.disputed = cert.version  # a challenge puts the newer checkpoint in dispute


class FakeWatcher:
    def __init__(self, *args: Any, fail: list[BaseException] | None = None, **kwargs: Any) -> None:
        self.polls = 0
        self.fail = list(fail or [])
        self.closed = False

    def poll(self) -> PollResult:
        self.polls += 1
        if self.fail:
            raise self.fail.pop(0)
        return PollResult()

    def deposits(self, genesis: Any) -> list[Any]:
        return []

    def close(self) -> None:
        self.closed = True


def make_worker(tmp_path: Path, driver: ThreadCheckedDriver) -> ChainWorker:
    return ChainWorker(FakeNode(), driver, ChainConfig(rpc="unused", poll_interval=0.0), tmp_path)


def test_the_worker_thread_never_reads_the_drivers_certificates(tmp_path: Path) -> None:
    """The watchtower challenges with the newest certificate, which it got over the queue (and,
    for those certified before the worker existed, read on the trio thread): the worker thread
    itself reads nothing of the driver. It used to call ``driver.latest_certificate()``, a
    ``max()`` over the dict the trio thread inserts into."""

    async def main() -> tuple[ThreadCheckedDriver, FakeClient]:
        driver = ThreadCheckedDriver()
        driver.certify(certificate(2))  # restored from the store before the worker starts
        worker = make_worker(tmp_path, driver)
        client = FakeClient(disputed=1)
        watcher = FakeWatcher()
        await trio.to_thread.run_sync(worker._poll, watcher, client)
        assert client.challenges == [2]
        driver.certify(certificate(3))
        driver.certify(certificate(5))
        driver.certify(certificate(4))
        await trio.to_thread.run_sync(worker._poll, watcher, client)
        assert client.challenges == [2, 5]
        return driver, client

    driver, _ = trio.run(main)
    assert driver.foreign == [], f"the worker thread touched the driver: {driver.foreign}"


def run_polls(worker: ChainWorker, client: FakeClient, polls: int) -> None:
    """Run the worker's loop (in a worker thread, from trio) for `polls` polls."""
    done = [0]
    original = worker._poll

    def poll_then_maybe_stop(watcher: Any, client: Any) -> None:
        try:
            original(watcher, client)
        finally:
            done[0] += 1
            if done[0] >= polls:
                worker._stop.set()

    worker._poll = poll_then_maybe_stop  # type: ignore[method-assign]
    worker._stop.clear()
    worker._loop(FakeChain(), client)  # type: ignore[arg-type]
    worker._poll = original  # type: ignore[method-assign]


def test_the_api_reads_a_copy_of_the_status_that_the_worker_never_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chain_worker_module, "ChainWatcher", FakeWatcher)

    async def main() -> None:
        driver = ThreadCheckedDriver()
        driver.certify(certificate(2))
        worker = make_worker(tmp_path, driver)
        client = FakeClient(disputed=1)
        before = worker.status
        await trio.to_thread.run_sync(run_polls, worker, client, 1)
        after = worker.status
        assert (before.challenges_sent, after.challenges_sent, after.status) == (0, 1, "pending")
        driver.certify(certificate(3))
        await trio.to_thread.run_sync(run_polls, worker, client, 1)
        assert after.challenges_sent == 1  # a copy: the second challenge did not change it
        assert worker.status.challenges_sent == 2
        assert client.challenges == [2, 3]

    trio.run(main)


def test_an_unexpected_error_in_a_poll_is_logged_and_the_next_poll_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in one poll (here the RuntimeError a dict changed during iteration gives) is logged
    with its traceback and shown in the status, and the loop goes on; it used to escape the
    worker thread and end the node."""
    watchers: list[FakeWatcher] = []

    def make_watcher(*args: Any, **kwargs: Any) -> FakeWatcher:
        watcher = FakeWatcher(fail=[RuntimeError("dictionary changed size during iteration")])
        watchers.append(watcher)
        return watcher

    monkeypatch.setattr(chain_worker_module, "ChainWatcher", make_watcher)
    errors: list[str] = []

    async def main() -> ChainWorker:
        driver = ThreadCheckedDriver()
        driver.certify(certificate(2))
        worker = make_worker(tmp_path, driver)
        client = FakeClient(disputed=1)
        original = worker._poll

        def poll_then_stop(watcher: Any, client: Any) -> None:
            errors.append(worker.status.error)
            original(watcher, client)
            if watcher.polls >= 3:
                worker._stop.set()

        worker._poll = poll_then_stop  # type: ignore[method-assign]
        with caplog.at_level(logging.ERROR, logger=chain_worker_module.__name__):
            await trio.to_thread.run_sync(worker._loop, FakeChain(), client)
        assert client.challenges == [2]  # the second poll did the work the first could not
        return worker

    worker = trio.run(main)
    assert watchers[0].polls == 3
    assert watchers[0].closed
    assert errors[1].startswith("unexpected: RuntimeError")  # what the API showed after the failed poll
    assert worker.status.error == ""  # cleared by the polls that worked
    failed = [r for r in caplog.records if "failed unexpectedly" in r.getMessage()]
    assert len(failed) == 1
    assert failed[0].exc_info is not None
