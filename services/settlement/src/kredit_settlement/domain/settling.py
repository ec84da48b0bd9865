"""Which open credit pays which debit, and what the settlement takes: marks, automatic settlement (oldest due
date first or a user-defined priority), tolerances and cash discount administration (D365 *Configure
settlement*), and applying a settlement to the balances."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal
from typing import Any

from kredit_settlement.domain.accounting import ResultAccounting, account_settlement, convert
from kredit_settlement.domain.discounts import (
    NEVER,
    NORMAL,
    Terms,
    available_discount,
    check_credit_terms,
    check_debit_terms,
    credit_note_terms,
    mark_terms,
    preview_mark,
    split,
    tier,
)
from kredit_settlement.domain.model import (
    DEFAULTS,
    ONE,
    CashDiscountAdministration,
    InvoiceSettlement,
    Mark,
    MarkPreview,
    MarkRejected,
    OpenTransaction,
    PriorityCriterion,
    PriorityRule,
    RejectedMark,
    SettlementError,
    SettlementParameters,
    SettlementResult,
    TransactionRejected,
    Unknown,
    UnknownInvoice,
    UseCashDiscount,
)
from kredit_shared.currencies import check_precision, round_to
from kredit_shared.money import ZERO


def new_payment(
    voucher: str,
    customer_account: str,
    payment_date: date,
    amount: Decimal,
    currency: str,
    marked: bool = False,
    discount_date: date | None = None,
    automatic_settlement: bool = True,
    exchange_rate: Decimal = ONE,
    accounting_currency: str | None = None,
) -> OpenTransaction:
    """A received payment as an open credit, booked at `exchange_rate` (its accounting amount rounded to the
    accounting currency's minor unit). A marked one, or one received while automatic settlement is off, is
    never applied automatically."""
    if amount <= 0:
        raise TransactionRejected(f"payment {voucher}: the amount must be positive, got {amount}")
    amount = round_to(amount, currency)
    accounting = convert(amount, exchange_rate, accounting_currency)
    return OpenTransaction(
        voucher=voucher,
        customer_account=customer_account,
        transaction_type="Payment",
        transaction_date=payment_date,
        currency=currency,
        original_amount=-amount,
        open_amount=-amount,
        auto_settle=automatic_settlement and not marked,
        discount_date=discount_date,
        exchange_rate=exchange_rate,
        accounting_original_amount=-accounting,
        accounting_open_amount=-accounting,
    )


# --- order ----------------------------------------------------------------------------------


@functools.total_ordering
@dataclass(frozen=True)
class _Descending:
    value: Any

    def __lt__(self, other: _Descending) -> bool:
        return bool(other.value < self.value)


def _due(t: OpenTransaction) -> date:
    return t.due_date or t.transaction_date


def _priority_key(t: OpenTransaction, rules: Sequence[PriorityRule], on: date) -> tuple[Any, ...]:
    parts: list[Any] = []
    for rule in rules:
        value: Any
        if rule.criterion is PriorityCriterion.TRANSACTION_TYPE:
            value = rule.order.index(t.transaction_type) if t.transaction_type in rule.order else len(rule.order)
        elif rule.criterion is PriorityCriterion.DUE_DATE:
            value = _due(t)
        elif rule.criterion is PriorityCriterion.TRANSACTION_DATE:
            value = t.transaction_date
        elif rule.criterion is PriorityCriterion.CASH_DISCOUNT_DATE:
            applies = tier(t, on, UseCashDiscount.NORMAL)  # no discount left: after every discount date
            value = applies.date if applies else date.max
        elif rule.criterion is PriorityCriterion.AMOUNT:
            value = abs(t.open_amount)
        else:
            value = t.voucher
        parts.append(_Descending(value) if rule.descending else value)
    return (*parts, _due(t), t.transaction_date, t.voucher)  # the default order breaks what the rules leave tied


def automatic_order(
    debits: Iterable[OpenTransaction], parameters: SettlementParameters, on: date
) -> list[OpenTransaction]:
    """The order automatic settlement pays debits in: the user-defined priority when automatic settlement uses
    it (D365 *Automatic settlement and prioritization*), else oldest due date first."""
    rules = parameters.automatic_priority
    return sorted(debits, key=lambda t: _priority_key(t, rules, on))


def marked_order(
    marked: Iterable[tuple[OpenTransaction, Terms]], parameters: SettlementParameters, on: date
) -> list[tuple[OpenTransaction, Terms]]:
    """The order marked debits are paid in: by priority with *prioritize settlement* (D365's *Mark by
    priority*), else the source's: oldest transaction date first and, on one date, the larger discount first."""
    rules = parameters.marking_priority
    if rules:
        return sorted(marked, key=lambda m: _priority_key(m[0], rules, on))
    return sorted(
        marked,
        key=lambda m: (m[0].transaction_date, -available_discount(m[0], on, m[1]), _due(m[0]), m[0].voucher),
    )


# --- marks ----------------------------------------------------------------------------------


def find_marked_invoice(
    mark: Mark, transactions: Iterable[OpenTransaction], customer_account: str, currency: str | None = None
) -> OpenTransaction:
    """The open transaction a mark names, or MarkRejected saying why it cannot be settled.

    A mark names a debit or credit note by its invoice id, or any open transaction (an open payment) by its
    voucher. Discounts and write-offs are settled by what created them, never by a mark."""
    transactions = list(transactions)
    found = next((t for t in transactions if t.invoice_id == mark.invoice_id), None) or next(
        (t for t in transactions if t.voucher == mark.invoice_id), None
    )
    if found is None or not (found.is_debit or found.is_credit):
        raise UnknownInvoice(mark.invoice_id, f"no invoice {mark.invoice_id!r} is known")
    if found.customer_account != customer_account:
        raise MarkRejected(
            mark.invoice_id, f"invoice {mark.invoice_id!r} belongs to another customer, not {customer_account!r}"
        )
    if found.open_amount == 0 or (found.is_debit and found.open_amount < 0):
        raise MarkRejected(mark.invoice_id, f"invoice {mark.invoice_id!r} is not open (balance {found.open_amount})")
    if currency is not None and found.currency != currency:
        raise MarkRejected(
            mark.invoice_id, f"invoice {mark.invoice_id!r} is in {found.currency}, the credit in {currency}"
        )
    check_mark_precision(mark, found.currency)
    return found


def check_mark_precision(mark: Mark, currency: str) -> None:
    """A mark's amounts have no more decimals than the marked transaction's currency (KWD 3, USD 2, JPY none).
    A payment's marks are checked against the payment's currency by the contract; a person's marks (HTTP)
    name no currency, so they are checked here, against the transaction they name."""
    for what, amount in (
        ("amount_to_settle", mark.amount_to_settle),
        ("cash_discount_amount", mark.cash_discount_amount),
    ):
        if amount is not None:
            try:
                check_precision(amount, currency, what)
            except ValueError as e:
                raise MarkRejected(mark.invoice_id, str(e)) from None


def preview_marks(
    marks: Sequence[Mark],
    transactions: Iterable[OpenTransaction],
    customer_account: str,
    payment_date: date,
    parameters: SettlementParameters = DEFAULTS,
    discount_date: date | None = None,
) -> list[MarkPreview]:
    """The *Settle open transactions* page: what each mark would take on its own (preview_mark). Raises
    Unknown for a transaction nobody posted, MarkRejected for one that cannot be settled."""
    transactions = list(transactions)
    try:
        return [
            preview_mark(
                find_marked_invoice(mark, transactions, customer_account), payment_date, mark, parameters, discount_date
            )
            for mark in marks
        ]
    except UnknownInvoice as e:
        raise Unknown(e.reason) from None


@dataclass(frozen=True)
class ResolvedMarks:
    debits: tuple[tuple[OpenTransaction, Terms], ...]
    credits: tuple[tuple[OpenTransaction, Terms], ...]
    rejected: tuple[RejectedMark, ...]


def resolve_marks(
    marks: Sequence[Mark],
    transactions: Iterable[OpenTransaction],
    customer_account: str,
    currency: str | None = None,
    *,
    settling: OpenTransaction | None = None,
    credits_allowed: bool = True,
) -> ResolvedMarks:
    """The marked debits and credits with their terms, and the marks that cannot be settled (with why).

    `settling` is the credit the marks belong to (a payment): it cannot mark itself."""
    transactions = [t for t in transactions if settling is None or t.voucher != settling.voucher]
    debits: list[tuple[OpenTransaction, Terms]] = []
    credits: list[tuple[OpenTransaction, Terms]] = []
    rejected: list[RejectedMark] = []
    seen: set[str] = set()
    for mark in marks:
        found: OpenTransaction | None = None
        try:
            terms = mark_terms(mark)
            if settling is not None and mark.invoice_id == settling.voucher:
                raise MarkRejected(mark.invoice_id, f"{settling.voucher} cannot settle itself")
            try:
                found = find_marked_invoice(mark, transactions, customer_account, currency)
            except UnknownInvoice:
                found = None
            if found is not None and found.is_debit:
                check_debit_terms(mark, terms)
            elif found is not None:
                if not credits_allowed:
                    raise MarkRejected(
                        mark.invoice_id, f"{mark.invoice_id!r} is a {found.transaction_type}, not an invoice"
                    )
                check_credit_terms(mark, terms)
            # Known or not: an unknown invoice marked twice waits only once.
            key = found.voucher if found is not None else mark.invoice_id
            if key in seen or mark.invoice_id in seen:
                raise MarkRejected(mark.invoice_id, f"invoice {mark.invoice_id!r} is marked more than once")
            seen |= {key, mark.invoice_id}
            if found is None:
                raise UnknownInvoice(mark.invoice_id, f"no invoice {mark.invoice_id!r} is known")
        except MarkRejected as e:
            rejected.append(RejectedMark(e.invoice_id, e.reason, isinstance(e, UnknownInvoice)))
            continue
        (debits if found.is_debit else credits).append((found, terms))
    return ResolvedMarks(tuple(debits), tuple(credits), tuple(rejected))


# --- the engine -----------------------------------------------------------------------------


@dataclass
class _Debit:
    txn: OpenTransaction
    terms: Terms
    open: Decimal  # still open, positive, as this settlement goes on
    cap: Decimal | None  # the cash its mark may still take
    touched: bool = False


@dataclass
class _Line:
    debit: _Debit
    cash: Decimal
    discount: Decimal
    difference: Decimal = ZERO


@dataclass
class _Credit:
    txn: OpenTransaction
    terms: Terms
    discount_on: date  # the discount tiers are read as of this day
    lines: list[_Line] = field(default_factory=list)

    @property
    def capacity(self) -> Decimal:
        return -self.txn.open_amount

    def own_full_discount(self) -> Decimal:
        return (
            available_discount(self.txn, self.discount_on, self.terms)
            if self.txn.transaction_type == "CreditNote"
            else ZERO
        )

    def cash_cap(self) -> Decimal:
        cap = self.capacity - self.own_full_discount()
        return cap if self.terms.amount_to_settle is None else min(cap, self.terms.amount_to_settle)

    @property
    def used(self) -> Decimal:
        return sum((line.cash for line in self.lines), ZERO)


def _pay(credit: _Credit, debits: list[_Debit], parameters: SettlementParameters) -> None:
    left = credit.cash_cap()
    for debit in debits:
        if left <= 0:
            break
        offered = left if debit.cap is None else min(left, debit.cap)
        if debit.open <= 0 or offered <= 0:
            continue
        as_now = debit.txn if debit.open == debit.txn.open_amount else replace(debit.txn, open_amount=debit.open)
        cash, discount = split(as_now, offered, credit.discount_on, debit.terms, parameters)
        if cash <= 0:  # a settlement moves cash; only a 100 % discount could leave none
            continue
        credit.lines.append(_Line(debit, cash, discount))
        left -= cash
        debit.open -= cash + discount
        debit.cap = None if debit.cap is None else debit.cap - cash
        debit.touched = True


def _tolerate(credits: list[_Credit], debits: list[_Debit], parameters: SettlementParameters) -> None:
    """What is left over once the credits are used: an overpayment (on the last credit that paid something) and
    underpaid debits. D365 *Cash discounts for overpayments*: `Unspecific` takes an overpayment off the discounts
    (last settled first); then a difference within the maximum penny difference or over/underpayment is written
    off, the rest stays open."""
    last = next((c for c in reversed(credits) if c.lines), None)
    if last is not None and last.own_full_discount() == 0:
        over = last.cash_cap() - last.used
        if over > 0 and parameters.cash_discount_administration is CashDiscountAdministration.UNSPECIFIC:
            for line in reversed(last.lines):
                if line.debit.open == 0 and line.discount > 0 and not line.debit.terms.deliberate_discount:
                    less = min(over, line.discount)
                    line.cash, line.discount, over = line.cash + less, line.discount - less, over - less
        if parameters.difference_kind(over) is not None:
            line = last.lines[-1]
            line.cash, line.difference = line.cash + over, line.difference - over
    for debit in debits:
        if debit.touched and parameters.difference_kind(debit.open) is not None:
            line = next(line for c in reversed(credits) for line in reversed(c.lines) if line.debit is debit)
            line.difference += debit.open
            debit.open = ZERO


def _results(
    credits: list[_Credit],
    settlement_date: date,
    parameters: SettlementParameters,
    rejected: Sequence[RejectedMark] = (),
    keep: Iterable[str] = (),
) -> list[SettlementResult]:
    """One result per credit that settled something, and for each credit in `keep` (the one being posted)."""
    results = []
    for credit in credits:
        used = credit.used
        own = (
            split(credit.txn, used, credit.discount_on, credit.terms, parameters)[1]
            if credit.own_full_discount() and used
            else ZERO
        )
        if not credit.lines and credit.txn.voucher not in keep:
            continue
        results.append(
            SettlementResult(
                customer_account=credit.txn.customer_account,
                currency=credit.txn.currency,
                settlement_date=settlement_date,
                credit_voucher=credit.txn.voucher,
                settlements=tuple(
                    InvoiceSettlement(
                        line.debit.txn.voucher,
                        line.debit.txn.invoice_id,
                        line.cash,
                        line.discount,
                        line.debit.txn.cash_discount_account if line.discount else None,
                        line.difference,
                        parameters.difference_kind(abs(line.difference)),
                    )
                    for line in credit.lines
                ),
                unused_amount=credit.capacity - used - own,
                rejected_marks=tuple(rejected) if credit.txn.voucher in keep else (),
                credit_discount=own,
                credit_discount_account=credit.txn.cash_discount_account if own else None,
            )
        )
    return results


def _run(
    credits: list[_Credit],
    marked_debits: Sequence[tuple[OpenTransaction, Terms]],
    settlement_date: date,
    parameters: SettlementParameters,
    rejected: Sequence[RejectedMark] = (),
    keep: Iterable[str] = (),
) -> list[SettlementResult]:
    debits = [_Debit(t, terms, t.open_amount, terms.amount_to_settle) for t, terms in marked_debits]
    for credit in credits:
        _pay(credit, debits, parameters)
    _tolerate(credits, debits, parameters)
    return _results(credits, settlement_date, parameters, rejected, set(keep))


def _credit(t: OpenTransaction, terms: Terms, parameters: SettlementParameters, on: date) -> _Credit:
    """A credit as settlement uses it: a credit note's own discount follows its parameter; a payment's
    discounts are read as of its selected date."""
    if t.transaction_type == "CreditNote":
        terms = credit_note_terms(terms, parameters)
    return _Credit(t, terms, t.discount_date or on)


def settle_payment(
    credit: OpenTransaction,
    transactions: Iterable[OpenTransaction],
    *,
    marks: Sequence[Mark] | None = None,
    settlement_date: date | None = None,
    parameters: SettlementParameters = DEFAULTS,
    credits_allowed: bool = True,
) -> list[SettlementResult]:
    """Settle an open credit (a payment or a credit note) against the customer's open debits.

    With marks, only the marked transactions are settled: marked credit notes and open payments first (oldest
    first), then `credit`; each pays the marked debits in `marked_order`. Without marks, automatic settlement
    takes every open debit of the customer in the credit's currency in `automatic_order`; a payment then takes
    discounts as `Normal`, a credit note only with calculate_cash_discounts_for_credit_notes. Discounts are read
    as of a credit's selected date, else the settlement date. Whatever is not used stays open on the credits.

    Returns a result per credit that settled something, and always one for `credit` (it carries the rejected
    marks), in the order they apply."""
    if credit.open_amount >= 0:
        raise TransactionRejected(f"{credit.voucher}: nothing to settle, the open credit is {credit.open_amount}")
    on = settlement_date or credit.transaction_date
    transactions = list(transactions)
    primary = _credit(credit, NORMAL, parameters, on)
    if marks is None:
        return _run(
            [primary], _automatic_plan(primary, transactions, parameters), on, parameters, keep=[credit.voucher]
        )
    resolved = resolve_marks(
        marks, transactions, credit.customer_account, credit.currency, settling=credit, credits_allowed=credits_allowed
    )
    others = sorted(resolved.credits, key=lambda c: (c[0].transaction_date, c[0].voucher))
    credits = [*(_credit(t, terms, parameters, t.transaction_date) for t, terms in others), primary]
    plan = marked_order(resolved.debits, parameters, primary.discount_on)
    return _run(credits, plan, on, parameters, resolved.rejected, keep=[credit.voucher])


def _automatic_plan(
    primary: _Credit, transactions: Iterable[OpenTransaction], parameters: SettlementParameters
) -> list[tuple[OpenTransaction, Terms]]:
    """The debits automatic settlement offers a credit, in the order it pays them, with the terms it takes."""
    credit = primary.txn
    takes_discounts = credit.transaction_type == "Payment" or parameters.calculate_cash_discounts_for_credit_notes
    debits = [
        t
        for t in transactions
        if t.is_debit
        and t.open_amount > 0
        and t.auto_settle
        and t.customer_account == credit.customer_account
        and t.currency == credit.currency
        and credit.auto_settle  # a credit posted while automatic settlement was off waits for a person
    ]
    return [(t, NORMAL if takes_discounts else NEVER) for t in automatic_order(debits, parameters, primary.discount_on)]


def reaches_beyond(
    credit: OpenTransaction,
    first: Iterable[OpenTransaction],
    settlement_date: date | None = None,
    parameters: SettlementParameters = DEFAULTS,
) -> bool:
    """Whether automatic settlement of `credit` could pay a debit after `first`, the first of the customer's open
    debits in `automatic_order`: True while its cash is not used up on them. Once it is, the debits after them
    change nothing (a credit stops where its cash ends, and the over/underpayment rules look only at what it
    paid), so settle_payment over `first` gives what it gives over all of them."""
    if not credit.auto_settle:
        return False  # it pays nothing automatically
    primary = _credit(credit, NORMAL, parameters, settlement_date or credit.transaction_date)
    plan = _automatic_plan(primary, first, parameters)
    _pay(primary, [_Debit(t, terms, t.open_amount, terms.amount_to_settle) for t, terms in plan], parameters)
    return primary.cash_cap() - primary.used > 0


def settle_credit(
    credit: OpenTransaction,
    transactions: Iterable[OpenTransaction],
    *,
    marks: Sequence[Mark] | None = None,
    settlement_date: date | None = None,
    parameters: SettlementParameters = DEFAULTS,
) -> SettlementResult:
    """settle_payment for one credit whose marks name only debits (a mark naming a credit is rejected)."""
    [result] = settle_payment(
        credit, transactions, marks=marks, settlement_date=settlement_date, parameters=parameters, credits_allowed=False
    )
    return result


class MarksRejected(SettlementError):
    """Marks of a manual settlement that cannot be settled; nothing is settled."""

    def __init__(self, rejected: Sequence[RejectedMark]) -> None:
        super().__init__("; ".join(f"{r.invoice_id}: {r.reason}" for r in rejected))
        self.rejected = tuple(rejected)

    @property
    def all_unknown(self) -> bool:
        return all(r.invoice_unknown for r in self.rejected)


class MarksUnknown(MarksRejected, Unknown):
    """Every mark of a manual settlement names a transaction nobody posted."""


def settle_marked(
    transactions: Iterable[OpenTransaction],
    marks: Sequence[Mark],
    customer_account: str,
    settlement_date: date,
    *,
    discount_date: date | None = None,
    parameters: SettlementParameters = DEFAULTS,
) -> list[SettlementResult]:
    """Settle posted transactions a person marked (D365 *Settle transactions*): the marked credits (payments,
    credit notes; oldest first) pay the marked debits with the same rules as a payment's marks. Each credit's
    discounts are read as of `discount_date` (the selected date) or its own date. All or nothing: any mark that
    cannot be settled raises MarksRejected."""
    resolved = resolve_marks(marks, transactions, customer_account)
    rejected = list(resolved.rejected)
    everything = [*resolved.debits, *resolved.credits]
    currencies = sorted({t.currency for t, _ in everything})
    if len(currencies) > 1:
        rejected += [
            RejectedMark(t.invoice_id or t.voucher, f"the marked transactions are in {', '.join(currencies)}")
            for t, _ in everything[:1]
        ]
    if not rejected and not (resolved.debits and resolved.credits):
        missing = (
            "a debit (an invoice, interest note or fee)"
            if not resolved.debits
            else "a credit (a payment or credit note)"
        )
        rejected.append(
            RejectedMark(marks[0].invoice_id if marks else "", f"nothing to settle: mark at least {missing}")
        )
    if rejected:
        raise (MarksUnknown if all(r.invoice_unknown for r in rejected) else MarksRejected)(rejected)
    credits = [
        _credit(t, terms, parameters, t.transaction_date)
        for t, terms in sorted(resolved.credits, key=lambda c: (c[0].transaction_date, c[0].voucher))
    ]
    if discount_date is not None:
        credits = [replace(c, discount_on=discount_date) for c in credits]
    plan = marked_order(resolved.debits, parameters, discount_date or settlement_date)
    return _run(credits, plan, settlement_date, parameters)


def settle_new_invoice(
    invoice: OpenTransaction,
    credits: Sequence[tuple[OpenTransaction, Mark | None]],
    parameters: SettlementParameters = DEFAULTS,
) -> list[SettlementResult]:
    """Settle a newly arrived invoice with the credits waiting for it, in the order they arrived.

    `credits` pairs each credit with the payment's pending mark on this invoice, or None for a credit that
    settles automatically (an unmarked payment, a credit note). Each settles as it would have if the invoice
    had been there first: a mark as settle_credit settles it, an unmarked payment with the `Normal` discount
    as of its payment date, a credit note without discount (with its parameter: `Normal` on both sides).
    Returns one result per credit that settled something or whose mark was rejected; apply them in order.
    """
    results = []
    for credit, mark in credits:
        if credit.open_amount >= 0:
            continue  # a marked payment its earlier marks used up: the same as if the invoice had been there
        if mark is not None:
            result = settle_credit(credit, [invoice], marks=[mark], parameters=parameters)
        elif (
            invoice.open_amount <= 0
            or not credit.auto_settle
            or credit.customer_account != invoice.customer_account
            or invoice.currency != credit.currency
        ):
            continue
        else:
            on = credit.transaction_date if credit.transaction_type == "Payment" else invoice.transaction_date
            result = settle_credit(credit, [invoice], settlement_date=on, parameters=parameters)
        if result.settlements or result.rejected_marks:
            results.append(result)
            invoice = apply_settlement([invoice, credit], result)[0]
    return results


def settle_new_transaction(
    transaction: OpenTransaction,
    transactions: Iterable[OpenTransaction],
    parameters: SettlementParameters = DEFAULTS,
) -> list[SettlementResult]:
    """Settle a newly posted credit note with the customer's open debits (automatic settlement). Anything else,
    or a credit note with nothing open or posted while automatic settlement is off, settles nothing (a new
    invoice is settled by settle_new_invoice with the credits waiting for it, in their order of arrival)."""
    others = [t for t in transactions if t.voucher != transaction.voucher]
    if transaction.transaction_type == "CreditNote" and transaction.open_amount < 0 and transaction.auto_settle:
        result = settle_credit(transaction, others, parameters=parameters)
        return [result] if result.settlements else []
    return []


def reservations(open_credit: Decimal, marks: Sequence[Mark]) -> list[Decimal]:
    """What a payment's pending marks hold of its open credit (a positive amount), mark by mark in the
    payment's order: a mark with an amount to settle that amount, one without the rest, each capped at what
    is left. Informational: when the invoices arrive the marks settle in the source's order (docs/ordering.md)."""
    left = open_credit
    held = []
    for mark in marks:
        take = left if mark.amount_to_settle is None else min(left, abs(mark.amount_to_settle))
        held.append(take)
        left -= take
    return held


# --- applying -------------------------------------------------------------------------------


def apply_settlement(
    transactions: Sequence[OpenTransaction],
    result: SettlementResult,
    accounting_currency: str | None = None,
    accounting: ResultAccounting | None = None,
) -> list[OpenTransaction]:
    """The transactions after the settlement, in the same order; the ones it does not touch are unchanged.

    Each debit's open balance falls by cash + discount + difference (its discount taken grows by the discount),
    the credit's rises by the cash applied and its own discount; their accounting-currency balances move as
    `accounting` (account_settlement's, computed here when not given) says. Raises SettlementError if the
    settlement no longer fits the balances (a stale result): a debit would go below zero or the credit above it.
    """
    if accounting is None:
        accounting = account_settlement(result, transactions, accounting_currency)
    open_change: dict[str, Decimal] = {result.credit_voucher: result.cash_applied + result.credit_discount}
    accounting_change: dict[str, Decimal] = {result.credit_voucher: accounting.credit_rise}
    discount_change: dict[str, Decimal] = {result.credit_voucher: result.credit_discount}
    for s, line in zip(result.settlements, accounting.lines):
        open_change[s.debit_voucher] = open_change.get(s.debit_voucher, ZERO) - s.total_settled
        accounting_change[s.debit_voucher] = accounting_change.get(s.debit_voucher, ZERO) - line.debit
        discount_change[s.debit_voucher] = discount_change.get(s.debit_voucher, ZERO) + s.cash_discount
    missing = set(open_change) - {t.voucher for t in transactions}
    if missing:
        raise SettlementError(f"settlement names unknown transactions: {', '.join(sorted(missing))}")
    updated = []
    for t in transactions:
        if t.voucher not in open_change:
            updated.append(t)
            continue
        new_open = t.open_amount + open_change[t.voucher]
        if (t.open_amount > 0 and new_open < 0) or (t.open_amount < 0 and new_open > 0) or t.open_amount == 0:
            raise SettlementError(f"{t.voucher}: settling would take the open balance {t.open_amount} to {new_open}")
        updated.append(
            t.with_open(
                new_open,
                t.accounting_open_amount + accounting_change[t.voucher],
                t.discount_taken + discount_change.get(t.voucher, ZERO),
            )
        )
    return updated
