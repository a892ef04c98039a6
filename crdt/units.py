"""Conversions between e9 base units (the state) and a token's own decimals (the chain).

Deposits come in exactly when the token has at most 9 decimals; for tokens with more, the part
below 1e-9 is not credited. Payouts are always rounded down, so the sum paid never exceeds what
was deposited.
"""

from __future__ import annotations

import re

E9 = 10**9


def to_e9(amount: int, decimals: int) -> int:
    """Token units to e9, rounding down."""
    scale: int = 10 ** abs(9 - decimals)
    return amount * scale if decimals <= 9 else amount // scale


def from_e9(amount: int, decimals: int) -> int:
    """e9 to token units, rounding down."""
    scale: int = 10 ** abs(decimals - 9)
    return amount * scale if decimals >= 9 else amount // scale


def apportion(amounts: list[int], decimals: int) -> list[int]:
    """Each e9 amount in token units, so that they sum to the units of their sum, rounded down
    (largest remainder: every amount is rounded down, then the units that rounding lost go,
    one each, to the amounts with the largest remainders, the earlier one first on a tie).

    Rounding each payout down on its own would leave up to one unit per account in the
    contract that no leaf pays: a channel's holdings in a 6-decimal token are whole units,
    but balances moved by e9 transfers are not. Apportioned, the leaves pay out all of it."""
    if decimals >= 9:
        return [from_e9(amount, decimals) for amount in amounts]
    scale = 10 ** (9 - decimals)
    floors = [amount // scale for amount in amounts]
    lost = sum(amounts) // scale - sum(floors)
    order = sorted(range(len(amounts)), key=lambda i: (-(amounts[i] % scale), i))
    for i in order[:lost]:
        floors[i] += 1
    return floors


def format_e9(amount: int) -> str:
    """A human-readable decimal string of an e9 amount, without floats."""
    sign = "-" if amount < 0 else ""
    whole, frac = divmod(abs(amount), E9)
    text = f"{sign}{whole}.{frac:09d}".rstrip("0")
    return text[:-1] if text.endswith(".") else text


# ASCII digits only (str.isdigit() also takes "²", which int() refuses, and Arabic-Indic digits,
# which int() reads as numbers), and at most 20 before the point: 2**64 e9 units is 1.8e10 tokens.
_DECIMAL = re.compile(r"(-?)([0-9]{0,20})(?:\.([0-9]*))?")


def parse_e9(text: str) -> int:
    """Parse a decimal string such as "12.5" into e9 units, exactly, or raise ValueError."""
    text = text.strip(" \t\r\n")
    match = _DECIMAL.fullmatch(text)
    if match is None or not (match[2] or match[3]):
        raise ValueError(f"not a decimal amount: {text[:40]!r}")
    sign, whole, frac = match[1], match[2], match[3] or ""
    if len(frac) > 9:
        raise ValueError(f"more than 9 decimal places: {text[:40]!r}")
    value = int(whole or "0") * E9 + int(frac.ljust(9, "0"))
    return -value if sign else value
