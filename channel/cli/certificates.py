"""`parley checkpoints` and `parley certificate`: the certificates a node wrote to its data
directory (``certificates/v<N>.cbor``, `channel.runtime.store.Store.put_certificate`), read from
the files alone, so they work when the node and all its peers are gone, as `parley exit` does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from channel.cli.console import console, user_errors
from channel.errors import UserError
from channel.runtime.genesis_file import load_genesis
from crdt.certificate import Certificate
from crdt.errors import InvalidInput
from crdt.genesis import Genesis
from crdt.units import format_e9, to_e9

CERTIFICATES_DIR = "certificates"  # channel.runtime.store's, without importing the store (start-up time)

NodeDir = Annotated[Path, typer.Option("--node", envvar="PARLEY_NODE", help="The node's data directory.")]
GenesisOption = Annotated[
    Path | None, typer.Option("--genesis", help="The channel's genesis.toml: check each signature and root against it.")
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def read_certificates(data_dir: Path) -> dict[int, Certificate]:
    """The certificates in `data_dir`'s folder, by version; a file that does not decode is a
    `UserError` naming it."""
    folder = data_dir / CERTIFICATES_DIR
    if not folder.is_dir():
        raise UserError(f"no certificate files in {folder} (a node writes one per checkpoint it certifies)")
    found: dict[int, Certificate] = {}
    for file in sorted(folder.glob("v*.cbor")):
        try:
            certificate = Certificate.decode(file.read_bytes())
        except (OSError, InvalidInput) as exc:
            raise UserError(f"cannot read the certificate {file}: {exc}") from exc
        if file.name != f"v{certificate.version}.cbor":
            raise UserError(f"{file} holds the certificate of version {certificate.version}")
        found[certificate.version] = certificate
    if not found:
        raise UserError(f"no certificate files in {folder}")
    return found


def checked(certificate: Certificate, genesis: Genesis | None) -> bool | None:
    """None without a genesis; otherwise whether the certificate verifies (an error names why)."""
    if genesis is None:
        return None
    try:
        certificate.verify(genesis)
    except InvalidInput as exc:
        raise UserError(f"the certificate of version {certificate.version} fails its checks: {exc}") from exc
    return True


def summary(certificate: Certificate, genesis: Genesis | None) -> dict[str, Any]:
    checkpoint = certificate.checkpoint
    return {
        "version": checkpoint.version,
        "time": checkpoint.time,
        "payout_root": "0x" + checkpoint.payout_root.hex(),
        "state_hash": "0x" + checkpoint.state_hash.hex(),
        "totals": [str(total) for total in checkpoint.totals],
        "withdrawn": [str(amount) for amount in checkpoint.withdrawn],
        "deposit_nonce": checkpoint.deposit_nonce,
        "signatures": len(certificate.signatures),
        "leaves": len(certificate.leaves),
        "verified": checked(certificate, genesis),
    }


def register(app: typer.Typer) -> None:
    @app.command()
    @user_errors
    def checkpoints(node: NodeDir = Path("data"), genesis: GenesisOption = None, as_json: JsonFlag = False) -> None:
        """The certified checkpoints whose certificates the node wrote, oldest first."""
        parsed = load_genesis(genesis) if genesis is not None else None
        rows = [summary(c, parsed) for _, c in sorted(read_certificates(node).items())]
        if as_json:
            print(json.dumps(rows, indent=2))
            return
        table = Table(title=f"certificates in {node / CERTIFICATES_DIR}")
        for column in ("version", "time (ms)", "payout root", "signatures", "leaves", "verified"):
            table.add_column(column, justify="right" if column in ("version", "signatures", "leaves") else "left")
        for row in rows:
            verified = {None: "-", True: "yes"}[row["verified"]]
            table.add_row(str(row["version"]), str(row["time"]), row["payout_root"][:18] + "…",
                          str(row["signatures"]), str(row["leaves"]), verified)
        console.print(table)

    @app.command()
    @user_errors
    def certificate(
        node: NodeDir = Path("data"),
        version: Annotated[int | None, typer.Option(help="The checkpoint version (default: the newest).")] = None,
        out: Annotated[Path | None, typer.Option(help="Copy the certificate file (CBOR) there.")] = None,
        genesis: GenesisOption = None,
        as_json: JsonFlag = False,
    ) -> None:
        """One certificate: its checkpoint and payout leaves (what `parley exit` proves), or its
        file copied with --out."""
        found = read_certificates(node)
        chosen = max(found) if version is None else version
        if chosen not in found:
            raise UserError(f"no certificate of version {chosen} in {node / CERTIFICATES_DIR} "
                            f"(it has {min(found)}..{max(found)})")
        cert = found[chosen]
        parsed = load_genesis(genesis) if genesis is not None else None
        report = summary(cert, parsed)
        if out is not None:
            try:
                out.write_bytes((node / CERTIFICATES_DIR / f"v{chosen}.cbor").read_bytes())
            except OSError as exc:
                raise UserError(f"cannot write {out}: {exc}") from exc
        tokens = {t.address: t for t in parsed.tokens} if parsed is not None else {}
        report["payouts"] = [
            {"account": "0x" + leaf.account.hex(), "token": tokens[leaf.token].symbol if leaf.token in tokens
             else "0x" + leaf.token.hex(), "kind": leaf.kind, "amount": str(leaf.amount)}
            for leaf in cert.leaves
        ]
        if as_json:
            print(json.dumps(report, indent=2))
            return
        if out is not None:
            console.print(f"wrote the certificate of version {chosen} to {out}")
        for key in ("version", "time", "payout_root", "state_hash", "signatures", "verified"):
            console.print(f"{key:<12} {report[key]}")
        table = Table(title="payout leaves (token units)")
        for column in ("account", "token", "kind", "amount"):
            table.add_column(column, justify="right" if column == "amount" else "left")
        for leaf, shown in zip(cert.leaves, report["payouts"], strict=True):
            token = tokens.get(leaf.token)
            amount = format_e9(to_e9(leaf.amount, token.decimals)) if token is not None else str(leaf.amount)
            table.add_row(shown["account"], shown["token"], str(leaf.kind), amount)
        console.print(table)
