"""Settlement's use cases, one per message or command: load → domain → save → emit, in one transaction."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from kredit_settlement import domain, metrics
from kredit_settlement.domain import InvoiceSettlement, Mark, MarkPreview, OpenTransaction, SettlementResult
from kredit_settlement.tables import (
    OpenItems,
    ParametersRow,
    PaymentRow,
    PendingMarkRow,
    PendingWriteOffRow,
    SettlementRow,
    load_parameters,
    lock_customer,
)
from kredit_shared.company_setup import CompanySetup
from kredit_shared.contracts import (
    AR_CUSTOMER_TRANSACTIONS,
    ERP_CUSTOMER_PAYMENTS,
    GL_JOURNAL_EVENTS,
    CashDiscountTier,
    CustomerPaymentReceived,
    CustomerTransactionPosted,
    JournalEvent,
    JournalPosted,
    OpenItemsSettled,
    PostedJournalLine,
    VoucherLine,
    VoucherPosted,
)
from kredit_shared.money import ZERO
from kredit_shared.outbox import utcnow
from kredit_shared.service import Rejected, Transaction


@dataclass(frozen=True)
class Postings:
    """The part of the company setup settlement books with."""

    accounting_currency: str
    main_accounts: frozenset[str]
    bank_account: str
    summary_account: str
    cash_discount_account: str  # for invoices that name none
    parameters: domain.SettlementParameters  # the seed of the parameters row

    @classmethod
    def from_setup(cls, setup: CompanySetup) -> Postings:
        # The setup has no default discount account of its own; every demo discount code posts to 520100.
        discount_accounts = sorted({code.account for code in setup.cash_discount_codes.values()})
        return cls(
            accounting_currency=setup.accounting_currency,
            main_accounts=frozenset(setup.main_accounts),
            bank_account=setup.default_bank_account,
            summary_account=setup.customer_posting_profile.summary_account,
            cash_discount_account=discount_accounts[0] if discount_accounts else "520100",
            parameters=domain.SettlementParameters(setup.settlement.calculate_cash_discounts_for_partial_payments),
        )


# --- ar.customer-transactions ---------------------------------------------------------------


async def record_customer_transaction(postings: Postings, tx: Transaction, event: CustomerTransactionPosted) -> None:
    """Keep a new invoice or credit note as an open item and settle it with what is waiting for it."""
    store = OpenItems(tx.session)
    await lock_customer(tx.session, event.customer_account)
    if known := await store.find(event.voucher):
        if (known.transaction_type, known.customer_account, known.original_amount) != (
            event.transaction_type,
            event.customer_account,
            event.amount,
        ):
            raise Rejected(
                f"voucher {event.voucher} is already a {known.transaction_type} of customer "
                f"{known.customer_account} for {known.original_amount}"
            )
        return  # settlement's own postings come back on this topic; a re-sent transaction changes nothing
    if event.transaction_type not in (*domain.DEBIT_DOCUMENTS, "CreditNote"):
        raise Rejected(
            f"{event.transaction_type} {event.voucher} is unknown: settlement posts payments, cash "
            f"discounts and write-offs itself and takes only invoices and credit notes from others"
        )
    if (event.transaction_type in domain.DEBIT_DOCUMENTS and event.amount < 0) or (
        event.transaction_type == "CreditNote" and event.amount > 0
    ):
        raise Rejected(f"{event.transaction_type} {event.voucher} has the wrong sign: amount {event.amount}")
    new = _open_transaction(event)
    transactions = await store.of_customer(
        event.customer_account, invoice_ids=[event.invoice_id] if event.invoice_id else ()
    )
    if event.invoice_id and any(t.invoice_id == event.invoice_id for t in transactions):
        raise Rejected(f"invoice id {event.invoice_id} of {event.voucher} is already used by another transaction")
    await store.save([new])
    problems: list[str] = []
    if event.transaction_type in domain.DEBIT_DOCUMENTS:
        problems += await _settle_waiting_credits(postings, tx, store, new, transactions)
    else:
        results = domain.settle_new_transaction(new, transactions)
        after = [new, *transactions]
        for result in results:
            after = domain.apply_settlement(after, result)
        await store.save(after)
        _record_settlements(tx, results, source=event.voucher)
    problems += await _settle_pending_write_offs(tx, store, event.voucher)
    if problems:
        tx.dead_letter(
            AR_CUSTOMER_TRANSACTIONS,
            event,
            f"{event.transaction_type} {event.voucher} was recorded, but what waited for it could not "
            f"all be settled: " + "; ".join(problems),
        )


async def _settle_waiting_credits(
    postings: Postings, tx: Transaction, store: OpenItems, invoice: OpenTransaction, others: list[OpenTransaction]
) -> list[str]:
    """Settle a new invoice with the payments' pending marks on it and the customer's automatic credits,
    in the order the credits arrived: the result is the same as if the invoice had come first
    (docs/ordering.md). Returns the reasons of marks that could not be settled (the rows are dropped)."""
    pending = (
        await tx.session.exec(select(PendingMarkRow).where(PendingMarkRow.invoice_id == invoice.invoice_id))
    ).all()
    payments = await store.of_customer(invoice.customer_account, vouchers=[row.payment_voucher for row in pending])
    by_voucher = {t.voucher: t for t in [*others, *payments]}
    credits: list[tuple[OpenTransaction, Mark | None]] = [
        (by_voucher[row.payment_voucher], row.to_domain()) for row in pending if row.payment_voucher in by_voucher
    ]
    credits += [(t, None) for t in others if t.open_amount < 0 and t.auto_settle]
    credits.sort(key=lambda c: store.arrival(c[0].voucher))
    for row in pending:
        await tx.session.delete(row)
    parameters = (await load_parameters(tx.session, postings.parameters)).to_domain()
    results = domain.settle_new_invoice(invoice, credits, parameters)
    problems = [f"pending mark of payment {r.credit_voucher}: {m.reason}" for r in results for m in r.rejected_marks]
    after = [invoice, *by_voucher.values()]
    for result in results:
        after = await _post_settlement(
            postings, tx, store, result, after, source=f"{invoice.voucher}:{result.credit_voucher}"
        )
    metrics.count_on_commit(tx.session, "resolved", len(pending))
    return problems


async def _settle_pending_write_offs(tx: Transaction, store: OpenItems, voucher: str) -> list[str]:
    """Settle the posted write-offs that named this transaction before settlement knew it, in the order
    they were posted. Returns what could not be settled (it stays open on the write-off)."""
    pending = (
        await tx.session.exec(
            select(PendingWriteOffRow).where(PendingWriteOffRow.voucher == voucher).order_by(PendingWriteOffRow.id)
        )
    ).all()
    problems: list[str] = []
    for row in pending:
        await tx.session.delete(row)
        write_off = await store.find(row.write_off_voucher)
        if write_off is None:
            continue
        named = await store.of_customer(write_off.customer_account, vouchers=[voucher])
        outcome = domain.settle_write_off(write_off, [(voucher, row.amount)], named)
        await store.save([outcome.write_off, *outcome.settled])
        for pair in outcome.pairs:
            _record(
                tx,
                OpenItemsSettled(
                    settlement_id=f"{write_off.voucher}:{voucher}",
                    customer_account=write_off.customer_account,
                    settlement_date=write_off.transaction_date,
                    currency=write_off.currency,
                    debit_voucher=pair.debit_voucher,
                    credit_voucher=pair.credit_voucher,
                    amount_settled=pair.amount,
                ),
            )
        problems += [
            f"write-off {write_off.voucher} (journal {row.journal_batch_number}): {s}" for s in outcome.shortfalls
        ]
    return problems


def _open_transaction(event: CustomerTransactionPosted) -> OpenTransaction:
    return OpenTransaction(
        voucher=event.voucher,
        customer_account=event.customer_account,
        transaction_type=event.transaction_type,
        transaction_date=event.transaction_date,
        currency=event.currency,
        original_amount=event.amount,
        open_amount=event.amount,
        invoice_id=event.invoice_id,
        due_date=event.due_date,
        cash_discounts=tuple(domain.DiscountTier(t.date, t.percent, t.amount) for t in event.cash_discounts),
        cash_discount_account=event.cash_discount_account,
    )


# --- erp.customer-payments ------------------------------------------------------------------


async def receive_payment(postings: Postings, tx: Transaction, payment: CustomerPaymentReceived) -> None:
    """Post the payment (money arrived), settle it per its marks or automatically, post the discounts taken."""
    if payment.currency != postings.accounting_currency:
        raise Rejected(
            f"payment {payment.payment_id} is in {payment.currency}; payments are accepted "
            f"in the accounting currency {postings.accounting_currency} only"
        )
    bank_account = payment.bank_account or postings.bank_account
    if bank_account not in postings.main_accounts:
        raise Rejected(f"payment {payment.payment_id}: bank account {bank_account!r} is not a main account")
    try:
        credit = domain.new_payment(
            payment.payment_id, payment.customer_account, payment.payment_date, payment.amount, payment.currency
        )
    except domain.InvalidPayment as e:
        raise Rejected(str(e)) from None
    await lock_customer(tx.session, payment.customer_account)
    if await _already_received(tx.session, payment):
        return
    store = OpenItems(tx.session)
    if await store.known_vouchers([payment.payment_id]):
        raise Rejected(
            f"payment {payment.payment_id}: voucher {payment.payment_id} is already used by another transaction"
        )

    parameters = (await load_parameters(tx.session, postings.parameters)).to_domain()
    marks = [Mark(m.invoice_id, m.amount_to_settle, m.use_cash_discount) for m in payment.settle or []] or None
    if marks is not None:
        credit = replace(credit, auto_settle=False)
    transactions = await store.of_customer(payment.customer_account, invoice_ids=[m.invoice_id for m in marks or []])
    tx.session.add(
        PaymentRow(
            payment_id=payment.payment_id,
            message_id=payment.message_id,
            customer_account=payment.customer_account,
            payment_date=payment.payment_date,
            amount=payment.amount,
            currency=payment.currency,
            bank_account=bank_account,
            fingerprint=_fingerprint(payment),
        )
    )
    tx.emit(_transaction_posted(credit, payment_id=payment.payment_id))
    tx.emit(_voucher(credit, bank_account, postings.summary_account, f"Payment {payment.payment_id}"))
    await store.save([credit])
    result = domain.settle_credit(credit, transactions, marks=marks, parameters=parameters)
    await _post_settlement(postings, tx, store, result, [credit, *transactions], source=payment.payment_id)
    problems = await _settle_pending_write_offs(tx, store, payment.payment_id)
    positions = {m.invoice_id: n for n, m in reversed(list(enumerate(marks or [])))}
    waiting = [r for r in result.rejected_marks if r.invoice_unknown]
    for mark in waiting:  # state, not an error: the payment's money waits for the invoice (docs/ordering.md)
        original = (marks or [])[positions[mark.invoice_id]]
        tx.session.add(
            PendingMarkRow(
                payment_voucher=payment.payment_id,
                invoice_id=original.invoice_id,
                customer_account=payment.customer_account,
                position=positions[mark.invoice_id],
                amount_to_settle=original.amount_to_settle,
                use_cash_discount=original.use_cash_discount,
            )
        )
    metrics.count_on_commit(tx.session, "kept", len(waiting))
    problems = [
        f"invoice {r.invoice_id!r}: {r.reason}" for r in result.rejected_marks if not r.invoice_unknown
    ] + problems
    if problems:
        tx.dead_letter(
            ERP_CUSTOMER_PAYMENTS,
            payment,
            f"rejected mark(s) of payment {payment.payment_id}: {'; '.join(problems)}. The payment was "
            f"posted; {result.unused_amount} of it is open as a credit"
            + (f", {len(waiting)} mark(s) wait for their invoice" if waiting else ""),
        )


async def _post_settlement(
    postings: Postings,
    tx: Transaction,
    store: OpenItems,
    result: SettlementResult,
    transactions: list[OpenTransaction],
    source: str,
) -> list[OpenTransaction]:
    """Post the cash discounts a credit's settlement takes, save, and publish the settlements.
    Returns `transactions` after it."""
    credit = next(t for t in transactions if t.voucher == result.credit_voucher)
    discounted = [s for s in result.settlements if s.cash_discount]
    discount_vouchers = dict(
        zip(
            [s.debit_voucher for s in discounted], await _cash_discount_vouchers(store, credit.voucher, len(discounted))
        )
    )
    discounts = [_cash_discount(credit, s, discount_vouchers[s.debit_voucher], postings) for s in discounted]
    after = domain.apply_settlement(transactions, result)
    await store.save([*after, *discounts])
    for discount in discounts:
        tx.emit(_transaction_posted(discount, payment_id=credit.voucher))
        tx.emit(
            _voucher(
                discount,
                discount.cash_discount_account or postings.cash_discount_account,
                postings.summary_account,
                f"Cash discount on payment {credit.voucher}",
            )
        )
    _record_settlements(tx, [result], source=source, discount_vouchers=discount_vouchers)
    return after


def _fingerprint(payment: CustomerPaymentReceived) -> str:
    return hashlib.sha256(payment.model_dump_json(exclude={"message_id"}).encode()).hexdigest()


async def _already_received(session: AsyncSession, payment: CustomerPaymentReceived) -> bool:
    """True for a re-send of a received payment; Rejected if the same payment id comes with other content."""
    known = await session.get(PaymentRow, payment.payment_id)
    if known is None:
        return False
    if known.fingerprint != _fingerprint(payment):
        raise Rejected(
            f"payment {payment.payment_id} was already received (message {known.message_id}) "
            f"with different content; a payment id cannot be reused"
        )
    return True


async def _cash_discount_vouchers(store: OpenItems, payment_id: str, count: int) -> list[str]:
    taken: set[str] = set()
    while True:
        vouchers = domain.cash_discount_vouchers(payment_id, count, taken)
        clash = await store.known_vouchers(vouchers) if vouchers else set()
        if not clash:
            return vouchers
        taken |= clash


def _cash_discount(
    credit: OpenTransaction, settled: InvoiceSettlement, voucher: str, postings: Postings
) -> OpenTransaction:
    """The discount as a customer credit, settled in full against its invoice at once."""
    return OpenTransaction(
        voucher=voucher,
        customer_account=credit.customer_account,
        transaction_type="CashDiscount",
        transaction_date=credit.transaction_date,
        currency=credit.currency,
        original_amount=-settled.cash_discount,
        open_amount=ZERO,
        cash_discount_account=settled.cash_discount_account or postings.cash_discount_account,
    )


# --- gl.journal-events ----------------------------------------------------------------------


async def settle_write_offs(postings: Postings, tx: Transaction, event: JournalEvent) -> None:
    """Post each Customer line of a posted journal as a WriteOff transaction and settle what it names.

    The ledger voucher is ledger-posting's; nothing named can stop the posting, so differences are reported."""
    if not isinstance(event, JournalPosted):
        return
    lines = [line for line in event.lines if line.account_type == "Customer"]
    store = OpenItems(tx.session)
    vouchers = _line_vouchers(lines)
    known = await store.known_vouchers(vouchers)
    for account in sorted({line.account for line, v in zip(lines, vouchers) if v not in known}):
        await lock_customer(tx.session, account)  # in one order, so two journals never wait on each other
    todo = []
    for line, voucher in zip(lines, vouchers):
        if voucher in known:
            continue
        amount = line.debit - line.credit
        # Never applied automatically: what it could not settle is a discrepancy for a person to look at.
        write_off = OpenTransaction(
            voucher, line.account, "WriteOff", line.transaction_date, line.currency, amount, amount, auto_settle=False
        )
        refs = [(ref.voucher, ref.amount) for ref in line.settles]
        todo.append(
            (line, voucher, write_off, refs, await store.of_customer(line.account, vouchers=[v for v, _ in refs]))
        )
    lines_naming = Counter(v for *_, refs, _ in todo for v in {v for v, _ in refs})
    problems = [f"{v} is named by {n} lines" for v, n in lines_naming.items() if n > 1]
    problems += [
        f"{voucher}: {problem}"
        for _, voucher, write_off, refs, transactions in todo
        for problem in domain.write_off_problems(write_off, refs, transactions)
    ]
    if problems:
        tx.dead_letter(
            GL_JOURNAL_EVENTS,
            event,
            f"journal {event.batch_number} was posted, but it names transactions settlement cannot settle as "
            f"stated, so none of it was applied: " + "; ".join(problems),
        )
        return
    for line, voucher, write_off, refs, transactions in todo:
        outcome = domain.settle_write_off(write_off, refs, transactions)
        await store.save([outcome.write_off, *outcome.settled])
        for named, held in outcome.pending:  # settlement lags behind collections: settled when it arrives
            tx.session.add(
                PendingWriteOffRow(
                    write_off_voucher=voucher,
                    voucher=named,
                    customer_account=line.account,
                    amount=held,
                    journal_batch_number=event.batch_number,
                )
            )
        tx.emit(_transaction_posted(write_off))
        for n, pair in enumerate(outcome.pairs, 1):
            _record(
                tx,
                OpenItemsSettled(
                    settlement_id=f"{voucher}:{n}",
                    customer_account=line.account,
                    settlement_date=line.transaction_date,
                    currency=line.currency,
                    debit_voucher=pair.debit_voucher,
                    credit_voucher=pair.credit_voucher,
                    amount_settled=pair.amount,
                ),
            )
        if outcome.shortfalls:
            tx.dead_letter(
                GL_JOURNAL_EVENTS,
                event,
                f"journal {event.batch_number}, write-off {voucher} of customer {line.account} was posted, "
                f"but not everything it names was open: " + "; ".join(outcome.shortfalls),
            )


