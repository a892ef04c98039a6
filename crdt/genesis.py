"""The channel's genesis: participants and their roles, tokens, threshold, initial balances,
markets.

`Genesis.from_mapping` validates a mapping (read from TOML by the shell) and raises
`InvalidGenesis` with the offending field; a `Genesis` value is therefore always consistent:
addresses are unique, the threshold is a BFT quorum (more than two thirds of n), the channel id
is the one the adjudicator derives from the parameters, every initial balance names a
participant and a token, and every market is a valid spot market of two of its tokens or a perpetual with one as
collateral
(`InvalidMarket`, an `InvalidGenesis`, names the market's index and the bad field). Markets are
not part of the channel id: the contract does not know them.

    channelId = keccak256(abi.encode(chainId, adjudicator, participants, threshold,
                                     disputeWindow, tokenAddresses, minBond, nonce))
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from crdt.eip712 import Domain, address_word, word
from crdt.errors import InvalidGenesis
from crdt.hashing import keccak256
from crdt.markets.config import E9, MARKET_FIELDS, MAX_MARKET_SYMBOL, PERP_FIELDS, Market, MarketKind, PerpParams
from crdt.ops import DEFAULT_LIMITS, Context, Limits
from crdt.types import Address, ChannelId, Symbol, from_hex, to_hex


class Role(enum.StrEnum):
    TRADER = "trader"
    MARKET_MAKER = "market_maker"
    LIQUIDATOR = "liquidator"
    ORACLE = "oracle"
    OBSERVER = "observer"


class Permission(enum.StrEnum):
    MOVE_FUNDS = "move_funds"  # transfer, withdraw, lock
    TRADE = "trade"
    POST_PRICE = "post_price"
    LIQUIDATE = "liquidate"


PERMISSIONS: Mapping[Role, frozenset[Permission]] = {
    Role.TRADER: frozenset({Permission.MOVE_FUNDS, Permission.TRADE}),
    Role.MARKET_MAKER: frozenset({Permission.MOVE_FUNDS, Permission.TRADE}),
    Role.LIQUIDATOR: frozenset({Permission.MOVE_FUNDS, Permission.TRADE, Permission.LIQUIDATE}),
    Role.ORACLE: frozenset({Permission.MOVE_FUNDS, Permission.POST_PRICE}),
    Role.OBSERVER: frozenset(),
}


@dataclass(frozen=True, slots=True)
class Participant:
    address: Address
    role: Role
    bootstrap: str = ""  # a libp2p multiaddr, with /p2p/<peer id>

    def may(self, permission: Permission) -> bool:
        return permission in PERMISSIONS[self.role]


@dataclass(frozen=True, slots=True)
class Token:
    symbol: Symbol
    address: Address
    decimals: int


@dataclass(frozen=True, slots=True)
class InitialBalance:
    account: Address
    token: Symbol
    amount: int  # e9


def channel_id_for(
    chain_id: int,
    adjudicator: bytes,
    participants: Sequence[bytes],
    threshold: int,
    dispute_window: int,
    tokens: Sequence[bytes],
    min_bond: int,
    nonce: int,
) -> ChannelId:
    # abi.encode by hand (eth_abi is not a dependency of the core and imports socket and random):
    # eight head words, the two address[] given as offsets to their tails (length, then items).
    first = word(len(participants)) + b"".join(address_word(address) for address in participants)
    second = word(len(tokens)) + b"".join(address_word(address) for address in tokens)
    head = 8 * 32
    encoded = (
        word(chain_id)
        + address_word(adjudicator)
        + word(head)
        + word(threshold)
        + word(dispute_window)
        + word(head + len(first))
        + word(min_bond)
        + word(nonce)
    )
    return ChannelId(keccak256(encoded + first + second))


def bft_threshold(n: int) -> int:
    """The smallest quorum that tolerates f = (n - 1) // 3 Byzantine participants: n - f."""
    return n - (n - 1) // 3


