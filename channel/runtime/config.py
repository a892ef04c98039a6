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
    interval = 1.0                     # at most one checkpoint started per interval (s), while
                                       # there is news; each starts once the one before is decided
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

The file is validated by pydantic models (`NodeFile` and one per table) that forbid unknown
keys: a typo such as ``[finalty]`` or ``prot = 8545`` is refused with its line and the keys the
table takes, instead of being silently ignored (a node running on defaults it was not meant to
have). A value of the wrong type or out of range is refused alike, naming its key path. TOML
values are typed already, so the models are strict (``port = "8545"`` is an error; an integer
is still a float, so ``interval = 1`` is fine).

`NodeConfig` is what the rest of the node reads; the models are only the file's schema.
Importing this module is cheap (no chain or key library): the client commands never need it,
and `node run` imports it when it starts.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from channel.errors import UserError
from channel.runtime.genesis_file import read_toml

# Development chains reorganise only when told to; elsewhere a deposit counts once it is final.
DEV_CHAIN_IDS = frozenset({31337, 1337, 131277322940537})  # anvil, geth --dev, eth-tester
SAFE_CONFIRMATIONS = 64  # Ethereum and its proof-of-stake testnets: two epochs, which is finality
# Chains with faster blocks, whose finality follows the L1 (or a checkpoint layer): an hour of
# blocks, well past the finality of the L1 batch that holds them.
CHAIN_CONFIRMATIONS = {
    10: 1_800,  # OP Mainnet, 2 s blocks
    8453: 1_800,  # Base, 2 s blocks
    137: 1_800,  # Polygon PoS, 2 s blocks
    42161: 14_400,  # Arbitrum One, 0.25 s blocks
}


@dataclass(frozen=True, slots=True)
class ChainConfig:
    rpc: str
    confirmations: int | None = None  # None: 1 on a development chain, else per chain (see below)
    settle_every: int = 1  # propose every k-th certified checkpoint
    poll_interval: float = 0.5
    fallback_delay: float = 5.0

    def confirmations_for(self, chain_id: int) -> int:
        if self.confirmations is not None:
            return self.confirmations
        if chain_id in DEV_CHAIN_IDS:
            return 1
        return CHAIN_CONFIRMATIONS.get(chain_id, SAFE_CONFIRMATIONS)


# -- the file's schema ---------------------------------------------------------------------------


class _Table(BaseModel):
    """A table of node.toml: its keys and nothing else, of exactly their TOML types."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class P2pTable(_Table):
    listen: list[str] = Field(default_factory=lambda: ["/ip4/127.0.0.1/tcp/0"], min_length=1)


class ApiTable(_Table):
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)

    @field_validator("host")
    @classmethod
    def loopback(cls, host: str) -> str:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError as exc:
            raise ValueError(f"not an IP address: {host!r}") from exc
        if not loopback:
            raise ValueError(f"the API must listen on a loopback address, not {host}: it signs with your key")
        return host


class FinalityTable(_Table):
    interval: float = Field(default=1.0, ge=0.01, le=3600)


class StoreTable(_Table):
    max_mb: float = Field(default=0.0, ge=0)
    # certified epochs kept in memory; older operations move to the store's archive (0: never)
    keep_epochs: int = Field(default=2, ge=0, le=1_000_000)
    # a snapshot of the certified state every that many checkpoints (0: never)
    snapshot_every: int = Field(default=100, ge=0, le=1_000_000_000)

    @field_validator("keep_epochs")
    @classmethod
    def _keep_two(cls, value: int) -> int:
        if value == 1:  # freshness reads the cut two versions back (Replica.compact)
            raise ValueError("keep_epochs is 0 (never compact) or at least 2")
        return value


class ChainTable(_Table):
    rpc: str
    confirmations: int | None = Field(default=None, ge=0)
    settle_every: int = Field(default=1, ge=1)
    poll_interval: float = Field(default=0.5, gt=0)
    fallback_delay: float = Field(default=5.0, ge=0)


class NodeFile(_Table):
    """node.toml as written: top-level keys and its tables."""

    data_dir: str = "data"
    genesis: str
    keystore: str
    password_file: str | None = None
    p2p: P2pTable = P2pTable()
    api: ApiTable = ApiTable()
    finality: FinalityTable = FinalityTable()
    store: StoreTable = StoreTable()
    chain: ChainTable | None = None


def _table_model(location: tuple[int | str, ...]) -> type[BaseModel]:
    """The model of the table at `location` (a pydantic error's loc, without its last key)."""
    model: type[BaseModel] = NodeFile
    for key in location:
        field = model.model_fields.get(str(key))
        found = _submodel(field.annotation) if field is not None else None
        if found is None:
            break
        model = found
    return model


def _line_of(text: str, location: tuple[int | str, ...]) -> int | None:
    """The line (1-based) of the key at `location` in the TOML `text`: a table header
    ``[name]``, or ``key =`` inside its table; None if it cannot be told (an inline table)."""
    lines = text.splitlines()
    names = [str(key) for key in location if isinstance(key, str)]
    if not names:
        return None
    start = 0
    if len(names) > 1:
        header = re.compile(rf"^\s*\[\s*{re.escape(names[0])}\s*\]")
        start = next((i for i, line in enumerate(lines) if header.match(line)), -1)
        if start < 0:
            return None
        start += 1
    key, table = names[-1], re.compile(r"^\s*\[")
    if len(names) == 1:
        header = re.compile(rf"^\s*\[\s*{re.escape(key)}\s*\]")
        for index, line in enumerate(lines):
            if header.match(line):
                return index + 1
    assignment = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*[=.]")
    for index in range(start, len(lines)):
        if len(names) > 1 and index > start and table.match(lines[index]):
            break  # the table ended
        if len(names) == 1 and table.match(lines[index]):
            break  # top-level keys come before the first table
        if assignment.match(lines[index]):
            return index + 1
    return None


def describe_errors(error: ValidationError, text: str) -> str:
    """Each problem of a node.toml: its key path, its line when known, what is wrong and, for an
    unknown key, the keys its table takes."""
    problems: list[tuple[int, str]] = []
    for item in error.errors():
        location = tuple(item["loc"])
        path = ".".join(str(key) for key in location) or "(the file)"
        line = _line_of(text, location)
        where = f"line {line}: " if line is not None else ""
        if item["type"] == "extra_forbidden":
            model = _table_model(location[:-1])
            table = ".".join(str(key) for key in location[:-1])
            expected = ", ".join(f"[{name}]" if _is_table(model, name) else name for name in model.model_fields)
            what = f"table [{path}]" if isinstance(item.get("input"), dict) else f"key {path!r}"
            problem = f"{where}unknown {what}{' in [' + table + ']' if table else ''}; expected one of: {expected}"
        elif item["type"] == "missing":
            problem = f"missing key {path!r}"
        else:
            problem = f"{where}{path}: {item['msg'].removeprefix('Value error, ')}"
        problems.append((line or 0, problem))
    return "; ".join(problem for _, problem in sorted(problems))


def _is_table(model: type[BaseModel], name: str) -> bool:
    return _submodel(model.model_fields[name].annotation) is not None


def _submodel(annotation: Any) -> type[BaseModel] | None:
    """The table model an annotation holds (``ChainTable | None`` holds ChainTable)."""
    candidates = (annotation, *getattr(annotation, "__args__", ()))
    return next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)


