"""Reading and writing the channel genesis as TOML (the validation is `crdt.genesis`)."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tomli_w

from channel.errors import UserError
from channel.runtime import keystore
from channel.runtime.keystore import write_atomic
from crdt.errors import InvalidGenesis, InvalidInput
from crdt.genesis import Genesis, InitialBalance, Participant, Role, Token
from crdt.hashing import keccak256
from crdt.markets.config import E9, Market, MarketKind
from crdt.types import Address, Symbol, from_hex

# The embedded chain (eth-tester + py-evm): its chain id, and the address the adjudicator gets
# when eth-tester's first account deploys it as its first transaction.
EMBEDDED_CHAIN_ID = 131277322940537
EMBEDDED_ADJUDICATOR = "0xf2e246bb76df876cef8b38ae84130f4f55de395b"
MIN_DISPUTE_WINDOW, MAX_DISPUTE_WINDOW = 3600, 365 * 86400  # seconds: Adjudicator.sol's range


def placeholder_token(symbol: str, decimals: int) -> Token:
    """A token whose address is derived from its symbol, for channels without a chain yet."""
    return Token(Symbol(symbol), Address(keccak256(b"parley-token:" + symbol.encode())[:20]), decimals)


# The demo's tokens and market (`parley demo --offline` and `--no-chain` hold both tokens from
# the genesis; the full demo deposits its USDC on the embedded chain).
DEMO_USDC = placeholder_token("USDC", 6)
DEMO_ETH = placeholder_token("ETH", 18)
DEMO_MARKETS = (
    Market(
        symbol="ETH/USDC", kind=MarketKind.SPOT, base=DEMO_ETH.symbol, quote=DEMO_USDC.symbol,
        tick_size=E9 // 100, step_size=E9 // 1000, min_qty=E9 // 1000, max_qty=1000 * E9,
        min_price=E9 // 100, max_price=1_000_000 * E9, maker_fee=200_000, taker_fee=500_000,
    ),  # 0.01 USDC tick, 0.001 ETH step, 2 bps maker and 5 bps taker fees
)

HEADER = """\
# Parley channel genesis. Amounts are integers in e9 base units (1 token = 1_000_000_000).
# The channel id is derived from the other fields; editing them without recomputing it makes
# the file invalid (`parley genesis new` writes a consistent one).
"""


MAX_TOML_NESTING = 32  # tables and arrays; a genesis needs 3

# A dotted key of n parts costs tomllib O(n**2) time and memory (50,000 parts took 53 s; 100,000
# were killed for memory), so keys with more parts than the nesting limit are refused before it
# runs. The pattern is conservative: a string value with as many dots is refused too.
_LONG_DOTTED_KEY = re.compile(
    rf"""(?:\.[ \t]*(?:[A-Za-z0-9_-]+|"(?:[^"\\\n]|\\.)*"|'[^'\n]*')[ \t]*){{{MAX_TOML_NESTING}}}"""
)


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """A TOML file as a mapping, or a `UserError` naming `what` the file should have been.

    Tables and arrays nest at most `MAX_TOML_NESTING` deep. tomllib recurses in Python for each
    level of arrays and inline tables: under the recursion limit the eth stack sets (100,000)
    about 50,000 levels parse, and a value that deep would crash whatever recursed through it
    in C later (repr, ==, json), so the depth is checked on the parsed value as well.
    """
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise UserError(f"no {what} at {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {what} {path}: {exc}") from exc
    too_deep = UserError(f"cannot read {what} {path}: tables and arrays nest deeper than {MAX_TOML_NESTING}")
    if _LONG_DOTTED_KEY.search(text):
        raise too_deep
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"cannot read {what} {path}: {exc}") from exc
    except RecursionError:
        raise too_deep from None  # not chained: its traceback holds one frame per level
    if _nesting(data) > MAX_TOML_NESTING:
        raise too_deep
    return data


