"""Currencies other than the accounting currency: minor units, exchange rates, conversion.

Every customer amount is kept twice: in its transaction currency (what the customer owes or paid) and
in the company's accounting currency (what the ledger books). An exchange rate is accounting-currency
units per one unit of the transaction currency ("1.10" for EUR when the company books in USD); the
accounting amount is `amount × rate`, rounded half-up to the accounting currency's minor unit.
Pure: no I/O (docs/currencies.md).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from typing import Annotated, Any, Protocol

import iso4217
from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

from kredit_shared.money import tidy

ONE = Decimal(1)

# The most decimals a transaction-currency amount may carry: its columns and the wire format hold three
# (money.TransactionAmount, ExactDecimal(3)); accounting-currency amounts keep two.
SUPPORTED_MINOR_UNITS = 3


@cache
def minor_units(currency: str) -> int:
    """ISO 4217's minor unit of the currency: 2 for USD and EUR, 0 for JPY, 3 for KWD.

    Codes without a minor unit in the standard (gold, SDR, test codes) count as 2."""
    try:
        exponent = iso4217.Currency(currency).exponent
    except ValueError:
        return 2
    return 2 if exponent is None else exponent


def unsupported_reason(currency: str) -> str | None:
    """Why documents in `currency` cannot be booked, or None. Transaction amounts are stored with three
    decimals (KWD, BHD, JOD, ... are booked); a currency with more (none in use today) is refused."""
    units = minor_units(currency)
    if units > SUPPORTED_MINOR_UNITS:
        return (
            f"currency {currency} has {units} decimal places; Kredit books currencies with at most "
            f"{SUPPORTED_MINOR_UNITS} (docs/currencies.md)"
        )
    return None


def rate_refusal(currency: str, accounting_currency: str) -> str | None:
    """Why no exchange rate can be set for `currency`, or None: over HTTP (422) and on gl.exchange-rates (a dead
    letter) alike."""
    if currency == accounting_currency:
        return f"{currency} is the accounting currency: its rate is always 1"
    return unsupported_reason(currency)


def round_to(value: Decimal, currency: str) -> Decimal:
    """Half-up to the currency's minor unit, kept with two places unless it has three (JPY 1055.4 -> 1055.00,
    USD 0.025 -> 0.03, KWD 0.0246 -> 0.025, KWD 1.2300 -> 1.23): money.tidy's form."""
    return tidy(value.quantize(_minor_unit(currency), ROUND_HALF_UP))


@cache
def _minor_unit(currency: str) -> Decimal:
    """The currency's smallest amount (JPY 1, USD 0.01, KWD 0.001): round_to rounds every amount it books to it."""
    return ONE.scaleb(-min(minor_units(currency), SUPPORTED_MINOR_UNITS))


def check_precision(value: Decimal, currency: str, what: str = "amount") -> Decimal:
    """Refuse an amount with more decimals than its currency has (JPY 1000.50)."""
    if value != round_to(value, currency):
        units = minor_units(currency)
        decimals = "no decimals" if units == 0 else f"{units} decimals"
        raise ValueError(f"{what} {value:f} {currency}: the currency has {decimals}")
    return value


def to_accounting(amount: Decimal, rate: Decimal, accounting_currency: str) -> Decimal:
    """The accounting-currency value of a transaction-currency amount at `rate`."""
    return round_to(amount * rate, accounting_currency)


# --- the exchange rate on the wire -----------------------------------------------------------------------

RATE_PATTERN = r"^[0-9]{1,8}(\.[0-9]{1,10})?$"
_RATE = re.compile(RATE_PATTERN)


def parse_rate(value: Any) -> Decimal:
    """A positive decimal string such as "1.10" (at most 8 integer digits and 10 decimals), or an integer."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, (bool, float)):
        raise ValueError('exchange_rate must be a decimal string such as "1.10", not a JSON number with a fraction')
    if isinstance(value, str):
        if len(value) > 19 or not _RATE.fullmatch(value):
            raise ValueError(
                f'exchange_rate {value[:24]!r} is not a decimal string like "1.10" '
                "(at most 8 integer digits and 10 decimals)"
            )
        parsed = Decimal(value)
    elif isinstance(value, int):
        parsed = Decimal(value)
    elif isinstance(value, Decimal):
        parsed = value
    else:
        raise ValueError(f"exchange_rate must be a decimal string, got {type(value).__name__}")
    if not parsed.is_finite() or parsed <= 0 or parsed >= Decimal("1E8"):
        raise ValueError(f"exchange_rate {value!r} must be greater than 0 and below 100000000")
    exponent = parsed.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -10:
        raise ValueError(f"exchange_rate {value!r} has more than 10 decimals")
    return parsed


def plain_rate(rate: Decimal) -> Decimal:
    """A rate as it was given, whatever places it is stored with: 1.1000000000 -> 1.10, 0.0067000000 -> 0.0067,
    1.0000000000 -> 1.00 (at least two decimals, like the setup's "1.10")."""
    normalized = rate.normalize()
    exponent = normalized.as_tuple().exponent
    return rate.quantize(Decimal("0.01")) if isinstance(exponent, int) and exponent > -2 else normalized


def format_rate(value: Decimal) -> str:
    return format(plain_rate(value), "f")


ExchangeRate = Annotated[
    Decimal,
    BeforeValidator(parse_rate),
    PlainSerializer(format_rate, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": RATE_PATTERN, "examples": ["1.10"]},
                {"type": "integer", "minimum": 1, "maximum": 99999999},
            ]
        },
        mode="validation",
    ),
    WithJsonSchema({"type": "string", "pattern": RATE_PATTERN, "examples": ["1.10"]}, mode="serialization"),
]
"""Accounting-currency units per one unit of the transaction currency (contract extension `exchange_rate`)."""