def _line_vouchers(lines: Sequence[PostedJournalLine]) -> list[str]:
    """A customer transaction voucher per line: the line's voucher, suffixed when lines share one."""
    seen: dict[str, int] = {}
    vouchers = []
    for line in lines:
        seen[line.voucher] = seen.get(line.voucher, 0) + 1
        vouchers.append(line.voucher if seen[line.voucher] == 1 else f"{line.voucher}-{seen[line.voucher]}")
    return vouchers


# --- emitting -------------------------------------------------------------------------------


def _record_settlements(
    tx: Transaction, results: Iterable[SettlementResult], source: str, discount_vouchers: dict[str, str] | None = None
) -> None:
    """One OpenItemsSettled per settled pair, numbered after the transaction that caused them."""
    n = 0
    for result in results:
        for s in result.settlements:
            n += 1
            _record(
                tx,
                OpenItemsSettled(
                    settlement_id=f"{source}:{n}",
                    customer_account=result.customer_account,
                    settlement_date=result.settlement_date,
                    currency=result.currency,
                    debit_voucher=s.debit_voucher,
                    credit_voucher=result.credit_voucher,
                    amount_settled=s.cash_applied,
                    cash_discount_amount=s.cash_discount,
                    cash_discount_voucher=(discount_vouchers or {}).get(s.debit_voucher) if s.cash_discount else None,
                ),
            )


