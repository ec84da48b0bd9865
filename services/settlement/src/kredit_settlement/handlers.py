"""Settlement's message handlers, one per topic, each fetch in one transaction: load → domain → save → emit."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

from kredit_settlement import domain, metrics
from kredit_settlement.domain import Mark, OpenTransaction, SettlementResult
from kredit_settlement.posting import (
    SettlementSetup,
    parameters_of,
    post,
    rates_of,
    record_write_off_pairs,
    send_voucher,
    transaction_posted,
    voucher_of,
)
from kredit_settlement.tables import (
    OpenItems,
    OpenScope,
    PaymentRow,
    PendingMarkRow,
    PendingWriteOffRow,
    awaited_by_write_offs,
    lock_customers,
    pending_marks_on,
    pending_write_offs_naming,
    received_payments,
)
from kredit_shared.contracts import (
    AR_CUSTOMER_TRANSACTIONS,
    ERP_CUSTOMER_PAYMENTS,
    GL_JOURNAL_EVENTS,
    CustomerPaymentReceived,
    CustomerTransactionPosted,
    JournalEvent,
    JournalPosted,
    SettleMark,
    digest,
)
from kredit_shared.contracts.parsing import parsed_json
from kredit_shared.currencies import Rates
from kredit_shared.exchange_rates import keep_until_rate
from kredit_shared.service import Rejected, UnitOfWork

M = TypeVar("M", CustomerTransactionPosted, CustomerPaymentReceived, JournalPosted)


@dataclass(frozen=True)
class _Batch:
    """What the messages of one fetch share: one transaction, the customers' locks, the open items read once."""

    setup: SettlementSetup
    uow: UnitOfWork
    store: OpenItems
    parameters: domain.SettlementParameters
    rates: Rates
    # Read for the whole batch at once (None: not read, ask the database): payment id -> (fingerprint, message
    # id) of the payments received, kept up to date as the batch receives more; the transactions pending
    # write-offs wait for (only the journal handler adds those, so they do not grow in the other batches);
    # invoice id -> the pending marks waiting for it, taken out as they are settled (only the payments handler
    # adds those).
    received: dict[str, tuple[str, str]] | None = None
    awaited_by_write_offs: frozenset[str] | None = None
    pending_marks: dict[str, list[PendingMarkRow]] | None = None
    # The transactions known before the batch locked anything, by voucher (record_customer_transactions).
    known: Mapping[str, OpenTransaction] = field(default_factory=dict)


async def _batch(
    setup: SettlementSetup,
    uow: UnitOfWork,
    customers: Iterable[str],
    scope: OpenScope,
    vouchers: Iterable[str] = (),
    invoice_ids: Iterable[str] = (),
    awaited: Iterable[str] | None = None,
) -> _Batch:
    """Lock the customers, read their open items (`scope`), the transactions `vouchers` and `invoice_ids` name,
    and which of `awaited` pending write-offs wait for (None: not read, each asks), at once. The store writes at the end (_each)."""
    customers = list(customers)
    await lock_customers(uow.session, customers)
    store = OpenItems(uow.session, deferred=True)
    await store.load_customers(customers, scope)
    await store.read_names(list(invoice_ids), list(vouchers))
    return _Batch(
        setup,
        uow,
        store,
        await parameters_of(uow.session, setup),
        await rates_of(uow.session, setup),
        awaited_by_write_offs=None if awaited is None else await awaited_by_write_offs(uow.session, list(awaited)),
    )


async def _each(
    batch: _Batch, topic: str, messages: Sequence[M], handle: Callable[[_Batch, M], Awaitable[None]]
) -> None:
    """Handle the messages in fetch order (so each customer's in order). One the domain rejects changed nothing
    (every check comes before the first write): it alone goes to the dead-letter topic, the rest commit.
    The open items the batch changed are written at the end, in one insert and one update."""
    for message in messages:
        try:
            await handle(batch, message)
        except Rejected as e:
            batch.uow.reject(topic, message, str(e))
    await batch.store.flush()


async def _one(batch: _Batch, message: M, handle: Callable[[_Batch, M], Awaitable[None]]) -> None:
    """One message on its own: Rejected (nothing written) if it cannot be taken."""
    await handle(batch, message)
    await batch.store.flush()


# --- ar.customer-transactions ---------------------------------------------------------------


