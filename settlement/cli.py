"""``parley exit`` and ``parley chain …``: the settlement commands of the CLI.

`register(app)` adds them to the main typer app (channel/cli.py). ``python -m settlement.cli``
runs them on their own.

Invariants: a command never prints a private key or password; keys come from a v3 keystore
(``--key-file``, password from ``--password-file`` or a prompt) or from the environment
variable ``PARLEY_PRIVATE_KEY``, never from an argument (arguments end up in shell history and
in ``ps``). Errors of the settlement layer are shown as one line and exit with code 1.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Annotated

import typer
from eth_account import Account
from eth_account.signers.local import LocalAccount
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from crdt.certificate import Certificate
from crdt.errors import InvalidInput
from crdt.genesis import Genesis
from crdt.units import format_e9, to_e9
from settlement.chain import RpcChain
from settlement.client import AdjudicatorClient, Sender, TestTokenClient, address_bytes
from settlement.errors import SettlementError
from settlement.exit import ExitEvent, run_exit

KEY_ENV = "PARLEY_PRIVATE_KEY"
DEFAULT_RPC = "http://127.0.0.1:8545"

EXIT_HELP = """Leave the channel on your own, with the newest certificate you hold.

The flow, which needs no other participant to be online:

  1. propose the newest certificate's checkpoint to the adjudicator (or challenge an older
     pending proposal with it, or reuse a pending proposal that is at least as new);

  2. wait out the dispute window, showing its progress;

  3. finalize the settlement (the channel concludes at that checkpoint);

  4. claim your payout in every token with your Merkle proof.

Every step is read back from the chain, so if the command is interrupted, run it again with the
same arguments: it resumes where it stopped. The account pays the gas and must hold enough for
the whole dispute (propose or challenge, finalize, claims), which is checked before anything is
sent.

