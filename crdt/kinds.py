"""The registry of operation kinds: one entry per kind, which every reader of a body takes.

A `Kind` says everything about its body once: the exact fields, in order, each with a
`FieldType`; the `Permission` its author needs (a role has it, `crdt.genesis.PERMISSIONS`); and
the name of the `crdt.ledger.Ledger` method that applies it. From it:

- the ledger builds its dispatch table and checks bodies (`Kind.keys`, `FieldType.conforms`):
  a body without exactly its kind's keys, or with a field the type does not take, is
  ``bad_body``. What a field means in the channel (a recipient that is a participant, a token of
  the genesis, a positive amount) is checked by the handler, with its own reason;
- the local API converts a client's JSON body to the CBOR body it signs (`Registry.from_json`),
  with an `InvalidField` that names the field, and back (`Registry.to_json`);
- the API's OpenRPC document has a JSON Schema per kind (`Kind.json_schema`);
- the workload generator (`simulations.workload`) makes bodies field type by field type.

Adding a kind is one `Kind` here plus its ledger handler. `Registry.extended` makes a registry
with more kinds (tests, or a channel that enables them); `KINDS` is the one nodes use.

JSON forms: addresses and order ids are 0x-prefixed (or bare) ASCII hex; amounts and other
unsigned integers are JSON integers or strings of at most 20 ASCII digits, and `to_json` writes
them as strings (JSON numbers lose precision above 2**53); a choice is one of its strings; a
flag is a JSON boolean. The API also refuses some values the ledger would
only reject later (a 19-byte address, a token symbol longer than 16, a side that is neither
"buy" nor "sell"): both refuse them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from crdt.errors import InvalidInput
from crdt.genesis import PERMISSIONS, Permission, Role
from crdt.markets.book import ORDER_TYPES, SIDES, TIFS
from crdt.markets.config import MAX_MARKET_SYMBOL

UINT64_LIMIT = 2**64
MAX_LOCK_REASON = 64  # bytes of UTF-8
MAX_SYMBOL = 16  # a genesis token symbol's limit

# ASCII only: str.isdigit() also accepts superscripts (which int() then refuses) and Arabic-Indic
# digits (which int() reads as numbers: "\u0661\u0660" is 10).
_UINT64_TEXT = re.compile(r"[0-9]{1,20}")
_HEX_TEXT = re.compile(r"[0-9a-fA-F]*")


class InvalidField(InvalidInput):
    """A client's value for a body field (or another parameter) is not what its type takes;
    ``field`` names it and the message says what is wrong."""

    code = "invalid_field"

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.field = name


class UnknownKind(InvalidInput):
    """A client asked for a kind the registry does not hold."""

    code = "unknown_kind"


# -- JSON values -----------------------------------------------------------------------------------


def shown(value: Any, limit: int = 80) -> str:
    """A client's value for an error message: its repr, cut short."""
    text = repr(value[: limit + 1] if isinstance(value, str) else value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _integer(value: Any) -> int | None:
    """A JSON number that is an integer, or a string of at most 20 ASCII digits; else None."""
    if type(value) is int:
        return value
    if isinstance(value, str) and _UINT64_TEXT.fullmatch(value):
        return int(value)
    return None


def json_amount(value: Any, name: str = "amount") -> int:
    """A positive e9 amount below 2**64."""
    number = _integer(value)
    if number is None:
        raise InvalidField(
            name,
            f"{name} must be a positive integer in e9 units (a number or a string of at most 20 ASCII digits)",
        )
    if not 0 < number < UINT64_LIMIT:
        raise InvalidField(name, f"{name} must be between 1 and 2**64 - 1")
    return number


def json_uint(value: Any, name: str) -> int:
    """An unsigned 64-bit integer."""
    number = _integer(value)
    if number is None or not 0 <= number < UINT64_LIMIT:
        raise InvalidField(
            name, f"{name} must be an unsigned 64-bit integer (a number or a string of at most 20 ASCII digits)"
        )
    return number


def _halves(digits: int) -> str:
    """digits / 2 as a decimal ("19.5"), without a float."""
    return f"{digits // 2}.5" if digits % 2 else str(digits // 2)


def json_hex(value: Any, name: str, size: int) -> bytes:
    """0x-prefixed (or bare) ASCII hex of exactly `size` bytes (bytes.fromhex alone would also
    take spaces between the bytes)."""
    if not isinstance(value, str):
        raise InvalidField(name, f"{name} must be a 0x-prefixed {size}-byte hex string")
    digits = value[2:] if value[:2] in ("0x", "0X") else value
    if len(digits) != 2 * size:
        raise InvalidField(name, f"{name}: expected {size} bytes, got {_halves(len(digits))} ({shown(value)})")
    if not _HEX_TEXT.fullmatch(digits):
        raise InvalidField(name, f"{name}: not hex: {shown(value)}")
    return bytes.fromhex(digits)


def json_text(value: Any, name: str, limit: int = 64, *, empty: bool = False) -> str:
    """Unicode text of at most `limit` characters and `limit` bytes of UTF-8 (non-empty unless
    `empty`)."""
    wanted = f"{name} must be a {'' if empty else 'non-empty '}string of at most {limit} bytes"
    if not isinstance(value, str) or not (value or empty) or len(value) > limit:
        raise InvalidField(name, wanted)
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidField(name, f"{name} must be Unicode text (it holds a lone surrogate)") from exc
    if size > limit:
        raise InvalidField(name, wanted)
    return value


# -- field types -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldType:
    """One type of body field.

    ``conforms`` is the ledger's test of the CBOR value (false: ``bad_body``, and ``shape`` says
    what it wanted); ``from_json`` is the API's conversion of a client's JSON value (it raises
    `InvalidField`) and ``to_json`` the way back; ``schema`` is the JSON Schema of the JSON form.
    Every value ``from_json`` returns conforms. ``choices`` are the strings a choice takes (the
    ledger takes any text there and rejects other strings with a reason of its own).
    ``exact_type``, when set, says that ``conforms`` is exactly ``type(value) is exact_type``, so
    the ledger can test a whole body's types at once (`Kind.exact_types`)."""

    name: str
    shape: str
    conforms: Callable[[Any], bool]
    from_json: Callable[[Any, str], Any]
    to_json: Callable[[Any], Any]
    schema: Mapping[str, Any]
    choices: tuple[str, ...] = ()
    exact_type: type | None = None


def _exactly(python_type: type) -> Callable[[Any], bool]:
    """The ``conforms`` of a field whose ``exact_type`` is `python_type`."""
    return lambda value: type(value) is python_type


_UINT_JSON_SCHEMA = {"type": "string", "pattern": "^[0-9]{1,20}$"}

ADDRESS = FieldType(
    name="address",
    shape="a byte string",  # a participant's address; any other bytes are unknown_recipient
    conforms=_exactly(bytes),
    exact_type=bytes,
    from_json=lambda value, name: json_hex(value, name, 20),
    to_json=lambda value: "0x" + value.hex(),
    schema={"type": "string", "pattern": "^(0[xX])?[0-9a-fA-F]{40}$",
            "description": "a participant's address: 20 bytes as 0x-prefixed hex"},
)
TOKEN = FieldType(
    name="token",
    shape="a text string",  # a symbol of the genesis; any other text is unknown_token
    conforms=_exactly(str),
    exact_type=str,
    from_json=lambda value, name: json_text(value, name, MAX_SYMBOL),
    to_json=lambda value: value,
    schema={"type": "string", "minLength": 1, "maxLength": MAX_SYMBOL,
            "description": "a token symbol of the channel's genesis"},
)
AMOUNT = FieldType(
    name="amount",
    shape="an integer",  # positive; zero or less is bad_amount
    conforms=_exactly(int),
    exact_type=int,
    from_json=json_amount,
    to_json=str,
    schema={"oneOf": [_UINT_JSON_SCHEMA, {"type": "integer", "minimum": 1, "maximum": UINT64_LIMIT - 1}],
            "description": "a positive amount in e9 base units, best as a decimal string"},
)
UINT64 = FieldType(
    name="uint64",
    shape="an integer",
    conforms=_exactly(int),
    exact_type=int,
    from_json=json_uint,
    to_json=str,
    schema={"oneOf": [_UINT_JSON_SCHEMA, {"type": "integer", "minimum": 0, "maximum": UINT64_LIMIT - 1}],
            "description": "an unsigned 64-bit integer, best as a decimal string"},
)


def _short_text(value: Any) -> bool:
    return type(value) is str and len(value.encode()) <= MAX_LOCK_REASON


REASON_TEXT = FieldType(
    name="text",
    shape=f"a text string of at most {MAX_LOCK_REASON} bytes",
    conforms=_short_text,
    from_json=lambda value, name: json_text(value, name, MAX_LOCK_REASON),
    to_json=lambda value: value,
    schema={"type": "string", "minLength": 1, "maxLength": MAX_LOCK_REASON,
            "description": f"UTF-8 text of 1 to {MAX_LOCK_REASON} bytes (the ledger also takes empty text)"},
)


MARKET_SYMBOL = FieldType(
    name="market",
    shape="a text string",  # a market of the genesis; any other text is unknown_market
    conforms=_exactly(str),
    exact_type=str,
    from_json=lambda value, name: json_text(value, name, MAX_MARKET_SYMBOL),
    to_json=lambda value: value,
    schema={"type": "string", "minLength": 1, "maxLength": MAX_MARKET_SYMBOL,
            "description": "a market symbol of the channel's genesis"},
)


def json_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise InvalidField(name, f"{name} must be one of {list(choices)}, got {shown(value)}")
    return value


def choice(name: str, choices: tuple[str, ...], description: str) -> FieldType:
    """A field that is one of a few strings. The ledger's type test is any text (another string
    is rejected by the handler with its own reason); the API takes only the choices."""
    return FieldType(
        name=name,
        shape="a text string",
        conforms=_exactly(str),
        exact_type=str,
        from_json=lambda value, field_name: json_choice(value, field_name, choices),
        to_json=lambda value: value,
        schema={"type": "string", "enum": list(choices), "description": description},
        choices=choices,
    )


def json_flag(value: Any, name: str) -> bool:
    if type(value) is not bool:
        raise InvalidField(name, f"{name} must be true or false, got {shown(value)}")
    return value


SIDE = choice("side", SIDES, "which side of the book: buy base with quote, or sell base for quote")
ORDER_TYPE = choice("order_type", ORDER_TYPES, "limit, or market (an ioc whose price is the worst it accepts)")
TIF = choice("tif", TIFS, "time in force: gtc rests, ioc never rests, post_only never takes")
FLAG = FieldType(
    name="bool",
    shape="a boolean",
    conforms=_exactly(bool),
    exact_type=bool,
    from_json=json_flag,
    to_json=lambda value: value,
    schema={"type": "boolean"},
)
OP_ID = FieldType(
    name="op_id",
    shape="a byte string of 32 bytes",  # an operation's id; one that is no order is unknown_order
    conforms=lambda value: type(value) is bytes and len(value) == 32,
    from_json=lambda value, name: json_hex(value, name, 32),
    to_json=lambda value: "0x" + value.hex(),
    schema={"type": "string", "pattern": "^(0[xX])?[0-9a-fA-F]{64}$",
            "description": "an operation id: 32 bytes as 0x-prefixed hex"},
)


# -- kinds -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of operation: its exact body fields in order, the permission its author needs,
    and the `Ledger` method that applies it (``handler``: a method name, since the ledger
    imports this module)."""

    name: str
    fields: tuple[tuple[str, FieldType], ...]
    permission: Permission
    handler: str
    summary: str
    keys: frozenset[str] = field(init=False, repr=False, compare=False)
    types: Mapping[str, FieldType] = field(init=False, repr=False, compare=False)
    names: tuple[str, ...] = field(init=False, repr=False, compare=False)  # the fields' names, in order
    # a body's values in that order (a body with every key), and every field's exact_type in
    # that order or None if a field has none: see `crdt.ledger.body_values`
    values: Callable[[Mapping[str, Any]], tuple[Any, ...]] = field(init=False, repr=False, compare=False)
    exact_types: tuple[type, ...] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = tuple(name for name, _ in self.fields)
        if len(set(names)) != len(names):
            raise ValueError(f"kind {self.name}: a field is named twice")
        exact = tuple(kind.exact_type for _, kind in self.fields if kind.exact_type is not None)
        object.__setattr__(self, "keys", frozenset(names))
        object.__setattr__(self, "types", dict(self.fields))
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "values", _values_of(names))
        object.__setattr__(self, "exact_types", exact if len(exact) == len(names) else None)

    @property
    def roles(self) -> tuple[Role, ...]:
        """The roles that may author this kind, in `Role` order."""
        return tuple(role for role in Role if self.permission in PERMISSIONS[role])

    def conforms(self, body: Mapping[str, Any]) -> bool:
        """Exactly this kind's keys, each value of its field's type (the ledger's bad_body test)."""
        return body.keys() == self.keys and all(kind.conforms(body[name]) for name, kind in self.fields)

    def from_json(self, body: Any) -> dict[str, Any]:
        """A client's JSON body as the CBOR body, field by field in order, or `InvalidField`."""
        if not isinstance(body, dict):
            raise InvalidField("body", "body must be an object")
        names = [name for name, _ in self.fields]
        extra = sorted(set(body) - self.keys)
        missing = sorted(self.keys - set(body))
        if extra or missing:
            raise InvalidField(
                "body", f"body must have exactly {sorted(names)}; missing {missing}, unexpected {shown(extra)}"
            )
        return {name: kind.from_json(body[name], name) for name, kind in self.fields}

    def to_json(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """A conforming CBOR body in its JSON form (what `from_json` takes back)."""
        if not self.conforms(body):
            raise InvalidField("body", f"not a {self.name} body")
        return {name: kind.to_json(body[name]) for name, kind in self.fields}

    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema of this kind's JSON body."""
        return {
            "title": self.name,
            "description": self.summary,
            "type": "object",
            "properties": {name: dict(kind.schema) for name, kind in self.fields},
            "required": [name for name, _ in self.fields],
            "additionalProperties": False,
            "x-permission": self.permission.value,
            "x-roles": [role.value for role in self.roles],
        }


def _values_of(names: tuple[str, ...]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """A function from a body to its values for `names`, in order, as one tuple."""
    if len(names) > 1:
        return itemgetter(*names)  # a tuple of the values, in C
    return lambda body: tuple(body[name] for name in names)


class Registry(Mapping[str, Kind]):
    """The kinds a node knows, in their declared order (which the API's messages and documents
    follow; nothing depends on dict order)."""

    def __init__(self, kinds: Iterable[Kind]) -> None:
        self._kinds = tuple(kinds)
        self._by_name = {kind.name: kind for kind in self._kinds}
        if len(self._by_name) != len(self._kinds):
            raise ValueError("two kinds have the same name")

    def __getitem__(self, name: str) -> Kind:
        return self._by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(kind.name for kind in self._kinds)

    def __len__(self) -> int:
        return len(self._kinds)

    def __repr__(self) -> str:
        return f"Registry({list(self)})"

    def extended(self, *kinds: Kind) -> Registry:
        """This registry with more kinds after its own."""
        return Registry((*self._kinds, *kinds))

    def listing(self) -> str:
        """The kind names in prose: "transfer, withdraw and lock"."""
        names = list(self)
        return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]

    def kind(self, name: Any) -> Kind:
        """The kind a client named, or `UnknownKind`."""
        found = self._by_name.get(name) if isinstance(name, str) else None
        if found is None:
            raise UnknownKind(f"unknown kind {shown(name)}; this node signs {self.listing()}")
        return found

    def from_json(self, kind: Any, body: Any) -> dict[str, Any]:
        return self.kind(kind).from_json(body)

    def to_json(self, kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self.kind(kind).to_json(body)


TRANSFER = Kind(
    name="transfer",
    fields=(("to", ADDRESS), ("token", TOKEN), ("amount", AMOUNT)),
    permission=Permission.MOVE_FUNDS,
    handler="_transfer",
    summary="Moves free balance to another participant.",
)
WITHDRAW = Kind(
    name="withdraw",
    fields=(("token", TOKEN), ("amount", AMOUNT)),
    permission=Permission.MOVE_FUNDS,
    handler="_withdraw",
    summary="Moves free balance to the cumulative withdrawn amount, claimable on-chain once a checkpoint "
    "that holds it is finalised; whole units of the token only.",
)
LOCK = Kind(
    name="lock",
    fields=(("token", TOKEN), ("amount", AMOUNT), ("until", UINT64), ("reason", REASON_TEXT)),
    permission=Permission.MOVE_FUNDS,
    handler="_lock",
    summary="Moves free balance to a lock that the first checkpoint whose time is at least until releases.",
)

ORDER_PLACE = Kind(
    name="order.place",
    fields=(
        ("market", MARKET_SYMBOL), ("side", SIDE), ("type", ORDER_TYPE), ("tif", TIF), ("price", UINT64),
        ("qty", UINT64), ("reduce_only", FLAG), ("expires", UINT64),
    ),
    permission=Permission.TRADE,
    handler="_order_place",
    summary="Places an order: price in e9 quote per whole base, qty in e9 base, expires in ms of checkpoint "
    "time (0: never). It matches the resting orders it crosses at their prices, oldest first at a price; "
    "what is left rests (gtc, holding what it may spend) or is cancelled (ioc, market).",
)
ORDER_CANCEL = Kind(
    name="order.cancel",
    fields=(("order", OP_ID),),
    permission=Permission.TRADE,
    handler="_order_cancel",
    summary="Cancels one of the author's open orders (its id is the op id of its order.place), releasing its hold.",
)
ORDER_CANCEL_ALL = Kind(
    name="order.cancel_all",
    fields=(("market", MARKET_SYMBOL),),
    permission=Permission.TRADE,
    handler="_order_cancel_all",
    summary="Cancels every open order of the author in a market (none open is fine), releasing their holds.",
)

ORACLE_PRICE = Kind(
    name="oracle.price",
    fields=(("market", MARKET_SYMBOL), ("price", UINT64)),
    permission=Permission.POST_PRICE,
    handler="_oracle_price",
    summary="Posts the author's (an oracle's) price of a perpetual market in e9 quote per whole base; each "
    "checkpoint fixes the market's price as the lower median of the oracles' fresh latest prices.",
)

LIQUIDATE = Kind(
    name="liquidate",
    fields=(("account", ADDRESS), ("market", MARKET_SYMBOL), ("qty", UINT64)),
    permission=Permission.LIQUIDATE,
    handler="_liquidate",
    summary="Takes qty (e9 base) of another account's perp position, allowed only while that account's value is "
    "below its maintenance margin, at the oracle price less half the mmr (a long; more for a short), bounded by the "
    "bankruptcy price; the premium is split between the liquidator and the insurance pool.",
)

KINDS = Registry((TRANSFER, WITHDRAW, LOCK, ORDER_PLACE, ORDER_CANCEL, ORDER_CANCEL_ALL, ORACLE_PRICE, LIQUIDATE))
