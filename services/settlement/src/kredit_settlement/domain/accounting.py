"""Settling across exchange rates: what a settlement moves in the accounting currency (docs/currencies.md).

Items settle only against items of their own currency, in that currency (settling). Per settled pair, in the
accounting currency: the debit's balance falls by what it settled at the debit's rate (all that is left of it
when it closes), the credit's rises by the cash applied at the credit's rate (all that is left when it closes),
the cash discount and the difference are converted at the credit's (the payment's) rate, and the rest is the
realized exchange loss (a gain when negative). In the accounting currency every rate is 1 and the loss is 0.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from kredit_settlement.domain.model import OpenTransaction, SettlementError, SettlementResult
from kredit_shared.currencies import round_to
from kredit_shared.money import ZERO, round_money


@dataclass(frozen=True)
class PairAccounting:
    """One settled pair in the accounting currency; positive like the pair's transaction amounts."""

    debit: Decimal  # how much the debit's accounting balance falls
    credit: Decimal  # how much the credit's rises (by the cash applied)
    cash_discount: Decimal
    difference: Decimal = ZERO

    @property
    def realized_loss(self) -> Decimal:
        """What makes the pair balance: positive a loss, negative a gain."""
        return self.debit - self.credit - self.cash_discount - self.difference


@dataclass(frozen=True)
class ResultAccounting:
    lines: tuple[PairAccounting, ...]  # one per result.settlements, in order
    credit_discount: Decimal = ZERO  # a credit note's own discount: its accounting balance rises by this too

    @property
    def credit_rise(self) -> Decimal:
        return sum((line.credit for line in self.lines), ZERO) + self.credit_discount


def convert(amount: Decimal, rate: Decimal, accounting_currency: str | None = None) -> Decimal:
    """`amount × rate`, half-up to the accounting currency's minor unit (cents when not named)."""
    if accounting_currency is None:
        return round_money(amount * rate)
    return round_to(amount * rate, accounting_currency)


def _within(value: Decimal, limit: Decimal) -> Decimal:
    """`value` (positive) but no more than `limit`, the accounting balance left: rounding partial settlements
    up must never take a balance beyond zero before its transaction amount gets there."""
    return max(ZERO, min(value, limit))


def account_settlement(
    result: SettlementResult, transactions: Sequence[OpenTransaction], accounting_currency: str | None = None
) -> ResultAccounting:
    """The result's pairs in the accounting currency, as they apply to `transactions` (as they are before it)."""
    by_voucher = {t.voucher: t for t in transactions}
    try:
        credit = by_voucher[result.credit_voucher]
        debits = {s.debit_voucher: by_voucher[s.debit_voucher] for s in result.settlements}
    except KeyError as e:
        raise SettlementError(f"settlement names unknown transactions: {e.args[0]}") from None
    credit_open, credit_left = -credit.open_amount, -credit.accounting_open_amount  # positive
    left = {v: (t.open_amount, t.accounting_open_amount) for v, t in debits.items()}
    lines = []
    for s in result.settlements:
        debit = debits[s.debit_voucher]
        debit_open, debit_left = left[s.debit_voucher]
        debit_open -= s.total_settled
        fall = (
            debit_left
            if debit_open == 0
            else _within(convert(s.total_settled, debit.exchange_rate, accounting_currency), debit_left)
        )
        left[s.debit_voucher] = (debit_open, debit_left - fall)
        credit_open -= s.cash_applied
        rise = (
            credit_left
            if credit_open == 0
            else _within(convert(s.cash_applied, credit.exchange_rate, accounting_currency), credit_left)
        )
        credit_left -= rise
        lines.append(
            PairAccounting(
                fall,
                rise,
                convert(s.cash_discount, credit.exchange_rate, accounting_currency),
                convert(s.difference, credit.exchange_rate, accounting_currency),
            )
        )
    own = ZERO
    if result.credit_discount:
        credit_open -= result.credit_discount
        own = (
            credit_left
            if credit_open == 0
            else _within(convert(result.credit_discount, credit.exchange_rate, accounting_currency), credit_left)
        )
    return ResultAccounting(tuple(lines), own)