@dataclass(frozen=True, slots=True)
class Genesis:
    chain_id: int
    adjudicator: Address
    channel_id: ChannelId
    nonce: int
    participants: tuple[Participant, ...]
    threshold: int
    dispute_window: int  # seconds
    min_bond: int  # wei of the chain's native token
    tokens: tuple[Token, ...]
    initial_balances: tuple[InitialBalance, ...] = ()
    markets: tuple[Market, ...] = ()  # sorted by symbol

    @property
    def domain(self) -> Domain:
        return Domain(self.chain_id, self.adjudicator)

    @property
    def addresses(self) -> tuple[Address, ...]:
        return tuple(participant.address for participant in self.participants)

    def participant(self, address: bytes) -> Participant | None:
        return self._by_address().get(Address(address))

    def _by_address(self) -> dict[Address, Participant]:
        return {participant.address: participant for participant in self.participants}

    def token(self, symbol: str) -> Token | None:
        for token in self.tokens:
            if token.symbol == symbol:
                return token
        return None

    def market(self, symbol: str) -> Market | None:
        for market in self.markets:
            if market.symbol == symbol:
                return market
        return None

    def context(self, limits: Limits = DEFAULT_LIMITS) -> Context:
        return Context(self.domain, self.channel_id, frozenset(self.addresses), limits)

    @classmethod
    def create(
        cls,
        *,
        chain_id: int,
        adjudicator: bytes,
        participants: list[Participant],
        tokens: list[Token],
        threshold: int | None = None,
        dispute_window: int = 3600,
        min_bond: int = 0,
        nonce: int = 0,
        initial_balances: list[InitialBalance] | None = None,
        markets: Sequence[Market] = (),
    ) -> Genesis:
        """A new genesis, with the channel id derived from the parameters."""
        quorum = bft_threshold(len(participants)) if threshold is None else threshold
        channel = channel_id_for(
            chain_id,
            adjudicator,
            [participant.address for participant in participants],
            quorum,
            dispute_window,
            [token.address for token in tokens],
            min_bond,
            nonce,
        )
        genesis = cls(
            chain_id=chain_id,
            adjudicator=Address(adjudicator),
            channel_id=channel,
            nonce=nonce,
            participants=tuple(participants),
            threshold=quorum,
            dispute_window=dispute_window,
            min_bond=min_bond,
            tokens=tuple(tokens),
            initial_balances=tuple(initial_balances or ()),
            markets=tuple(markets),
        )
        return cls.from_mapping(genesis.to_mapping())

    def to_mapping(self) -> dict[str, Any]:
        """The TOML shape: hex strings for bytes, e9 integers for amounts; ``markets`` (the
        ``[[markets]]`` tables) only when there are any, so a genesis without markets writes
        what it always wrote."""
        mapping: dict[str, Any] = {
            "chain_id": self.chain_id,
            "adjudicator": to_hex(self.adjudicator),
            "channel_id": to_hex(self.channel_id),
            "nonce": self.nonce,
            "threshold": self.threshold,
            "dispute_window": self.dispute_window,
            "min_bond": self.min_bond,
            "participants": [
                {"address": to_hex(p.address), "role": p.role.value, "bootstrap": p.bootstrap}
                for p in self.participants
            ],
            "tokens": [
                {"symbol": t.symbol, "address": to_hex(t.address), "decimals": t.decimals}
                for t in self.tokens
            ],
            "initial_balances": [
                {"account": to_hex(b.account), "token": b.token, "amount_e9": b.amount}
                for b in self.initial_balances
            ],
        }
        if self.markets:
            mapping["markets"] = [market_mapping(market) for market in self.markets]
        return mapping

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Genesis:
        try:
            return _parse(data)
        except InvalidGenesis:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidGenesis(f"genesis is malformed: {exc!r}") from exc


