"""Cash discount arithmetic: which tier applies, the discount on an open balance, and how offered cash splits
into cash applied and discount taken. Works on either side: a credit note's own discount mirrors an invoice's."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from kredit_settlement.domain.model import (
    DEFAULTS,
    MARK_FIELDS,
    DiscountTier,
    Mark,
    MarkPreview,
    MarkRejected,
    OpenTransaction,
    SettlementParameters,
    UseCashDiscount,
)
from kredit_shared.currencies import round_to
from kredit_shared.money import ZERO

_HUNDRED = Decimal(100)


@dataclass(frozen=True)
class Terms:
    """How one marked (or automatically chosen) transaction is to be settled; amounts are positive."""

    use: UseCashDiscount = UseCashDiscount.NORMAL
    amount_to_settle: Decimal | None = None  # the most cash to apply to (or take from) it
    full_settlement: bool = False
    cash_discount_amount: Decimal | None = None  # a manual discount instead of the calculated one

    @property
    def deliberate_discount(self) -> bool:
        """A discount a person set (manual amount or full settlement): an overpayment never reduces it."""
        return self.full_settlement or self.cash_discount_amount is not None


NORMAL = Terms()
NEVER = Terms(UseCashDiscount.NEVER)


def tier(transaction: OpenTransaction, on: date, use: UseCashDiscount) -> DiscountTier | None:
    """The tier whose percent applies on `on`: the first not yet expired; `Always` falls back to the last."""
    if use is UseCashDiscount.NEVER or not transaction.cash_discounts:
        return None
    tiers = sorted(transaction.cash_discounts, key=lambda t: t.date)
    current = next((t for t in tiers if on <= t.date), None)  # the discount date itself still counts
    if current is None and use is UseCashDiscount.ALWAYS:
        return tiers[-1]
    return current


def available_discount(
    transaction: OpenTransaction, on: date, use: UseCashDiscount | Terms = UseCashDiscount.NORMAL
) -> Decimal:
    """The discount (positive) that settling the whole open balance on `on` would take.

    It is the tier's percent of the *open* balance, not of the original amount less the discount taken:
    Microsoft's "Settle a partial customer payment that has multiple discount periods" takes 1 % of the
    700.00 left after a 2 % partial payment (7.00), where 1 % of 1,000.00 less the 6.00 taken would be 4.00.
    A manual discount (Terms.cash_discount_amount) replaces it, up to the open balance.
    """
    terms = use if isinstance(use, Terms) else Terms(use)
    open_amount = abs(transaction.open_amount)
    if terms.cash_discount_amount is not None:
        return min(terms.cash_discount_amount, open_amount)
    applies = tier(transaction, on, terms.use)
    if applies is None or open_amount == 0:
        return ZERO
    # Half-up to the currency's minor unit: 2 % of JPY 1,055 is JPY 21 (docs/currencies.md).
    return round_to(open_amount * applies.percent / _HUNDRED, transaction.currency)


def tier_discount(transaction: OpenTransaction, on: date, use: UseCashDiscount) -> Decimal:
    """The discount (positive) of the tier that applies on `on`, on the original amount, as the *Settle open
    transactions* page shows it: what was taken does not lower it (Microsoft's "Settle partial and final payments
    in full before the discount date" shows 10.00 next to the 5.00 already taken; the discount still to take is
    available_discount's)."""
    applies = tier(transaction, on, use)
    if applies is None or transaction.open_amount == 0:
        return ZERO
    return round_to(abs(transaction.original_amount) * applies.percent / _HUNDRED, transaction.currency)


def split(
    transaction: OpenTransaction, offered: Decimal, on: date, terms: Terms, parameters: SettlementParameters
) -> tuple[Decimal, Decimal]:
    """(cash applied, discount) when up to `offered` cash is put against the transaction's open balance."""
    open_amount = abs(transaction.open_amount)
    full_discount = available_discount(transaction, on, terms)
    if offered >= open_amount - full_discount:
        # Settlement adjusts the amount to settle: the cash covers the rest, so the whole discount is taken.
        return open_amount - full_discount, full_discount
    if terms.full_settlement:
        return offered, open_amount - offered  # D365 *Full settlement*: the unpaid rest is extra cash discount
    if full_discount == 0:
        return offered, ZERO
    applies = tier(transaction, on, terms.use)
    if terms.cash_discount_amount is not None:
        rate = full_discount / open_amount  # a manual discount is always taken, in proportion on a partial payment
    elif applies is not None and (
        terms.use is UseCashDiscount.ALWAYS or parameters.calculate_cash_discounts_for_partial_payments
    ):
        rate = applies.percent / _HUNDRED
    else:
        return offered, ZERO
    # The cash is the (1 − p) share of what it settles: 297.00 at 1 % settles 300.00, a 3.00 discount.
    return offered, min(round_to(offered * rate / (1 - rate), transaction.currency), full_discount)


def credit_note_terms(terms: Terms, parameters: SettlementParameters) -> Terms:
    """A credit note takes its own discount only with calculate_cash_discounts_for_credit_notes (or `Always`)."""
    if terms.use is UseCashDiscount.NORMAL and not parameters.calculate_cash_discounts_for_credit_notes:
        return Terms(UseCashDiscount.NEVER, terms.amount_to_settle)
    return terms


# --- marks ----------------------------------------------------------------------------------


def mark_terms(mark: Mark) -> Terms:
    """The terms a mark asks for, or MarkRejected saying what is wrong with it."""
    if mark.unknown_fields:
        raise MarkRejected(
            mark.invoice_id,
            f"unknown field(s) {', '.join(repr(f) for f in mark.unknown_fields)}; a mark takes "
            + ", ".join(MARK_FIELDS),
        )
    try:
        use = UseCashDiscount(mark.use_cash_discount)
    except ValueError:
        allowed = ", ".join(u.value for u in UseCashDiscount)
        raise MarkRejected(
            mark.invoice_id, f"use_cash_discount {mark.use_cash_discount!r} is not one of {allowed}"
        ) from None
    if mark.amount_to_settle is not None and mark.amount_to_settle == 0:
        raise MarkRejected(mark.invoice_id, "amount_to_settle must not be zero")
    if mark.cash_discount_amount is not None:
        if mark.cash_discount_amount < 0:
            raise MarkRejected(
                mark.invoice_id, f"cash_discount_amount must not be negative, got {mark.cash_discount_amount}"
            )
        if use is UseCashDiscount.NEVER:
            raise MarkRejected(mark.invoice_id, "cash_discount_amount contradicts use_cash_discount Never")
    return Terms(
        use,
        None if mark.amount_to_settle is None else abs(mark.amount_to_settle),
        mark.full_settlement,
        mark.cash_discount_amount,
    )


def check_debit_terms(mark: Mark, terms: Terms) -> None:
    """What only a debit's mark must satisfy (a credit's amount to settle may be signed as D365 shows it)."""
    if mark.amount_to_settle is not None and mark.amount_to_settle < 0:
        raise MarkRejected(mark.invoice_id, f"amount_to_settle must be positive, got {mark.amount_to_settle}")


def check_credit_terms(mark: Mark, terms: Terms) -> None:
    if terms.full_settlement or terms.cash_discount_amount is not None:
        raise MarkRejected(
            mark.invoice_id, "full_settlement and cash_discount_amount apply to what is settled, not to a credit"
        )


def preview_mark(
    transaction: OpenTransaction,
    payment_date: date,
    mark: Mark,
    parameters: SettlementParameters = DEFAULTS,
    discount_date: date | None = None,
) -> MarkPreview:
    """What settling this mark would take, as the *Settle open transactions* page shows it.

    Without an amount to settle the preview assumes the whole open balance is settled. The discount is taken as
    of `discount_date` (the selected date) when given, else as of the payment date. A credit note shows its own
    discount and amount to settle negative; an open payment shows what of it is open, without discount."""
    terms = mark_terms(mark)
    use = terms.use
    on = discount_date or payment_date

    def signed(amount: Decimal) -> Decimal:
        return (-amount if transaction.open_amount < 0 else amount) + ZERO  # + ZERO: never "-0.00"

    if transaction.transaction_type == "Payment":
        check_credit_terms(mark, terms)
        open_amount = -transaction.open_amount
        settle = open_amount if terms.amount_to_settle is None else min(terms.amount_to_settle, open_amount)
        return MarkPreview(mark.invoice_id, None, ZERO, use, ZERO, ZERO, signed(settle))
    if transaction.transaction_type == "CreditNote":
        check_credit_terms(mark, terms)
        terms = credit_note_terms(terms, parameters)
    else:
        check_debit_terms(mark, terms)
    shown_tier = tier(transaction, on, UseCashDiscount.ALWAYS)  # the page keeps the last date once expired
    open_amount = abs(transaction.open_amount)
    offered = open_amount if terms.amount_to_settle is None else terms.amount_to_settle
    cash, discount = split(transaction, offered, on, terms, parameters)
    # The page shows the tier's discount (or the manual one), also on a credit note whose discount the parameter
    # turns off.
    if terms.cash_discount_amount is not None:
        shown_discount = available_discount(transaction, on, terms)
    else:
        shown_discount = tier_discount(transaction, on, use)
    return MarkPreview(
        invoice_id=mark.invoice_id,
        cash_discount_date=shown_tier.date if shown_tier else None,
        cash_discount_amount=signed(shown_discount),
        use_cash_discount=use,
        cash_discount_taken=signed(transaction.discount_taken),
        cash_discount_amount_to_take=signed(discount),
        amount_to_settle=signed(cash),
    )
