"""Ledger-posting's handlers against an in-memory database, without a broker: vouchers, journals, cancels."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal

import pytest
from sqlmodel import select

from kredit_ledger_posting import domain, handlers
from kredit_ledger_posting.tables import JournalRow, LedgerEntryRow
from kredit_shared.company_setup import load_company_setup
from kredit_shared.contracts import (
    GL_GENERAL_JOURNALS,
    GL_JOURNAL_EVENTS,
    GL_JOURNAL_LINES,
    VoucherPosted,
    dead_letter_topic,
    general_journal_adapter,
)
from kredit_shared.testing import HandlerDatabase

DEMO = load_company_setup()
NO_FOUR_EYES = DEMO.model_copy(update={"write_off": DEMO.write_off.model_copy(update={"four_eyes_write_off": False})})
INVOICE = (("130100", "1000.00", "0"), ("401100", "0", "1000.00"))


def voucher(number: str, *lines: tuple[str, str, str], currency: str = "USD") -> VoucherPosted:
    return VoucherPosted.model_validate(
        {
            "message_id": str(uuid.uuid4()),
            "voucher": number,
            "posting_date": "2015-06-25",
            "currency": currency,
            "source": "test",
            "lines": [{"account": a, "debit": d, "credit": c} for a, d, c in lines],
        }
    )


def write_off_request(request_id: str, amount: str = "700.00", journal_name: str = "WriteOff", **line_changes):
    common = {"currency": "USD", "transaction_date": "2015-08-31", "reason_code": "BadDebt", "reason_comment": "Bad"}
    customer = {
        "account_type": "Customer",
        "account": "4027",
        "credit": amount,
        "text": "Write-off FTI-10020",
        "settles": [{"voucher": "FTI-10020", "invoice_id": "10020", "amount": amount}],
    }
    ledger = {"account_type": "Ledger", "account": "618900", "debit": amount, "text": "Write-off FTI-10020"}
    return general_journal_adapter.validate_python(
        {
            "message_id": str(uuid.uuid4()),
            "request_id": request_id,
            "journal_name": journal_name,
            "description": "Write off transactions for 4027",
            "requested_by": "ann",
            "lines": [common | customer, common | ledger | line_changes],
        }
    )


def cancel(request_id: str, reason: str = "requested by mistake"):
    return general_journal_adapter.validate_python(
        {
            "message_id": str(uuid.uuid4()),
            "message_type": "GeneralJournalCancelRequested",
            "request_id": request_id,
            "journal_name": "WriteOff",
            "reason": reason,
        }
    )


async def post_vouchers(db: HandlerDatabase, *vouchers: VoucherPosted):
    return await db.deliver(GL_JOURNAL_LINES, vouchers, lambda uow, fresh: handlers.post_vouchers(uow, fresh, DEMO))


async def journal_message(db: HandlerDatabase, message):
    return await db.deliver(
        GL_GENERAL_JOURNALS, [message], lambda uow, fresh: handlers.on_general_journal_message(uow, fresh[0], DEMO)
    )


async def balances(db: HandlerDatabase, as_of: date = date(2099, 1, 1)) -> dict[str, str]:
    async with db.sessions() as session:
        tb = await handlers.trial_balance(session, DEMO, as_of)
    return {row.account: str(row.balance) for row in tb.accounts}


def events(handled) -> list[tuple[str, str]]:
    return [(e.json()["event_type"], e.json()["request_id"]) for e in handled.on(GL_JOURNAL_EVENTS)]


async def test_a_balanced_voucher_posts_once_however_often_it_arrives(db):
    first = voucher("FTI-10020", *INVOICE)
    await post_vouchers(db, first, first)
    await post_vouchers(db, first, first.model_copy(update={"message_id": str(uuid.uuid4())}))
    await post_vouchers(db, voucher("ARP-10020", ("110110", "297.00", "0"), ("130100", "0", "297.00")))

    assert await balances(db) == {"110110": "297.00", "130100": "703.00", "401100": "-1000.00"}
    assert await balances(db, date(2015, 6, 24)) == {}
    assert len(await db.all(select(LedgerEntryRow))) == 4


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (
            voucher("V-UNBAL", ("130100", "100.00", "0"), ("401100", "0", "90.00")),
            "voucher V-UNBAL does not balance: debits total 100.00, credits total 90.00",
        ),
        (voucher("V-ACCT", ("130100", "100.00", "0"), ("999999", "0", "100.00")), "unknown main account '999999'"),
        (voucher("V-EUR", *INVOICE, currency="EUR"), "currency EUR is not the accounting currency USD"),
        (voucher("V-ZERO", ("130100", "0", "0"), ("401100", "0", "0")), "no line with a non-zero amount"),
        (
            voucher("FTI-10020", ("130100", "999.00", "0"), ("401100", "0", "999.00")),
            "voucher FTI-10020 is already posted with different content",
        ),
    ],
    ids=["unbalanced", "unknown-account", "foreign-currency", "zero-only", "conflicting-duplicate"],
)
async def test_a_voucher_that_must_not_post_is_rejected_with_its_reason_and_the_rest_of_its_fetch_posts(
    db, bad, reason
):
    await post_vouchers(db, voucher("FTI-10020", *INVOICE))

    handled = await post_vouchers(db, bad, voucher("NEXT-1", *INVOICE))

    [rejected] = handled.rejected
    assert reason in rejected
    [dead] = handled.on(dead_letter_topic(GL_JOURNAL_LINES))
    assert dead.json()["voucher"] == bad.voucher
    assert await balances(db) == {"130100": "2000.00", "401100": "-2000.00"}


async def test_a_write_off_journal_is_kept_open_numbered_and_posted_once_by_another_accountant(db):
    await post_vouchers(db, voucher("FTI-10020", *INVOICE))
    first = write_off_request("wo-1")
    created = [await journal_message(db, m) for m in (first, first, write_off_request("gen-1", journal_name="GenJrn"))]

    assert [events(h) for h in created] == [[("JournalCreated", "wo-1")], [], [("JournalCreated", "gen-1")]]
    batches = {row.request_id: row.batch_number for row in await db.all(select(JournalRow))}
    assert batches == {"wo-1": "WOJ-000001", "gen-1": "GNJ-000001"}
    assert await balances(db) == {"130100": "1000.00", "401100": "-1000.00"}, "an open journal posts nothing"

    with pytest.raises(domain.FourEyesViolation):
        await db.handle(lambda uow: handlers.post_general_journal(uow, "WOJ-000001", DEMO, posted_by="ann"))
    posted = await db.handle(lambda uow: handlers.post_general_journal(uow, "WOJ-000001", DEMO, posted_by="bob"))
    assert (posted.result.status, posted.result.posted_by) == ("posted", "bob")
    [event] = posted.on(GL_JOURNAL_EVENTS)
    assert (event.key, event.json()["event_type"]) == ("WOJ-000001", "JournalPosted")
    with pytest.raises(domain.JournalAlreadyPosted):
        await db.handle(lambda uow: handlers.post_general_journal(uow, "WOJ-000001", DEMO, posted_by="bob"))
    assert (await db.handle(lambda uow: handlers.post_general_journal(uow, "WOJ-999999", DEMO))).result is None
    assert await balances(db) == {"130100": "300.00", "401100": "-1000.00", "618900": "700.00"}


async def test_without_four_eyes_the_requester_may_post_the_write_off(db):
    await journal_message(db, write_off_request("wo-1"))
    posted = await db.handle(lambda uow: handlers.post_general_journal(uow, "WOJ-000001", NO_FOUR_EYES, "ann"))
    assert posted.result.posted_by == "ann"


async def test_a_request_the_setup_cannot_book_is_answered_rejected_and_dead_lettered(db):
    handled = await journal_message(db, write_off_request("wo-name", journal_name="NoSuchJournal"))

    [rejected] = handled.on(GL_JOURNAL_EVENTS)
    assert rejected.json()["event_type"] == "JournalRejected"
    assert "unknown journal name 'NoSuchJournal'" in rejected.json()["reason"]
    [dead] = handled.on(dead_letter_topic(GL_GENERAL_JOURNALS))
    assert dead.reason == rejected.json()["reason"]
    assert await db.all(select(JournalRow)) == []


async def test_an_unbalanced_journal_opens_but_cannot_post(db):
    await journal_message(db, write_off_request("wo-unbal", debit="699.00"))
    with pytest.raises(domain.UnbalancedJournal, match="debits total 699.00, credits total 700.00"):
        await db.handle(lambda uow: handlers.post_general_journal(uow, "WOJ-000001", DEMO, "bob"))
    assert await balances(db) == {}


async def test_a_cancel_voids_an_open_journal_once_and_a_cancel_that_overtakes_its_request_voids_it_on_arrival(db):
    await journal_message(db, write_off_request("wo-1"))
    voided = await journal_message(db, cancel("wo-1"))
    again = await journal_message(db, cancel("wo-1"))
    early = await journal_message(db, cancel("wo-3", reason="overtaken"))
    late = await journal_message(db, write_off_request("wo-3"))

    assert events(voided) == [("JournalVoided", "wo-1")]
    assert (events(again), events(early)) == ([], [])
    assert events(late) == [("JournalCreated", "wo-3"), ("JournalVoided", "wo-3")]
    assert late.on(GL_JOURNAL_EVENTS)[1].json()["reason"] == "overtaken"
    with pytest.raises(domain.VoidedJournal):
        await db.handle(lambda uow: handlers.post_general_journal(uow, "WOJ-000001", DEMO, "bob"))


async def test_a_cancel_of_a_posted_journal_is_refused_and_it_stays_posted(db):
    await journal_message(db, write_off_request("wo-2"))
    await db.handle(lambda uow: handlers.post_general_journal(uow, "WOJ-000001", DEMO, "bob"))

    refused = await journal_message(db, cancel("wo-2"))

    [event] = refused.on(GL_JOURNAL_EVENTS)
    assert (event.key, event.json()["event_type"]) == ("WOJ-000001", "JournalCancelRefused")
    assert "already posted" in event.json()["reason"]
    [row] = await db.all(select(JournalRow))
    assert (row.status, sum(Decimal(v) for v in (await balances(db)).values())) == ("posted", 0)