async def record_customer_transactions(
    setup: SettlementSetup, uow: UnitOfWork, events: list[CustomerTransactionPosted]
) -> None:
    # Settlement's own postings come back on this topic. A known transaction is only compared with its event
    # (its type, customer and amount never change, so it is read before any lock): its customer needs no lock
    # and none of its open items. The batch reads the others under their customers' locks.
    known = {t.voucher: t for t in await OpenItems(uow.session).find_all([e.voucher for e in events])}
    fresh = [e for e in events if e.voucher not in known]
    # A new invoice is settled with the customer's open credits; a credit note reads the open debits itself.
    customers, vouchers = [e.customer_account for e in fresh], [e.voucher for e in fresh]
    invoice_ids = [e.invoice_id for e in fresh if e.invoice_id]
    batch = await _batch(setup, uow, customers, "credits", vouchers, invoice_ids, awaited=vouchers)
    pending = await pending_marks_on(uow.session, invoice_ids)
    # The names the discounts and differences of the new credit notes and the marked payments may take (read
    # together with the first one a posting needs).
    credits = [e.voucher for e in fresh if e.transaction_type == "CreditNote"]
    credits += [row.payment_voucher for rows in pending.values() for row in rows]
    batch.store.expect_names(v for credit in credits for v in domain.first_vouchers(credit, 1))
    batch = replace(batch, known=known, pending_marks=pending)
    await _each(batch, AR_CUSTOMER_TRANSACTIONS, events, _record_transaction)


async def record_customer_transaction(
    setup: SettlementSetup, uow: UnitOfWork, event: CustomerTransactionPosted
) -> None:
    """One transaction on its own; Rejected if it cannot be taken."""
    batch = await _batch(setup, uow, [event.customer_account], "credits", [event.voucher])
    await _one(batch, event, _record_transaction)


async def _record_transaction(batch: _Batch, event: CustomerTransactionPosted) -> None:
    """Keep a new debit (invoice, interest note, fee) or credit note as an open item and settle it with what
    waits for it."""
    setup, uow, store, parameters = batch.setup, batch.uow, batch.store, batch.parameters
    transaction, known = _open_transaction(event), store.held(event.voucher) or batch.known.get(event.voucher)
    # A known voucher (settlement's own postings come back on this topic) needs none of the customer's items.
    others: list[OpenTransaction] = []
    try:
        if known is None:
            domain.check_currency(f"{event.transaction_type} {event.voucher}", event.currency, setup.accounts)
            others = await store.of_customer(
                event.customer_account,
                invoice_ids=[event.invoice_id] if event.invoice_id else (),
                scope="credits" if transaction.is_debit else "all",
            )
        taken = bool(event.invoice_id) and any(t.invoice_id == event.invoice_id for t in others)
        new = domain.admit_transaction(transaction, known, taken, parameters, setup.accounting_currency)
    except domain.TransactionRejected as e:
        raise Rejected(str(e)) from None
    if new is None:
        return  # settlement's own postings come back on this topic; a re-sent transaction changes nothing
    await store.save([new])
    problems = await _settle_waiting_credits(batch, new, others)
    if not new.is_debit:
        results = domain.settle_new_transaction(new, others, parameters)
        await post(setup, uow, store, results, [new, *others], settlement_id=event.voucher)
    problems += await _settle_pending_write_offs(batch, event.voucher)
    if problems:
        uow.dead_letter(
            AR_CUSTOMER_TRANSACTIONS,
            event,
            f"{event.transaction_type} {event.voucher} was recorded, but what waited for it could not "
            f"all be settled: " + "; ".join(problems),
        )


async def _settle_waiting_credits(batch: _Batch, new: OpenTransaction, others: list[OpenTransaction]) -> list[str]:
    """Settle a new debit with the payments' pending marks on it and the customer's automatic credits, in the
    order the credits arrived: the result is the same as if it had come first (docs/ordering.md). Returns the
    reasons of marks that could not be settled (their rows are dropped)."""
    setup, uow, store, parameters = batch.setup, batch.uow, batch.store, batch.parameters
    pending = await _pending_marks(batch, new.invoice_id) if new.invoice_id else []
    for row in pending:
        await uow.session.delete(row)
    metrics.count_on_commit(uow, "resolved", len(pending))
    if not new.is_debit:
        return domain.refused_pending_marks(new, [row.payment_voucher for row in pending])
    payments = await store.of_customer(
        new.customer_account, vouchers=[row.payment_voucher for row in pending], scope="none"
    )
    by_voucher = {t.voucher: t for t in [*others, *payments]}
    marked = [
        (by_voucher[row.payment_voucher], row.to_domain()) for row in pending if row.payment_voucher in by_voucher
    ]
    credits = domain.waiting_credits(marked, others, store.arrival, parameters)
    results = domain.settle_new_invoice(new, credits, parameters)
    after = [new, *by_voucher.values()]
    for result in results:
        after = await post(setup, uow, store, [result], after, f"{new.voucher}:{result.credit_voucher}")
    return [f"pending mark of payment {r.credit_voucher}: {m.reason}" for r in results for m in r.rejected_marks]


