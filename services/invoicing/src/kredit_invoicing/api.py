"""HTTP read side of invoicing: posted invoices with their computed due date and discount tiers."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kredit_invoicing.tables import DiscountTierRow, InvoiceLineRow, InvoiceRow, VoucherLineRow
from kredit_shared.auth import Role, require
from kredit_shared.contracts import ExchangeRate, Id
from kredit_shared.currencies import format_rate
from kredit_shared.money import CENT, Amount, TransactionAmount
from kredit_shared.service import SessionDep

# Read-only: every route is a viewer's.
router = APIRouter(prefix="/api/v1/invoices", tags=["invoices"], dependencies=[require(Role.viewer)])


class LineOut(BaseModel):
    description: str
    amount: TransactionAmount
    sales_tax_amount: TransactionAmount
    revenue_account: str | None


class DiscountTierOut(BaseModel):
    percent: str
    date: date
    amount: TransactionAmount


def _is_none(value: object) -> bool:
    return value is None


# Foreign-currency fields are left out in the accounting currency: those responses stay as they were.
def _foreign(description: str) -> Any:
    return Field(default=None, exclude_if=_is_none, description=description)


class VoucherLineOut(BaseModel):
    """A line of the invoice voucher; `debit` and `credit` are in the accounting currency."""

    account: str
    debit: Amount
    credit: Amount
    text: str
    customer_account: str | None
    transaction_currency: str | None = _foreign("the invoice's currency, when it is not the accounting currency")
    transaction_currency_amount: TransactionAmount | None = _foreign(
        "the line in the invoice's currency, signed (debit positive); only in a foreign currency"
    )


class InvoiceOut(BaseModel):
    """A posted invoice or credit note; amounts are signed (negative on a credit note)."""

    invoice_id: str
    customer_account: str
    customer_name: str | None
    type: str
    voucher: str
    invoice_date: date
    due_date: date
    currency: str
    payment_terms: str | None
    cash_discount_code: str | None
    cash_discount_account: str | None
    cash_discounts: list[DiscountTierOut]
    net_amount: TransactionAmount
    sales_tax_amount: TransactionAmount
    total: TransactionAmount
    exchange_rate: ExchangeRate | None = _foreign(
        "accounting-currency units per one unit of `currency` the invoice is booked at; only in a foreign currency"
    )
    accounting_total: Amount | None = _foreign("the total in the accounting currency; only in a foreign currency")
    lines: list[LineOut]
    voucher_lines: list[VoucherLineOut]


class InvoiceListOut(BaseModel):
    customer_account: str
    invoices: list[InvoiceOut]


@router.get("/{invoice_id}", responses={404: {"description": "No invoice or credit note with this id"}})
async def get_invoice(invoice_id: Id, session: SessionDep) -> InvoiceOut:
    invoice = await session.get(InvoiceRow, invoice_id)
    if invoice is None:
        raise HTTPException(404, f"invoice {invoice_id!r} is unknown: no invoice or credit note with that id is posted")
    [found] = await _with_details(session, [invoice])
    return found


@router.get("")
async def list_invoices(customer_account: Annotated[Id, Query()], session: SessionDep) -> InvoiceListOut:
    """The customer's invoices and credit notes, oldest first."""
    query = (
        select(InvoiceRow)
        .where(InvoiceRow.customer_account == customer_account)
        .order_by(col(InvoiceRow.invoice_date), col(InvoiceRow.invoice_id))
    )
    invoices = (await session.exec(query)).all()
    return InvoiceListOut(customer_account=customer_account, invoices=await _with_details(session, invoices))


_DetailRow = InvoiceLineRow | DiscountTierRow | VoucherLineRow


async def _with_details(session: AsyncSession, invoices: Sequence[InvoiceRow]) -> list[InvoiceOut]:
    """Load the lines, tiers and voucher lines of all `invoices` with one query per table."""
    ids = [i.invoice_id for i in invoices]
    lines: defaultdict[str, list[Any]] = defaultdict(list)
    tiers: defaultdict[str, list[Any]] = defaultdict(list)
    voucher: defaultdict[str, list[Any]] = defaultdict(list)
    details: list[tuple[type[_DetailRow], int, defaultdict[str, list[Any]]]] = [
        (InvoiceLineRow, InvoiceLineRow.line_number, lines),
        (DiscountTierRow, DiscountTierRow.tier_number, tiers),
        (VoucherLineRow, VoucherLineRow.line_number, voucher),
    ]
    for table, number, into in details:
        query = select(table).where(col(table.invoice_id).in_(ids)).order_by(col(number))
        for row in (await session.exec(query)).all():
            into[row.invoice_id].append(row)  # type: ignore[attr-defined]  # a row of one of the three detail tables
    return [
        InvoiceOut(
            **i.model_dump(exclude={"transaction_type", "fingerprint", "message_id", "posted_at", "exchange_rate"}),
            type=i.transaction_type,
            exchange_rate=None if i.exchange_rate is None else format_rate(i.exchange_rate),
            cash_discounts=[
                DiscountTierOut(percent=_percent(t.percent), date=t.until, amount=t.amount) for t in tiers[i.invoice_id]
            ],
            lines=[LineOut.model_validate(line, from_attributes=True) for line in lines[i.invoice_id]],
            voucher_lines=[VoucherLineOut.model_validate(v, from_attributes=True) for v in voucher[i.invoice_id]],
        )
        for i in invoices
    ]


def _percent(value: Decimal) -> str:
    """Two decimals like the setup's "1.00", more only where the value has them ("1.125")."""
    return format(value.quantize(CENT) if value == value.quantize(CENT) else value.normalize(), "f")
