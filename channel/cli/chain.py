"""``parley exit`` and ``parley chain …``: the settlement commands of the CLI.

`register(app)` adds them to the main typer app (channel/cli.py). ``python -m channel.cli.chain``
runs them on their own.

Invariants: a command never prints a private key or password; keys come from a v3 keystore
(``--key-file``, password from ``--password-file`` or a prompt) or from the environment
variable ``PARLEY_PRIVATE_KEY``, never from an argument (arguments end up in shell history and
in ``ps``). Errors of the settlement layer are shown as one line and exit with code 1.
"""

from __future__ import annotations

import json
import os
from decimal import Decimal, InvalidOperation, localcontext
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from channel.cli.console import Output, command_group, fail, user_errors
from crdt.units import format_e9, to_e9
from settlement.errors import ContractReverted, NoContract, SettlementError

if TYPE_CHECKING:  # the chain and key libraries are imported by the commands that use them (start-up time)
    from eth_account.signers.local import LocalAccount

    from crdt.certificate import Certificate
    from crdt.genesis import Genesis
    from settlement.client import AdjudicatorClient, Sender

KEY_ENV = "PARLEY_PRIVATE_KEY"
DEFAULT_RPC = "http://127.0.0.1:8545"

EXIT_HELP = """Leave the channel on your own, with the newest certificate you hold.

The flow, which needs no other participant to be online:

  1. propose the newest certificate's checkpoint to the adjudicator (or challenge an older
     pending proposal with it, or reuse a pending proposal that is at least as new);

  2. wait out the dispute window, showing its progress;

  3. finalize the settlement (the channel concludes at that checkpoint);

  4. claim your payout in every token with your Merkle proof, the rest of your withdrawals, and
     a refund of each of your deposits that the final checkpoint did not credit.

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
    from channel.runtime.genesis_file import load_genesis as read_genesis

    try:
        return read_genesis(path)
    except UserError as exc:
        raise typer.BadParameter(str(exc)) from exc


def load_certificates(paths: list[Path]) -> list[Certificate]:
    from channel.runtime.store import CERTIFICATES_DIR
    from crdt.certificate import Certificate
    from crdt.errors import InvalidInput

    found = []
    for path in paths:
        if (path / CERTIFICATES_DIR).is_dir():
            path = path / CERTIFICATES_DIR  # a node's data directory
        files = sorted(path.glob("*.cbor")) if path.is_dir() else [path]
        if not files:
            raise typer.BadParameter(f"no certificate files in {path}")
        for file in files:
            try:
                found.append(Certificate.decode(file.read_bytes()))
            except (OSError, InvalidInput) as exc:
                raise typer.BadParameter(f"cannot read the certificate {file}: {exc}") from exc
    return found


def load_account(key_file: Path | None, password_file: Path | None) -> LocalAccount:
    from eth_account import Account

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


def parse_wei(text: str) -> int:
    """A decimal amount of the chain's native currency ("0.5" ether) in wei, exactly."""
    try:
        with localcontext() as context:
            context.prec = 120
            value = Decimal(text.strip()[:80]) * 10**18
    except InvalidOperation as exc:
        raise typer.BadParameter(f"not a decimal amount: {text[:40]!r}") from exc
    if not value.is_finite() or value <= 0 or value != value.to_integral_value():
        raise typer.BadParameter(f"not a positive amount of whole wei: {text[:40]!r}")
    return int(value)


def format_wei(wei: int) -> str:
    """Wei as a decimal amount of the native currency."""
    whole, rest = divmod(wei, 10**18)
    return f"{whole}.{rest:018d}".rstrip("0") if rest else str(whole)


def open_client(
    genesis: Path, rpc: str, key_file: Path | None, password_file: Path | None, *, signer: bool = True
) -> tuple[Genesis, AdjudicatorClient]:
    """The genesis and its adjudicator, acting as the user's account (or a throwaway one, to
    read); refuses a chain other than the genesis's."""

    from eth_account import Account

    from settlement.chain import RpcChain
    from settlement.client import Sender

    parsed = load_genesis(genesis)
    account = load_account(key_file, password_file) if signer else Account.create()
    chain = RpcChain(rpc)
    if chain.chain_id != parsed.chain_id:
        raise SettlementError(f"{rpc} is chain {chain.chain_id}, the genesis is for chain {parsed.chain_id}")
    return parsed, adjudicator_at(Sender(chain, account), parsed)


