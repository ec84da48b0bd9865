"""Settlement's use cases, one per message or command: load → domain → save → emit, in one transaction."""

from __future__ import annotations

import hashlib
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from typing import Any, TypeVar

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kredit_settlement import domain, metrics
from kredit_settlement.domain import Mark, MarkPreview, OpenTransaction, SettledPair, SettlementResult
from kredit_settlement.tables import (
    OpenItems,
    OpenScope,
    ParametersRow,
    PaymentRow,
    PendingMarkRow,
    PendingWriteOffRow,
    SettlementRow,
    load_parameters,
    lock_customer,
    lock_customers,
)
from kredit_shared.company_setup import CompanySetup, SetupError
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
    SettleMark,
    VoucherLine,
    VoucherPosted,
)
from kredit_shared.currencies import Rates
from kredit_shared.exchange_rates import load_rates
from kredit_shared.money import ZERO
from kredit_shared.service import Rejected, UnitOfWork

M = TypeVar("M", CustomerTransactionPosted, CustomerPaymentReceived, JournalPosted)


@dataclass(frozen=True)
class SettlementSetup:
    """The company setup as settlement needs it: the accounts it books to, the seed of its parameters row,
    and the company setup itself for the exchange rates."""

    accounting_currency: str
    main_accounts: frozenset[str]
    bank_account: str
    summary_account: str
    cash_discount_account: str | None  # for discounts of transactions that name none
    parameters: domain.SettlementParameters  # the seed of the parameters row
    penny_difference_account: str | None = None
    overpayment_underpayment_account: str | None = None
    realized_gain_account: str | None = None  # the setup's exchange_accounts (docs/currencies.md)
    realized_loss_account: str | None = None
    company: CompanySetup | None = None  # for the exchange rates (load_rates); None: no rates set up

    @property
    def accounts(self) -> domain.Accounts:
        return domain.Accounts(
            self.cash_discount_account,
            self.penny_difference_account,
            self.overpayment_underpayment_account,
            self.accounting_currency,
            self.realized_gain_account,
            self.realized_loss_account,
        )

    @property
    def books_exchange_differences(self) -> bool:
        return self.realized_gain_account is not None and self.realized_loss_account is not None

    def foreign(self, currency: str) -> bool:
        return currency != self.accounting_currency

    @classmethod
    def from_setup(cls, company: CompanySetup) -> SettlementSetup:
        seed = company.settlement
        parameters = domain.SettlementParameters(
            seed.calculate_cash_discounts_for_partial_payments,
            seed.calculate_cash_discounts_for_credit_notes,
            seed.maximum_penny_difference,
            seed.maximum_overpayment_or_underpayment,
            domain.CashDiscountAdministration(seed.cash_discount_administration),
            seed.automatic_settlement,
            seed.prioritize_settlement,
            seed.use_priority_for_automatic_settlements,
            tuple(domain.priority_rule(**rule.model_dump()) for rule in seed.settlement_priority),
        )
        setup = cls(
            accounting_currency=company.accounting_currency,
            main_accounts=frozenset(company.main_accounts),
            bank_account=company.default_bank_account,
            summary_account=company.customer_posting_profile.summary_account,
            cash_discount_account=domain.default_discount_account(
                seed.accounts.cash_discount, (code.account for code in company.cash_discount_codes.values())
            ),
            parameters=parameters,
            penny_difference_account=seed.accounts.penny_difference,
            overpayment_underpayment_account=seed.accounts.customer_overpayment_underpayment,
            realized_gain_account=company.exchange_accounts.realized_gain if company.exchange_accounts else None,
            realized_loss_account=company.exchange_accounts.realized_loss if company.exchange_accounts else None,
            company=company,
        )
        try:
            domain.check_parameters(parameters, setup.accounts)
        except domain.InvalidParameters as e:
            raise SetupError(f"company setup: settlement.{e}") from None
        return setup


async def _parameters(session: AsyncSession, setup: SettlementSetup) -> domain.SettlementParameters:
    return (await load_parameters(session, setup.parameters)).to_domain()