def market_mapping(market: Market) -> dict[str, Any]:
    """A market as its ``[[markets]]`` table in the genesis TOML (what `parse_markets` reads):
    a perp market's parameters flattened into the table."""
    table = {name: str(getattr(market, name)) if name == "kind" else getattr(market, name) for name in MARKET_FIELDS}
    if market.perp is not None:
        for name in PERP_FIELDS:
            value = getattr(market.perp, name)
            table[name] = list(value) if name == "max_notional_at_open" else value
    return table


class InvalidMarket(InvalidGenesis):
    """A ``[[markets]]`` entry is invalid: ``index`` is its position in the genesis as given
    (0-based), ``field`` the bad field (``""`` when the entry as a whole is) and ``reason``
    what is wrong with it (the message without the index and field)."""

    def __init__(self, index: int, name: str, message: str) -> None:
        super().__init__(f"markets[{index}]{'.' + name if name else ''}: {message}")
        self.index = index
        self.field = name
        self.reason = message


_PRICE_LIMITS = ("min_price", "max_price")
_QTY_LIMITS = ("min_qty", "max_qty")
_FEES = ("maker_fee", "taker_fee")


def _parse_market(index: int, entry: Any, symbols: Collection[str]) -> Market:
    """One ``[[markets]]`` entry, checked field by field in `Market` order (then, for a perp,
    `PerpParams` order)."""
    if not isinstance(entry, Mapping):
        raise InvalidMarket(index, "", f"must be a table, got {entry!r}")
    kind = entry.get("kind")
    if type(kind) not in (str, MarketKind) or kind not in (MarketKind.SPOT, MarketKind.PERP):
        raise InvalidMarket(index, "kind", f"must be 'spot' or 'perp', got {kind!r}")
    perp = kind == MarketKind.PERP
    fields = MARKET_FIELDS + PERP_FIELDS if perp else MARKET_FIELDS
    missing = [name for name in fields if name not in entry]
    if missing:
        raise InvalidMarket(index, missing[0], "missing")
    extra = sorted(str(name) for name in entry if name not in fields)
    if extra:
        raise InvalidMarket(index, extra[0], f"unknown field; a {kind} market has exactly {list(fields)}")
    symbol = entry["symbol"]
    if type(symbol) is not str or not symbol or len(symbol.encode("utf-8", "replace")) > MAX_MARKET_SYMBOL:
        raise InvalidMarket(index, "symbol", f"must be text of 1 to {MAX_MARKET_SYMBOL} bytes, got {symbol!r}")
    base = entry["base"]
    if perp:  # a perp's base is the name of its synthetic asset, not a token
        if type(base) is not str or not base or len(base.encode("utf-8", "replace")) > MAX_MARKET_SYMBOL:
            raise InvalidMarket(index, "base", f"must be a name of 1 to {MAX_MARKET_SYMBOL} bytes, got {base!r}")
    elif type(base) is not str or base not in symbols:
        raise InvalidMarket(index, "base", f"must be a token of the genesis {sorted(symbols)}, got {base!r}")
    if type(entry["quote"]) is not str or entry["quote"] not in symbols:
        raise InvalidMarket(index, "quote", f"must be a token of the genesis {sorted(symbols)}, got {entry['quote']!r}")
    if base == entry["quote"]:
        raise InvalidMarket(index, "quote", "must differ from base")
    numbers: dict[str, int] = {}
    for name in MARKET_FIELDS[4:]:
        value = entry[name]
        if type(value) is not int:
            raise InvalidMarket(index, name, f"must be an integer, got {value!r}")
        numbers[name] = value
    for name in ("tick_size", "step_size"):
        if numbers[name] <= 0:
            raise InvalidMarket(index, name, f"must be positive, got {numbers[name]}")
    for limits, unit in ((_QTY_LIMITS, "step_size"), (_PRICE_LIMITS, "tick_size")):
        for name in limits:
            if numbers[name] <= 0 or numbers[name] % numbers[unit]:
                raise InvalidMarket(
                    index, name, f"must be a positive multiple of {unit} {numbers[unit]}, got {numbers[name]}"
                )
        if numbers[limits[0]] > numbers[limits[1]]:
            raise InvalidMarket(index, limits[1], f"must be at least {limits[0]} {numbers[limits[0]]}")
    for name in _FEES:
        if not 0 <= numbers[name] < E9:
            raise InvalidMarket(index, name, f"must be in [0, 10**9) (an e9 fraction; no rebates), got {numbers[name]}")
    params = _parse_perp(index, entry) if perp else None
    return Market(symbol, MarketKind(kind), Symbol(base), Symbol(entry["quote"]), **numbers, perp=params)


