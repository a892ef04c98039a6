"""CLI commands that run a node or talk to one: ``parley node run``, ``balance``, ``transfer``,
``status``, ``peers``, ``stats`` and ``watch``. They use `channel.api.client`, so they do exactly
what a Python program using the client would do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from channel.api.client import Client, InsufficientBalance
from channel.cli.console import command_group, console, read_password, user_errors
from channel.errors import UserError
from crdt.units import format_e9, parse_e9

NodeDir = Annotated[
    Path,
    typer.Option("--node", envvar="PARLEY_NODE", help="The node's data directory (holds api.json and api-token)."),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def register(app: typer.Typer) -> None:
    node_app = command_group(help="Run a node.")
    app.add_typer(node_app, name="node")

    @node_app.command("run")
    @user_errors
    def node_run(
        config: Annotated[Path, typer.Option(help="The node's node.toml.")] = Path("node.toml"),
        log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
        log_json: Annotated[bool, typer.Option("--log-json", "--json", help="Logs as JSON lines on stderr (ts, "
                                               "level, logger, message), libp2p's included.")] = False,
        fresh_channel: Annotated[bool, typer.Option(
            "--fresh-channel",
            help="The genesis is brand new and this key has signed nothing in it: sign at once instead of first "
            "learning this node's last seq and vote height from a quorum of peers. Only for a node's first start "
            "in a new channel; with a store that lost data, it would make the node equivocate.",
        )] = False,
    ) -> None:
        """Run a node until SIGINT or SIGTERM: libp2p gossip and sync, the store, the local API."""
        from functools import partial

        import trio

        from channel.api.server import serve_api
        from channel.cli.logs import configured
        from channel.runtime.config import NodeConfig
        from channel.runtime.node import run_node

        if log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise UserError(f"--log-level must be debug, info, warning or error, not {log_level!r}")
        with configured(log_level, log_json):
            node_config = NodeConfig.load(config)
            password = read_password(node_config.password_file, confirm=False)
            trio.run(partial(run_node, node_config, password, serve_api, fresh_channel=fresh_channel))

    @node_app.command("init")
    @user_errors
    def node_init(
        genesis: Annotated[Path, typer.Option(help="The channel's genesis.toml.")],
        keystore_file: Annotated[Path, typer.Option("--keystore", help="This participant's keystore (v3 JSON).")],
        out: Annotated[Path, typer.Option(help="The node's folder: its node.toml and data directory.")],
        listen: Annotated[str, typer.Option(help="The libp2p address to listen on (a fixed port: peers dial it).")]
        = "/ip4/127.0.0.1/tcp/4001",
        api_port: Annotated[int, typer.Option(help="The local API's port on 127.0.0.1 (0: any free port, "
                                              "written to api.json).")] = 0,
        rpc: Annotated[str | None, typer.Option(envvar="ETH_RPC_URL", help="Settle on this chain ([chain] rpc).")]
        = None,
        password_file: Annotated[Path | None, typer.Option(
            help="The keystore's password file (recorded in node.toml; else $PARLEY_PASSWORD or a prompt).")] = None,
        as_json: JsonFlag = False,
    ) -> None:
        """Write a node's node.toml (paths relative to it) and its libp2p identity (sealed with the
        keystore's password), and print its bootstrap address for the genesis."""
        import tomli_w

        from channel.runtime import keystore
        from channel.runtime.config import ChainConfig, NodeConfig
        from channel.runtime.genesis_file import load_genesis
        from p2p.identity import load_or_create, peer_id_of

        if (out / "node.toml").exists():
            raise UserError(f"{out / 'node.toml'} exists; choose another --out")
        parsed = load_genesis(genesis)
        address = keystore.address_in(keystore_file)
        if address not in parsed.addresses:
            raise UserError(f"the keystore {keystore_file} holds 0x{address.hex()}, not a participant of this channel")
        port = _fixed_port(listen)
        password = read_password(password_file, confirm=False)
        keystore.load(keystore_file, password)  # a wrong password fails here, not at the first start
        config = NodeConfig(
            data_dir=out.resolve(), genesis=genesis.resolve(), keystore=keystore_file.resolve(),
            password_file=password_file.resolve() if password_file is not None else None,
            p2p_listen=(listen,), api_port=api_port,
            chain=ChainConfig(rpc=rpc) if rpc is not None else None,
        )
        NodeConfig.from_mapping(config.to_mapping(out.resolve()), out.resolve())  # what `node run` will read
        peer = peer_id_of(load_or_create(out, password))
        (out / "node.toml").write_text(tomli_w.dumps(config.to_mapping(out.resolve())))
        host = listen.split("/")[2]
        bootstrap = f"{listen}/p2p/{peer}"
        if as_json:
            print(json.dumps({"config": str(out / "node.toml"), "account": f"0x{address.hex()}", "port": port,
                              "peer_id": peer, "bootstrap": bootstrap}))
            return
        # plain lines (no wrapping), to copy: the bootstrap address goes into the genesis
        print(f"wrote {out / 'node.toml'} for participant 0x{address.hex()} (libp2p port {port})")
        if host in ("0.0.0.0", "::"):
            print("it listens on every interface: give peers an address of this machine they can reach")
        print(f"next: parley genesis set-bootstrap {genesis} 0x{address.hex()} {bootstrap}")
        print(f"bootstrap {bootstrap}")

    @node_app.command("repair")
    @user_errors
    def node_repair(
        config: Annotated[Path, typer.Option(help="The node's node.toml.")] = Path("node.toml"),
        as_json: JsonFlag = False,
    ) -> None:
        """Drop what fails its checks in a node's store (or move an unreadable store aside), so the
        node starts again and learns what was dropped from its peers. The node must be stopped."""
        from channel.runtime.config import NodeConfig
        from channel.runtime.node import repair_store

        report = repair_store(NodeConfig.load(config))
        if as_json:
            print(json.dumps(report))
            return
        if report["moved_aside"]:
            console.print(f"the store could not be read; moved it to {report['moved_aside']} and started an empty one")
        else:
            dropped = ", ".join(f"{report[k]} {k}" for k in ("operations", "decisions", "certificates", "signed"))
            console.print(f"dropped {dropped} from {report['store']}")
        console.print("on its next start the node learns its last seq and vote height from its peers")

    @app.command()
    @user_errors
    def balance(node: NodeDir = Path("data"),
                account: Annotated[str | None, typer.Option(help="One participant (0x…); every one by default.")]
                = None,
                as_json: JsonFlag = False) -> None:
        """Balances of every participant (or one) as the node sees them now."""
        with Client.for_node(node) as client:
            balances = client.balances(account)
        if as_json:
            print(json.dumps(balances, indent=2))
            return
        table = Table(title="balances")
        for column in ("account", "token", "free", "held", "locked", "withdrawn"):
            table.add_column(column, justify="right" if column not in ("account", "token") else "left")
        for holder, tokens in balances.items():
            for token, parts in tokens.items():
                amounts = (format_e9(int(parts[k])) for k in ("free", "held", "locked", "withdrawn"))
                table.add_row(holder, token, *amounts)
        console.print(table)

    @app.command()
    @user_errors
    def transfer(
        to: Annotated[str, typer.Argument(help="The recipient's address.")],
        amount: Annotated[str, typer.Argument(help="Amount in tokens, e.g. 12.5")],
        token: Annotated[str, typer.Option(help="The token's symbol in the genesis.")] = "USDC",
        request_id: Annotated[str | None, typer.Option(help="Idempotency key: a retry returns the first answer.")]
        = None,
        node: NodeDir = Path("data"),
        as_json: JsonFlag = False,
    ) -> None:
        """Transfer tokens to another participant, signed by the node's participant."""
        try:
            e9 = parse_e9(amount)
        except ValueError as exc:
            raise UserError(str(exc)) from exc
        with Client.for_node(node) as client:
            try:
                receipt = client.transfer(to, token, e9, request_id)
            except InsufficientBalance as exc:
                raise short_of(client, token, f"the transfer needs {format_e9(e9)} {token}") from exc
        if as_json:
            print(json.dumps(receipt))
        else:
            console.print(f"{receipt['status']}  op {receipt['op_id']}  seq {receipt['seq']}")

    @app.command()
    @user_errors
    def status(
        op_id: Annotated[str, typer.Argument(help="The op id (0x and 64 hex digits) a command printed.")],
        node: NodeDir = Path("data"), as_json: JsonFlag = False
    ) -> None:
        """The status of an operation: tentative, final, rejected:<reason>, pending or unknown."""
        with Client.for_node(node) as client:
            result = client.status(op_id)
        if as_json:
            print(json.dumps(result))
        if result["status"] == "unknown":
            raise UserError(f"the node knows no operation {op_id}",
                            hint="an op id is what `parley transfer` or `parley order` printed (0x and 64 hex digits)")
        if not as_json:
            print(result["status"])

    @app.command()
    @user_errors
    def peers(node: NodeDir = Path("data"), as_json: JsonFlag = False) -> None:
        """Connected peers, sync sessions and banned peers."""
        with Client.for_node(node) as client:
            result = client.peers()
        if as_json:
            print(json.dumps(result, indent=2))
            return
        table = Table(title=f"peers of {result['local_id']}")
        table.add_column("peer")
        table.add_column("sync")
        table.add_column("banned")
        everyone = sorted(set(result["connected"]) | set(result["banned"]))
        for peer in everyone:
            syncing = "yes" if peer in result["sync_sessions"] else ""
            table.add_row(peer, syncing, "yes" if peer in result["banned"] else "")
        console.print(table)

    @app.command()
    @user_errors
    def stats(node: NodeDir = Path("data"), as_json: JsonFlag = False) -> None:
        """Counts, roots and rates of the node."""
        with Client.for_node(node) as client:
            result = client.stats()
        if as_json:
            print(json.dumps(result, indent=2))
            return
        table = Table(title="node")
        table.add_column("")
        table.add_column("")
        for key, value in result.items():
            table.add_row(key, str(value))
        console.print(table)

    @app.command()
    @user_errors
    def evidence(node: NodeDir = Path("data"), as_json: JsonFlag = False) -> None:
        """Misbehaviour the node has seen. Equivocations (two operations signed for one seq) are
        what `parley chain slash --evidence FILE` takes: save them with --json."""
        with Client.for_node(node) as client:
            found = client.evidence()
        if as_json:
            print(json.dumps(found, indent=2))
            return
        if not found:
            console.print("no misbehaviour seen")
        for item in found:
            where = f"at seq {item['seq']}" if item["kind"] == "equivocation" else ""
            console.print(f"[red]{item['kind']}[/red] by {item.get('author') or item.get('offender')} {where}")

    @app.command()
    @user_errors
    def watch(
        topic: Annotated[str, typer.Argument(
            help="ops, balances, status, trades, fills, orders, or a perp topic: positions, account, funding, "
                 "liquidations")] = "ops",
        node: NodeDir = Path("data"),
        as_json: JsonFlag = False,
    ) -> None:
        """Print the node's events as they happen (Ctrl-C to stop)."""
        with Client.for_node(node) as client:
            try:
                for event in client.watch(topic):
                    print(json.dumps(as_strings(event)) if as_json else _describe(topic, event), flush=True)
            except KeyboardInterrupt:
                return


