"""Settlement's tables (all prefixed `settlement_`) and their mapping to the domain's values."""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Iterable, Iterator
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal, TypeVar

import sqlalchemy
from pydantic_core import PydanticUndefined
from sqlalchemy import JSON, Column, Index, Integer, bindparam, event, func, insert, literal_column, text, update
from sqlalchemy.dialects import postgresql
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kredit_settlement.domain import (
    CashDiscountAdministration,
    DiscountTier,
    Mark,
    OpenTransaction,
    PriorityRule,
    SettledPair,
    SettlementParameters,
    priority_rule,
)
from kredit_shared.contracts import CustomerPaymentReceived
from kredit_shared.currencies import plain_rate
from kredit_shared.database import (
    ExactDecimal,
    insert_new,
    insert_rows,
    money_field,
    optional_transaction_money_field,
    table_of,
    transaction_money_field,
)
from kredit_shared.money import ZERO
from kredit_shared.outbox import utcnow

T = TypeVar("T")


class ConcurrentUpdate(Exception):
    """A row changed under us since it was loaded: the transaction rolls back and the message is retried."""


class CustomerRow(SQLModel, table=True):
    """One row per customer, updated first in every transaction that settles the customer's items.

    The update takes the row lock (PostgreSQL) or the database's write lock (SQLite) before anything is
    read, so two replicas settling for one customer run one after the other, never on the same balances."""

    __tablename__ = "settlement_customer"

    customer_account: str = Field(primary_key=True)
    version: int = Field(default=1, sa_column=Column(Integer, nullable=False))


