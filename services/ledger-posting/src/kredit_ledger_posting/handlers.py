"""Ledger-posting use cases: post subledger vouchers, open general journals, post them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from sqlalchemy import insert, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kredit_ledger_posting import domain
from kredit_ledger_posting.tables import (
    JournalRow,
    LedgerEntryRow,
    NumberSequenceRow,
    PostedVoucherRow,
    account_totals,
)
from kredit_shared.company_setup import CompanySetup
from kredit_shared.contracts import (
    GL_GENERAL_JOURNALS,
    GL_JOURNAL_LINES,
    GeneralJournalRequested,
    JournalCreated,
    JournalRejected,
    VoucherPosted,
)
from kredit_shared.outbox import utcnow
from kredit_shared.service import Transaction


async def post_vouchers(tx: Transaction, vouchers: list[VoucherPosted], setup: CompanySetup) -> None:
    """Post a fetch of subledger vouchers at once: one lookup for them all, two bulk inserts.

    A voucher that must not post goes to the dead-letter topic with its reason; the others post."""
    posted = dict((await tx.session.exec(
        select(PostedVoucherRow.voucher, PostedVoucherRow.fingerprint)
        .where(PostedVoucherRow.voucher.in_({v.voucher for v in vouchers}))
    )).all())
    new_vouchers, entries = [], []
    for voucher in vouchers:
        try:
            if not domain.is_new_voucher(voucher, posted.get(voucher.voucher)):
                continue
            entries.extend(domain.entries_for_voucher(voucher, setup))
        except domain.InvalidVoucher as e:
            tx.dead_letter(GL_JOURNAL_LINES, voucher, str(e))
            continue
        posted[voucher.voucher] = domain.voucher_fingerprint(voucher)  # a later copy in this batch is a no-op
        new_vouchers.append({"voucher": voucher.voucher, "fingerprint": posted[voucher.voucher],
                             "source": voucher.source, "posted_at": utcnow()})
    if new_vouchers:
        # The primary key turns a racing replica's duplicate into a failed commit and a retry.
        connection = await tx.session.connection()
        await connection.execute(insert(PostedVoucherRow), new_vouchers)
        await _insert_entries(tx.session, entries)


async def open_general_journal(tx: Transaction, request: GeneralJournalRequested, setup: CompanySetup) -> None:
    existing = await tx.session.exec(select(JournalRow.batch_number).where(JournalRow.request_id == request.request_id))
    if existing.first() is not None:
        return
    try:
        domain.check_journal_request(request, setup)
    except domain.InvalidJournalRequest as e:
        # The requester is told (so a write-off shows "rejected") and operations see it on the DLQ.
        tx.emit(JournalRejected(request_id=request.request_id, journal_name=request.journal_name, reason=str(e)))
        tx.dead_letter(GL_GENERAL_JOURNALS, request, str(e))
        return
    batch = await _next_values(tx.session, request.journal_name, "batch", 1)
    first_voucher = await _next_values(tx.session, request.journal_name, "voucher", domain.voucher_count(request))
    journal = domain.open_journal(request, setup, batch, first_voucher)
    tx.session.add(JournalRow.from_domain(journal))
    tx.emit(JournalCreated(request_id=request.request_id, journal_name=journal.journal_name,
                           batch_number=journal.batch_number))


async def post_general_journal(tx: Transaction, batch_number: str, setup: CompanySetup) -> JournalRow | None:
    """Post an open journal; None if there is no such batch, JournalNotPostable if it cannot post."""
    row = (
        await tx.session.exec(select(JournalRow).where(JournalRow.batch_number == batch_number).with_for_update())
    ).scalars().first()
    if row is None:
        return None
    journal, entries = domain.post_journal(row.to_domain(), setup)
    await _insert_entries(tx.session, entries)
    row.status, row.posting_date, row.posted_at = journal.status, journal.posting_date, utcnow()
    tx.session.add(row)
    tx.emit(domain.journal_posted_event(journal))
    return row


async def trial_balance(session: AsyncSession, setup: CompanySetup, as_of: date) -> domain.TrialBalance:
    return domain.trial_balance_from_totals(await account_totals(session, as_of), setup, as_of)


async def _insert_entries(session: AsyncSession, entries: Sequence[domain.LedgerEntry]) -> None:
    # A Core executemany: ORM adds are ~10x slower on this hot path (PLATFORM-NOTES.md).
    await (await session.connection()).execute(insert(LedgerEntryRow), [LedgerEntryRow.from_entry(e) for e in entries])


async def _next_values(session: AsyncSession, journal_name: str, kind: str, count: int) -> int:
    """Reserve `count` values of a journal name's sequence in the caller's transaction; returns the first."""
    row = (
        await session.exec(
            select(NumberSequenceRow)
            .where(NumberSequenceRow.journal_name == journal_name, NumberSequenceRow.kind == kind)
            .with_for_update()
        )
    ).scalars().first() or NumberSequenceRow(journal_name=journal_name, kind=kind)
    first = row.last_value + 1
    row.last_value += count
    session.add(row)
    return first

