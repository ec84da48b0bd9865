"""Credit and collections management use cases: credit limits and checks, collection letters, interest
notes, activities and disputes (load → credit_domain → save → emit).

Fees and interest become receivables the way every receivable does: collections publishes a
`CustomerInvoiceIssued` with `document_type` CollectionLetterFee or InterestNote (through the outbox,
in the same transaction as the letter or note), and invoicing posts it as a customer transaction with
its balanced voucher, which settlement then treats as an open debit and collections reads back."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from datetime import date
from decimal import Decimal

from sqlalchemy.exc import IntegrityError
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from kredit_collections import credit_tables as store
from kredit_collections import tables
from kredit_collections.credit_domain import (
    Activity,
    Conflict,
    CreditDecision,
    CreditManagementError,
    CustomerCredit,
    InterestNoteDue,
    LetterDue,
    NotFound,
    available_credit,
    check_credit,
    credit_balance,
    disputed_amounts,
    effective_credit_limit,
    interest_notes_due,
    is_over_credit_limit,
    letters_due,
    new_activity,
    promise_status,
)
from kredit_collections.documents import render_collection_letter
from kredit_collections.domain import INVOICE_TYPES, AgedBalance, TransactionBalance, transaction_balances
from kredit_collections.handlers import balances
from kredit_shared.company_setup import CompanySetup, InterestCode
from kredit_shared.contracts import CustomerInvoiceIssued, InvoiceLine, derived_message_id
from kredit_shared.money import ZERO
from kredit_shared.service import UnitOfWork

LETTER_SEQUENCE, INTEREST_SEQUENCE = "collection-letter", "interest-note"


# --- credit limits --------------------------------------------------------------------------


async def set_credit_group(uow: UnitOfWork, group: str, credit_limit: Decimal) -> store.CreditGroupRow:
    row = await uow.session.get(store.CreditGroupRow, group) or store.CreditGroupRow(credit_group=group)
    row.credit_limit = credit_limit
    uow.session.add(row)
    return row


async def credit_group(session: AsyncSession, setup: CompanySetup, group: str) -> tuple[Decimal, list[str], Decimal]:
    """The group's limit, its customers and their balance together."""
    if (row := await session.get(store.CreditGroupRow, group)) is None:
        raise NotFound(f"no credit group {group!r}")
    members = await store.group_members(session, group)
    return row.credit_limit, members, await _balance_of(session, setup, members)


async def set_customer_credit(uow: UnitOfWork, account: str, changes: dict) -> CustomerCredit:
    """Change the fields given (a field left out keeps its value; null clears a limit or group)."""
    row = await uow.session.get(store.CustomerCreditRow, account) or store.CustomerCreditRow(customer_account=account)
    group = changes.get("credit_group", row.credit_group)
    if group is not None and await uow.session.get(store.CreditGroupRow, group) is None:
        raise CreditManagementError(f"unknown credit group {group!r}: create it with PUT /api/v1/credit-groups/{group}")
    for field, value in changes.items():
        setattr(row, field, value)
    uow.session.add(row)
    return row.to_domain()


@dataclass(frozen=True)
class CreditStatus:
    credit: CustomerCredit
    group_limit: Decimal | None
    effective_credit_limit: Decimal | None
    balance: Decimal
    available_credit: Decimal | None


async def customer_credit_status(session: AsyncSession, setup: CompanySetup, account: str) -> CreditStatus:
    credit = await store.customer_credit(session, account)
    group_limit = await _group_limit(session, credit)
    limit = effective_credit_limit(credit, group_limit)
    balance = await _balance_of(session, setup, [account])
    return CreditStatus(credit, group_limit, limit, balance, available_credit(balance, limit))


async def credit_check(
    session: AsyncSession, setup: CompanySetup, account: str, amount: Decimal, open_orders: Decimal
) -> CreditDecision:
    credit = await store.customer_credit(session, account)
    group_limit = await _group_limit(session, credit)
    group_balance = None
    if credit.credit_group is not None and group_limit is not None:
        group_balance = await _balance_of(session, setup, await store.group_members(session, credit.credit_group))
    return check_credit(
        credit,
        group_limit,
        await _balance_of(session, setup, [account]),
        amount,
        open_orders=open_orders,
        group_balance=group_balance,
    )


async def _group_limit(session: AsyncSession, credit: CustomerCredit) -> Decimal | None:
    if credit.credit_group is None:
        return None
    row = await session.get(store.CreditGroupRow, credit.credit_group)
    return row.credit_limit if row is not None else None


