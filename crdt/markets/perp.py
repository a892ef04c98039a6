"""The integer arithmetic of perpetual positions (TRADING.md "Perpetuals"; issue 13).

A position is a signed size (e9 base: positive long, negative short) and its *open notional*:
what its open part cost, in quote e9 (never negative). It changes only at fills:

- a fill on the position's side (or of a flat account) adds ``notional(price, qty)`` to the
  open notional;
- a fill against it closes ``q = min(qty, |size|)`` of it. The closed part's basis is
  ``open · q // |size|`` (rounded down: the rest stays with the part still open, and a closed
  position's basis is exactly what is left), and the realised PnL is ``notional(price, q) -
  basis`` for a long, ``basis - notional(price, q)`` for a short. What is left of the fill
  (a flip) opens the other side at ``notional(price, qty - q)``.

That exact split keeps one identity with no rounding at all: per market, the realised PnL of
every account sums to ``Σ sign · open notional`` over the open positions (each fill's notional
moves between two accounts once: a cash flow that is zero-sum). The ledger's ``pnl_pool`` is
minus that sum (what realised PnL took out of, or put into, the accounts' collateral), and
`check_conservation` asserts the identity.

Valued at a mark price ``P``, a long is worth ``notional(P, size) - open`` (rounded down) and a
short ``open - ceil(P · |size| / 1e9)`` (the payer's side rounded up), so the unrealised PnL of
all positions never sums to more than the pool: a payout that closes every position at ``P``
never pays out more than the channel holds. The entry price shown to users is ``open · 1e9 //
|size|``, rounded down.

Margin of an account per collateral token (cross margin over the perp markets quoted in it):
``AV = collateral + Σ uPnL``, ``IMR = Σ ceil(notional(P, |size|) · imr / 1e9)``, ``MMR`` likewise
with ``mmr``. An account whose risk grows must keep ``AV ≥ IMR`` after the fill, and its position's
notional within the cap of its leverage (``max_notional_at_open[ceil(notional / AV) - 1]``).
"""

from __future__ import annotations

from typing import NamedTuple

from crdt.markets.config import E9, PerpParams, fee, notional


class Position(NamedTuple):
    """One account's position in one perp market: `size` e9 base (negative: short),
    `open_notional`, the quote e9 its open part cost, and `funding`, the market's funding index
    when it last settled its funding (crdt/markets/funding.py)."""

    size: int
    open_notional: int
    funding: int = 0

    @property
    def entry_price(self) -> int:
        """The average entry price (e9 quote per whole base), rounded down; 0 when flat."""
        return self.open_notional * E9 // abs(self.size) if self.size else 0


FLAT = Position(0, 0, 0)


class FillOutcome(NamedTuple):
    """A position after one fill, and the PnL the fill realised (signed quote e9)."""

    position: Position
    realised: int


def fill_position(position: Position, buy: bool, price: int, qty: int) -> FillOutcome:
    """`position` after buying (`buy`) or selling `qty` at `price` (its funding index kept: the
    ledger settles funding before a fill)."""
    size, open_notional, funding = position
    delta = qty if buy else -qty
    if size == 0 or (size > 0) == buy:  # opens or grows
        return FillOutcome(Position(size + delta, open_notional + notional(price, qty), funding), 0)
    closed = min(qty, abs(size))
    basis = open_notional * closed // abs(size)
    value = notional(price, closed)
    realised = value - basis if size > 0 else basis - value
    left = open_notional - basis
    if qty > closed:  # a flip: what is left of the fill opens the other side
        return FillOutcome(Position(size + delta, notional(price, qty - closed), funding), realised)
    return FillOutcome(Position(size + delta, left, funding), realised)


def unrealised(position: Position, mark: int) -> int:
    """The position's PnL if closed at `mark`: the long side rounded down, the short side's
    cost rounded up (so the PnL of all positions never sums to more than was paid in)."""
    size, open_notional, _ = position
    if size > 0:
        return notional(mark, size) - open_notional
    if size < 0:
        return open_notional - (-(-mark * -size // E9))
    return 0


def margin_requirement(position: Position, mark: int, rate: int) -> int:
    """``ceil(notional(mark, |size|) · rate / 1e9)``: the IMR (rate imr) or MMR (rate mmr)."""
    return fee(notional(mark, abs(position.size)), rate) if position.size else 0


def grows_risk(before: Position, after: Position) -> bool:
    """Whether a fill made the position larger or flipped it."""
    return abs(after.size) > abs(before.size) or (before.size > 0 > after.size) or (before.size < 0 < after.size)


def leverage_cap(params: PerpParams, position_notional: int, account_value: int) -> int:
    """The largest notional a position may have at the leverage it would then run at:
    ``ceil(notional / AV)``, capped at the last tier. An account without positive value has no
    leverage at all (cap 0)."""
    if account_value <= 0:
        return 0
    leverage = max(1, -(-position_notional // account_value))
    caps = params.max_notional_at_open
    return caps[min(leverage, len(caps)) - 1]


def reducible(position: Position, buy: bool) -> int:
    """How much of an order of side `buy` may fill without growing or flipping `position`."""
    if (buy and position.size < 0) or (not buy and position.size > 0):
        return abs(position.size)
    return 0


def liquidation_price(position: Position, mark: int, account_value: int, mmr: int) -> int | None:
    """The oracle price at which the account's value would meet its maintenance margin, were
    this position the only thing to move: ``(P·s - AV) / (s·(1 - mmr))`` for a long of size
    ``s``, ``(P·s + AV) / (s·(1 + mmr))`` for a short (e9, rounded toward the mark; None when
    flat, 0 when no price would do it)."""
    size = abs(position.size)
    if not size:
        return None
    value = notional(mark, size)
    if position.size > 0:  # rounded up: at that price or below, it is liquidatable
        return max(0, -(-(value - account_value) * E9 * E9 // (size * (E9 - mmr))))
    return max(0, (value + account_value) * E9 * E9 // (size * (E9 + mmr)))  # rounded down
