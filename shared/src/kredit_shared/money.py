"""Money on the wire and in the domain: Decimal amounts, half-up to the cent, ISO 4217 currencies."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Annotated, Any

import pycountry
from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

CENT = Decimal("0.01")
ZERO = Decimal("0.00")


def round_money(value: Decimal) -> Decimal:
    """Round half-up to the currency's minor unit (all currencies we book have two decimals)."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def parse_amount(value: Any) -> Decimal:
    """Accept a JSON string (or Decimal/int) with at most two decimals; refuse floats, NaN and infinities.

    Floats are refused because 0.1 + 0.2 style binary errors must never reach a ledger.
    """
    if isinstance(value, bool) or isinstance(value, float):
        raise ValueError("amount must be a decimal string such as \"1000.00\", not a JSON number with a fraction")
    if isinstance(value, int):
        value = Decimal(value)
    if isinstance(value, str):
        try:
            value = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"amount {value!r} is not a decimal number") from None
    if not isinstance(value, Decimal):
        raise ValueError(f"amount must be a decimal string, got {type(value).__name__}")
    if not value.is_finite():
        raise ValueError("amount must be a finite number")
    if value.as_tuple().exponent < -2:
        raise ValueError(f"amount {value} has more than two decimals")
    return round_money(value)


def format_amount(value: Decimal) -> str:
    return str(round_money(value))


Amount = Annotated[
    Decimal,
    BeforeValidator(parse_amount),
    PlainSerializer(format_amount, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": r"^-?\d+(\.\d{1,2})?$", "examples": ["1000.00"]}),
]
"""A money amount: Decimal in Python, a two-decimal string in JSON."""

_ISO_4217 = frozenset(c.alpha_3 for c in pycountry.currencies)


def parse_currency(value: Any) -> str:
    if not isinstance(value, str) or value.upper() != value or value not in _ISO_4217:
        raise ValueError(f"currency {value!r} is not an ISO 4217 code")
    return value


Currency = Annotated[
    str,
    BeforeValidator(parse_currency),
    WithJsonSchema({"type": "string", "pattern": "^[A-Z]{3}$", "examples": ["USD"]}),
]


def split_proportionally(total: Decimal, weights: list[Decimal]) -> list[Decimal]:
    """Split `total` into cents in proportion to `weights` so the parts always add up (largest remainder)."""
    if not weights:
        return []
    weight_sum = sum(weights, Decimal(0))
    if weight_sum == 0:
        raise ValueError("cannot split by weights that sum to zero")
    cents = int((round_money(total) / CENT).to_integral_value())
    if cents < 0:
        return [-part for part in split_proportionally(-total, weights)]
    exact = [Decimal(cents) * w / weight_sum for w in weights]
    floors = [int(e.to_integral_value(rounding="ROUND_FLOOR")) for e in exact]
    remainder = cents - sum(floors)
    order = sorted(range(len(weights)), key=lambda i: (exact[i] - floors[i]), reverse=True)
    for i in order[:remainder]:
        floors[i] += 1
    return [Decimal(c) * CENT for c in floors]
