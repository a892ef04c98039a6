"""The history checker: a pure function from a run's history to one verdict per property.

A history is a list of JSON records (``history.jsonl``, one per line), each with a ``type``:

- ``run``: ``n``, ``nodes`` (``[{"index", "address", "honest"}]``), ``liveness_bound`` (s);
- ``fault``: ``t``, ``phase`` (``start`` or ``end``), ``fault`` (`schedule.Fault.to_json`);
- ``submit``: ``t`` (when the request was sent), ``node``, ``request_id``, ``outcome`` (``ok``: the
  node acknowledged it with an ``op_id`` and a ``status``; ``fail``: it refused, or could not be
  reached, so nothing was signed; ``info``: no answer in time, so it may or may not exist, as
  Jepsen's indeterminate operations), ``latency`` (s);
- ``status``: ``t``, ``node``, ``op_id``, ``status``: what polling that node said, recorded when it
  changed;
- ``final``: ``t``, ``node``, ``version``, ``certified``, ``state_hash``, ``payout_root``,
  ``statuses`` (op id: status, every acknowledged operation), ``evidence`` (the node's
  ``parley_evidence``), ``certificates`` (version: ``{"state_hash", "payout_root"}``), or ``error``
  if the node could not be read at the end.

Times are seconds since the clients started. The checks (each `Verdict.ok` is True, or False
with the first problems in ``detail``):

- ``acknowledged_not_lost``: every acknowledged operation is known to every honest node at the
  end: any status but ``unknown`` (``rejected:<reason>`` included: the operation is there, and
  every node says why replay gave it no effect; `findings` counts those);
- ``final_never_reverts``: at no node does an operation seen ``final`` (or ``settled``) later show
  another status;
- ``honest_converge``: the honest nodes end at one certified version with one state hash and one
  payout root;
- ``no_honest_equivocation``: no node holds evidence against an honest participant;
- ``certified_consistent``: every version certified at several nodes has the same state hash and
  payout root at each;
- ``liveness_after_heal``: some operation submitted after the last heal is ``final`` at every
  honest node within ``liveness_bound`` seconds of that heal (of the start, with no faults).

Nothing here reads a clock, a file or a socket: the unit tests hand it histories that break each
property in turn.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

FINAL = frozenset({"final", "settled"})
MAX_LISTED = 5


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail}


def _listed(problems: list[str], total: int | None = None) -> str:
    total = len(problems) if total is None else total
    shown = "; ".join(problems[:MAX_LISTED])
    return shown + (f"; … {total - MAX_LISTED} more" if total > MAX_LISTED else "")


@dataclass(frozen=True, slots=True)
class _History:
    honest: frozenset[int]
    addresses: dict[str, int]  # lower-case address: node
    bound: float
    heals: list[float]
    acked: dict[str, tuple[float, int]]  # op id: (submit time, node)
    observations: dict[tuple[int, str], list[tuple[float, str]]]  # (node, op): (t, status), in time order
    finals: dict[int, Mapping[str, Any]]


def _read(history: Iterable[Mapping[str, Any]]) -> _History:
    run: Mapping[str, Any] = {}
    heals: list[float] = []
    acked: dict[str, tuple[float, int]] = {}
    observations: dict[tuple[int, str], list[tuple[float, str]]] = defaultdict(list)
    finals: dict[int, Mapping[str, Any]] = {}
    for record in history:
        kind = record.get("type")
        if kind == "run":
            run = record
        elif kind == "fault" and record.get("phase") == "end":
            heals.append(float(record["t"]))
        elif kind == "submit" and record.get("outcome") == "ok":
            op_id = str(record["op_id"])
            acked.setdefault(op_id, (float(record["t"]), int(record["node"])))
            observations[(int(record["node"]), op_id)].append(
                (float(record["t"]) + float(record.get("latency", 0.0)), str(record["status"])))
        elif kind == "status":
            key = (int(record["node"]), str(record["op_id"]))
            observations[key].append((float(record["t"]), str(record["status"])))
        elif kind == "final":
            finals[int(record["node"])] = record
    for node, final in finals.items():
        for op_id, status in (final.get("statuses") or {}).items():
            observations[(node, op_id)].append((float(final.get("t", float("inf"))), str(status)))
    for seen in observations.values():
        seen.sort(key=lambda pair: pair[0])  # stable: equal times keep the order they were recorded in
    nodes = run.get("nodes") or [{"index": i, "honest": True} for i in range(int(run.get("n", len(finals))))]
    honest = frozenset(int(x["index"]) for x in nodes if x.get("honest", True))
    addresses = {str(x["address"]).lower(): int(x["index"]) for x in nodes if x.get("address")}
    return _History(honest, addresses, float(run.get("liveness_bound", 15.0)), heals, acked, dict(observations),
                    finals)


def acknowledged_not_lost(h: _History) -> Verdict:
    problems: list[str] = []
    missing = sorted(h.honest - h.finals.keys())
    problems += [f"node {node} has no final state" for node in missing]
    unreadable = sorted(node for node in h.honest & h.finals.keys() if h.finals[node].get("error"))
    problems += [f"node {node} could not be read at the end: {h.finals[node]['error']}" for node in unreadable]
    lost = 0
    for op_id, (t, origin) in sorted(h.acked.items(), key=lambda item: item[1]):
        for node in sorted(h.honest & h.finals.keys()):
            if node in unreadable:
                continue
            status = (h.finals[node].get("statuses") or {}).get(op_id)
            if status in (None, "unknown"):
                lost += 1
                problems.append(f"{op_id[:12]}… (acked by node {origin} at {t:.1f} s) is {status or 'unknown'} "
                                f"at node {node}")
    if problems:
        return Verdict(False, _listed(problems))
    return Verdict(True, f"{len(h.acked)} acknowledged operations known to all {len(h.honest)} honest nodes")


def final_never_reverts(h: _History) -> Verdict:
    problems: list[str] = []
    finals_seen = 0
    for (node, op_id), seen in sorted(h.observations.items()):
        final_at: float | None = None
        for t, status in seen:
            if status in FINAL:
                if final_at is None:
                    finals_seen += 1
                final_at = t if final_at is None else final_at
            elif final_at is not None:
                problems.append(f"{op_id[:12]}… at node {node}: final at {final_at:.1f} s, {status} at {t:.1f} s")
                break
    if problems:
        return Verdict(False, _listed(problems))
    return Verdict(True, f"{finals_seen} (node, operation) pairs seen final, none reverted")


def honest_converge(h: _History) -> Verdict:
    ends = {node: h.finals[node] for node in sorted(h.honest) if node in h.finals and not h.finals[node].get("error")}
    if len(ends) < len(h.honest):
        return Verdict(False, f"only {len(ends)} of {len(h.honest)} honest nodes could be read at the end")
    states = {node: (int(f["version"]), str(f["state_hash"]), str(f["payout_root"])) for node, f in ends.items()}
    distinct = set(states.values())
    if len(distinct) > 1:
        described = "; ".join(f"node {node}: version {v}, state {s[:12]}…, payout {p[:12]}…"
                              for node, (v, s, p) in states.items())
        return Verdict(False, f"honest nodes differ: {described}")
    if not distinct:
        return Verdict(True, "no honest nodes")
    version, state, payout = distinct.pop()
    return Verdict(True, f"{len(ends)} honest nodes at version {version}, state {state[:12]}…, payout {payout[:12]}…")


def no_honest_equivocation(h: _History) -> Verdict:
    problems: list[str] = []
    for node, final in sorted(h.finals.items()):
        for item in final.get("evidence") or []:
            offender = str(item.get("offender") or item.get("author") or "").lower()
            if offender in h.addresses and h.addresses[offender] in h.honest:
                problems.append(f"node {node} holds {item.get('kind', 'evidence')} against honest node "
                                f"{h.addresses[offender]}")
    if problems:
        return Verdict(False, _listed(problems))
    return Verdict(True, "no evidence against an honest node")


def certified_consistent(h: _History) -> Verdict:
    seen: dict[int, dict[tuple[str, str], list[int]]] = defaultdict(lambda: defaultdict(list))
    for node, final in sorted(h.finals.items()):
        for version, cert in (final.get("certificates") or {}).items():
            seen[int(version)][(str(cert["state_hash"]), str(cert["payout_root"]))].append(node)
    problems = [
        f"version {version}: " + " vs ".join(f"nodes {','.join(map(str, nodes))} state {s[:12]}…"
                                             for (s, _), nodes in values.items())
        for version, values in sorted(seen.items()) if len(values) > 1
    ]
    if problems:
        return Verdict(False, _listed(problems))
    shared = sum(1 for values in seen.values() if sum(map(len, values.values())) > 1)
    return Verdict(True, f"{len(seen)} versions certified, {shared} of them at several nodes, all identical")


def liveness_after_heal(h: _History) -> tuple[Verdict, float | None]:
    """The verdict, and the recovery time (s after the last heal) when there is one."""
    heal = max(h.heals, default=0.0)
    best: float | None = None
    for op_id, (t, _) in h.acked.items():
        if t < heal:
            continue
        times = []
        for node in h.honest:
            first = next((when for when, status in h.observations.get((node, op_id), []) if status in FINAL), None)
            if first is None:
                break
            times.append(first)
        else:
            if times:
                done = max(times) - heal
                best = done if best is None else min(best, done)
    since = "the last heal" if h.heals else "the start"
    if best is None:
        return Verdict(False, f"no operation submitted after {since} ({heal:.1f} s) became final at every "
                       "honest node"), None
    if best > h.bound:
        return Verdict(False, f"first operation final everywhere {best:.1f} s after {since}, over the bound of "
                       f"{h.bound:.0f} s"), best
    return Verdict(True, f"an operation submitted after {since} was final at every honest node {best:.1f} s "
                   f"after it (bound {h.bound:.0f} s)"), best


CHECKS = ("acknowledged_not_lost", "final_never_reverts", "honest_converge", "no_honest_equivocation",
          "certified_consistent", "liveness_after_heal")


def check(history: Iterable[Mapping[str, Any]]) -> dict[str, Verdict]:
    """Every property's verdict over `history` (the module docstring says what each one means)."""
    h = _read(history)
    liveness, _ = liveness_after_heal(h)
    return {
        "acknowledged_not_lost": acknowledged_not_lost(h),
        "final_never_reverts": final_never_reverts(h),
        "honest_converge": honest_converge(h),
        "no_honest_equivocation": no_honest_equivocation(h),
        "certified_consistent": certified_consistent(h),
        "liveness_after_heal": liveness,
    }


