"""Collections' handlers against an in-memory database, without a broker: the read model, write-offs
from request to posted or cancelled, and the posted journals it will not apply."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from kredit_collections import handlers
from kredit_collections.domain import InvalidSelection, NotCancellable, WriteOffConflict
from kredit_shared.company_setup import load_company_setup
from kredit_shared.contracts import (
    AR_CUSTOMER_TRANSACTIONS,
    AR_SETTLEMENTS,
    GL_GENERAL_JOURNALS,
    GL_JOURNAL_EVENTS,
    CustomerTransactionPosted,
    GeneralJournalRequested,
    JournalCancelRefused,
    JournalCreated,
    JournalPosted,
    JournalVoided,
    OpenItemsSettled,
    PostedJournalLine,
    dead_letter_topic,
)
from kredit_shared.testing import HandlerDatabase

DEMO = load_company_setup()
CAVE = "US-004"


def transaction(voucher: str, type: str, amount: str, on: str = "2016-01-01", **fields) -> CustomerTransactionPosted:
    return CustomerTransactionPosted(
        voucher=voucher,
        transaction_type=type,
        customer_account=CAVE,
        transaction_date=on,
        amount=Decimal(amount),
        currency="USD",
        sales_tax_amount=Decimal("0.00"),
        **fields,
    )


def settled(settlement_id: str, debit: str, credit: str, amount: str) -> OpenItemsSettled:
    return OpenItemsSettled(
        settlement_id=settlement_id,
        customer_account=CAVE,
        settlement_date="2016-02-01",
        currency="USD",
        debit_voucher=debit,
        credit_voucher=credit,
        amount_settled=Decimal(amount),
        cash_discount_amount=Decimal("0.00"),
    )


def posted(journal: GeneralJournalRequested, batch: str) -> JournalPosted:
    lines = [PostedJournalLine(**l.model_dump(), voucher="WOV-000001") for l in journal.lines]
    return JournalPosted(
        request_id=journal.request_id,
        journal_name=journal.journal_name,
        batch_number=batch,
        posting_date=journal.lines[0].transaction_date,
        lines=lines,
    )


async def record(db: HandlerDatabase, *messages) -> None:
    for message in messages:
        handler = {
            AR_CUSTOMER_TRANSACTIONS: handlers.record_customer_transactions,
            AR_SETTLEMENTS: handlers.record_settlements,
        }[message.topic]
        await db.deliver(message.topic, [message], handler)


async def journal_events(db: HandlerDatabase, *events):
    return await db.deliver(GL_JOURNAL_EVENTS, events, handlers.record_journal_events)


async def balances(db: HandlerDatabase) -> dict[str, str]:
    async with db.sessions() as session:
        return {b.transaction.voucher: str(b.balance) for b in await handlers.balances(session, CAVE)}


async def status(db: HandlerDatabase, write_off_id: str) -> tuple[str, str | None, str | None]:
    async with db.sessions() as session:
        row = await handlers.write_off_request(session, write_off_id)
    assert row is not None
    return row.status, row.journal_batch_number, row.reason


async def write_off(db: HandlerDatabase, **selection) -> tuple[str, GeneralJournalRequested]:
    handled = await db.handle(lambda uow: handlers.request_write_off(uow, DEMO, CAVE, on=date(2016, 3, 1), **selection))
    [journal] = handled.on(GL_GENERAL_JOURNALS)
    assert journal.key == handled.result
    return handled.result, GeneralJournalRequested.model_validate_json(journal.value)


async def test_the_read_model_keeps_transactions_once_and_applies_settlements_in_any_order(db):
    payment = transaction("ARP-1", "Payment", "-300.00")
    # The settlement overtakes the payment it settles (another topic); the invoice comes twice.
    await record(
        db, transaction("CIV-1", "Invoice", "800.00", invoice_id="1"), settled("S-1", "CIV-1", "ARP-1", "300.00")
    )
    await record(db, payment, payment, transaction("CIV-1", "Invoice", "800.00", invoice_id="1"))

    assert await balances(db) == {"CIV-1": "500.00", "ARP-1": "0.00"}
    async with db.sessions() as session:
        [aged] = await handlers.customer_aged_balances(session, DEMO, CAVE, date(2016, 3, 1))
    assert aged.balance == Decimal("500.00")


async def test_a_write_off_goes_from_requested_to_posted_and_its_vouchers_cannot_be_written_off_twice(db):
    await record(
        db, transaction("CIV-1", "Invoice", "1200.00", invoice_id="1"), transaction("CIV-2", "Invoice", "45.67")
    )

    write_off_id, journal = await write_off(db, vouchers=["CIV-1", "CIV-2"], reason_comment="Bad debt")

    lines = [(l.account_type, l.account, str(l.debit), str(l.credit)) for l in journal.lines]
    assert lines == [("Customer", CAVE, "0.00", "1245.67"), ("Ledger", "618900", "1245.67", "0.00")]
    assert await status(db, write_off_id) == ("requested", None, None)
    with pytest.raises(WriteOffConflict, match="CIV-1"):
        await db.handle(lambda uow: handlers.request_write_off(uow, DEMO, CAVE, invoice_id="1"))

    await journal_events(db, JournalCreated(request_id=write_off_id, journal_name="WriteOff", batch_number="WOJ-1"))
    assert await status(db, write_off_id) == ("journal-created", "WOJ-1", None)
    await journal_events(db, posted(journal, "WOJ-1"))
    assert await status(db, write_off_id) == ("posted", "WOJ-1", None)
    with pytest.raises(NotCancellable, match="already posted"):
        await db.handle(lambda uow: handlers.cancel_write_off(uow, write_off_id, None))


async def test_a_selection_that_is_not_open_or_not_the_customers_is_refused_and_emits_nothing(db):
    await record(db, transaction("CIV-1", "Invoice", "100.00"))
    for selection, error in (({"vouchers": ["CIV-9"]}, "CIV-9"), ({"invoice_id": "9"}, "invoice '9'")):
        with pytest.raises(InvalidSelection, match=error):
            await db.handle(lambda uow, selection=selection: handlers.request_write_off(uow, DEMO, CAVE, **selection))
    assert await db.emitted() == []


async def test_a_cancel_asks_once_and_frees_the_vouchers_when_the_journal_is_voided(db):
    await record(db, transaction("CIV-1", "Invoice", "100.00", invoice_id="1"))
    first, _ = await write_off(db, invoice_id="1")

    asked = await db.handle(lambda uow: handlers.cancel_write_off(uow, first, "wrong customer"))
    again = await db.handle(lambda uow: handlers.cancel_write_off(uow, first, "wrong customer"))

    [cancel] = asked.on(GL_GENERAL_JOURNALS)
    assert (cancel.key, cancel.json()["reason"]) == (first, "wrong customer")
    assert again.emitted == [], "asking again sends nothing"
    assert await status(db, first) == ("cancelling", None, "wrong customer")
    with pytest.raises(WriteOffConflict):  # the journal may still be posted before the cancel arrives
        await db.handle(lambda uow: handlers.request_write_off(uow, DEMO, CAVE, invoice_id="1"))

    await journal_events(db, JournalVoided(request_id=first, journal_name="WriteOff", batch_number="WOJ-1"))
    assert (await status(db, first))[0] == "cancelled"
    second, journal = await write_off(db, invoice_id="1")
    assert [s.voucher for l in journal.lines for s in l.settles] == ["CIV-1"]


async def test_a_cancel_refused_because_the_journal_was_posted_ends_posted_with_the_reason(db):
    await record(db, transaction("CIV-1", "Invoice", "100.00", invoice_id="1"))
    raced, journal = await write_off(db, invoice_id="1")
    await db.handle(lambda uow: handlers.cancel_write_off(uow, raced, None))

    reason = "journal WOJ-1 is already posted; it cannot be cancelled"
    await journal_events(
        db,
        JournalCreated(request_id=raced, journal_name="WriteOff", batch_number="WOJ-1"),
        posted(journal, "WOJ-1"),
        JournalCancelRefused(request_id=raced, journal_name="WriteOff", batch_number="WOJ-1", reason=reason),
    )

    assert await status(db, raced) == ("posted", "WOJ-1", reason)


async def test_a_posted_journal_that_is_not_the_requested_one_is_rejected_and_not_applied(db):
    await record(db, transaction("CIV-1", "Invoice", "120.00"), transaction("CIV-2", "Invoice", "80.00"))
    write_off_id, journal = await write_off(db, vouchers=["CIV-1"])
    other_invoice = journal.model_copy(
        update={
            "lines": [
                l.model_copy(update={"settles": [s.model_copy(update={"voucher": "CIV-2"}) for s in l.settles]})
                for l in journal.lines
            ]
        }
    )
    forged = journal.model_copy(update={"request_id": "never-requested"})
    ledger_only = journal.model_copy(
        update={"request_id": "general", "lines": [l for l in journal.lines if l.account_type == "Ledger"]}
    )

    handled = await journal_events(
        db, posted(other_invoice, "WOJ-1"), posted(forged, "WOJ-2"), posted(ledger_only, "GNJ-1")
    )

    [differs, never] = handled.rejected
    assert f"its lines differ from write-off {write_off_id}'s journal" in differs and "CIV-2" in differs
    assert "collections never requested it" in never
    assert [d.reason for d in handled.on(dead_letter_topic(GL_JOURNAL_EVENTS))] == [differs, never]
    assert await status(db, write_off_id) == ("requested", None, None)
    assert (await journal_events(db, posted(journal, "WOJ-1"))).rejected == []
    assert (await status(db, write_off_id))[0] == "posted"