class OpenTransactionRow(SQLModel, table=True):
    """A customer transaction with what is still open on it (signed: debit +, credit −)."""

    __tablename__ = "settlement_open_transaction"
    # open_debits' order (_debit_order) per customer and currency, of the debits it reads only: an automatic
    # payment reads its first few with a range scan, however many open items the customer has. (PostgreSQL
    # sorts equal dates' vouchers itself: it compares them in "C", not the column's collation.)
    __table_args__ = (
        Index(
            "ix_settlement_open_transaction_debit_order",
            "customer_account",
            "currency",
            func.coalesce(text("due_date"), text("transaction_date")),
            "transaction_date",
            "voucher",
            sqlite_where=text("open_amount > 0 AND auto_settle = 1"),
            postgresql_where=text("open_amount > 0 AND auto_settle"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    voucher: str = Field(unique=True)
    transaction_type: str
    customer_account: str = Field(index=True)
    transaction_date: date
    invoice_id: str | None = Field(default=None, index=True)
    currency: str
    original_amount: Decimal = transaction_money_field()  # in `currency`
    open_amount: Decimal = transaction_money_field()
    due_date: date | None = None
    cash_discounts: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    discount_taken: Decimal = transaction_money_field()
    cash_discount_account: str | None = None
    auto_settle: bool = True  # see OpenTransaction.auto_settle
    discount_date: date | None = None  # a payment's selected date for its discounts
    # The rate it was booked at (accounting-currency units per unit of `currency`; 1 in the accounting currency)
    # and its amounts in the accounting currency (docs/currencies.md). Ten places: a rate is below 1e8, so
    # the scaled integer SQLite stores stays below 1e18.
    exchange_rate: Decimal = Field(default=Decimal(1), sa_type=ExactDecimal(10), nullable=False)
    accounting_original_amount: Decimal = money_field()
    accounting_open_amount: Decimal = money_field()
    # Optimistic check on top of the customer lock: an update names the version it read.
    version: int = Field(default=1, sa_column=Column(Integer, nullable=False))

    def to_domain(self) -> OpenTransaction:
        return open_transaction_of(self)

    @classmethod
    def from_domain(cls, t: OpenTransaction) -> OpenTransactionRow:
        return cls(**cls.values(t))

    @staticmethod
    def values(t: OpenTransaction) -> dict[str, Any]:
        """The row of `t` as plain values (what a Core insert takes), version 1."""
        return {
            "voucher": t.voucher,
            "transaction_type": t.transaction_type,
            "customer_account": t.customer_account,
            "transaction_date": t.transaction_date,
            "invoice_id": t.invoice_id,
            "currency": t.currency,
            "original_amount": t.original_amount,
            "open_amount": t.open_amount,
            "due_date": t.due_date,
            "cash_discounts": [
                {
                    "date": d.date.isoformat(),
                    "percent": str(d.percent),
                    "amount": str(d.amount) if d.amount is not None else None,
                }
                for d in t.cash_discounts
            ],
            "discount_taken": t.discount_taken,
            "cash_discount_account": t.cash_discount_account,
            "auto_settle": t.auto_settle,
            "discount_date": t.discount_date,
            "exchange_rate": t.exchange_rate,
            "accounting_original_amount": t.accounting_original_amount,
            "accounting_open_amount": t.accounting_open_amount,
            "version": 1,
        }


def open_transaction_of(row: Any) -> OpenTransaction:
    """The domain's transaction of an OpenTransactionRow or of a plain row of its table (read with Core)."""
    return OpenTransaction(
        voucher=row.voucher,
        customer_account=row.customer_account,
        transaction_type=row.transaction_type,
        transaction_date=row.transaction_date,
        currency=row.currency,
        original_amount=row.original_amount,
        open_amount=row.open_amount,
        invoice_id=row.invoice_id,
        due_date=row.due_date,
        cash_discounts=tuple(
            DiscountTier(
                date.fromisoformat(t["date"]),
                Decimal(t["percent"]),
                Decimal(t["amount"]) if t.get("amount") is not None else None,
            )
            for t in row.cash_discounts
        ),
        discount_taken=row.discount_taken,
        cash_discount_account=row.cash_discount_account,
        auto_settle=row.auto_settle,
        discount_date=row.discount_date,
        exchange_rate=plain_rate(row.exchange_rate),
        accounting_original_amount=row.accounting_original_amount,
        accounting_open_amount=row.accounting_open_amount,
    )


class PaymentRow(SQLModel, table=True):
    """A received payment; `fingerprint` tells a harmless re-send from a conflicting one."""

    __tablename__ = "settlement_payment"

    payment_id: str = Field(primary_key=True)
    message_id: str
    customer_account: str = Field(index=True)
    payment_date: date
    amount: Decimal = transaction_money_field()
    currency: str
    exchange_rate: Decimal = Field(default=Decimal(1), sa_type=ExactDecimal(10), nullable=False)  # booked at
    bank_account: str
    fingerprint: str
    received_at: datetime = Field(default_factory=utcnow)

    @staticmethod
    def values(
        payment: CustomerPaymentReceived, bank_account: str, fingerprint: str, exchange_rate: Decimal = Decimal(1)
    ) -> dict[str, Any]:
        return {
            "exchange_rate": exchange_rate,
            "payment_id": payment.payment_id,
            "message_id": payment.message_id,
            "customer_account": payment.customer_account,
            "payment_date": payment.payment_date,
            "amount": payment.amount,
            "currency": payment.currency,
            "bank_account": bank_account,
            "fingerprint": fingerprint,
        }


class PendingMarkRow(SQLModel, table=True):
    """A payment's mark on an invoice settlement has not seen yet: a payment can overtake its invoice
    (it comes straight from the ERP, the invoice through invoicing). State, not an error: the payment's
    money stays reserved for it and it settles when the invoice arrives (docs/ordering.md)."""

    __tablename__ = "settlement_pending_mark"

    payment_voucher: str = Field(primary_key=True)
    invoice_id: str = Field(primary_key=True, index=True)
    customer_account: str = Field(index=True)
    position: int = 0  # the mark's place in the payment's `settle` list
    amount_to_settle: Decimal | None = optional_transaction_money_field()
    use_cash_discount: str
    full_settlement: bool = False
    cash_discount_amount: Decimal | None = optional_transaction_money_field()

    def to_domain(self) -> Mark:
        return Mark(
            self.invoice_id,
            self.amount_to_settle,
            self.use_cash_discount,
            self.full_settlement,
            self.cash_discount_amount,
        )


class PendingWriteOffRow(SQLModel, table=True):
    """A posted write-off naming a transaction settlement does not know yet (settlement lags behind
    collections). The write-off holds `amount` (signed as named) for it until it arrives."""

    __tablename__ = "settlement_pending_write_off"

    id: int | None = Field(default=None, primary_key=True)
    write_off_voucher: str = Field(index=True)
    voucher: str = Field(index=True)  # the named transaction
    customer_account: str = Field(index=True)
    amount: Decimal = transaction_money_field()
    # What it removes from the transaction's accounting-currency balance (SettledTransactionRef.accounting_amount).
    accounting_amount: Decimal | None = Field(default=None, sa_type=ExactDecimal(2), nullable=True)
    journal_batch_number: str


class SettlementRow(SQLModel, table=True):
    """Settlement history: one row per settled debit/credit pair, as published in OpenItemsSettled.

    Pairs settled together share a `group_id` (the settlement a person reverses); a reversal adds opposite
    rows (`reversal_of`) and marks the originals `reversed_by`, nothing is deleted."""

    __tablename__ = "settlement_history"

    settlement_id: str = Field(primary_key=True)
    group_id: str = Field(index=True)
    customer_account: str = Field(index=True)
    settlement_date: date
    currency: str
    debit_voucher: str = Field(index=True)
    credit_voucher: str = Field(index=True)
    amount_settled: Decimal = transaction_money_field()  # in `currency`
    cash_discount_amount: Decimal = transaction_money_field()
    cash_discount_voucher: str | None = None
    difference_amount: Decimal = transaction_money_field(default=Decimal("0.00"))
    difference_account: str | None = None
    difference_voucher: str | None = Field(default=None, index=True)
    # In a foreign currency (None in the accounting currency): the pair in the accounting currency and the
    # realized exchange loss (negative: gain) posted on exchange_voucher (SettledPair, docs/currencies.md).
    debit_accounting_amount: Decimal | None = Field(default=None, sa_type=ExactDecimal(2), nullable=True)
    credit_accounting_amount: Decimal | None = Field(default=None, sa_type=ExactDecimal(2), nullable=True)
    cash_discount_accounting_amount: Decimal | None = Field(default=None, sa_type=ExactDecimal(2), nullable=True)
    difference_accounting_amount: Decimal | None = Field(default=None, sa_type=ExactDecimal(2), nullable=True)
    realized_exchange_loss: Decimal | None = Field(default=None, sa_type=ExactDecimal(2), nullable=True)
    exchange_account: str | None = None
    exchange_voucher: str | None = Field(default=None, index=True)
    reversed_by: str | None = None  # the group that reversed this pair
    reversal_of: str | None = Field(default=None, index=True)  # the group this row reverses
    settled_at: datetime = Field(default_factory=utcnow)

    def to_domain(self) -> SettledPair:
        return SettledPair(
            self.settlement_id,
            self.customer_account,
            self.settlement_date,
            self.currency,
            self.debit_voucher,
            self.credit_voucher,
            self.amount_settled,
            self.cash_discount_amount,
            self.cash_discount_voucher,
            self.difference_amount,
            self.difference_account,
            self.difference_voucher,
            self.debit_accounting_amount,
            self.credit_accounting_amount,
            self.cash_discount_accounting_amount,
            self.difference_accounting_amount,
            self.realized_exchange_loss,
            self.exchange_account,
            self.exchange_voucher,
        )

    @staticmethod
    def values(pair: SettledPair, group_id: str, reversal_of: str | None = None) -> dict[str, Any]:
        return vars(pair) | {"group_id": group_id, "reversal_of": reversal_of}


class ParametersRow(SQLModel, table=True):
    """The settlement parameters: a single row, seeded from the company setup. `set_fields` lists the
    parameters ever changed through the API (the answer shows them; see api.Parameters)."""

    __tablename__ = "settlement_parameters"

    id: int = Field(default=1, primary_key=True)
    calculate_cash_discounts_for_partial_payments: bool
    calculate_cash_discounts_for_credit_notes: bool = False
    maximum_penny_difference: Decimal = money_field(default=Decimal("0.00"))
    maximum_overpayment_or_underpayment: Decimal = money_field(default=Decimal("0.00"))
    cash_discount_administration: str = CashDiscountAdministration.SPECIFIC.value
    automatic_settlement: bool = True
    prioritize_settlement: bool = False
    use_priority_for_automatic_settlements: bool = False
    settlement_priority: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    set_fields: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow)

    def to_domain(self) -> SettlementParameters:
        return SettlementParameters(
            self.calculate_cash_discounts_for_partial_payments,
            self.calculate_cash_discounts_for_credit_notes,
            self.maximum_penny_difference,
            self.maximum_overpayment_or_underpayment,
            CashDiscountAdministration(self.cash_discount_administration),
            self.automatic_settlement,
            self.prioritize_settlement,
            self.use_priority_for_automatic_settlements,
            tuple(priority_rule(**rule) for rule in self.settlement_priority),
        )

    @staticmethod
    def values(parameters: SettlementParameters) -> dict[str, Any]:
        """The columns of `parameters` as plain values."""
        return {
            "calculate_cash_discounts_for_partial_payments": parameters.calculate_cash_discounts_for_partial_payments,
            "calculate_cash_discounts_for_credit_notes": parameters.calculate_cash_discounts_for_credit_notes,
            "maximum_penny_difference": parameters.maximum_penny_difference,
            "maximum_overpayment_or_underpayment": parameters.maximum_overpayment_or_underpayment,
            "cash_discount_administration": parameters.cash_discount_administration.value,
            "automatic_settlement": parameters.automatic_settlement,
            "prioritize_settlement": parameters.prioritize_settlement,
            "use_priority_for_automatic_settlements": parameters.use_priority_for_automatic_settlements,
            "settlement_priority": [_rule_json(rule) for rule in parameters.settlement_priority],
        }

    def update(self, parameters: SettlementParameters, changed: Iterable[str]) -> None:
        for name, value in self.values(parameters).items():
            setattr(self, name, value)
        self.set_fields = sorted({*self.set_fields, *changed})
        self.updated_at = utcnow()


def _rule_json(rule: PriorityRule) -> dict[str, Any]:
    return {
        "criterion": rule.criterion.value,
        "direction": "Descending" if rule.descending else "Ascending",
        **({"order": list(rule.order)} if rule.order else {}),
    }


TABLES = [
    table_of(t)
    for t in (
        CustomerRow,
        OpenTransactionRow,
        PaymentRow,
        PendingMarkRow,
        PendingWriteOffRow,
        SettlementRow,
        ParametersRow,
    )
]


# --- loading and saving ---------------------------------------------------------------------


async def lock_customers(session: AsyncSession, customer_accounts: Iterable[str]) -> None:
    """Lock the customers a batch touches, in one order, so two replicas' batches never wait on each other:
    on PostgreSQL one SELECT … ORDER BY … FOR UPDATE (rows are locked in the order sorted), on SQLite one
    UPDATE (its first write takes the database's write lock); first-timers are inserted in one statement."""
    accounts = sorted(set(customer_accounts))
    account = col(CustomerRow.customer_account)
    found: set[str] = set()
    for chunk in _chunks(accounts, 500):  # SQLite's bound-parameter limit
        if session.get_bind().dialect.name == "postgresql":
            query = select(account).where(account.in_(chunk)).order_by(account).with_for_update()
            found.update((await session.exec(query)).all())
        else:
            table = table_of(CustomerRow).c  # a Core update: the ORM's would look for the rows in the session
            statement = update(table_of(CustomerRow)).where(table.customer_account.in_(chunk))
            statement = statement.values(version=table.version + 1).returning(table.customer_account)
            found.update((await session.exec(statement)).scalars().all())
    if missing := [a for a in accounts if a not in found]:
        # Two first-timers racing: the second insert fails on the key and its message is retried.
        await insert_rows(session, table_of(CustomerRow), [{"customer_account": a, "version": 1} for a in missing])


async def lock_customer(session: AsyncSession, customer_account: str) -> None:
    """Serialise every settlement of one customer's items (see CustomerRow)."""
    result = await session.exec(
        update(CustomerRow)
        .where(col(CustomerRow.customer_account) == customer_account)
        .values(version=CustomerRow.version + 1)
    )
    if result.rowcount == 0:
        # Two first-timers racing: the second insert fails on the key and its message is retried.
        session.add(CustomerRow(customer_account=customer_account))
        await session.flush()


async def load_parameters(session: AsyncSession, defaults: SettlementParameters) -> ParametersRow:
    """The stored parameters; the first caller seeds them from the setup's `defaults` (a replica seeding them
    at the same moment changes nothing). Read first, so a batch asks once when they are there."""
    row = await session.get(ParametersRow, 1)
    if row is None:
        await insert_new(
            session, ParametersRow, [plain_row(ParametersRow, {"id": 1, **ParametersRow.values(defaults)})]
        )
        row = await session.get(ParametersRow, 1)
    assert row is not None
    return row


# Which of a customer's open items `OpenItems.of_customer` returns besides the named ones: all of them,
# the open credits only (what a new invoice is settled with), or none (a marked payment settles only the named).
OpenScope = Literal["all", "credits", "none"]


# Which of the names (an expanding parameter) are used as a transaction's voucher or a settled pair's difference
# or exchange voucher (OpenItems.used_names). Built once: building an IN of many literals costs more than the query.
_USED_NAMES = sqlalchemy.union(
    *(
        sqlalchemy.select(column).where(column.in_(bindparam("names", expanding=True)))
        for column in (
            table_of(OpenTransactionRow).c.voucher,
            table_of(SettlementRow).c.difference_voucher,
            table_of(SettlementRow).c.exchange_voucher,
        )
    )
)


def _update_by_columns() -> sqlalchemy.TextClause:
    """OpenItems._update_by_columns' statement: each changed row's new amounts where its version is still the one
    read, and the next version (PostgreSQL); it returns the ids of the rows it changed."""
    table, dialect = table_of(OpenTransactionRow), postgresql.dialect()
    changed = ["open_amount", "accounting_open_amount", "discount_taken", "auto_settle"]
    names = ["id", "version", *changed]
    arrays = ", ".join(f"CAST(:{name} AS {table.c[name].type.compile(dialect=dialect)}[])" for name in names)
    return text(
        f"UPDATE {table.name} AS t SET {', '.join(f'{name} = u.{name}' for name in changed)}, version = t.version + 1 "
        f"FROM unnest({arrays}) AS u({', '.join(names)}) WHERE t.id = u.id AND t.version = u.version RETURNING t.id"
    )


_UPDATE_BY_COLUMNS = _update_by_columns()

# Arrival order of a transaction saved but not yet inserted (a deferred store): after every stored row.
_UNSAVED = 10**15


class OpenItems:
    """The customer transactions one database transaction reads and writes back, version-checked.

    A batch reads each customer's open items once and answers later questions from what it holds: every
    change goes through `save`, under the customer's lock, so what it holds is what the database has (or,
    `deferred`, will have at `flush`). What it holds is never replaced by a row read again: it is as new.

    `deferred` (the batch handlers): `save` only records; `flush` writes every new transaction in one insert
    and every change in one executemany update, at the end of the batch (the handler calls it before commit;
    a commit with unwritten changes is refused). A query that filters or sorts by what changes (open_debits,
    include_settled) flushes first."""

    def __init__(self, session: AsyncSession, *, deferred: bool = False) -> None:
        self.session = session
        self._loaded: dict[str, tuple[int, int, OpenTransaction]] = {}
        self._by_customer: dict[str, dict[str, None]] = {}  # loaded vouchers per customer, an ordered set
        self._by_invoice: dict[str, dict[str, None]] = {}  # loaded vouchers per invoice id
        self._scope: dict[str, OpenScope] = {}  # what of each customer's open items is loaded
        # Names every transaction of which is held (read, or known not to exist): answered from memory.
        self._complete_invoices: set[str] = set()
        self._complete_vouchers: set[str] = set()
        self._deferred = deferred
        self._new: dict[str, None] = {}  # saved, not yet inserted (deferred)
        self._dirty: dict[str, None] = {}  # changed, not yet updated (deferred)
        self._rows: dict[type[SQLModel], list[dict[str, Any]]] = {}  # other tables' rows to insert (deferred)
        # For used_names: the names found used in the database (by a transaction not held, or as a settled pair's
        # difference or exchange voucher) or in a settled pair this store added, and the names already asked about.
        # What the store adds is known when added, so names are handed out without writing first, and never twice.
        self._used_names: set[str] = set()
        self._checked_names: set[str] = set()
        self._expected_names: set[str] = set()  # read with the first question about a name (expect_names)
        # open_debits' answers per (customer, currency): the vouchers the database returned, in its order, the
        # limit asked and whether that was all of them. Later questions are answered from them (see open_debits).
        self._debit_windows: dict[tuple[str, str], tuple[list[str], int, bool]] = {}
        if deferred:
            event.listen(session.sync_session, "before_commit", self._refuse_unwritten)

    def _refuse_unwritten(self, session: Any) -> None:
        if self._new or self._dirty or self._rows:
            raise RuntimeError("settlement: a deferred OpenItems was committed without flush(): changes would be lost")

    async def known_vouchers(self, vouchers: Collection[str]) -> set[str]:
        held = {v for v in vouchers if v in self._loaded}
        wanted = [v for v in vouchers if v not in held and v not in self._complete_vouchers]
        if not wanted:
            return held
        voucher = col(OpenTransactionRow.voucher)
        return held | set((await self.session.exec(select(voucher).where(voucher.in_(wanted)))).all())

    def expect_names(self, names: Iterable[str]) -> None:
        """Names a batch's numbered postings may take (domain.first_vouchers): the first question used_names
        has to ask the database asks about them all, in one query; a batch that posts none asks nothing."""
        self._expected_names.update(names)

    async def used_names(self, names: Collection[str]) -> set[str]:
        """Which of `names` are used by a transaction or as a settled pair's difference or exchange voucher,
        counting what this store saved or added and has not written yet: no flush needed."""
        if any(n not in self._loaded and n not in self._checked_names for n in names):
            expected, self._expected_names = self._expected_names, set()
            wanted = {n for n in (*names, *expected) if n not in self._loaded and n not in self._checked_names}
            for chunk in _chunks(sorted(wanted), 300):  # three lists of bound parameters: SQLite's limit
                found = await (await self.session.connection()).execute(_USED_NAMES, {"names": chunk})
                self._used_names.update(found.scalars())
            self._checked_names.update(wanted)
        return {n for n in names if n in self._loaded or n in self._used_names}

    async def find(self, voucher: str) -> OpenTransaction | None:
        found = await self.find_all([voucher])
        return found[0] if found else None

    async def find_all(self, vouchers: Collection[str]) -> list[OpenTransaction]:
        """The transactions with these vouchers (held ones as held), in the order they were posted."""
        await self.read_names(vouchers=vouchers)
        found = [self._loaded[v][2] for v in dict.fromkeys(vouchers) if v in self._loaded]
        return sorted(found, key=lambda t: (t.transaction_date, self.arrival(t.voucher)))

    async def read_names(self, invoice_ids: Collection[str] = (), vouchers: Collection[str] = ()) -> None:
        """Hold every transaction with one of `invoice_ids` or `vouchers`, reading only names not read before."""
        invoices = sorted({i for i in invoice_ids if i not in self._complete_invoices})
        wanted = sorted({v for v in vouchers if v not in self._complete_vouchers and v not in self._loaded})
        table = table_of(OpenTransactionRow).c
        for chunk in _chunks(invoices, 500):  # SQLite's bound-parameter limit
            await self._select(table.invoice_id.in_(chunk))
        for chunk in _chunks(wanted, 500):
            await self._select(table.voucher.in_(chunk))
        self._complete_invoices.update(invoices)
        self._complete_vouchers.update(wanted)

    async def load_customers(self, customer_accounts: Iterable[str], scope: OpenScope = "all") -> None:
        """Read the open items (`scope`) of many customers in one query, for of_customer to answer from.
        Held transactions stay as held, so unwritten changes need no flush: what a change made open or
        closed is held already, and of_customer filters what it holds."""
        wanted = {a for a in customer_accounts if not _covers(self._scope.get(a, "none"), scope)}
        if not wanted:
            return
        condition = (
            OpenTransactionRow.open_amount < ZERO if scope == "credits" else OpenTransactionRow.open_amount != ZERO
        )
        for chunk in _chunks(sorted(wanted), 500):  # SQLite's bound-parameter limit
            await self._select(col(OpenTransactionRow.customer_account).in_(chunk) & condition)
        self._scope |= dict.fromkeys(wanted, scope)

    async def of_customer(
        self,
        customer_account: str,
        *,
        invoice_ids: Collection[str] = (),
        vouchers: Collection[str] = (),
        include_settled: bool = False,
        scope: OpenScope = "all",
    ) -> list[OpenTransaction]:
        """The customer's open transactions (`scope`), plus any transaction (of anyone, open or not) with one of
        `invoice_ids` or `vouchers`, so a mark on a closed or foreign invoice can be told from an unknown one.
        In the order they were posted (transaction date, then arrival)."""
        if include_settled:
            await self.flush()
            return await self._select(OpenTransactionRow.customer_account == customer_account)
        await self.load_customers([customer_account], scope)
        await self.read_names(invoice_ids, vouchers)
        found: dict[str, OpenTransaction] = {}
        for invoice_id in invoice_ids:
            for voucher in self._by_invoice.get(invoice_id, ()):
                found[voucher] = self._loaded[voucher][2]
        for voucher in vouchers:
            if voucher in self._loaded:
                found[voucher] = self._loaded[voucher][2]
        for voucher in self._by_customer.get(customer_account, ()) if scope != "none" else ():
            t = self._loaded[voucher][2]
            if t.open_amount < 0 or (t.open_amount > 0 and scope == "all"):
                found.setdefault(voucher, t)
        return sorted(found.values(), key=lambda t: (t.transaction_date, self.arrival(t.voucher)))

    def held(self, voucher: str) -> OpenTransaction | None:
        """A transaction read or saved in this database transaction, as it is now."""
        return self._loaded[voucher][2] if voucher in self._loaded else None

    async def open_debits(self, customer_account: str, currency: str, limit: int) -> list[OpenTransaction]:
        """The first `limit` of the customer's open amounts owed in `currency` that settle automatically, in
        automatic settlement's default order (domain.automatic_order without priority rules: due date, then
        transaction date, then voucher), so an automatic payment reads only the debits it can reach.

        The answer is kept (a window) and later questions about the same customer and currency are answered
        from it, without a flush and a query per payment: what it holds that still owes, in its order. That is
        right while no transaction outside it became an open automatic debit (`save` drops the window when
        one does: a new debit, a reopened or re-sorted one); a window that was not all of them and has fewer
        than `limit` left is read again. It reads twice `limit`, so a payment closing debits does not make the
        next one read again at once."""
        key = (customer_account, currency)
        if (window := self._debit_windows.get(key)) is not None:
            vouchers, asked, complete = window
            if complete or limit <= asked:
                held = [self._loaded[v][2] for v in vouchers]
                still = [t for t in held if _open_debit(t, currency)]
                if complete or len(still) >= limit:
                    return still[:limit]
        await self.flush()  # the database sorts and limits by open amounts: they must be written
        debits = await self._read(self._first_debits(customer_account, currency, 2 * limit))
        self._debit_windows[key] = ([t.voucher for t in debits], 2 * limit, len(debits) < 2 * limit)
        return debits[:limit]

    async def read_debit_windows(self, keys: Iterable[tuple[str, str]], limit: int) -> None:
        """Read open_debits' windows of many (customer, currency) pairs in one query, before a batch's first
        payment: the first `2 * limit` open automatic debits of each, as open_debits would. Flushes first."""
        wanted = sorted({key for key in keys if key not in self._debit_windows})
        if not wanted:
            return
        await self.flush()
        found: dict[tuple[str, str], list[OpenTransaction]] = {key: [] for key in wanted}
        # A UNION ALL of each pair's ORDER BY … LIMIT (as subqueries: SQLite takes no ORDER BY in a compound
        # select's terms), each an index range scan: not a window function, which reads and sorts every open
        # item of the customer (10,000 of a big one) to keep the first few.
        for chunk in _chunks(wanted, 100):  # SQLite's bound-parameter and compound-select limits
            windows = [self._first_debits(customer, currency, 2 * limit).subquery() for customer, currency in chunk]
            query = sqlalchemy.union_all(*(sqlalchemy.select(window) for window in windows))
            for t in await self._read(query if len(windows) > 1 else sqlalchemy.select(windows[0])):
                found[(t.customer_account, t.currency)].append(t)
        for key, debits in found.items():
            # A UNION ALL keeps no order: each window is sorted again (a few rows), as its subquery did.
            vouchers = [t.voucher for t in sorted(debits, key=_debit_order)]
            self._debit_windows[key] = (vouchers, 2 * limit, len(vouchers) < 2 * limit)

    def _first_debits(self, customer_account: str, currency: str, count: int) -> sqlalchemy.Select[Any]:
        """The first `count` open automatic debits of the customer in `currency`, in automatic settlement's
        default order (_debit_order): ix_settlement_open_transaction_debit_order holds them in that order."""
        # The voucher tie-break compares code points, as Python's str does: not the database's locale.
        binary = "C" if self._postgres else "BINARY"
        table = table_of(OpenTransactionRow)
        c = table.c
        return (
            sqlalchemy.select(table)
            .where(
                (c.customer_account == customer_account)
                & (c.currency == currency)
                & (c.open_amount > literal_column("0"))  # a literal, so the partial index's condition is seen to hold
                & c.auto_settle
            )
            .order_by(func.coalesce(c.due_date, c.transaction_date), c.transaction_date, c.voucher.collate(binary))
            .limit(count)
        )

    def _forget_window(self, t: OpenTransaction) -> None:
        """Drop open_debits' window of t's customer and currency unless t is in it as it was (an open automatic
        debit sorted where it was): a debit that is new, reopened or re-sorted may belong before its end."""
        key = (t.customer_account, t.currency)
        if key not in self._debit_windows:
            return
        before = self.held(t.voucher)
        if (
            before is None
            or not _open_debit(before, t.currency)
            or _debit_order(before) != _debit_order(t)
            or t.voucher not in self._debit_windows[key][0]
        ):
            del self._debit_windows[key]

    @property
    def _postgres(self) -> bool:
        return self.session.get_bind().dialect.name == "postgresql"

    async def _select(self, condition: Any) -> list[OpenTransaction]:
        """The open transactions matching `condition`, in the order they were posted."""
        table = table_of(OpenTransactionRow)
        return await self._read(
            sqlalchemy.select(table).where(condition).order_by(table.c.transaction_date, table.c.id)
        )

    async def _read(self, query: Any) -> list[OpenTransaction]:
        """Read rows of the open transactions' table with Core (plain rows, no ORM objects: a customer may have
        10,000 open items), in the query's order."""
        rows = (await (await self.session.connection()).execute(query)).all()
        for row in rows:
            if row.voucher not in self._loaded:  # a held one is as new as the row, or newer (deferred)
                self._hold(row.id, row.version, open_transaction_of(row))
        return [self._loaded[row.voucher][2] for row in rows]

    def _hold(self, row_id: int, version: int, t: OpenTransaction) -> None:
        self._loaded[t.voucher] = (row_id, version, t)
        self._by_customer.setdefault(t.customer_account, {})[t.voucher] = None
        if t.invoice_id:
            self._by_invoice.setdefault(t.invoice_id, {})[t.voucher] = None

    def arrival(self, voucher: str) -> int:
        """The order a loaded transaction arrived in (its row id): one customer's rows are written one
        transaction at a time under the customer lock, so ids follow arrival. One saved but not yet inserted
        comes after every inserted one, in the order saved (the order `flush` inserts them in)."""
        return self._loaded[voucher][0]

    async def save(self, transactions: Iterable[OpenTransaction]) -> None:
        """Insert new transactions; update changed ones if nobody changed them since they were loaded.
        Deferred: remember them for `flush`."""
        new: list[OpenTransaction] = []
        for t in transactions:
            if self._debit_windows and _open_debit(t, t.currency):
                self._forget_window(t)
            if t.voucher not in self._loaded:
                if self._deferred:
                    self._hold(_UNSAVED + len(self._loaded), 0, t)
                    self._new[t.voucher] = None
                else:
                    new.append(t)
                continue
            row_id, version, before = self._loaded[t.voucher]
            if t == before:
                continue
            if self._deferred:
                self._loaded[t.voucher] = (row_id, version, t)
                if t.voucher not in self._new:
                    self._dirty[t.voucher] = None
                continue
            result = await self.session.exec(
                update(OpenTransactionRow)
                .where(col(OpenTransactionRow.id) == row_id, col(OpenTransactionRow.version) == version)
                .values(
                    open_amount=t.open_amount,
                    accounting_open_amount=t.accounting_open_amount,
                    discount_taken=t.discount_taken,
                    auto_settle=t.auto_settle,
                    version=version + 1,
                )
            )
            if result.rowcount != 1:
                raise ConcurrentUpdate(f"{t.voucher} changed since it was read (version {version})")
            self._loaded[t.voucher] = (row_id, version + 1, t)
        if new:
            await self._insert(new)

    async def _insert(self, new: list[OpenTransaction]) -> None:
        """One insert for them all (Core, not ORM objects: the ORM inserts row by row on SQLite to learn the
        ids); their ids are their order of arrival. Each row's id is read back with its voucher."""
        table = table_of(OpenTransactionRow)
        rows = [OpenTransactionRow.values(t) for t in new]
        # PostgreSQL: SQLAlchemy orders the ids as the rows (sort_by_parameter_order). SQLite numbers the rows of
        # a multi-row VALUES in order; asking SQLAlchemy to guarantee it would make it insert one by one.
        returning = table.c.id, table.c.voucher
        statement = insert(table).returning(*returning, sort_by_parameter_order=self._postgres)
        connection = await self.session.connection()
        ids = {voucher: row_id for row_id, voucher in (await connection.execute(statement, rows)).all()}
        for t in new:
            self._hold(ids[t.voucher], 1, t)

    async def add(self, model: type[SQLModel], values: dict[str, Any]) -> None:
        """Insert a row of another of settlement's tables (its fields' defaults filled in); deferred: at flush,
        with the other rows of its table in one insert. Plain values, not a SQLModel object: constructing one
        costs more than the rest of a payment (pydantic inspects every default factory)."""
        row = plain_row(model, values)
        if model is SettlementRow:  # its vouchers are used from now on, written or not (used_names)
            self._used_names.update(v for v in (row["difference_voucher"], row["exchange_voucher"]) if v)
        if self._deferred:
            self._rows.setdefault(model, []).append(row)
        else:
            await insert_rows(self.session, table_of(model), [row])

    async def flush(self) -> None:
        """Write what a deferred store saved: the changes in one update (each row's version checked), the new
        transactions in one insert, in the order they were saved, then the other tables' rows (`add`), one insert
        per table."""
        if self._dirty:
            await self._update([self._loaded[v] for v in self._dirty])
            self._dirty.clear()
        if self._new:
            new = [self._loaded[v][2] for v in self._new]
            self._new.clear()
            await self._insert(new)
        rows, self._rows = self._rows, {}
        for model, values in rows.items():
            await insert_rows(self.session, table_of(model), values)

    async def _update(self, changed: list[tuple[int, int, OpenTransaction]]) -> None:
        if self._postgres:
            await self._update_by_columns(changed)
        else:
            await self._update_each(changed)
        for row_id, version, t in changed:
            self._loaded[t.voucher] = (row_id, version + 1, t)

    async def _update_by_columns(self, changed: list[tuple[int, int, OpenTransaction]]) -> None:
        """PostgreSQL: one UPDATE … FROM unnest(column arrays), which locks the rows it changes: an executemany
        is one execution a row there (~35 µs each), and needed a locking read first to check the versions."""
        connection = await self.session.connection()
        ids = [row_id for row_id, _, _ in changed]
        result = await connection.execute(
            _UPDATE_BY_COLUMNS,
            {
                "id": ids,
                "version": [version for _, version, _ in changed],
                "open_amount": [t.open_amount for _, _, t in changed],
                "accounting_open_amount": [t.accounting_open_amount for _, _, t in changed],
                "discount_taken": [t.discount_taken for _, _, t in changed],
                "auto_settle": [t.auto_settle for _, _, t in changed],
            },
        )
        updated = set(result.scalars())
        if len(updated) != len(changed):  # a row's version moved on: name the first one
            row_id, version, t = next(c for c in changed if c[0] not in updated)
            raise ConcurrentUpdate(f"{t.voucher} changed since it was read (version {version})")

    async def _update_each(self, changed: list[tuple[int, int, OpenTransaction]]) -> None:
        """SQLite: an executemany (one statement run in the driver, row by row), versions checked first."""
        table = table_of(OpenTransactionRow).c
        read = {row_id: version for row_id, version, _ in changed}
        for chunk in _chunks(sorted(read), 500):  # the customer lock's write holds the whole database already
            query = select(table.id, table.version).where(table.id.in_(chunk))
            for row_id, version in (await self.session.exec(query)).all():
                if version != read[row_id]:
                    voucher = next(t.voucher for i, _, t in changed if i == row_id)
                    raise ConcurrentUpdate(f"{voucher} changed since it was read (version {read[row_id]})")
        statement = (
            update(table_of(OpenTransactionRow))
            .where(table.id == bindparam("b_id"), table.version == bindparam("b_version"))
            .values(
                open_amount=bindparam("b_open_amount"),
                accounting_open_amount=bindparam("b_accounting_open_amount"),
                discount_taken=bindparam("b_discount_taken"),
                auto_settle=bindparam("b_auto_settle"),
                version=bindparam("b_next_version"),
            )
        )
        parameters = [
            {
                "b_id": row_id,
                "b_version": version,
                "b_open_amount": t.open_amount,
                "b_accounting_open_amount": t.accounting_open_amount,
                "b_discount_taken": t.discount_taken,
                "b_auto_settle": t.auto_settle,
                "b_next_version": version + 1,
            }
            for row_id, version, t in changed
        ]
        connection = await self.session.connection()
        result = await connection.execute(statement, parameters)
        if connection.dialect.supports_sane_multi_rowcount and result.rowcount != len(parameters):
            raise ConcurrentUpdate(f"{len(parameters) - result.rowcount} open item(s) changed since they were read")


def plain_row(model: type[SQLModel], values: dict[str, Any]) -> dict[str, Any]:
    """`values` as a Core insert takes a row of `model`'s table: every field, unnamed ones at their defaults
    (an autoincrement id left to the database)."""
    row: dict[str, Any] = {}
    for name, factory, default in _defaults(model):
        if name in values:
            row[name] = values[name]
        elif factory is not None:
            row[name] = factory()
        elif default is not PydanticUndefined:
            row[name] = default
    return row


@functools.cache
def _defaults(model: type[SQLModel]) -> tuple[tuple[str, Callable[[], Any] | None, Any], ...]:
    """Each field of `model` with its default factory or default (PydanticUndefined: none; an autoincrement
    id has none), read once: pydantic's field objects are slow to ask for every row."""
    return tuple(
        (
            name,
            field.default_factory,  # type: ignore[misc]  # pydantic allows a factory of the validated data; these take none
            PydanticUndefined if name == "id" and field.default is None else field.default,
        )
        for name, field in model.model_fields.items()
    )


def _open_debit(t: OpenTransaction, currency: str) -> bool:
    """What open_debits reads: an amount still owed in `currency` that settles automatically."""
    return t.open_amount > ZERO and t.auto_settle and t.currency == currency


def _debit_order(t: OpenTransaction) -> tuple[date, date, str]:
    return (t.due_date or t.transaction_date, t.transaction_date, t.voucher)


def _covers(loaded: OpenScope, wanted: OpenScope) -> bool:
    return loaded == "all" or wanted == "none" or loaded == wanted


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def settlement_rows(session: AsyncSession, settlement_id: str) -> list[SettlementRow]:
    """The pairs of a settlement: all settled together under that id, or the one pair with that id."""
    for condition in (SettlementRow.group_id == settlement_id, SettlementRow.settlement_id == settlement_id):
        rows = (
            await session.exec(
                select(SettlementRow)
                .where(condition)
                .order_by(col(SettlementRow.settled_at), col(SettlementRow.settlement_id))
            )
        ).all()
        if rows:
            return list(rows)
    return []


# --- what waits, what was received ----------------------------------------------------------


async def awaited_by_write_offs(session: AsyncSession, vouchers: list[str]) -> frozenset[str]:
    """Which of `vouchers` pending write-offs wait for."""
    found: set[str] = set()
    column = col(PendingWriteOffRow.voucher)
    for chunk in _chunks(vouchers, 500):  # SQLite's bound-parameter limit
        found |= set((await session.exec(select(column).where(column.in_(chunk)))).all())
    return frozenset(found)


async def pending_write_offs_naming(session: AsyncSession, voucher: str) -> list[PendingWriteOffRow]:
    """The pending write-offs waiting for `voucher`, in the order they were posted."""
    query = select(PendingWriteOffRow).where(col(PendingWriteOffRow.voucher) == voucher)
    return list((await session.exec(query.order_by(col(PendingWriteOffRow.id)))).all())


async def pending_marks_on(session: AsyncSession, invoice_ids: list[str]) -> dict[str, list[PendingMarkRow]]:
    """Invoice id -> the payments' marks waiting for it, of the invoices among `invoice_ids` that marks wait for."""
    found: dict[str, list[PendingMarkRow]] = {}
    column = col(PendingMarkRow.invoice_id)
    for chunk in _chunks(sorted(set(invoice_ids)), 500):  # SQLite's bound-parameter limit
        for row in (await session.exec(select(PendingMarkRow).where(column.in_(chunk)))).all():
            found.setdefault(row.invoice_id, []).append(row)
    return found


async def pending_marks_of_payment(session: AsyncSession, payment_id: str) -> list[PendingMarkRow]:
    query = select(PendingMarkRow).where(PendingMarkRow.payment_voucher == payment_id)
    return list((await session.exec(query)).all())


async def received_payments(session: AsyncSession, payment_ids: list[str]) -> dict[str, tuple[str, str]]:
    """Payment id -> (fingerprint, message id) of the payments among `payment_ids` received before."""
    found: dict[str, tuple[str, str]] = {}
    for chunk in _chunks(payment_ids, 500):  # SQLite's bound-parameter limit
        rows = await session.exec(
            select(PaymentRow.payment_id, PaymentRow.fingerprint, PaymentRow.message_id).where(
                col(PaymentRow.payment_id).in_(chunk)
            )
        )
        found |= {payment_id: (fingerprint, message_id) for payment_id, fingerprint, message_id in rows.all()}
    return found
