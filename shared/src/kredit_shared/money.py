"""Money on the wire and in the domain: Decimal amounts, half-up to the cent, ISO 4217 currencies."""

from __future__ import annotations

import re
from contextvars import ContextVar
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any

import pycountry
from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

CENT = Decimal("0.01")
MIL = Decimal("0.001")
ZERO = Decimal("0.00")


def round_money(value: Decimal) -> Decimal:
    """Round half-up to the currency's minor unit (all currencies we book have two decimals)."""
    return value.quantize(CENT, ROUND_HALF_UP)  # positional: half the cost of the keyword, on every amount


MAX_AMOUNT = Decimal("999999999999999.99")
"""The largest amount the contract carries: 15 integer digits. NUMERIC(18,2) (PostgreSQL) and int64
cents (SQLite) hold it with room for sums; totals are summed exactly wherever they are stored."""

AMOUNT_PATTERN = r"^-?[0-9]{1,15}(\.[0-9]{1,2})?$"
_AMOUNT = re.compile(AMOUNT_PATTERN)
_PLAIN_DECIMAL = re.compile(r"-?(?P<digits>[0-9]+)(\.[0-9]+)?")


def check_amount_bound(value: Decimal, what: str = "amount") -> Decimal:
    """Refuse a finite value beyond ±MAX_AMOUNT (e.g. an invoice total of many maximal lines)."""
    if abs(value) > MAX_AMOUNT:
        raise ValueError(f"{what} {value:f} exceeds the largest amount {MAX_AMOUNT} (15 integer digits)")
    return value


