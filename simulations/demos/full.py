"""``parley demo``: the whole life of a channel, on one embedded chain and four node processes.

1. an embedded chain (eth-tester + py-evm) is served on 127.0.0.1; the adjudicator and a
   6-decimal USDC-like test token are deployed; the channel is opened and every participant
   deposits 1,000 USDC, which the first checkpoint credits;
2. four nodes run over libp2p; node 3 is Byzantine: it signs a second operation for every seq
   it uses (equivocation) and signs operations replay must reject;
3. transfers flow through the nodes' local APIs; checkpoints are certified by BFT consensus
   and proposed on-chain by a rotating submitter, and the channel stays open;
4. a participant withdraws 100 USDC; one dispute window later (the demo moves the embedded
   chain's clock forward) the nodes finalise the checkpoint that holds it, and the participant
   claims it on-chain while the channel carries on: a new deposit is credited, trading goes on;
5. the Byzantine node is stopped, and the other three keep finalising (3 is the threshold);
6. a participant takes the newest certificate from their node, everyone goes offline, and
   ``parley exit`` closes the channel with it, waits out the dispute window, finalises and
   claims the participant's USDC.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import trio
from eth_account import Account
from rich.console import Console
from rich.table import Table

from channel.api.client import Client, Endpoint
from channel.runtime import keystore
from channel.runtime.chain_worker import ChainConfig
from crdt.certificate import Certificate
from crdt.genesis import Role, Token
from crdt.units import format_e9
from settlement.chain import RpcChain
from settlement.client import AdjudicatorClient, Sender, TestTokenClient, address_bytes, checksum
from settlement.exit import ExitResult, claim_leaves
from settlement.server import ChainServerProcess
from simulations.cluster import CLUSTER_PASSWORD, NodeProcess, create_cluster, start_all, stop_all, wait_until
from simulations.demos.network import converge, node_table, progress_bar, run_workload, seeded_plan
from simulations.fixtures import deploy

E9 = 10**9
DEPOSIT = 1_000 * E9
WITHDRAWAL = 100 * E9
LATE_DEPOSIT = 50 * E9


def _is_final(client: Client, op_id: str) -> bool:
    return bool(client.status(op_id)["status"] == "final")


def _free_is(client: Client, account: str, amount: int) -> bool:
    return int(client.balances(account)[account]["USDC"]["free"]) == amount


def _same_roots(endpoints: list[Endpoint]) -> tuple[str, str] | None:
    """The nodes' (state hash, payout root) when they all agree, else None."""
    roots = {(s["state_hash"], s["payout_root"]) for s in (_stats(endpoint) for endpoint in endpoints)}
    return next(iter(roots)) if len(roots) == 1 else None


def _stats(endpoint: Endpoint) -> dict[str, Any]:
    with Client(endpoint) as client:
        result: dict[str, Any] = client.stats()
        return result