async def _rates(session: AsyncSession, setup: SettlementSetup) -> Rates:
    """The exchange rates documents that state none are booked at: read once per batch."""
    if setup.company is None:
        return Rates(setup.accounting_currency)
    return await load_rates(session, setup.company)


def _foreign_problem(setup: SettlementSetup, what: str, currency: str) -> str | None:
    """Why a document in `currency` cannot be taken: in a foreign currency its settlement may realize an
    exchange difference, which needs the setup's exchange_accounts."""
    if setup.foreign(currency) and not setup.books_exchange_differences:
        return (
            f"{what} is in {currency}, not the accounting currency {setup.accounting_currency}, and the company "
            f"setup names no exchange_accounts for the realized exchange differences its settlement may post"
        )
    return None


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
    # write-offs wait for (only the journal handler adds those, so they do not grow in the other batches).
    received: dict[str, tuple[str, str]] | None = None
    awaited_by_write_offs: frozenset[str] | None = None


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
        await _parameters(uow.session, setup),
        await _rates(uow.session, setup),
        awaited_by_write_offs=None if awaited is None else await _awaited_by_write_offs(uow.session, list(awaited)),
    )


async def _awaited_by_write_offs(session: AsyncSession, vouchers: list[str]) -> frozenset[str]:
    found: set[str] = set()
    for start in range(0, len(vouchers), 500):  # SQLite's bound-parameter limit
        column = col(PendingWriteOffRow.voucher)
        found |= set((await session.exec(select(column).where(column.in_(vouchers[start : start + 500])))).all())
    return frozenset(found)


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
    # A new invoice is settled with the customer's open credits; a credit note reads the open debits itself.
    customers, vouchers = [e.customer_account for e in events], [e.voucher for e in events]
    invoice_ids = [e.invoice_id for e in events if e.invoice_id]
    batch = await _batch(setup, uow, customers, "credits", vouchers, invoice_ids, awaited=vouchers)
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
    transaction, known = _open_transaction(event), store.held(event.voucher)
    if known is None and (
        problem := _foreign_problem(setup, f"{event.transaction_type} {event.voucher}", event.currency)
    ):
        raise Rejected(problem)
    # A known voucher (settlement's own postings come back on this topic) needs none of the customer's items.
    others: list[OpenTransaction] = []
    if known is None:
        others = await store.of_customer(
            event.customer_account,
            invoice_ids=[event.invoice_id] if event.invoice_id else (),
            scope="credits" if transaction.is_debit else "all",
        )
    taken = bool(event.invoice_id) and any(t.invoice_id == event.invoice_id for t in others)
    try:
        new = domain.admit_transaction(transaction, known, taken, parameters, setup.accounting_currency)
    except domain.TransactionRejected as e:
        raise Rejected(str(e)) from None
    if new is None:
        return  # settlement's own postings come back on this topic; a re-sent transaction changes nothing
    await store.save([new])
    problems = await _settle_waiting_credits(setup, uow, store, new, others, parameters)
    if not new.is_debit:
        results = domain.settle_new_transaction(new, others, parameters)
        await _post(setup, uow, store, results, [new, *others], settlement_id=event.voucher)
    problems += await _settle_pending_write_offs(batch, event.voucher)
    if problems:
        uow.dead_letter(
            AR_CUSTOMER_TRANSACTIONS,
            event,
            f"{event.transaction_type} {event.voucher} was recorded, but what waited for it could not "
            f"all be settled: " + "; ".join(problems),
        )


async def _settle_waiting_credits(
    setup: SettlementSetup,
    uow: UnitOfWork,
    store: OpenItems,
    new: OpenTransaction,
    others: list[OpenTransaction],
    parameters: domain.SettlementParameters,
) -> list[str]:
    """Settle a new debit with the payments' pending marks on it and the customer's automatic credits, in the
    order the credits arrived: the result is the same as if it had come first (docs/ordering.md). Returns the
    reasons of marks that could not be settled (their rows are dropped)."""
    pending = (
        (await uow.session.exec(select(PendingMarkRow).where(PendingMarkRow.invoice_id == new.invoice_id))).all()
        if new.invoice_id
        else []
    )
    for row in pending:
        await uow.session.delete(row)
    metrics.count_on_commit(uow.session, "resolved", len(pending))
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
        after = await _post(setup, uow, store, [result], after, f"{new.voucher}:{result.credit_voucher}")
    return [f"pending mark of payment {r.credit_voucher}: {m.reason}" for r in results for m in r.rejected_marks]


