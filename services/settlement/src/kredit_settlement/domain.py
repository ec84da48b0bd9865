"""Settlement rules: which open credit pays which invoice, and the cash discount it takes.

Pure domain: frozen values in, decisions out, no I/O. Behaviour follows Dynamics 365 Finance customer
settlement (spec/README.md and Microsoft's settlement scenarios). Money is Decimal, half-up to the cent.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from enum import StrEnum

from kredit_shared.money import ZERO, round_money

_HUNDRED = Decimal(100)


class SettlementError(Exception):
    """A settlement the rules cannot carry out; the message says why."""


class InvalidPayment(SettlementError):
    """A payment or credit with nothing to settle (a zero or negative amount)."""


class MarkRejected(SettlementError):
    """A mark that cannot be settled. The payment still posts; the caller records the reason."""

    def __init__(self, invoice_id: str, reason: str) -> None:
        super().__init__(f"mark on invoice {invoice_id!r} rejected: {reason}")
        self.invoice_id = invoice_id
        self.reason = reason


class UnknownInvoice(MarkRejected):
    """The marked invoice is not known (yet): it may still be on its way from invoicing."""


class UseCashDiscount(StrEnum):
    NORMAL = "Normal"  # only before the discount date, partial payments only if the parameter allows
    ALWAYS = "Always"  # overrides the date and the partial-payment parameter
    NEVER = "Never"


@dataclass(frozen=True)
class SettlementParameters:
    calculate_cash_discounts_for_partial_payments: bool = True


@dataclass(frozen=True)
class DiscountTier:
    """`percent` (Decimal("2.00") is 2 %) when paid on or before `date`."""

    date: date
    percent: Decimal
    amount: Decimal | None = None  # the full discount on the original amount, as invoicing computed it


# Invoices and the other receivables an invoice message may post (ARCHITECTURE.md, document_type): each is
# an open debit that payments mark by its invoice id and that waiting credits settle when it arrives.
DEBIT_DOCUMENTS = ("Invoice", "InterestNote", "CollectionLetterFee", "PaymentFee")


@dataclass(frozen=True)
class OpenTransaction:
    """A customer transaction with what is still open on it. Amounts are signed: debit +, credit −."""

    voucher: str
    customer_account: str
    transaction_type: str  # Invoice, CreditNote, Payment, CashDiscount, WriteOff
    transaction_date: date
    currency: str
    original_amount: Decimal
    open_amount: Decimal
    invoice_id: str | None = None
    due_date: date | None = None
    cash_discounts: tuple[DiscountTier, ...] = ()
    discount_taken: Decimal = ZERO
    cash_discount_account: str | None = None
    # False for a payment that carried marks and for a write-off: its open balance is never applied
    # automatically (docs/ordering.md), only by its marks, the write-off it belongs to, or an operator.
    auto_settle: bool = True


@dataclass(frozen=True)
class Mark:
    """An invoice marked for settlement. `use_cash_discount` stays a string so a bad value rejects only this mark."""

    invoice_id: str
    amount_to_settle: Decimal | None = None  # cash to apply; None = whatever the credit covers
    use_cash_discount: str = UseCashDiscount.NORMAL


@dataclass(frozen=True)
class InvoiceSettlement:
    """One debit settled by the credit: its open balance falls by cash_applied + cash_discount."""

    debit_voucher: str
    invoice_id: str | None
    cash_applied: Decimal
    cash_discount: Decimal
    cash_discount_account: str | None  # None when no discount, or when the invoice named no account

    @property
    def total_settled(self) -> Decimal:
        return self.cash_applied + self.cash_discount


@dataclass(frozen=True)
class RejectedMark:
    invoice_id: str
    reason: str
    invoice_unknown: bool = False  # the caller may keep the mark until the invoice arrives


@dataclass(frozen=True)
class SettlementResult:
    customer_account: str
    currency: str
    settlement_date: date
    credit_voucher: str
    settlements: tuple[InvoiceSettlement, ...]
    unused_amount: Decimal  # what stays open on the credit, as a positive amount
    rejected_marks: tuple[RejectedMark, ...] = ()

    @property
    def cash_applied(self) -> Decimal:
        return sum((s.cash_applied for s in self.settlements), ZERO)

    @property
    def cash_discount(self) -> Decimal:
        return sum((s.cash_discount for s in self.settlements), ZERO)


@dataclass(frozen=True)
class MarkPreview:
    """The discount fields of the *Settle open transactions* page for one mark."""

    invoice_id: str
    cash_discount_date: date | None
    cash_discount_amount: Decimal
    use_cash_discount: UseCashDiscount
    cash_discount_taken: Decimal
    cash_discount_amount_to_take: Decimal
    amount_to_settle: Decimal


def new_payment(
    voucher: str, customer_account: str, payment_date: date, amount: Decimal, currency: str, marked: bool = False
) -> OpenTransaction:
    """A received payment as an open credit; a marked one is never applied automatically."""
    if amount <= 0:
        raise InvalidPayment(f"payment {voucher}: the amount must be positive, got {amount}")
    amount = round_money(amount)
    return OpenTransaction(
        voucher=voucher,
        customer_account=customer_account,
        transaction_type="Payment",
        transaction_date=payment_date,
        currency=currency,
        original_amount=-amount,
        open_amount=-amount,
        auto_settle=not marked,
    )


# --- cash discount arithmetic ---------------------------------------------------------------


def _tier(invoice: OpenTransaction, on: date, use: UseCashDiscount) -> DiscountTier | None:
    """The tier whose percent applies on `on`: the first not yet expired; `Always` falls back to the last."""
    if use is UseCashDiscount.NEVER or not invoice.cash_discounts:
        return None
    tiers = sorted(invoice.cash_discounts, key=lambda t: t.date)
    current = next((t for t in tiers if on <= t.date), None)  # the discount date itself still counts
    if current is None and use is UseCashDiscount.ALWAYS:
        return tiers[-1]
    return current


def available_discount(invoice: OpenTransaction, on: date, use: UseCashDiscount = UseCashDiscount.NORMAL) -> Decimal:
    """The discount that paying the whole open balance on `on` would take.

    It is the tier's percent of the *open* balance, not of the original amount less the discount taken:
    Microsoft's "Settle a partial customer payment that has multiple discount periods" takes 1 % of the
    700.00 left after a 2 % partial payment (7.00), where 1 % of 1,000.00 less the 6.00 taken would be 4.00.
    """
    tier = _tier(invoice, on, use)
    if tier is None or invoice.open_amount <= 0:
        return ZERO
    return round_money(invoice.open_amount * tier.percent / _HUNDRED)


def _split(
    invoice: OpenTransaction, offered: Decimal, on: date, use: UseCashDiscount, parameters: SettlementParameters
) -> tuple[Decimal, Decimal]:
    """(cash applied, discount) when up to `offered` cash is put against the invoice."""
    tier = _tier(invoice, on, use)
    full_discount = available_discount(invoice, on, use)
    if offered >= invoice.open_amount - full_discount:
        # Settlement adjusts the amount to settle: the payment covers the rest, so the whole discount is taken.
        return invoice.open_amount - full_discount, full_discount
    if tier is None or not (use is UseCashDiscount.ALWAYS or parameters.calculate_cash_discounts_for_partial_payments):
        return offered, ZERO
    rate = tier.percent / _HUNDRED
    # The cash is the (1 − p) share of what it settles: 297.00 at 1 % settles 300.00, a 3.00 discount.
    return offered, min(round_money(offered * rate / (1 - rate)), full_discount)


# --- marks ----------------------------------------------------------------------------------


def _use_cash_discount(mark: Mark) -> UseCashDiscount:
    try:
        use = UseCashDiscount(mark.use_cash_discount)
    except ValueError:
        allowed = ", ".join(u.value for u in UseCashDiscount)
        raise MarkRejected(
            mark.invoice_id, f"use_cash_discount {mark.use_cash_discount!r} is not one of {allowed}"
        ) from None
    if mark.amount_to_settle is not None and mark.amount_to_settle <= 0:
        raise MarkRejected(mark.invoice_id, f"amount_to_settle must be positive, got {mark.amount_to_settle}")
    return use


def find_marked_invoice(
    mark: Mark, transactions: Iterable[OpenTransaction], customer_account: str, currency: str | None = None
) -> OpenTransaction:
    """The open invoice a mark names, or MarkRejected saying why it cannot be settled."""
    invoice = next(
        (t for t in transactions if t.invoice_id == mark.invoice_id and t.transaction_type in DEBIT_DOCUMENTS), None
    )
    if invoice is None:
        raise UnknownInvoice(mark.invoice_id, f"no invoice {mark.invoice_id!r} is known")
    if invoice.customer_account != customer_account:
        raise MarkRejected(
            mark.invoice_id, f"invoice {mark.invoice_id!r} belongs to another customer, not {customer_account!r}"
        )
    if invoice.open_amount <= 0:
        raise MarkRejected(mark.invoice_id, f"invoice {mark.invoice_id!r} is not open (balance {invoice.open_amount})")
    if currency is not None and invoice.currency != currency:
        raise MarkRejected(
            mark.invoice_id, f"invoice {mark.invoice_id!r} is in {invoice.currency}, the credit in {currency}"
        )
    return invoice


def preview_mark(
    invoice: OpenTransaction, payment_date: date, mark: Mark, parameters: SettlementParameters = SettlementParameters()
) -> MarkPreview:
    """What settling this mark on `payment_date` would take, as the *Settle open transactions* page shows it.

    Without an amount to settle the preview assumes the whole open balance is paid.
    """
    use = _use_cash_discount(mark)
    shown_tier = _tier(invoice, payment_date, UseCashDiscount.ALWAYS)  # the page keeps the last date once expired
    offered = invoice.open_amount if mark.amount_to_settle is None else mark.amount_to_settle
    cash, discount = _split(invoice, offered, payment_date, use, parameters)
    return MarkPreview(
        invoice_id=mark.invoice_id,
        cash_discount_date=shown_tier.date if shown_tier else None,
        cash_discount_amount=available_discount(invoice, payment_date, use),
        use_cash_discount=use,
        cash_discount_taken=invoice.discount_taken,
        cash_discount_amount_to_take=discount,
        amount_to_settle=cash,
    )


# --- settling -------------------------------------------------------------------------------

_Plan = list[tuple[OpenTransaction, UseCashDiscount, Decimal | None]]


def _settle(
    credit: OpenTransaction,
    plan: _Plan,
    on: date,
    parameters: SettlementParameters,
    rejected: Sequence[RejectedMark] = (),
) -> SettlementResult:
    left = -credit.open_amount
    settlements = []
    for invoice, use, amount_to_settle in plan:
        if left <= 0:
            break
        offered = left if amount_to_settle is None else min(left, amount_to_settle)
        cash, discount = _split(invoice, offered, on, use, parameters)
        if cash > 0:  # a settlement moves cash; only a 100 % discount could leave none
            account = invoice.cash_discount_account if discount else None
            settlements.append(InvoiceSettlement(invoice.voucher, invoice.invoice_id, cash, discount, account))
            left -= cash
    return SettlementResult(
        customer_account=credit.customer_account,
        currency=credit.currency,
        settlement_date=on,
        credit_voucher=credit.voucher,
        settlements=tuple(settlements),
        unused_amount=left,
        rejected_marks=tuple(rejected),
    )


def settle_credit(
    credit: OpenTransaction,
    transactions: Iterable[OpenTransaction],
    *,
    marks: Sequence[Mark] | None = None,
    settlement_date: date | None = None,
    parameters: SettlementParameters = SettlementParameters(),
) -> SettlementResult:
    """Settle an open credit (a payment or a credit note) against the customer's open invoices.

    With marks, only the marked invoices are settled: oldest transaction date first and, on the same date,
    the larger available discount first. Without marks, automatic settlement takes every open debit of the
    customer in the credit's currency, oldest due date first; a payment then takes discounts as `Normal`,
    any other credit (a credit note) takes none. Whatever the credit does not cover stays open on it.
    """
    if credit.open_amount >= 0:
        raise InvalidPayment(f"{credit.voucher}: nothing to settle, the open credit is {credit.open_amount}")
    on = settlement_date or credit.transaction_date
    transactions = list(transactions)
    if marks is None:
        use = UseCashDiscount.NORMAL if credit.transaction_type == "Payment" else UseCashDiscount.NEVER
        debits = [
            t
            for t in transactions
            if t.open_amount > 0
            and t.auto_settle
            and t.customer_account == credit.customer_account
            and t.currency == credit.currency
        ]
        debits.sort(key=lambda t: (t.due_date or t.transaction_date, t.transaction_date, t.voucher))
        return _settle(credit, [(t, use, None) for t in debits], on, parameters)

    plan: _Plan = []
    rejected: list[RejectedMark] = []
    seen: set[str] = set()
    for mark in marks:
        try:
            use = _use_cash_discount(mark)
            if mark.invoice_id in seen:  # known or not: an unknown invoice marked twice waits only once
                raise MarkRejected(mark.invoice_id, f"invoice {mark.invoice_id!r} is marked more than once")
            seen.add(mark.invoice_id)
            invoice = find_marked_invoice(mark, transactions, credit.customer_account, credit.currency)
        except MarkRejected as e:
            rejected.append(RejectedMark(e.invoice_id, e.reason, isinstance(e, UnknownInvoice)))
            continue
        plan.append((invoice, use, mark.amount_to_settle))
    plan.sort(
        key=lambda p: (
            p[0].transaction_date,
            -available_discount(p[0], on, p[1]),
            p[0].due_date or p[0].transaction_date,
            p[0].voucher,
        )
    )
    return _settle(credit, plan, on, parameters, rejected)


def settle_new_invoice(
    invoice: OpenTransaction,
    credits: Sequence[tuple[OpenTransaction, Mark | None]],
    parameters: SettlementParameters = SettlementParameters(),
) -> list[SettlementResult]:
    """Settle a newly arrived invoice with the credits waiting for it, in the order they arrived.

    `credits` pairs each credit with the payment's pending mark on this invoice, or None for a credit that
    settles automatically (an unmarked payment, a credit note). Each settles as it would have if the invoice
    had been there first: a mark as settle_credit settles it, an unmarked payment with the `Normal` discount
    as of its payment date, a credit note without discount. Returns one result per credit that settled
    something or whose mark was rejected; apply them in order.
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
        elif credit.transaction_type == "Payment":
            result = _settle(credit, [(invoice, UseCashDiscount.NORMAL, None)], credit.transaction_date, parameters)
        else:
            result = _settle(credit, [(invoice, UseCashDiscount.NEVER, None)], invoice.transaction_date, parameters)
        if result.settlements or result.rejected_marks:
            results.append(result)
            invoice = apply_settlement([invoice, credit], result)[0]
    return results