@dataclass(frozen=True, slots=True)
class NodeConfig:
    data_dir: Path
    genesis: Path
    keystore: Path
    password_file: Path | None = None
    p2p_listen: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",)
    api_host: str = "127.0.0.1"
    api_port: int = 0
    finality_interval: float = 1.0  # at most one checkpoint started per interval, while there is news
    chain: ChainConfig | None = None  # None: no chain (checkpoints are certified, not settled)
    store_max_bytes: int | None = None  # a cap on node.sqlite; None: as much as the disk holds
    keep_epochs: int = 2  # compaction: certified epochs kept in memory (0: keep everything)
    snapshot_every: int = 100  # a snapshot every that many checkpoints (0: never)

    @classmethod
    def load(cls, path: Path) -> NodeConfig:
        """The node.toml at `path`; `UserError` naming each problem's key and line."""
        data = read_toml(path, "node configuration")
        try:
            parsed = NodeFile.model_validate(data)
        except ValidationError as exc:
            raise UserError(f"invalid node configuration {path}: {describe_errors(exc, path.read_text())}",
                            hint="see the node.toml keys in the README (\"Running a node\")") from exc
        return cls.from_file(parsed, path.parent)

    @classmethod
    def from_mapping(cls, data: dict[str, Any], base: Path) -> NodeConfig:
        """A node.toml's mapping (paths relative to `base`); `UserError` for anything invalid."""
        try:
            parsed = NodeFile.model_validate(data)
        except ValidationError as exc:
            raise UserError(f"invalid node configuration: {describe_errors(exc, '')}") from exc
        return cls.from_file(parsed, base)

    @classmethod
    def from_file(cls, parsed: NodeFile, base: Path) -> NodeConfig:
        def path(value: str) -> Path:
            return (base / value).resolve()

        chain = None
        if parsed.chain is not None:
            table = parsed.chain
            chain = ChainConfig(rpc=table.rpc, confirmations=table.confirmations, settle_every=table.settle_every,
                                poll_interval=table.poll_interval, fallback_delay=table.fallback_delay)
        return cls(
            data_dir=path(parsed.data_dir),
            genesis=path(parsed.genesis),
            keystore=path(parsed.keystore),
            password_file=path(parsed.password_file) if parsed.password_file else None,
            p2p_listen=tuple(parsed.p2p.listen),
            api_host=parsed.api.host,
            api_port=parsed.api.port,
            finality_interval=parsed.finality.interval,
            chain=chain,
            store_max_bytes=int(parsed.store.max_mb * 1024 * 1024) or None,
            keep_epochs=parsed.store.keep_epochs,
            snapshot_every=parsed.store.snapshot_every,
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
        if self.keep_epochs != 2:
            mapping.setdefault("store", {})["keep_epochs"] = self.keep_epochs
        if self.snapshot_every != 100:
            mapping.setdefault("store", {})["snapshot_every"] = self.snapshot_every
        if self.chain is not None:
            mapping["chain"] = {
                "rpc": self.chain.rpc, "settle_every": self.chain.settle_every,
                "poll_interval": self.chain.poll_interval, "fallback_delay": self.chain.fallback_delay,
            }
            if self.chain.confirmations is not None:
                mapping["chain"]["confirmations"] = self.chain.confirmations
        return mapping
