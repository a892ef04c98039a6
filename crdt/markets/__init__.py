"""Order books in the replicated state: markets of the genesis, resting orders, fills (TRADING.md).

The matching itself is part of the ledger's replay (`crdt.ledger.Ledger`, kinds ``order.place``,
``order.cancel`` and ``order.cancel_all``); this package holds its values and arithmetic.
"""

from crdt.markets.book import Book, Fill, FillChanges, FillRecord, OrderInfo, RestingOrder
from crdt.markets.config import Market, MarketKind, fee, notional

__all__ = [
    "Book", "Fill", "FillChanges", "FillRecord", "Market", "MarketKind", "OrderInfo", "RestingOrder", "fee", "notional",
]