def _nesting(value: Any) -> int:
    """How deep dicts and lists nest in `value`, without recursing."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in children)
    return deepest


def load_genesis(path: Path) -> Genesis:
    data = read_toml(path, "genesis file")
    try:
        return Genesis.from_mapping(data)
    except InvalidGenesis as exc:
        raise UserError(f"invalid genesis {path}: {exc}") from exc


def save_genesis(genesis: Genesis, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (HEADER + tomli_w.dumps(genesis.to_mapping())).encode(), mode=0o644)


def create_genesis_folder(
    out: Path,
    participants: int,
    *,
    password: str,
    tokens: list[Token],
    initial: int,
    markets: Sequence[Market] | None = None,
    roles: list[Role] | None = None,
    chain_id: int = EMBEDDED_CHAIN_ID,
    adjudicator: bytes = from_hex(EMBEDDED_ADJUDICATOR, 20),
    dispute_window: int = 3600,
    threshold: int | None = None,
    light_kdf: bool = False,
    keys: list[keystore.Key] | None = None,
    bootstraps: list[str] | None = None,
) -> tuple[Genesis, list[keystore.Key]]:
    """Write ``genesis.toml`` and ``keys/`` for a new channel into `out`.

    Every participant holds `initial` (e9) of every token. `markets` are the genesis's markets;
    by default the demo's (`DEMO_MARKETS`) whose base and quote are both among `tokens`, so a
    channel of USDC and ETH trades ETH/USDC and a USDC-only one has no market. `keys` (new ones
    by default) become the participants in address order; `bootstraps`, if given, are their
    libp2p multiaddrs in that same order."""
    if participants < 1:
        raise UserError("a channel needs at least one participant")
    keys = sorted(keys or [keystore.new_key() for _ in range(participants)], key=lambda key: key.address)
    genesis = build_genesis(
        [key.address for key in keys], tokens=tokens, initial=initial, markets=markets, roles=roles,
        chain_id=chain_id, adjudicator=adjudicator, dispute_window=dispute_window, threshold=threshold,
        bootstraps=bootstraps,
    )
    for key in keys:
        keystore.save(key, out / "keys", password, light=light_kdf)
    save_genesis(genesis, out / "genesis.toml")
    return genesis, keys


def build_genesis(
    addresses: Sequence[Address],
    *,
    tokens: list[Token],
    initial: int,
    markets: Sequence[Market] | None = None,
    roles: list[Role] | None = None,
    chain_id: int = EMBEDDED_CHAIN_ID,
    adjudicator: bytes = from_hex(EMBEDDED_ADJUDICATOR, 20),
    dispute_window: int = 3600,
    threshold: int | None = None,
    bootstraps: Sequence[str] | None = None,
) -> Genesis:
    """A new channel's genesis for `addresses` (sorted: participants are in address order, and
    `roles` and `bootstraps`, if given, follow that order). Every participant holds `initial`
    (e9) of every token. `markets`: by default the demo's (`DEMO_MARKETS`) whose base and quote
    are both among `tokens`."""
    if len(set(addresses)) != len(addresses):
        raise UserError("a participant is named twice")
    if not MIN_DISPUTE_WINDOW <= dispute_window <= MAX_DISPUTE_WINDOW:
        raise UserError(f"the dispute window must be between {MIN_DISPUTE_WINDOW} s (1 hour) and "
                        f"{MAX_DISPUTE_WINDOW} s (365 days), as the adjudicator requires; not {dispute_window}")
    ordered = sorted(addresses)
    chosen_roles = roles or [Role.TRADER] * len(ordered)
    chosen_bootstraps = list(bootstraps or [""] * len(ordered))
    for text in chosen_bootstraps:
        if text:
            check_bootstrap(text)
    if markets is None:
        symbols = {token.symbol for token in tokens}
        markets = [market for market in DEMO_MARKETS if {market.base, market.quote} <= symbols]
    try:
        return Genesis.create(
            chain_id=chain_id,
            adjudicator=adjudicator,
            participants=[
                Participant(a, r, b) for a, r, b in zip(ordered, chosen_roles, chosen_bootstraps, strict=True)
            ],
            tokens=tokens,
            threshold=threshold,
            dispute_window=dispute_window,
            initial_balances=[
                InitialBalance(address, token.symbol, initial) for address in ordered for token in tokens if initial
            ],
            markets=markets,
        )
    except InvalidInput as exc:
        raise UserError(str(exc)) from exc


def check_bootstrap(text: str) -> str:
    """A participant's bootstrap address: a libp2p multiaddr ending in /p2p/<peer id> (what
    `parley node init` prints); a `UserError` says what is wrong."""
    import multiaddr
    from libp2p.peer.peerinfo import info_from_p2p_addr

    try:
        info_from_p2p_addr(multiaddr.Multiaddr(text))
    except Exception as exc:  # multiaddr and libp2p raise several unrelated types
        raise UserError(f"bad bootstrap address {text!r} (want /ip4/HOST/tcp/PORT/p2p/PEER_ID): {exc}") from exc
    return text


def with_bootstrap(genesis: Genesis, account: Address, bootstrap: str) -> Genesis:
    """The same channel with one participant's bootstrap address set (the channel id does not
    cover bootstrap addresses, so the genesis stays valid and every node agrees on it)."""
    if account not in genesis.addresses:
        raise UserError(f"0x{account.hex()} is not a participant of this channel")
    mapping = genesis.to_mapping()
    for entry in mapping["participants"]:
        if from_hex(entry["address"], 20) == account:
            entry["bootstrap"] = check_bootstrap(bootstrap) if bootstrap else ""
    try:
        return Genesis.from_mapping(mapping)
    except InvalidGenesis as exc:
        raise UserError(str(exc)) from exc