def _record(tx: Transaction, settled: OpenItemsSettled) -> None:
    tx.session.add(SettlementRow(**settled.model_dump(exclude={"message_id"})))
    tx.emit(settled)


def _transaction_posted(t: OpenTransaction, payment_id: str | None = None) -> CustomerTransactionPosted:
    return CustomerTransactionPosted(
        voucher=t.voucher,
        transaction_type=t.transaction_type,
        customer_account=t.customer_account,  # type: ignore[arg-type]
        transaction_date=t.transaction_date,
        invoice_id=t.invoice_id,
        amount=t.original_amount,
        currency=t.currency,
        due_date=t.due_date,
        payment_id=payment_id,
        cash_discounts=[CashDiscountTier(percent=d.percent, date=d.date, amount=d.amount) for d in t.cash_discounts],
    )


def _voucher(credit: OpenTransaction, debit_account: str, summary_account: str, text: str) -> VoucherPosted:
    """Debit `debit_account`, credit the customer's summary account, by what the customer credit is worth."""
    amount = -credit.original_amount
    return VoucherPosted(
        voucher=credit.voucher,
        posting_date=credit.transaction_date,
        currency=credit.currency,
        source="settlement",
        description=text,
        lines=[
            VoucherLine(account=debit_account, debit=amount, text=text),
            VoucherLine(account=summary_account, credit=amount, text=text, customer_account=credit.customer_account),
        ],
    )