def reservations(open_credit: Decimal, marks: Sequence[Mark]) -> list[Decimal]:
    """What a payment's pending marks hold of its open credit (a positive amount), mark by mark in the
    payment's order: a mark with an amount to settle that amount, one without the rest, each capped at what
    is left. Informational: when the invoices arrive the marks settle in the source's order (docs/ordering.md)."""
    left = open_credit
    held = []
    for mark in marks:
        take = left if mark.amount_to_settle is None else min(left, mark.amount_to_settle)
        held.append(take)
        left -= take
    return held


def apply_settlement(transactions: Sequence[OpenTransaction], result: SettlementResult) -> list[OpenTransaction]:
    """The transactions after the settlement, in the same order; the ones it does not touch are unchanged.

    Each debit's open balance falls by cash + discount (its discount taken grows by the discount), the
    credit's rises by the cash applied. Raises SettlementError if the settlement no longer fits the balances
    (a stale result): a debit would go below zero or the credit above it.
    """
    open_change: dict[str, Decimal] = {result.credit_voucher: result.cash_applied}
    discount_change: dict[str, Decimal] = {}
    for s in result.settlements:
        open_change[s.debit_voucher] = open_change.get(s.debit_voucher, ZERO) - s.total_settled
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
            replace(t, open_amount=new_open, discount_taken=t.discount_taken + discount_change.get(t.voucher, ZERO))
        )
    return updated