async def _pending_marks(batch: _Batch, invoice_id: str) -> list[PendingMarkRow]:
    """The pending marks waiting for `invoice_id`, for the caller to settle and delete."""
    if batch.pending_marks is None:
        return (await pending_marks_on(batch.uow.session, [invoice_id])).get(invoice_id, [])
    return batch.pending_marks.pop(invoice_id, [])


async def _settle_pending_write_offs(batch: _Batch, voucher: str) -> list[str]:
    """Settle the posted write-offs that named this transaction before settlement knew it, in the order
    they were posted. Returns what could not be settled (it stays open on the write-off)."""
    setup, uow, store = batch.setup, batch.uow, batch.store
    if batch.awaited_by_write_offs is not None and voucher not in batch.awaited_by_write_offs:
        return []
    pending = await pending_write_offs_naming(uow.session, voucher)
    problems: list[str] = []
    for row in pending:
        await uow.session.delete(row)
        write_off = await store.find(row.write_off_voucher)
        if write_off is None:
            continue
        named = await store.of_customer(write_off.customer_account, vouchers=[voucher])
        accounting = {voucher: row.accounting_amount} if row.accounting_amount is not None else None
        outcome = domain.settle_write_off(write_off, [(voucher, row.amount)], named, accounting)
        await store.save([outcome.write_off, *outcome.settled])
        await record_write_off_pairs(
            setup, uow, store, write_off, outcome.pairs, f"{write_off.voucher}:{voucher}", numbered=False
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
        # Invoicing states the rate and accounting amount of a foreign-currency transaction; absent: rate 1.
        exchange_rate=event.exchange_rate if event.exchange_rate is not None else domain.model.ONE,
        accounting_original_amount=event.accounting_amount,
        accounting_open_amount=event.accounting_amount,
    )


# --- erp.customer-payments ------------------------------------------------------------------


def mark_of(mark: SettleMark) -> Mark:
    return Mark(
        mark.invoice_id,
        mark.amount_to_settle,
        mark.use_cash_discount,
        mark.full_settlement,
        mark.cash_discount_amount,
        tuple(mark.model_extra or ()),
    )


async def receive_payments(setup: SettlementSetup, uow: UnitOfWork, payments: list[CustomerPaymentReceived]) -> None:
    batch = await _payments_batch(setup, uow, payments)
    await _each(batch, ERP_CUSTOMER_PAYMENTS, payments, _receive_payment)


async def receive_payment(setup: SettlementSetup, uow: UnitOfWork, payment: CustomerPaymentReceived) -> None:
    """One payment on its own; Rejected if it cannot be taken."""
    await _one(await _payments_batch(setup, uow, [payment]), payment, _receive_payment)


async def _payments_batch(setup: SettlementSetup, uow: UnitOfWork, payments: list[CustomerPaymentReceived]) -> _Batch:
    """A marked payment reads what it names, an unmarked one the open debits it can reach (_reachable_debits).
    What every payment of the batch asks the database is read here at once: the payments received before under
    these ids, the transactions with their vouchers (a clash), what their marks name, pending write-offs."""
    ids = [p.payment_id for p in payments]
    named = [m.invoice_id for p in payments for m in p.settle or ()]
    customers = [p.customer_account for p in payments]
    batch = await _batch(setup, uow, customers, "none", vouchers=[*ids, *named], invoice_ids=named, awaited=ids)
    if not batch.parameters.automatic_priority:  # the automatic payments' first debits (_reachable_debits)
        automatic = [(p.customer_account, p.currency) for p in payments if not p.settle]
        await batch.store.read_debit_windows(automatic, _FIRST_DEBITS)
    # The names the payments' discounts and differences may take, as many of each as a payment has marks (read
    # together with the first one a posting needs).
    batch.store.expect_names(v for p in payments for v in domain.first_vouchers(p.payment_id, len(p.settle or ()) or 1))
    return replace(batch, received=await received_payments(uow.session, ids))


