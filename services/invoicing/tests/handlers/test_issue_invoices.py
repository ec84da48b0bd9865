"""Invoicing's handler against an in-memory database, without a broker: what it stores, emits and rejects."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal
from functools import partial

from prometheus_client import REGISTRY
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
from kredit_shared.exchange_rates import ExchangeRateRow, WaitingDocumentRow, record_rates
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
        "(send exchange_rate, or set a rate: docs/currencies.md). It will be booked automatically when a rate "
        "for it is set over HTTP; a replay is not needed.",
    ]
    assert [e.topic for e in handled.emitted] == [DLQ] * 3
    assert await db.all(select(InvoiceRow)) == []


async def test_an_invoice_whose_due_or_discount_date_would_be_after_9999_12_31_is_rejected_with_that_reason(db):
    handled = await issue(
        db,
        invoice("LATE1", invoice_date="9999-12-31"),
        invoice("LATE2", invoice_date="9999-12-25", payment_terms=None),
    )
    assert handled.rejected == [
        "invoice LATE1: the due date (9999-12-31 + 30 days) is after 9999-12-31",
        "invoice LATE2: the cash discount date (9999-12-25 + 14 days) is after 9999-12-31",
    ]
    assert await db.all(select(InvoiceRow)) == []


def set_rates(db: HandlerDatabase, *rates: ExchangeRateSet):
    """Rates arriving on gl.exchange-rates, in the service: the invoices kept for them are booked."""
    handle = (CustomerInvoiceIssued.model_validate_json, lambda uow, fresh: issue_invoices(uow, fresh, DEMO))
    return db.deliver(
        GL_EXCHANGE_RATES,
        rates,
        partial(record_rates, accounting_currency="USD", handler_of={ERP_CUSTOMER_INVOICES: handle}.get),
    )


def eur_rate(from_date: str, rate: str = "1.10", currency: str = "EUR") -> ExchangeRateSet:
    return ExchangeRateSet(currency=currency, from_date=from_date, rate=rate)


def booked_so_far() -> float:
    labels = {"service": "", "topic": ERP_CUSTOMER_INVOICES, "outcome": "booked"}
    return REGISTRY.get_sample_value("kredit_documents_waiting_for_rate_total", labels) or 0.0


async def test_an_invoice_without_a_rate_is_dead_lettered_kept_and_booked_when_a_rate_for_its_date_arrives(db):
    euro = invoice("E-1", currency="EUR", lines=[{"description": "Goods", "amount": "100.00"}])
    refused = await issue(db, euro)
    [dead] = refused.on(DLQ)
    assert dead.reason == (
        "invoice E-1 is in EUR and states no exchange_rate, and there is no EUR rate for 2015-06-25 (send "
        "exchange_rate, or set a rate: docs/currencies.md). It will be booked automatically when a rate for it is "
        "set over HTTP; a replay is not needed."
    )
    [kept] = await db.all(select(WaitingDocumentRow))
    assert (kept.topic, kept.message_id, kept.currency, kept.document_date) == (
        ERP_CUSTOMER_INVOICES,
        euro.message_id,
        "EUR",
        date(2015, 6, 25),
    )

    # A rate for another currency, or for EUR from a date after the invoice's, books nothing.
    assert (await set_rates(db, eur_rate("2015-06-01", "1.25", currency="GBP"))).emitted == []
    assert (await set_rates(db, eur_rate("2015-06-26", "1.20"))).emitted == []
    assert len(await db.all(select(WaitingDocumentRow))) == 1

    before = booked_so_far()
    booked = await set_rates(db, eur_rate("2015-06-01", "1.10"))

    [transaction] = booked.on(AR_CUSTOMER_TRANSACTIONS)
    assert transaction.message_type == "CustomerTransactionPosted"
    body = transaction.json()
    assert (body["voucher"], body["amount"], body["exchange_rate"], body["accounting_currency_amount"]) == (
        "FTI-E-1",
        "100.00",
        "1.10",
        "110.00",
    )
    [voucher] = booked.on(GL_JOURNAL_LINES)
    assert voucher.message_type == "VoucherPosted"
    lines = [(line["account"], line["debit"], line["credit"]) for line in voucher.json()["lines"]]
    assert lines == [("130100", "110.00", "0.00"), ("401100", "0.00", "110.00")]
    assert booked.rejected == []
    assert await db.all(select(WaitingDocumentRow)) == []
    [row] = await db.all(select(InvoiceRow))
    assert (row.exchange_rate, row.accounting_total) == (Decimal("1.10"), Decimal("110.00"))
    assert booked_so_far() == before + 1

    # Someone replays the dead letter anyway: a duplicate (the inbox has it), nothing happens.
    replayed = await issue(db, euro)
    assert (replayed.emitted, replayed.rejected) == ([], [])


async def test_a_kept_invoice_refused_for_another_reason_when_its_rate_arrives_is_dead_lettered_with_it(db):
    euro = invoice("E-2", currency="EUR", payment_terms="Net45")
    assert len((await issue(db, euro)).rejected) == 1  # the rate is checked first

    handled = await set_rates(db, eur_rate("2015-06-01"))

    assert handled.rejected == ["invoice E-2: unknown payment terms 'Net45'"]
    [dead] = handled.on(DLQ)
    assert (dead.reason, dead.json()["message_id"]) == ("invoice E-2: unknown payment terms 'Net45'", euro.message_id)
    assert await db.all(select(WaitingDocumentRow)) == []
    assert await db.all(select(InvoiceRow)) == []
    # Not processed: a replay of it (fixed by then, say) is handled, not taken for a duplicate.
    assert (await issue(db, euro)).rejected == ["invoice E-2: unknown payment terms 'Net45'"]


async def test_a_kept_invoice_replayed_before_its_rate_books_it_is_not_booked_twice(db):
    """The dead letter is replayed once a rate is known (one this service stored without booking what waited,
    as record_rates does without a handler): the replay posts, and the kept copy is then passed over."""
    euro = invoice("E-3", currency="EUR", lines=[{"description": "Goods", "amount": "100.00"}])
    assert len((await issue(db, euro)).rejected) == 1
    await db.deliver(GL_EXCHANGE_RATES, [eur_rate("2015-06-01")], partial(record_rates, accounting_currency="USD"))

    replayed = await issue(db, euro)
    assert [e.key for e in replayed.on(GL_JOURNAL_LINES)] == ["FTI-E-3"]

    later = await set_rates(db, eur_rate("2015-06-10", "1.12"))
    assert (later.emitted, later.rejected) == ([], [])
    assert await db.all(select(WaitingDocumentRow)) == []
    [row] = await db.all(select(InvoiceRow))
    assert (row.exchange_rate, row.accounting_total) == (Decimal("1.10"), Decimal("110.00"))


async def test_a_kept_invoice_its_handler_fails_on_holds_back_neither_the_rate_nor_the_others(db):
    await issue(db, invoice("E-4", currency="EUR"), invoice("E-5", currency="EUR"))

    async def failing_on_e4(uow, fresh):
        await issue_invoices(uow, fresh, DEMO)  # writes and emits, then fails: all of it undone
        if fresh[0].invoice_id == "E-4":
            raise RuntimeError("a bug")

    handle = (CustomerInvoiceIssued.model_validate_json, failing_on_e4)
    rates = partial(record_rates, accounting_currency="USD", handler_of={ERP_CUSTOMER_INVOICES: handle}.get)
    handled = await db.deliver(GL_EXCHANGE_RATES, [eur_rate("2015-06-01")], rates)

    assert [e.key for e in handled.on(GL_JOURNAL_LINES)] == ["FTI-E-5"]
    assert [row.invoice_id for row in await db.all(select(InvoiceRow))] == ["E-5"]
    assert [row.currency for row in await db.all(select(ExchangeRateRow))] == ["EUR"]
    assert await db.all(select(WaitingDocumentRow)) == []  # its dead letter stays, to replay once fixed
