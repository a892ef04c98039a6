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
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated

import trio
import typer

from channel.api.server import serve_api
from channel.runtime.config import NodeConfig
from channel.runtime.node import Behaviour, Node, run_node
from crdt.ops import SignedOp, sign_op

BEHAVIOURS = ("equivocate", "invalid")


@dataclass(frozen=True, slots=True)
class Misbehaving:
    equivocate: bool = False
    signs_rejected: bool = False

    def also_sign(self, node: Node, op: SignedOp) -> Sequence[SignedOp]:
        if not self.equivocate:
            return ()
        body = dict(op.body)
        body["amount"] = body.get("amount", 0) + 1
        return (sign_op(node.replica.ctx, node.key.private_key, op.seq, op.parents, op.kind, body),)


def behaviour(names: Sequence[str]) -> Behaviour:
    """The behaviour made of `names` (each one of `BEHAVIOURS`)."""
    unknown = sorted(set(names) - set(BEHAVIOURS))
    if unknown:
        raise ValueError(f"unknown behaviours {unknown}; known: {list(BEHAVIOURS)}")
    return Misbehaving(equivocate="equivocate" in names, signs_rejected="invalid" in names)


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
    try:
        chosen = behaviour(behaviours)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    node_config = NodeConfig.load(config)
    if node_config.password_file is None:
        raise typer.BadParameter("the configuration needs a password_file")
    password = node_config.password_file.read_text().rstrip("\n")
    trio.run(partial(run_node, node_config, password, serve_api, fresh_channel=fresh_channel, behaviour=chosen))


if __name__ == "__main__":
    app()
