"""What every JSON-RPC method returns, as pydantic models: the OpenRPC document's result schemas
(`result_schemas`), and what tests/channel/api/test_openrpc_conformance.py checks every real
answer against.

The shapes are built elsewhere (`channel.runtime.trading`, `channel.runtime.perps`, the node's
reads, `channel.runtime.exits`); these models describe them and forbid anything else, so a key
added to an answer without its model fails the conformance test. e9 amounts are decimal strings
(`E9`, `SignedE9`), ids and addresses 0x hex.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic.json_schema import models_json_schema

E9 = Annotated[str, Field(pattern=r"^[0-9]+$", description="e9 base units, a decimal string")]
SignedE9 = Annotated[str, Field(pattern=r"^-?[0-9]+$", description="e9 base units, a decimal string")]
Hex32 = Annotated[str, Field(pattern=r"^0x[0-9a-f]{64}$")]
AddressHex = Annotated[str, Field(pattern=r"^0x[0-9a-f]{40}$")]
HexBytes = Annotated[str, Field(pattern=r"^0x([0-9a-f]{2})*$")]
Side = Literal["buy", "sell"]
Health = Literal["ok", "reduce_only", "liquidatable", "bankrupt"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- operations -----------------------------------------------------------------------------------


class Receipt(Model):
    """What signing an operation answers: its id, seq and status now."""

    op_id: Hex32
    seq: int | None
    status: str = Field(description="final, tentative, rejected:<reason>, pending or unknown")


class OperationStatus(Model):
    op_id: Hex32
    status: str
    author: AddressHex | None = None
    seq: int | None = None
    kind: str | None = None


class Parts(Model):
    free: SignedE9 | None = None
    held: E9 | None = None
    locked: E9 | None = None
    withdrawn: E9 | None = None


class Heads(Model):
    heads: list[Hex32]
    version_vector: dict[str, int]


class GossipPeer(Model):
    connections: int
    pubsub_stream: bool
    queued: int | None


class GossipTopic(Model):
    subscribed: int
    mesh: int


class WireCount(Model):
    messages: int
    bytes: int


class Gossip(Model):
    peers: dict[str, GossipPeer]
    topics: dict[str, GossipTopic]
    rpc_dropped: int
    streams_lost: int
    rpcs_lost: int
    received: dict[str, WireCount] = Field(
        default_factory=dict, description="per topic, every message that came in, with the duplicates GossipSub drops"
    )


class ConsensusProgress(Model):
    height: int
    started: bool
    round: int
    step: str
    waiting_for_operations: bool
    highest_seen: int
    validations: dict[str, int]


class Peers(Model):
    local_id: str | None
    connected: list[str]
    sync_sessions: list[str]
    banned: list[str]
    penalties: dict[str, Any]
    gossip: Gossip | None = None  # over libp2p only: what GossipSub holds


class Latency(Model):
    count: float
    p50_ms: float | None = None
    p99_ms: float | None = None


class Stats(Model):
    address: AddressHex
    channel: Hex32
    operations: int
    final: int = Field(description="operations in the certified prefix (final or rejected for good)")
    in_memory: int = Field(description="accepted operations in memory; the rest are in the store's archive "
                                       "(compaction, `[store] keep_epochs`)")
    pending: int
    rejected: int
    rejected_reasons: dict[str, int]
    heads: int
    version: int
    state_hash: Hex32
    payout_root: Hex32
    submitted: int
    uptime_s: float
    ops_per_s: float = Field(description="operations accepted per second over the last 10 seconds")
    ops_per_s_average: float = Field(description="since the node started")
    latency: dict[Literal["submit", "delivery", "finality"], Latency]
    equivocations: int
    signing: str
    voting_from: int | None
    storage_error: str | None = None
    peers: int | None = None
    sync_sessions: int | None = None
    gossip_rejected: int | None = None
    gossip_batches_received: int | None = Field(None, description="gossip messages of operations delivered to us")
    gossip_ops_received: int | None = None
    gossip_bytes_received: int | None = None
    sync_messages_received: int | None = Field(None, description="frames the sync streams brought")
    sync_ops_received: int | None = None
    sync_bytes_received: int | None = None
    sync_ticks_skipped: int | None = None
    certified: int | None = None
    catchup: dict[str, int] | None = None
    consensus_gossip: dict[str, int] | None = None
    consensus: ConsensusProgress | None = None
    chain: dict[str, Any] | None = Field(None, description="the chain worker's status, with a chain configured")


class CheckpointRow(Model):
    version: int
    time: int
    heads: int
    deposits: int
    certified: bool


class CertificateInfo(Model):
    version: int
    payout_root: Hex32
    state_hash: Hex32
    totals: list[E9]
    deposit_nonce: int
    time: int
    signers: list[AddressHex]
    certificate: HexBytes = Field(description="the certificate's CBOR, what parley exit and the contract take")


class Evidence(Model):
    kind: str = Field(description="equivocation (with the two signed contents), or what consensus recorded")
    offender: AddressHex | None = None
    channel: Hex32 | None = None
    author: AddressHex | None = None
    seq: int | None = None
    content_hash_a: Hex32 | None = None
    signature_a: HexBytes | None = None
    content_hash_b: Hex32 | None = None
    signature_b: HexBytes | None = None


# -- trading --------------------------------------------------------------------------------------


class MarketInfo(Model):
    symbol: str
    kind: Literal["spot", "perp"]
    base: str
    quote: str
    tick_size: E9
    step_size: E9
    min_qty: E9
    max_qty: E9
    min_price: E9
    max_price: E9
    maker_fee: E9
    taker_fee: E9
    price_decimals: int
    qty_decimals: int
    perp: dict[str, E9 | list[E9]] | None = None


class OwnFill(Model):
    fill_id: HexBytes = Field(description="the taker order id then the maker order id")
    market: str
    price: E9
    qty: E9
    notional: E9
    side: Side
    taker_order: Hex32
    maker_order: Hex32
    taker: AddressHex
    maker: AddressHex
    taker_fee: E9
    maker_fee: E9
    final: bool
    liquidity: Literal["taker", "maker"] | None = None
    order: Hex32 | None = None
    fee: E9 | None = None


class Order(Model):
    order_id: Hex32
    owner: AddressHex
    market: str
    side: Side
    type: Literal["limit", "market"]
    tif: Literal["gtc", "ioc", "post_only"]
    price: E9
    qty: E9
    reduce_only: bool
    expires: E9
    remaining: E9
    filled: E9
    status: str
    final: bool
    fills: list[OwnFill]


class OrderReceipt(Receipt):
    order: Order | None = Field(description="the order's state once applied, as parley_order")


class ErrorObject(Model):
    code: int
    message: str
    data: dict[str, Any] | None = None


class Refused(Model):
    """A batch item the node refused (nothing was signed for it): the error the call alone
    would have answered."""

    error: ErrorObject


class Resting(Model):
    order_id: Hex32
    owner: AddressHex
    market: str
    side: Side
    price: E9
    remaining: E9
    placed: int
    mine: bool


class Book(Model):
    market: str
    level: Literal[2, 3]
    version: int
    best_bid: E9 | None
    best_ask: E9 | None
    bids: list[tuple[E9, E9]] | list[Resting]
    asks: list[tuple[E9, E9]] | list[Resting]


class Position(Model):
    market: str
    account: AddressHex
    side: Literal["long", "short"]
    size: E9
    entry_price: E9
    open_notional: SignedE9
    mark_price: E9
    notional: E9
    unrealised_pnl: SignedE9
    pending_funding: SignedE9
    liquidation_price: E9 | None


class Margin(Model):
    balance: SignedE9
    debt: E9
    account_value: SignedE9
    initial_margin: E9
    maintenance_margin: E9
    free_collateral: E9
    health: Health


class Account(Model):
    account: AddressHex
    collateral: dict[str, Margin]
    positions: list[Position]


class MarkPrice(Model):
    market: str
    price: E9 | None
    fixed_at: int | None
    fresh: bool
    halted: bool
    funding_index: SignedE9
    funding_rate: SignedE9
    open_interest: E9


class Funding(Model):
    version: int
    time: int
    rate: SignedE9
    index: SignedE9
    mark_price: E9


class FundingPayment(Model):
    market: str
    account: AddressHex
    version: int
    time: int
    paid: SignedE9 = Field(description="positive: the position paid; negative: it received")


class Liquidatable(Model):
    account: AddressHex
    token: str
    account_value: SignedE9
    maintenance_margin: E9
    health: Health
    positions: list[Position]


class Liquidation(Model):
    op_id: Hex32
    account: AddressHex
    liquidator: AddressHex
    market: str
    qty: E9
    mark_price: E9
    price: E9
    taken_at: E9
    insurance: SignedE9
    covered: E9
    deleveraged: list[AddressHex]


class LiquidateReceipt(Receipt):
    liquidation: Liquidation | None


# -- the exit -------------------------------------------------------------------------------------


class Leaf(Model):
    token: str
    kind: Literal["balance", "withdrawal"]
    amount: E9 = Field(description="in the token's own decimals, as the contract paid it")
    amount_e9: E9 | None = None


class ExitStatus(Model):
    phase: Literal["idle", "starting", "proposing", "challenged", "waiting", "finalising", "claiming", "claimed",
                   "failed"]
    running: bool
    attempts: int
    version: int
    proposed: bool
    challenged: bool
    finalized: bool
    finalizes_at: int
    chain_now: int
    window: int
    remaining: int | None
    claimed: list[Leaf]
    already_claimed: list[Leaf]
    refunded: list[int]
    message: str
    error: str | None
    events: list[dict[str, str]]
    chain: bool


class OpenRpcDocument(BaseModel):
    """rpc.discover: the OpenRPC 1.2.6 document (its own schema is the OpenRPC specification's)."""

    model_config = ConfigDict(extra="allow")
    openrpc: str
    info: dict[str, Any]
    methods: list[dict[str, Any]]


# Each method's result. A method without an entry fails tests/channel/api/test_openrpc_conformance.py.
RESULTS: dict[str, Any] = {
    "parley_submit": Receipt,
    "parley_transfer": Receipt,
    "parley_submitMany": list[Receipt | Refused],
    "parley_balances": dict[str, dict[str, Parts]],
    "parley_status": OperationStatus,
    "parley_heads": Heads,
    "parley_peers": Peers,
    "parley_stats": Stats,
    "parley_checkpoints": list[CheckpointRow],
    "parley_certificate": CertificateInfo,
    "parley_evidence": list[Evidence],
    "parley_markets": list[MarketInfo],
    "parley_placeOrder": OrderReceipt,
    "parley_placeOrders": list[OrderReceipt | Refused],
    "parley_cancelOrder": OrderReceipt,
    "parley_cancelAll": Receipt,
    "parley_orderBook": Book,
    "parley_openOrders": list[Resting],
    "parley_order": Order,
    "parley_myTrades": list[OwnFill],
    "parley_trades": list[OwnFill],
    "parley_positions": list[Position],
    "parley_account": Account,
    "parley_markPrices": list[MarkPrice],
    "parley_fundingHistory": list[Funding],
    "parley_fundingPayments": list[FundingPayment],
    "parley_liquidatable": list[Liquidatable],
    "parley_postPrice": Receipt,
    "parley_liquidate": LiquidateReceipt,
    "parley_exit": ExitStatus,
    "parley_exitStatus": ExitStatus,
    "rpc.discover": OpenRpcDocument,
}

REF = "#/components/schemas/{model}"


@functools.cache
def result_schemas() -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """(method -> its result's JSON Schema, with $refs into components.schemas; the component
    schemas those refs name)."""
    components: dict[str, dict[str, Any]] = {}
    schemas: dict[str, dict[str, Any]] = {}
    models = sorted({m for m in RESULTS.values() if isinstance(m, type) and issubclass(m, BaseModel)},
                    key=lambda m: m.__name__)
    _, top = models_json_schema([(m, "serialization") for m in models], ref_template=REF)
    components.update(top.get("$defs", {}))
    for method, result in RESULTS.items():
        if isinstance(result, type) and issubclass(result, BaseModel):
            schemas[method] = {"$ref": REF.format(model=result.__name__)}
        else:
            schema = TypeAdapter(result).json_schema(ref_template=REF, mode="serialization")
            components.update(schema.pop("$defs", {}))
            schemas[method] = schema
    return schemas, components