def adjudicator_at(sender: Sender, genesis: Genesis) -> AdjudicatorClient:
    """The genesis's adjudicator, once the chain shows code at its address (a call to an address
    without code "succeeds" with no data, which would surface as a confusing decode error)."""

    from settlement.chain import retrying
    from settlement.client import AdjudicatorClient, checksum

    address = checksum("0x" + genesis.adjudicator.hex())
    code = retrying(lambda: sender.w3.eth.get_code(address), what="get_code")  # type: ignore[arg-type]
    if not code:
        raise NoContract(f"no contract at the genesis's adjudicator {address} on chain {sender.chain.chain_id}")
    return AdjudicatorClient(sender, address)


def print_leaves(genesis: Genesis, leaves: list[Any], verb: str, console: Console) -> None:
    decimals = {token.address: (token.symbol, token.decimals) for token in genesis.tokens}
    for leaf in leaves:
        symbol, places = decimals[leaf.token]
        console.print(f"{verb} {format_e9(to_e9(leaf.amount, places))} {symbol}")


def leaves_json(genesis: Genesis, leaves: list[Any]) -> list[dict[str, str]]:
    """Payout leaves as JSON: the token's symbol and the amount in e9 (a decimal string)."""
    decimals = {token.address: (token.symbol, token.decimals) for token in genesis.tokens}
    return [{"token": decimals[leaf.token][0], "amount": str(to_e9(leaf.amount, decimals[leaf.token][1]))}
            for leaf in leaves]


RpcOption = Annotated[str, typer.Option("--rpc", envvar="ETH_RPC_URL",
                                         help="JSON-RPC URL of the chain (anvil, a testnet, mainnet).")]
KeyFileOption = Annotated[
    Path | None, typer.Option("--key-file", envvar="ETH_KEYSTORE", help="Ethereum v3 keystore JSON of your account.")
]
PasswordFileOption = Annotated[
    Path | None, typer.Option("--password-file", help="File holding the keystore password.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object (amounts as decimal strings).")]
CertificateOption = Annotated[
    list[Path], typer.Option("--certificate", help="A certificate file (CBOR), a folder of *.cbor, or a node's data "
                 "directory (its certificates/ folder); repeatable.")
]


def serve_command(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0 picks a free one).")] = 8545,
    block_time: Annotated[float, typer.Option(help="Mine a block this often, in seconds (0: only on transactions).")]
    = 1.0,
    config_out: Annotated[Path | None, typer.Option(
        help="Also write the URL, chain id and funded accounts with their keys as JSON here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Once serving, print the URL, chain id and funded accounts "
                                          "as one JSON line (what --config-out writes) instead of text.")] = False,
) -> None:
    """Serve the embedded chain (eth-tester + py-evm) over JSON-RPC on 127.0.0.1, with anvil's
    evm_increaseTime / evm_mine / evm_snapshot / evm_revert, until Ctrl-C. Prints its funded
    development accounts and their well-known private keys, as anvil does (never use them on a
    real network)."""
    import trio

    from settlement.server import ChainServer, dev_accounts, serve_chain

    server = ChainServer()
    accounts = dev_accounts(server.chain)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(partial(serve_chain, "127.0.0.1", port, server=server, block_time=block_time))
            chain_id = server.chain.chain_id
            config = {"url": url, "chain_id": chain_id,
                      "accounts": [{"address": a, "private_key": k, "wei": str(w)} for a, k, w in accounts]}
            if config_out is not None:
                config_out.write_text(json.dumps(config, indent=2) + "\n")
            if as_json:
                print(json.dumps(config), flush=True)  # one line: scripts wait for it
                return
            for index, (address, key, wei) in enumerate(accounts):
                print(f"({index}) {address} {format_wei(wei)} ETH  key {key}")
            print(f"chain id {chain_id}")
            print(f"embedded chain on {url}", flush=True)  # the last line: scripts wait for it

    trio.run(main)