# (field, lowest, highest) of a perp's scalar parameters; None: no upper bound
_PERP_BOUNDS: tuple[tuple[str, int, int | None], ...] = (
    ("max_funding_rate", 1, E9),
    ("funding_interval", 1, None),
    ("insurance_pool_ratio", 0, E9),
    ("circuit_band", 1, E9),
    ("halt_checkpoints", 0, None),
    ("mtb_long", 1, E9),
    ("mtb_short", 1, E9),
    ("oracle_staleness", 1, None),
    ("impact_notional", 1, None),
)


def _parse_perp(index: int, entry: Mapping[str, Any]) -> PerpParams:
    """A perp market's parameters: ``0 < mmr < imr < 10**9``; one positive notional cap per
    integer leverage from 1 to ``10**9 // imr``, never growing with leverage (more leverage, at
    most as large a position, as Bluefin's caps); the other fields within `_PERP_BOUNDS`."""
    numbers: dict[str, int] = {}
    for name in ("imr", "mmr", *(bound[0] for bound in _PERP_BOUNDS)):
        value = entry[name]
        if type(value) is not int:
            raise InvalidMarket(index, name, f"must be an integer, got {value!r}")
        numbers[name] = value
    if not 0 < numbers["imr"] < E9:
        raise InvalidMarket(index, "imr", f"must be in (0, 10**9) (an e9 fraction), got {numbers['imr']}")
    if not 0 < numbers["mmr"] < numbers["imr"]:
        raise InvalidMarket(index, "mmr", f"must be in (0, imr {numbers['imr']}), got {numbers['mmr']}")
    for name, lowest, highest in _PERP_BOUNDS:
        value = numbers[name]
        if value < lowest or (highest is not None and value > highest):
            shown = "" if highest is None else f", {highest}"
            raise InvalidMarket(index, name, f"must be in [{lowest}{shown}{']' if highest else ', ...)'}, got {value}")
    caps = entry["max_notional_at_open"]
    leverage = E9 // numbers["imr"]
    if not isinstance(caps, list | tuple) or any(type(cap) is not int for cap in caps):
        raise InvalidMarket(index, "max_notional_at_open", f"must be an array of integers, got {caps!r}")
    if len(caps) != leverage:
        raise InvalidMarket(
            index, "max_notional_at_open",
            f"must have one cap per leverage 1..{leverage} (10**9 // imr), got {len(caps)}",
        )
    if any(cap <= 0 for cap in caps) or any(a < b for a, b in pairwise(caps)):
        raise InvalidMarket(
            index, "max_notional_at_open", f"must be positive and never grow with leverage, got {list(caps)}"
        )
    return PerpParams(max_notional_at_open=tuple(caps), **numbers)


def parse_markets(entries: Any, symbols: Collection[str]) -> tuple[Market, ...]:
    """``[[markets]]`` entries (TOML tables, e9 integers) of a genesis whose tokens are
    `symbols`, checked as loading the genesis checks them, sorted by symbol; else
    `InvalidMarket` (or `InvalidGenesis` if `entries` is no array)."""
    if not isinstance(entries, list | tuple):
        raise InvalidGenesis(f"markets must be an array of tables, got {entries!r}")
    markets = [_parse_market(index, entry, symbols) for index, entry in enumerate(entries)]
    seen: dict[str, int] = {}
    for index, market in enumerate(markets):
        if market.symbol in seen:
            raise InvalidMarket(index, "symbol", f"{market.symbol!r} is also markets[{seen[market.symbol]}]'s symbol")
        seen[market.symbol] = index
    return tuple(sorted(markets, key=lambda market: market.symbol))


