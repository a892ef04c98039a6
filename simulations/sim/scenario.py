"""Scenario files: what one simulated run is, as TOML validated by pydantic.

A scenario names the participants, the Byzantine behaviours by participant, the network model
and its schedule (partitions that start and heal), the workload, the duration, the checkpoint
interval and the liveness bound. Unknown keys are refused everywhere (``extra="forbid"``), so a
typo is an error, never a silently ignored setting. Every value is validated here; the engine
takes a `Scenario` and never checks it again.

The scenario's identity (`Scenario.digest`) is the SHA-256 of its canonical JSON, so a result
names exactly what produced it.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ScenarioError(ValueError):
    """A scenario file that cannot be read or does not validate (the message says where)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FixedLatency(_Strict):
    kind: Literal["fixed"] = "fixed"
    ms: int = Field(ge=0)


class UniformLatency(_Strict):
    kind: Literal["uniform"] = "uniform"
    low_ms: int = Field(ge=0)
    high_ms: int = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> UniformLatency:
        if self.high_ms < self.low_ms:
            raise ValueError("high_ms must be at least low_ms")
        return self


class LognormalLatency(_Strict):
    """exp(N(ln median, sigma)) ms, cut at ``max_ms`` (a heavy tail, as on the internet)."""

    kind: Literal["lognormal"] = "lognormal"
    median_ms: int = Field(ge=1)
    sigma: float = Field(ge=0, le=3)
    max_ms: int = Field(default=10_000, ge=1)


Latency = Annotated[FixedLatency | UniformLatency | LognormalLatency, Field(discriminator="kind")]


class LinkModel(_Strict):
    """One direction of a link: latency, loss, duplication, and a bandwidth cap (0: none)."""

    latency: Latency = FixedLatency(ms=20)
    loss: float = Field(default=0.0, ge=0, lt=1)
    duplicate: float = Field(default=0.0, ge=0, lt=1)
    bandwidth_bytes_per_s: int = Field(default=0, ge=0)


class LinkOverride(LinkModel):
    """The model of the links from any of ``from`` to any of ``to`` (participant indices)."""

    sources: list[int] = Field(alias="from", min_length=1)
    targets: list[int] = Field(alias="to", min_length=1)


class Partition(_Strict):
    """From ``start_ms`` until ``end_ms`` (never, if absent): either ``groups`` (symmetric: no
    message crosses between two groups; participants in no group are cut off from all) or
    ``from``/``to`` (asymmetric: messages from ``from`` to ``to`` are lost, the other way works)."""

    start_ms: int = Field(ge=0)
    end_ms: int | None = Field(default=None, ge=0)
    groups: list[list[int]] | None = None
    sources: list[int] | None = Field(default=None, alias="from")
    targets: list[int] | None = Field(default=None, alias="to")

    @model_validator(mode="after")
    def _one_kind(self) -> Partition:
        symmetric = self.groups is not None
        asymmetric = self.sources is not None or self.targets is not None
        if symmetric == asymmetric:
            raise ValueError("a partition has either groups, or from and to")
        if asymmetric and (not self.sources or not self.targets):
            raise ValueError("an asymmetric partition needs both from and to")
        if self.end_ms is not None and self.end_ms <= self.start_ms:
            raise ValueError("end_ms must be after start_ms")
        return self

    def members(self) -> list[int]:
        return [i for group in self.groups or [] for i in group] + list(self.sources or []) + list(self.targets or [])


class NetworkSpec(LinkModel):
    links: list[LinkOverride] = Field(default_factory=list)
    partitions: list[Partition] = Field(default_factory=list)


class WorkloadSpec(_Strict):
    """Each honest-running node signs transfers: Poisson arrivals at ``rate_per_s`` per node,
    to another participant drawn uniformly, amounts uniform in [1, ``amount_max_e9``]."""

    rate_per_s: float = Field(default=5.0, ge=0, le=10_000)
    amount_max_e9: int = Field(default=1_000_000_000, ge=1)
    start_ms: int = Field(default=0, ge=0)
    stop_ms: int | None = Field(default=None, ge=0)


MarketName = Literal["spot", "perp"]


class TradingSpec(_Strict):
    """Order flow on the simulator's markets (`simulations.sim.trading`): the spot market
    ``ETH/USDC`` and the perpetual ``ETH-PERP`` on USDC, mid price ``mid_e9``. Every trading node
    (a participant not among ``oracles``) signs orders at Poisson times, ``orders_per_s`` per
    node: ``cancel_share`` of them cancel one of its open orders, the rest place limit orders,
    most resting near the mid and some crossing it. Each oracle (a participant with the oracle
    role, which cannot trade) posts the perp's price every ``oracle_interval_ms``, the mid moved
    by up to ``oracle_noise_ticks`` ticks. A honest node signs only an order its dry run takes,
    as `channel.runtime.node.Node.submit` does."""

    markets: list[MarketName] = Field(default_factory=lambda: list[MarketName](["spot"]), min_length=1)
    orders_per_s: float = Field(default=2.0, ge=0, le=10_000)
    cancel_share: float = Field(default=0.15, ge=0, le=1)
    mid_e9: int = Field(default=3000 * 10**9, ge=10**9, le=10**15)
    oracles: list[int] = Field(default_factory=list)
    oracle_interval_ms: int = Field(default=1000, ge=1)
    oracle_noise_ticks: int = Field(default=20, ge=0, le=10_000)

    @model_validator(mode="after")
    def _oracles(self) -> TradingSpec:
        if "perp" in self.markets and not self.oracles:
            raise ValueError("a perp market needs oracles (participants that post its price)")
        if len(set(self.oracles)) != len(self.oracles):
            raise ValueError("an oracle is listed twice")
        return self


