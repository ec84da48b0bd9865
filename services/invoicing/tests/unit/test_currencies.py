"""Unit tests of invoices in a foreign currency (docs/currencies.md): the rate, the conversion of the
voucher into the accounting currency, rounding, and that accounting-currency invoices are unchanged."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from kredit_invoicing.domain import InvoiceRejected, convert_postings, discount_amount, post_invoice
from kredit_shared.company_setup import DEMO_SETUP_FILE, CompanySetup
from kredit_shared.contracts import CustomerInvoiceIssued
from kredit_shared.currencies import ExchangeRate, Rates, minor_units, to_accounting
from kredit_shared.money import ZERO


def _setup() -> CompanySetup:
    """The demo company plus a second revenue account and EUR rates from 2015."""
    raw = yaml.safe_load(DEMO_SETUP_FILE.read_text())
    raw["main_accounts"]["402100"] = {"name": "Service revenue", "type": "Revenue"}
    raw["exchange_rates"] = {
        "EUR": [{"from_date": "2015-01-01", "rate": "1.20"}, {"from_date": "2015-07-01", "rate": "1.30"}]
    }
    return CompanySetup.model_validate(raw)


SETUP = _setup()


def invoice(**overrides) -> CustomerInvoiceIssued:
    """EUR 1,000.00 at 1.10 on 2015-06-25 with 2%10D (the worked example of docs/currencies.md)."""
    fields = {
        "invoice_id": "E1",
        "customer_account": "4027",
        "invoice_date": "2015-06-25",
        "currency": "EUR",
        "exchange_rate": "1.10",
        "payment_terms": "Net30",
        "cash_discount_code": "2%10D",
        "lines": [{"description": "Goods", "amount": "1000.00"}],
    }
    fields.update(overrides)
    return CustomerInvoiceIssued.model_validate({k: v for k, v in fields.items() if v is not None})


def booked(posted) -> list[tuple[str, str, str, str | None, str | None]]:
    return [
        (
            line.account,
            str(line.debit),
            str(line.credit),
            line.transaction_currency,
            None if line.transaction_currency_amount is None else str(line.transaction_currency_amount),
        )
        for line in posted.ledger_voucher.lines
    ]


def test_the_worked_example_eur_1000_at_1_10_books_1100_usd_keeping_the_eur_amounts():
    posted = post_invoice(invoice(), SETUP)

    assert posted.ledger_voucher.currency == "USD"
    assert booked(posted) == [
        ("130100", "1100.00", "0.00", "EUR", "1000.00"),
        ("401100", "0.00", "1100.00", "EUR", "-1000.00"),
    ]
    uow = posted.transaction
    assert (uow.amount, uow.currency, uow.exchange_rate, uow.accounting_currency_amount) == (
        Decimal("1000.00"),
        "EUR",
        Decimal("1.10"),
        Decimal("1100.00"),
    )
    assert (posted.exchange_rate, posted.accounting_total, posted.total) == (
        Decimal("1.10"),
        Decimal("1100.00"),
        Decimal("1000.00"),
    )
    # The discount is in the transaction currency; due dates do not depend on the currency.
    assert [(t.date, t.amount) for t in posted.cash_discounts] == [(date(2015, 7, 5), Decimal("20.00"))]
    assert posted.due_date == date(2015, 7, 25)
    wire = uow.model_dump(mode="json")
    assert (wire["exchange_rate"], wire["accounting_currency_amount"]) == ("1.10", "1100.00")
    assert posted.ledger_voucher.model_dump(mode="json")["lines"][1]["transaction_currency_amount"] == "-1000.00"


def test_a_credit_note_in_eur_is_the_mirror_image():
    posted = post_invoice(
        invoice(lines=[{"description": "Returned", "amount": "-1000.00", "sales_tax_amount": "-190.00"}]), SETUP
    )
    assert booked(posted) == [
        ("130100", "0.00", "1309.00", "EUR", "-1190.00"),
        ("401100", "1100.00", "0.00", "EUR", "1000.00"),
        ("222200", "209.00", "0.00", "EUR", "190.00"),
    ]
    assert posted.transaction.accounting_currency_amount == Decimal("-1309.00")


def test_without_a_stated_rate_the_setups_rate_for_the_invoice_date_is_used():
    assert post_invoice(invoice(exchange_rate=None), SETUP).exchange_rate == Decimal("1.20")
    july = post_invoice(invoice(exchange_rate=None, invoice_date="2015-07-01"), SETUP)
    assert (july.exchange_rate, july.accounting_total) == (Decimal("1.30"), Decimal("1300.00"))
    # Rates loaded by the handler (e.g. set over HTTP) win over the setup's
    rates = Rates("USD", {"EUR": SETUP.exchange_rates["EUR"][:1]})
    assert post_invoice(invoice(exchange_rate=None, invoice_date="2015-07-01"), SETUP, rates).exchange_rate == Decimal(
        "1.20"
    )


def test_a_foreign_invoice_with_no_rate_at_all_is_rejected_with_the_reason():
    with pytest.raises(InvoiceRejected) as caught:
        post_invoice(invoice(exchange_rate=None, currency="GBP"), SETUP)
    assert caught.value.reason == (
        "invoice E1 is in GBP and states no exchange_rate, and there is no GBP rate for 2015-06-25 "
        "(send exchange_rate, or set a rate: docs/currencies.md)"
    )
    with pytest.raises(InvoiceRejected, match="there is no EUR rate for 2014-12-31"):
        post_invoice(invoice(exchange_rate=None, invoice_date="2014-12-31"), SETUP)


def test_an_accounting_currency_invoice_stating_another_rate_is_rejected():
    with pytest.raises(InvoiceRejected) as caught:
        post_invoice(invoice(currency="USD", exchange_rate="1.10"), SETUP)
    assert caught.value.reason == (
        "invoice E1 is in the accounting currency USD; its exchange_rate must be 1, not 1.10"
    )


def test_an_accounting_currency_invoice_is_published_exactly_as_before():
    posted = post_invoice(invoice(currency="USD", exchange_rate="1"), SETUP)
    assert (posted.exchange_rate, posted.accounting_total) == (None, None)
    assert "exchange_rate" not in posted.transaction.model_dump(mode="json")
    assert "accounting_currency_amount" not in posted.transaction.model_dump(mode="json")
    for line in posted.ledger_voucher.model_dump(mode="json")["lines"]:
        assert set(line) == {"account", "debit", "credit", "text", "customer_account"}
    # without the field, the fingerprint is what it was before the field existed
    plain = invoice(currency="USD", exchange_rate=None)
    assert "exchange_rate" not in plain.model_dump(mode="json")


def test_the_rounding_difference_goes_to_the_largest_revenue_line():
    # EUR 30.03 at 1.5 = 45.045 -> 45.05; each line 10.01 -> 15.015 -> 15.02 (45.06): 0.01 too much
    posted = post_invoice(
        invoice(
            exchange_rate="1.5",
            cash_discount_code=None,
            lines=[
                {"description": "A", "amount": "10.01"},
                {"description": "B", "amount": "10.02", "revenue_account": "402100"},
                {"description": "C", "amount": "10.00"},
            ],
        ),
        SETUP,
    )
    # 10.02 -> 15.03, 10.00 -> 15.00, 10.01 -> 15.02: 45.05 in all, no difference
    assert [row[1:3] for row in booked(posted)] == [
        ("45.05", "0.00"),
        ("0.00", "15.02"),
        ("0.00", "15.03"),
        ("0.00", "15.00"),
    ]
    three = [Decimal("10.01")] * 3
    assert convert_postings([Decimal("30.03"), *(-a for a in three), ZERO], Decimal("1.5"), "USD") == [
        Decimal("45.05"),
        Decimal("-15.01"),  # the largest (the first of equals) takes the difference
        Decimal("-15.02"),
        Decimal("-15.02"),
        Decimal("0.00"),
    ]
    # with sales tax, at 1.5: total 10.02 -> 15.03; revenue 10.01 -> 15.015 -> 15.02, tax 0.01 -> 0.015 -> 0.02
    # (15.04): the revenue line takes the difference, the tax line keeps its own conversion
    assert convert_postings([Decimal("10.02"), Decimal("-10.01"), Decimal("-0.01")], Decimal("1.5"), "USD") == [
        Decimal("15.03"),
        Decimal("-15.01"),
        Decimal("-0.02"),
    ]


def test_jpy_discounts_are_whole_yen():
    assert discount_amount(Decimal("1055"), Decimal("2"), "JPY") == Decimal("21.00")  # 21.10
    assert discount_amount(Decimal("1075"), Decimal("2"), "JPY") == Decimal("22.00")  # 21.50, half-up
    assert discount_amount(Decimal("-1075"), Decimal("2"), "JPY") == Decimal("-22.00")
    assert discount_amount(Decimal("1055"), Decimal("2"), "EUR") == Decimal("21.10")
    posted = post_invoice(
        invoice(currency="JPY", exchange_rate="0.0091", lines=[{"description": "Goods", "amount": "1055"}]), SETUP
    )
    assert [t.amount for t in posted.cash_discounts] == [Decimal("21.00")]
    assert booked(posted) == [
        ("130100", "9.60", "0.00", "JPY", "1055.00"),  # 9.6005
        ("401100", "0.00", "9.60", "JPY", "-1055.00"),
    ]
    # an explicit tier amount must agree in whole yen
    with pytest.raises(InvoiceRejected, match=r"is not 2\.00 % of the total 1055(\.00)? \(21\.00\)"):
        post_invoice(
            invoice(
                currency="JPY",
                exchange_rate="0.0091",
                cash_discount_code=None,
                cash_discounts=[{"percent": "2.00", "date": "2015-07-05", "amount": "22"}],
                lines=[{"description": "Goods", "amount": "1055"}],
            ),
            SETUP,
        )


def test_a_jpy_invoice_with_decimals_is_a_validation_error():
    with pytest.raises(ValidationError, match="lines.0.amount 1000.50 JPY: the currency has no decimals"):
        invoice(currency="JPY", lines=[{"description": "Goods", "amount": "1000.50"}])


def test_a_total_worth_nothing_or_too_much_in_the_accounting_currency_is_rejected():
    with pytest.raises(InvoiceRejected, match=r"the total 1(\.00)? JPY at the exchange rate 0\.001 is 0\.00 USD"):
        post_invoice(invoice(currency="JPY", exchange_rate="0.001", lines=[{"description": "x", "amount": "1"}]), SETUP)
    with pytest.raises(
        InvoiceRejected, match="at the exchange rate 10, 9999999999999990.00 USD is more than the largest amount"
    ):
        post_invoice(invoice(exchange_rate="10", lines=[{"description": "x", "amount": "999999999999999.00"}]), SETUP)


# --- three decimals (KWD) -----------------------------------------------------------------------


def test_a_kwd_discount_is_rounded_to_the_fils():
    assert discount_amount(Decimal("1.234"), Decimal("2"), "KWD") == Decimal("0.025")  # 0.02468
    assert str(discount_amount(Decimal("1.234"), Decimal("2"), "KWD")) == "0.025"
    assert discount_amount(Decimal("1.234"), Decimal("2"), "USD") == Decimal("0.02")
    assert str(discount_amount(Decimal("1055"), Decimal("2"), "JPY")) == "21.00"  # still whole yen


def test_a_kwd_invoice_keeps_its_fils_and_is_booked_to_the_cent():
    posted = post_invoice(
        invoice(
            currency="KWD",
            exchange_rate="3.25",
            cash_discount_code="2%10D",
            lines=[{"description": "Goods", "amount": "1000.125"}],
        ),
        SETUP,
    )
    assert posted.total == Decimal("1000.125")
    assert posted.accounting_total == Decimal("3250.41")  # 3,250.40625
    assert [str(t.amount) for t in posted.cash_discounts] == ["20.003"]  # 20.0025, half-up
    assert booked(posted) == [
        ("130100", "3250.41", "0.00", "KWD", "1000.125"),
        ("401100", "0.00", "3250.41", "KWD", "-1000.125"),
    ]
    transaction, voucher = posted.messages
    wire = transaction.model_dump(mode="json")
    assert (wire["amount"], wire["accounting_currency_amount"]) == ("1000.125", "3250.41")
    assert wire["cash_discounts"][0]["amount"] == "20.003"
    assert [line["transaction_currency_amount"] for line in voucher.model_dump(mode="json")["lines"]] == [
        "1000.125",
        "-1000.125",
    ]
    assert type(transaction).model_validate_json(transaction.model_dump_json()) == transaction


def test_a_kwd_amount_with_four_decimals_is_a_validation_error():
    with pytest.raises(ValidationError, match="amount 1.2345 has more than three decimals"):
        invoice(currency="KWD", lines=[{"description": "Goods", "amount": "1.2345"}])


# --- properties ---------------------------------------------------------------------------------

CURRENCIES = st.sampled_from(["EUR", "JPY", "GBP", "KWD"])
RATES = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("500"), places=4).filter(lambda r: r > 0)


@st.composite
def foreign_invoices(draw: st.DrawFn) -> tuple[CustomerInvoiceIssued, Decimal]:
    currency = draw(CURRENCIES)
    places = minor_units(currency)
    sign = draw(st.sampled_from([1, -1]))
    amounts = st.decimals(min_value=Decimal("0.001"), max_value=Decimal("100000"), places=places).filter(
        lambda a: a > 0
    )
    lines = []
    for _ in range(draw(st.integers(1, 6))):
        amount = draw(amounts)
        tax = draw(st.sampled_from([Decimal(0), Decimal("0.19"), Decimal("0.07")])) * amount
        tax = tax.quantize(Decimal(1).scaleb(-places))
        lines.append(
            {
                "description": "line",
                "amount": str(sign * amount),
                "sales_tax_amount": str(sign * tax),
                "revenue_account": draw(st.sampled_from(["401100", "402100"])),
            }
        )
    rate = draw(RATES)
    message = invoice(currency=currency, exchange_rate=str(rate), lines=lines, cash_discount_code=None)
    return message, rate


@given(foreign_invoices())
def test_every_foreign_invoice_voucher_balances_in_the_accounting_currency(case):
    message, rate = case
    try:
        posted = post_invoice(message, SETUP)
    except InvoiceRejected as e:
        assert "is 0.00 USD: nothing to post" in e.reason  # only a total worth less than half a cent
        assert to_accounting(sum(line.amount + line.sales_tax_amount for line in message.lines), rate, "USD") == 0
        return
    lines = posted.ledger_voucher.lines
    assert sum(line.debit for line in lines) == sum(line.credit for line in lines)
    customer = lines[0]
    assert customer.account == "130100"
    assert customer.debit - customer.credit == to_accounting(posted.total, rate, "USD") == posted.accounting_total
    assert posted.transaction.accounting_currency_amount == posted.accounting_total
    assert all(line.transaction_currency == message.currency for line in lines)
    assert all(line.debit >= 0 and line.credit >= 0 and (line.debit == 0 or line.credit == 0) for line in lines)
    assert all(line.debit or line.credit for line in lines)
    # each line's accounting amount is its own conversion, but for the one that absorbed the rounding
    off = [
        line
        for line in lines
        if line.debit - line.credit != to_accounting(line.transaction_currency_amount, rate, "USD")
    ]
    assert len(off) <= 1 and all(line.account in ("401100", "402100") for line in off)


@given(
    st.lists(st.decimals(min_value=Decimal("-10000"), max_value=Decimal("10000"), places=2), min_size=1, max_size=8),
    st.decimals(min_value=Decimal("0"), max_value=Decimal("5000"), places=2),
    RATES,
)
def test_converted_postings_always_sum_to_zero(revenue, tax, rate):
    total = -sum(revenue, ZERO) + tax
    converted = convert_postings([total, *revenue, -tax], rate, "USD")
    assert sum(converted, ZERO) == 0
    assert converted[0] == to_accounting(total, rate, "USD")
    assert converted[-1] == to_accounting(-tax, rate, "USD")
    assert all(value == value.quantize(Decimal("0.01")) for value in converted)


def test_exchange_rate_type_is_the_shared_one():
    # the contract's rate type reads "1.10" as a Decimal (a guard for the fixtures above)
    from pydantic import TypeAdapter

    assert TypeAdapter(ExchangeRate).validate_python("1.10") == Decimal("1.10")
