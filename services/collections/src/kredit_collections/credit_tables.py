"""The credit and collections management tables: credit groups and customers' credit settings,
collection letters, interest notes, collection activities, disputes, and their number sequences."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Column, Index, Text, func, text
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kredit_collections.credit_domain import Activity, CustomerCredit
from kredit_shared.database import ExactDecimal, insert_new, money_field, table_of, transaction_money_field
from kredit_shared.outbox import utcnow


def optional_money_field(**kwargs: Any) -> Any:
    return Field(default=None, sa_type=ExactDecimal(2), nullable=True, **kwargs)


# --- credit limits --------------------------------------------------------------------------


class CreditGroupRow(SQLModel, table=True):
    __tablename__ = "collections_credit_group"

    credit_group: str = Field(primary_key=True)
    credit_limit: Decimal = money_field()


class CustomerCreditRow(SQLModel, table=True):
    __tablename__ = "collections_customer_credit"

    customer_account: str = Field(primary_key=True)
    credit_limit: Decimal | None = optional_money_field()
    credit_group: str | None = Field(default=None, index=True)
    mandatory_credit_limit: bool = False
    unlimited_credit_limit: bool = False

    def to_domain(self) -> CustomerCredit:
        return CustomerCredit(
            self.customer_account,
            self.credit_limit,
            self.credit_group,
            self.mandatory_credit_limit,
            self.unlimited_credit_limit,
        )


async def customer_credit(session: AsyncSession, account: str) -> CustomerCredit:
    row = await session.get(CustomerCreditRow, account)
    return row.to_domain() if row is not None else CustomerCredit(account)


async def group_limits(session: AsyncSession) -> dict[str, Decimal]:
    return {row.credit_group: row.credit_limit for row in (await session.exec(select(CreditGroupRow))).all()}


async def all_customer_credit(session: AsyncSession) -> dict[str, CustomerCredit]:
    return {row.customer_account: row.to_domain() for row in (await session.exec(select(CustomerCreditRow))).all()}


async def group_members(session: AsyncSession, group: str) -> list[str]:
    query = select(CustomerCreditRow.customer_account).where(CustomerCreditRow.credit_group == group)
    return sorted((await session.exec(query)).all())


# --- number sequences -----------------------------------------------------------------------


class NumberSequenceRow(SQLModel, table=True):
    """The last number taken per sequence (collection letters, interest notes)."""

    __tablename__ = "collections_number_sequence"

    name: str = Field(primary_key=True)
    last: int = 0


async def next_numbers(session: AsyncSession, name: str, count: int) -> list[int]:
    """`count` new numbers of the sequence; the row stays locked until the transaction ends."""
    await insert_new(session, NumberSequenceRow, [{"name": name, "last": 0}])
    row = await session.get(NumberSequenceRow, name, with_for_update=True, populate_existing=True)
    assert row is not None
    first = row.last + 1
    row.last += count
    session.add(row)
    return list(range(first, first + count))


# --- collection letters ---------------------------------------------------------------------


class CollectionLetterRow(SQLModel, table=True):
    __tablename__ = "collections_collection_letter"

    letter_id: str = Field(primary_key=True)
    customer_account: str = Field(index=True)
    customer_name: str | None = None
    letter_date: date
    level: int  # index in the setup's sequence, 0 = first
    code: str
    currency: str = Field(max_length=3)
    total: Decimal = transaction_money_field()  # of the listed invoices' open balances, in `currency`
    fee: Decimal = money_field()
    fee_invoice_id: str | None = None  # the CollectionLetterFee posted for it (invoice id), if any
    document: str = Field(sa_column=Column(Text, nullable=False))  # the letter as sent (HTML)
    created_at: datetime = Field(default_factory=utcnow)


class CollectionLetterItemRow(SQLModel, table=True):
    """An invoice a letter lists. The unique (voucher, level) index makes "never the same level twice
    for the same invoice" hold also when two letter runs commit at the same moment."""

    __tablename__ = "collections_collection_letter_item"
    __table_args__ = (Index("ux_collections_letter_item_level", "voucher", "level", unique=True),)

    letter_id: str = Field(primary_key=True, foreign_key="collections_collection_letter.letter_id")
    voucher: str = Field(primary_key=True)
    customer_account: str = Field(index=True)
    level: int
    invoice_id: str | None = None
    due_date: date
    days_overdue: int
    balance: Decimal = transaction_money_field()
    currency: str = Field(max_length=3)


