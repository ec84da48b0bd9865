"""What a settlement books: the cash discount transactions it creates, the settled pairs history keeps and
OpenItemsSettled publishes, the difference postings; and the reversal that undoes a settlement by new,
opposite postings (nothing is deleted)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from typing import Any

from kredit_settlement.domain.accounting import account_settlement
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
EXCHANGE = "EXCH-"  # a realized exchange loss or gain (docs/currencies.md)
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


def first_vouchers(credit_voucher: str, count: int) -> list[str]:
    """The first `count` names numbered_vouchers gives each kind of posting of a credit's settlement (discount,
    difference, exchange) when none is taken: what a batch asks the database about at once."""
    return [v for prefix in (DISCOUNT, DIFFERENCE, EXCHANGE) for v in numbered_vouchers(prefix, credit_voucher, count)]


def cash_discount_vouchers(payment_id: str, count: int, taken: Collection[str] = ()) -> list[str]:
    return numbered_vouchers(DISCOUNT, payment_id, count, taken)


def vouchers_needed(
    results: Iterable[SettlementResult],
    transactions: Sequence[OpenTransaction] | None = None,
    accounts: Accounts | None = None,
) -> dict[tuple[str, str], int]:
    """How many discount, difference and (given the transactions) exchange vouchers each credit's results post:
    {(prefix, credit voucher): count}."""
    needed: dict[tuple[str, str], int] = {}
    results = list(results)
    after = list(transactions or ())
    # Only a settlement in a foreign currency realizes an exchange difference; each one's is read from the
    # balances the results before it leave.
    foreign = accounts is not None and any(r.currency != accounts.accounting_currency for r in results)
    for r in results:
        discounts = sum(1 for s in r.settlements if s.cash_discount) + (1 if r.credit_discount else 0)
        differences = sum(1 for s in r.settlements if s.difference)
        exchanges = 0
        if transactions is not None and accounts is not None and foreign:
            accounting = account_settlement(r, after, accounts.accounting_currency)
            if r.currency != accounts.accounting_currency:
                exchanges = sum(1 for line in accounting.lines if line.realized_loss)
            after = apply_settlement(after, r, accounting=accounting)
        for prefix, count in ((DISCOUNT, discounts), (DIFFERENCE, differences), (EXCHANGE, exchanges)):
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
    discount a customer debit (positive) settled against the credit note: the offsetting pair D365 shows. In a
    foreign currency each pair also carries its accounting-currency amounts (account_settlement) and a realized
    exchange loss or gain is posted on an exchange voucher of its own (EXCH-, docs/currencies.md). Raises
    SettlementError when an account it needs is missing from the setup."""
    left = {key: list(names) for key, names in vouchers.items()}
    after = list(transactions)
    pairs: list[SettledPair] = []
    discounts: list[OpenTransaction] = []
    for result in results:
        credit = next(t for t in after if t.voucher == result.credit_voucher)
        accounting = account_settlement(result, after, accounts.accounting_currency)
        foreign = result.currency != accounts.accounting_currency
        for s, line in zip(result.settlements, accounting.lines):
            disc = (
                _discount(
                    result, credit, -s.cash_discount, -line.cash_discount, s.cash_discount_account, left, accounts
                )
                if s.cash_discount
                else None
            )
            more: dict[str, Any] = {}
            if s.difference:
                assert s.difference_kind is not None
                more = {
                    "difference_amount": s.difference,
                    "difference_account": accounts.for_difference(s.difference_kind),
                    "difference_voucher": left[(DIFFERENCE, result.credit_voucher)].pop(0),
                }
            if foreign:
                more |= {
                    "debit_accounting_amount": line.debit,
                    "credit_accounting_amount": line.credit,
                    "cash_discount_accounting_amount": line.cash_discount,
                    "difference_accounting_amount": line.difference,
                    "realized_exchange_loss": line.realized_loss,
                }
                if line.realized_loss:
                    more |= {
                        "exchange_account": accounts.for_exchange(line.realized_loss),
                        "exchange_voucher": left[(EXCHANGE, result.credit_voucher)].pop(0),
                    }
            pairs.append(
                _pair(
                    result,
                    f"{settlement_id}:{len(pairs) + 1}",
                    s.debit_voucher,
                    s.cash_applied,
                    cash_discount_amount=s.cash_discount,
                    cash_discount_voucher=disc.voucher if disc else None,
                    **more,
                )
            )
            discounts += [disc] if disc else []
        if result.credit_discount:
            account = result.credit_discount_account or credit.cash_discount_account
            own_accounting = accounting.credit_discount
            own = _discount(result, credit, result.credit_discount, own_accounting, account, left, accounts)
            discounts.append(own)
            fx: dict[str, Any] = {}
            if foreign:
                fx = {
                    "debit_accounting_amount": own_accounting,
                    "credit_accounting_amount": own_accounting,
                    "cash_discount_accounting_amount": ZERO,
                    "difference_accounting_amount": ZERO,
                    "realized_exchange_loss": ZERO,
                }
            pairs.append(_pair(result, f"{settlement_id}:{len(pairs) + 1}", own.voucher, result.credit_discount, **fx))
        after = apply_settlement(after, result, accounting=accounting)
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
    credit: OpenTransaction,
    amount: Decimal,
    accounting_amount: Decimal,
    account: str | None,
    vouchers: dict[tuple[str, str], list[str]],
    accounts: Accounts,
) -> OpenTransaction:
    """A cash discount as a customer transaction (signed), settled at once; booked at the credit's rate."""
    return OpenTransaction(
        vouchers[(DISCOUNT, result.credit_voucher)].pop(0),
        result.customer_account,
        "CashDiscount",
        result.settlement_date,
        result.currency,
        amount,
        ZERO,
        cash_discount_account=accounts.for_discount(account),
        exchange_rate=credit.exchange_rate,
        accounting_original_amount=accounting_amount,
        accounting_open_amount=ZERO,
    )


