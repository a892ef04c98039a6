"""The checks every run ends with, and the run's metrics.

A check never raises: a violation is a `Verdict` with ``ok = False`` and a detail that, with the
run's seed, reproduces it (``parley sim run SCENARIO --seed N``). ``ok = None`` means the check
does not apply to this run (say, liveness when f >= n/3, or when a partition never heals).

Only honest nodes are judged (every node of a participant without a behaviour):
- ``agreement``: no two honest nodes decided different values for one version;
- ``certificates``: no two different certified checkpoints (EIP-712 digests) for one version;
- ``replay``: every decided checkpoint's state hash and payout root are what the honest node's
  own replay of the cut gives, and every decided cut could be certified;
- ``convergence``: honest replicas holding the same operations and the same cuts have the
  same state hash and payout root;
- ``eventual_convergence``: after the last partition healed and the settle time, every honest
  replica holds the same operations;
- ``conservation``: `Ledger.check_conservation` on every honest replica (every token's
  buckets, fee and insurance pools included, sum to its deposits; holds match the open orders),
  and each token's deposits are its genesis supply;
- ``evidence``: every equivocation an honest node holds both operations of is in its
  evidence, and no honest participant is ever accused (of an operation or a consensus
  equivocation);
- ``trading`` (runs with markets): on every honest replica no book is crossed at rest (best
  bid below best ask), no fill is between an account and itself, and every fill is at the
  maker's price and within the taker's limit (TRADING.md invariants 2, 4 and 6); fills are part
  of what ``convergence`` compares;
- ``oracle`` (runs with a perp market): every perp price an honest node's checkpoint fixed is
  within the range of the prices the honest oracles posted (the median of 2f + 1 posts);
- ``liveness`` (f < n/3 only, counting nodes crashed for good as faulty): every running honest
  node decides a checkpoint within ``liveness_bound_ms`` after the network last healed and the
  last crashed node restarted.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from crdt.errors import InternalError
from crdt.replica import Replica

if TYPE_CHECKING:
    from simulations.sim.engine import Engine, SimNode


@dataclass(frozen=True, slots=True)
class Verdict:
    name: str
    ok: bool | None
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail}


def _agreement(engine: Engine) -> Verdict:
    by_version: dict[int, set[bytes]] = {}
    honest = {node.index for node in engine.honest}
    for decision in engine.record.decisions:
        if decision.node in honest:
            by_version.setdefault(decision.height, set()).add(decision.value_id)
    split = sorted(version for version, values in by_version.items() if len(values) > 1)
    if split:
        return Verdict("agreement", False, f"versions with two decided values: {split}")
    return Verdict("agreement", True, f"{len(by_version)} versions decided")


def _certificates(engine: Engine) -> Verdict:
    by_version: dict[int, set[bytes]] = {}
    for _, version, digest in engine.record.certified:
        by_version.setdefault(version, set()).add(digest)
    split = sorted(version for version, digests in by_version.items() if len(digests) > 1)
    if split:
        return Verdict("certificates", False, f"versions with two certified checkpoints: {split}")
    return Verdict("certificates", True, f"{len(by_version)} versions certified")


def _replay(engine: Engine) -> Verdict:
    record = engine.record
    problems = [f"n{node} v{version}: {which} differs from replay" for node, version, which in record.root_mismatches]
    problems += [f"n{node} v{version}: cannot certify: {why}" for node, version, why in record.certify_failures]
    if problems:
        return Verdict("replay", False, f"{len(problems)} problems, first: {problems[0]}")
    return Verdict("replay", True)


def _ops_digest(node: SimNode) -> str:
    return hashlib.sha256(b"".join(sorted(node.replica.graph.ops))).hexdigest()


def _cuts_digest(node: SimNode) -> str:
    parts = [b"%d:%d:" % (cut.version, cut.time) + b"".join(cut.heads) for cut in node.replica.cuts]
    return hashlib.sha256(b"|".join(parts)).hexdigest()


def _fills_digest(node: SimNode) -> str:
    return hashlib.sha256(repr(node.replica.fills()).encode()).hexdigest()


def _convergence(engine: Engine) -> Verdict:
    groups: dict[tuple[str, str], set[tuple[bytes, bytes, str]]] = {}
    for node in engine.honest:
        key = (_ops_digest(node), _cuts_digest(node))
        groups.setdefault(key, set()).add((node.replica.state_hash(), node.replica.payout_root(), _fills_digest(node)))
    bad = sum(1 for roots in groups.values() if len(roots) > 1)
    if bad:
        return Verdict("convergence", False, f"{bad} groups of replicas with the same operations and cuts disagree")
    return Verdict("convergence", True, f"{len(groups)} distinct (operations, cuts) states")


def _eventual_convergence(engine: Engine) -> Verdict:
    heal = engine.network.last_heal_ms()
    scenario = engine.scenario
    if heal < 0 or scenario.settle_ms == 0 or heal > scenario.duration_ms:
        return Verdict("eventual_convergence", None, "the network does not heal before the workload stops")
    running = [node for node in engine.honest if not node.down]
    if not running:
        return Verdict("eventual_convergence", None, "no honest node is running at the end")
    digests = Counter(_ops_digest(node) for node in running)
    if len(digests) > 1:
        sizes = sorted({len(node.replica.graph) for node in running})
        return Verdict("eventual_convergence", False, f"{len(digests)} different operation sets, sizes {sizes}")
    return Verdict("eventual_convergence", True, f"{len(running[0].replica.graph)} operations everywhere")


def conservation_problem(replica: Replica, supply: int) -> str | None:
    """What breaks conservation in `replica` (None: nothing): `Ledger.check_conservation` (every
    token's buckets, the fee and insurance pools included, sum to its deposits; holds match the
    open orders), and each token's deposits are `supply`. The node mode checks whole nodes with
    it too."""
    ledger = replica.ledger
    try:
        ledger.check_conservation()
    except InternalError as exc:
        return str(exc)
    wrong = {t.symbol: ledger.deposits.get(t.symbol, 0) for t in replica.genesis.tokens
             if ledger.deposits.get(t.symbol, 0) != supply}
    return f"deposits {wrong} != supply {supply}" if wrong else None


def _conservation(engine: Engine) -> Verdict:
    supply = engine.scenario.initial_balance_e9 * engine.scenario.participants
    for node in engine.honest:
        problem = conservation_problem(node.replica, supply)
        if problem is not None:
            return Verdict("conservation", False, f"n{node.index}: {problem}")
    return Verdict("conservation", True)


def trading_problem(replica: Replica) -> str | None:
    """What breaks TRADING.md's invariants 2, 4 or 6 in `replica` (None: nothing): a book crossed
    at rest, a fill between an account and itself, off the maker's price or beyond the taker's
    limit. The node mode checks whole nodes with it too."""
    for market in replica.genesis.markets:
        book = replica.ledger.book(market.symbol)
        bid, ask = book.best_bid(), book.best_ask()
        if bid is not None and ask is not None and bid.price >= ask.price:
            return f"{market.symbol} crossed at rest: {bid.price} >= {ask.price}"
    for fill in replica.fills():
        where = f"fill 0x{fill.fill_id.hex()[:16]}"
        if fill.taker == fill.maker:
            return f"{where} is between 0x{fill.taker.hex()} and itself"
        maker, taker = replica.graph.ops[fill.maker_order].body, replica.graph.ops[fill.taker_order].body
        if fill.price != maker["price"]:
            return f"{where} at {fill.price}, not the maker's {maker['price']}"
        if (fill.price > taker["price"]) if taker["side"] == "buy" else (fill.price < taker["price"]):
            return f"{where} at {fill.price}, beyond the taker's limit {taker['price']}"
    return None


def _trading(engine: Engine) -> Verdict:
    if not engine.genesis.markets:
        return Verdict("trading", None, "no markets")
    for node in engine.honest:
        problem = trading_problem(node.replica)
        if problem is not None:
            return Verdict("trading", False, f"n{node.index}: {problem}")
    fills = len(engine.honest[0].replica.fills()) if engine.honest else 0
    return Verdict("trading", True, f"{fills} fills, none against itself, off the maker's price or the taker's limit")


def _oracle(engine: Engine) -> Verdict:
    posts = engine.record.oracle_posts
    marks = engine.record.marks
    if not posts:
        return Verdict("oracle", None, "no honest oracle posted a price")
    low, high = min(posts), max(posts)
    outside = [(node, version, price) for node, version, price in marks if not low <= price <= high]
    if outside:
        node, version, price = outside[0]
        return Verdict("oracle", False, f"n{node} v{version} fixed {price}, outside the honest posts [{low}, {high}]")
    return Verdict("oracle", True, f"{len(marks)} prices fixed, all within the honest posts [{low}, {high}]")


def _evidence(engine: Engine) -> Verdict:
    honest_addresses = {node.address for node in engine.honest}
    for node in engine.honest:
        evidence = node.replica.graph.evidence
        missing = [key for key in node.equivocations_seen if key not in evidence]
        if missing:
            author, seq = missing[0]
            detail = f"n{node.index} holds both sides of 0x{author.hex()} seq {seq}, and no evidence"
            return Verdict("evidence", False, detail)
        accused = sorted({author for author, _ in evidence} & honest_addresses)
        if accused:
            detail = f"n{node.index} holds operation evidence against honest 0x{accused[0].hex()}"
            return Verdict("evidence", False, detail)
    false = [(n, kind) for n, kind, offender in engine.record.consensus_evidence if offender in honest_addresses]
    if false:
        detail = f"{len(false)} consensus accusations of honest participants, first {false[0]}"
        return Verdict("evidence", False, detail)
    seen = sum(len(node.equivocations_seen) for node in engine.honest)
    return Verdict("evidence", True, f"{seen} operation equivocations seen, all with evidence")


def _liveness(engine: Engine) -> Verdict:
    scenario = engine.scenario
    running = [node for node in engine.honest if not node.down]
    crashed = {node.participant for node in engine.honest if node.down}
    f, n = len(scenario.byzantine) + len(crashed), scenario.participants
    if 3 * f >= n:
        return Verdict("liveness", None, f"f = {f} (Byzantine or crashed for good) is not below n/3 (n = {n})")
    restarts = [fault.restart_ms for fault in scenario.faults if fault.restart_ms is not None]
    heal = max(engine.network.last_heal_ms(), scenario.workload.start_ms, *restarts)
    if engine.network.last_heal_ms() < 0:
        return Verdict("liveness", None, "a partition never heals")
    bound = scenario.liveness_bound_ms
    if heal + bound > scenario.duration_ms:
        return Verdict("liveness", None, f"the workload stops before healing + {bound} ms")
    decided_after: dict[int, int] = {}
    for decision in engine.record.decisions:
        if decision.time > heal and decision.node not in decided_after:
            decided_after[decision.node] = decision.time
    late = [node.index for node in running if decided_after.get(node.index, 1 << 62) > heal + bound]
    if late:
        return Verdict("liveness", False, f"honest nodes {late} decided nothing within {bound} ms after {heal} ms")
    worst = max(decided_after[node.index] for node in running) - heal
    return Verdict("liveness", True, f"every honest node decided within {worst} ms after {heal} ms")


def recovery_after_heal_ms(engine: Engine) -> int | None:
    """After the last partition healed (or crashed node restarted): how long until every running
    honest node had decided a checkpoint (None without a heal, or if one never did)."""
    restarts = [fault.restart_ms for fault in engine.scenario.faults if fault.restart_ms is not None]
    heal = max([engine.network.last_heal_ms(), *restarts])
    if heal <= 0:
        return None
    first: dict[int, int] = {}
    for decision in engine.record.decisions:
        if decision.time > heal:
            first.setdefault(decision.node, decision.time)
    running = [node.index for node in engine.honest if not node.down]
    if not running or any(index not in first for index in running):
        return None
    return max(first[index] for index in running) - heal


CHECKS = (
    _agreement, _certificates, _replay, _convergence, _eventual_convergence, _conservation, _evidence, _trading,
    _oracle, _liveness,
)


def run_checks(engine: Engine) -> list[Verdict]:
    """Every check, in a fixed order."""
    return [check(engine) for check in CHECKS]


def percentile(values: list[int], fraction: float) -> int | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-int(fraction * 1000) * len(ordered) // 1000))
    return ordered[min(rank, len(ordered)) - 1]


def metrics(engine: Engine) -> dict[str, Any]:
    """Finality, throughput and traffic of the run (integers and exact ratios only, so the
    results file is byte-identical wherever the run is repeated)."""
    record, scenario = engine.record, engine.scenario
    seconds = max(1, scenario.duration_ms) / 1000
    total_messages = sum(record.messages.values())
    total_bytes = sum(record.bytes.values())
    signed = max(1, record.signed)
    reference = engine.honest[0].replica if engine.honest else None
    replay_rejects = Counter(str(reason) for _, reason in reference.rejected()) if reference is not None else Counter()
    versions = [node.replica.version for node in engine.honest]
    honest = {node.index for node in engine.honest}
    return {
        "finality_ms": {
            "p50": percentile(record.finality_ms, 0.5), "p99": percentile(record.finality_ms, 0.99),
            "max": max(record.finality_ms, default=None), "final": len(record.finality_ms),
            "not_final": record.signed_honest - len(record.finality_ms),
        },
        "propagation_ms": {
            "p50": percentile(record.propagation_ms, 0.5), "p99": percentile(record.propagation_ms, 0.99),
            "everywhere": len(record.propagation_ms),
        },
        "ops_signed": record.signed,
        "ops_signed_honest": record.signed_honest,
        "ops_duplicates_received": record.duplicates,
        "ops_per_s": round(record.signed / seconds, 3),
        "final_ops_per_s": round(len(record.finality_ms) / seconds, 3),
        "msgs_per_op": round(total_messages / signed, 3),
        "bytes_per_op": round(total_bytes / signed, 1),
        "messages": dict(sorted(record.messages.items())),
        "bytes": dict(sorted(record.bytes.items())),
        "network": engine.network.stats.as_dict(),
        "rejects": {"replay": dict(sorted(replay_rejects.items())), "inputs": dict(sorted(record.rejects.items()))},
        "versions": {"min": min(versions, default=0), "max": max(versions, default=0)},
        "evidence": {
            "operation": sum(len(node.replica.graph.evidence) for node in engine.honest),
            "consensus": dict(sorted(Counter(kind for _, kind, _ in record.consensus_evidence).items())),
        },
        "decision_sends": record.sends,
        "recovery_after_heal_ms": recovery_after_heal_ms(engine),
        "later_round_decisions": sum(1 for d in record.decisions if d.round > 0 and d.node in honest),
        "pending_max": max((len(node.replica.graph.pending) for node in engine.honest), default=0),
        "events": record.events_processed,
        "trading": _trading_metrics(engine),
    }


def _trading_metrics(engine: Engine) -> dict[str, Any] | None:
    """What the order flow and the trading behaviours came to, at the first honest replica."""
    if not engine.genesis.markets or not engine.honest:
        return None
    record, replica = engine.record, engine.honest[0].replica
    position = {op.op_id: i for i, op in enumerate(replica.applied_order())}
    ahead = sum(1 for seen, runner in record.front_runs
                if seen in position and runner in position and position[runner] < position[seen])
    closed = Counter(why for why, _ in replica.ledger.closed.values())
    return {
        "orders_signed": record.orders_signed, "orders_refused_by_dry_run": record.orders_refused,
        "fills": len(replica.fills()), "open_orders": len(replica.ledger.orders),
        "closed": dict(sorted(closed.items())), "forged": dict(sorted(record.forged.items())),
        "front_runs": {"signed": len(record.front_runs), "sorted_ahead": ahead},
        "oracle_posts_honest": len(record.oracle_posts), "prices_fixed": len(record.marks),
    }