# --- HTTP commands and queries --------------------------------------------------------------


class UnknownInvoice(LookupError):
    pass


async def get_parameters(postings: Postings, session: AsyncSession) -> ParametersRow:
    return await load_parameters(session, postings.parameters)


async def update_parameters(
    postings: Postings, session: AsyncSession, *, calculate_cash_discounts_for_partial_payments: bool
) -> ParametersRow:
    row = await load_parameters(session, postings.parameters)
    row.calculate_cash_discounts_for_partial_payments = calculate_cash_discounts_for_partial_payments
    row.updated_at = utcnow()
    session.add(row)
    return row


async def preview_settlement(
    postings: Postings, session: AsyncSession, customer_account: str, payment_date: date, marks: Sequence[Mark]
) -> list[MarkPreview]:
    """The *Settle open transactions* page: what each mark would take if paid on `payment_date`.

    Raises UnknownInvoice for an invoice nobody posted, domain.MarkRejected for one that cannot be settled."""
    parameters = (await load_parameters(session, postings.parameters)).to_domain()
    transactions = await OpenItems(session).of_customer(customer_account, invoice_ids=[m.invoice_id for m in marks])
    previews = []
    for mark in marks:
        if not any(t.invoice_id == mark.invoice_id for t in transactions):
            raise UnknownInvoice(f"no invoice {mark.invoice_id!r} is known")
        invoice = domain.find_marked_invoice(mark, transactions, customer_account)
        previews.append(domain.preview_mark(invoice, payment_date, mark, parameters))
    return previews


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
    query = select(PendingWriteOffRow).order_by(PendingWriteOffRow.id)
    if customer_account is not None:
        query = query.where(PendingWriteOffRow.customer_account == customer_account)
    return list((await session.exec(query)).all())