# --- reversal -------------------------------------------------------------------------------


def check_reversible(settlement_id: str, pairs: Iterable[tuple[str | None, str | None]]) -> None:
    """ReversalRefused for a settlement reversed before or itself a reversal: `pairs` are each of its pairs'
    (reversed_by, reversal_of)."""
    for reversed_by, reversal_of in pairs:
        if reversal_of:
            raise ReversalRefused(
                f"settlement {settlement_id} is itself a reversal; settle the transactions again instead"
            )
        if reversed_by:
            raise ReversalRefused(f"settlement {settlement_id} was already reversed by {reversed_by}")


class ReversalRefused(SettlementError):
    """A settlement that cannot be reversed here; the message says why."""


def apply_pairs(transactions: Sequence[OpenTransaction], pairs: Iterable[SettledPair]) -> list[OpenTransaction]:
    """The transactions after the settled pairs: the debit falls by cash + discount + difference, the credit
    rises by the cash (in the accounting currency by the pair's accounting amounts). Cash discount transactions
    are settled when they are made and are left as they are. Raises SettlementError if a balance would leave
    the range between zero and the original amount."""
    change: dict[str, Decimal] = {}
    accounting: dict[str, Decimal] = {}
    taken: dict[str, Decimal] = {}
    for p in pairs:
        change[p.debit_voucher] = change.get(p.debit_voucher, ZERO) - (
            p.amount_settled + p.cash_discount_amount + p.difference_amount
        )
        accounting[p.debit_voucher] = accounting.get(p.debit_voucher, ZERO) - p.debit_accounting
        taken[p.debit_voucher] = taken.get(p.debit_voucher, ZERO) + p.cash_discount_amount
        change[p.credit_voucher] = change.get(p.credit_voucher, ZERO) + p.amount_settled
        accounting[p.credit_voucher] = accounting.get(p.credit_voucher, ZERO) + p.credit_accounting
    updated = []
    for t in transactions:
        if t.voucher not in change or t.transaction_type == "CashDiscount":
            updated.append(t)
            continue
        new_open = t.open_amount + change[t.voucher]
        if not (min(ZERO, t.original_amount) <= new_open <= max(ZERO, t.original_amount)):
            raise SettlementError(f"{t.voucher}: the open balance {t.open_amount} would become {new_open}")
        updated.append(
            replace(
                t,
                open_amount=new_open,
                accounting_open_amount=t.accounting_open_amount + accounting[t.voucher],
                discount_taken=t.discount_taken + taken.get(t.voucher, ZERO),
            )
        )
    return updated


@dataclass(frozen=True)
class Reversal:
    pairs: tuple[SettledPair, ...]  # the opposite pairs, to keep and publish
    discounts: tuple[OpenTransaction, ...]  # new CashDiscount transactions that undo the discounts taken
    transactions: tuple[OpenTransaction, ...]  # the given transactions after the reversal


def _negated(amount: Decimal | None) -> Decimal | None:
    return None if amount is None else -amount


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
            accounting_original_amount=-discount.accounting_original_amount,
            accounting_open_amount=ZERO,
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
                debit_accounting_amount=_negated(p.debit_accounting_amount),
                credit_accounting_amount=_negated(p.credit_accounting_amount),
                cash_discount_accounting_amount=_negated(p.cash_discount_accounting_amount),
                difference_accounting_amount=_negated(p.difference_accounting_amount),
                realized_exchange_loss=_negated(p.realized_exchange_loss),
                exchange_voucher=reversal_voucher(p.exchange_voucher) if p.exchange_voucher else None,
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
                    debit_accounting_amount=p.credit_accounting_amount,
                    credit_accounting_amount=p.credit_accounting_amount,
                    cash_discount_accounting_amount=p.cash_discount_accounting_amount,
                    difference_accounting_amount=p.difference_accounting_amount,
                    realized_exchange_loss=p.realized_exchange_loss,
                )
            )
    after = apply_pairs(transactions, opposite)
    credits = {p.credit_voucher for p in pairs}
    after = [replace(t, auto_settle=False) if t.voucher in credits and t.is_credit else t for t in after]
    return Reversal(tuple(opposite), tuple(discounts), tuple(after))
