"""Invoicing's handler against an in-memory database, without a broker: what it stores, emits and rejects."""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlmodel import select

from kredit_invoicing.handlers import issue_invoices
from kredit_invoicing.tables import InvoiceRow
from kredit_shared.company_setup import load_company_setup
from kredit_shared.contracts import (
    AR_CUSTOMER_TRANSACTIONS,
    ERP_CUSTOMER_INVOICES,
    GL_EXCHANGE_RATES,
    GL_JOURNAL_LINES,
    CustomerInvoiceIssued,
    ExchangeRateSet,
    dead_letter_topic,
)
from kredit_shared.exchange_rates import record_rates
from kredit_shared.testing import HandlerDatabase

DEMO = load_company_setup()
DLQ = dead_letter_topic(ERP_CUSTOMER_INVOICES)


def invoice(invoice_id: str = "10020", **changes) -> CustomerInvoiceIssued:
    """Invoice 10020 of the source (1,000.00, 2015-06-25, Net30, 1%14D) unless changed."""
    body = {
        "message_id": str(uuid.uuid4()),
        "invoice_id": invoice_id,
        "customer_account": "4027",
        "customer_name": "Fabrikam customer 4027",
        "invoice_date": "2015-06-25",
        "currency": "USD",
        "payment_terms": "Net30",
        "cash_discount_code": "1%14D",
        "lines": [
            {"description": "Goods", "amount": "1000.00", "sales_tax_amount": "0.00", "revenue_account": "401100"}
        ],
    }
    return CustomerInvoiceIssued.model_validate(body | changes)


async def issue(db: HandlerDatabase, *messages: CustomerInvoiceIssued):
    return await db.deliver(ERP_CUSTOMER_INVOICES, messages, lambda uow, fresh: issue_invoices(uow, fresh, DEMO))


async def test_an_invoice_is_stored_and_emits_its_customer_transaction_and_a_balanced_voucher(db):
    handled = await issue(db, invoice())

    [transaction] = handled.on(AR_CUSTOMER_TRANSACTIONS)
    assert (transaction.key, transaction.message_type) == ("4027", "CustomerTransactionPosted")
    body = transaction.json()
    assert (body["voucher"], body["amount"], body["due_date"]) == ("FTI-10020", "1000.00", "2015-07-25")
    assert body["cash_discounts"] == [{"percent": "1.00", "date": "2015-07-09", "amount": "10.00"}]
    [voucher] = handled.on(GL_JOURNAL_LINES)
    assert voucher.key == "FTI-10020"
    lines = [(line["account"], line["debit"], line["credit"]) for line in voucher.json()["lines"]]
    assert lines == [("130100", "1000.00", "0.00"), ("401100", "0.00", "1000.00")]
    assert handled.rejected == []
    [row] = await db.all(select(InvoiceRow))
    assert (row.invoice_id, row.total, row.exchange_rate) == ("10020", Decimal("1000.00"), None)


async def test_a_redelivery_and_a_resent_identical_invoice_post_it_once(db):
    first = invoice()
    await issue(db, first)

    again = await issue(db, first, first.model_copy(update={"message_id": str(uuid.uuid4())}))

    assert again.emitted == []
    assert len(await db.all(select(InvoiceRow))) == 1


async def test_the_same_invoice_twice_in_one_fetch_posts_once(db):
    first = invoice()
    handled = await issue(db, first, first.model_copy(update={"message_id": str(uuid.uuid4())}))
    assert [e.key for e in handled.on(GL_JOURNAL_LINES)] == ["FTI-10020"]


async def test_an_invoice_resent_with_other_content_is_rejected_and_the_rest_of_the_fetch_posts(db):
    await issue(db, invoice())

    handled = await issue(db, invoice(invoice_date="2015-06-26"), invoice("10041"))

    reason = "invoice 10020: already posted with different content; correct it with a credit note"
    assert handled.rejected == [reason]
    [dead] = handled.on(DLQ)
    assert (dead.reason, dead.json()["invoice_id"]) == (reason, "10020")
    assert [e.key for e in handled.on(GL_JOURNAL_LINES)] == ["FTI-10041"]


async def test_invoices_the_domain_refuses_are_rejected_with_their_reason_and_nothing_is_stored(db):
    handled = await issue(
        db,
        invoice("B06", payment_terms="Net45"),
        invoice("B07", cash_discount_code="5%1D"),
        invoice("B10", currency="EUR"),
    )

    assert handled.rejected == [
        "invoice B06: unknown payment terms 'Net45'",
        "invoice B07: unknown cash discount code '5%1D'",
        "invoice B10 is in EUR and states no exchange_rate, and there is no EUR rate for 2015-06-25 "
        "(send exchange_rate, or set a rate: docs/currencies.md)",
    ]
    assert [e.topic for e in handled.emitted] == [DLQ] * 3
    assert await db.all(select(InvoiceRow)) == []


async def test_a_rejected_invoice_is_processed_when_replayed_after_its_cause_is_fixed(db):
    """A rate set over HTTP arrives after the invoice that needed it; the replay (same message_id) posts."""
    euro = invoice("E-1", currency="EUR", lines=[{"description": "Goods", "amount": "100.00"}])
    assert len((await issue(db, euro)).rejected) == 1

    rate = ExchangeRateSet(currency="EUR", from_date="2015-06-01", rate="1.10")
    await db.deliver(GL_EXCHANGE_RATES, [rate], record_rates)
    replayed = await issue(db, euro)

    assert replayed.rejected == []
    [voucher] = replayed.on(GL_JOURNAL_LINES)
    customer_line = voucher.json()["lines"][0]
    assert (customer_line["account"], customer_line["debit"]) == ("130100", "110.00")
    [row] = await db.all(select(InvoiceRow))
    assert (row.exchange_rate, row.accounting_total) == (Decimal("1.10"), Decimal("110.00"))