def settle_new_transaction(
    transaction: OpenTransaction, transactions: Iterable[OpenTransaction]
) -> list[SettlementResult]:
    """Settle a newly posted credit note with the customer's open debits, oldest due date first, without
    discount. Anything else, or a credit note with nothing open, settles nothing (a new invoice is settled
    by settle_new_invoice with the credits waiting for it, in their order of arrival).
    """
    others = [t for t in transactions if t.voucher != transaction.voucher]
    if transaction.transaction_type == "CreditNote" and transaction.open_amount < 0:
        result = settle_credit(transaction, others)
        return [result] if result.settlements else []
    return []


def cash_discount_vouchers(payment_id: str, count: int, taken: Collection[str] = ()) -> list[str]:
    """Vouchers for the cash discounts one payment takes: ARP-10020 gives DISC-10020, then DISC-10020-2, ...

    Deterministic, so a replayed payment names its discounts the same way; `taken` (vouchers already in use,
    e.g. by payment "10020" next to "ARP-10020") are skipped.
    """
    base = "DISC-" + payment_id.removeprefix("ARP-")
    vouchers: list[str] = []
    n = 1
    while len(vouchers) < count:
        candidate = base if n == 1 else f"{base}-{n}"
        if candidate not in taken:
            vouchers.append(candidate)
        n += 1
    return vouchers