# --- which rate a document is booked at -----------------------------------------------------------------


class RatePeriod(Protocol):
    """A rate valid from a date until the next period of the same currency starts."""

    @property
    def from_date(self) -> date: ...

    @property
    def rate(self) -> Decimal: ...


class NoExchangeRate(ValueError):
    """A document in a foreign currency with no rate given and none set up for its date."""


class RateNotSet(NoExchangeRate):
    """No rate is known for `currency` on `on` (yet): a rate set later for that date books the document
    (kredit_shared.exchange_rates keeps it until then)."""

    def __init__(self, reason: str, currency: str, on: date) -> None:
        super().__init__(reason)
        self.currency = currency
        self.on = on


def rate_on(periods: Sequence[RatePeriod], on: date) -> Decimal | None:
    """The rate of the latest period starting on or before `on`."""
    started = [p for p in periods if p.from_date <= on]
    return max(started, key=lambda p: p.from_date).rate if started else None


def resolve_rate(
    currency: str,
    on: date,
    given: Decimal | None,
    accounting_currency: str,
    rates: Mapping[str, Sequence[RatePeriod]],
    document: str = "the document",
) -> Decimal:
    """The rate `document` is booked at: the one it states wins, else the setup's for its date.

    The accounting currency is always at 1 (a stated rate other than 1 is refused: it would book the
    same money at two values)."""
    if currency == accounting_currency:
        if given is not None and given != ONE:
            raise NoExchangeRate(
                f"{document} is in the accounting currency {currency}; its exchange_rate must be 1, not {given:f}"
            )
        return ONE
    if given is not None:
        return given
    found = rate_on(rates.get(currency, ()), on)
    if found is None:
        raise RateNotSet(
            f"{document} is in {currency} and states no exchange_rate, and there is no {currency} rate "
            f"for {on.isoformat()} (send exchange_rate, or set a rate: docs/currencies.md)",
            currency,
            on,
        )
    return found


@dataclass(frozen=True)
class Rates:
    """The rates a service books documents at that state none: the setup's, and those set over HTTP
    (kredit_shared.exchange_rates loads them)."""

    accounting_currency: str
    periods: Mapping[str, Sequence[RatePeriod]] = field(default_factory=dict)

    def resolve(self, currency: str, on: date, given: Decimal | None = None, document: str = "the document") -> Decimal:
        """The rate `document` in `currency` dated `on` is booked at (see resolve_rate); NoExchangeRate if none."""
        return resolve_rate(currency, on, given, self.accounting_currency, self.periods, document)


class _SettledAmounts(Protocol):
    """The amounts of one settled debit/credit pair (OpenItemsSettled, settlement's SettledPair)."""

    @property
    def amount_settled(self) -> Decimal: ...
    @property
    def cash_discount_amount(self) -> Decimal: ...
    @property
    def difference_amount(self) -> Decimal: ...
    @property
    def debit_accounting_amount(self) -> Decimal | None: ...
    @property
    def credit_accounting_amount(self) -> Decimal | None: ...
    @property
    def cash_discount_accounting_amount(self) -> Decimal | None: ...
    @property
    def difference_accounting_amount(self) -> Decimal | None: ...


class SettledInAccountingCurrency:
    """What a settled pair moves in the accounting currency. Its `*_accounting_amount` fields are None in the
    accounting currency, where each equals its transaction-currency amount (docs/currencies.md)."""

    @property
    def debit_accounting(self: _SettledAmounts) -> Decimal:
        """How much the debit's accounting-currency balance falls."""
        if self.debit_accounting_amount is None:
            return self.amount_settled + self.cash_discount_amount + self.difference_amount
        return self.debit_accounting_amount

    @property
    def credit_accounting(self: _SettledAmounts) -> Decimal:
        """How much the credit's accounting-currency balance rises."""
        return self.amount_settled if self.credit_accounting_amount is None else self.credit_accounting_amount

    @property
    def cash_discount_accounting(self: _SettledAmounts) -> Decimal:
        if self.cash_discount_accounting_amount is None:
            return self.cash_discount_amount
        return self.cash_discount_accounting_amount

    @property
    def difference_accounting(self: _SettledAmounts) -> Decimal:
        if self.difference_accounting_amount is None:
            return self.difference_amount
        return self.difference_accounting_amount