async def _settle_pending_write_offs(batch: _Batch, voucher: str) -> list[str]:
    """Settle the posted write-offs that named this transaction before settlement knew it, in the order
    they were posted. Returns what could not be settled (it stays open on the write-off)."""
    setup, uow, store = batch.setup, batch.uow, batch.store
    if batch.awaited_by_write_offs is not None and voucher not in batch.awaited_by_write_offs:
        return []
    pending = (
        await uow.session.exec(
            select(PendingWriteOffRow)
            .where(col(PendingWriteOffRow.voucher) == voucher)
            .order_by(col(PendingWriteOffRow.id))
        )
    ).all()
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
        await _record_write_off_pairs(
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
    return replace(batch, received=await _received(uow.session, ids))


async def _received(session: AsyncSession, payment_ids: list[str]) -> dict[str, tuple[str, str]]:
    found: dict[str, tuple[str, str]] = {}
    for start in range(0, len(payment_ids), 500):  # SQLite's bound-parameter limit
        rows = await session.exec(
            select(PaymentRow.payment_id, PaymentRow.fingerprint, PaymentRow.message_id).where(
                col(PaymentRow.payment_id).in_(payment_ids[start : start + 500])
            )
        )
        found |= {payment_id: (fingerprint, message_id) for payment_id, fingerprint, message_id in rows.all()}
    return found


async def _receive_payment(batch: _Batch, payment: CustomerPaymentReceived) -> None:
    """Post the payment (money arrived), settle it per its marks or automatically, post what that takes."""
    setup, uow, store, parameters = batch.setup, batch.uow, batch.store, batch.parameters
    bank_account = payment.bank_account or setup.bank_account
    marks = [mark_of(m) for m in payment.settle] if payment.settle else None
    try:
        domain.admit_payment(
            payment.payment_id, payment.currency, bank_account, setup.accounting_currency, setup.main_accounts
        )
        if problem := _foreign_problem(setup, f"payment {payment.payment_id}", payment.currency):
            raise domain.TransactionRejected(problem)
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
    uow.emit(_transaction_posted(setup, credit, payment_id=payment.payment_id))
    _send_voucher(uow, _voucher(setup, credit, bank_account, f"Payment {payment.payment_id}"))
    await store.save([credit])
    results = domain.settle_payment(credit, transactions, marks=marks, parameters=parameters)
    await _post(setup, uow, store, results, [credit, *transactions], settlement_id=payment.payment_id)
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
    positions = {m.invoice_id: n for n, m in reversed(list(enumerate(marks)))}
    waiting = [r for r in result.rejected_marks if r.invoice_unknown]
    for rejected in waiting:
        mark = marks[positions[rejected.invoice_id]]
        uow.session.add(
            PendingMarkRow(
                payment_voucher=payment.payment_id,
                invoice_id=mark.invoice_id,
                customer_account=payment.customer_account,
                position=positions[rejected.invoice_id],
                amount_to_settle=mark.amount_to_settle,
                use_cash_discount=mark.use_cash_discount,
                full_settlement=mark.full_settlement,
                cash_discount_amount=mark.cash_discount_amount,
            )
        )
    metrics.count_on_commit(uow.session, "kept", len(waiting))
    return len(waiting)


def _fingerprint(payment: CustomerPaymentReceived) -> str:
    return hashlib.sha256(payment.model_dump_json(exclude={"message_id"}).encode()).hexdigest()


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


# --- posting a settlement -------------------------------------------------------------------


async def _post(
    setup: SettlementSetup,
    uow: UnitOfWork,
    store: OpenItems,
    results: Sequence[SettlementResult],
    transactions: list[OpenTransaction],
    settlement_id: str,
) -> list[OpenTransaction]:
    """Book the results (discount transactions, differences, settled pairs), save, and publish.
    Returns `transactions` after them."""
    vouchers = {
        key: await _free_vouchers(uow.session, store, *key, count)
        for key, count in domain.vouchers_needed(results, transactions, setup.accounts).items()
    }
    booking = domain.book(results, transactions, settlement_id, vouchers, setup.accounts)
    await store.save([*booking.transactions, *booking.discounts])
    credit_of = {p.cash_discount_voucher or p.debit_voucher: p.credit_voucher for p in booking.pairs}
    for discount in booking.discounts:
        credit = credit_of[discount.voucher]
        uow.emit(_transaction_posted(setup, discount, payment_id=credit))
        _send_voucher(
            uow,
            _voucher(
                setup,
                discount,
                setup.accounts.for_discount(discount.cash_discount_account),
                f"Cash discount settling {credit}",
            ),
        )
    await _record(setup, uow, store, booking.pairs, group_id=settlement_id)
    return list(booking.transactions)


async def _free_vouchers(session: AsyncSession, store: OpenItems, prefix: str, credit: str, count: int) -> list[str]:
    await store.flush()  # the settlement rows' vouchers are looked up in the database
    taken: set[str] = set()
    while True:
        vouchers = domain.numbered_vouchers(prefix, credit, count, taken)
        clash = await store.known_vouchers(vouchers)
        for column in (col(SettlementRow.difference_voucher), col(SettlementRow.exchange_voucher)):
            found = (await session.exec(select(column).where(column.in_(vouchers)))).all()
            clash |= {v for v in found if v is not None}
        if not clash:
            return vouchers
        taken |= clash


async def _record(
    setup: SettlementSetup,
    uow: UnitOfWork,
    store: OpenItems,
    pairs: Iterable[SettledPair],
    group_id: str,
    reversal_of: str | None = None,
) -> None:
    """Keep and publish settled pairs, and post the differences they wrote off."""
    for pair in pairs:
        await store.add(SettlementRow, SettlementRow.values(pair, group_id, reversal_of))
        uow.emit(_settled(setup, pair))
        again = "reversed " if reversal_of else ""
        if pair.difference_amount and pair.difference_voucher and pair.difference_account:
            _send_voucher(
                uow,
                _ledger(
                    setup,
                    pair.difference_voucher,
                    pair.settlement_date,
                    pair.currency,
                    pair.customer_account,
                    -pair.difference_amount,  # an underpayment written off credits the customer
                    -pair.difference_accounting,
                    pair.difference_account,
                    f"Settlement {pair.settlement_id}: {again}difference written off",
                ),
            )
        if pair.realized_loss and pair.exchange_voucher and pair.exchange_account:
            # A loss credits the customer's summary account in the accounting currency only (EUR 0.00).
            _send_voucher(
                uow,
                _ledger(
                    setup,
                    pair.exchange_voucher,
                    pair.settlement_date,
                    pair.currency,
                    pair.customer_account,
                    ZERO,
                    -pair.realized_loss,
                    pair.exchange_account,
                    f"Settlement {pair.settlement_id}: {again}realized exchange "
                    + ("loss" if pair.realized_loss > 0 else "gain"),
                ),
            )


async def _record_write_off_pairs(
    setup: SettlementSetup,
    uow: UnitOfWork,
    store: OpenItems,
    write_off: OpenTransaction,
    pairs: Iterable[domain.PairSettled],
    source: str,
    numbered: bool,
) -> None:
    for n, pair in enumerate(pairs, 1):
        accounting = pair.amount if pair.accounting_amount is None else pair.accounting_amount
        fx: dict[str, Any] = {}
        if setup.foreign(write_off.currency):
            fx = {
                "debit_accounting_amount": accounting,
                "credit_accounting_amount": accounting,
                "cash_discount_accounting_amount": ZERO,
                "difference_accounting_amount": ZERO,
                "realized_exchange_loss": ZERO,
            }
        settled = SettledPair(
            f"{source}:{n}" if numbered else source,
            write_off.customer_account,
            write_off.transaction_date,
            write_off.currency,
            pair.debit_voucher,
            pair.credit_voucher,
            pair.amount,
            **fx,
        )
        await store.add(SettlementRow, SettlementRow.values(settled, group_id=source))
        uow.emit(_settled(setup, settled))


def _settled(setup: SettlementSetup, pair: SettledPair) -> OpenItemsSettled:
    """OpenItemsSettled of a pair; the accounting-currency amounts only in a foreign currency."""
    fx: dict[str, Any] = {}
    if setup.foreign(pair.currency):
        fx = {
            "debit_accounting_amount": pair.debit_accounting,
            "credit_accounting_amount": pair.credit_accounting,
            "cash_discount_accounting_amount": pair.cash_discount_accounting,
            "difference_accounting_amount": pair.difference_accounting,
            "realized_exchange_loss": pair.realized_loss,
        }
    return OpenItemsSettled(
        **fx,
        settlement_id=pair.settlement_id,
        customer_account=pair.customer_account,
        settlement_date=pair.settlement_date,
        currency=pair.currency,
        debit_voucher=pair.debit_voucher,
        credit_voucher=pair.credit_voucher,
        amount_settled=pair.amount_settled,
        cash_discount_amount=pair.cash_discount_amount,
        cash_discount_voucher=pair.cash_discount_voucher,
        difference_amount=pair.difference_amount,
    )


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
    vouchers = _line_vouchers(lines)
    known = await store.known_vouchers(vouchers)
    todo = []
    for line, voucher in zip(lines, vouchers):
        if voucher in known:
            continue
        amount = line.debit - line.credit
        # What it removes from the named transactions' accounting balances is its own (docs/currencies.md).
        accounting = -sum((ref.accounting_amount for ref in line.settles), ZERO) if line.settles else amount
        # Never applied automatically: what it could not settle is a discrepancy for a person to look at.
        write_off = OpenTransaction(
            voucher,
            line.account,
            "WriteOff",
            line.transaction_date,
            line.currency,
            amount,
            amount,
            auto_settle=False,
            exchange_rate=line.exchange_rate if line.exchange_rate is not None else domain.model.ONE,
            accounting_original_amount=accounting,
            accounting_open_amount=accounting,
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
        uow.emit(_transaction_posted(setup, write_off))
        await _record_write_off_pairs(setup, uow, store, write_off, outcome.pairs, voucher, numbered=True)
        if outcome.shortfalls:
            uow.dead_letter(
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


def _transaction_posted(
    setup: SettlementSetup, t: OpenTransaction, payment_id: str | None = None
) -> CustomerTransactionPosted:
    """A transaction settlement posts; in a foreign currency with the rate and accounting amount it is booked at."""
    fx: dict[str, Any] = {}
    if setup.foreign(t.currency):
        fx = {"exchange_rate": t.exchange_rate, "accounting_currency_amount": t.accounting_original_amount}
    return CustomerTransactionPosted(
        voucher=t.voucher,
        transaction_type=t.transaction_type,  # type: ignore[arg-type]
        customer_account=t.customer_account,
        transaction_date=t.transaction_date,
        invoice_id=t.invoice_id,
        amount=t.original_amount,
        currency=t.currency,
        due_date=t.due_date,
        payment_id=payment_id,
        cash_discounts=[CashDiscountTier(percent=d.percent, date=d.date, amount=d.amount) for d in t.cash_discounts],
        **fx,
    )


def _voucher(setup: SettlementSetup, t: OpenTransaction, account: str, text: str) -> VoucherPosted:
    """The ledger voucher of a customer transaction settlement posts: the customer's summary account by its
    amount (debit +, credit −), `account` (bank, discount) the other way; in the accounting currency."""
    return _ledger(
        setup,
        t.voucher,
        t.transaction_date,
        t.currency,
        t.customer_account,
        t.original_amount,
        t.accounting_original_amount,
        account,
        text,
    )


def _send_voucher(uow: UnitOfWork, voucher: VoucherPosted) -> None:
    """Send a voucher to the ledger, unless it is worth nothing in the accounting currency (JPY 1 at 0.004 is
    USD 0.00): ledger-posting refuses a voucher without an amount, and there is nothing to book."""
    if any(line.debit or line.credit for line in voucher.lines):
        uow.emit(voucher)


def _ledger(
    setup: SettlementSetup,
    voucher: str,
    on: date,
    currency: str,
    customer_account: str,
    to_customer: Decimal,
    to_customer_accounting: Decimal,
    account: str,
    text: str,
) -> VoucherPosted:
    """A two-line voucher in the accounting currency: the customer's summary account by `to_customer_accounting`
    (debit +), `account` the other way. In a foreign currency both lines also carry the transaction currency
    and amount (`to_customer` on the customer's line, its opposite on the other)."""
    customer: dict[str, Any] = {
        "account": setup.summary_account,
        "text": text,
        "customer_account": customer_account,
    }
    other: dict[str, Any] = {"account": account, "text": text}
    if setup.foreign(currency):
        customer |= {"transaction_currency": currency, "transaction_currency_amount": to_customer}
        other |= {"transaction_currency": currency, "transaction_currency_amount": -to_customer + ZERO}
    debit, credit = (customer, other) if to_customer_accounting > 0 else (other, customer)
    amount = abs(to_customer_accounting)
    return VoucherPosted(
        voucher=voucher,
        posting_date=on,
        currency=setup.accounting_currency if setup.foreign(currency) else currency,
        source="settlement",
        description=text,
        lines=[VoucherLine(**debit, debit=amount), VoucherLine(**credit, credit=amount)],
    )


# --- HTTP commands and queries --------------------------------------------------------------


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

    Raises domain.UnknownInvoice for a transaction nobody posted, domain.MarkRejected for one that cannot be
    settled."""
    parameters = await _parameters(session, setup)
    named = [m.invoice_id for m in marks]
    transactions = await OpenItems(session).of_customer(customer_account, invoice_ids=named, vouchers=named)
    return [
        domain.preview_mark(
            domain.find_marked_invoice(mark, transactions, customer_account),
            payment_date,
            mark,
            parameters,
            discount_date,
        )
        for mark in marks
    ]


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
    parameters = await _parameters(uow.session, setup)
    # Undated: on the latest date of what is marked, so a settlement of old items is not dated today.
    marked = {t.transaction_date for t in transactions if t.invoice_id in named or t.voucher in named}
    on = on or max(marked, default=date.today())
    results = domain.settle_marked(
        transactions, marks, customer_account, on, discount_date=discount_date, parameters=parameters
    )
    settlement_id = f"STL-{uuid.uuid4().hex[:12].upper()}"
    after = await _post(setup, uow, store, results, transactions, settlement_id)
    pairs = [r.to_domain() for r in await _settlement_rows(uow.session, settlement_id)]
    return Settled(settlement_id, customer_account, on, pairs, _moved(after, pairs))


def _moved(transactions: Iterable[OpenTransaction], pairs: Iterable[SettledPair]) -> list[OpenTransaction]:
    named = {v for p in pairs for v in (p.debit_voucher, p.credit_voucher)}
    return [t for t in transactions if t.voucher in named and t.transaction_type != "CashDiscount"]


async def reverse_settlement(
    setup: SettlementSetup, uow: UnitOfWork, settlement_id: str, on: date | None = None
) -> Settled:
    """Undo a settlement (all its pairs, or one pair by its own id) by new, opposite postings. LookupError for an unknown id,
    domain.ReversalRefused for one reversed before, a reversal, or one that cannot be reversed here (a write-off)."""
    rows = await _settlement_rows(uow.session, settlement_id)
    if not rows:
        raise LookupError(f"no settlement {settlement_id!r} is known")
    await lock_customer(uow.session, rows[0].customer_account)
    rows = await _settlement_rows(uow.session, settlement_id)  # again, under the lock
    if done := next((r for r in rows if r.reversed_by or r.reversal_of), None):
        raise domain.ReversalRefused(
            f"settlement {settlement_id} is itself a reversal; settle the transactions again instead"
            if done.reversal_of
            else f"settlement {settlement_id} was already reversed by {done.reversed_by}"
        )
    pairs = [r.to_domain() for r in rows]
    on = on or max(p.settlement_date for p in pairs)
    store = OpenItems(uow.session)
    named = {v for p in pairs for v in (p.debit_voucher, p.credit_voucher, p.cash_discount_voucher) if v}
    reversal = domain.reverse(pairs, await store.find_all(named), on)
    if clash := await store.known_vouchers([d.voucher for d in reversal.discounts]):
        raise domain.ReversalRefused(f"voucher(s) {', '.join(sorted(clash))} are taken")
    await store.save([*reversal.transactions, *reversal.discounts])
    for discount in reversal.discounts:
        uow.emit(_transaction_posted(setup, discount))
        _send_voucher(
            uow,
            _voucher(
                setup,
                discount,
                setup.accounts.for_discount(discount.cash_discount_account),
                f"Reversed cash discount, settlement {settlement_id}",
            ),
        )
    reversal_id = f"{settlement_id}:reversed"
    for row in rows:
        row.reversed_by = reversal_id
        uow.session.add(row)
    await _record(setup, uow, store, reversal.pairs, group_id=reversal_id, reversal_of=settlement_id)
    return Settled(
        reversal_id, rows[0].customer_account, on, list(reversal.pairs), _moved(reversal.transactions, pairs)
    )


async def _settlement_rows(session: AsyncSession, settlement_id: str) -> list[SettlementRow]:
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


async def settlement(session: AsyncSession, settlement_id: str) -> list[SettlementRow]:
    return await _settlement_rows(session, settlement_id)


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


class NothingToRelease(Exception):
    pass


async def release_payment(setup: SettlementSetup, uow: UnitOfWork, payment_id: str) -> SettlementResult:
    """An operator's decision: a marked payment's money is no longer held for its marks. Its pending marks
    are dropped and its open credit becomes an ordinary automatic one, applied now to the customer's open
    invoices (oldest due date first, `Normal` discount as of the payment date) and to invoices that come later.

    Raises LookupError for an unknown payment, NothingToRelease when it holds nothing."""
    known = await uow.session.get(PaymentRow, payment_id)
    if known is None:
        raise LookupError(f"no payment {payment_id!r} is known")
    await lock_customer(uow.session, known.customer_account)
    store = OpenItems(uow.session)
    payment = await store.find(payment_id)
    if payment is None or payment.auto_settle or payment.open_amount >= 0:
        raise NothingToRelease(
            f"payment {payment_id} holds nothing: "
            + ("it settles automatically already" if payment and payment.auto_settle else "nothing of it is open")
        )
    rows = (await uow.session.exec(select(PendingMarkRow).where(PendingMarkRow.payment_voucher == payment_id))).all()
    for row in rows:
        await uow.session.delete(row)
    metrics.count_on_commit(uow.session, "released", len(rows))
    payment = replace(payment, auto_settle=True)
    await store.save([payment])
    transactions = [t for t in await store.of_customer(payment.customer_account) if t.voucher != payment_id]
    results = domain.settle_payment(payment, transactions, parameters=await _parameters(uow.session, setup))
    await _post(setup, uow, store, results, [payment, *transactions], settlement_id=f"{payment_id}:released")
    return results[0]


async def refresh_pending_gauges(session: AsyncSession) -> None:
    """Set the pending gauges from the database (shared by every replica), as /metrics is scraped."""
    marks = await pending_marks(session)
    metrics.PENDING_MARKS.set(len(marks))
    metrics.RESERVED_AMOUNT.set(float(sum((m.reserved for m in marks), ZERO)))
    metrics.PENDING_WRITE_OFFS.set(len(await pending_write_offs(session)))
