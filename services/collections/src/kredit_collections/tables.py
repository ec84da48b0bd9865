"""The collections database: the customer-transaction read model, write-off parameters and requests.

Each table maps to and from the domain's values; queries that the handlers share live here too.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, Column, Date, Index, TextClause, bindparam, text
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kredit_collections import credit_tables
from kredit_collections.domain import (
    CustomerTransaction,
    SettlementDelta,
    TransactionBalance,
    WriteOffProgress,
    WriteOffStatus,
)
from kredit_shared.company_setup import WriteOffParameters
from kredit_shared.contracts import GeneralJournalLine, GeneralJournalRequested
from kredit_shared.database import ExactDecimal, insert_new, table_of, transaction_money_field
from kredit_shared.money import CENT, ZERO
from kredit_shared.outbox import utcnow

# --- read model ------------------------------------------------------------------------------


class CustomerTransactionRow(SQLModel, table=True):
    __tablename__ = "collections_customer_transaction"

    voucher: str = Field(primary_key=True)
    transaction_type: str
    customer_account: str = Field(index=True)
    customer_name: str | None = None
    transaction_date: date
    invoice_id: str | None = None
    amount: Decimal = transaction_money_field()  # signed: debit +, credit -
    currency: str = Field(max_length=3)
    due_date: date | None = None
    sales_tax_amount: Decimal = transaction_money_field()
    # Foreign currencies (docs/currencies.md): the rate it was booked at and its original amount in the
    # accounting currency; both null in the accounting currency.
    exchange_rate: Decimal | None = Field(default=None, sa_type=ExactDecimal(10), nullable=True)
    accounting_currency_amount: Decimal | None = Field(default=None, sa_type=ExactDecimal(2), nullable=True)


class SettlementDeltaRow(SQLModel, table=True):
    """How a settlement moved a transaction's balance. Stored as deltas, never applied to a balance,
    so a settlement that arrives before its transactions counts once they arrive."""

    __tablename__ = "collections_settlement_delta"

    settlement_id: str = Field(primary_key=True)
    voucher: str = Field(primary_key=True, index=True)
    amount: Decimal = transaction_money_field()
    settlement_date: date
    accounting_amount: Decimal | None = Field(default=None, sa_type=ExactDecimal(2), nullable=True)  # null: amount

    def to_domain(self) -> SettlementDelta:
        return SettlementDelta(
            self.settlement_id, self.voucher, self.amount, self.settlement_date, self.accounting_amount
        )


async def add_transactions(session: AsyncSession, transactions: Iterable[CustomerTransaction]) -> None:
    await insert_new(session, CustomerTransactionRow, [_row(t) for t in transactions])


async def add_settlement_deltas(session: AsyncSession, deltas: Iterable[SettlementDelta]) -> None:
    await insert_new(session, SettlementDeltaRow, [_row(d) for d in deltas])


def _row(value: CustomerTransaction | SettlementDelta) -> dict[str, Any]:
    """The value's fields as a row, by their names (the column names). A shallow copy: the values are
    immutable, and dataclasses.asdict's recursive deep copy was most of the handlers' time."""
    return dict(vars(value))


async def load_read_model(
    session: AsyncSession, customer_account: str | None = None, as_of: date | None = None
) -> tuple[list[CustomerTransaction], list[SettlementDelta]]:
    """Transactions (of one customer, or all) and the settlement deltas that move them, up to `as_of`."""
    # Plain rows in the domain's field order through Core, not ORM objects: a customer can have 10,000s
    # of rows, and ORM loading and name lookups per row were most of the time.
    transactions = select(*_columns(CustomerTransactionRow, CustomerTransaction))
    deltas = select(*_columns(SettlementDeltaRow, SettlementDelta))
    if as_of is not None:
        transactions = transactions.where(CustomerTransactionRow.transaction_date <= as_of)
        deltas = deltas.where(SettlementDeltaRow.settlement_date <= as_of)
    if customer_account is not None:
        of_customer = CustomerTransactionRow.customer_account == customer_account
        transactions = transactions.where(of_customer)
        deltas = deltas.where(
            col(SettlementDeltaRow.voucher).in_(select(CustomerTransactionRow.voucher).where(of_customer))
        )
    connection = await session.connection()
    return (
        [CustomerTransaction(*row) for row in await connection.execute(transactions)],
        [SettlementDelta(*row) for row in await connection.execute(deltas)],
    )


def _columns(model: type[SQLModel], value: type) -> list[Any]:
    return [table_of(model).c[f.name] for f in fields(value)]


async def customers_after(session: AsyncSession, after: str | None, limit: int) -> list[str]:
    """The next `limit` customer accounts after `after` (all from the first if None), in account order:
    a walk along the customer_account index, however many transactions there are."""
    query = (
        select(CustomerTransactionRow.customer_account)
        .distinct()
        .order_by(CustomerTransactionRow.customer_account)
        .limit(limit)
    )
    if after is not None:
        query = query.where(CustomerTransactionRow.customer_account > after)
    return list((await session.exec(query)).all())


@dataclass(frozen=True)
class AgedSums:
    """One (customer, currency) of the aged balances as the database adds them up: the open accounting
    balance per bucket, in the order of the setup's buckets, and the customer's newest name."""

    customer_account: str
    currency: str
    customer_name: str | None
    buckets: list[Decimal]


async def aged_sums(
    session: AsyncSession,
    as_of: date,
    cutoffs: Sequence[date],
    bucket_count: int,
    accounting_currency: str | None,
    customers: Collection[str] | None = None,
) -> list[AgedSums]:
    """domain.age_balances computed by the database, for every customer (or `customers`): one row per
    customer, currency and bucket comes back, not the transactions. Each transaction's balance is rounded to
    the cent half-up before it is added, as transaction_balances does (on SQLite the amounts are integers in
    thousandths, ExactDecimal, so every step is exact, and a bucket's cents fit an int64 up to ~92 maximal
    amounts, money.MAX_AMOUNT; beyond, SQLite refuses with an overflow error rather than answer wrong); the
    name is the last non-empty one in (transaction date, voucher) order. `cutoffs` are domain.aging_cutoffs; customers with nothing open are left out."""
    if customers is not None and not customers:
        return []
    postgres = session.get_bind().dialect.name == "postgresql"
    statement = _aged_sums_sql(postgres, len(cutoffs), bucket_count, customers is not None, accounting_currency)
    values: dict[str, Any] = {"as_of": as_of, "accounting_currency": accounting_currency}
    values |= {f"cutoff_{i}": cutoff for i, cutoff in enumerate(cutoffs)}
    connection = await session.connection()
    if postgres:  # compiling the query costs more than running it (0.7 s for a page of 1,000 customers)
        await connection.execute(text("SET LOCAL jit = off"))
    sums: dict[tuple[str, str], list[Decimal]] = {}
    newest: dict[tuple[str, str], str] = {}
    for chunk in [None] if customers is None else _chunks(sorted(customers), 500):  # SQLite's parameter limit
        rows = await connection.execute(statement, values | {"customers": chunk})
        for account, currency, bucket, amount, named in rows:
            key = (account, currency)
            sums.setdefault(key, [ZERO] * bucket_count)[bucket] = _cents(amount, postgres)
            if named is not None and named > newest.get(key, ""):  # code points: the database's binary order
                newest[key] = named
    return [
        AgedSums(account, currency, _name_of(newest.get((account, currency))), amounts)
        for (account, currency), amounts in sums.items()
        if any(amounts)
    ]


def _cents(value: Any, postgres: bool) -> Decimal:
    return Decimal(value).quantize(CENT) if postgres else Decimal(int(value)).scaleb(-2)


def _name_of(named: str | None) -> str | None:
    """The name from a `named` key: the transaction date (10 characters), the voucher, a space, the name."""
    return None if named is None else named[10:].partition(" ")[2]


def _chunks(values: Sequence[str], size: int) -> list[Sequence[str]]:
    return [values[n : n + size] for n in range(0, len(values), size)]


def _aged_sums_sql(
    postgres: bool, cutoffs: int, bucket_count: int, of_customers: bool, accounting_currency: str | None
) -> TextClause:
    t, d = CustomerTransactionRow.__tablename__, SettlementDeltaRow.__tablename__
    # What settlements moved a transaction by as of the date: for some customers, looked up per transaction
    # through the voucher index (a page costs the same however many settlements there are); for all, added
    # up per voucher in one pass and joined.
    delta_amount = (
        "COALESCE(d.accounting_amount, d.amount)" if postgres else "COALESCE(d.accounting_amount * 10, d.amount)"
    )
    moved_per_voucher = (
        f"SELECT SUM({delta_amount}) FROM {d} d WHERE d.voucher = t.voucher AND d.settlement_date <= :as_of"
    )
    moved = f"({moved_per_voucher})" if of_customers else "m.amount"
    if postgres:  # NUMERIC: ROUND is half away from zero, i.e. half-up as round_money
        unrounded = f"COALESCE(t.accounting_currency_amount, t.amount) + COALESCE({moved}, 0)"
        balance = "ROUND(unrounded, 2)"
        date_text, binary = "to_char(t.transaction_date, 'YYYY-MM-DD')", ' COLLATE "C"'
    else:  # integers: accounting amounts in cents, transaction amounts in thousandths; / truncates toward 0
        unrounded = f"COALESCE(t.accounting_currency_amount * 10, t.amount) + COALESCE({moved}, 0)"
        balance = "(unrounded + 5 * sign(unrounded)) / 10"
        date_text, binary = "t.transaction_date", ""  # ISO text; SQLite compares text byte by byte
    currency = "t.currency"
    if accounting_currency is not None:  # CustomerTransaction.balance_currency
        currency = "CASE WHEN t.accounting_currency_amount IS NULL THEN t.currency ELSE :accounting_currency END"
    whens = " ".join(f"WHEN COALESCE(t.due_date, t.transaction_date) >= :cutoff_{i} THEN {i}" for i in range(cutoffs))
    bucket = f"CASE {whens} ELSE {min(cutoffs, bucket_count - 1)} END" if cutoffs else "0"
    # The newest name as the largest "date voucher name": a voucher has no space (contract ID_PATTERN), and a
    # space sorts before every character it may have, so the largest key is the latest (date, voucher).
    named = f"CASE WHEN t.customer_name <> '' THEN {date_text} || t.voucher || ' ' || t.customer_name END"
    if of_customers:  # materialized: the database would otherwise look the settlements up once per use
        moved_cte, materialized, join, where = "", "MATERIALIZED", "", "AND t.customer_account IN :customers"
    else:
        moved_cte = f"""moved AS (
            SELECT d.voucher AS voucher, SUM({delta_amount}) AS amount FROM {d} d
            WHERE d.settlement_date <= :as_of GROUP BY d.voucher
        ),"""
        materialized, join, where = "", "LEFT JOIN moved m ON m.voucher = t.voucher", ""
    sql = f"""
        WITH {moved_cte} items AS {materialized} (
            SELECT t.customer_account AS account, {currency} AS currency, {bucket} AS bucket,
                {unrounded} AS unrounded, {named} AS named
            FROM {t} t {join} WHERE t.transaction_date <= :as_of {where}
        )
        SELECT account, currency, bucket, SUM({balance}), MAX(named{binary}) FROM items GROUP BY 1, 2, 3
    """
    params = [bindparam("as_of", type_=Date), *(bindparam(f"cutoff_{i}", type_=Date) for i in range(cutoffs))]
    if of_customers:
        params.append(bindparam("customers", expanding=True))
    return text(sql).bindparams(*params)


# --- write-off parameters --------------------------------------------------------------------


class WriteOffParametersRow(SQLModel, table=True):
    """The one row of editable write-off parameters, seeded from the company setup."""

    __tablename__ = "collections_write_off_parameters"

    id: int = Field(default=1, primary_key=True)
    journal_name: str
    reason_code: str
    separate_sales_tax: bool

    def to_setup(self) -> WriteOffParameters:
        return WriteOffParameters(
            journal_name=self.journal_name, reason_code=self.reason_code, separate_sales_tax=self.separate_sales_tax
        )


async def load_write_off_parameters(session: AsyncSession, defaults: WriteOffParameters) -> WriteOffParametersRow:
    """The stored parameters; the first caller seeds them from the setup's `defaults` (a replica seeding them
    at the same moment changes nothing). Read first, so a read-only request writes nothing once they are there."""
    row = await session.get(WriteOffParametersRow, 1)
    if row is None:
        await insert_new(
            session, WriteOffParametersRow, [{"id": 1, **defaults.model_dump(exclude={"four_eyes_write_off"})}]
        )
        row = await session.get(WriteOffParametersRow, 1)
    assert row is not None
    return row


# --- write-off requests ----------------------------------------------------------------------


class WriteOffRequestRow(SQLModel, table=True):
    __tablename__ = "collections_write_off_request"

    id: str = Field(primary_key=True)
    customer_account: str = Field(index=True)
    journal_name: str
    currency: str = Field(max_length=3)
    transaction_date: date
    status: str
    reason: str | None = None
    journal_batch_number: str | None = None
    lines: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))  # the proposed journal lines
    created_at: datetime = Field(default_factory=utcnow)
    requested_by: str | None = None  # token subjects (kredit_shared.auth)
    posted_by: str | None = None

    @property
    def progress(self) -> WriteOffProgress:
        return WriteOffProgress(WriteOffStatus(self.status), self.journal_batch_number, self.reason)

    @property
    def journal_lines(self) -> list[GeneralJournalLine]:
        return [GeneralJournalLine.model_validate(line) for line in self.lines]


class WriteOffVoucherRow(SQLModel, table=True):
    """A voucher a write-off covers. While `claimed`, no other write-off may cover it: the partial
    unique index turns two concurrent requests for one voucher into one success and one conflict."""

    __tablename__ = "collections_write_off_voucher"
    __table_args__ = (
        Index(
            "ux_collections_write_off_voucher_claimed",
            "voucher",
            unique=True,
            sqlite_where=text("claimed"),
            postgresql_where=text("claimed"),
        ),
    )

    write_off_id: str = Field(primary_key=True, foreign_key="collections_write_off_request.id")
    voucher: str = Field(primary_key=True)
    customer_account: str = Field(index=True)
    claimed: bool = True


def add_write_off(
    session: AsyncSession, journal: GeneralJournalRequested, customer_account: str, items: Sequence[TransactionBalance]
) -> WriteOffRequestRow:
    progress = WriteOffProgress()
    request = WriteOffRequestRow(
        id=journal.request_id,
        customer_account=customer_account,
        journal_name=journal.journal_name,
        currency=journal.lines[0].currency,
        transaction_date=journal.lines[0].transaction_date,
        status=progress.status,
        lines=[line.model_dump(mode="json") for line in journal.lines],
        requested_by=journal.requested_by,
    )
    session.add(request)
    session.add_all(
        WriteOffVoucherRow(write_off_id=request.id, voucher=item.voucher, customer_account=customer_account)
        for item in items
    )
    return request


def add_rejected_write_off(
    session: AsyncSession,
    request_id: str,
    journal_name: str,
    customer_account: str,
    items: Sequence[TransactionBalance],
    on: date,
    reason: str,
    requested_by: str | None,
) -> WriteOffRequestRow:
    """A write-off that could not be proposed (no exchange rate for its date): kept as rejected with the
    reason, without a journal, its vouchers not claimed."""
    request = WriteOffRequestRow(
        id=request_id,
        customer_account=customer_account,
        journal_name=journal_name,
        currency=items[0].transaction.currency,
        transaction_date=on,
        status=WriteOffStatus.REJECTED,
        reason=reason,
        lines=[],
        requested_by=requested_by,
    )
    session.add(request)
    session.add_all(
        WriteOffVoucherRow(
            write_off_id=request.id, voucher=item.voucher, customer_account=customer_account, claimed=False
        )
        for item in items
    )
    return request


async def claimed_vouchers(session: AsyncSession, customer_account: str) -> set[str]:
    query = select(WriteOffVoucherRow.voucher).where(
        WriteOffVoucherRow.customer_account == customer_account, WriteOffVoucherRow.claimed
    )
    return set((await session.exec(query)).all())


async def write_off_requests(session: AsyncSession, customer_account: str | None = None) -> list[WriteOffRequestRow]:
    """Write-off requests, newest first; all customers unless filtered."""
    query = select(WriteOffRequestRow).order_by(col(WriteOffRequestRow.created_at).desc())
    if customer_account is not None:
        query = query.where(WriteOffRequestRow.customer_account == customer_account)
    return list((await session.exec(query)).all())


async def claimed_by(session: AsyncSession, customer_account: str) -> dict[str, str]:
    """Voucher -> the write-off that reserves it, for the customer's claimed vouchers."""
    query = select(WriteOffVoucherRow).where(
        WriteOffVoucherRow.customer_account == customer_account, WriteOffVoucherRow.claimed
    )
    return {row.voucher: row.write_off_id for row in (await session.exec(query)).all()}


