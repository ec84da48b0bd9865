"""The messages invoicing emits are built with `construct` (kredit_invoicing.domain): for any invoice or credit
note it posts, in the accounting currency or a foreign one of none, two or three decimals, with or without cash
discounts, each is what the contract's validating constructor makes of the same fields, to the byte, parses as its
consumers parse it, and was given every field."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from kredit_invoicing.domain import InvoiceRejected, post_invoice
from kredit_shared.company_setup import DEMO_SETUP_FILE, load_company_setup
from kredit_shared.contracts import CustomerInvoiceIssued
from kredit_shared.currencies import minor_units
from kredit_shared.testing import assert_constructed_as_validated

D = Decimal
SETUP = load_company_setup(DEMO_SETUP_FILE)  # books in USD


@st.composite
def invoices(draw: st.DrawFn) -> CustomerInvoiceIssued:
    currency = draw(st.sampled_from(["USD", "EUR", "JPY", "KWD"]))
    units = minor_units(currency)
    sign = draw(st.sampled_from([1, -1]))
    on = draw(st.dates(date(2000, 1, 1), date(2090, 12, 31)))

    def amount(low: int) -> str:
        return str(sign * D(draw(st.integers(low, 10**9))).scaleb(-units))

    discounts: dict[str, object] = {}
    how = draw(st.sampled_from(["none", "code", "tiers"]))
    if how == "code":
        discounts = {"cash_discount_code": draw(st.sampled_from(list(SETUP.cash_discount_codes)))}
    elif how == "tiers":  # explicit tiers, the amounts left to invoicing
        days = draw(st.sets(st.integers(0, 30), max_size=3))
        discounts = {
            "cash_discounts": [{"percent": f"{n}.50", "date": (on + timedelta(days=n)).isoformat()} for n in days]
        }
    return CustomerInvoiceIssued.model_validate(
        {
            "invoice_id": draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,20}", fullmatch=True)),
            "customer_account": "4027",
            "customer_name": draw(st.none() | st.just("Forest Wholesales")),
            "invoice_date": on.isoformat(),
            "currency": currency,
            "payment_terms": draw(st.none() | st.sampled_from(list(SETUP.payment_terms))),
            "lines": [
                {"description": "Goods", "amount": amount(1), "sales_tax_amount": amount(0)}
                for _ in range(draw(st.integers(1, 4)))
            ],
            **({"exchange_rate": str(draw(st.decimals(D("0.0001"), D("500"), places=4)))} if currency != "USD" else {}),
            **discounts,
        }
    )


@settings(max_examples=200, deadline=None)
@given(invoices())
def test_a_posted_invoice_and_its_voucher_are_what_validation_makes_of_them(message):
    try:
        posted = post_invoice(message, SETUP)
    except InvoiceRejected:  # a foreign total worth 0.00 USD, or more than the largest amount
        assume(False)
        return
    for emitted in posted.messages:
        assert_constructed_as_validated(emitted)
