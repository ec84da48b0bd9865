"""Settlement's simplest paths against an in-memory database, without a broker: an invoice and its
payment with the cash discount, a redelivery, a payment that cannot post, a mark waiting for its invoice,
settlement's own postings coming back."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import date
from decimal import Decimal
from functools import partial

from sqlmodel import select

from kredit_settlement import handlers, queries
from kredit_settlement.posting import SettlementSetup
from kredit_settlement.tables import CustomerRow
from kredit_shared.company_setup import load_company_setup
from kredit_shared.contracts import (
    AR_CUSTOMER_TRANSACTIONS,
    AR_SETTLEMENTS,
    ERP_CUSTOMER_PAYMENTS,
    GL_EXCHANGE_RATES,
    GL_JOURNAL_LINES,
    CustomerPaymentReceived,
    CustomerTransactionPosted,
    ExchangeRateSet,
    dead_letter_topic,
)
from kredit_shared.exchange_rates import WaitingDocumentRow, record_rates
from kredit_shared.testing import HandlerDatabase

SETUP = SettlementSetup.from_setup(load_company_setup())


def invoice(invoice_id: str = "10020", amount: str = "1000.00") -> CustomerTransactionPosted:
    """FTI-10020 as invoicing posts it: 1 % cash discount until 9 July 2015."""
    return CustomerTransactionPosted.model_validate(
        {
            "voucher": f"FTI-{invoice_id}",
            "transaction_type": "Invoice",
            "customer_account": "4027",
            "transaction_date": "2015-06-25",
            "invoice_id": invoice_id,
            "amount": amount,
            "currency": "USD",
            "due_date": "2015-07-25",
            "cash_discounts": [{"date": "2015-07-09", "percent": "1.00", "amount": "10.00"}],
            "cash_discount_account": "520100",
        }
    )


def payment(payment_id: str, amount: str, marks: list[tuple[str, str | None, str]] | None = None, **changes):
    body = {
        "message_id": str(uuid.uuid4()),
        "payment_id": payment_id,
        "customer_account": "4027",
        "payment_date": "2015-07-01",
        "amount": amount,
        "currency": "USD",
    } | changes
    if marks is not None:
        body["settle"] = [
            {"invoice_id": i, "use_cash_discount": u} | ({"amount_to_settle": a} if a else {}) for i, a, u in marks
        ]
    return CustomerPaymentReceived.model_validate(body)


async def post_invoices(db: HandlerDatabase, *events: CustomerTransactionPosted):
    return await db.deliver(
        AR_CUSTOMER_TRANSACTIONS, events, lambda uow, fresh: handlers.record_customer_transactions(SETUP, uow, fresh)
    )


async def pay(db: HandlerDatabase, *payments: CustomerPaymentReceived):
    return await db.deliver(
        ERP_CUSTOMER_PAYMENTS, payments, lambda uow, fresh: handlers.receive_payments(SETUP, uow, fresh)
    )


async def open_amounts(db: HandlerDatabase) -> dict[str, Decimal]:
    async with db.sessions() as session:
        return {t.voucher: t.open_amount for t in await queries.open_transactions(session, "4027")}


async def test_a_partial_payment_before_the_discount_date_settles_with_its_cash_discount(db):
    await post_invoices(db, invoice())

    handled = await pay(db, payment("ARP-10020", "297.00", marks=[("10020", None, "Normal")]))

    [settled] = handled.on(AR_SETTLEMENTS)
    body = settled.json()
    assert (body["debit_voucher"], body["credit_voucher"]) == ("FTI-10020", "ARP-10020")
    assert (body["amount_settled"], body["cash_discount_amount"], body["cash_discount_voucher"]) == (
        "297.00",
        "3.00",
        "DISC-10020",
    )
    assert {v.key for v in handled.on(GL_JOURNAL_LINES)} == {"ARP-10020", "DISC-10020"}
    assert {t.json()["voucher"] for t in handled.on(AR_CUSTOMER_TRANSACTIONS)} == {"ARP-10020", "DISC-10020"}
    assert await open_amounts(db) == {"FTI-10020": Decimal("700.00")}


async def test_a_redelivered_payment_and_invoice_change_nothing(db):
    the_invoice, the_payment = invoice(), payment("ARP-10020", "297.00")
    await post_invoices(db, the_invoice)
    await pay(db, the_payment)

    assert (await post_invoices(db, the_invoice)).emitted == []
    assert (await pay(db, the_payment)).emitted == []
    assert await open_amounts(db) == {"FTI-10020": Decimal("700.00")}


async def test_settlements_own_postings_coming_back_change_nothing_and_lock_none_of_their_customers(db):
    await post_invoices(db, invoice())
    paid = await pay(db, payment("ARP-10020", "297.00", marks=[("10020", None, "Normal")]))
    own = [CustomerTransactionPosted.model_validate_json(e.value) for e in paid.on(AR_CUSTOMER_TRANSACTIONS)]
    assert [e.voucher for e in own] == ["ARP-10020", "DISC-10020"]
    locks = await db.all(select(CustomerRow.version))

    back = await post_invoices(db, *own)

    assert (back.emitted, back.rejected) == ([], [])
    assert await db.all(select(CustomerRow.version)) == locks, "only compared with what is held: no lock taken"
    assert await open_amounts(db) == {"FTI-10020": Decimal("700.00")}
    # Coming back with another invoice in one batch: the invoice is recorded, the known ones change nothing.
    again = [e.model_copy(update={"message_id": str(uuid.uuid4())}) for e in own]
    assert (await post_invoices(db, again[0], invoice("10021"), again[1])).emitted == []
    assert await open_amounts(db) == {"FTI-10020": Decimal("700.00"), "FTI-10021": Decimal("1000.00")}


async def test_a_posting_under_a_known_voucher_with_other_content_is_rejected(db):
    await post_invoices(db, invoice())
    paid = await pay(db, payment("ARP-10020", "297.00", marks=[("10020", None, "Normal")]))
    [own, _] = [CustomerTransactionPosted.model_validate_json(e.value) for e in paid.on(AR_CUSTOMER_TRANSACTIONS)]

    handled = await post_invoices(
        db, own.model_copy(update={"message_id": str(uuid.uuid4()), "amount": Decimal("-1.00")})
    )

    assert handled.rejected == ["voucher ARP-10020 is already a Payment of customer 4027 for -297.00"]
    assert await open_amounts(db) == {"FTI-10020": Decimal("700.00")}


async def test_a_payment_that_cannot_post_is_rejected_with_its_reason_and_the_next_one_posts(db):
    await post_invoices(db, invoice())

    handled = await pay(db, payment("P-ZERO", "0.00"), payment("ARP-1", "297.00"))

    [reason] = handled.rejected
    assert "must be positive, got 0.00" in reason
    [dead] = handled.on(dead_letter_topic(ERP_CUSTOMER_PAYMENTS))
    assert (dead.reason, dead.json()["payment_id"]) == (reason, "P-ZERO")
    assert [s.json()["credit_voucher"] for s in handled.on(AR_SETTLEMENTS)] == ["ARP-1"]


async def test_a_mark_for_an_invoice_not_yet_posted_waits_and_settles_when_the_invoice_arrives(db):
    waiting = await pay(db, payment("ARP-1", "297.00", marks=[("10020", None, "Normal")]))
    assert waiting.on(AR_SETTLEMENTS) == [] and waiting.rejected == []
    async with db.sessions() as session:
        [mark] = await queries.pending_marks(session, "4027")
    assert (mark.payment_id, mark.invoice_id, mark.reserved) == ("ARP-1", "10020", Decimal("297.00"))

    arrived = await post_invoices(db, invoice())

    [settled] = arrived.on(AR_SETTLEMENTS)
    assert (settled.json()["amount_settled"], settled.json()["cash_discount_amount"]) == ("297.00", "3.00")
    async with db.sessions() as session:
        assert await queries.pending_marks(session, "4027") == []
    assert await open_amounts(db) == {"FTI-10020": Decimal("700.00")}


async def test_a_foreign_discount_worth_nothing_in_the_accounting_currency_posts_no_ledger_voucher(db):
    """JPY 1 of cash discount at 0.004 is USD 0.00: the customer transaction records it, but a voucher of 0.00
    lines would only be refused by ledger-posting (it posts no voucher without an amount)."""
    tiny = CustomerTransactionPosted.model_validate(
        invoice("JP-1", "100.00").model_dump()
        | {
            "currency": "JPY",
            "exchange_rate": "0.004",
            "accounting_currency_amount": "0.40",
            "cash_discounts": [{"date": "2015-07-09", "percent": "1.00", "amount": "1"}],
        }
    )
    await post_invoices(db, tiny)

    handled = await pay(
        db, payment("JPP-1", "99", marks=[("JP-1", None, "Normal")], currency="JPY", exchange_rate="0.004")
    )

    vouchers = {e.json()["voucher"]: e.json() for e in handled.emitted if e.topic == GL_JOURNAL_LINES}
    assert list(vouchers) == ["JPP-1"]  # the payment's (USD 0.40); no DISC- voucher of 0.00
    discount = [
        e.json()
        for e in handled.emitted
        if e.topic == AR_CUSTOMER_TRANSACTIONS and e.json()["transaction_type"] == "CashDiscount"
    ]
    assert [(d["amount"], d["accounting_currency_amount"]) for d in discount] == [("-1.00", "0.00")]
    assert await open_amounts(db) == {}  # the invoice, the payment and the discount all settled


async def test_numbered_vouchers_are_never_given_twice_in_a_batch_or_after_it(db):
    """Payments ARP-7 and 7 both name their discount DISC-7, ARP-8 and 8 their penny difference DIFF-8: in one
    batch, before anything is written, the second takes the next name; so does payment 9 coming alone after
    ARP-9's DISC-9 and DIFF-9 were written."""
    setup = replace(SETUP, parameters=replace(SETUP.parameters, maximum_penny_difference=Decimal("0.05")))
    invoices = [invoice(str(n)) for n in range(1, 7)]  # the first batch seeds the parameters
    await db.deliver(
        AR_CUSTOMER_TRANSACTIONS, invoices, lambda uow, f: handlers.record_customer_transactions(setup, uow, f)
    )

    def paying(payment_id: str, amount: str, invoice_id: str) -> CustomerPaymentReceived:
        return payment(payment_id, amount, marks=[(invoice_id, None, "Normal")])

    batch = [paying("ARP-7", "990.00", "1"), paying("7", "990.00", "2")]
    batch += [paying("ARP-8", "989.98", "3"), paying("8", "989.98", "4"), paying("ARP-9", "989.98", "5")]
    handled = await db.deliver(ERP_CUSTOMER_PAYMENTS, batch, lambda uow, f: handlers.receive_payments(setup, uow, f))
    alone = await db.handle(lambda uow: handlers.receive_payment(setup, uow, paying("9", "989.98", "6")))

    pairs = [s.json() for s in [*handled.on(AR_SETTLEMENTS), *alone.on(AR_SETTLEMENTS)]]
    assert [(p["credit_voucher"], p["cash_discount_voucher"]) for p in pairs] == [
        ("ARP-7", "DISC-7"),
        ("7", "DISC-7-2"),
        ("ARP-8", "DISC-8"),
        ("8", "DISC-8-2"),
        ("ARP-9", "DISC-9"),
        ("9", "DISC-9-2"),
    ]
    ledger = [v.key for v in [*handled.on(GL_JOURNAL_LINES), *alone.on(GL_JOURNAL_LINES)]]
    assert [v for v in ledger if v.startswith("DIFF-")] == ["DIFF-8", "DIFF-8-2", "DIFF-9", "DIFF-9-2"]


