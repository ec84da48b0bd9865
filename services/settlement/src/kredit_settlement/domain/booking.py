"""What a settlement books: the cash discount transactions it creates, the settled pairs history keeps and
OpenItemsSettled publishes, the difference postings; and the reversal that undoes a settlement by new,
opposite postings (nothing is deleted)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from typing import Any

from kredit_settlement.domain.model import (
    Accounts,
    OpenTransaction,
    SettledPair,
    SettlementError,
    SettlementResult,
)
from kredit_settlement.domain.settling import apply_settlement
from kredit_shared.money import ZERO

DISCOUNT = "DISC-"
DIFFERENCE = "DIFF-"
REVERSAL = "REV-"


def numbered_vouchers(prefix: str, credit_voucher: str, count: int, taken: Collection[str] = ()) -> list[str]:
    """Vouchers for what a credit's settlement posts: ARP-10020 gives DISC-10020, then DISC-10020-2, ...

    Deterministic, so a replayed payment names its postings the same way; `taken` (vouchers already in use,
    e.g. by payment "10020" next to "ARP-10020") are skipped."""
    base = prefix + credit_voucher.removeprefix("ARP-")
    vouchers: list[str] = []
    n = 1
    while len(vouchers) < count:
        candidate = base if n == 1 else f"{base}-{n}"
        if candidate not in taken:
            vouchers.append(candidate)
        n += 1
    return vouchers


def cash_discount_vouchers(payment_id: str, count: int, taken: Collection[str] = ()) -> list[str]:
    return numbered_vouchers(DISCOUNT, payment_id, count, taken)


def vouchers_needed(results: Iterable[SettlementResult]) -> dict[tuple[str, str], int]:
    """How many discount and difference vouchers each credit's results post: {(prefix, credit voucher): count}."""
    needed: dict[tuple[str, str], int] = {}
    for r in results:
        discounts = sum(1 for s in r.settlements if s.cash_discount) + (1 if r.credit_discount else 0)
        differences = sum(1 for s in r.settlements if s.difference)
        for prefix, count in ((DISCOUNT, discounts), (DIFFERENCE, differences)):
            if count:
                needed[(prefix, r.credit_voucher)] = needed.get((prefix, r.credit_voucher), 0) + count
    return needed


@dataclass(frozen=True)
class Booking:
    pairs: tuple[SettledPair, ...]  # to keep and publish, numbered `<settlement id>:<n>`
    discounts: tuple[OpenTransaction, ...]  # new CashDiscount transactions, settled at once
    transactions: tuple[OpenTransaction, ...]  # the given transactions after the settlement


def book(
    results: Sequence[SettlementResult],
    transactions: Sequence[OpenTransaction],
    settlement_id: str,
    vouchers: Mapping[tuple[str, str], Sequence[str]],
    accounts: Accounts,
) -> Booking:
    """The postings of `results` (applied in order to `transactions`); `vouchers` as vouchers_needed asked.

    An invoice's discount is a customer credit (DISC, negative) settled against the invoice; a credit note's own
    discount a customer debit (positive) settled against the credit note: the offsetting pair D365 shows."""
    left = {key: list(names) for key, names in vouchers.items()}
    after = list(transactions)
    pairs: list[SettledPair] = []
    discounts: list[OpenTransaction] = []
    for result in results:
        credit = next(t for t in after if t.voucher == result.credit_voucher)
        for s in result.settlements:
            disc = (
                _discount(result, -s.cash_discount, s.cash_discount_account, left, accounts)
                if s.cash_discount
                else None
            )
            difference = {}
            if s.difference:
                assert s.difference_kind is not None
                difference = {
                    "difference_amount": s.difference,
                    "difference_account": accounts.for_difference(s.difference_kind),
                    "difference_voucher": left[(DIFFERENCE, result.credit_voucher)].pop(0),
                }
            pairs.append(
                _pair(
                    result,
                    f"{settlement_id}:{len(pairs) + 1}",
                    s.debit_voucher,
                    s.cash_applied,
                    cash_discount_amount=s.cash_discount,
                    cash_discount_voucher=disc.voucher if disc else None,
                    **difference,
                )
            )
            discounts += [disc] if disc else []
        if result.credit_discount:
            account = result.credit_discount_account or credit.cash_discount_account
            own = _discount(result, result.credit_discount, account, left, accounts)
            discounts.append(own)
            pairs.append(_pair(result, f"{settlement_id}:{len(pairs) + 1}", own.voucher, result.credit_discount))
        after = apply_settlement(after, result)
    return Booking(tuple(pairs), tuple(discounts), tuple(after))


def _pair(result: SettlementResult, settlement_id: str, debit: str, amount: Decimal, **more: Any) -> SettledPair:
    return SettledPair(
        settlement_id,
        result.customer_account,
        result.settlement_date,
        result.currency,
        debit,
        result.credit_voucher,
        amount,
        **more,
    )


