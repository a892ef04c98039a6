"""`parley chain serve` and the development commands around it: the funded accounts and their
keys, any-case addresses, `chain fund` and `chain mint`."""

from __future__ import annotations

import json
from pathlib import Path

from eth_account import Account
from typer.testing import CliRunner

from channel.cli.main import app
from settlement.chain import EmbeddedChain, RpcChain
from settlement.client import Sender, TestTokenClient
from settlement.server import ChainServer, ChainServerProcess, dev_accounts

runner = CliRunner()


def test_the_funded_accounts_are_the_keys_it_prints() -> None:
    chain = EmbeddedChain()
    accounts = dev_accounts(chain)
    assert len(accounts) == len(chain.w3.eth.accounts) >= 2
    for address, key, wei in accounts:
        assert Account.from_key(key).address == address
        assert wei == chain.w3.eth.get_balance(address) > 0


def test_lowercase_addresses_are_accepted_as_anvil_accepts_them() -> None:
    server = ChainServer()
    sender, receiver = (address.lower() for address in server.chain.w3.eth.accounts[:2])
    before = server.handle({"jsonrpc": "2.0", "id": 1, "method": "eth_getBalance", "params": [receiver, "latest"]})
    sent = server.handle({"jsonrpc": "2.0", "id": 2, "method": "eth_sendTransaction",
                          "params": [{"from": sender, "to": receiver, "value": hex(12345)}]})
    assert "error" not in sent, sent
    after = server.handle({"jsonrpc": "2.0", "id": 3, "method": "eth_getBalance", "params": [receiver, "latest"]})
    assert int(after["result"]) - int(before["result"]) == 12345
    bad = server.handle({"jsonrpc": "2.0", "id": 4, "method": "eth_getBalance", "params": ["0x" + "zz" * 20, "latest"]})
    assert bad["error"]["code"] == -32000


def test_serve_prints_its_accounts_then_fund_and_mint_work_on_it(tmp_path: Path) -> None:
    config = tmp_path / "chain.json"
    server = ChainServerProcess(extra=["--config-out", str(config)])
    try:
        written = json.loads(config.read_text())
        assert written["url"] == server.url
        chain = RpcChain(server.url)
        assert written["chain_id"] == chain.chain_id
        key = written["accounts"][0]["private_key"]
        assert Account.from_key(key).address == written["accounts"][0]["address"]
        newcomer = Account.create().address.lower()
        env = {"ETH_RPC_URL": server.url, "PARLEY_PRIVATE_KEY": key}
        result = runner.invoke(app, ["chain", "fund", newcomer, "--eth", "2.5"], env=env)
        assert result.exit_code == 0, result.output
        assert chain.w3.eth.get_balance(chain.w3.to_checksum_address(newcomer)) == 25 * 10**17
        token = TestTokenClient.deploy(Sender(chain, Account.from_key(key)), "Test", "T", 6)
        result = runner.invoke(app, ["chain", "mint", "--token", token.address.lower(), "--to", newcomer,
                                     "--amount", "250.5"], env=env)
        assert result.exit_code == 0, result.output
        assert token.balance_of(newcomer) == 250_500_000
        result = runner.invoke(app, ["chain", "mint", "--token", token.address, "--to", newcomer,
                                     "--amount", "0.0000001"], env=env)
        assert result.exit_code != 0
        assert "at most 6 decimals" in result.output
        assert token.balance_of(newcomer) == 250_500_000
    finally:
        server.stop()
