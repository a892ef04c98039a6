"""The JSON shapes of perpetual markets: positions, accounts, mark prices, funding, liquidations.

As `channel.runtime.trading` does for books and fills: pure functions of the replica's ledger,
every e9 integer a decimal string, addresses 0x hex. The node's reads (`Node.positions`,
`Node.account`, ...) return these, the JSON-RPC methods send them as they are.

An account's health, from its value (AV), initial margin (IMR) and maintenance margin (MMR) in a
collateral token (TRADING.md): ``ok`` (AV >= IMR: anything), ``reduce_only`` (AV < IMR: only
orders that reduce, and collateral coming in), ``liquidatable`` (AV < MMR), ``bankrupt``
(AV < 0). ``free_collateral`` is what may leave it: ``max(min(AV - IMR, balance), 0)``.
"""

from __future__ import annotations

from typing import Any

from crdt.errors import InternalError
from crdt.ledger import Ledger
from crdt.markets.config import Market, PerpParams
from crdt.markets.oracle import is_fresh
from crdt.markets.perp import Position, liquidation_price, unrealised
from crdt.types import Address, Symbol

OK, REDUCE_ONLY, LIQUIDATABLE, BANKRUPT = "ok", "reduce_only", "liquidatable", "bankrupt"


def hex0x(data: bytes) -> str:
    return "0x" + data.hex()


def health(value: int, initial: int, maintenance: int) -> str:
    if value < 0:
        return BANKRUPT
    if value < maintenance:
        return LIQUIDATABLE
    if value < initial:
        return REDUCE_ONLY
    return OK


def perp_markets(ledger: Ledger) -> list[str]:
    """The perp markets of the genesis, by symbol."""
    return sorted(m.symbol for m in ledger.genesis.markets if m.perp is not None)


def collateral_tokens(ledger: Ledger) -> list[Symbol]:
    """The tokens perp markets are quoted in, by symbol."""
    return sorted({m.quote for m in ledger.genesis.markets if m.perp is not None})


