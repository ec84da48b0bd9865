"""Ledger-posting use cases: post subledger vouchers, open general journals, post or void them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kredit_ledger_posting import domain
from kredit_ledger_posting.tables import (
    JournalCancellationRow,
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
    GeneralJournalCancelRequested,
    GeneralJournalMessage,
    GeneralJournalRequested,
    JournalCancelRefused,
    JournalCreated,
    JournalRejected,
    JournalVoided,
    VoucherPosted,
)
from kredit_shared.database import insert_rows, table_of
from kredit_shared.exchange_rates import load_rates
from kredit_shared.outbox import utcnow
from kredit_shared.service import UnitOfWork


async def post_vouchers(uow: UnitOfWork, vouchers: list[VoucherPosted], setup: CompanySetup) -> None:
    """Post a fetch of subledger vouchers at once: one lookup for them all, two bulk inserts.

    A voucher that must not post goes to the dead-letter topic with its reason; the others post."""
    posted = dict(
        (
            await uow.session.exec(
                select(col(PostedVoucherRow.voucher), col(PostedVoucherRow.fingerprint)).where(
                    col(PostedVoucherRow.voucher).in_({v.voucher for v in vouchers})
                )
            )
        ).all()
    )
    new_vouchers: list[dict[str, Any]] = []
    entries: list[domain.LedgerEntry] = []
    for voucher in vouchers:
        try:
            if not domain.is_new_voucher(voucher, posted.get(voucher.voucher)):
                continue
            entries.extend(domain.entries_for_voucher(voucher, setup))
        except domain.InvalidVoucher as e:
            uow.reject(GL_JOURNAL_LINES, voucher, str(e))
            continue
        posted[voucher.voucher] = domain.voucher_fingerprint(voucher)  # a later copy in this batch is a no-op
        new_vouchers.append(
            {
                "voucher": voucher.voucher,
                "fingerprint": posted[voucher.voucher],
                "source": voucher.source,
                "posted_at": utcnow(),
            }
        )
    if new_vouchers:
        # The primary key turns a racing replica's duplicate into a failed commit and a retry.
        await insert_rows(uow.session, table_of(PostedVoucherRow), new_vouchers)
        await _insert_entries(uow.session, entries)


async def on_general_journal_message(uow: UnitOfWork, message: GeneralJournalMessage, setup: CompanySetup) -> None:
    if isinstance(message, GeneralJournalCancelRequested):
        await cancel_general_journal(uow, message)
    else:
        await open_general_journal(uow, message, setup)


async def open_general_journal(uow: UnitOfWork, request: GeneralJournalRequested, setup: CompanySetup) -> None:
    if await _journal_of_request(uow.session, request.request_id) is not None:
        return
    rates = await load_rates(uow.session, setup)  # for lines in a foreign currency that state no rate
    try:
        domain.check_journal_request(request, setup, rates)
    except domain.InvalidJournalRequest as e:
        # The requester is told (so a write-off shows "rejected") and operations see it on the DLQ.
        uow.emit(JournalRejected(request_id=request.request_id, journal_name=request.journal_name, reason=str(e)))
        uow.dead_letter(GL_GENERAL_JOURNALS, request, str(e))
        return
    batch = await _next_values(uow.session, request.journal_name, "batch", 1)
    first_voucher = await _next_values(uow.session, request.journal_name, "voucher", domain.voucher_count(request))
    journal = domain.open_journal(request, setup, batch, first_voucher, rates)
    row = JournalRow.from_domain(journal)
    uow.session.add(row)
    uow.emit(
        JournalCreated(
            request_id=request.request_id, journal_name=journal.journal_name, batch_number=journal.batch_number
        )
    )
    if (cancel := await uow.session.get(JournalCancellationRow, request.request_id)) is not None:
        _void(
            uow, row, domain.void_journal(journal), cancel.reason
        )  # the cancel overtook its request (never with one key, but be safe)


async def cancel_general_journal(uow: UnitOfWork, cancel: GeneralJournalCancelRequested) -> None:
    """Void the request's open journal (JournalVoided), or answer JournalCancelRefused if it is posted.

    The cancel is recorded first: if the request has not arrived yet, it is voided as it arrives."""
    if await uow.session.get(JournalCancellationRow, cancel.request_id) is None:
        uow.session.add(
            JournalCancellationRow(request_id=cancel.request_id, journal_name=cancel.journal_name, reason=cancel.reason)
        )
    row = await _journal_of_request(uow.session, cancel.request_id, for_update=True)
    if row is None or row.status == domain.JournalStatus.VOIDED:
        return  # not here yet, or a cancel sent twice
    try:
        voided = domain.void_journal(row.to_domain())
    except domain.JournalAlreadyPosted as e:
        uow.emit(
            JournalCancelRefused(
                request_id=cancel.request_id,
                journal_name=row.journal_name,
                batch_number=row.batch_number,
                reason=str(e),
            )
        )
        return
    _void(uow, row, voided, cancel.reason)


def _void(uow: UnitOfWork, row: JournalRow, voided: domain.Journal, reason: str) -> None:
    row.status = voided.status
    uow.session.add(row)
    uow.emit(
        JournalVoided(
            request_id=row.request_id, journal_name=row.journal_name, batch_number=row.batch_number, reason=reason
        )
    )


async def _journal_of_request(session: AsyncSession, request_id: str, for_update: bool = False) -> JournalRow | None:
    query = select(JournalRow).where(col(JournalRow.request_id) == request_id)
    # Locked like a posting (post_general_journal), so a cancel and a post of one journal take turns.
    return (await session.exec(query.with_for_update() if for_update else query)).first()


async def post_general_journal(
    uow: UnitOfWork, batch_number: str, setup: CompanySetup, posted_by: str | None = None
) -> JournalRow | None:
    """Post an open journal; None if there is no such batch, JournalNotPostable if it cannot post,
    FourEyesViolation if `posted_by` requested it (with the setup's four-eyes on)."""
    row = (
        await uow.session.exec(select(JournalRow).where(col(JournalRow.batch_number) == batch_number).with_for_update())
    ).first()
    if row is None:
        return None
    # Its foreign-currency lines carry the rate they were opened at; the rates only matter for a line without.
    journal, entries = domain.post_journal(row.to_domain(), setup, posted_by, await load_rates(uow.session, setup))
    await _insert_entries(uow.session, entries)
    row.status, row.posting_date, row.posted_at = journal.status, journal.posting_date, utcnow()
    row.posted_by = journal.posted_by
    uow.session.add(row)
    uow.emit(domain.journal_posted_event(journal))
    return row


async def trial_balance(session: AsyncSession, setup: CompanySetup, as_of: date) -> domain.TrialBalance:
    return domain.trial_balance_from_totals(await account_totals(session, as_of), setup, as_of)


async def _insert_entries(session: AsyncSession, entries: Sequence[domain.LedgerEntry]) -> None:
    # A Core executemany: ORM adds are ~10x slower on this hot path (docs/platform-notes.md).
    await insert_rows(session, table_of(LedgerEntryRow), [LedgerEntryRow.from_entry(e) for e in entries])


async def _next_values(session: AsyncSession, journal_name: str, kind: str, count: int) -> int:
    """Reserve `count` values of a journal name's sequence in the caller's transaction; returns the first."""
    row = (
        await session.exec(
            select(NumberSequenceRow)
            .where(col(NumberSequenceRow.journal_name) == journal_name, col(NumberSequenceRow.kind) == kind)
            .with_for_update()
        )
    ).first() or NumberSequenceRow(journal_name=journal_name, kind=kind)
    first = row.last_value + 1
    row.last_value += count
    session.add(row)
    return first