The key: --key-file KEYSTORE.json (an Ethereum v3 keystore; the password from --password-file
or a prompt), or the hex private key in the environment variable PARLEY_PRIVATE_KEY.
"""


def load_genesis(path: Path) -> Genesis:
    # The CLI's one TOML reader, with its nesting bounds (this module is CLI code, which the
    # layers issue moves into channel/cli/; the import stays local until then).
    from channel.errors import UserError
    from channel.genesis_file import load_genesis as read_genesis

    try:
        return read_genesis(path)
    except UserError as exc:
        raise typer.BadParameter(str(exc)) from exc


def load_certificates(paths: list[Path]) -> list[Certificate]:
    found = []
    for path in paths:
        files = sorted(path.glob("*.cbor")) if path.is_dir() else [path]
        for file in files:
            try:
                found.append(Certificate.decode(file.read_bytes()))
            except (OSError, InvalidInput) as exc:
                raise typer.BadParameter(f"cannot read the certificate {file}: {exc}") from exc
    return found


def load_account(key_file: Path | None, password_file: Path | None) -> LocalAccount:
    if key_file is not None:
        try:
            keystore = key_file.read_text()
        except OSError as exc:
            raise typer.BadParameter(f"cannot read the key file {key_file}: {exc}") from exc
        if password_file is not None:
            password = password_file.read_text().rstrip("\n")
        else:
            password = typer.prompt("keystore password", hide_input=True)
        try:
            key = Account.decrypt(keystore, password)
        except ValueError as exc:
            raise typer.BadParameter(f"cannot decrypt {key_file}: {exc}") from exc
        account: LocalAccount = Account.from_key(key)
        return account
    raw = os.environ.get(KEY_ENV)
    if raw:
        try:
            account = Account.from_key(raw.strip())
        except (ValueError, TypeError) as exc:
            raise typer.BadParameter(f"{KEY_ENV} is not a private key") from exc
        return account
    raise typer.BadParameter(f"give --key-file, or set {KEY_ENV}")


RpcOption = Annotated[str, typer.Option("--rpc", help="JSON-RPC URL of the chain (anvil, a testnet, mainnet).")]
KeyFileOption = Annotated[
    Path | None, typer.Option("--key-file", help="Ethereum v3 keystore JSON of your account.")
]
PasswordFileOption = Annotated[
    Path | None, typer.Option("--password-file", help="File holding the keystore password.")
]


def serve_command(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0 picks a free one).")] = 8545,
    block_time: Annotated[float, typer.Option(help="Mine a block this often, in seconds (0: only on transactions).")]
    = 1.0,
) -> None:
    """Serve the embedded chain (eth-tester + py-evm) over JSON-RPC on 127.0.0.1, with anvil's
    evm_increaseTime / evm_mine / evm_snapshot / evm_revert, until Ctrl-C."""
    import trio

    from settlement.server import serve_chain

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(partial(serve_chain, "127.0.0.1", port, block_time=block_time))
            print(f"embedded chain on {url}", flush=True)

    trio.run(main)


def register(app: typer.Typer) -> None:
    """Add ``exit`` and the ``chain`` sub-app to `app`."""
    app.command("exit", help=EXIT_HELP)(exit_command)
    chain_app = typer.Typer(help="Talk to the adjudicator directly: deploy, open, deposit, status.")
    chain_app.command("deploy")(deploy_command)
    chain_app.command("open")(open_command)
    chain_app.command("deposit")(deposit_command)
    chain_app.command("status")(status_command)
    chain_app.command("serve")(serve_command)
    app.add_typer(chain_app, name="chain")


def _fail(exc: Exception) -> typer.Exit:
    Console(stderr=True).print(f"[red]error:[/red] {exc}")
    return typer.Exit(1)


def exit_command(
    genesis: Annotated[Path, typer.Option("--genesis", help="The channel's genesis TOML.")],
    certificate: Annotated[
        list[Path],
        typer.Option("--certificate", help="A certificate file (CBOR), or a folder of *.cbor; repeatable."),
    ],
    rpc: RpcOption = DEFAULT_RPC,
    key_file: KeyFileOption = None,
    password_file: PasswordFileOption = None,
    poll_interval: Annotated[float, typer.Option(help="Seconds between checks while waiting.")] = 5.0,
) -> None:
    parsed = load_genesis(genesis)
    certificates = load_certificates(certificate)
    account = load_account(key_file, password_file)
    console = Console()
    try:
        chain = RpcChain(rpc)
        if chain.chain_id != parsed.chain_id:
            raise SettlementError(f"{rpc} is chain {chain.chain_id}, the genesis is for chain {parsed.chain_id}")
        client = AdjudicatorClient(Sender(chain, account), "0x" + parsed.adjudicator.hex())
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        ) as progress:
            task = None

            def report(event: ExitEvent) -> None:
                nonlocal task
                if event.step != "wait":
                    progress.console.print(f"[bold]{event.step}[/bold] {event.message}")
                    return
                elapsed = event.window - (event.finalizes_at - event.now)
                if task is None:
                    task = progress.add_task("dispute window", total=event.window)
                progress.update(task, completed=max(0, elapsed), description=f"dispute window ({event.message})")

            result = run_exit(
                client, parsed, certificates, address_bytes(account.address), report=report,
                poll_interval=poll_interval,
            )
    except SettlementError as exc:
        raise _fail(exc) from exc
    decimals = {token.address: (token.symbol, token.decimals) for token in parsed.tokens}
    for leaf in result.claimed:
        symbol, places = decimals[leaf.token]
        console.print(f"claimed {format_e9(to_e9(leaf.amount, places))} {symbol}")
    for leaf in result.already_claimed:
        symbol, places = decimals[leaf.token]
        console.print(f"already claimed {format_e9(to_e9(leaf.amount, places))} {symbol}")
    console.print(f"[green]exit complete[/green] at checkpoint v{result.version}")


def deploy_command(
    rpc: RpcOption = DEFAULT_RPC,
    key_file: KeyFileOption = None,
    password_file: PasswordFileOption = None,
    test_token: Annotated[
        int | None, typer.Option(help="Also deploy a mintable test ERC-20 with these decimals.")
    ] = None,
) -> None:
    """Deploy the adjudicator (from the committed artifacts) and print its address."""
    account = load_account(key_file, password_file)
    try:
        sender = Sender(RpcChain(rpc), account)
        adjudicator = AdjudicatorClient.deploy(sender)
        typer.echo(f"adjudicator {adjudicator.address}")
        if test_token is not None:
            token = TestTokenClient.deploy(sender, "Test token", "TEST", test_token)
            typer.echo(f"test token {token.address} ({test_token} decimals)")
    except SettlementError as exc:
        raise _fail(exc) from exc


def open_command(
    genesis: Annotated[Path, typer.Option("--genesis", help="The channel's genesis TOML.")],
    rpc: RpcOption = DEFAULT_RPC,
    key_file: KeyFileOption = None,
    password_file: PasswordFileOption = None,
) -> None:
    """Open the genesis's channel on its adjudicator (the ids must match)."""
    parsed = load_genesis(genesis)
    account = load_account(key_file, password_file)
    try:
        client = AdjudicatorClient(Sender(RpcChain(rpc), account), "0x" + parsed.adjudicator.hex())
        channel = client.open_genesis(parsed)
    except SettlementError as exc:
        raise _fail(exc) from exc
    typer.echo(f"channel 0x{channel.hex()} open")