async def _receive_payment(batch: _Batch, payment: CustomerPaymentReceived) -> None:
    """Post the payment (money arrived), settle it per its marks or automatically, post what that takes."""
    setup, uow, store, parameters = batch.setup, batch.uow, batch.store, batch.parameters
    bank_account = payment.bank_account or setup.bank_account
    marks = [mark_of(m) for m in payment.settle] if payment.settle else None
    try:
        domain.admit_payment(
            payment.payment_id, payment.currency, bank_account, setup.accounting_currency, setup.main_accounts
        )
        domain.check_currency(f"payment {payment.payment_id}", payment.currency, setup.accounts)
        rate = domain.payment_rate(
            payment.payment_id, payment.currency, payment.payment_date, payment.exchange_rate, batch.rates
        )
        credit = domain.new_payment(
            payment.payment_id,
            payment.customer_account,
            payment.payment_date,
            payment.amount,
            payment.currency,
            marked=marks is not None,
            discount_date=payment.date_to_use_for_calculating_discounts,
            automatic_settlement=parameters.automatic_settlement,
            exchange_rate=rate,
            accounting_currency=setup.accounting_currency,
        )
    except domain.PaymentAwaitsRate as e:  # dead-lettered, and booked when its rate arrives
        await keep_until_rate(uow, ERP_CUSTOMER_PAYMENTS, payment, e.currency, e.on, str(e))
        return
    except domain.TransactionRejected as e:
        raise Rejected(str(e)) from None
    if await _already_received(batch, payment):
        return
    if await store.known_vouchers([payment.payment_id]):
        raise Rejected(
            f"payment {payment.payment_id}: voucher {payment.payment_id} is already used by another transaction"
        )
    if marks:
        named = [m.invoice_id for m in marks]
        transactions = await store.of_customer(
            payment.customer_account, invoice_ids=named, vouchers=named, scope="none"
        )
    else:
        transactions = await _reachable_debits(store, credit, parameters)
    fingerprint = _fingerprint(payment)
    await store.add(PaymentRow, PaymentRow.values(payment, bank_account, fingerprint, rate))
    if batch.received is not None:
        batch.received[payment.payment_id] = (fingerprint, payment.message_id)
    uow.emit(transaction_posted(setup, credit, payment_id=payment.payment_id))
    send_voucher(uow, voucher_of(setup, credit, bank_account, f"Payment {payment.payment_id}"))
    await store.save([credit])
    results = domain.settle_payment(credit, transactions, marks=marks, parameters=parameters)
    await post(setup, uow, store, results, [credit, *transactions], settlement_id=payment.payment_id)
    result = next(r for r in results if r.credit_voucher == payment.payment_id)
    problems = await _settle_pending_write_offs(batch, payment.payment_id)
    waiting = _keep_pending_marks(uow, payment, marks or [], result)
    problems = [
        f"invoice {r.invoice_id!r}: {r.reason}" for r in result.rejected_marks if not r.invoice_unknown
    ] + problems
    if problems:
        uow.dead_letter(
            ERP_CUSTOMER_PAYMENTS,
            payment,
            f"rejected mark(s) of payment {payment.payment_id}: {'; '.join(problems)}. The payment was "
            f"posted; {result.unused_amount} of it is open as a credit"
            + (f", {waiting} mark(s) wait for their invoice" if waiting else ""),
        )


_FIRST_DEBITS = 64  # the open debits an automatic payment reads first, 8× more each round it needs more


async def _reachable_debits(
    store: OpenItems, credit: OpenTransaction, parameters: domain.SettlementParameters
) -> list[OpenTransaction]:
    """The open debits automatic settlement of `credit` can reach: the first ones in settlement order, more
    each round until its cash runs out on them, not all of a customer's 10,000 open invoices. With priority
    rules, all of the customer's open items: the database cannot sort by those."""
    if parameters.automatic_priority:
        return await store.of_customer(credit.customer_account)
    limit = _FIRST_DEBITS
    while True:
        debits = await store.open_debits(credit.customer_account, credit.currency, limit)
        if len(debits) < limit or not domain.reaches_beyond(credit, debits, parameters=parameters):
            return debits
        limit *= 8


def _keep_pending_marks(
    uow: UnitOfWork, payment: CustomerPaymentReceived, marks: Sequence[Mark], result: SettlementResult
) -> int:
    """Keep the marks on invoices not known yet: state, not an error; the payment's money waits for them."""
    waiting = domain.marks_to_keep(marks, result.rejected_marks)
    for position, mark in waiting:
        uow.session.add(
            PendingMarkRow(
                payment_voucher=payment.payment_id,
                invoice_id=mark.invoice_id,
                customer_account=payment.customer_account,
                position=position,
                amount_to_settle=mark.amount_to_settle,
                use_cash_discount=mark.use_cash_discount,
                full_settlement=mark.full_settlement,
                cash_discount_amount=mark.cash_discount_amount,
            )
        )
    metrics.count_on_commit(uow, "kept", len(waiting))
    return len(waiting)