def fund_command(
    address: Annotated[str, typer.Argument(help="The account to fund (any case).")],
    eth: Annotated[str, typer.Option(help="How much native currency, e.g. 10 or 0.5.")] = "10",
    rpc: RpcOption = DEFAULT_RPC,
    as_json: JsonOption = False,
) -> None:
    """Send native currency to an account from the chain's first unlocked account (development
    chains: anvil, `parley chain serve`)."""

    from settlement.chain import RpcChain
    from settlement.client import checksum

    wei = parse_wei(eth)
    try:
        chain = RpcChain(rpc)
        target = checksum(address)
        chain.fund(target, wei)
        balance = chain.w3.eth.get_balance(target)  # type: ignore[arg-type]
    except (SettlementError, ValueError) as exc:
        raise _fail(exc) from exc
    out = Output(as_json)
    out.say(f"funded {target} with {format_wei(wei)} ETH; it holds {format_wei(int(balance))} ETH",
            account=target, funded_wei=str(wei), balance_wei=str(int(balance)))
    out.done()


def mint_command(
    token: Annotated[str, typer.Option(help="The test token's address (from deploy.json).")],
    to: Annotated[str, typer.Option(help="Who gets the tokens (any case).")],
    amount: Annotated[str, typer.Option(help="Decimal amount in tokens, e.g. 250.")],
    rpc: RpcOption = DEFAULT_RPC,
    key_file: KeyFileOption = None,
    password_file: PasswordFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Mint Parley's test ERC-20 (contracts/src/test/TestToken.sol, which anyone may mint);
    a real token has no such function."""

    from settlement.chain import RpcChain
    from settlement.client import Sender, TestTokenClient, checksum

    signer = load_account(key_file, password_file)
    try:
        client = TestTokenClient(Sender(RpcChain(rpc), signer), token)
        decimals = client.decimals()
        with localcontext() as context:
            context.prec = 120
            units = Decimal(amount.strip()[:80]) * 10**decimals
        if not units.is_finite() or units <= 0 or units != units.to_integral_value():
            raise typer.BadParameter(f"not a positive amount with at most {decimals} decimals: {amount[:40]!r}")
        client.mint(to, int(units))
        held = client.balance_of(to)
    except InvalidOperation as exc:
        raise typer.BadParameter(f"not a decimal amount: {amount[:40]!r}") from exc
    except (SettlementError, ValueError) as exc:
        raise _fail(exc) from exc
    out = Output(as_json)
    out.say(f"minted {amount} to {checksum(to)}; it holds {format_e9(to_e9(held, decimals))}",
            token=client.address, to=checksum(to), minted=str(int(units)), balance=str(held), decimals=decimals)
    out.done()


def register(app: typer.Typer) -> None:
    """Add ``exit`` and the ``chain`` sub-app to `app`, each command in the CLI's one error style."""
    app.command("exit", help=EXIT_HELP)(user_errors(exit_command))
    chain_app = command_group(
        help="Talk to the adjudicator directly: deploy, open, deposit, bonds, withdrawals, refunds, slashing."
    )
    chain_app.command("deploy")(user_errors(deploy_command))
    chain_app.command("open")(user_errors(open_command))
    chain_app.command("deposit")(user_errors(deposit_command))
    chain_app.command("status")(user_errors(status_command))
    chain_app.command("bond")(user_errors(bond_command))
    chain_app.command("unbond")(user_errors(unbond_command))
    chain_app.command("withdraw-bond")(user_errors(withdraw_bond_command))
    chain_app.command("claim-withdrawals")(user_errors(claim_withdrawals_command))
    chain_app.command("refund")(user_errors(refund_command))
    chain_app.command("slash")(user_errors(slash_command))
    chain_app.command("serve")(user_errors(serve_command))
    chain_app.command("fund")(user_errors(fund_command))
    chain_app.command("mint")(user_errors(mint_command))
    app.add_typer(chain_app, name="chain")


def _fail(exc: Exception) -> typer.Exit:
    return fail(exc)  # the CLI's one error style


def exit_command(
    genesis: Annotated[Path, typer.Option("--genesis", help="The channel's genesis TOML.")],
    certificate: CertificateOption,
    rpc: RpcOption = DEFAULT_RPC,
    key_file: KeyFileOption = None,
    password_file: PasswordFileOption = None,
    poll_interval: Annotated[float, typer.Option(help="Seconds between checks while waiting.")] = 5.0,
    as_json: JsonOption = False,
) -> None:
    from settlement.client import address_bytes
    from settlement.exit import ExitEvent, run_exit

    certificates = load_certificates(certificate)
    console = Console(quiet=as_json)  # with --json: the progress and the lines stay quiet, the object is printed
    try:
        parsed, client = open_client(genesis, rpc, key_file, password_file)
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
                client, parsed, certificates, address_bytes(client.sender.address), report=report,
                poll_interval=poll_interval,
            )
    except SettlementError as exc:
        raise _fail(exc) from exc
    print_leaves(parsed, result.claimed, "claimed", console)
    print_leaves(parsed, result.already_claimed, "already claimed", console)
    for nonce in result.refunded:
        console.print(f"refunded deposit {nonce}")
    console.print(f"[green]exit complete[/green] at checkpoint v{result.version}")
    Output(as_json).done(version=result.version, claimed=leaves_json(parsed, result.claimed),
                         already_claimed=leaves_json(parsed, result.already_claimed), refunded=result.refunded)