class BehaviourSpec(_Strict):
    """A Byzantine behaviour (by name, see `simulations.sim.behaviours`) given to participants."""

    name: str
    participants: list[int] = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)


class FaultSpec(_Strict):
    """A crash of honest participants' nodes at ``at_ms``, restarted from their store at
    ``restart_ms`` (never, if absent). ``crash``: the process dies, everything it committed
    survives. ``power_cut``: what it committed without fsync since its last fsync is lost too
    (the node fsyncs only what it signs: its operations and votes, README "What is fsynced"; an
    fsync of the write-ahead log makes every earlier commit durable with it)."""

    kind: Literal["crash", "power_cut"] = "crash"
    participants: list[int] = Field(min_length=1)
    at_ms: int = Field(ge=0)
    restart_ms: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> FaultSpec:
        if self.restart_ms is not None and self.restart_ms <= self.at_ms:
            raise ValueError("restart_ms must be after at_ms")
        return self


class ConsensusSpec(_Strict):
    """The driver's settings (`channel.runtime.driver.DriverConfig`, in ms)."""

    interval_ms: int = Field(default=1000, ge=1)
    catchup_period_ms: int = Field(default=1000, ge=1)
    catchup_idle_ms: int = Field(default=10_000, ge=1)
    stuck_after_ms: int = Field(default=2000, ge=1)
    # the runtime driver publishes a `Send` (a decision proof for one peer) on the consensus
    # topic, so every node gets it, relayed; False (the default, cheaper): point to point only
    send_publishes: bool = False
    time_bound_ms: int = Field(default=10_000, ge=1)
    propose_base_ms: int = Field(default=1000, ge=1)
    propose_delta_ms: int = Field(default=500, ge=0)
    vote_base_ms: int = Field(default=500, ge=1)
    vote_delta_ms: int = Field(default=250, ge=0)


class GossipSpec(_Strict):
    """Gossip relaying: each node keeps a mesh of about ``mesh_degree`` peers (drawn from the
    seed, made symmetric, as gossipsub's GRAFTs make it) and forwards every valid message it
    sees for the first time to its mesh; the publisher sends to every peer (flood publishing).
    0 turns relaying off (publishers only)."""

    mesh_degree: int = Field(default=6, ge=0)


class SyncSpec(_Strict):
    interval_ms: int = Field(default=500, ge=1)
    gap_grace_ms: int = Field(default=50, ge=0)


class Scenario(_Strict):
    name: str
    description: str = ""
    participants: int = Field(ge=1, le=1000)
    duration_ms: int = Field(ge=1)
    settle_ms: int = Field(default=5000, ge=0)  # after the workload stops: time to converge
    liveness_bound_ms: int = Field(default=15_000, ge=1)
    clock_skew_ms: int = Field(default=0, ge=0)  # each node's clock is off by a draw in [-skew, skew]
    initial_balance_e9: int = Field(default=1_000_000 * 10**9, ge=0)
    workload: WorkloadSpec = WorkloadSpec()
    network: NetworkSpec = NetworkSpec()
    behaviours: list[BehaviourSpec] = Field(default_factory=list)
    faults: list[FaultSpec] = Field(default_factory=list)
    consensus: ConsensusSpec = ConsensusSpec()
    gossip: GossipSpec = GossipSpec()
    sync: SyncSpec = SyncSpec()
    trading: TradingSpec | None = None  # no markets, no orders when absent

    @model_validator(mode="after")
    def _indices(self) -> Scenario:
        n = self.participants
        named = [i for spec in self.behaviours for i in spec.participants]
        named += [i for link in self.network.links for i in (*link.sources, *link.targets)]
        named += [i for partition in self.network.partitions for i in partition.members()]
        named += [i for fault in self.faults for i in fault.participants]
        named += list(self.trading.oracles) if self.trading is not None else []
        bad = sorted({i for i in named if not 0 <= i < n})
        if bad:
            raise ValueError(f"participant indices {bad} are outside 0..{n - 1}")
        crashing = {i for fault in self.faults for i in fault.participants}
        if crashing & set(self.byzantine):
            raise ValueError("faults are for honest participants (a Byzantine one can already do anything)")
        if self.trading is not None and len(self.trading.oracles) >= n:
            raise ValueError("every participant is an oracle: nobody can trade")
        return self

    @property
    def workload_end_ms(self) -> int:
        """When the workload (transfers, orders, oracle prices) stops."""
        stop = self.workload.stop_ms
        return stop if stop is not None else self.duration_ms

    @property
    def end_ms(self) -> int:
        return self.duration_ms + self.settle_ms

    @property
    def byzantine(self) -> list[int]:
        return sorted({i for spec in self.behaviours for i in spec.participants})

    @property
    def digest(self) -> str:
        canonical = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def parse_scenario(data: dict[str, Any], where: str = "scenario") -> Scenario:
    """A validated scenario, or `ScenarioError` naming each bad field."""
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise ScenarioError(f"{where}: {problems}") from None


def load_scenario(path: Path) -> Scenario:
    """Read and validate a scenario TOML file."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    return parse_scenario(data, str(path))