async def _balance_of(session: AsyncSession, setup: CompanySetup, accounts: list[str]) -> Decimal:
    """What the customers owe now, in the accounting currency (limits are in it)."""
    total = ZERO
    for account in accounts:
        total += credit_balance(await balances(session, account), setup.accounting_currency)
    return total


async def aging_flags(
    session: AsyncSession, setup: CompanySetup, rows: list[AgedBalance], as_of: date
) -> tuple[set[str], dict[tuple[str, str], Decimal]]:
    """What the aged balances add to each row: the customers over their credit limit, and the open
    amount of disputed invoices per (customer, currency)."""
    return await over_credit_limit(session, setup, rows), await disputed_in_aging(
        session, as_of, setup.accounting_currency
    )


async def over_credit_limit(session: AsyncSession, setup: CompanySetup, rows: list[AgedBalance]) -> set[str]:
    """The customers among aged-balance rows whose balance (accounting currency) is over their limit."""
    credits, limits = await store.all_customer_credit(session), await store.group_limits(session)
    over = set()
    for row in rows:
        if row.currency != setup.accounting_currency or (credit := credits.get(row.customer_account)) is None:
            continue
        limit = effective_credit_limit(credit, limits.get(credit.credit_group or ""))
        if is_over_credit_limit(row.balance, limit):
            over.add(row.customer_account)
    return over


async def disputed_in_aging(
    session: AsyncSession, as_of: date, accounting_currency: str | None = None
) -> dict[tuple[str, str], Decimal]:
    """(customer, currency) -> open balance of the customer's disputed invoices as of `as_of` (foreign ones
    in the accounting currency, as the aged balances show them)."""
    disputed = await store.disputed_vouchers(session)
    amounts: dict[tuple[str, str], Decimal] = {}
    for account in sorted(set(disputed.values())):
        rows = transaction_balances(*await tables.load_read_model(session, account, as_of=as_of), as_of)
        amounts |= disputed_amounts(rows, disputed, accounting_currency)
    return amounts


# --- collection letters ---------------------------------------------------------------------


async def _excluded(session: AsyncSession) -> set[str]:
    """Vouchers left out of letters and interest: disputed, or in a write-off not yet settled."""
    claimed = select(tables.WriteOffVoucherRow.voucher).where(tables.WriteOffVoucherRow.claimed)
    return set(await store.disputed_vouchers(session)) | set((await session.exec(claimed)).all())


async def _balances_as_of(session: AsyncSession, as_of: date) -> list[TransactionBalance]:
    return transaction_balances(*await tables.load_read_model(session, as_of=as_of), as_of)


async def run_collection_letters(uow: UnitOfWork, setup: CompanySetup, as_of: date) -> list[str]:
    """Create the letters due as of `as_of` (none twice: see letters_due); returns their ids."""
    if (letters := setup.collection_letters) is None:
        raise CreditManagementError("the company setup has no collection letter sequence (collection_letters)")
    session = uow.session
    await store.next_numbers(session, LETTER_SEQUENCE, 0)  # lock first: two runs take turns, the second sees the first
    due = letters_due(
        await _balances_as_of(session, as_of),
        as_of,
        letters.sequence,
        await store.levels_sent(session),
        await _excluded(session),
    )
    numbers = await store.next_numbers(session, LETTER_SEQUENCE, len(due))
    try:
        return [
            await _add_letter(uow, setup, letter, f"CL-{number:06d}", as_of) for letter, number in zip(due, numbers)
        ]
    except IntegrityError:
        raise Conflict("another collection letter run wrote letters at the same moment: run it again") from None


