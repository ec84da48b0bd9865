"""The stored invoice fingerprint: domain.invoice_fingerprint writes the canonical JSON out by hand, so it is
checked against its original definition (model_dump through json.dumps with a callback for decimals and dates)
over generated invoices of every shape, and pinned to fingerprints stored by earlier versions."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from typing import Any

from hypothesis import given, reject, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from kredit_invoicing.domain import invoice_fingerprint
from kredit_shared.contracts import CashDiscountTier, CustomerInvoiceIssued, InvoiceLine, content_fingerprint
from kredit_shared.currencies import minor_units
from kredit_shared.wire_strategies import CURRENCIES, IDS, NAME_CHARS, TEXT_CHARS, amounts


def original_fingerprint(message: CustomerInvoiceIssued) -> str:
    """invoice_fingerprint as first written, which the stored fingerprints were made with: the reference."""
    total = sum((line.amount + line.sales_tax_amount for line in message.lines), Decimal(0))
    implied = message.document_type in (None, "Invoice" if total > 0 else "CreditNote")
    content = message.model_dump(mode="python", exclude={"message_id"} | ({"document_type"} if implied else set()))

    def canonical_scalar(value: object) -> str:
        if isinstance(value, Decimal):
            return format((value + 0).normalize(), "f")
        if isinstance(value, date):
            return value.isoformat()
        raise TypeError(f"cannot fingerprint {type(value).__name__}")

    return content_fingerprint(content, default=canonical_scalar)


def test_the_fingerprint_covers_every_field_of_the_contract():
    # A field added to the invoice, its lines or its tiers would be missed by invoice_fingerprint: decide first
    # whether it changes the invoice, and keep the fingerprints of invoices posted before it.
    assert set(CustomerInvoiceIssued.model_fields) == {
        "message_id",
        "invoice_id",
        "customer_account",
        "customer_name",
        "invoice_date",
        "currency",
        "payment_terms",
        "due_date",
        "cash_discount_code",
        "cash_discounts",
        "lines",
        "document_type",
        "exchange_rate",
    }
    assert set(InvoiceLine.model_fields) == {"description", "amount", "sales_tax_amount", "revenue_account"}
    assert set(CashDiscountTier.model_fields) == {"percent", "date", "amount"}


def test_fingerprints_stored_by_earlier_versions_still_match():
    plain = CustomerInvoiceIssued.model_validate(
        {
            "invoice_id": "INV-0",
            "customer_account": "C0",
            "invoice_date": "2025-01-15",
            "currency": "USD",
            "payment_terms": "Net30",
            "lines": [{"description": "Goods", "amount": "100.00", "revenue_account": "401100"}],
        }
    )
    every_field = CustomerInvoiceIssued.model_validate(
        {
            "invoice_id": "E1",
            "customer_account": "DE-01",
            "customer_name": 'Müller "&" Söhne \\ ☃',
            "invoice_date": "2015-06-25",
            "currency": "KWD",
            "due_date": "2015-07-25",
            "cash_discount_code": "2%10D",
            "cash_discounts": [
                {"percent": "2", "date": "2015-07-05"},
                {"percent": "1.50", "date": "2015-07-15", "amount": "15.000"},
            ],
            "lines": [
                {"description": "Tab\tand\nbreak", "amount": "1000.125", "sales_tax_amount": 25},
                {"amount": "-10", "revenue_account": "401200"},
            ],
            "document_type": "InterestNote",
            "exchange_rate": "3.2500",
        }
    )
    assert invoice_fingerprint(plain) == original_fingerprint(plain)
    assert invoice_fingerprint(every_field) == original_fingerprint(every_field)
    assert invoice_fingerprint(plain) == "5a29d0236c0844b78a6fc07f42460c8ad2b5d1792a3e327893b41a3a7536827f"


# --- generated invoices ----------------------------------------------------------------------------

_DATES = st.dates(min_value=date(1000, 1, 1), max_value=date(9999, 12, 31))


@st.composite
def _lines(draw: st.DrawFn, currency: str) -> dict[str, Any]:
    line: dict[str, Any] = {"amount": draw(amounts(minor_units(currency), digits=9))}
    if draw(st.booleans()):
        line["sales_tax_amount"] = draw(amounts(minor_units(currency), digits=9))
    if draw(st.booleans()):
        line["description"] = draw(st.text(TEXT_CHARS, max_size=20))
    if draw(st.booleans()):
        line["revenue_account"] = draw(st.one_of(st.none(), IDS))
    return line


@st.composite
def _tiers(draw: st.DrawFn, currency: str) -> dict[str, Any]:
    tier: dict[str, Any] = {
        "percent": draw(st.one_of(st.sampled_from(["1", "1.00", "2.5", "0", "100"]), st.integers(0, 100))),
        "date": draw(_DATES).isoformat(),
    }
    if draw(st.booleans()):
        tier["amount"] = draw(st.one_of(st.none(), amounts(minor_units(currency), digits=9)))
    return tier


@st.composite
def invoices(draw: st.DrawFn) -> CustomerInvoiceIssued:
    currency = draw(CURRENCIES)
    data: dict[str, Any] = {
        "message_id": "8f0e2c4e-4d0a-4d8e-9a51-0b8e4f7d1c11",
        "invoice_id": draw(IDS),
        "customer_account": draw(IDS),
        "invoice_date": draw(_DATES).isoformat(),
        "currency": currency,
        "lines": draw(st.lists(_lines(currency), min_size=1, max_size=4)),
    }
    optional: dict[str, st.SearchStrategy[Any]] = {
        "customer_name": st.one_of(st.none(), st.text(NAME_CHARS, max_size=20)),
        "payment_terms": st.one_of(st.none(), st.text(NAME_CHARS, min_size=1, max_size=10)),
        "due_date": st.one_of(st.none(), _DATES.map(date.isoformat)),
        "cash_discount_code": st.one_of(st.none(), st.text(NAME_CHARS, min_size=1, max_size=10)),
        "cash_discounts": st.one_of(st.none(), st.lists(_tiers(currency), max_size=3)),
        "document_type": st.sampled_from([None, "Invoice", "CreditNote", "InterestNote", "PaymentFee"]),
        "exchange_rate": st.one_of(st.none(), st.sampled_from(["1.0965", "3.25", "0.0072", "1", 2])),
    }
    for field, values in optional.items():
        if draw(st.booleans()):
            data[field] = draw(values)
    try:
        return CustomerInvoiceIssued.model_validate_json(json.dumps(data))
    except ValidationError:  # e.g. totals out of bounds: not an invoice anyone can send
        reject()


@settings(max_examples=500, deadline=None)
@given(invoices())
def test_the_fingerprint_is_the_original_one_for_every_invoice(message):
    assert invoice_fingerprint(message) == original_fingerprint(message)


@given(invoices())
def test_a_new_message_id_keeps_the_fingerprint(message):
    again = message.model_copy(update={"message_id": "1b4e28ba-2fa1-4d2e-883f-0016d3cca427"})
    assert invoice_fingerprint(again) == invoice_fingerprint(message)
