"""``parley demo --perps``: a perpetual market on 4 node processes over libp2p, settled on an
embedded chain, with nothing to start by hand.

Node 0 is the oracle, node 1 a market maker, node 2 a trader, node 3 the liquidator; each
deposits 10,000 USDC on-chain, and the genesis has ETH-PERP on USDC (10% initial margin, 5%
maintenance, funding every 5 s of checkpoint time, a 10% circuit band). Everything goes through
the nodes' local APIs, the bots are the reference ones (`simulations.perp_bots`):

1. the oracle feeder posts 3,000; the maker, `parley bot maker`'s ccxt strategy (MakerBot),
   quotes a ladder a little above it;
2. the trader sends most of its USDC away and opens a long of 2.5 ETH on 1,000 USDC (7.5x);
3. funding runs: the book's bids above the oracle make longs pay;
4. a price shock (2,640: -12%) trips the circuit breaker: the trader's next order is refused
   ``market_halted``, and so is a liquidation, until the halt ends;
5. the trader, now below maintenance margin, is liquidated by the liquidator bot: the premium is
   split between the liquidator and the insurance pool, to the base unit;
6. every node is asked the same things: positions, funding index, accounts and payout root, which
   must agree;
7. every node goes offline, the liquidator (holding the long it took) runs ``parley exit`` with
   its newest certificate, the others claim, and a table shows each participant's arithmetic:
   its balance, debt, PnL at the oracle price, funding owed, and what the contract paid, equal
   to the certificate's leaf.

Steps 1 to 5 are `simulations.demos.perp_phase`, and the exit and its table
`simulations.demos.settle`: ``parley demo`` runs the same code beside its spot market.
"""

from __future__ import annotations

import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console

from channel.api.client import Client
from channel.runtime.chain_worker import ChainConfig
from crdt.genesis import Role
from crdt.units import format_e9
from settlement.chain import RpcChain
from settlement.client import checksum
from settlement.server import ChainServerProcess
from simulations.cluster import NodeProcess, create_cluster, start_all, stop_all, wait_until
from simulations.demos.full import _free_is
from simulations.demos.perp_phase import PERP, SYMBOL, PerpRoles, run_perp_phase, views_agree
from simulations.demos.settle import certified_state, claim, owed_by, run_exit, same_roots, settlement_table, wallets
from simulations.fixtures import deploy

__all__ = ["PERP", "SYMBOL", "run_perp_demo"]

E9 = 10**9
DEPOSIT = 10_000 * E9
ORACLE, MAKER, TRADER, LIQUIDATOR = range(4)
NAMES = ("oracle", "maker", "trader", "liquidator")
ROLES = PerpRoles(oracle=ORACLE, maker=MAKER, trader=TRADER, liquidator=LIQUIDATOR)


def run_perp_demo(*, seed: int = 0, folder: Path | None = None, quiet: bool = False) -> dict[str, Any]:
    console = Console(quiet=quiet)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="parley-perps-") as tmp:
        root = folder or Path(tmp)
        console.rule("[bold]Parley demo[/bold]: a perpetual market on 4 nodes (oracle, maker, trader, liquidator)")
        server = ChainServerProcess()
        processes: list[NodeProcess] = []
        try:
            chain = RpcChain(server.url)
            deployment = deploy(chain)
            adjudicator, usdc = deployment.adjudicator, deployment.tokens[0]
            wallet = deployment.erc20(usdc)
            cluster = create_cluster(
                root, 4, tokens=[usdc], initial=0, roles=[Role.ORACLE, Role.MARKET_MAKER, Role.TRADER, Role.LIQUIDATOR],
                markets=[PERP], finality_interval=0.5, seed=seed,
                node_chain=ChainConfig(rpc=server.url, confirmations=1, settle_every=1, poll_interval=0.3),
                chain_id=chain.chain_id, adjudicator=adjudicator.address_bytes, dispute_window=3600,
            )
            channel = adjudicator.open_genesis(cluster.genesis)
            wallet.mint(deployment.deployer.account.address, 4 * DEPOSIT // 1000)
            wallet.approve(adjudicator.address, 4 * DEPOSIT // 1000)
            accounts = ["0x" + p.address.hex() for p in cluster.genesis.participants]
            for account in accounts:
                chain.fund(checksum(account), 10**20)  # gas for proposals and the exit
                adjudicator.deposit(channel, usdc, DEPOSIT, account)
            processes = [cluster.process(i) for i in range(4)]
            endpoints = start_all(processes)
            clients = [Client(endpoint) for endpoint in endpoints]
            for client in clients:
                wait_until(partial(_free_is, client, accounts[ORACLE], "USDC", DEPOSIT), 60, "the deposits")
            console.print(f"chain {server.url}: channel 0x{channel.hex()[:16]}… with ETH-PERP on USDC; 4 deposits "
                          f"of {format_e9(DEPOSIT)} USDC, credited by the first checkpoint")
            found = run_perp_phase(console, clients, endpoints, accounts, processes[MAKER].data_dir, ROLES,
                                   lambda i: f"[green]{i}.[/green]")
            # the newest certificate holds everything (nothing is tentative any more): every node is asked then
            state = wait_until(partial(certified_state, clients[LIQUIDATOR], accounts), 60, "the newest certificate")
            certificate = state.certificate
            roots = wait_until(lambda: same_roots(endpoints), 60, "the nodes to agree")
            views, agree = views_agree(clients, accounts)
            verdict = "[green]all 4 nodes agree[/green]" if agree else "[red]the nodes DISAGREE[/red]"
            console.print(f"[green]6.[/green] {verdict} on positions, funding and margins; state hash "
                          f"{roots[0][:18]}…, payout root {roots[1][:18]}…")
            (root / "exit").mkdir(exist_ok=True)
            (root / "exit" / "newest.cbor").write_bytes(certificate.encode())
            for client in clients:
                client.close()
            codes = stop_all(processes)
            console.print(f"[green]7.[/green] every node is offline; the liquidator runs parley exit with its newest "
                          f"certificate (v{certificate.version}), the others claim")
            before = wallets({"USDC": wallet}, accounts)
            run_exit(console, root, certificate.version, server.url, accounts[LIQUIDATOR], adjudicator, chain, channel)
            for index, account in enumerate(accounts):
                if index != LIQUIDATOR:
                    claim(root, chain, adjudicator, channel, certificate, account)
            paid = {key: after - before[key] for key, after in wallets({"USDC": wallet}, accounts).items()}
        finally:
            stop_all(processes)
            server.stop()
    settled = settlement_table(console, cluster.genesis, NAMES, owed_by(cluster.genesis, state), certificate, paid)
    console.print(f"   the demo took {time.monotonic() - began:.0f} s")
    record = found["liquidation"]
    ok = bool(agree and roots and found["halted"] and "market_halted" in found["refused"] and settled
              and record.get("deleveraged") == [] and codes == [0, 0, 0, 0])
    return {
        "converged": ok, "settled": settled, "halted": found["halted"], "refused_while_halted": found["refused"],
        "liquidation": record, "premium": found["premium"], "insurance": found["insurance"],
        "funding": found["funding"], "positions": views[0][0], "state_hash": roots[0], "payout_root": roots[1],
        "exit_version": certificate.version, "paid": {a: paid[(a, "USDC")] for a in accounts}, "exit_codes": codes,
        "seed": seed,
    }
