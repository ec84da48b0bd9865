"""Posted write-offs: settle the transactions a write-off journal names, each by the amount named."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from typing import Protocol

from kredit_settlement.domain.model import ONE, OpenTransaction
from kredit_shared.money import ZERO, round_money


@dataclass(frozen=True)
class PairSettled:
    """A debit settled against a credit without discount: the debit falls, the credit rises, by `amount`."""

    debit_voucher: str
    credit_voucher: str
    amount: Decimal
    accounting_amount: Decimal | None = None  # in the accounting currency; None: the amount itself


@dataclass(frozen=True)
class WriteOffSettlement:
    write_off: OpenTransaction  # what is left open of the write-off: zero unless something named was not open
    settled: tuple[OpenTransaction, ...]  # the named transactions after the write-off, in the order named
    pairs: tuple[PairSettled, ...]
    shortfalls: tuple[str, ...]  # why part of the write-off settled nothing; it stays open on the write-off
    pending: tuple[tuple[str, Decimal], ...] = ()  # named transactions not known yet: settled when they arrive


def settle_write_off(
    write_off: OpenTransaction,
    named: Sequence[tuple[str, Decimal]],
    transactions: Iterable[OpenTransaction],
    accounting: Mapping[str, Decimal] | None = None,
) -> WriteOffSettlement:
    """Settle the transactions a posted write-off names, each by the (signed) amount named.

    A named debit (invoice) is settled against the write-off as its credit, a named credit against the
    write-off as its debit, so the write-off's own balance ends at zero when everything named was open.
    The journal is posted already, so a transaction that is no longer open for the amount named is settled
    for what is open and the difference is reported, never refused: it stays open on the write-off. A
    transaction settlement does not know yet is `pending`: the write-off holds that amount for it.

    `accounting` names what each write-off removes from the named transaction's accounting-currency balance
    (signed like the amount; SettledTransactionRef.accounting_amount); not named: the amount itself. A
    transaction the write-off closes loses all that is left of its accounting balance, and the write-off's
    own accounting balance moves by the same.
    """
    accounting = accounting or {}
    by_voucher = {t.voucher: t for t in transactions}
    left = write_off.open_amount
    left_accounting = write_off.accounting_open_amount
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
        named_accounting = abs(accounting.get(voucher, wanted))
        if amount == abs(t.open_amount):
            moved = abs(t.accounting_open_amount)
        elif amount == abs(wanted):
            moved = named_accounting
        else:
            moved = round_money(named_accounting * amount / abs(wanted))
        moved_pair = None if moved == amount else moved  # None: the amount itself
        if t.open_amount > 0:
            pairs.append(PairSettled(t.voucher, write_off.voucher, amount, moved_pair))
            settled[voucher] = replace(
                t, open_amount=t.open_amount - amount, accounting_open_amount=t.accounting_open_amount - moved
            )
            left += amount
            left_accounting += moved
        else:
            pairs.append(PairSettled(write_off.voucher, t.voucher, amount, moved_pair))
            settled[voucher] = replace(
                t, open_amount=t.open_amount + amount, accounting_open_amount=t.accounting_open_amount + moved
            )
            left -= amount
            left_accounting -= moved
    return WriteOffSettlement(
        replace(write_off, open_amount=left, accounting_open_amount=left_accounting),
        tuple(settled.values()),
        tuple(pairs),
        tuple(shortfalls),
        tuple(pending),
    )


def write_off_transaction(
    voucher: str,
    customer_account: str,
    on: date,
    currency: str,
    amount: Decimal,
    exchange_rate: Decimal | None,
    named_accounting: Sequence[Decimal] | None,
) -> OpenTransaction:
    """The WriteOff customer transaction of a posted journal's Customer line (`amount` signed, debit +). Its
    accounting amount is what it removes from the named transactions' accounting balances (`named_accounting`,
    signed as named; docs/currencies.md), its own amount when it names none. Never applied automatically: what
    it could not settle is a discrepancy for a person to look at."""
    accounting = -sum(named_accounting, ZERO) if named_accounting else amount
    return OpenTransaction(
        voucher,
        customer_account,
        "WriteOff",
        on,
        currency,
        amount,
        amount,
        auto_settle=False,
        exchange_rate=exchange_rate if exchange_rate is not None else ONE,
        accounting_original_amount=accounting,
        accounting_open_amount=accounting,
    )


def line_vouchers(vouchers: Sequence[str]) -> list[str]:
    """A customer transaction voucher per journal line (its `vouchers`): the line's voucher, suffixed when
    lines share one (V, V-2, V-3)."""
    seen: dict[str, int] = {}
    numbered = []
    for voucher in vouchers:
        seen[voucher] = seen.get(voucher, 0) + 1
        numbered.append(voucher if seen[voucher] == 1 else f"{voucher}-{seen[voucher]}")
    return numbered


def named_by_several_lines(named_per_line: Iterable[Iterable[str]]) -> list[str]:
    """A journal whose lines name one transaction twice cannot say which line settles it: why, per voucher."""
    lines_naming = Counter(v for named in named_per_line for v in set(named))
    return [f"{v} is named by {n} lines" for v, n in lines_naming.items() if n > 1]


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


class CustomerLine(Protocol):
    """What tells a write-off journal's Customer lines apart (a posted journal line has it)."""

    @property
    def voucher(self) -> str: ...

    @property
    def currency(self) -> str: ...

    @property
    def settles(self) -> Sequence[object]: ...


def exchange_difference_lines(lines: Sequence[CustomerLine], accounting_currency: str) -> set[int]:
    """The positions of the Customer lines that carry a foreign write-off's exchange difference (docs/currencies.md):
    in the accounting currency, naming nothing, in the voucher of a foreign-currency line that names what it writes
    off. The written-off transactions' accounting balances already fall by what that line names, so such a line
    is no customer transaction of its own: it only makes the ledger's receivables fall by the same."""
    foreign_vouchers = {line.voucher for line in lines if line.currency != accounting_currency and line.settles}
    return {
        n
        for n, line in enumerate(lines)
        if not line.settles and line.currency == accounting_currency and line.voucher in foreign_vouchers
    }
