"""The channel's genesis: participants and their roles, tokens, threshold, initial balances.

`Genesis.from_mapping` validates a mapping (read from TOML by the shell) and raises
`InvalidGenesis` with the offending field; a `Genesis` value is therefore always consistent:
addresses are unique, the threshold is a BFT quorum (more than two thirds of n), the channel id
is the one the adjudicator derives from the parameters, and every initial balance names a
participant and a token.

    channelId = keccak256(abi.encode(chainId, adjudicator, participants, threshold,
                                     disputeWindow, tokenAddresses, minBond, nonce))
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from crdt.eip712 import Domain, address_word, word
from crdt.errors import InvalidGenesis
from crdt.hashing import keccak256
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
        )
        return cls.from_mapping(genesis.to_mapping())

    def to_mapping(self) -> dict[str, Any]:
        """The TOML shape: hex strings for bytes, e9 integers for amounts."""
        return {
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

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Genesis:
        try:
            return _parse(data)
        except InvalidGenesis:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidGenesis(f"genesis is malformed: {exc!r}") from exc


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
    )
