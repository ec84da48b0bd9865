"""Foreign-currency arithmetic and the rate a document is booked at (kredit_shared.currencies)."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from kredit_shared.company_setup import ExchangeRatePeriod
from kredit_shared.contracts import CustomerInvoiceIssued, CustomerPaymentReceived, CustomerTransactionPosted
from kredit_shared.currencies import (
    NoExchangeRate,
    Rates,
    check_precision,
    minor_units,
    parse_rate,
    round_to,
    to_accounting,
    unsupported_reason,
)

D = Decimal
MESSAGE_ID = "7f0c0c57-5b8e-4e43-9b8e-0a2f0b9d2b11"


def test_minor_units_come_from_iso_4217():
    assert (minor_units("USD"), minor_units("EUR"), minor_units("JPY"), minor_units("KWD")) == (2, 2, 0, 3)
    assert minor_units("XAU") == 2  # no minor unit in the standard: booked like most currencies


def test_amounts_round_half_up_to_their_currency():
    assert round_to(D("1055.5"), "JPY") == D("1056.00")
    assert round_to(D("21.1"), "JPY") == D("21.00")
    assert round_to(D("0.125"), "USD") == D("0.13")
    assert to_accounting(D("1000.00"), D("1.10"), "USD") == D("1100.00")
    assert to_accounting(D("20.00"), D("0.80"), "USD") == D("16.00")
    assert to_accounting(D("1055"), D("0.006789"), "USD") == D("7.16")  # 7.162395


def test_an_amount_with_more_decimals_than_its_currency_is_refused():
    assert check_precision(D("1000.00"), "JPY") == D("1000.00")
    with pytest.raises(ValueError, match="JPY: the currency has no decimals"):
        check_precision(D("1000.50"), "JPY")


def test_three_decimal_currencies_are_refused_with_the_reason():
    reason = unsupported_reason("KWD")
    assert reason is not None and "3 decimal places" in reason
    assert unsupported_reason("JPY") is None and unsupported_reason("EUR") is None


@pytest.mark.parametrize("text", ["0", "-1.10", "1e2", "1.10000000001", "123456789", "", " 1.1", "NaN"])
def test_a_bad_exchange_rate_is_refused(text):
    with pytest.raises(ValueError, match="exchange_rate"):
        parse_rate(text)


def test_exchange_rates_parse_from_strings_and_integers():
    assert parse_rate("1.10") == D("1.10")
    assert parse_rate("0.0000393") == D("0.0000393")
    assert parse_rate(2) == D(2)
    with pytest.raises(ValueError, match="not a JSON number"):
        parse_rate(1.1)


RATES = Rates(
    "USD",
    {
        "EUR": [
            ExchangeRatePeriod(from_date=date(2026, 1, 1), rate=D("1.10")),
            ExchangeRatePeriod(from_date=date(2026, 3, 1), rate=D("1.20")),
        ]
    },
)


def test_a_stated_rate_wins_over_the_setup():
    assert RATES.resolve("EUR", date(2026, 2, 1), D("0.80")) == D("0.80")


def test_the_latest_rate_starting_on_or_before_the_date_applies():
    assert RATES.resolve("EUR", date(2026, 2, 28)) == D("1.10")
    assert RATES.resolve("EUR", date(2026, 3, 1)) == D("1.20")


def test_no_rate_says_what_is_missing():
    with pytest.raises(NoExchangeRate, match=r"invoice X1 is in EUR and states no exchange_rate.*2025-12-31"):
        RATES.resolve("EUR", date(2025, 12, 31), document="invoice X1")
    with pytest.raises(NoExchangeRate, match="no GBP rate"):
        RATES.resolve("GBP", date(2026, 2, 1))


def test_the_accounting_currency_is_always_at_one():
    assert RATES.resolve("USD", date(2026, 2, 1)) == D(1)
    assert RATES.resolve("USD", date(2026, 2, 1), D("1.0")) == D(1)
    with pytest.raises(NoExchangeRate, match="must be 1"):
        RATES.resolve("USD", date(2026, 2, 1), D("1.10"))


@given(
    amount=st.decimals(min_value=D("-1000000"), max_value=D("1000000"), places=2),
    rate=st.decimals(min_value=D("0.0001"), max_value=D("1000"), places=4),
)
def test_conversion_is_within_half_a_cent_of_the_exact_value(amount, rate):
    converted = to_accounting(amount, rate, "USD")
    assert abs(converted - amount * rate) <= D("0.005")
    assert converted == converted.quantize(D("0.01"))


def _invoice(**fields):
    return {
        "message_id": MESSAGE_ID,
        "invoice_id": "I1",
        "customer_account": "C1",
        "invoice_date": "2026-01-01",
        "currency": "EUR",
        "lines": [{"amount": "1000.00"}],
    } | fields


def test_an_invoice_carries_its_rate_and_is_published_without_one_when_it_has_none():
    stated = CustomerInvoiceIssued.model_validate_json(json.dumps(_invoice(exchange_rate="1.10")))
    assert stated.exchange_rate == D("1.10")
    assert json.loads(stated.model_dump_json())["exchange_rate"] == "1.10"
    plain = CustomerInvoiceIssued.model_validate_json(json.dumps(_invoice(currency="USD")))
    assert "exchange_rate" not in json.loads(plain.model_dump_json())


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (
            {"currency": "JPY", "lines": [{"amount": "1000.50"}]},
            "lines.0.amount 1000.50 JPY: the currency has no decimals",
        ),
        ({"currency": "KWD"}, "KWD has 3 decimal places"),
        ({"exchange_rate": "-1"}, "exchange_rate"),
        ({"exchange_rate": 1.1}, "exchange_rate"),
    ],
)
def test_an_invoice_kredit_cannot_book_is_a_validation_error(fields, reason):
    with pytest.raises(ValidationError, match=reason):
        CustomerInvoiceIssued.model_validate_json(json.dumps(_invoice(**fields)))


def test_a_jpy_payment_mark_with_decimals_is_refused():
    payment = {
        "message_id": MESSAGE_ID,
        "payment_id": "P1",
        "customer_account": "C1",
        "payment_date": "2026-01-01",
        "amount": "1000",
        "currency": "JPY",
        "settle": [{"invoice_id": "I1", "amount_to_settle": "10.50"}],
    }
    with pytest.raises(ValidationError, match="settle.0.amount_to_settle 10.50 JPY"):
        CustomerPaymentReceived.model_validate_json(json.dumps(payment))


def test_a_transaction_without_accounting_amount_is_in_the_accounting_currency():
    posted = CustomerTransactionPosted(
        voucher="V1",
        transaction_type="Invoice",
        customer_account="C1",
        transaction_date=date(2026, 1, 1),
        amount=D("10.00"),
        currency="USD",
    )
    assert posted.accounting_amount == D("10.00")
    assert "accounting_currency_amount" not in json.loads(posted.model_dump_json())
    foreign = posted.model_copy(update={"currency": "EUR", "accounting_currency_amount": D("11.00")})
    assert foreign.accounting_amount == D("11.00")
