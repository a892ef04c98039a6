"""The emergency exit run by the node itself (``parley_exit``), with its progress for the API.

It runs the steps of ``parley exit`` (`settlement.exit.run_exit`: close or challenge, wait out
the dispute window, finalize, claim and refund) as a background task of the node, with the
node's own key and the certificates its consensus driver holds, so a user of the web page or
the API needs no files and no CLI.

- `NodeExit.start` runs on the trio thread and refuses at once, with `ExitRefused` and a
  reason: ``no_certificate`` (the node holds no certificate yet), ``already_exiting`` (an exit
  is running); the node refuses ``no_chain`` itself when it has no chain configured.
- The blocking web3 work runs in a worker thread (`trio.to_thread`); the certificates are read
  on the trio thread (`trio.from_thread.run_sync`), never from the worker thread: the newest,
  and the ones of the versions the chain holds in dispute or finalised (the claim needs the
  certificate whose payout root was finalised).
- Each attempt plans again from the chain (`run_exit` does), with the newest certificate at
  that moment. After a close, a later checkpoint can make the contract revert (the chain
  worker proposed it first: ``VersionNotNewer``), and the node's chain worker sends from the
  same account, so a transaction can lose a nonce race: such a failure is retried, at most
  `MAX_ATTEMPTS` times in all. What cannot get better by retrying (no gas, no payout leaf, no
  certificate of the finalised root) fails the exit at once; ``parley_exit`` may start it again.
- `NodeExit.status` is a JSON-ready copy of the progress (published under a lock by the worker
  thread): the phase (``idle``, ``starting``, ``proposing``, ``challenged``, ``waiting``,
  ``finalising``, ``claiming``, ``claimed``, ``failed``), the dispute window's numbers, what was
  claimed and refunded, the last events and the error of a failed exit.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from channel.runtime.service import ALREADY_EXITING, NO_CERTIFICATE, ExitRefused
from crdt.certificate import Certificate
from crdt.genesis import Genesis
from crdt.merkle import WITHDRAWN
from crdt.types import Address
from crdt.units import to_e9
from settlement.client import AdjudicatorClient
from settlement.errors import ContractReverted, InsufficientGas, NoCertificate, NotYourLeaf, SettlementError
from settlement.exit import ExitEvent, ExitResult, run_exit

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
MAX_EVENTS = 20  # the last events kept for the status
RETRY_DELAY = 1.0  # seconds between attempts
FATAL = (InsufficientGas, NoCertificate, NotYourLeaf)  # retrying cannot help
PHASES = {"close": "proposing", "reuse": "proposing", "challenge": "challenged", "wait": "waiting",
          "finalize": "finalising", "claim": "claiming", "refund": "claiming", "done": "claimed"}


class CertificateSource(Protocol):
    """What the exit needs of the consensus driver (on the trio thread only)."""

    @property
    def certificates(self) -> Mapping[int, Certificate]: ...

    def latest_certificate(self) -> Certificate | None: ...


class _Stopped(Exception):
    """The node is stopping: the worker thread leaves the exit where it is (it resumes from the chain)."""


@dataclass(slots=True)
class ExitProgress:
    phase: str = "idle"
    running: bool = False
    attempts: int = 0
    version: int = 0  # the certificate the attempt started from, then the one claimed with
    proposed: bool = False
    challenged: bool = False
    finalized: bool = False
    finalizes_at: int = 0  # chain time (seconds) the checkpoint in dispute is final at
    chain_now: int = 0
    window: int = 0
    claimed: list[dict[str, str]] = field(default_factory=list)
    already_claimed: list[dict[str, str]] = field(default_factory=list)
    refunded: list[int] = field(default_factory=list)
    message: str = ""
    error: str | None = None
    events: list[dict[str, str]] = field(default_factory=list)

    def json(self) -> dict[str, Any]:
        result = dataclasses.asdict(self)
        result["remaining"] = max(0, self.finalizes_at - self.chain_now) if self.finalizes_at else None
        return result


def _leaves(genesis: Genesis, leaves: Sequence[Any]) -> list[dict[str, str]]:
    """Payout leaves as JSON: ``amount`` in the token's own decimals (what the contract paid),
    ``amount_e9`` in the channel's e9 units."""
    tokens = {token.address: token for token in genesis.tokens}
    shown = []
    for leaf in leaves:
        token = tokens.get(leaf.token)
        shown.append({
            "token": token.symbol if token is not None else "0x" + leaf.token.hex(),
            "kind": "withdrawal" if leaf.kind == WITHDRAWN else "balance",
            "amount": str(leaf.amount),
            **({"amount_e9": str(to_e9(leaf.amount, token.decimals))} if token is not None else {}),
        })
    return shown


