"""The local demo: one channel, four replicas, four different delivery orders, one state.

It writes a real channel folder (genesis.toml with the ETH/USDC market, and encrypted
keystores), signs a seeded workload with the participants' keys (transfers, withdrawals, locks
and, for `ORDER_PERCENT` of the operations, orders on the market: `simulations.workload`), and
delivers the operations to each replica differently: in creation order, reversed (children
before parents, so everything waits in the pending buffer first), shuffled with duplicates, and
split into two partitions that are merged afterwards. The replicas must end with byte-identical
state hashes and payout roots, and the same fills (count and hash, `simulations.trading`). The
operations are also written as ops.cbor, so `parley replay` can check the result independently.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from channel.runtime import keystore
from channel.runtime.genesis_file import DEMO_ETH, DEMO_USDC, create_genesis_folder
from crdt.genesis import Genesis, Role
from crdt.graph import PendingBuffer
from crdt.ops import SignedOp, encode_ops
from crdt.replica import Replica
from crdt.units import format_e9
from simulations.trading import replica_fills_hash
from simulations.workload import Workload, order_mix

DEMO_PASSWORD = "parley-demo"  # throwaway keys in a temporary folder
ORDER_PERCENT = 30  # of the operations, orders (placements, cancels, cancel-alls)


def _orders(ops: list[SignedOp], seed: int) -> list[tuple[str, list[list[SignedOp]]]]:
    """Named delivery plans. A plan is a list of partitions, merged left to right."""
    rng = random.Random(seed)
    shuffled = ops + rng.sample(ops, len(ops) // 10)  # 10% delivered twice
    rng.shuffle(shuffled)
    left = [op for op in ops if rng.random() < 0.5]
    right = [op for op in ops if op not in set(left)]
    return [
        ("creation order", [ops]),
        ("reversed", [ops[::-1]]),
        ("shuffled + duplicates", [shuffled]),
        ("two partitions, merged", [left, right]),
    ]


def _deliver(genesis: Genesis, plan: list[list[SignedOp]], advance: Callable[[float], None]) -> Replica:
    partitions = []
    for part in plan:
        replica = Replica(genesis, pending=PendingBuffer.for_local_input(len(part)))
        for op in part:
            replica.receive(op)
            advance(1)
        partitions.append(replica)
    merged = partitions[0]
    for other in partitions[1:]:
        merged.merge(other)
    return merged


def run_demo(
    *, participants: int = 4, operations: int = 4000, seed: int = 0, folder: Path | None = None, quiet: bool = False
) -> dict[str, Any]:
    console = Console(quiet=quiet)
    with tempfile.TemporaryDirectory(prefix="parley-demo-") as tmp:
        root = folder or Path(tmp)
        console.print(f"[bold]Parley demo[/bold]: {participants} participants, {operations} operations, seed {seed}")
        roles = [Role.MARKET_MAKER] + [Role.TRADER] * (participants - 1)
        genesis, _ = create_genesis_folder(  # 1,000 USDC and 1,000 ETH each, and the ETH/USDC market
            root, participants, password=DEMO_PASSWORD, tokens=[DEMO_USDC, DEMO_ETH], initial=1_000 * 10**9,
            roles=roles, light_kdf=True, keys=keystore.seeded_keys(seed, participants),
        )
        keys = keystore.load_all(root / "keys", DEMO_PASSWORD)
        console.print(f"channel 0x{genesis.channel_id.hex()} in {root}")
        started = time.perf_counter()
        workload = Workload(genesis, [key.private_key for key in keys], seed=seed, mix=order_mix(ORDER_PERCENT))
        ops: list[SignedOp] = []
        with _progress(console) as progress:
            task = progress.add_task("signing", total=operations)
            for op in workload.ops(operations):
                ops.append(op)
                progress.advance(task)
        signed = time.perf_counter()
        (root / "ops.cbor").write_bytes(encode_ops(ops))
        rows = []
        with _progress(console) as progress:
            for name, plan in _orders(ops, seed):
                task = progress.add_task(name, total=sum(len(part) for part in plan))
                began = time.perf_counter()
                replica = _deliver(genesis, plan, partial(progress.advance, task))
                replica.ledger.check_conservation()
                delivered = sum(len(part) for part in plan)
                rows.append((name, replica, delivered / (time.perf_counter() - began)))
        roots = {(r.state_hash(), r.payout_root(), replica_fills_hash(r.ledger.fills)) for _, r, _ in rows}
        converged = len(roots) == 1
        table = Table(title="replicas")
        for column in ("delivery", "ops", "rejected", "re-applied", "ops/s", "fills", "fills hash", "state hash",
                       "payout root"):
            numeric = column in ("ops", "rejected", "re-applied", "ops/s", "fills")
            table.add_column(column, justify="right" if numeric else "left")
        for name, replica, rate in rows:
            table.add_row(
                name, str(len(replica.graph)), str(len(replica.rejected())), str(replica.replayed),
                f"{rate:,.0f}", str(replica.ledger.fill_count), replica_fills_hash(replica.ledger.fills)[:10],
                "0x" + replica.state_hash().hex()[:8], "0x" + replica.payout_root().hex()[:8],
            )
        console.print(table)
        first = rows[0][1]
        balances = Table(title="balances (held: by open orders)")
        parts = ("free", "held", "locked", "withdrawn")
        for column in ("participant", "token", *parts):
            balances.add_column(column, justify="right" if column in parts else "left")
        for participant in genesis.participants:
            for token in genesis.tokens:
                entry = first.balances()["0x" + participant.address.hex()][token.symbol]
                balances.add_row("0x" + participant.address.hex()[:8] + "…", token.symbol,
                                 *(format_e9(entry[part]) for part in parts))
        console.print(balances)
        state_hash, payout_root, fills = next(iter(roots)) if converged else (
            first.state_hash(), first.payout_root(), replica_fills_hash(first.ledger.fills))
        if converged:
            console.print(f"[green]converged[/green]: all {len(rows)} replicas agree, on the "
                          f"{first.ledger.fill_count} fills too")
        else:
            console.print("[red]NOT converged[/red]: replicas disagree")
        console.print(f"state hash  [bold]0x{state_hash.hex()}[/bold]\npayout root [bold]0x{payout_root.hex()}[/bold]\n"
                      f"fills hash  [bold]{fills}[/bold]")
        console.print(f"signing: {operations / (signed - started):,.0f} ops/s")
        if folder is not None:
            console.print(f"check it yourself: parley replay {root / 'ops.cbor'} --genesis {root / 'genesis.toml'}")
        return {
            "converged": converged,
            "participants": participants,
            "operations": operations,
            "state_hash": "0x" + state_hash.hex(),
            "payout_root": "0x" + payout_root.hex(),
            "fills": first.ledger.fill_count,
            "fills_hash": fills,
            "replicas": [
                {"delivery": name, "state_hash": "0x" + r.state_hash().hex(), "rejected": len(r.rejected()),
                 "fills": r.ledger.fill_count, "fills_hash": replica_fills_hash(r.ledger.fills),
                 "self_fills": sum(1 for fill in r.ledger.fills if fill.taker == fill.maker)}
                for name, r, _ in rows
            ],
        }


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=False,
    )


