"""Invoicing's tables: posted invoices and credit notes with their lines, discount tiers and voucher."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Table
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kredit_invoicing.domain import PostedInvoice
from kredit_shared.contracts import CustomerInvoiceIssued
from kredit_shared.database import (
    ExactDecimal,
    insert_rows,
    money_field,
    optional_transaction_money_field,
    table_of,
    transaction_money_field,
)
from kredit_shared.outbox import utcnow

_INVOICE_FK = "invoicing_invoice.invoice_id"


class InvoiceRow(SQLModel, table=True):
    """One posted invoice or credit note; all its amounts are in `currency`, signed (negative on a credit note)."""

    __tablename__ = "invoicing_invoice"

    # The primary key makes invoice_id unique: of two replicas posting it at once, the second commit
    # fails, and its retry finds the first one's invoice.
    invoice_id: str = Field(primary_key=True)
    customer_account: str = Field(index=True)
    customer_name: str | None = None
    transaction_type: str  # Invoice, CreditNote, InterestNote, CollectionLetterFee or PaymentFee
    voucher: str = Field(unique=True)
    invoice_date: date
    due_date: date
    currency: str
    payment_terms: str | None = None
    cash_discount_code: str | None = None
    cash_discount_account: str | None = None
    net_amount: Decimal = transaction_money_field()  # in `currency`
    sales_tax_amount: Decimal = transaction_money_field()
    total: Decimal = transaction_money_field()
    # In a foreign currency (docs/currencies.md): the rate it is booked at (accounting-currency units per
    # one unit of `currency`) and its total in the accounting currency; None in the accounting currency.
    exchange_rate: Decimal | None = Field(default=None, sa_type=ExactDecimal(10), nullable=True)
    accounting_total: Decimal | None = Field(default=None, sa_type=ExactDecimal(2), nullable=True)
    fingerprint: str  # of the message content, to tell a repeat from a conflicting second message
    message_id: str  # of the message that posted it
    posted_at: datetime = Field(default_factory=utcnow)


class InvoiceLineRow(SQLModel, table=True):
    __tablename__ = "invoicing_invoice_line"

    invoice_id: str = Field(foreign_key=_INVOICE_FK, primary_key=True)
    line_number: int = Field(primary_key=True)
    description: str
    amount: Decimal = transaction_money_field()
    sales_tax_amount: Decimal = transaction_money_field()
    revenue_account: str | None = None  # as received; None = the setup's default (see the voucher lines)


class DiscountTierRow(SQLModel, table=True):
    __tablename__ = "invoicing_cash_discount_tier"

    invoice_id: str = Field(foreign_key=_INVOICE_FK, primary_key=True)
    tier_number: int = Field(primary_key=True)  # in date order
    percent: Decimal = Field(sa_type=ExactDecimal(4), nullable=False)
    until: date
    amount: Decimal = transaction_money_field()


class VoucherLineRow(SQLModel, table=True):
    """The invoice voucher as posted to the ledger."""

    __tablename__ = "invoicing_voucher_line"

    invoice_id: str = Field(foreign_key=_INVOICE_FK, primary_key=True)
    line_number: int = Field(primary_key=True)
    account: str
    debit: Decimal = money_field()
    credit: Decimal = money_field()
    text: str
    customer_account: str | None = None
    # The line's amount in the invoice's currency (signed, debit positive) when that is not the
    # accounting currency; `debit`/`credit` are always in the accounting currency.
    transaction_currency: str | None = None
    transaction_currency_amount: Decimal | None = optional_transaction_money_field()


TABLES = [table_of(InvoiceRow), table_of(InvoiceLineRow), table_of(DiscountTierRow), table_of(VoucherLineRow)]


async def posted_fingerprints(session: AsyncSession, invoice_ids: Iterable[str]) -> dict[str, str]:
    """invoice_id -> fingerprint of those already posted."""
    query = select(InvoiceRow.invoice_id, col(InvoiceRow.fingerprint)).where(
        col(InvoiceRow.invoice_id).in_(set(invoice_ids))
    )
    return dict((await session.exec(query)).all())


async def add_invoices(session: AsyncSession, posted: Sequence[tuple[CustomerInvoiceIssued, PostedInvoice]]) -> None:
    """Record posted invoices: one Core insert per table (ORM adds are ~10x slower on this hot path),
    the invoices first because the other rows refer to them."""
    rows: dict[Table, list[dict[str, Any]]] = {table: [] for table in TABLES}
    for message, invoice in posted:
        for table, row in invoice_rows(message, invoice):
            rows[table].append(row)
    for table in TABLES:
        await insert_rows(session, table, rows[table])


def invoice_rows(message: CustomerInvoiceIssued, posted: PostedInvoice) -> Iterator[tuple[Table, dict[str, Any]]]:
    """The rows that record a posted invoice: the invoice, its lines, tiers and voucher lines."""
    yield (
        table_of(InvoiceRow),
        {
            "invoice_id": posted.invoice_id,
            "customer_account": posted.customer_account,
            "customer_name": message.customer_name,
            "transaction_type": posted.transaction_type,
            "voucher": posted.voucher,
            "invoice_date": posted.invoice_date,
            "due_date": posted.due_date,
            "currency": posted.currency,
            "payment_terms": message.payment_terms,
            "cash_discount_code": message.cash_discount_code,
            "cash_discount_account": posted.cash_discount_account,
            "net_amount": posted.net_amount,
            "sales_tax_amount": posted.sales_tax_amount,
            "total": posted.total,
            "exchange_rate": posted.exchange_rate,
            "accounting_total": posted.accounting_total,
            "fingerprint": posted.fingerprint,
            "message_id": message.message_id,
            "posted_at": utcnow(),
        },
    )
    for n, line in enumerate(message.lines, 1):
        yield (
            table_of(InvoiceLineRow),
            {
                "invoice_id": posted.invoice_id,
                "line_number": n,
                "description": line.description,
                "amount": line.amount,
                "sales_tax_amount": line.sales_tax_amount,
                "revenue_account": line.revenue_account,
            },
        )
    for n, tier in enumerate(posted.cash_discounts, 1):
        yield (
            table_of(DiscountTierRow),
            {
                "invoice_id": posted.invoice_id,
                "tier_number": n,
                "percent": tier.percent,
                "until": tier.date,
                "amount": tier.amount,
            },
        )
    for n, voucher_line in enumerate(posted.ledger_voucher.lines, 1):
        yield (
            table_of(VoucherLineRow),
            {
                "invoice_id": posted.invoice_id,
                "line_number": n,
                "account": voucher_line.account,
                "debit": voucher_line.debit,
                "credit": voucher_line.credit,
                "text": voucher_line.text,
                "customer_account": voucher_line.customer_account,
                "transaction_currency": voucher_line.transaction_currency,
                "transaction_currency_amount": voucher_line.transaction_currency_amount,
            },
        )