def recovery_time(history: Iterable[Mapping[str, Any]]) -> float | None:
    """Seconds from the last heal until an operation submitted after it was final everywhere."""
    return liveness_after_heal(_read(history))[1]


def fault_windows(history: Iterable[Mapping[str, Any]]) -> list[tuple[float, float, Mapping[str, Any]]]:
    """(start, end, fault) of each fault as it happened: the times of its start and end records
    (a restart ends when the node answers again, later than the schedule's end); a fault still
    open at the end of the history ends at its last record."""
    records = list(history)
    last = max((float(r["t"]) for r in records if "t" in r), default=0.0)
    windows: list[tuple[float, float, Mapping[str, Any]]] = []
    open_at: float | None = None
    for record in records:
        if record.get("type") == "fault":
            if record.get("phase") == "start":
                open_at = float(record["t"])
            elif open_at is not None:
                windows.append((open_at, float(record["t"]), record.get("fault") or {}))
                open_at = None
    if open_at is not None:
        windows.append((open_at, last, {}))
    return windows


def findings(history: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """What is no property's violation but worth a look: acknowledged operations that replay
    rejected in the end (by reason and by the node that acknowledged them, with how long after
    that node's last restart or resume they were submitted), as the first honest node's final
    statuses say."""
    records = list(history)
    h = _read(records)
    resumed: dict[int, list[float]] = defaultdict(list)
    for record in records:
        if record.get("type") == "fault" and record.get("phase") == "end":
            fault = record.get("fault") or {}
            for node in fault.get("nodes") or []:
                resumed[int(node)].append(float(record["t"]))
    reader = next((node for node in sorted(h.honest) if node in h.finals and not h.finals[node].get("error")), None)
    reasons: dict[str, int] = defaultdict(int)
    by_node: dict[int, int] = defaultdict(int)
    after: list[float] = []
    if reader is not None:
        statuses = h.finals[reader].get("statuses") or {}
        for op_id, (t, origin) in h.acked.items():
            status = str(statuses.get(op_id) or "")
            if status.startswith("rejected"):
                reasons[status.partition(":")[2] or "rejected"] += 1
                by_node[origin] += 1
                before = [x for x in resumed.get(origin, []) if x <= t]
                if before:
                    after.append(round(t - max(before), 1))
    return {
        "acknowledged_then_rejected": sum(reasons.values()),
        "rejected_reasons": dict(reasons),
        "rejected_by_origin": {str(k): v for k, v in sorted(by_node.items())},
        "rejected_seconds_after_origin_resumed": sorted(after),
    }