def _int(data: Mapping[str, Any], key: str, minimum: int = 0) -> int:
    value = data[key]
    if type(value) is not int or value < minimum:
        raise InvalidGenesis(f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _parse(data: Mapping[str, Any]) -> Genesis:
    participants = []
    for entry in data["participants"]:
        role = entry.get("role", "trader")
        if role not in Role.__members__.values():
            raise InvalidGenesis(f"unknown role {role!r}; roles are {[r.value for r in Role]}")
        participants.append(
            Participant(Address(from_hex(entry["address"], 20)), Role(role), str(entry.get("bootstrap", "")))
        )
    if not participants:
        raise InvalidGenesis("a channel needs at least one participant")
    addresses = [participant.address for participant in participants]
    if len(set(addresses)) != len(addresses):
        raise InvalidGenesis("participant addresses must be unique")
    tokens = []
    for entry in data["tokens"]:
        symbol = entry["symbol"]
        decimals = _int(entry, "decimals")
        if type(symbol) is not str or not symbol or len(symbol) > 16 or decimals > 36:
            raise InvalidGenesis(f"bad token {entry!r}")
        tokens.append(Token(Symbol(symbol), Address(from_hex(entry["address"], 20)), decimals))
    if not tokens:
        raise InvalidGenesis("a channel needs at least one token")
    if len({token.symbol for token in tokens}) != len(tokens):
        raise InvalidGenesis("token symbols must be unique")
    if len({token.address for token in tokens}) != len(tokens):
        raise InvalidGenesis("token addresses must be unique (a payout leaf is per account and token address)")
    n = len(participants)
    threshold = _int(data, "threshold", 1)
    if threshold > n or 3 * threshold <= 2 * n:
        raise InvalidGenesis(
            f"threshold {threshold} is not a BFT quorum of {n} participants "
            f"(it must be more than 2n/3 and at most n; {bft_threshold(n)} is the usual choice)"
        )
    symbols = {token.symbol for token in tokens}
    balances = []
    for entry in data.get("initial_balances", []):
        account = Address(from_hex(entry["account"], 20))
        if account not in addresses:
            raise InvalidGenesis(f"initial balance for a non-participant {to_hex(account)}")
        if entry["token"] not in symbols:
            raise InvalidGenesis(f"initial balance in unknown token {entry['token']!r}")
        balances.append(InitialBalance(account, Symbol(entry["token"]), _int(entry, "amount_e9")))
    markets = parse_markets(data.get("markets", []), symbols)
    chain_id = _int(data, "chain_id", 1)
    adjudicator = Address(from_hex(data["adjudicator"], 20))
    window = _int(data, "dispute_window", 1)
    min_bond = _int(data, "min_bond")
    nonce = _int(data, "nonce")
    expected = channel_id_for(
        chain_id, adjudicator, addresses, threshold, window, [t.address for t in tokens], min_bond, nonce
    )
    channel = ChannelId(from_hex(data["channel_id"], 32))
    if channel != expected:
        raise InvalidGenesis(
            f"channel_id {to_hex(channel)} does not match the parameters (expected {to_hex(expected)})"
        )
    return Genesis(
        chain_id=chain_id,
        adjudicator=adjudicator,
        channel_id=channel,
        nonce=nonce,
        participants=tuple(participants),
        threshold=threshold,
        dispute_window=window,
        min_bond=min_bond,
        tokens=tuple(tokens),
        initial_balances=tuple(balances),
        markets=markets,
    )