def _discount(
    result: SettlementResult,
    amount: Decimal,
    account: str | None,
    vouchers: dict[tuple[str, str], list[str]],
    accounts: Accounts,
) -> OpenTransaction:
    """A cash discount as a customer transaction (signed), settled at once."""
    return OpenTransaction(
        vouchers[(DISCOUNT, result.credit_voucher)].pop(0),
        result.customer_account,
        "CashDiscount",
        result.settlement_date,
        result.currency,
        amount,
        ZERO,
        cash_discount_account=accounts.for_discount(account),
    )


# --- reversal -------------------------------------------------------------------------------


class ReversalRefused(SettlementError):
    """A settlement that cannot be reversed here; the message says why."""


def apply_pairs(transactions: Sequence[OpenTransaction], pairs: Iterable[SettledPair]) -> list[OpenTransaction]:
    """The transactions after the settled pairs: the debit falls by cash + discount + difference, the credit
    rises by the cash. Cash discount transactions are settled when they are made and are left as they are.
    Raises SettlementError if a balance would leave the range between zero and the original amount."""
    change: dict[str, Decimal] = {}
    taken: dict[str, Decimal] = {}
    for p in pairs:
        change[p.debit_voucher] = change.get(p.debit_voucher, ZERO) - (
            p.amount_settled + p.cash_discount_amount + p.difference_amount
        )
        taken[p.debit_voucher] = taken.get(p.debit_voucher, ZERO) + p.cash_discount_amount
        change[p.credit_voucher] = change.get(p.credit_voucher, ZERO) + p.amount_settled
    updated = []
    for t in transactions:
        if t.voucher not in change or t.transaction_type == "CashDiscount":
            updated.append(t)
            continue
        new_open = t.open_amount + change[t.voucher]
        if not (min(ZERO, t.original_amount) <= new_open <= max(ZERO, t.original_amount)):
            raise SettlementError(f"{t.voucher}: the open balance {t.open_amount} would become {new_open}")
        updated.append(replace(t, open_amount=new_open, discount_taken=t.discount_taken + taken.get(t.voucher, ZERO)))
    return updated


@dataclass(frozen=True)
class Reversal:
    pairs: tuple[SettledPair, ...]  # the opposite pairs, to keep and publish
    discounts: tuple[OpenTransaction, ...]  # new CashDiscount transactions that undo the discounts taken
    transactions: tuple[OpenTransaction, ...]  # the given transactions after the reversal


def reversal_voucher(voucher: str) -> str:
    return REVERSAL + voucher


def reverse(pairs: Sequence[SettledPair], transactions: Sequence[OpenTransaction], on: date) -> Reversal:
    """Undo a settlement's pairs by opposite ones dated `on`: each debit and credit gets back what the pair
    took, each cash discount transaction an opposite one (REV-DISC-…) settled against it, each difference an
    opposite posting. The credits it reopens are no longer applied automatically (a person settles them again).

    Write-offs are undone in the general ledger (ReversalRefused); `transactions` must hold every voucher the
    pairs name."""
    by_voucher = {t.voucher: t for t in transactions}
    for p in pairs:
        for voucher in (p.debit_voucher, p.credit_voucher):
            if by_voucher[voucher].transaction_type == "WriteOff":
                raise ReversalRefused(
                    f"{p.settlement_id} settles the write-off {voucher}: a write-off is undone by reversing its journal"
                )
        if on < p.settlement_date:
            raise ReversalRefused(f"a reversal cannot be dated {on}, before the settlement on {p.settlement_date}")
    opposite: list[SettledPair] = []
    discounts: list[OpenTransaction] = []

    def undo(discount: OpenTransaction) -> OpenTransaction:
        made = replace(
            discount,
            voucher=reversal_voucher(discount.voucher),
            transaction_date=on,
            original_amount=-discount.original_amount,
            open_amount=ZERO,
        )
        discounts.append(made)
        return made

    for p in pairs:
        undone = undo(by_voucher[p.cash_discount_voucher]) if p.cash_discount_voucher else None
        opposite.append(
            replace(
                p,
                settlement_id=f"{p.settlement_id}:R",
                settlement_date=on,
                amount_settled=-p.amount_settled,
                cash_discount_amount=-p.cash_discount_amount,
                cash_discount_voucher=undone.voucher if undone else None,
                difference_amount=-p.difference_amount,
                difference_voucher=reversal_voucher(p.difference_voucher) if p.difference_voucher else None,
            )
        )
        debit = by_voucher[p.debit_voucher]
        if debit.transaction_type == "CashDiscount":  # a credit note's own discount: its opposite settles it
            own = undo(debit)
            opposite.append(
                SettledPair(
                    f"{p.settlement_id}:RD",
                    p.customer_account,
                    on,
                    p.currency,
                    debit.voucher,
                    own.voucher,
                    p.amount_settled,
                )
            )
    after = apply_pairs(transactions, opposite)
    credits = {p.credit_voucher for p in pairs}
    after = [replace(t, auto_settle=False) if t.voucher in credits and t.is_credit else t for t in after]
    return Reversal(tuple(opposite), tuple(discounts), tuple(after))
