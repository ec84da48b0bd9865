"""Settlement's read models for HTTP and metrics: settlements, open transactions, what waits for a transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kredit_settlement import domain, metrics
from kredit_settlement.domain import OpenTransaction
from kredit_settlement.tables import (
    OpenItems,
    PendingMarkRow,
    PendingWriteOffRow,
    SettlementRow,
)
from kredit_shared.money import ZERO


async def settlements(session: AsyncSession, customer_account: str) -> dict[str, list[SettlementRow]]:
    """The customer's settlement history, settlement by settlement in the order they were made."""
    query = (
        select(SettlementRow)
        .where(SettlementRow.customer_account == customer_account)
        .order_by(col(SettlementRow.settled_at), col(SettlementRow.settlement_id))
    )
    groups: dict[str, list[SettlementRow]] = {}
    for row in (await session.exec(query)).all():
        groups.setdefault(row.group_id, []).append(row)
    return groups


async def open_transactions(
    session: AsyncSession, customer_account: str, include_settled: bool = False
) -> list[OpenTransaction]:
    return await OpenItems(session).of_customer(customer_account, include_settled=include_settled)


@dataclass(frozen=True)
class PendingMark:
    payment_id: str
    customer_account: str
    payment_date: date
    invoice_id: str
    amount_to_settle: Decimal | None
    use_cash_discount: str
    reserved: Decimal  # what of the payment's open credit this mark holds (domain.reservations)


async def pending_marks(session: AsyncSession, customer_account: str | None = None) -> list[PendingMark]:
    """The marks waiting for their invoice, payment by payment in order of arrival."""
    query = select(PendingMarkRow)
    if customer_account is not None:
        query = query.where(PendingMarkRow.customer_account == customer_account)
    rows = (await session.exec(query)).all()
    by_payment: dict[str, list[PendingMarkRow]] = {}
    for row in sorted(rows, key=lambda r: (r.payment_voucher, r.position)):
        by_payment.setdefault(row.payment_voucher, []).append(row)
    store = OpenItems(session)
    payments = {t.voucher: t for t in await store.find_all(list(by_payment))}
    marks = []
    for voucher in sorted(payments, key=store.arrival):
        payment = payments[voucher]
        group = by_payment[voucher]
        held = domain.reservations(-payment.open_amount, [row.to_domain() for row in group])
        marks += [
            PendingMark(
                voucher,
                row.customer_account,
                payment.transaction_date,
                row.invoice_id,
                row.amount_to_settle,
                row.use_cash_discount,
                h,
            )
            for row, h in zip(group, held)
        ]
    return marks


async def pending_write_offs(session: AsyncSession, customer_account: str | None = None) -> list[PendingWriteOffRow]:
    query = select(PendingWriteOffRow).order_by(col(PendingWriteOffRow.id))
    if customer_account is not None:
        query = query.where(PendingWriteOffRow.customer_account == customer_account)
    return list((await session.exec(query)).all())


async def refresh_pending_gauges(session: AsyncSession) -> None:
    """Set the pending gauges from the database (shared by every replica), as /metrics is scraped."""
    marks = await pending_marks(session)
    metrics.PENDING_MARKS.set(len(marks))
    metrics.RESERVED_AMOUNT.set(float(sum((m.reserved for m in marks), ZERO)))
    metrics.PENDING_WRITE_OFFS.set(len(await pending_write_offs(session)))