def short_of(client: Client, token: str, needed: str) -> UserError:
    """A refused request's ``insufficient_balance`` as what the node's own account holds of
    `token` now (free, and held by open orders), and what the request needed."""
    me = client.stats()["address"]
    parts = client.balances(me).get(me, {}).get(token, {})
    free, held = (format_e9(int(parts.get(name, 0))) for name in ("free", "held"))
    on_hold = f" ({held} more held by open orders)" if int(parts.get("held", 0)) else ""
    return UserError(f"insufficient balance: you have {free} {token}{on_hold}, and {needed}",
                     hint="see `parley balance`; deposits are credited once a checkpoint includes them")


def as_strings(event: dict[str, Any]) -> dict[str, Any]:
    """An event with the integers of its operation's body (e9 amounts, prices, quantities, the
    expiry) as decimal strings, as the API takes them and as every other --json prints them: a
    JSON number above 2**53 loses digits in JavaScript and in many JSON parsers."""
    body = event.get("body")
    if not isinstance(body, dict):
        return event
    shown = {key: str(value) if type(value) is int else value for key, value in body.items()}
    return {**event, "body": shown}


def _describe(topic: str, event: dict[str, Any]) -> str:
    if topic == "ops":
        body = event.get("body", {})
        detail = " ".join(f"{k}={v}" for k, v in body.items())
        return f"{event['status']:<12} {event['kind']:<9} seq {event['seq']:<5} {event['author'][:12]}… {detail}"
    if topic == "balances":
        parts = ", ".join(
            f"{token} {format_e9(int(v['free']))}" for token, v in event["balances"].items()
        )
        return f"{event['account']}: {parts}"
    if topic == "status":
        return f"{event['op_id']} {event['status']}"
    described = _PERP_LINES.get(topic)
    return described(event) if described is not None else json.dumps(event)


