"""Byzantine behaviours of a node, for demos and simulations, and the process that runs one.

A production node (``parley node run``) is always honest: nothing in its configuration selects a
behaviour. A Byzantine node is the same `channel.runtime.node.Node` given one of these objects,
in a process started as::

    python -m simulations.byzantine --config node.toml --behaviour equivocate --behaviour invalid

- ``equivocate``: sign a second operation with the same seq and parents as each of our own
  (an amount one base unit larger), and gossip both. Honest replicas keep the first they see
  per (author, seq) in replay order and reject the rest, and anyone can turn the pair into a
  slashing proof.
- ``invalid``: sign and gossip operations that replay gives no effect (an overdraft), instead of
  refusing them as an honest node does.
- ``unfunded``: after each order of its own, sign an order of the same market it cannot fund
  (the market's largest quantity, at the same price), which the node's dry run would refuse.
  Replay rejects it with ``insufficient_balance`` on every replica.
- ``self_trade``: after each order of its own that rests, sign an IOC of the other side at the
  same price and quantity, which meets its own resting order. Replay removes the resting order
  (``self_trade``) and never fills an account against itself.

The orders of ``unfunded`` and ``self_trade`` are signed here directly, with the next seqs, so
they bypass the node's dry run. Each one is appended to the journal (``byzantine.jsonl`` in the
node's data directory), a JSON object per line: ``fault``, ``op_id`` and, for a self-trade,
``resting``: the order it crosses and that order's equivocating twins, of which replay keeps
one. A demo asks every node what replay made of them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import trio
import typer

from channel.api.server import serve_api
from channel.runtime.config import NodeConfig
from channel.runtime.node import Behaviour, Node, run_node
from crdt.ledger import Reason
from crdt.markets.book import BUY, GTC, IOC, LIMIT, SELL
from crdt.ops import SignedOp, sign_op
from crdt.types import OpId

BEHAVIOURS = ("equivocate", "invalid", "unfunded", "self_trade")
JOURNAL = "byzantine.jsonl"
UNFUNDED, SELF_TRADE = "unfunded", "self_trade"  # the journal's faults


@dataclass(frozen=True, slots=True)
class Misbehaving:
    equivocate: bool = False
    signs_rejected: bool = False
    unfunded: bool = False
    self_trade: bool = False
    journal: Path | None = None

    def also_sign(self, node: Node, op: SignedOp) -> Sequence[SignedOp]:
        twins = [_twin(node, op)] if self.equivocate else []
        if op.kind != "order.place":
            return twins
        forged = _Forger(node)
        if self.unfunded:
            forged.unfunded(op)
        if self.self_trade:
            forged.self_trade(op, [op.op_id] + [twin.op_id for twin in twins])
        self._record(forged.faults)
        return twins + [signed for _, signed, _ in forged.faults]

    def _record(self, faults: list[tuple[str, SignedOp, list[OpId]]]) -> None:
        if self.journal is None or not faults:
            return
        with self.journal.open("a") as journal:
            for fault, signed, resting in faults:
                entry: dict[str, Any] = {"fault": fault, "op_id": "0x" + signed.op_id.hex()}
                if resting:
                    entry["resting"] = ["0x" + order.hex() for order in resting]
                journal.write(json.dumps(entry) + "\n")


def _twin(node: Node, op: SignedOp) -> SignedOp:
    """A second operation with `op`'s seq and parents: an amount one base unit larger, or the
    same body at another timestamp (an order's twin does what the order does)."""
    body, ts = dict(op.body), op.ts
    if "amount" in body:
        body["amount"] += 1
    else:
        ts += 1
    return sign_op(node.replica.ctx, node.key.private_key, op.seq, op.parents, op.kind, body, ts=ts)


class _Forger:
    """Orders signed after one of our own, with the next seqs, each naming the previous one as
    its parent (the first names the node's heads, our own order among them)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.faults: list[tuple[str, SignedOp, list[OpId]]] = []

    def _sign(self, body: Mapping[str, Any]) -> SignedOp:
        node = self.node
        if self.faults:
            seq, parents = self.faults[-1][1].seq + 1, [self.faults[-1][1].op_id]
        else:
            seq, parents = node.next_seq(), node.parents()
        return sign_op(node.replica.ctx, node.key.private_key, seq, parents, "order.place", dict(body))

    def unfunded(self, op: SignedOp) -> None:
        """A buy of the market's largest quantity at the order's price, if that is more than
        we hold (the dry run says insufficient_balance)."""
        market = self.node.genesis.market(op.body["market"])
        if market is None:
            return
        forged = self._sign({**op.body, "side": BUY, "type": LIMIT, "tif": GTC, "qty": market.max_qty})
        if self.node.replica.dry_run(forged) == Reason.INSUFFICIENT_BALANCE:
            self.faults.append((UNFUNDED, forged, []))

    def self_trade(self, op: SignedOp, resting_ids: list[OpId]) -> None:
        """If our order rests, an IOC of the other side at its price and quantity (if we can
        fund it: else it would be rejected, not a self-trade). `resting_ids` are the order and
        its equivocating twins: replay keeps one of them."""
        resting = self.node.replica.ledger.order(op.op_id)
        if resting is None:
            return
        side = SELL if resting.side == BUY else BUY
        forged = self._sign({**op.body, "side": side, "type": LIMIT, "tif": IOC, "qty": resting.remaining})
        if self.node.replica.dry_run(forged) is None:
            self.faults.append((SELF_TRADE, forged, resting_ids))


def behaviour(names: Sequence[str], journal: Path | None = None) -> Behaviour:
    """The behaviour made of `names` (each one of `BEHAVIOURS`); the forged orders are listed
    in `journal` when given."""
    unknown = sorted(set(names) - set(BEHAVIOURS))
    if unknown:
        raise ValueError(f"unknown behaviours {unknown}; known: {list(BEHAVIOURS)}")
    return Misbehaving(
        equivocate="equivocate" in names, signs_rejected="invalid" in names,
        unfunded=UNFUNDED in names, self_trade=SELF_TRADE in names, journal=journal,
    )


def read_journal(data_dir: Path) -> list[dict[str, str]]:
    """The forged orders a Byzantine node listed in its data directory (none if no journal)."""
    path = data_dir / JOURNAL
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def main(
    config: Annotated[Path, typer.Option(help="The node's node.toml.")],
    behaviours: Annotated[list[str], typer.Option("--behaviour", help=f"One of {', '.join(BEHAVIOURS)}; repeatable.")],
    fresh_channel: Annotated[bool, typer.Option("--fresh-channel")] = False,
    log_level: Annotated[str, typer.Option()] = "info",
) -> None:
    """Run a Byzantine node (as ``parley node run`` runs an honest one), with the password in
    the configuration's password_file, as the local-cluster tooling writes it."""
    node_config = NodeConfig.load(config)
    try:
        chosen = behaviour(behaviours, journal=node_config.data_dir / JOURNAL)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if node_config.password_file is None:
        raise typer.BadParameter("the configuration needs a password_file")
    password = node_config.password_file.read_text().rstrip("\n")
    trio.run(partial(run_node, node_config, password, serve_api, fresh_channel=fresh_channel, behaviour=chosen))


if __name__ == "__main__":
    app()