class NothingToRelease(Exception):
    pass


async def release_payment(postings: Postings, tx: Transaction, payment_id: str) -> SettlementResult | None:
    """An operator's decision: a marked payment's money is no longer held for its marks. Its pending marks
    are dropped and its open credit becomes an ordinary automatic one, applied now to the customer's open
    invoices (oldest due date first, `Normal` discount as of the payment date) and to invoices that come later.

    Raises LookupError for an unknown payment, NothingToRelease when it holds nothing."""
    known = await tx.session.get(PaymentRow, payment_id)
    if known is None:
        raise LookupError(f"no payment {payment_id!r} is known")
    await lock_customer(tx.session, known.customer_account)
    store = OpenItems(tx.session)
    payment = await store.find(payment_id)
    if payment is None or payment.auto_settle or payment.open_amount >= 0:
        raise NothingToRelease(
            f"payment {payment_id} holds nothing: "
            + ("it settles automatically already" if payment and payment.auto_settle else "nothing of it is open")
        )
    rows = (await tx.session.exec(select(PendingMarkRow).where(PendingMarkRow.payment_voucher == payment_id))).all()
    for row in rows:
        await tx.session.delete(row)
    metrics.count_on_commit(tx.session, "released", len(rows))
    payment = replace(payment, auto_settle=True)
    await store.save([payment])
    transactions = await store.of_customer(payment.customer_account)
    transactions = [t for t in transactions if t.voucher != payment_id]
    parameters = (await load_parameters(tx.session, postings.parameters)).to_domain()
    result = domain.settle_credit(payment, transactions, parameters=parameters)
    await _post_settlement(postings, tx, store, result, [payment, *transactions], source=f"{payment_id}:released")
    return result


async def refresh_pending_gauges(session: AsyncSession) -> None:
    """Set the pending gauges from the database (shared by every replica), as /metrics is scraped."""
    marks = await pending_marks(session)
    metrics.PENDING_MARKS.set(len(marks))
    metrics.RESERVED_AMOUNT.set(float(sum((m.reserved for m in marks), ZERO)))
    metrics.PENDING_WRITE_OFFS.set(len(await pending_write_offs(session)))
