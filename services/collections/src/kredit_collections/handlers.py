"""Collections use cases: one async function per message, command or query (load → domain → save → emit)."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import date

from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from kredit_collections import tables
from kredit_collections.domain import (
    AgedBalance,
    CustomerTransaction,
    NoWriteOffRate,
    TransactionBalance,
    UnknownCustomer,
    WriteOffConflict,
    WriteOffExchange,
    WriteOffSettings,
    age_balances,
    aged_balance,
    aging_cutoffs,
    build_write_off_journal,
    open_invoices,
    posted_journal_differences,
    select_for_write_off,
    settlement_deltas,
    transaction_balances,
    write_off_exchange,
)
from kredit_shared.company_setup import CompanySetup, WriteOffParameters
from kredit_shared.contracts import (
    GL_JOURNAL_EVENTS,
    CustomerTransactionPosted,
    GeneralJournalCancelRequested,
    JournalEvent,
    JournalPosted,
    OpenItemsSettled,
)
from kredit_shared.currencies import NoExchangeRate
from kredit_shared.exchange_rates import load_rates
from kredit_shared.service import UnitOfWork

# --- messages --------------------------------------------------------------------------------


async def record_customer_transactions(uow: UnitOfWork, events: list[CustomerTransactionPosted]) -> None:
    # A voucher is posted once; the same voucher again (a producer's re-post) is ignored.
    await tables.add_transactions(uow.session, [CustomerTransaction.from_event(e) for e in events])


async def record_settlements(uow: UnitOfWork, events: list[OpenItemsSettled]) -> None:
    await tables.add_settlement_deltas(uow.session, [d for event in events for d in settlement_deltas(event)])


async def record_journal_events(uow: UnitOfWork, events: list[JournalEvent]) -> None:
    """Move the write-off requests the journal events are about, in event order; other journals are not ours."""
    requests = await tables.lock_write_offs(uow.session, [e.request_id for e in events if e.request_id])
    for event in events:
        request = requests.get(event.request_id or "")
        if isinstance(event, JournalPosted) and (problem := _not_as_requested(event, request)):
            # Defence in depth (issue 14): only collections requests journals that move customer balances,
            # so a posting it cannot match to its request is reported, never applied.
            uow.reject(GL_JOURNAL_EVENTS, event, f"journal {event.batch_number} was posted, but {problem}")
            continue
        if request is None:
            continue  # a journal that is not one of our write-offs
        if isinstance(event, JournalPosted) and event.posted_by and request.posted_by is None:
            request.posted_by = event.posted_by
        await tables.save_progress(uow.session, request, request.progress.after(event))


def _not_as_requested(event: JournalPosted, request: tables.WriteOffRequestRow | None) -> str | None:
    if request is None:
        if any(line.account_type == "Customer" for line in event.lines):
            return f"collections never requested it (request id {event.request_id}) and it moves customer balances"
        return None
    if differences := posted_journal_differences(request.journal_lines, event.lines):
        return f"its lines differ from write-off {request.id}'s journal: " + "; ".join(differences)
    return None


# --- commands --------------------------------------------------------------------------------


async def request_write_off(
    uow: UnitOfWork,
    setup: CompanySetup,
    customer_account: str,
    *,
    vouchers: Sequence[str] | None = None,
    invoice_id: str | None = None,
    reason_code: str | None = None,
    reason_comment: str | None = None,
    on: date | None = None,
    requested_by: str | None = None,
) -> str:
    """Propose the write-off journal to ledger-posting; returns the write-off id (the request id).
    `requested_by` (the caller's token subject) travels with the journal request (four-eyes)."""
    settings = WriteOffSettings.from_setup(setup, await write_off_parameters(uow.session, setup))
    on = on or date.today()
    items = select_for_write_off(
        customer_account,
        await balances(uow.session, customer_account),
        vouchers=vouchers,
        invoice_id=invoice_id,
        pending_vouchers=await tables.claimed_vouchers(uow.session, customer_account),
    )
    request_id = str(uuid.uuid4())
    try:
        journal = build_write_off_journal(
            items,
            settings,
            request_id=request_id,
            transaction_date=on,
            reason_code=reason_code,
            reason_comment=reason_comment,
            exchange=await _write_off_exchange(uow.session, setup, customer_account, items, on),
        ).model_copy(update={"requested_by": requested_by})
    except NoWriteOffRate as e:
        # Not the caller's mistake but the setup's: the request is kept, rejected with the reason (its status).
        tables.add_rejected_write_off(
            uow.session, request_id, settings.journal_name, customer_account, items, on, str(e), requested_by
        )
        return request_id
    tables.add_write_off(uow.session, journal, customer_account, items)
    try:
        await uow.session.flush()
    except IntegrityError:
        raise WriteOffConflict("another write-off of the same vouchers was requested at the same time") from None
    uow.emit(journal)
    return journal.request_id


async def _write_off_exchange(
    session: AsyncSession, setup: CompanySetup, customer_account: str, items: Sequence[TransactionBalance], on: date
) -> WriteOffExchange | None:
    """How a write-off of `items` is booked: None in the accounting currency, else at the rate of their
    currency on the write-off date (docs/currencies.md), or NoWriteOffRate."""
    currency = items[0].transaction.currency
    if currency == setup.accounting_currency:
        return None
    rates = await load_rates(session, setup)
    try:
        rate = rates.resolve(currency, on, None, document=f"the write-off of customer {customer_account}")
    except NoExchangeRate as e:
        raise NoWriteOffRate(str(e)) from None
    return write_off_exchange(setup, currency, rate, on)


async def cancel_write_off(uow: UnitOfWork, write_off_id: str, reason: str | None) -> tables.WriteOffRequestRow | None:
    """Ask ledger-posting to void the write-off's journal; None if there is no such write-off.

    Its vouchers stay claimed until the JournalVoided comes back: the journal may be posted first."""
    if (request := await tables.lock_write_off(uow.session, write_off_id)) is None:
        return None
    progress = request.progress.cancel(reason)
    if progress != request.progress:
        await tables.save_progress(uow.session, request, progress)
        uow.emit(
            GeneralJournalCancelRequested(
                message_type="GeneralJournalCancelRequested",
                request_id=request.id,
                journal_name=request.journal_name,
                reason=reason or "",
            )
        )
    return request


async def change_write_off_parameters(
    uow: UnitOfWork, setup: CompanySetup, parameters: WriteOffParameters
) -> WriteOffParameters:
    WriteOffSettings.from_setup(setup, parameters)  # refuses a journal name or reason code the setup lacks
    row = await tables.load_write_off_parameters(uow.session, setup.write_off)
    row.journal_name, row.reason_code, row.separate_sales_tax = (
        parameters.journal_name,
        parameters.reason_code,
        parameters.separate_sales_tax,
    )
    uow.session.add(row)
    return parameters


# --- queries ---------------------------------------------------------------------------------


async def write_off_parameters(session: AsyncSession, setup: CompanySetup) -> WriteOffParameters:
    return (await tables.load_write_off_parameters(session, setup.write_off)).to_setup()


async def balances(session: AsyncSession, customer_account: str | None = None) -> list[TransactionBalance]:
    return transaction_balances(*await tables.load_read_model(session, customer_account))


async def customer_transactions(session: AsyncSession, customer_account: str) -> list[TransactionBalance]:
    if not (rows := await balances(session, customer_account)):
        raise UnknownCustomer(f"customer {customer_account!r} has no transactions")
    return rows


async def aged_balances(
    session: AsyncSession, setup: CompanySetup, as_of: date, customers: Collection[str] | None = None
) -> list[AgedBalance]:
    """Every customer's aged balances (or those of `customers`), in (account, currency) order: the database
    adds them up (tables.aged_sums, the set-based form of domain.age_balances), so only the sums are read."""
    buckets = setup.aging_buckets
    found = await tables.aged_sums(
        session, as_of, aging_cutoffs(as_of, buckets), len(buckets), setup.accounting_currency, customers
    )
    rows = [
        aged_balance(s.customer_account, s.customer_name, s.currency, dict(zip([b.label for b in buckets], s.buckets)))
        for s in found
    ]
    return sorted(rows, key=lambda r: (r.customer_account, r.currency))  # as age_balances: code point order


async def aged_balances_page(
    session: AsyncSession, setup: CompanySetup, as_of: date, limit: int, after: str | None = None
) -> tuple[list[AgedBalance], str | None]:
    """The aged balances of the next `limit` customers with something open after the account `after`,
    and the cursor of the page after it (None on the last page). Only those customers' sums are computed,
    so a page costs the same however large the read model is."""
    rows: list[AgedBalance] = []
    while True:
        wanted = limit - len({r.customer_account for r in rows})
        customers = await tables.customers_after(session, after, wanted + 1)  # one more: is there a next page?
        chunk = customers[:wanted]
        if chunk:
            rows += await aged_balances(session, setup, as_of, chunk)
            after = chunk[-1]
        if len(customers) <= wanted:
            return rows, None  # no customer after this page
        if len({r.customer_account for r in rows}) >= limit:
            return rows, after


async def customer_aged_balances(
    session: AsyncSession, setup: CompanySetup, customer_account: str, as_of: date
) -> list[AgedBalance]:
    model = await tables.load_read_model(session, customer_account, as_of=as_of)
    return age_balances(*model, as_of, setup.aging_buckets, setup.accounting_currency)


async def open_customer_invoices(session: AsyncSession, customer_account: str | None) -> list[TransactionBalance]:
    return open_invoices(await balances(session, customer_account))


async def write_off_requests(
    session: AsyncSession, customer_account: str | None = None
) -> list[tables.WriteOffRequestRow]:
    return await tables.write_off_requests(session, customer_account)


async def claimed_by(session: AsyncSession, customer_account: str) -> dict[str, str]:
    return await tables.claimed_by(session, customer_account)


async def write_off_request(session: AsyncSession, write_off_id: str) -> tables.WriteOffRequestRow | None:
    return await session.get(tables.WriteOffRequestRow, write_off_id)