async def _add_letter(uow: UnitOfWork, setup: CompanySetup, letter: LetterDue, letter_id: str, as_of: date) -> str:
    assert setup.collection_letters is not None
    currency = letter.items[0].currency
    row = store.CollectionLetterRow(
        letter_id=letter_id,
        customer_account=letter.customer_account,
        customer_name=letter.customer_name,
        letter_date=as_of,
        level=letter.level,
        code=letter.code,
        currency=currency,
        total=letter.total,
        fee=letter.fee,
        fee_invoice_id=letter_id if letter.fee else None,
        document="",
    )
    row.document = render_collection_letter(
        company=setup.company, letter=row, items=list(letter.items), text=letter.text
    )
    uow.session.add(row)
    await uow.session.flush()  # the letter before its items (their foreign key)
    uow.session.add_all(
        store.CollectionLetterItemRow(
            letter_id=letter_id,
            voucher=i.voucher,
            customer_account=letter.customer_account,
            level=letter.level,
            invoice_id=i.invoice_id,
            due_date=i.due_date,
            days_overdue=i.days_overdue,
            balance=i.balance,
            currency=i.currency,
        )
        for i in letter.items
    )
    if letter.fee:
        uow.emit(
            _receivable(
                setup,
                letter_id,
                letter.customer_account,
                letter.customer_name,
                as_of,
                "CollectionLetterFee",
                f"Collection letter fee, {letter.code} letter {letter_id}",
                letter.fee,
                setup.accounting_currency,
                setup.collection_letters.fee_account,
            )
        )
    await uow.session.flush()
    return letter_id


def _receivable(
    setup: CompanySetup,
    invoice_id: str,
    account: str,
    name: str | None,
    on: date,
    document_type: str,
    text: str,
    amount: Decimal,
    currency: str,
    revenue_account: str,
) -> CustomerInvoiceIssued:
    """A fee or an interest note as an invoice message: due at once, no cash discount.

    Its message id derives from the document's id, so the message is the same however often it is built."""
    return CustomerInvoiceIssued(
        message_id=derived_message_id(uuid.NAMESPACE_URL, f"kredit-collections/{setup.company}/{invoice_id}"),
        invoice_id=invoice_id,
        customer_account=account,
        customer_name=name,
        invoice_date=on,
        due_date=on,
        currency=currency,
        document_type=document_type,
        lines=[InvoiceLine(description=text, amount=amount, revenue_account=revenue_account)],
    )


async def letters(session: AsyncSession, account: str) -> list[tuple[store.CollectionLetterRow, list]]:
    rows = await store.letters_of(session, account)
    items = await store.letter_items(session, [r.letter_id for r in rows])
    return [(r, items.get(r.letter_id, [])) for r in rows]


async def letter(session: AsyncSession, letter_id: str) -> tuple[store.CollectionLetterRow, list]:
    if (row := await session.get(store.CollectionLetterRow, letter_id)) is None:
        raise NotFound(f"no collection letter {letter_id!r}")
    return row, (await store.letter_items(session, [letter_id])).get(letter_id, [])


# --- interest notes -------------------------------------------------------------------------


def interest_code(setup: CompanySetup, code: str | None) -> tuple[str, InterestCode]:
    if setup.interest is None:
        raise CreditManagementError("the company setup has no interest codes (interest)")
    name = code or setup.interest.default_code
    if name not in setup.interest.codes:
        raise CreditManagementError(f"unknown interest code {name!r} (known: {', '.join(setup.interest.codes)})")
    return name, setup.interest.codes[name]


async def run_interest_notes(
    uow: UnitOfWork, setup: CompanySetup, as_of: date, code: str | None = None, customer_account: str | None = None
) -> list[str]:
    """Create the interest notes due as of `as_of` (one per customer; interest up to a date only once)."""
    name, rule = interest_code(setup, code)
    session = uow.session
    await store.next_numbers(
        session, INTEREST_SEQUENCE, 0
    )  # lock first: two runs take turns, the second sees the first
    if customer_account is None:
        rows = await _balances_as_of(session, as_of)
    else:
        rows = transaction_balances(*await tables.load_read_model(session, customer_account, as_of=as_of), as_of)
    due = interest_notes_due(rows, as_of, rule, await store.charged_to(session), await _excluded(session))
    try:
        return [
            await _add_interest_note(uow, setup, name, note, f"IN-{number:06d}", as_of)
            for note, number in zip(due, await store.next_numbers(session, INTEREST_SEQUENCE, len(due)))
        ]
    except IntegrityError:
        raise Conflict("another interest note run charged the same invoices at the same moment: run it again") from None