# --- write-offs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PairSettled:
    """A debit settled against a credit without discount: the debit falls, the credit rises, by `amount`."""

    debit_voucher: str
    credit_voucher: str
    amount: Decimal


@dataclass(frozen=True)
class WriteOffSettlement:
    write_off: OpenTransaction  # what is left open of the write-off: zero unless something named was not open
    settled: tuple[OpenTransaction, ...]  # the named transactions after the write-off, in the order named
    pairs: tuple[PairSettled, ...]
    shortfalls: tuple[str, ...]  # why part of the write-off settled nothing; it stays open on the write-off
    pending: tuple[tuple[str, Decimal], ...] = ()  # named transactions not known yet: settled when they arrive


def settle_write_off(
    write_off: OpenTransaction, named: Sequence[tuple[str, Decimal]], transactions: Iterable[OpenTransaction]
) -> WriteOffSettlement:
    """Settle the transactions a posted write-off names, each by the (signed) amount named.

    A named debit (invoice) is settled against the write-off as its credit, a named credit against the
    write-off as its debit, so the write-off's own balance ends at zero when everything named was open.
    The journal is posted already, so a transaction that is no longer open for the amount named is settled
    for what is open and the difference is reported, never refused: it stays open on the write-off. A
    transaction settlement does not know yet is `pending`: the write-off holds that amount for it.
    """
    by_voucher = {t.voucher: t for t in transactions}
    left = write_off.open_amount
    pairs: list[PairSettled] = []
    shortfalls: list[str] = []
    pending: list[tuple[str, Decimal]] = []
    settled: dict[str, OpenTransaction] = {}
    for voucher, wanted in named:
        t = settled.get(voucher) or by_voucher.get(voucher)
        problem = None
        if t is None:
            pending.append((voucher, wanted))
            continue
        if t.customer_account != write_off.customer_account:
            problem = f"belongs to customer {t.customer_account}, not {write_off.customer_account}"
        elif t.currency != write_off.currency:
            problem = f"is in {t.currency}, the write-off in {write_off.currency}"
        if problem is not None:
            shortfalls.append(f"{voucher} {problem}: {wanted} not settled")
            continue
        assert t is not None
        same_side = (t.open_amount > 0) == (wanted > 0) and t.open_amount != 0 and wanted != 0
        amount = min(abs(t.open_amount), abs(wanted)) if same_side else ZERO
        if amount != abs(wanted):
            shortfalls.append(
                f"{voucher} was written off for {wanted} but only {t.open_amount} was open: "
                f"{amount} settled, {abs(wanted) - amount} left open on {write_off.voucher}"
            )
        if amount == 0:
            continue
        if t.open_amount > 0:
            pairs.append(PairSettled(t.voucher, write_off.voucher, amount))
            settled[voucher] = replace(t, open_amount=t.open_amount - amount)
            left += amount
        else:
            pairs.append(PairSettled(write_off.voucher, t.voucher, amount))
            settled[voucher] = replace(t, open_amount=t.open_amount + amount)
            left -= amount
    return WriteOffSettlement(
        replace(write_off, open_amount=left), tuple(settled.values()), tuple(pairs), tuple(shortfalls), tuple(pending)
    )