def _e9(value: str | None) -> str:
    return "-" if value is None else format_e9(int(value))


def _positions_line(event: dict[str, Any]) -> str:
    rows = [f"{p['market']} {p['side']} {_e9(p['size'])} @ {_e9(p['entry_price'])} mark {_e9(p['mark_price'])} "
            f"uPnL {_e9(p['unrealised_pnl'])} liq {_e9(p['liquidation_price'])}" for p in event["positions"]]
    rows += [f"{market} closed" for market in event.get("closed", [])]
    return f"{event['type']:<8} seq {event['seq']:<4} {event['account'][:12]}… " + ("; ".join(rows) or "flat")


def _account_line(event: dict[str, Any]) -> str:
    parts = [f"{token} value {_e9(m['account_value'])} IMR {_e9(m['initial_margin'])} "
             f"MMR {_e9(m['maintenance_margin'])} free {_e9(m['free_collateral'])} {m['health']}"
             for token, m in event["collateral"].items()]
    return f"{event['type']:<8} seq {event['seq']:<4} {event['account'][:12]}… " + "; ".join(parts)


def _funding_line(event: dict[str, Any]) -> str:
    return (f"{event['market']} funding at checkpoint {event['version']}: rate {_e9(event['rate'])} "
            f"index {_e9(event['index'])} price {_e9(event['mark_price'])}")


def _liquidation_line(event: dict[str, Any]) -> str:
    state = "final" if event["final"] else "tentative"
    return (f"{event['event']:<9} {state:<9} {event['market']} {event['account'][:12]}… {_e9(event['qty'])} at "
            f"{_e9(event['price'])} (oracle {_e9(event['mark_price'])}) by {event['liquidator'][:12]}… "
            f"insurance {_e9(event['insurance'])}")


_PERP_LINES = {"positions": _positions_line, "account": _account_line, "funding": _funding_line,
               "liquidations": _liquidation_line}


def _fixed_port(listen: str) -> int:
    """The TCP port of a libp2p listen address; 0 is refused (the genesis needs a port to dial)."""
    parts = listen.split("/")
    if len(parts) < 5 or parts[1] not in ("ip4", "ip6", "dns4", "dns6") or parts[3] != "tcp" or len(parts) != 5:
        raise UserError(f"--listen wants /ip4/HOST/tcp/PORT, got {listen!r}")
    try:
        port = int(parts[4])
    except ValueError as exc:
        raise UserError(f"bad port in {listen!r}") from exc
    if not 0 < port < 65536:
        raise UserError(f"--listen needs a fixed port between 1 and 65535 (peers dial it), not {port}")
    return port