async def test_pending_marks_settled_in_one_batch_of_invoices_take_distinct_discount_vouchers(db):
    await pay(db, payment("ARP-5", "990.00", marks=[("1", None, "Normal")]))
    await pay(db, payment("5", "990.00", marks=[("2", None, "Normal")]))

    arrived = await post_invoices(db, invoice("1"), invoice("2"))

    pairs = [s.json() for s in arrived.on(AR_SETTLEMENTS)]
    assert [(p["credit_voucher"], p["cash_discount_voucher"]) for p in pairs] == [
        ("ARP-5", "DISC-5"),
        ("5", "DISC-5-2"),
    ]
    assert await open_amounts(db) == {}


def set_rates(db: HandlerDatabase, *rates: ExchangeRateSet):
    """Rates arriving on gl.exchange-rates, in the service: the payments kept for them are booked."""
    handle = (CustomerPaymentReceived.model_validate_json, partial(handlers.receive_payments, SETUP))
    return db.deliver(
        GL_EXCHANGE_RATES,
        rates,
        partial(record_rates, accounting_currency="USD", handler_of={ERP_CUSTOMER_PAYMENTS: handle}.get),
    )


async def test_a_payment_without_a_rate_is_dead_lettered_kept_and_booked_with_its_marks_when_its_rate_arrives(db):
    """EUR 1,000.00 invoiced at 1.10 (USD 1,100.00), paid in full on 1 July 2015 without a rate: kept until EUR's
    rate for that date is set (1.20), then posted at it (USD 1,200.00) and settled, the 100.00 a realized gain."""
    euro_invoice = CustomerTransactionPosted.model_validate(
        invoice("E-1").model_dump()
        | {"currency": "EUR", "exchange_rate": "1.10", "accounting_currency_amount": "1100.00", "cash_discounts": []}
    )
    await post_invoices(db, euro_invoice)
    euros = payment("P-E-1", "1000.00", marks=[("E-1", None, "Normal")], currency="EUR")

    refused = await pay(db, euros)

    [dead] = refused.on(dead_letter_topic(ERP_CUSTOMER_PAYMENTS))
    assert dead.reason == (
        "payment P-E-1 is in EUR; payments are accepted in the accounting currency USD only, or in another currency "
        "at a known exchange rate: payment P-E-1 is in EUR and states no exchange_rate, and there is no EUR rate for "
        "2015-07-01 (send exchange_rate, or set a rate: docs/currencies.md). It will be booked automatically when a "
        "rate for it is set over HTTP; a replay is not needed."
    )
    [kept] = await db.all(select(WaitingDocumentRow))
    assert (kept.topic, kept.message_id, kept.currency, kept.document_date) == (
        ERP_CUSTOMER_PAYMENTS,
        euros.message_id,
        "EUR",
        date(2015, 7, 1),
    )
    # A rate for another currency, or for EUR from a date after the payment's, books nothing.
    assert (await set_rates(db, ExchangeRateSet(currency="GBP", from_date="2015-06-01", rate="1.50"))).emitted == []
    assert (await set_rates(db, ExchangeRateSet(currency="EUR", from_date="2015-07-02", rate="1.30"))).emitted == []
    assert await open_amounts(db) == {"FTI-E-1": Decimal("1000.00")}

    booked = await set_rates(db, ExchangeRateSet(currency="EUR", from_date="2015-07-01", rate="1.20"))

    assert booked.rejected == []
    [settled] = booked.on(AR_SETTLEMENTS)
    body = settled.json()
    assert (body["debit_voucher"], body["credit_voucher"], body["amount_settled"]) == ("FTI-E-1", "P-E-1", "1000.00")
    assert (body["debit_accounting_amount"], body["credit_accounting_amount"]) == ("1100.00", "1200.00")
    vouchers = {v.key: v.json() for v in booked.on(GL_JOURNAL_LINES)}
    bank = vouchers["P-E-1"]["lines"][0]
    assert (bank["account"], bank["debit"]) == ("110110", "1200.00")
    assert await open_amounts(db) == {}  # the invoice and the payment settled each other
    assert await db.all(select(WaitingDocumentRow)) == []

    # Someone replays the dead letter anyway: a duplicate (the inbox has it), nothing happens.
    replayed = await pay(db, euros)
    assert (replayed.emitted, replayed.rejected) == ([], [])
