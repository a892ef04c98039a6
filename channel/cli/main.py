"""`parley`: the command-line tool (typer + rich).

Every command that fails because of the user's input prints one clear line and exits with 1;
`--json` output is a single JSON document on stdout, for scripts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from channel.cli.bot import register as register_bot
from channel.cli.certificates import register as register_certificates
from channel.cli.chain import register as register_settlement
from channel.cli.console import command_group, console, read_password, user_errors
from channel.cli.faults import register as register_faults
from channel.cli.markets import MARKETS_HELP, checked_markets, markets_report, markets_summary, markets_table
from channel.cli.node import register as register_node
from channel.cli.perps import register as register_perps
from channel.cli.sim import register as register_sim
from channel.cli.trade import register as register_trade
from channel.errors import UserError
from channel.runtime import keystore
from channel.runtime.genesis_file import (
    EMBEDDED_ADJUDICATOR,
    EMBEDDED_CHAIN_ID,
    build_genesis,
    create_genesis_folder,
    load_genesis,
    placeholder_token,
    save_genesis,
    with_bootstrap,
)
from crdt.errors import InvalidInput
from crdt.genesis import Genesis, Token
from crdt.types import Address, Symbol, from_hex
from crdt.units import format_e9, parse_e9

if TYPE_CHECKING:  # the replay's modules are imported by `replay` and `workload` (start-up time)
    from crdt.replica import Replica

app = command_group(
    help="Parley: multi-party state channels that keep working with Byzantine participants.",
    pretty_exceptions_enable=False,
)


def _version(shown: bool) -> None:
    if shown:
        from importlib.metadata import version

        print(f"parley {version('parley')}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Parley: multi-party state channels that keep working with Byzantine participants."""


keys_app = command_group(help="Participant keys, in Ethereum v3 keystore files.")
genesis_app = command_group(help="Channel genesis files.")
app.add_typer(keys_app, name="keys")
app.add_typer(genesis_app, name="genesis")