async def _add_interest_note(
    uow: UnitOfWork, setup: CompanySetup, name: str, note: InterestNoteDue, note_id: str, as_of: date
) -> str:
    assert setup.interest is not None
    session = uow.session
    session.add(
        store.InterestNoteRow(
            note_id=note_id,
            customer_account=note.customer_account,
            customer_name=note.customer_name,
            note_date=as_of,
            interest_code=name,
            currency=note.currency,
            total=note.total,
        )
    )
    await session.flush()  # the note before its lines (their foreign key)
    session.add_all(
        store.InterestNoteLineRow(
            note_id=note_id,
            voucher=line.item.voucher,
            customer_account=note.customer_account,
            invoice_id=line.item.invoice_id,
            due_date=line.item.due_date,
            from_date=line.from_date,
            to_date=line.to_date,
            days=line.days,
            balance=line.item.balance,
            interest=line.interest,
        )
        for line in note.lines
    )
    uow.emit(
        _receivable(
            setup,
            note_id,
            note.customer_account,
            note.customer_name,
            as_of,
            "InterestNote",
            f"Interest note {note_id} ({name}) to {as_of}",
            note.total,
            note.currency,
            setup.interest.income_account,
        )
    )
    await session.flush()
    return note_id


async def interest_notes(session: AsyncSession, account: str) -> list[tuple[store.InterestNoteRow, list]]:
    rows = await store.interest_notes_of(session, account)
    lines = await store.interest_lines(session, [r.note_id for r in rows])
    return [(r, lines.get(r.note_id, [])) for r in rows]


async def interest_note(session: AsyncSession, note_id: str) -> tuple[store.InterestNoteRow, list]:
    if (row := await session.get(store.InterestNoteRow, note_id)) is None:
        raise NotFound(f"no interest note {note_id!r}")
    return row, (await store.interest_lines(session, [note_id])).get(note_id, [])


# --- collection activities ------------------------------------------------------------------


async def add_activity(uow: UnitOfWork, customer_account: str, today: date, **fields) -> Activity:
    activity = new_activity(str(uuid.uuid4()), customer_account, created_on=today, **fields)
    uow.session.add(store.ActivityRow(**asdict(activity)))
    return activity


async def close_activity(uow: UnitOfWork, activity_id: str) -> Activity:
    if (row := await uow.session.get(store.ActivityRow, activity_id)) is None:
        raise NotFound(f"no activity {activity_id!r}")
    row.closed = True
    uow.session.add(row)
    return row.to_domain()


async def activities(session: AsyncSession, today: date, **filters) -> list[tuple[Activity, str | None]]:
    """Activities with their promise status (kept, broken, open; None for other activities)."""
    rows = [row.to_domain() for row in await store.activities(session, **filters)]
    payments: dict[str, list] = {}
    for account in sorted({a.customer_account for a in rows if a.activity_type == "PromiseToPay"}):
        payments[account], _ = await tables.load_read_model(session, account)
    return [(a, promise_status(a, payments.get(a.customer_account, []), today)) for a in rows]


# --- disputes -------------------------------------------------------------------------------


async def open_dispute(
    uow: UnitOfWork, customer_account: str, reason: str, today: date, *, invoice_id: str | None, voucher: str | None
) -> store.DisputeRow:
    """Dispute an open invoice of the customer (named by invoice id or voucher)."""
    if (invoice_id is None) == (voucher is None):
        raise CreditManagementError("name the disputed invoice by invoice_id or by voucher (one of the two)")
    rows = await balances(uow.session, customer_account)
    match = [
        b
        for b in rows
        if b.transaction.transaction_type in INVOICE_TYPES
        and (b.voucher == voucher if voucher is not None else b.transaction.invoice_id == invoice_id)
    ]
    if not match:
        raise NotFound(f"customer {customer_account} has no invoice {invoice_id or voucher!r}")
    target = match[0]
    if not target.is_open:
        raise CreditManagementError(f"invoice {invoice_id or voucher} is settled: nothing left to dispute")
    if target.voucher in await store.disputed_vouchers(uow.session, customer_account):
        raise Conflict(f"invoice {invoice_id or voucher} is already disputed")
    row = store.DisputeRow(
        dispute_id=str(uuid.uuid4()),
        customer_account=customer_account,
        voucher=target.voucher,
        invoice_id=target.transaction.invoice_id,
        reason=reason,
        status="open",
        opened_on=today,
    )
    uow.session.add(row)
    try:
        await uow.session.flush()
    except IntegrityError:
        raise Conflict(f"invoice {invoice_id or voucher} was disputed at the same moment") from None
    return row


async def resolve_dispute(uow: UnitOfWork, dispute_id: str, resolution: str | None, today: date) -> store.DisputeRow:
    if (row := await uow.session.get(store.DisputeRow, dispute_id, with_for_update=True)) is None:
        raise NotFound(f"no dispute {dispute_id!r}")
    if row.status == "open":
        row.status, row.resolved_on, row.resolution = "resolved", today, resolution
        uow.session.add(row)
    return row
