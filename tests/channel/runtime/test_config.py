"""node.toml validation: unknown keys and tables are refused with their line and the keys their
table takes; wrong types and out-of-range values name their key path; a valid file round-trips
through `NodeConfig.to_mapping`."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomli_w
from hypothesis import given
from hypothesis import strategies as st

from channel.errors import UserError
from channel.runtime.config import ChainConfig, NodeConfig

VALID = """\
data_dir = "."
genesis = "../genesis.toml"
keystore = "../keys/k.json"
[p2p]
listen = ["/ip4/127.0.0.1/tcp/4001"]
[api]
host = "127.0.0.1"
port = 8545
[finality]
interval = 1
[chain]
rpc = "http://127.0.0.1:8545"
confirmations = 3
"""


def load(tmp_path: Path, text: str) -> NodeConfig:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return NodeConfig.load(path)


def refusal(tmp_path: Path, text: str) -> str:
    with pytest.raises(UserError) as caught:
        load(tmp_path, text)
    return str(caught.value)


def test_a_valid_file(tmp_path: Path) -> None:
    config = load(tmp_path, VALID)
    assert config.data_dir == tmp_path.resolve()
    assert config.genesis == (tmp_path / "../genesis.toml").resolve()
    assert (config.api_port, config.finality_interval, config.store_max_bytes) == (8545, 1.0, None)
    assert config.chain == ChainConfig(rpc="http://127.0.0.1:8545", confirmations=3)
    again = tmp_path / "again"
    again.mkdir()
    (again / "node.toml").write_text(tomli_w.dumps(config.to_mapping(again)))
    assert NodeConfig.load(again / "node.toml") == config


def test_a_misspelt_table_names_its_line_and_the_expected_keys(tmp_path: Path) -> None:
    message = refusal(tmp_path, VALID.replace("[finality]", "[finalty]"))
    assert "line 9: unknown table [finalty]; expected one of: data_dir, genesis, keystore, password_file, " \
           "[p2p], [api], [finality], [store], [chain]" in message


def test_a_misspelt_key_in_a_table(tmp_path: Path) -> None:
    message = refusal(tmp_path, VALID.replace("port = 8545", "prot = 8545"))
    assert "line 8: unknown key 'api.prot' in [api]; expected one of: host, port" in message


def test_a_misspelt_top_level_key(tmp_path: Path) -> None:
    message = refusal(tmp_path, VALID.replace('data_dir = "."', 'datadir = "."'))
    assert "line 1: unknown key 'datadir'; expected one of: data_dir" in message


def test_every_problem_is_listed_in_line_order(tmp_path: Path) -> None:
    text = VALID.replace('port = 8545', 'port = "8545"').replace("confirmations = 3", "confirmation = 3")
    message = refusal(tmp_path, text.replace('keystore = "../keys/k.json"\n', ""))
    assert message.index("missing key 'keystore'") < message.index("line 7: api.port") < message.index(
        "line 12: unknown key 'chain.confirmation'")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("port = 8545", "port = 70000", "line 8: api.port: Input should be less than or equal to 65535"),
        ('host = "127.0.0.1"', 'host = "0.0.0.0"', "must listen on a loopback address"),
        ('host = "127.0.0.1"', 'host = "localhost"', "not an IP address"),
        ("interval = 1", "interval = 0.001", "line 10: finality.interval: Input should be greater than or equal"),
        ("interval = 1", 'interval = "1"', "finality.interval: Input should be a valid number"),
        ("confirmations = 3", "confirmations = -1", "chain.confirmations"),
        ("confirmations = 3", "settle_every = 0", "chain.settle_every"),
        ('rpc = "http://127.0.0.1:8545"\n', "", "missing key 'chain.rpc'"),
        ('listen = ["/ip4/127.0.0.1/tcp/4001"]', 'listen = "/ip4/127.0.0.1/tcp/4001"', "p2p.listen"),
        ("port = 8545", "port = true", "api.port: Input should be a valid integer"),
    ],
)
def test_wrong_values_name_their_key(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in VALID
    assert expected in refusal(tmp_path, VALID.replace(old, new))


def test_a_file_that_is_not_toml(tmp_path: Path) -> None:
    assert "cannot read node configuration" in refusal(tmp_path, "[api\nport = 1")


KNOWN = {"data_dir", "genesis", "keystore", "password_file", "p2p", "api", "finality", "store", "chain"}
UNKNOWN_KEYS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12).filter(lambda k: k not in KNOWN)


@given(UNKNOWN_KEYS)
def test_any_unknown_top_level_key_is_refused(key: str) -> None:
    data = {"genesis": "g.toml", "keystore": "k.json", key: 1}
    with pytest.raises(UserError, match=f"unknown key '{key}'"):
        NodeConfig.from_mapping(data, Path("/nonexistent"))