def deploy_command(
    rpc: RpcOption = DEFAULT_RPC,
    key_file: KeyFileOption = None,
    password_file: PasswordFileOption = None,
    test_token: Annotated[
        int | None, typer.Option(help="Also deploy a mintable test ERC-20 with these decimals.")
    ] = None,
    symbol: Annotated[str, typer.Option(help="The test token's symbol in the channel (with --test-token).")] = "USDC",
    out: Annotated[Path, typer.Option(help="Write the chain id and addresses here, for genesis new --from-deploy.")]
    = Path("deploy.json"),
    as_json: JsonOption = False,
) -> None:
    """Deploy the adjudicator (from the committed artifacts) and print its address; write
    deploy.json (chain id, adjudicator, test token) for `parley genesis new --from-deploy`."""

    from settlement.chain import RpcChain
    from settlement.client import AdjudicatorClient, Sender, TestTokenClient

    account = load_account(key_file, password_file)
    output = Output(as_json)
    try:
        chain = RpcChain(rpc)
        sender = Sender(chain, account)
        adjudicator = AdjudicatorClient.deploy(sender)
        output.say(f"adjudicator {adjudicator.address}")
        deployed: dict[str, Any] = {"chain_id": chain.chain_id, "rpc": rpc, "adjudicator": adjudicator.address,
                                    "tokens": []}
        if test_token is not None:
            token = TestTokenClient.deploy(sender, "Test token", "TEST", test_token)
            output.say(f"test token {token.address} ({test_token} decimals)")
            deployed["tokens"].append({"symbol": symbol, "address": token.address, "decimals": test_token})
    except SettlementError as exc:
        raise _fail(exc) from exc
    try:
        out.write_text(json.dumps(deployed, indent=2) + "\n")
    except OSError as exc:
        raise _fail(exc) from exc
    output.say(f"wrote {out}", **deployed, deploy_json=str(out))
    output.done()