def write_off_problems(
    write_off: OpenTransaction, named: Sequence[tuple[str, Decimal]], transactions: Iterable[OpenTransaction]
) -> list[str]:
    """Why a posted write-off line cannot be settled as it states (empty: it can), checked before
    anything is applied, so a forged or corrupted JournalPosted changes nothing (defence in depth).

    The named amounts must add up to what the line reverses, each voucher be named once and not for
    zero, and every named transaction settlement knows be the line's customer's, in its currency, on
    the side and within the size of its original amount. A transaction not known yet, or no longer
    fully open because a payment came first, is no problem here (docs/ordering.md)."""
    problems = []
    if named and sum((amount for _, amount in named), ZERO) != -write_off.original_amount:
        total = sum((amount for _, amount in named), ZERO)
        problems.append(f"names {total} in all, but the line reverses {-write_off.original_amount}")
    by_voucher = {t.voucher: t for t in transactions}
    seen: set[str] = set()
    for voucher, wanted in named:
        if voucher in seen:
            problems.append(f"names {voucher} twice")
        seen.add(voucher)
        if wanted == 0:
            problems.append(f"names {voucher} for 0.00")
        if (t := by_voucher.get(voucher)) is None:
            continue
        if t.customer_account != write_off.customer_account:
            problems.append(f"{voucher} belongs to customer {t.customer_account}, not {write_off.customer_account}")
        if t.currency != write_off.currency:
            problems.append(f"{voucher} is in {t.currency}, the write-off in {write_off.currency}")
        if wanted and (t.original_amount > 0) != (wanted > 0):
            problems.append(f"{voucher} of {t.original_amount} is named for {wanted}, on the other side")
        elif abs(wanted) > abs(t.original_amount):
            problems.append(f"{voucher} of {t.original_amount} is named for more, {wanted}")
    return problems