async def levels_sent(session: AsyncSession) -> dict[str, int]:
    """voucher -> the highest letter level it has had."""
    query = select(CollectionLetterItemRow.voucher, func.max(CollectionLetterItemRow.level)).group_by(
        CollectionLetterItemRow.voucher
    )
    return {voucher: level for voucher, level in (await session.exec(query)).all()}


async def letters_of(session: AsyncSession, account: str) -> list[CollectionLetterRow]:
    query = (
        select(CollectionLetterRow)
        .where(CollectionLetterRow.customer_account == account)
        .order_by(col(CollectionLetterRow.letter_date), col(CollectionLetterRow.letter_id))
    )
    return list((await session.exec(query)).all())


async def letter_items(session: AsyncSession, letter_ids: Iterable[str]) -> dict[str, list[CollectionLetterItemRow]]:
    items: dict[str, list[CollectionLetterItemRow]] = {}
    query = (
        select(CollectionLetterItemRow)
        .where(col(CollectionLetterItemRow.letter_id).in_(list(letter_ids)))
        .order_by(col(CollectionLetterItemRow.due_date), col(CollectionLetterItemRow.voucher))
    )
    for row in (await session.exec(query)).all():
        items.setdefault(row.letter_id, []).append(row)
    return items


# --- interest notes -------------------------------------------------------------------------


class InterestNoteRow(SQLModel, table=True):
    __tablename__ = "collections_interest_note"

    note_id: str = Field(primary_key=True)  # also the invoice id of the InterestNote it posts
    customer_account: str = Field(index=True)
    customer_name: str | None = None
    note_date: date
    interest_code: str
    currency: str = Field(max_length=3)
    total: Decimal = transaction_money_field()
    created_at: datetime = Field(default_factory=utcnow)


class InterestNoteLineRow(SQLModel, table=True):
    """An invoice's interest on a note; unique (voucher, to_date): a date is never charged twice."""

    __tablename__ = "collections_interest_note_line"
    __table_args__ = (Index("ux_collections_interest_line_to", "voucher", "to_date", unique=True),)

    note_id: str = Field(primary_key=True, foreign_key="collections_interest_note.note_id")
    voucher: str = Field(primary_key=True)
    customer_account: str = Field(index=True)
    invoice_id: str | None = None
    due_date: date
    from_date: date
    to_date: date
    days: int
    balance: Decimal = transaction_money_field()  # in the note's currency
    interest: Decimal = transaction_money_field()


async def charged_to(session: AsyncSession) -> dict[str, date]:
    """voucher -> the date interest has been charged up to."""
    query = select(InterestNoteLineRow.voucher, func.max(InterestNoteLineRow.to_date)).group_by(
        InterestNoteLineRow.voucher
    )
    return {voucher: to for voucher, to in (await session.exec(query)).all()}


async def interest_notes_of(session: AsyncSession, account: str) -> list[InterestNoteRow]:
    query = (
        select(InterestNoteRow)
        .where(InterestNoteRow.customer_account == account)
        .order_by(col(InterestNoteRow.note_date), col(InterestNoteRow.note_id))
    )
    return list((await session.exec(query)).all())


async def interest_lines(session: AsyncSession, note_ids: Iterable[str]) -> dict[str, list[InterestNoteLineRow]]:
    lines: dict[str, list[InterestNoteLineRow]] = {}
    query = (
        select(InterestNoteLineRow)
        .where(col(InterestNoteLineRow.note_id).in_(list(note_ids)))
        .order_by(col(InterestNoteLineRow.due_date), col(InterestNoteLineRow.voucher))
    )
    for row in (await session.exec(query)).all():
        lines.setdefault(row.note_id, []).append(row)
    return lines