def parse_amount(value: Any) -> Decimal:
    """Accept a JSON string of the form `-?ddd[.dd]` (at most 15 integer digits, two decimals), a
    JSON integer or a Decimal within that range; refuse floats, NaN, infinities, exponents, spaces.

    Floats are refused because 0.1 + 0.2 style binary errors must never reach a ledger. Every
    refusal is a ValueError (a validation error), never a decimal signal."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_AMOUNT:
        value = int(value)  # JSON's 1000.0 is the integer 1000 (exact: the bound is below 2^53)
    if isinstance(value, (bool, float)):
        raise ValueError('amount must be a decimal string such as "1000.00", not a JSON number with a fraction')
    if isinstance(value, str):
        # Checked before Decimal(): it would also take " 1", "1_0", "1E+2", full-width digits and 10^400.
        if len(value) > 20 or not _AMOUNT.fullmatch(value):
            raise ValueError(_why_not_an_amount(value))
        return round_money(Decimal(value))
    if isinstance(value, int):
        if abs(value) > MAX_AMOUNT:
            raise ValueError(f"amount exceeds the largest amount {MAX_AMOUNT} (15 integer digits)")
        return round_money(Decimal(value))
    if not isinstance(value, Decimal):
        raise ValueError(f"amount must be a decimal string, got {type(value).__name__}")
    if not value.is_finite():
        raise ValueError("amount must be a finite number")
    check_amount_bound(value)
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)  # the letters 'n', 'N', 'F' mark the non-finite values refused above
    if exponent < -2:
        raise ValueError(f"amount {value} has more than two decimals")
    return round_money(value)


def _why_not_an_amount(value: str) -> str:
    if len(value) <= 40 and (plain := _PLAIN_DECIMAL.fullmatch(value)):
        if len(plain["digits"]) > 15:
            return f"amount {value} exceeds the largest amount {MAX_AMOUNT} (15 integer digits)"
        return f"amount {value} has more than two decimals"
    shown = value if len(value) <= 40 else value[:40] + "…"
    return f'amount {shown!r} is not a decimal string like "1000.00" (at most 15 integer digits and two decimals)'


def format_amount(value: Decimal) -> str:
    return str(round_money(value))


def tidy(value: Decimal) -> Decimal:
    """A transaction-currency amount (at most three decimals) with two places unless its third decimal is not
    zero: 1.230 -> 1.23, 0.025 -> 0.025. So every two-decimal amount keeps exactly the form it always had."""
    cents = value.quantize(CENT, ROUND_HALF_UP)
    return cents if cents == value else value.quantize(MIL, ROUND_HALF_UP)


def format_transaction_amount(value: Decimal) -> str:
    """Two decimals unless the third is not zero ("1000.00", "1.234"): a USD amount prints as it always did."""
    return str(tidy(value))


_AMOUNT_SCHEMA = {"type": "string", "pattern": AMOUNT_PATTERN, "examples": ["1000.00"]}

Amount = Annotated[
    Decimal,
    BeforeValidator(parse_amount),
    PlainSerializer(format_amount, return_type=str, when_used="json"),
    # Input: the string form, or (kept for compatibility) an integer within the bound.
    WithJsonSchema(
        {"anyOf": [_AMOUNT_SCHEMA, {"type": "integer", "minimum": -int(MAX_AMOUNT), "maximum": int(MAX_AMOUNT)}]},
        mode="validation",
    ),
    WithJsonSchema(_AMOUNT_SCHEMA, mode="serialization"),
]
"""A money amount: Decimal in Python, a two-decimal string in JSON (at most 15 integer digits)."""

Total = Annotated[
    Decimal,
    PlainSerializer(format_amount, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": r"^-?[0-9]+\.[0-9]{2}$", "examples": ["1000.00"]}),
]
"""A sum of amounts in a response (a trial balance, a customer's balance): like Amount on the wire,
but not bounded to 15 digits, since many amounts may add up to more. Output only."""

# --- amounts in a transaction currency: up to three decimals (KWD, BHD, ...) ----------------------------

TRANSACTION_AMOUNT_PATTERN = r"^-?[0-9]{1,15}(\.[0-9]{1,3})?$"
_TRANSACTION_AMOUNT = re.compile(TRANSACTION_AMOUNT_PATTERN)
MAX_TRANSACTION_DECIMALS = 3

# The decimals the amounts of the document being validated may carry: max(2, its currency's minor units),
# set by the document's validator (kredit_shared.contracts.messages) around the validation of its fields.
# A document in a two-decimal currency (or JPY, whose precision its validator checks after) thus refuses
# "1.005" with exactly the message an Amount gives; unset (an amount validated on its own), three.
_document_decimals: ContextVar[int] = ContextVar("document_decimals", default=MAX_TRANSACTION_DECIMALS)


class document_decimals:  # noqa: N801 (used as a function: `with document_decimals(3): ...`)
    """Validate the transaction amounts inside with at most `decimals` (2 or 3) decimals. A class, not a
    @contextmanager generator: it wraps the validation of every message, and costs a third as much."""

    __slots__ = ("_decimals", "_token")

    def __init__(self, decimals: int) -> None:
        self._decimals = max(2, min(decimals, MAX_TRANSACTION_DECIMALS))

    def __enter__(self) -> None:
        self._token = _document_decimals.set(self._decimals)

    def __exit__(self, *exc: object) -> None:
        _document_decimals.reset(self._token)


def parse_transaction_amount(value: Any) -> Decimal:
    """Like parse_amount, with up to three decimals when the document's currency has three (KWD "1.234").

    The currency's own precision (USD "1.005", JPY "1.50") is checked by the document against its currency."""
    decimals = _document_decimals.get()
    if decimals <= 2:
        return parse_amount(value)
    if isinstance(value, str):
        if len(value) > 21 or not _TRANSACTION_AMOUNT.fullmatch(value):
            if len(value) <= 40 and (plain := _PLAIN_DECIMAL.fullmatch(value)) and len(plain["digits"]) <= 15:
                raise ValueError(f"amount {value} has more than three decimals")
            raise ValueError(_why_not_an_amount(value))
        return tidy(Decimal(value))
    if isinstance(value, Decimal) and value.is_finite():
        check_amount_bound(value)
        exponent = value.as_tuple().exponent
        assert isinstance(exponent, int)
        if exponent < -3:
            raise ValueError(f"amount {value} has more than three decimals")
        return tidy(value)
    return parse_amount(value)  # integers, and the refusals of everything else


_TRANSACTION_AMOUNT_SCHEMA = {"type": "string", "pattern": TRANSACTION_AMOUNT_PATTERN, "examples": ["1000.00"]}

TransactionAmount = Annotated[
    Decimal,
    BeforeValidator(parse_transaction_amount),
    PlainSerializer(format_transaction_amount, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [
                _TRANSACTION_AMOUNT_SCHEMA,
                {"type": "integer", "minimum": -int(MAX_AMOUNT), "maximum": int(MAX_AMOUNT)},
            ]
        },
        mode="validation",
    ),
    WithJsonSchema(_TRANSACTION_AMOUNT_SCHEMA, mode="serialization"),
]
"""An amount in a transaction currency: like Amount, but with up to three decimals when the currency has three
(KWD "1.234"); printed with two decimals unless the third is not zero, so USD amounts print as they always did.
The document carrying it checks it against its currency (currencies.check_precision)."""

TransactionTotal = Annotated[
    Decimal,
    PlainSerializer(format_transaction_amount, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": r"^-?[0-9]+\.[0-9]{2,3}$", "examples": ["1000.00"]}),
]
"""A sum of transaction-currency amounts in a response: like Total, with the third decimal of a KWD amount."""

ISO_4217 = frozenset(c.alpha_3 for c in pycountry.currencies)


def is_currency(value: Any) -> bool:
    return isinstance(value, str) and value in ISO_4217


def parse_currency(value: Any) -> str:
    if not isinstance(value, str) or value.upper() != value or value not in ISO_4217:
        raise ValueError(f"currency {value!r} is not an ISO 4217 code")
    return value


Currency = Annotated[
    str,
    BeforeValidator(parse_currency),
    WithJsonSchema({"type": "string", "pattern": "^[A-Z]{3}$", "examples": ["USD"]}),
]