def position_json(ledger: Ledger, market: str, account: Address, position: Position) -> dict[str, Any]:
    """One position, valued at its market's price, with what it owes in funding and the price
    that would make its account liquidatable."""
    found, params = _perp(ledger, market)
    mark = ledger.mark(market) or position.entry_price
    value = ledger.margin(account, found.quote)[0]
    liquidation = liquidation_price(position, mark, value, params.mmr)
    return {
        "market": market,
        "account": hex0x(account),
        "side": "long" if position.size > 0 else "short",
        "size": str(abs(position.size)),
        "entry_price": str(position.entry_price),
        "open_notional": str(position.open_notional),
        "mark_price": str(mark),
        "notional": str(mark * abs(position.size) // 10**9),
        "unrealised_pnl": str(unrealised(position, mark)),
        "pending_funding": str(ledger.pending_funding(market, position)),
        "liquidation_price": None if liquidation is None else str(liquidation),
    }


def positions_json(ledger: Ledger, account: Address | None = None) -> list[dict[str, Any]]:
    """Every open position (of one account, if given), by market then account."""
    return [
        position_json(ledger, market, owner, position)
        for (market, owner), position in sorted(ledger.positions.items())
        if account is None or owner == account
    ]


def account_json(ledger: Ledger, account: Address) -> dict[str, Any]:
    """An account's cross margin in each collateral token, and its positions."""
    margins = {}
    for token in collateral_tokens(ledger):
        value, initial, maintenance = ledger.margin(account, token)
        balance = ledger.balance(account, token)
        margins[token] = {
            "balance": str(balance),
            "debt": str(ledger.debt.get((account, token), 0)),
            "account_value": str(value),
            "initial_margin": str(initial),
            "maintenance_margin": str(maintenance),
            "free_collateral": str(max(min(value - initial, balance), 0)),
            "health": health(value, initial, maintenance),
        }
    return {"account": hex0x(account), "collateral": margins, "positions": positions_json(ledger, account)}


def mark_prices_json(ledger: Ledger) -> list[dict[str, Any]]:
    """Each perp market's price for the epoch, whether it is fresh, whether the circuit breaker
    halts it, its funding index and last rate, and its open interest."""
    rows = []
    for symbol in perp_markets(ledger):
        _, params = _perp(ledger, symbol)
        mark = ledger.marks.get(symbol)
        funding = ledger.funding.get(symbol)
        rows.append({
            "market": symbol,
            "price": None if mark is None else str(mark.price),
            "fixed_at": None if mark is None else mark.fixed,
            "fresh": is_fresh(mark, ledger.time, params.oracle_staleness),
            "halted": ledger.halted(symbol),
            "funding_index": str(funding.cumulative if funding else 0),
            "funding_rate": str(funding.rate if funding else 0),
            "open_interest": str(sum(p.size for (m, _), p in ledger.positions.items() if m == symbol and p.size > 0)),
        })
    return rows


def funding_history_json(ledger: Ledger, market: str, limit: int) -> list[dict[str, Any]]:
    """The market's last `limit` fundings, oldest first."""
    events = ledger.funding_history.get(market, ())
    return [
        {"version": version, "time": time, "rate": str(rate), "index": str(index), "mark_price": str(mark)}
        for version, time, rate, index, mark in events[-limit:]
    ] if limit > 0 else []


def funding_payments_json(ledger: Ledger, account: Address, market: str | None, limit: int) -> list[dict[str, Any]]:
    """The account's last `limit` funding settlements (of one perp market, if given), oldest
    first: what each of its positions paid (positive) or received (negative) when it was settled,
    for every funding interval since it last was (a position settles when it is touched)."""
    rows = [
        (version, symbol, time, paid)
        for (symbol, owner), payments in ledger.funding_paid.items()
        if owner == account and market in (None, symbol)
        for version, time, paid in payments
    ]
    rows.sort(key=lambda row: (row[0], row[2], row[1]))  # a stable order: checkpoint, time, market
    return [
        {"market": symbol, "account": hex0x(account), "version": version, "time": time, "paid": str(paid)}
        for version, symbol, time, paid in rows[-limit:]
    ] if limit > 0 else []


def liquidatable_json(ledger: Ledger) -> list[dict[str, Any]]:
    """The accounts below maintenance margin in some collateral token, for liquidator bots: each
    with its value, margin and positions (the largest notional first)."""
    found = []
    accounts = sorted({owner for _, owner in ledger.positions})
    for account in accounts:
        for token in collateral_tokens(ledger):
            value, initial, maintenance = ledger.margin(account, token)
            if value < maintenance:
                positions = [p for p in positions_json(ledger, account) if _quote(ledger, p["market"]) == token]
                positions.sort(key=lambda p: -int(p["notional"]))
                found.append({"account": hex0x(account), "token": token, "account_value": str(value),
                              "maintenance_margin": str(maintenance), "health": health(value, initial, maintenance),
                              "positions": positions})
    return found


def liquidation_json(op_id: bytes, ledger: Ledger) -> dict[str, Any] | None:
    """What a liquidate operation did, if it took effect."""
    record = ledger.liquidations.get(op_id)  # type: ignore[call-overload]
    if record is None:
        return None
    return {
        "op_id": hex0x(op_id), "account": hex0x(record.account), "liquidator": hex0x(record.liquidator),
        "market": record.market, "qty": str(record.qty), "mark_price": str(record.mark), "price": str(record.price),
        "taken_at": str(record.taken_at), "insurance": str(record.insurance), "covered": str(record.covered),
        "deleveraged": [hex0x(a) for a in record.deleveraged],
    }


def _perp(ledger: Ledger, symbol: str) -> tuple[Market, PerpParams]:
    market = ledger.genesis.market(symbol)
    if market is None or market.perp is None:
        raise InternalError(f"{symbol} is not a perp market of the genesis")
    return market, market.perp


def _quote(ledger: Ledger, symbol: str) -> str:
    return _perp(ledger, symbol)[0].quote