def run_full_demo(*, transfers: int = 300, seed: int = 0, folder: Path | None = None, quiet: bool = False
                  ) -> dict[str, Any]:
    console = Console(quiet=quiet)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="parley-demo-") as tmp:
        root = folder or Path(tmp)
        console.rule("[bold]Parley demo[/bold]: 4 nodes, one Byzantine, settled on an embedded chain")
        server = ChainServerProcess()
        processes: list[NodeProcess] = []
        try:
            chain = RpcChain(server.url)
            deployment = deploy(chain)
            adjudicator, usdc, token, deployer = (
                deployment.adjudicator, deployment.usdc, deployment.token, deployment.deployer.account
            )
            console.print(f"chain {server.url} (id {chain.chain_id}): adjudicator {adjudicator.address}, "
                          f"USDC {usdc.address}")
            cluster = create_cluster(
                root, 4, tokens=[token], initial=0, roles=[Role.MARKET_MAKER] + [Role.TRADER] * 3,
                finality_interval=0.5, byzantine={3: ("equivocate", "invalid")},
                node_chain=ChainConfig(rpc=server.url, confirmations=1, settle_every=1, poll_interval=0.3),
                chain_id=chain.chain_id, adjudicator=adjudicator.address_bytes, dispute_window=3600,
            )
            genesis = cluster.genesis
            channel = adjudicator.open_genesis(genesis)
            usdc.mint(deployer.address, (4 * DEPOSIT + LATE_DEPOSIT) // 1000)
            accounts = ["0x" + p.address.hex() for p in genesis.participants]
            for account in accounts:
                chain.fund(checksum(account), 10**20)  # gas for proposals, challenges and the exit
                adjudicator.deposit(channel, token, DEPOSIT, account)
            console.print(f"channel 0x{channel.hex()[:16]}… opened; 4 deposits of {format_e9(DEPOSIT)} USDC")

            processes = [cluster.process(i) for i in range(4)]
            endpoints = start_all(processes)
            clients = [Client(endpoint) for endpoint in endpoints]
            for client in clients:
                wait_until(partial(_free_is, client, accounts[0], DEPOSIT), 60, "the deposits to be credited")
            console.print("[green]1.[/green] 4 nodes up; the deposits are credited by checkpoint "
                          f"{_stats(endpoints[0])['version']}")

            plan = [(node, 5_000 * E9 if node == 3 and i % 8 == 3 else amount)  # node 3 overdraws now and then
                    for i, (node, amount) in enumerate(seeded_plan(4, transfers, seed))]
            with progress_bar(console) as progress:
                workload = trio.run(run_workload, endpoints, accounts, plan, 2, progress)
            stats, _ = trio.run(converge, endpoints, workload.accepted)
            console.print(node_table(stats, {3: " byz"}))
            for client in clients[:3]:  # a node's newest operation has all its earlier ones in its past
                for index in range(3):
                    wait_until(partial(_is_final, client, workload.last[index][1]), 60, "the transfers to be final")
            honest = _stats(endpoints[0])
            same = "all 4 nodes hold the same state" if len({s["state_hash"] for s in stats}) == 1 else (
                "[red]the nodes did NOT converge[/red]")
            console.print(f"[green]2.[/green] {workload.accepted} transfers through the 4 APIs, a quarter by the "
                          f"Byzantine node, which signs an equivocating twin of each; {same}; final at checkpoint "
                          f"{honest['version']}\n   {workload.summary()}")
            evidence = clients[0].evidence()
            console.print(f"   evidence: {len(evidence)} equivocations by {accounts[3][:10]}…; "
                          f"rejected in replay on every node: {honest['rejected_reasons']}")
            final = honest["version"]  # decided; its certificate forms once the commits are in
            wait_until(lambda: _stats(endpoints[0])["certified"] >= final, 60, "the certificate")
            wait_until(lambda: adjudicator.settlement(channel).version >= final, 60, "the proposal on-chain")
            settled = adjudicator.settlement(channel).version
            console.print(f"[green]3.[/green] checkpoint {settled} is proposed on-chain by its designated "
                          f"submitter (status {adjudicator.channel(channel).status}: the channel stays open)")

            withdrawal = _withdraw_and_claim(console, root, chain, adjudicator, usdc, clients, endpoints, accounts,
                                             channel, token)

            processes[3].stop()
            before = _stats(endpoints[0])["version"]
            more = [clients[i % 3].transfer(accounts[(i + 1) % 3], "USDC", E9 // 100) for i in range(30)]
            for client in clients[:3]:
                wait_until(partial(_is_final, client, more[-1]["op_id"]), 60, "finality without node 3")
            after = _stats(endpoints[0])["version"]
            console.print(f"[green]5.[/green] Byzantine node stopped; the other 3 keep finalising: checkpoint "
                          f"{before} → {after}")
            roots = wait_until(partial(_same_roots, endpoints[:3]), 60, "the honest nodes to agree")
            console.print(f"   state hash  [bold]{roots[0]}[/bold]\n   payout root [bold]{roots[1]}[/bold] "
                          "(the same on the 3 running nodes)")

            user = 1
            decided = _stats(endpoints[user])["version"]  # its certificate forms a moment after the decision
            wait_until(lambda: _stats(endpoints[user])["certified"] >= decided, 60, "the newest certificate")
            newest = clients[user].certificate()
            exit_version = newest["version"]
            certificate = bytes.fromhex(newest["certificate"][2:])
            (root / "exit").mkdir(exist_ok=True)
            (root / "exit" / "newest.cbor").write_bytes(certificate)
            owed, _ = Certificate.decode(certificate).proof_for(address_bytes(accounts[user]), token.address)
            expected = owed.amount  # token units: what the certificate's balance leaf pays
            for client in clients:
                client.close()
            stop_all(processes)
            console.print(f"[green]6.[/green] every node is offline; participant {user} runs parley exit with its "
                          f"newest certificate (owed {expected / 10**6:,.6f} USDC)")
            paid = _exit(console, root, exit_version, server.url, accounts[user], usdc, adjudicator, chain, channel)
        finally:
            stop_all(processes)
            server.stop()
        ok = paid == expected
        table = Table(title="what happened")
        table.add_column("")
        table.add_column("")
        for key, value in (
            ("transfers submitted (all final)", str(workload.accepted + len(more))),
            ("rejected in replay (Byzantine)", str(honest["rejected"])),
            ("refused by the API", str(workload.refused)),
            ("equivocations detected", str(len(evidence))),
            ("checkpoints certified", str(after)),
            ("proposed on-chain while running", f"up to v{settled}"),
            ("withdrawn and claimed mid-run", f"{withdrawal / 10**6:,.6f} USDC (the channel stayed open)"),
            ("exit settled the channel at", f"v{exit_version}"),
            ("exit paid", f"{paid / 10**6:,.6f} USDC ({'correct' if ok else 'WRONG'})"),
            ("demo took", f"{time.monotonic() - began:.0f} s"),
        ):
            table.add_row(key, value)
        console.print(table)
        return {"converged": ok, "paid": paid, "expected": expected, "checkpoints": after, "withdrawn": withdrawal,
                "state_hash": roots[0], "payout_root": roots[1],
                "equivocations": len(evidence), "transfers": workload.accepted + len(more)}


def _withdraw_and_claim(console: Console, root: Path, chain: RpcChain, adjudicator: AdjudicatorClient,
                        usdc: TestTokenClient, clients: list[Client], endpoints: list[Endpoint], accounts: list[str],
                        channel: bytes, token: Token) -> int:
    """A participant withdraws while the channel runs, and claims it once a checkpoint holding
    the withdrawal is finalised on-chain; a new deposit shows the channel still open. Returns
    the token units claimed."""
    user = 2
    receipt = clients[user].submit("withdraw", {"token": "USDC", "amount": str(WITHDRAWAL)})
    wait_until(partial(_is_final, clients[user], receipt["op_id"]), 60, "the withdrawal to be final")
    holding = _stats(endpoints[user])["version"]
    wait_until(lambda: _stats(endpoints[user])["certified"] >= holding, 60, "its certificate")
    # The watchtowers keep the checkpoint in dispute the newest one certified, without moving
    # its deadline; one window later the designated node finalises it.
    wait_until(lambda: adjudicator.settlement(channel).version >= holding, 60, "the checkpoint on-chain")
    disputed = adjudicator.settlement(channel)
    chain.increase_time(disputed.finalizes_at - chain.now() + 1)
    wait_until(lambda: adjudicator.finalized(channel).version >= holding, 60, "the checkpoint to be finalised")
    finalized = adjudicator.finalized(channel).version
    certificate = Certificate.decode(bytes.fromhex(clients[user].certificate(finalized)["certificate"][2:]))
    key = keystore.load(keystore.find(root / "keys", address_bytes(accounts[user])), CLUSTER_PASSWORD)
    as_user = adjudicator.with_sender(Sender(chain, Account.from_key(key.private_key)))
    before = usdc.balance_of(accounts[user])
    claim_leaves(as_user, channel, certificate, address_bytes(accounts[user]), ExitResult(), lambda event: None)
    claimed = usdc.balance_of(accounts[user]) - before
    adjudicator.deposit(channel, token, LATE_DEPOSIT, accounts[0])  # deposits go on while the channel lives
    credited = int(clients[0].balances(accounts[0])[accounts[0]]["USDC"]["free"]) + LATE_DEPOSIT
    wait_until(partial(_free_is, clients[0], accounts[0], credited), 60, "the new deposit to be credited")
    console.print(f"[green]4.[/green] participant {user} withdrew {format_e9(WITHDRAWAL)} USDC; checkpoint "
                  f"v{finalized}, which holds it, was finalised on-chain one dispute window later (the demo moved the "
                  f"chain's clock) and it claimed {claimed / 10**6:,.6f} USDC to its wallet; the channel stays open: a "
                  f"new deposit of {format_e9(LATE_DEPOSIT)} USDC is credited by checkpoint "
                  f"v{_stats(endpoints[0])['version']}")
    return claimed


def _exit(console: Console, root: Path, version: int, url: str, account: str, usdc: TestTokenClient,
          adjudicator: AdjudicatorClient, chain: RpcChain, channel: bytes) -> int:
    """Run the real ``parley exit``; once its certificate (version `version`) is the pending
    proposal, move the chain's clock past the dispute window. Returns the USDC it was paid."""
    key_file = root / "keys" / f"{account}.json"
    before = usdc.balance_of(account)
    exit_run = subprocess.Popen(
        [sys.executable, "-m", "channel", "exit", "--genesis", str(root / "genesis.toml"),
         "--certificate", str(root / "exit"), "--rpc", url, "--key-file", str(key_file),
         "--password-file", str(root / "password")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
    )
    deadline = time.monotonic() + 120
    while exit_run.poll() is None and time.monotonic() < deadline:
        if adjudicator.channel(channel).status == "closing":
            pending = adjudicator.settlement(channel)
            remaining = pending.finalizes_at - chain.now()
            if pending.version == version and remaining >= 0:
                console.print(f"   the channel is closing at v{version}; moving the embedded chain's clock "
                              f"{remaining + 1} s forward, past the dispute window")
                chain.increase_time(remaining + 1)
        time.sleep(0.5)
    if exit_run.poll() is None:
        exit_run.kill()
    output = exit_run.communicate(timeout=30)[0]
    for line in output.strip().splitlines()[-4 if exit_run.returncode == 0 else -40:]:
        console.print(f"   [dim]{line}[/dim]")
    return usdc.balance_of(account) - before