def open_command(
    genesis: Annotated[Path, typer.Option("--genesis", help="The channel's genesis TOML.")],
    rpc: RpcOption = DEFAULT_RPC,
    key_file: KeyFileOption = None,
    password_file: PasswordFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Open the genesis's channel on its adjudicator (the ids must match)."""

    from settlement.chain import RpcChain
    from settlement.client import Sender

    parsed = load_genesis(genesis)
    account = load_account(key_file, password_file)
    try:
        client = adjudicator_at(Sender(RpcChain(rpc), account), parsed)
        channel = client.open_genesis(parsed)
    except SettlementError as exc:
        raise _fail(exc) from exc
    output = Output(as_json)
    output.say(f"channel 0x{channel.hex()} open", channel=f"0x{channel.hex()}", status="open")
    output.done()


def deposit_command(
    genesis: Annotated[Path, typer.Option("--genesis", help="The channel's genesis TOML.")],
    token: Annotated[str, typer.Option(help="Token symbol from the genesis.")],
    amount: Annotated[str, typer.Option(help="Decimal amount, e.g. 12.5.")],
    rpc: RpcOption = DEFAULT_RPC,
    key_file: KeyFileOption = None,
    password_file: PasswordFileOption = None,
    account: Annotated[str | None, typer.Option(help="Credit this participant (default: yourself).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Deposit into the channel (approving the adjudicator first if needed)."""

    from crdt.units import parse_e9
    from settlement.chain import RpcChain
    from settlement.client import Sender

    parsed = load_genesis(genesis)
    chosen = parsed.token(token)
    if chosen is None:
        raise typer.BadParameter(f"no token {token!r} in the genesis")
    signer = load_account(key_file, password_file)
    try:
        client = adjudicator_at(Sender(RpcChain(rpc), signer), parsed)
        nonce = client.deposit(parsed.channel_id, chosen, parse_e9(amount), account or signer.address)
    except (SettlementError, ValueError) as exc:
        raise _fail(exc) from exc
    output = Output(as_json)
    output.say(f"deposit {nonce}: {amount} {token}", nonce=nonce, token=token, amount=str(parse_e9(amount)),
               account=account or signer.address)
    output.done()


GenesisOption = Annotated[Path, typer.Option("--genesis", help="The channel's genesis TOML.")]


def status_command(genesis: GenesisOption, rpc: RpcOption = DEFAULT_RPC, as_json: JsonOption = False) -> None:
    """Show the channel's on-chain status: bonds, deposits per token, the finalised checkpoint
    and the one in dispute."""
    output = Output(as_json)
    try:
        parsed, client = open_client(genesis, rpc, None, None, signer=False)
        channel = parsed.channel_id
        info = client.channel(channel)
        output.say(
            f"status {info.status}, deposit nonce {info.deposit_nonce}, "
            f"bonded {info.fully_bonded}/{len(info.participants)} (min {format_wei(info.min_bond)}), "
            f"insurance {format_wei(info.insurance)}",
            channel=f"0x{channel.hex()}", status=info.status, deposit_nonce=info.deposit_nonce,
            bonded=info.fully_bonded, participants=len(info.participants), min_bond_wei=str(info.min_bond),
            insurance_wei=str(info.insurance),
        )
        for token in parsed.tokens:
            deposited, claimed, refunded, withdrawn = client.token_totals(channel, "0x" + token.address.hex())
            e9 = [str(to_e9(value, token.decimals)) for value in (deposited, claimed, refunded, withdrawn)]
            output.add("tokens", {"symbol": token.symbol, "deposited": e9[0], "claimed": e9[1], "refunded": e9[2],
                                  "withdrawn": e9[3]},
                       f"{token.symbol}: deposited {format_e9(int(e9[0]))}, claimed {format_e9(int(e9[1]))}, "
                       f"refunded {format_e9(int(e9[2]))}, withdrawn {format_e9(int(e9[3]))}")
        final = client.finalized(channel)
        output.fields["finalized"] = None
        if final.version:
            output.say(f"finalised v{final.version}, credits deposits to {final.deposit_nonce}, "
                       f"root 0x{final.payout_root.hex()}",
                       finalized={"version": final.version, "deposit_nonce": final.deposit_nonce,
                                  "payout_root": f"0x{final.payout_root.hex()}"})
        output.fields["disputing"] = None
        if info.disputing:
            pending = client.settlement(channel)
            output.say(f"in dispute v{pending.version}, root 0x{pending.payout_root.hex()}, final at "
                       f"{pending.finalizes_at}",
                       disputing={"version": pending.version, "payout_root": f"0x{pending.payout_root.hex()}",
                                  "finalizes_at": pending.finalizes_at})
    except SettlementError as exc:
        raise _fail(exc) from exc
    output.done()


def bond_command(
    genesis: GenesisOption,
    amount: Annotated[
        str | None, typer.Option(help="Native currency to add, e.g. 0.5 (default: what is missing to the minimum).")
    ] = None,
    rpc: RpcOption = DEFAULT_RPC,
    key_file: KeyFileOption = None,
    password_file: PasswordFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Bond native currency in the channel. Deposits open once every participant has bonded the
    channel's minimum; a participant below it has no voice in checkpoints the contract accepts."""
    output = Output(as_json)
    try:
        parsed, client = open_client(genesis, rpc, key_file, password_file)
        have = client.bond_of(parsed.channel_id, client.sender.address).bonded
        if amount is not None:
            wei = parse_wei(amount)
        else:
            wei = max(0, client.channel(parsed.channel_id).min_bond - have)
            if wei == 0:
                output.say(f"bonded {format_wei(have)}, the minimum already", bonded_wei=str(have), added_wei="0")
                output.done()
                return
        client.bond(parsed.channel_id, wei)
    except SettlementError as exc:
        raise _fail(exc) from exc
    output.say(f"bonded {format_wei(have + wei)}", bonded_wei=str(have + wei), added_wei=str(wei))
    output.done()


def unbond_command(
    genesis: GenesisOption,
    amount: Annotated[str | None, typer.Option(help="How much to unbond (default: all of it).")] = None,
    rpc: RpcOption = DEFAULT_RPC,
    key_file: KeyFileOption = None,
    password_file: PasswordFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Start unbonding: the amount stays slashable for one dispute window, then `withdraw-bond`
    pays it. Not while the channel is closing."""
    try:
        parsed, client = open_client(genesis, rpc, key_file, password_file)
        me = client.sender.address
        wei = parse_wei(amount) if amount is not None else client.bond_of(parsed.channel_id, me).bonded
        client.unbond(parsed.channel_id, wei)
        ready = client.bond_of(parsed.channel_id, me).ready_at
    except SettlementError as exc:
        raise _fail(exc) from exc
    output = Output(as_json)
    output.say(f"unbonding {format_wei(wei)}, withdrawable from {ready} (chain time)", unbonding_wei=str(wei),
               ready_at=ready)
    output.done()


def withdraw_bond_command(
    genesis: GenesisOption,
    rpc: RpcOption = DEFAULT_RPC,
    key_file: KeyFileOption = None,
    password_file: PasswordFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Withdraw what finished unbonding."""
    try:
        parsed, client = open_client(genesis, rpc, key_file, password_file)
        wei = client.bond_of(parsed.channel_id, client.sender.address).unbonding
        client.withdraw_bond(parsed.channel_id)
    except SettlementError as exc:
        raise _fail(exc) from exc
    output = Output(as_json)
    output.say(f"withdrew {format_wei(wei)}", withdrew_wei=str(wei))
    output.done()


def claim_withdrawals_command(
    genesis: GenesisOption,
    certificate: CertificateOption,
    rpc: RpcOption = DEFAULT_RPC,
    key_file: KeyFileOption = None,
    password_file: PasswordFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Claim what your withdrawals in the channel added since your last claim, against the
    newest finalised checkpoint (give its certificate). The channel stays open."""

    from settlement.client import address_bytes
    from settlement.exit import ExitResult, claim_leaves, usable_certificates

    certificates = load_certificates(certificate)
    try:
        parsed, client = open_client(genesis, rpc, key_file, password_file)
        final = client.finalized(parsed.channel_id)
        if final.version == 0:
            raise SettlementError("no checkpoint of this channel is finalised on-chain yet")
        usable = usable_certificates(parsed, certificates)
        matching = [c for c in usable if c.checkpoint.payout_root == final.payout_root]
        if not matching:
            raise SettlementError(f"no certificate given is the finalised checkpoint v{final.version}")
        me = address_bytes(client.sender.address)
        result = ExitResult(version=final.version)
        claim_leaves(client, parsed.channel_id, matching[0], me, result, lambda event: None)
        paid = {leaf.token: client.withdrawal_paid(parsed.channel_id, me, leaf.token) for leaf in result.claimed}
    except SettlementError as exc:
        raise _fail(exc) from exc
    output = Output(as_json)
    output.fields.update(version=final.version, withdrawn={})
    for token in parsed.tokens:
        if token.address in paid:
            e9 = to_e9(paid[token.address], token.decimals)
            output.fields["withdrawn"][token.symbol] = str(e9)
            output.say(f"withdrawn {format_e9(e9)} {token.symbol} in all")
    if not paid:
        output.say(f"nothing to claim at v{final.version}")
    output.done()


def refund_command(
    genesis: GenesisOption,
    nonce: Annotated[list[int] | None, typer.Option(help="A deposit nonce (default: all of yours); repeatable.")]
    = None,
    rpc: RpcOption = DEFAULT_RPC,
    key_file: KeyFileOption = None,
    password_file: PasswordFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """After the channel concluded, refund deposits that its final checkpoint did not credit
    (to the account they were made for; anyone may send this)."""

    from settlement.client import address_bytes
    from settlement.exit import ExitResult, refund_deposits

    try:
        parsed, client = open_client(genesis, rpc, key_file, password_file)
        channel = parsed.channel_id
        if client.channel(channel).status != "concluded":
            raise SettlementError("refunds wait until the channel concluded (a later checkpoint may credit them)")
        result = ExitResult()
        if nonce:
            for chosen in nonce:
                client.refund_deposit(channel, chosen)
                result.refunded.append(chosen)
        else:
            credited = client.finalized(channel).deposit_nonce
            refund_deposits(client, channel, address_bytes(client.sender.address), credited, result, lambda e: None)
    except SettlementError as exc:
        raise _fail(exc) from exc
    output = Output(as_json)
    output.fields["refunded"] = []
    for done in result.refunded:
        output.add("refunded", done, f"refunded deposit {done}")
    if not result.refunded:
        output.say("no deposit of yours to refund")
    output.done()


EVIDENCE_FIELDS = ("channel", "author", "seq", "content_hash_a", "signature_a", "content_hash_b", "signature_b")


def slash_command(
    genesis: GenesisOption,
    evidence: Annotated[
        Path, typer.Option(help="JSON evidence, as `parley evidence --json` prints it (one item or a list).")
    ],
    rpc: RpcOption = DEFAULT_RPC,
    key_file: KeyFileOption = None,
    password_file: PasswordFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Slash a participant's bond with evidence of equivocation (two operations signed for one
    seq): half to you, half to the channel's insurance. Each evidence pays once."""

    from web3.logs import DISCARD

    from settlement.client import checksum

    try:
        items = json.loads(evidence.read_text()[:1_000_000])
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(f"cannot read {evidence}: {exc}") from exc
    found = [item for item in (items if isinstance(items, list) else [items])
             if isinstance(item, dict) and item.get("kind") == "equivocation"]
    if not found:  # double votes are evidence for peers, not for the contract
        raise typer.BadParameter(f"{evidence} holds no equivocation evidence")
    output = Output(as_json)
    output.fields["slashed"] = []
    try:
        parsed, client = open_client(genesis, rpc, key_file, password_file)
        for item in found:
            try:
                values = [item[name] for name in EVIDENCE_FIELDS]
                channel, author, seq = bytes.fromhex(values[0][2:]), checksum(values[1]), int(values[2])
                proofs = [bytes.fromhex(value[2:]) for value in values[3:]]
            except (KeyError, TypeError, ValueError) as exc:
                raise typer.BadParameter(f"malformed equivocation evidence: {exc}") from exc
            if channel != parsed.channel_id:
                raise SettlementError("the evidence is for another channel")
            try:
                receipt = client.sender.transact(
                    client.contract.functions.slashEquivocation(channel, author, seq, *proofs)
                )
            except ContractReverted as reverted:
                if reverted.name not in ("EvidenceUsed", "NothingToSlash"):
                    raise
                output.add("slashed", {"author": author, "seq": seq, "result": reverted.name},
                           f"{author} at seq {seq}: {reverted.name}")
                continue
            (event,) = client.contract.events.Slashed().process_receipt(receipt, errors=DISCARD)
            output.add("slashed", {"author": author, "seq": seq, "result": "slashed",
                                   "to_reporter_wei": str(event["args"]["toReporter"]),
                                   "to_insurance_wei": str(event["args"]["toInsurance"])},
                       f"slashed {author} at seq {seq}: {format_wei(event['args']['toReporter'])} to you, "
                       f"{format_wei(event['args']['toInsurance'])} to the insurance")
    except SettlementError as exc:
        raise _fail(exc) from exc
    output.done()


def main() -> None:
    app = command_group(help="Parley settlement commands.")
    register(app)
    app()


if __name__ == "__main__":
    main()