class NodeExit:
    """One node's emergency exit: `start` it from the API, `run` it as a task of the node."""

    def __init__(
        self,
        genesis: Genesis,
        account: Address,
        source: CertificateSource,
        connect: Callable[[], AdjudicatorClient],
        *,
        poll_interval: float = 2.0,
        sleep: Callable[[float], None] | None = None,
        retry_delay: float = RETRY_DELAY,
    ) -> None:
        """`connect` makes the adjudicator client (in the worker thread); `sleep` waits between
        polls of the dispute window (default: a wait that ends when the node stops)."""
        self.genesis = genesis
        self.account = account
        self.source = source
        self.connect = connect
        self.poll_interval = poll_interval
        self.retry_delay = retry_delay
        self._stop = threading.Event()
        self._sleep = sleep
        self._progress = ExitProgress()  # the worker thread's while running
        self._lock = threading.Lock()
        self._published = self._progress.json()
        self._send, self._receive = trio.open_memory_channel[None](1)
        self._ended = trio.Event()  # set when a started exit ends (claimed, failed or stopped)

    # -- the trio thread ---------------------------------------------------------------------------

    @property
    def status(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._published)

    def start(self) -> dict[str, Any]:
        """Start the exit (refused with `ExitRefused`); returns the status."""
        if self._progress.running:
            raise ExitRefused(ALREADY_EXITING, f"an exit is running already ({self._progress.phase})")
        newest = self.source.latest_certificate()
        if newest is None:
            raise ExitRefused(NO_CERTIFICATE, "this node holds no checkpoint certificate yet, so there is "
                                              "nothing to settle on-chain; wait for the first checkpoint")
        self._progress = ExitProgress(phase="starting", running=True, version=newest.version,
                                      message=f"starting from checkpoint v{newest.version}")
        self._publish()
        self._ended = trio.Event()
        self._send.send_nowait(None)
        return self.status

    async def wait_ended(self) -> dict[str, Any]:
        """Wait until the exit started last has ended; its status."""
        await self._ended.wait()
        return self.status

    def _certificates_for(self, versions: set[int]) -> list[Certificate]:
        held = self.source.certificates
        chosen = [held[v] for v in sorted(versions) if v in held]
        newest = self.source.latest_certificate()
        if newest is not None and newest.version not in versions:
            chosen.append(newest)
        return chosen

    async def run(self) -> None:
        """Serve `start`s until cancelled (the node's nursery runs it)."""
        try:
            async for _ in self._receive:
                # (trio-typing's stubs, pulled in by libp2p, predate abandon_on_cancel)
                await trio.to_thread.run_sync(self._attempts, abandon_on_cancel=True)  # type: ignore[call-arg]
                self._ended.set()
        finally:
            self._stop.set()

    # -- the worker thread ---------------------------------------------------------------------------

    def _publish(self) -> None:
        snapshot = self._progress.json()
        with self._lock:
            self._published = snapshot

    def _wait(self, seconds: float) -> None:
        if self._sleep is not None:
            self._sleep(seconds)
        elif self._stop.wait(seconds):
            raise _Stopped
        if self._stop.is_set():
            raise _Stopped

    def _report(self, event: ExitEvent) -> None:
        progress = self._progress
        progress.phase = PHASES.get(event.step, progress.phase)
        progress.message = event.message
        if event.step == "wait":
            progress.finalizes_at, progress.chain_now, progress.window = event.finalizes_at, event.now, event.window
        else:
            progress.events = [*progress.events, {"step": event.step, "message": event.message}][-MAX_EVENTS:]
        self._publish()

    def _attempts(self) -> None:
        progress = self._progress
        try:
            client = self.connect()
            for attempt in range(1, MAX_ATTEMPTS + 1):
                progress.attempts = attempt
                try:
                    result = self._attempt(client)
                except FATAL as exc:
                    self._fail(str(exc))
                    return
                except SettlementError as exc:
                    log.warning("exit: attempt %d of %d failed: %s", attempt, MAX_ATTEMPTS, exc)
                    progress.error = f"attempt {attempt}: {exc}"
                    self._publish()
                    if attempt == MAX_ATTEMPTS:
                        self._fail(f"gave up after {MAX_ATTEMPTS} attempts; the last failed with {exc}")
                        return
                    self._wait(self.retry_delay)
                    continue
                self._done(result)
                return
        except _Stopped:
            progress.running = False
            progress.message = "the node stopped during the exit; start it again to resume"
            self._publish()
        except SettlementError as exc:  # connecting
            self._fail(str(exc))
        except Exception as exc:  # a bug: the node goes on, the exit says so
            log.exception("exit: failed unexpectedly")
            self._fail(f"unexpected: {exc!r}")

    def _attempt(self, client: AdjudicatorClient) -> ExitResult:
        channel = self.genesis.channel_id
        info = client.channel(channel)
        versions = {client.finalized(channel).version}
        if info.status in ("pending", "closing"):
            versions.add(client.settlement(channel).version)
        certificates: list[Certificate] = trio.from_thread.run_sync(self._certificates_for, versions)
        if certificates:
            self._progress.version = max(c.version for c in certificates)
        try:
            return run_exit(client, self.genesis, certificates, self.account, report=self._report,
                            sleep=self._wait, poll_interval=self.poll_interval)
        except ContractReverted as reverted:
            if reverted.name == "VersionNotNewer":  # a newer checkpoint got there first: plan again
                log.info("exit: %s; planning again with the newest certificate", reverted)
            raise

    def _fail(self, error: str) -> None:
        progress = self._progress
        progress.phase, progress.running, progress.error = "failed", False, error
        log.error("exit failed: %s", error)
        self._publish()

    def _done(self, result: ExitResult) -> None:
        progress = self._progress
        progress.phase, progress.running, progress.error = "claimed", False, None
        progress.version = result.version
        progress.proposed, progress.challenged = progress.proposed or result.proposed, result.challenged
        progress.finalized = True
        progress.claimed = _leaves(self.genesis, result.claimed)
        progress.already_claimed = _leaves(self.genesis, result.already_claimed)
        progress.refunded = list(result.refunded)
        log.info("exit complete at v%d", result.version)
        self._publish()


def chain_client(rpc: str, private_key: bytes, genesis: Genesis) -> AdjudicatorClient:
    """The adjudicator client of the node's account on the chain at `rpc`."""
    from eth_account import Account

    from settlement.chain import RpcChain
    from settlement.client import Sender

    return AdjudicatorClient(Sender(RpcChain(rpc), Account.from_key(private_key)), "0x" + genesis.adjudicator.hex())
