"""The node's configuration file (``node.toml``), validated into a `NodeConfig`.

    data_dir = "data"                  # store, libp2p identity, API token; relative to this file
    genesis = "../genesis.toml"
    keystore = "../keys/0x....json"
    password_file = "../password"      # optional: else $PARLEY_PASSWORD
    [p2p]
    listen = ["/ip4/127.0.0.1/tcp/4001"]
    [api]
    host = "127.0.0.1"                 # loopback only: the API signs with the participant's key
    port = 8545                        # 0 picks a free port; the URL is written to data_dir/api.json
    [finality]
    interval = 1.0                     # seconds between checkpoints while there is something new
    [store]
    max_mb = 0                         # optional cap on node.sqlite (0: none); at the cap the
                                       # node refuses new writes as on a full disk
    [chain]                            # optional: settle on-chain (see channel.runtime.chain_worker)
    rpc = "http://127.0.0.1:8545"      # anvil, `parley chain serve`, a testnet, mainnet
    confirmations = 64                 # optional: deposits count once this deep; by default 1 on
                                       # a development chain (anvil, eth-tester), 64 elsewhere
    settle_every = 1                   # propose every k-th certified checkpoint; its withdrawals
                                       # are claimable one dispute window later

Paths are relative to the folder of the configuration file.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from channel.errors import UserError
from channel.runtime.chain_worker import ChainConfig
from channel.runtime.genesis_file import read_toml


@dataclass(frozen=True, slots=True)
class NodeConfig:
    data_dir: Path
    genesis: Path
    keystore: Path
    password_file: Path | None = None
    p2p_listen: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",)
    api_host: str = "127.0.0.1"
    api_port: int = 0
    finality_interval: float = 1.0  # seconds between checkpoints while there is something new
    chain: ChainConfig | None = None  # None: no chain (checkpoints are certified, not settled)
    store_max_bytes: int | None = None  # a cap on node.sqlite; None: as much as the disk holds

    @classmethod
    def load(cls, path: Path) -> NodeConfig:
        data = read_toml(path, "node configuration")
        try:
            return cls.from_mapping(data, path.parent)
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"invalid node configuration {path}: {exc!r}") from exc

    @classmethod
    def from_mapping(cls, data: dict[str, Any], base: Path) -> NodeConfig:
        def path(value: str) -> Path:
            return (base / value).resolve()

        api = data.get("api", {})
        host = str(api.get("host", "127.0.0.1"))
        if not ipaddress.ip_address(host).is_loopback:
            raise UserError(f"the API must listen on a loopback address, not {host}: it signs with your key")
        port = int(api.get("port", 0))
        if not 0 <= port < 65536:
            raise UserError(f"API port out of range: {port}")
        listen = tuple(str(addr) for addr in data.get("p2p", {}).get("listen", ["/ip4/127.0.0.1/tcp/0"]))
        password = data.get("password_file")
        interval = float(data.get("finality", {}).get("interval", 1.0))
        max_mb = float(data.get("store", {}).get("max_mb", 0))
        if not max_mb >= 0:
            raise UserError(f"store max_mb must be 0 (no cap) or a positive number of MiB, not {max_mb}")
        chain_table = data.get("chain")
        chain = None
        if chain_table is not None:
            confirmations = chain_table.get("confirmations")
            chain = ChainConfig(
                rpc=str(chain_table["rpc"]),
                confirmations=None if confirmations is None else int(confirmations),
                settle_every=max(1, int(chain_table.get("settle_every", 1))),
                poll_interval=float(chain_table.get("poll_interval", 0.5)),
                fallback_delay=float(chain_table.get("fallback_delay", 5.0)),
            )
        if not 0.05 <= interval <= 3600:
            raise UserError(f"finality interval must be between 0.05 and 3600 seconds, not {interval}")
        return cls(
            data_dir=path(data.get("data_dir", "data")),
            genesis=path(data["genesis"]),
            keystore=path(data["keystore"]),
            password_file=path(password) if password else None,
            p2p_listen=listen,
            api_host=host,
            api_port=port,
            finality_interval=interval,
            chain=chain,
            store_max_bytes=int(max_mb * 1024 * 1024) or None,
        )

    def to_mapping(self, base: Path) -> dict[str, Any]:
        def rel(path: Path) -> str:  # relative to the file's folder, "../" included: movable as a whole
            return os.path.relpath(path, base)

        mapping: dict[str, Any] = {
            "data_dir": rel(self.data_dir),
            "genesis": rel(self.genesis),
            "keystore": rel(self.keystore),
            "p2p": {"listen": list(self.p2p_listen)},
            "api": {"host": self.api_host, "port": self.api_port},
            "finality": {"interval": self.finality_interval},
        }
        if self.password_file is not None:
            mapping["password_file"] = rel(self.password_file)
        if self.store_max_bytes is not None:
            mapping["store"] = {"max_mb": self.store_max_bytes / (1024 * 1024)}
        if self.chain is not None:
            mapping["chain"] = {
                "rpc": self.chain.rpc, "settle_every": self.chain.settle_every,
                "poll_interval": self.chain.poll_interval, "fallback_delay": self.chain.fallback_delay,
            }
            if self.chain.confirmations is not None:
                mapping["chain"]["confirmations"] = self.chain.confirmations
        return mapping