PasswordFile = Annotated[
    Path | None,
    typer.Option(help="File holding the keystore password (else $PARLEY_PASSWORD, else a prompt)."),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of tables.")]


# -- keys ------------------------------------------------------------------------------------------


@keys_app.command("new")
@user_errors
def keys_new(
    out: Annotated[Path, typer.Option(help="Folder for the keystore file.")] = Path("keys"),
    password_file: PasswordFile = None,
    light_kdf: Annotated[
        bool, typer.Option("--light-kdf", help="Cheap scrypt (n=2^14) for throwaway keys; the default is n=2^18.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Create a new participant key and store it encrypted (Ethereum v3 keystore)."""
    password = read_password(password_file, confirm=True)
    key = keystore.new_key()
    path = keystore.save(key, out, password, light=light_kdf)
    if as_json:
        print(json.dumps({"address": f"0x{key.address.hex()}", "keystore": str(path)}))
        return
    console.print(f"address [bold]0x{key.address.hex()}[/bold]\nkeystore {path}")


@keys_app.command("show")
@user_errors
def keys_show(
    path: Annotated[Path, typer.Argument(help="A keystore file.")],
    password_file: PasswordFile = None,
    as_json: JsonFlag = False,
) -> None:
    """Decrypt a keystore file and print its address (checks the password)."""
    key = keystore.load(path, read_password(password_file, confirm=False))
    print(json.dumps({"address": f"0x{key.address.hex()}", "keystore": str(path)}) if as_json
          else f"0x{key.address.hex()}")


# -- genesis -----------------------------------------------------------------------------------------


def parse_token(text: str) -> Token:
    """SYMBOL:DECIMALS[:ADDRESS]."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not re.fullmatch(r"[0-9]{1,2}", parts[1]):  # not isdigit(): "²" is one
        raise UserError(f"token must be SYMBOL:DECIMALS[:ADDRESS], got {text!r}")
    if len(parts) == 2:  # a placeholder address derived from the symbol, for channels without a chain yet
        return placeholder_token(parts[0], int(parts[1]))
    try:
        address = from_hex(parts[2], 20)
    except ValueError as exc:
        raise UserError(f"bad token address: {exc}") from exc
    return Token(parts[0], address, int(parts[1]))  # type: ignore[arg-type]


@genesis_app.command(
    "new",
    help="Write a channel genesis for N participants, each with a new encrypted key, and its markets.\n\n"
    + MARKETS_HELP,
)
@user_errors
def genesis_new(
    out: Annotated[Path, typer.Option(help="Folder to write genesis.toml and keys/ into.")] = Path("channel"),
    participants: Annotated[int | None, typer.Option(
        "-n", "--participants", min=1, max=256, help="How many participants, each with a new key (default 4).")] = None,
    token: Annotated[
        list[str] | None,
        typer.Option(help="SYMBOL:DECIMALS[:ADDRESS], repeatable (default USDC:6)."),
    ] = None,
    initial: Annotated[str, typer.Option(help="Initial balance per participant and token, in tokens.")] = "0",
    market: Annotated[
        list[str] | None, typer.Option(help="SYMBOL:KIND[:KEY=VALUE,...], repeatable: a market (see above).")
    ] = None,
    markets_file: Annotated[
        Path | None, typer.Option("--markets", help="A TOML file of [[markets]] tables (e9 integers).")
    ] = None,
    chain_id: Annotated[int, typer.Option(help="Chain id (default: the embedded chain).")] = EMBEDDED_CHAIN_ID,
    adjudicator: Annotated[str, typer.Option(help="Adjudicator contract address.")] = EMBEDDED_ADJUDICATOR,
    dispute_window: Annotated[int, typer.Option(help="Dispute window in seconds.")] = 3600,
    threshold: Annotated[int | None, typer.Option(help="Signatures needed (default n - f).")] = None,
    keys: Annotated[list[Path] | None, typer.Option(
        "--keys", help="Existing keystores (files, or folders of 0x*.json), repeatable: they are the participants, "
        "and no key is made (each participant keeps its own; `parley keys new`).")] = None,
    bootstrap: Annotated[list[str] | None, typer.Option(
        help="ADDRESS=MULTIADDR, repeatable: a participant's libp2p address, as `parley node init` prints it "
        "(or set it later with `parley genesis set-bootstrap`).")] = None,
    from_deploy: Annotated[Path | None, typer.Option(
        help="deploy.json of `parley chain deploy`: its chain id, adjudicator and test token (unless --token).")]
    = None,
    password_file: PasswordFile = None,
    light_kdf: Annotated[bool, typer.Option("--light-kdf", help="Cheap scrypt (n=2^14) for the new keys of a "
                                            "throwaway channel.")] = False,
    as_json: JsonFlag = False,
) -> None:
    if (out / "genesis.toml").exists():
        raise UserError(f"{out / 'genesis.toml'} exists; choose another --out")
    try:
        amount = parse_e9(initial)
        contract = from_hex(adjudicator, 20)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    tokens = [parse_token(text) for text in token] if token else None
    if from_deploy is not None:
        chain_id, contract, deployed = read_deploy(from_deploy)
        tokens = tokens or deployed or None
    tokens = tokens or [parse_token("USDC:6")]
    markets = checked_markets(market or [], markets_file, [token.symbol for token in tokens])
    addresses = [keystore.address_in(path) for path in keystore.keystore_files(keys)] if keys else None
    count = len(addresses) if addresses is not None else participants or 4
    if participants is not None and count != participants:
        raise UserError(f"-n {participants} but --keys names {count} participants")
    bootstraps = None
    if bootstrap:
        if addresses is None:
            raise UserError("--bootstrap needs --keys (the addresses it names)")
        bootstraps = parse_bootstraps(bootstrap, addresses)
    if addresses is not None:
        genesis = build_genesis(
            addresses, tokens=tokens, initial=amount, markets=markets, chain_id=chain_id, adjudicator=contract,
            dispute_window=dispute_window, threshold=threshold, bootstraps=bootstraps,
        )
        save_genesis(genesis, out / "genesis.toml")
        wrote = f"wrote {out / 'genesis.toml'}"
    else:
        password = read_password(password_file, confirm=True)
        genesis, _ = create_genesis_folder(
            out, count, password=password, light_kdf=light_kdf, tokens=tokens, initial=amount, markets=markets,
            chain_id=chain_id, adjudicator=contract, dispute_window=dispute_window, threshold=threshold,
        )
        wrote = f"wrote {out / 'genesis.toml'} and {out / 'keys'}/"
    if as_json:
        print(json.dumps({
            "genesis": str(out / "genesis.toml"), "keys": None if addresses is not None else str(out / "keys"),
            "channel": f"0x{genesis.channel_id.hex()}", "threshold": genesis.threshold,
            "participants": [{"address": f"0x{p.address.hex()}", "role": p.role.value, "bootstrap": p.bootstrap}
                             for p in genesis.participants],
            "tokens": [{"symbol": t.symbol, "address": f"0x{t.address.hex()}", "decimals": t.decimals}
                       for t in genesis.tokens],
            "markets": [m.symbol for m in genesis.markets],
        }))
        return
    table = Table(title=f"channel 0x{genesis.channel_id.hex()}")
    table.add_column("participant")
    table.add_column("role")
    table.add_column("bootstrap")
    for participant in genesis.participants:
        table.add_row(f"0x{participant.address.hex()}", participant.role.value, participant.bootstrap or "-")
    console.print(table)
    if genesis.markets:
        console.print(markets_table(genesis))
    console.print(f"threshold {genesis.threshold} of {len(genesis.participants)}; {wrote}")


def read_deploy(path: Path) -> tuple[int, bytes, list[Token]]:
    """The chain id, adjudicator and tokens of a deploy.json (`parley chain deploy --out`)."""
    try:
        data = json.loads(path.read_text())
        tokens = [Token(Symbol(t["symbol"]), Address(from_hex(t["address"], 20)), int(t["decimals"]))
                  for t in data.get("tokens", [])]
        return int(data["chain_id"]), from_hex(data["adjudicator"], 20), tokens
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"cannot read the deployment {path} (from `parley chain deploy`): {exc!r}") from exc


def parse_bootstraps(entries: list[str], addresses: list[Address]) -> list[str]:
    """ADDRESS=MULTIADDR entries as one bootstrap per participant, in address order."""
    found: dict[Address, str] = {}
    for entry in entries:
        account, sep, multiaddr = entry.partition("=")
        try:
            address = Address(from_hex(account, 20))
        except ValueError as exc:
            raise UserError(f"--bootstrap wants ADDRESS=MULTIADDR, got {entry!r}: {exc}") from exc
        if not sep or address not in addresses:
            raise UserError(f"--bootstrap {entry!r}: not ADDRESS=MULTIADDR of one of the --keys")
        found[address] = multiaddr
    return [found.get(address, "") for address in sorted(addresses)]


@genesis_app.command("set-bootstrap")
@user_errors
def genesis_set_bootstrap(
    genesis_path: Annotated[Path, typer.Argument(help="The channel's genesis.toml (rewritten in place).")],
    account: Annotated[str, typer.Argument(help="The participant's address.")],
    multiaddr: Annotated[str, typer.Argument(help="Its libp2p address, as `parley node init` prints it ('' clears).")],
    as_json: JsonFlag = False,
) -> None:
    """Set one participant's bootstrap address. The channel id does not cover bootstrap
    addresses, so the channel stays the same; give every participant the new file."""
    genesis = load_genesis(genesis_path)
    try:
        address = Address(from_hex(account, 20))
    except ValueError as exc:
        raise UserError(f"bad address {account!r}: {exc}") from exc
    updated = with_bootstrap(genesis, address, multiaddr)
    save_genesis(updated, genesis_path)
    if as_json:
        print(json.dumps({"channel": f"0x{updated.channel_id.hex()}", "account": f"0x{address.hex()}",
                          "bootstrap": multiaddr}))
        return
    print(f"channel 0x{updated.channel_id.hex()}: 0x{address.hex()} at {multiaddr or '(none)'}")  # no wrapping


# -- workload and replay ------------------------------------------------------------------------------


@app.command()
@user_errors
def workload(
    folder: Annotated[Path, typer.Argument(help="A channel folder from `parley genesis new`.")],
    out: Annotated[Path, typer.Option(help="CBOR sequence file to write.")] = Path("ops.cbor"),
    count: Annotated[int, typer.Option(min=1, help="How many signed operations to write.")] = 1000,
    seed: Annotated[int, typer.Option(help="The workload is a pure function of the seed.")] = 0,
    orders: Annotated[
        int,
        typer.Option(min=0, max=100, help="Percent of the operations that are orders (placements, cancels, "
                     "cancel-alls) on the genesis's markets; the rest are transfers mostly."),
    ] = 0,
    password_file: PasswordFile = None,
    as_json: JsonFlag = False,
) -> None:
    """Write a file of signed operations by the channel's participants (transfers mostly, and
    order flow on the channel's markets with --orders)."""

    from crdt.ops import encode_ops
    from simulations.workload import Workload, order_mix

    genesis = load_genesis(folder / "genesis.toml")
    if orders and not genesis.markets:
        raise UserError(f"--orders needs markets, and {folder / 'genesis.toml'} has none (see genesis new --market)")
    password = read_password(password_file, confirm=False)
    keys = [keystore.load(keystore.find(folder / "keys", p.address), password) for p in genesis.participants]
    mix = order_mix(orders)
    ops = list(Workload(genesis, [key.private_key for key in keys], seed=seed, mix=mix).ops(count))
    out.write_bytes(encode_ops(ops))
    if as_json:
        print(json.dumps({"operations": len(ops), "file": str(out), "seed": seed}))
        return
    console.print(f"wrote {len(ops)} operations to {out}")


def replay_file(data: bytes, genesis: Genesis) -> tuple[Replica, list[dict[str, Any]]]:
    """Replay a CBOR sequence of operations; return the replica and the inputs it refused."""

    from crdt.graph import PendingBuffer
    from crdt.ops import decode_op, split_ops
    from crdt.replica import Replica

    ctx = genesis.context()
    refused: list[dict[str, Any]] = []
    try:
        items = split_ops(data, ctx)
    except InvalidInput as exc:
        raise UserError(f"not a CBOR sequence of operations: {exc}") from exc
    replica = Replica(genesis, ctx, PendingBuffer.for_local_input(len(items)))
    ops = []
    for index, item in enumerate(items):
        try:
            ops.append(decode_op(item, ctx))
        except InvalidInput as exc:
            refused.append({"index": index, "error": exc.code, "detail": str(exc)})
    for op, error in replica.receive_many(ops).rejected:
        refused.append({"op_id": "0x" + op.op_id.hex(), "error": error.code, "detail": str(error)})
    return replica, refused


def replay_report(replica: Replica, refused: list[dict[str, Any]]) -> dict[str, Any]:
    """The replayed state as one JSON document. In a channel with markets ``fee_pool`` (per
    token) and ``markets`` (books, open orders and fills: `markets_report`) are added. Every e9
    amount is a decimal string, as on the API (a JSON number above 2**53 loses digits in
    JavaScript and in many JSON parsers)."""
    genesis, ledger = replica.genesis, replica.ledger
    balances = {
        account: {token: {part: str(value) for part, value in parts.items()} for token, parts in tokens.items()}
        for account, tokens in replica.balances().items()
    }
    trading: dict[str, Any] = {}
    if genesis.markets:
        trading = {"fee_pool": {t.symbol: str(ledger.fees(t.symbol)) for t in genesis.tokens},
                   "markets": markets_report(replica)}
    return {
        **replica.summary(),
        "balances": balances,
        **trading,
        "rejected": [
            {"op_id": "0x" + op.op_id.hex(), "author": "0x" + op.author.hex(), "seq": op.seq,
             "kind": op.kind, "reason": str(reason)}
            for op, reason in replica.rejected()
        ],
        "refused": refused,
        "missing_parents": sorted("0x" + op_id.hex() for op_id in replica.graph.pending.missing()),
        "equivocations": [evidence.describe() for evidence in replica.evidence()],
    }


@app.command()
@user_errors
def replay(
    file: Annotated[Path, typer.Argument(help="A CBOR sequence (RFC 8742) of signed operations.")],
    genesis_path: Annotated[Path, typer.Option("--genesis", help="The channel's genesis.toml.")],
    as_json: JsonFlag = False,
) -> None:
    """Replay operations in any order and print the converged state.

    Two replicas' files (or any shuffling of one file) give the same payout root and state
    hash: the state depends only on the set of operations.
    """
    genesis = load_genesis(genesis_path)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {file}: {exc}") from exc
    replica, refused = replay_file(data, genesis)
    report = replay_report(replica, refused)
    if as_json:
        print(json.dumps(report, indent=2))
        return
    print_replay(report, genesis)


def print_replay(report: dict[str, Any], genesis: Genesis) -> None:
    console.print(f"operations  {report['operations']} accepted, {report['pending']} waiting for parents")
    console.print(f"state hash  [bold]{report['state_hash']}[/bold]")
    console.print(f"payout root [bold]{report['payout_root']}[/bold]")
    buckets = ("free", "held", "locked", "withdrawn") if genesis.markets else ("free", "locked", "withdrawn")
    table = Table(title="balances")
    table.add_column("account", no_wrap=True)
    if len(genesis.tokens) > 1:
        table.add_column("token")
    for bucket in buckets:
        table.add_column(bucket, justify="right")
    for account, per_token in report["balances"].items():
        for index, token in enumerate(genesis.tokens):
            label = [token.symbol] if len(genesis.tokens) > 1 else []
            amounts = (format_e9(int(per_token[token.symbol][bucket])) for bucket in buckets)
            shown = f"{account[:10]}…{account[-4:]}" if index == 0 else ""  # in full with --json
            table.add_row(shown, *label, *amounts, end_section=index == len(genesis.tokens) - 1)
    console.print(table)
    if genesis.markets:
        console.print(markets_summary(report["markets"]))
    if report["rejected"]:
        rejected = Table(title=f"rejected in replay ({len(report['rejected'])})")
        for column in ("op id", "author", "seq", "kind", "reason"):
            rejected.add_column(column)
        for entry in report["rejected"][:50]:
            rejected.add_row(
                entry["op_id"][:18], entry["author"][:12], str(entry["seq"]), entry["kind"], entry["reason"]
            )
        console.print(rejected)
    if report["refused"]:
        console.print(f"[yellow]{len(report['refused'])} inputs refused as invalid[/yellow] (see --json)")
    for evidence in report["equivocations"]:
        console.print(f"[red]equivocation[/red] by {evidence['author']} at seq {evidence['seq']}")


@app.command()
@user_errors
def demo(
    transfers: Annotated[int, typer.Option(min=10, help="Transfers sent through the nodes' APIs.")] = 300,
    seed: Annotated[int, typer.Option(help="Seeds everything random in the run: the participants' keys, the "
                                      "workload and the order flow (the same seed, the same channel).")] = 0,
    no_chain: Annotated[
        bool, typer.Option("--no-chain", help="Only the network: N nodes, a transfer workload (throughput, latency), "
                                  "then an order flow.")
    ] = False,
    offline: Annotated[
        bool, typer.Option("--offline", help="No network: replay one signed workload on 4 replicas in 4 delivery "
                                              "orders.")
    ] = False,
    participants: Annotated[int, typer.Option("-n", "--participants", min=2, max=16,
                                              help="Nodes, with --no-chain or --offline.")] = 4,
    perps: Annotated[bool, typer.Option("--perps", help="A perpetual market on 4 nodes: an oracle feed, a leveraged "
                                        "long, funding, a price shock that trips the circuit breaker, a liquidation.")
                     ] = False,
    folder: Annotated[Path | None, typer.Option(help="Keep the channel files here (default: a temp folder).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """The whole flow on an embedded chain: 4 node processes over libp2p (one Byzantine),
    deposits, transfers and trading on ETH/USDC, BFT checkpoints settled on-chain, a node stopped
    while the others keep finalising, and an emergency exit after which every participant is
    paid its balances after trading."""
    if perps:
        from simulations.demos.perps import run_perp_demo

        result = run_perp_demo(seed=seed, folder=folder, quiet=as_json)
    elif offline:
        from simulations.demos.offline import run_demo

        result = run_demo(participants=participants, operations=transfers, seed=seed, folder=folder, quiet=as_json)
    elif no_chain:
        from simulations.demos.network import run_network_demo

        result = run_network_demo(
            participants=participants, transfers=transfers, seed=seed, folder=folder, quiet=as_json
        )
    else:
        from simulations.demos.full import run_full_demo

        result = run_full_demo(transfers=transfers, seed=seed, folder=folder, quiet=as_json)
    if as_json:
        print(json.dumps(result, indent=2))
    if not result["converged"]:
        raise typer.Exit(1)


register_settlement(app)  # parley exit, parley chain …
register_node(app)  # parley node run, balance, transfer, status, peers, stats, watch
register_trade(app)  # parley order, cancel, book, orders, trades
register_perps(app)  # parley positions, account, liquidate, oracle post
register_certificates(app)  # parley checkpoints, certificate
register_bot(app)  # parley bot maker
register_sim(app)  # parley sim run, replay
register_faults(app)  # parley faults run, check


def main() -> None:  # pragma: no cover - the console script
    app()
