"""Settlement's HTTP commands (the parameters, settling and reversing by hand, releasing a payment): load →
domain → save → emit, in the request's transaction."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from kredit_settlement import domain, metrics
from kredit_settlement.domain import Mark, MarkPreview, OpenTransaction, SettledPair, SettlementResult
from kredit_settlement.posting import (
    SettlementSetup,
    parameters_of,
    post,
    post_discount,
    record,
)
from kredit_settlement.tables import (
    OpenItems,
    ParametersRow,
    PaymentRow,
    load_parameters,
    lock_customer,
    pending_marks_of_payment,
    settlement_rows,
)
from kredit_shared.service import UnitOfWork


async def get_parameters(setup: SettlementSetup, session: AsyncSession) -> ParametersRow:
    return await load_parameters(session, setup.parameters)


async def update_parameters(setup: SettlementSetup, session: AsyncSession, changes: dict[str, Any]) -> ParametersRow:
    """Change the parameters named in `changes` (already domain values); InvalidParameters if the result
    contradicts itself or the setup."""
    row = await load_parameters(session, setup.parameters)
    changed = replace(row.to_domain(), **changes)
    domain.check_parameters(changed, setup.accounts)
    row.update(changed, changes)
    session.add(row)
    return row


async def preview_settlement(
    setup: SettlementSetup,
    session: AsyncSession,
    customer_account: str,
    payment_date: date,
    marks: Sequence[Mark],
    discount_date: date | None = None,
) -> list[MarkPreview]:
    """The *Settle open transactions* page: what each mark would take if settled on `payment_date` (discounts as
    of `discount_date` when given). A mark may name an invoice, a credit note or an open payment.

    Raises domain.Unknown for a transaction nobody posted, domain.MarkRejected for one that cannot be settled."""
    parameters = await parameters_of(session, setup)
    named = [m.invoice_id for m in marks]
    transactions = await OpenItems(session).of_customer(customer_account, invoice_ids=named, vouchers=named)
    return domain.preview_marks(marks, transactions, customer_account, payment_date, parameters, discount_date)


@dataclass(frozen=True)
class Settled:
    """A settlement (or reversal) a person made: its id, its pairs and the transactions they moved, after."""

    settlement_id: str
    customer_account: str
    settlement_date: date
    pairs: list[SettledPair]
    transactions: list[OpenTransaction]


async def settle_transactions(
    setup: SettlementSetup,
    uow: UnitOfWork,
    customer_account: str,
    marks: Sequence[Mark],
    on: date | None,
    discount_date: date | None = None,
) -> Settled:
    """Settle posted transactions a person marked against each other (D365 *Settle transactions*). Raises
    domain.MarksRejected, and settles nothing, if a mark cannot be settled."""
    await lock_customer(uow.session, customer_account)
    store = OpenItems(uow.session)
    named = [m.invoice_id for m in marks]
    transactions = await store.of_customer(customer_account, invoice_ids=named, vouchers=named)
    parameters = await parameters_of(uow.session, setup)
    # Undated: on the latest date of what is marked, so a settlement of old items is not dated today.
    marked = {t.transaction_date for t in transactions if t.invoice_id in named or t.voucher in named}
    on = on or max(marked, default=date.today())
    results = domain.settle_marked(
        transactions, marks, customer_account, on, discount_date=discount_date, parameters=parameters
    )
    settlement_id = f"STL-{uuid.uuid4().hex[:12].upper()}"
    after = await post(setup, uow, store, results, transactions, settlement_id)
    pairs = [r.to_domain() for r in await settlement_rows(uow.session, settlement_id)]
    return Settled(settlement_id, customer_account, on, pairs, _moved(after, pairs))


def _moved(transactions: Iterable[OpenTransaction], pairs: Iterable[SettledPair]) -> list[OpenTransaction]:
    named = {v for p in pairs for v in (p.debit_voucher, p.credit_voucher)}
    return [t for t in transactions if t.voucher in named and t.transaction_type != "CashDiscount"]


async def reverse_settlement(
    setup: SettlementSetup, uow: UnitOfWork, settlement_id: str, on: date | None = None
) -> Settled:
    """Undo a settlement (all its pairs, or one pair by its own id) by new, opposite postings. domain.Unknown for an unknown id,
    domain.ReversalRefused for one reversed before, a reversal, or one that cannot be reversed here (a write-off)."""
    rows = await settlement_rows(uow.session, settlement_id)
    if not rows:
        raise domain.Unknown(f"no settlement {settlement_id!r} is known")
    await lock_customer(uow.session, rows[0].customer_account)
    rows = await settlement_rows(uow.session, settlement_id)  # again, under the lock
    domain.check_reversible(settlement_id, [(r.reversed_by, r.reversal_of) for r in rows])
    pairs = [r.to_domain() for r in rows]
    on = on or max(p.settlement_date for p in pairs)
    store = OpenItems(uow.session)
    named = {v for p in pairs for v in (p.debit_voucher, p.credit_voucher, p.cash_discount_voucher) if v}
    reversal = domain.reverse(pairs, await store.find_all(named), on)
    if clash := await store.known_vouchers([d.voucher for d in reversal.discounts]):
        raise domain.ReversalRefused(f"voucher(s) {', '.join(sorted(clash))} are taken")
    await store.save([*reversal.transactions, *reversal.discounts])
    for discount in reversal.discounts:
        post_discount(uow, setup, discount, f"Reversed cash discount, settlement {settlement_id}")
    reversal_id = f"{settlement_id}:reversed"
    for row in rows:
        row.reversed_by = reversal_id
        uow.session.add(row)
    await record(setup, uow, store, reversal.pairs, group_id=reversal_id, reversal_of=settlement_id)
    return Settled(
        reversal_id, rows[0].customer_account, on, list(reversal.pairs), _moved(reversal.transactions, pairs)
    )


async def release_payment(setup: SettlementSetup, uow: UnitOfWork, payment_id: str) -> SettlementResult:
    """An operator's decision: a marked payment's money is no longer held for its marks. Its pending marks
    are dropped and its open credit becomes an ordinary automatic one, applied now to the customer's open
    invoices (oldest due date first, `Normal` discount as of the payment date) and to invoices that come later.

    Raises domain.Unknown for an unknown payment, domain.NothingToRelease when it holds nothing."""
    known = await uow.session.get(PaymentRow, payment_id)
    if known is None:
        raise domain.Unknown(f"no payment {payment_id!r} is known")
    await lock_customer(uow.session, known.customer_account)
    store = OpenItems(uow.session)
    payment = domain.release(payment_id, await store.find(payment_id))
    rows = await pending_marks_of_payment(uow.session, payment_id)
    for row in rows:
        await uow.session.delete(row)
    metrics.count_on_commit(uow, "released", len(rows))
    await store.save([payment])
    transactions = [t for t in await store.of_customer(payment.customer_account) if t.voucher != payment_id]
    results = domain.settle_payment(payment, transactions, parameters=await parameters_of(uow.session, setup))
    await post(setup, uow, store, results, [payment, *transactions], settlement_id=f"{payment_id}:released")
    return results[0]