# --- collection activities ------------------------------------------------------------------


class ActivityRow(SQLModel, table=True):
    __tablename__ = "collections_activity"

    activity_id: str = Field(primary_key=True)
    customer_account: str = Field(index=True)
    activity_type: str
    description: str = Field(sa_column=Column(Text, nullable=False))
    created_on: date
    follow_up_date: date | None = Field(default=None, index=True)
    owner: str | None = None
    promised_amount: Decimal | None = optional_money_field()
    promised_date: date | None = None
    closed: bool = False
    created_at: datetime = Field(default_factory=utcnow)

    def to_domain(self) -> Activity:
        return Activity(
            self.activity_id,
            self.customer_account,
            self.activity_type,
            self.description,
            self.created_on,
            self.follow_up_date,
            self.owner,
            self.promised_amount,
            self.promised_date,
            self.closed,
        )


async def activities(
    session: AsyncSession,
    *,
    customer_account: str | None = None,
    due_before: date | None = None,
    owner: str | None = None,
    include_closed: bool = False,
) -> list[ActivityRow]:
    """Activities by follow-up date (none last), then creation; `due_before`: follow-up before that date."""
    query = select(ActivityRow)
    if customer_account is not None:
        query = query.where(ActivityRow.customer_account == customer_account)
    if due_before is not None:
        query = query.where(col(ActivityRow.follow_up_date) < due_before)
    if owner is not None:
        query = query.where(ActivityRow.owner == owner)
    if not include_closed:
        query = query.where(ActivityRow.closed == False)  # noqa: E712 (SQL, not Python)
    query = query.order_by(
        col(ActivityRow.follow_up_date).is_(None), col(ActivityRow.follow_up_date), col(ActivityRow.created_at)
    )
    return list((await session.exec(query)).all())


# --- disputes -------------------------------------------------------------------------------


class DisputeRow(SQLModel, table=True):
    """A disputed invoice; one open dispute per transaction (a partial unique index)."""

    __tablename__ = "collections_dispute"
    __table_args__ = (
        Index(
            "ux_collections_dispute_open",
            "voucher",
            unique=True,
            sqlite_where=text("status = 'open'"),
            postgresql_where=text("status = 'open'"),
        ),
    )

    dispute_id: str = Field(primary_key=True)
    customer_account: str = Field(index=True)
    voucher: str
    invoice_id: str | None = None
    reason: str = Field(sa_column=Column(Text, nullable=False))
    status: str  # open, resolved
    opened_on: date
    resolved_on: date | None = None
    resolution: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


async def disputes(
    session: AsyncSession, customer_account: str | None = None, status: str | None = None
) -> list[DisputeRow]:
    query = select(DisputeRow).order_by(col(DisputeRow.created_at))
    if customer_account is not None:
        query = query.where(DisputeRow.customer_account == customer_account)
    if status is not None:
        query = query.where(DisputeRow.status == status)
    return list((await session.exec(query)).all())


async def disputed_vouchers(session: AsyncSession, customer_account: str | None = None) -> dict[str, str]:
    """voucher -> customer account, of the open disputes."""
    query = select(DisputeRow.voucher, DisputeRow.customer_account).where(DisputeRow.status == "open")
    if customer_account is not None:
        query = query.where(DisputeRow.customer_account == customer_account)
    return dict((await session.exec(query)).all())


TABLES = [
    table_of(CreditGroupRow),
    table_of(CustomerCreditRow),
    table_of(NumberSequenceRow),
    table_of(CollectionLetterRow),
    table_of(CollectionLetterItemRow),
    table_of(InterestNoteRow),
    table_of(InterestNoteLineRow),
    table_of(ActivityRow),
    table_of(DisputeRow),
]