def deposit_command(
    genesis: Annotated[Path, typer.Option("--genesis", help="The channel's genesis TOML.")],
    token: Annotated[str, typer.Option(help="Token symbol from the genesis.")],
    amount: Annotated[str, typer.Option(help="Decimal amount, e.g. 12.5.")],
    rpc: RpcOption = DEFAULT_RPC,
    key_file: KeyFileOption = None,
    password_file: PasswordFileOption = None,
    account: Annotated[str | None, typer.Option(help="Credit this participant (default: yourself).")] = None,
) -> None:
    """Deposit into the channel (approving the adjudicator first if needed)."""
    from crdt.units import parse_e9

    parsed = load_genesis(genesis)
    chosen = parsed.token(token)
    if chosen is None:
        raise typer.BadParameter(f"no token {token!r} in the genesis")
    signer = load_account(key_file, password_file)
    try:
        client = AdjudicatorClient(Sender(RpcChain(rpc), signer), "0x" + parsed.adjudicator.hex())
        nonce = client.deposit(parsed.channel_id, chosen, parse_e9(amount), account or signer.address)
    except (SettlementError, ValueError) as exc:
        raise _fail(exc) from exc
    typer.echo(f"deposit {nonce}: {amount} {token}")


def status_command(
    genesis: Annotated[Path, typer.Option("--genesis", help="The channel's genesis TOML.")],
    rpc: RpcOption = DEFAULT_RPC,
) -> None:
    """Show the channel's on-chain status and pending settlement."""
    parsed = load_genesis(genesis)
    try:
        chain = RpcChain(rpc)
        client = AdjudicatorClient(Sender(chain, Account.create()), "0x" + parsed.adjudicator.hex())
        info = client.channel(parsed.channel_id)
        typer.echo(f"status {info.status}, deposit nonce {info.deposit_nonce}, insurance {info.insurance} wei")
        if info.status in ("pending", "concluded"):
            s = client.settlement(parsed.channel_id)
            typer.echo(f"settlement v{s.version}, root 0x{s.payout_root.hex()}, final at {s.finalizes_at}")
    except SettlementError as exc:
        raise _fail(exc) from exc


def main() -> None:
    app = typer.Typer(help="Parley settlement commands.", no_args_is_help=True)
    register(app)
    app()


if __name__ == "__main__":
    main()