def _fingerprint(payment: CustomerPaymentReceived) -> str:
    return digest(parsed_json(payment, exclude={"message_id"}))  # model_dump_json's, as stored since the first payment


async def _already_received(batch: _Batch, payment: CustomerPaymentReceived) -> bool:
    """True for a re-send of a received payment; Rejected if the same payment id comes with other content."""
    if batch.received is not None:
        known = batch.received.get(payment.payment_id)
    elif row := await batch.uow.session.get(PaymentRow, payment.payment_id):
        known = (row.fingerprint, row.message_id)
    else:
        known = None
    if known is None:
        return False
    fingerprint, message_id = known
    if fingerprint != _fingerprint(payment):
        raise Rejected(
            f"payment {payment.payment_id} was already received (message {message_id}) "
            f"with different content; a payment id cannot be reused"
        )
    return True


# --- gl.journal-events ----------------------------------------------------------------------


async def settle_write_off_journals(setup: SettlementSetup, uow: UnitOfWork, events: list[JournalEvent]) -> None:
    journals = [e for e in events if isinstance(e, JournalPosted)]
    batch = await _batch(setup, uow, _customers_of(journals), "none")
    await _each(batch, GL_JOURNAL_EVENTS, journals, _settle_write_offs)


async def settle_write_offs(setup: SettlementSetup, uow: UnitOfWork, event: JournalEvent) -> None:
    """One journal event on its own."""
    if isinstance(event, JournalPosted):
        await _one(await _batch(setup, uow, _customers_of([event]), "none"), event, _settle_write_offs)


def _customers_of(journals: Iterable[JournalPosted]) -> list[str]:
    return [line.account for e in journals for line in e.lines if line.account_type == "Customer"]


async def _settle_write_offs(batch: _Batch, event: JournalPosted) -> None:
    """Post each Customer line of a posted journal as a WriteOff transaction and settle what it names.

    The ledger voucher is ledger-posting's; nothing named can stop the posting, so differences are reported."""
    setup, uow, store = batch.setup, batch.uow, batch.store
    lines = [line for line in event.lines if line.account_type == "Customer"]
    differences = domain.exchange_difference_lines(lines, setup.accounting_currency)
    lines = [line for n, line in enumerate(lines) if n not in differences]
    vouchers = domain.line_vouchers([line.voucher for line in lines])
    known = await store.known_vouchers(vouchers)
    todo = []
    for line, voucher in zip(lines, vouchers):
        if voucher in known:
            continue
        write_off = domain.write_off_transaction(
            voucher,
            line.account,
            line.transaction_date,
            line.currency,
            line.debit - line.credit,
            line.exchange_rate,
            [ref.accounting_amount for ref in line.settles],
        )
        refs = [(ref.voucher, ref.amount) for ref in line.settles]
        todo.append(
            (line, voucher, write_off, refs, await store.of_customer(line.account, vouchers=[v for v, _ in refs]))
        )
    problems = domain.named_by_several_lines([v for v, _ in refs] for *_, refs, _ in todo)
    problems += [
        f"{voucher}: {problem}"
        for _, voucher, write_off, refs, transactions in todo
        for problem in domain.write_off_problems(write_off, refs, transactions)
    ]
    if problems:
        uow.reject(
            GL_JOURNAL_EVENTS,
            event,
            f"journal {event.batch_number} was posted, but it names transactions settlement cannot settle as "
            f"stated, so none of it was applied: " + "; ".join(problems),
        )
        return
    for line, voucher, write_off, refs, transactions in todo:
        accounting_of = {ref.voucher: ref.accounting_amount for ref in line.settles}
        outcome = domain.settle_write_off(write_off, refs, transactions, accounting_of)
        await store.save([outcome.write_off, *outcome.settled])
        for named, held in outcome.pending:  # settlement lags behind collections: settled when it arrives
            uow.session.add(
                PendingWriteOffRow(
                    write_off_voucher=voucher,
                    voucher=named,
                    customer_account=line.account,
                    amount=held,
                    accounting_amount=accounting_of[named] if accounting_of[named] != held else None,
                    journal_batch_number=event.batch_number,
                )
            )
        uow.emit(transaction_posted(setup, write_off))
        await record_write_off_pairs(setup, uow, store, write_off, outcome.pairs, voucher, numbered=True)
        if outcome.shortfalls:
            uow.dead_letter(
                GL_JOURNAL_EVENTS,
                event,
                f"journal {event.batch_number}, write-off {voucher} of customer {line.account} was posted, "
                f"but not everything it names was open: " + "; ".join(outcome.shortfalls),
            )
