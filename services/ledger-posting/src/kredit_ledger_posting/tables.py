"""Ledger-posting tables: posted ledger entries, posted subledger vouchers, general journals, number sequences."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy
from sqlalchemy import JSON, BigInteger, Column, UniqueConstraint, func, type_coerce
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kredit_ledger_posting.domain import Journal, JournalStatus, LedgerEntry
from kredit_shared.contracts import PostedJournalLine
from kredit_shared.database import money_field, optional_transaction_money_field, table_of
from kredit_shared.outbox import utcnow


class LedgerEntryRow(SQLModel, table=True):
    __tablename__ = "ledger_entry"

    id: int | None = Field(default=None, primary_key=True)
    voucher: str = Field(index=True)
    account: str = Field(index=True)
    debit: Decimal = money_field(default=Decimal("0.00"))
    credit: Decimal = money_field(default=Decimal("0.00"))
    currency: str
    posting_date: date = Field(index=True)
    text: str = ""
    source: str = ""
    customer_account: str | None = None
    # What the entry books in a foreign currency (signed, debit positive); None in the accounting currency,
    # which `currency`, `debit` and `credit` are always in.
    transaction_currency: str | None = None
    transaction_currency_amount: Decimal | None = optional_transaction_money_field()

    @classmethod
    def from_entry(cls, entry: LedgerEntry) -> dict[str, Any]:
        """A row as a dict, for a Core bulk insert (ORM adds are ~10x slower on this hot path)."""
        return {
            "voucher": entry.voucher,
            "account": entry.account,
            "debit": entry.debit,
            "credit": entry.credit,
            "currency": entry.currency,
            "posting_date": entry.posting_date,
            "text": entry.text,
            "source": entry.source,
            "customer_account": entry.customer_account,
            "transaction_currency": entry.transaction_currency,
            "transaction_currency_amount": entry.transaction_currency_amount,
        }


class PostedVoucherRow(SQLModel, table=True):
    """Subledger vouchers already posted, with a fingerprint to tell a redelivery from a conflict."""

    __tablename__ = "ledger_posted_voucher"

    voucher: str = Field(primary_key=True)
    fingerprint: str
    source: str = ""
    posted_at: datetime = Field(default_factory=utcnow)


class JournalRow(SQLModel, table=True):
    __tablename__ = "ledger_journal"

    batch_number: str = Field(primary_key=True)
    journal_name: str = Field(index=True)
    description: str = ""
    request_id: str | None = Field(default=None, unique=True)
    status: str = Field(default=JournalStatus.OPEN, index=True)
    posting_date: date | None = None
    created_at: datetime = Field(default_factory=utcnow)
    posted_at: datetime | None = None
    lines: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    requested_by: str | None = None  # token subjects (kredit_shared.auth)
    posted_by: str | None = None

    def to_domain(self) -> Journal:
        return Journal(
            batch_number=self.batch_number,
            journal_name=self.journal_name,
            description=self.description,
            lines=tuple(PostedJournalLine.model_validate(line) for line in self.lines),
            request_id=self.request_id,
            status=JournalStatus(self.status),
            posting_date=self.posting_date,
            requested_by=self.requested_by,
            posted_by=self.posted_by,
        )

    @classmethod
    def from_domain(cls, journal: Journal) -> JournalRow:
        return cls(
            batch_number=journal.batch_number,
            journal_name=journal.journal_name,
            description=journal.description,
            request_id=journal.request_id,
            status=journal.status,
            posting_date=journal.posting_date,
            lines=[line.model_dump(mode="json") for line in journal.lines],
            requested_by=journal.requested_by,
            posted_by=journal.posted_by,
        )


class JournalCancellationRow(SQLModel, table=True):
    """A requester's cancel of a journal request, with its reason (the audit of a voided journal).

    Kept also when the cancel overtakes its request: the request is then voided as it arrives."""

    __tablename__ = "ledger_journal_cancellation"

    request_id: str = Field(primary_key=True)
    journal_name: str
    reason: str = ""
    received_at: datetime = Field(default_factory=utcnow)


class NumberSequenceRow(SQLModel, table=True):
    """The last value handed out by each journal name's batch and voucher sequences."""

    __tablename__ = "ledger_number_sequence"
    __table_args__ = (UniqueConstraint("journal_name", "kind"),)

    id: int | None = Field(default=None, primary_key=True)
    journal_name: str
    kind: str  # "batch" or "voucher"
    last_value: int = 0


# SQLite keeps money as int64 cents and its SUM() fails with "integer overflow" past ~92 entries of
# the largest amount (10^17 cents each). There each sum is taken in two parts that cannot overflow
# below ~10^10 rows: the cents divided by 10^9 and their remainder (both truncate towards zero, so
# high * 10^9 + low is the exact total, negatives included).
_SPLIT = 10**9


async def account_totals(session: AsyncSession, as_of: date) -> dict[str, tuple[Decimal, Decimal]]:
    """Debit and credit totals per account of the entries posted up to `as_of`, exact on every database."""
    query_filter = col(LedgerEntryRow.posting_date) <= as_of
    if session.bind is None or session.bind.dialect.name != "sqlite":
        # NUMERIC sums are exact and unbounded on PostgreSQL.
        totals = await session.exec(
            select(
                col(LedgerEntryRow.account), func.sum(col(LedgerEntryRow.debit)), func.sum(col(LedgerEntryRow.credit))
            )
            .where(query_filter)
            .group_by(LedgerEntryRow.account)
        )
        return {account: (debit, credit) for account, debit, credit in totals.all()}
    parts = []
    for column in (LedgerEntryRow.debit, LedgerEntryRow.credit):
        cents = type_coerce(column, BigInteger)
        parts += [func.sum(cents.op("/")(_SPLIT)), func.sum(cents.op("%")(_SPLIT))]
    # Five columns: wider than SQLModel's typed select, so a Core select through the connection.
    connection = await session.connection()
    wide = await connection.execute(
        sqlalchemy.select(col(LedgerEntryRow.account), *parts).where(query_filter).group_by(col(LedgerEntryRow.account))
    )
    return {
        account: (
            Decimal(debit_high * _SPLIT + debit_low).scaleb(-2),
            Decimal(credit_high * _SPLIT + credit_low).scaleb(-2),
        )
        for account, debit_high, debit_low, credit_high, credit_low in wide.all()
    }


TABLES = [
    table_of(LedgerEntryRow),
    table_of(PostedVoucherRow),
    table_of(JournalRow),
    table_of(JournalCancellationRow),
    table_of(NumberSequenceRow),
]
