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
from kredit_shared.contracts import (
    CustomerInvoiceIssued,
    CustomerPaymentReceived,
    CustomerTransactionPosted,
    GeneralJournalLine,
    OpenItemsSettled,
    SettledTransactionRef,
    VoucherLine,
)
from kredit_shared.currencies import (
    NoExchangeRate,
    RateNotSet,
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


def test_three_decimal_currencies_are_booked():
    for currency in ("KWD", "BHD", "JOD", "OMR", "TND", "IQD", "LYD"):
        assert unsupported_reason(currency) is None
    assert unsupported_reason("JPY") is None and unsupported_reason("EUR") is None


def test_a_currency_with_more_than_three_decimals_is_refused_with_the_reason():
    reason = unsupported_reason("CLF")  # ISO 4217: four decimals
    assert reason is not None and "4 decimal places" in reason


def test_kwd_rounds_to_the_fils_and_keeps_two_places_otherwise():
    assert round_to(D("1.234") * D("0.02"), "KWD") == D("0.025")  # 0.02468
    assert str(round_to(D("1.234") * D("0.02"), "KWD")) == "0.025"
    assert str(round_to(D("1.2300"), "KWD")) == "1.23"  # as a USD amount: two places unless the third is set
    assert str(round_to(D("0.0245"), "USD")) == "0.02"
    assert str(round_to(D("1055.4"), "JPY")) == "1055.00"
    assert to_accounting(D("1000.125"), D("3.25"), "USD") == D("3250.41")  # 3250.40625
    assert check_precision(D("1.234"), "KWD") == D("1.234")
    with pytest.raises(ValueError, match="KWD: the currency has 3 decimals"):
        check_precision(D("1.2345"), "KWD")
    with pytest.raises(ValueError, match="1.005 USD: the currency has 2 decimals"):
        check_precision(D("1.005"), "USD")


@given(st.decimals(min_value=-(10**6), max_value=10**6, places=6, allow_nan=False, allow_infinity=False))
def test_round_to_keeps_every_two_decimal_currency_as_before(value):
    assert str(round_to(value, "USD")) == str(value.quantize(D("0.01"), rounding="ROUND_HALF_UP"))
    kwd = round_to(value, "KWD")
    assert abs(kwd - value) <= D("0.0005") and -kwd.as_tuple().exponent in (2, 3)


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


def test_a_missing_rate_names_its_currency_and_date_and_a_wrong_one_is_another_refusal():
    """RateNotSet: a rate set later books the document (exchange_rates keeps it); a rate other than 1 for the
    accounting currency is wrong whatever comes later."""
    with pytest.raises(RateNotSet) as missing:
        RATES.resolve("EUR", date(2025, 12, 31))
    assert (missing.value.currency, missing.value.on) == ("EUR", date(2025, 12, 31))
    with pytest.raises(NoExchangeRate) as wrong:
        RATES.resolve("USD", date(2026, 2, 1), D("1.10"))
    assert not isinstance(wrong.value, RateNotSet)


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
        ({"currency": "CLF"}, "CLF has 4 decimal places"),
        ({"currency": "KWD", "lines": [{"amount": "1.2345"}]}, "amount 1.2345 has more than three decimals"),
        ({"currency": "USD", "lines": [{"amount": "1.005"}]}, "amount 1.005 has more than two decimals"),
        ({"exchange_rate": "-1"}, "exchange_rate"),
        ({"exchange_rate": 1.1}, "exchange_rate"),
    ],
)
def test_an_invoice_kredit_cannot_book_is_a_validation_error(fields, reason):
    with pytest.raises(ValidationError, match=reason):
        CustomerInvoiceIssued.model_validate_json(json.dumps(_invoice(**fields)))


def test_a_kwd_invoice_carries_its_three_decimals_and_a_usd_one_prints_as_before():
    kwd = CustomerInvoiceIssued.model_validate_json(
        json.dumps(_invoice(currency="KWD", lines=[{"amount": "1000.125", "sales_tax_amount": "0.5"}]))
    )
    assert kwd.lines[0].amount == D("1000.125")
    assert json.loads(kwd.model_dump_json())["lines"][0] | {} == {
        "description": "",
        "amount": "1000.125",
        "sales_tax_amount": "0.50",
        "revenue_account": None,
    }
    usd = CustomerInvoiceIssued.model_validate_json(json.dumps(_invoice(currency="USD", lines=[{"amount": "7.5"}])))
    assert json.loads(usd.model_dump_json())["lines"][0]["amount"] == "7.50"


def test_a_usd_amount_with_three_decimals_is_refused_in_every_document_of_the_currency():
    with pytest.raises(ValidationError, match="amount 1.005 has more than two decimals"):
        OpenItemsSettled(
            settlement_id="S",
            customer_account="C1",
            settlement_date=date(2026, 1, 1),
            currency="USD",
            debit_voucher="D",
            credit_voucher="C",
            amount_settled=D("1.005"),  # a Python value: the document checks it against its currency
        )
    with pytest.raises(ValidationError, match="amount 1.005 has more than two decimals"):
        VoucherLine(account="130100", debit=D("1"), transaction_currency="USD", transaction_currency_amount=D("1.005"))
    line = VoucherLine(
        account="130100", debit=D("3.25"), transaction_currency="KWD", transaction_currency_amount=D("1")
    )
    assert json.loads(line.model_dump_json())["transaction_currency_amount"] == "1.00"
    journal = GeneralJournalLine(
        account_type="Customer",
        account="C1",
        credit=D("0.025"),
        currency="KWD",
        transaction_date=date(2026, 1, 1),
        settles=[SettledTransactionRef(voucher="V", amount=D("0.025"))],
    )
    assert json.loads(journal.model_dump_json())["settles"][0]["amount"] == "0.025"
    with pytest.raises(ValidationError, match="more than two decimals"):
        GeneralJournalLine.model_validate(
            {
                "account_type": "Ledger",
                "account": "1",
                "debit": "0.025",
                "currency": "USD",
                "transaction_date": "2026-01-01",
            }
        )


def test_an_accounting_currency_with_three_decimals_is_refused():
    from kredit_shared.company_setup import load_company_setup

    setup = load_company_setup()
    with pytest.raises(ValidationError, match="accounting_currency: KWD has 3 decimal places"):
        type(setup).model_validate(setup.model_dump() | {"accounting_currency": "KWD", "exchange_rates": {}})


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