async def write_off_vouchers(session: AsyncSession, write_off_id: str) -> list[WriteOffVoucherRow]:
    query = select(WriteOffVoucherRow).where(WriteOffVoucherRow.write_off_id == write_off_id)
    return list((await session.exec(query)).all())


async def lock_write_off(session: AsyncSession, write_off_id: str) -> WriteOffRequestRow | None:
    """The request, locked until the transaction ends: a cancel and a journal event take turns."""
    return await session.get(WriteOffRequestRow, write_off_id, with_for_update=True)


async def lock_write_offs(session: AsyncSession, write_off_ids: Iterable[str]) -> dict[str, WriteOffRequestRow]:
    """The requests among `write_off_ids`, locked until the transaction ends (lock_write_off), in one query."""
    query = (
        select(WriteOffRequestRow)
        .where(col(WriteOffRequestRow.id).in_(sorted(set(write_off_ids))))
        .order_by(WriteOffRequestRow.id)
        .with_for_update()
    )
    return {row.id: row for row in (await session.exec(query)).all()}


async def save_progress(session: AsyncSession, request: WriteOffRequestRow, progress: WriteOffProgress) -> None:
    request.status, request.journal_batch_number, request.reason = (
        progress.status,
        progress.journal_batch_number,
        progress.reason,
    )
    session.add(request)
    if not progress.claims_its_vouchers:
        for voucher in await write_off_vouchers(session, request.id):
            voucher.claimed = False
            session.add(voucher)


# Every table of the service, the credit-management ones included (the schema migrations' target).
TABLES = [
    table_of(CustomerTransactionRow),
    table_of(SettlementDeltaRow),
    table_of(WriteOffParametersRow),
    table_of(WriteOffRequestRow),
    table_of(WriteOffVoucherRow),
    *credit_tables.TABLES,
]
