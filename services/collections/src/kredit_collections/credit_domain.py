"""Credit and collections management rules beyond aging and write-off: credit limits and credit
checks, collection letters, interest notes, collection activities and disputes.

Pure: values in, decisions out. No database, broker or web library is imported here (import-linter
checks it as it checks domain.py). docs/credit-and-collections.md explains the rules and their sources.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from kredit_collections.domain import CustomerTransaction, TransactionBalance
from kredit_shared.company_setup import CollectionLetterLevel, InterestCode
from kredit_shared.currencies import round_to
from kredit_shared.money import ZERO, round_money


class CreditManagementError(ValueError):
    """A request that cannot be carried out; the message says why (the API answers 4xx)."""


class NotFound(CreditManagementError):
    """No such credit group, activity, dispute, letter or note (404)."""


class Conflict(CreditManagementError):
    """The request clashes with the current state, e.g. a second open dispute of an invoice (409)."""


# --- credit limits (D365 "Credit limit scenarios") ------------------------------------------


@dataclass(frozen=True)
class CustomerCredit:
    """A customer's credit settings; a customer nobody set up has no limit and no group."""

    customer_account: str
    credit_limit: Decimal | None = None
    credit_group: str | None = None
    mandatory_credit_limit: bool = False
    unlimited_credit_limit: bool = False


def effective_credit_limit(credit: CustomerCredit, group_limit: Decimal | None) -> Decimal | None:
    """The limit the customer's orders are checked against; None = unlimited (nothing is blocked).

    D365's five scenarios: the group's limit is checked first, so with both set the smaller one
    counts (individual 10,000 in a 15,000 group: 10,000; individual 20,000 in it: 15,000); an
    individual 0.00 means "not set" and the group's limit counts, unless *Mandatory credit limit*
    makes the individual limit count as it is (0.00: no credit at all, every order goes to credit
    management); *Unlimited credit limit* means no check. Without a group, an individual limit that is
    not set (or 0.00 without Mandatory) means no check, as in D365's Accounts receivable."""
    if credit.unlimited_credit_limit:
        return None
    if credit.mandatory_credit_limit:
        return credit.credit_limit if credit.credit_limit is not None else ZERO
    individual = credit.credit_limit or None
    if individual is not None and group_limit is not None:
        return min(individual, group_limit)
    return individual if individual is not None else group_limit


def is_over_credit_limit(balance: Decimal, limit: Decimal | None) -> bool:
    return limit is not None and balance > limit


@dataclass(frozen=True)
class CreditDecision:
    blocked: bool
    effective_credit_limit: Decimal | None
    balance: Decimal
    available_credit: Decimal | None
    reason: str


def available_credit(balance: Decimal, limit: Decimal | None) -> Decimal | None:
    return None if limit is None else limit - balance


def check_credit(
    credit: CustomerCredit,
    group_limit: Decimal | None,
    balance: Decimal,
    amount: Decimal,
    *,
    open_orders: Decimal = ZERO,
    group_balance: Decimal | None = None,
) -> CreditDecision:
    """Whether an order of `amount` is blocked: balance + open orders + the order against the limit.

    At the limit passes, a cent over is blocked. The group's limit is shared by its customers, so it
    is checked first against the whole group's balance (`group_balance`), then the customer's own
    exposure against the effective limit. A mandatory limit is the customer's own: no group check."""
    limit = effective_credit_limit(credit, group_limit)

    def decide(blocked: bool, reason: str) -> CreditDecision:
        return CreditDecision(blocked, limit, balance, available_credit(balance, limit), reason)

    if credit.unlimited_credit_limit:
        return decide(False, "unlimited credit limit: orders are not checked")
    exposure = balance + open_orders + amount
    what = f"balance {balance} + open orders {open_orders} + order {amount} = {exposure}"
    group_counts = group_limit is not None and group_balance is not None and not credit.mandatory_credit_limit
    if group_counts:
        assert group_limit is not None and group_balance is not None
        group_exposure = group_balance + open_orders + amount
        if group_exposure > group_limit:
            return decide(
                True,
                f"credit group {credit.credit_group}: the group's balance {group_balance} + open orders "
                f"{open_orders} + order {amount} = {group_exposure} exceeds the group's credit limit "
                f"{group_limit} by {group_exposure - group_limit}",
            )
    if limit is None:
        return decide(False, "no credit limit is set: orders are not checked")
    if exposure > limit:
        if limit == 0 and credit.mandatory_credit_limit:
            return decide(True, f"mandatory credit limit 0.00: no credit ({what})")
        return decide(True, f"{what} exceeds the credit limit {limit} by {exposure - limit}")
    return decide(False, f"{what} is within the credit limit {limit}")


def credit_balance(balances: Iterable[TransactionBalance], currency: str) -> Decimal:
    """What the customer owes in `currency` (the accounting currency): the sum of the open balances in it,
    foreign-currency transactions at their accounting balances (docs/currencies.md)."""
    return round_money(
        sum((b.accounting for b in balances if b.transaction.balance_currency(currency) == currency), ZERO)
    )


# --- collection letters ---------------------------------------------------------------------


@dataclass(frozen=True)
class OverdueItem:
    """An overdue invoice as a letter or an interest note lists it."""

    voucher: str
    invoice_id: str | None
    due_date: date
    days_overdue: int
    balance: Decimal
    currency: str


@dataclass(frozen=True)
class LetterDue:
    customer_account: str
    customer_name: str | None
    level: int  # index in the sequence, 0 = first
    code: str
    fee: Decimal
    text: str
    items: tuple[OverdueItem, ...]

    @property
    def total(self) -> Decimal:
        return sum((i.balance for i in self.items), ZERO)


def letter_level(days_overdue: int, sequence: Sequence[CollectionLetterLevel]) -> int | None:
    """The highest level whose days the invoice has reached, or None before the first."""
    reached = [n for n, level in enumerate(sequence) if days_overdue >= level.days_overdue]
    return reached[-1] if reached else None


def _overdue_invoices(
    balances: Iterable[TransactionBalance], as_of: date, excluded: Collection[str]
) -> list[tuple[TransactionBalance, OverdueItem]]:
    """Open invoices past their due date as of `as_of`, oldest due first; `excluded` (disputed, or in a
    write-off) are left out. Balances are as of `as_of`, so a payment after it does not count yet."""
    found = []
    for b in balances:
        t = b.transaction
        if t.transaction_type != "Invoice" or b.balance <= 0 or t.due_date is None or b.voucher in excluded:
            continue
        if (days := (as_of - t.due_date).days) > 0:
            found.append((b, OverdueItem(t.voucher, t.invoice_id, t.due_date, days, b.balance, t.currency)))
    return sorted(found, key=lambda f: (f[1].due_date, f[1].voucher))


def letters_due(
    balances: Iterable[TransactionBalance],
    as_of: date,
    sequence: Sequence[CollectionLetterLevel],
    sent: Mapping[str, int],
    excluded: Collection[str] = frozenset(),
) -> list[LetterDue]:
    """The letters to send as of `as_of`: one per customer and level (and currency, so a letter's total
    is one amount), listing the overdue invoices that reached that level and have not had a letter at
    that level or a higher one (`sent`: voucher -> highest level sent). So an invoice moves up the
    sequence, a level is never sent twice for the same invoice, and one first seen 65 days late gets
    the final letter at once."""
    grouped: dict[tuple[str, str, int], list[tuple[TransactionBalance, OverdueItem]]] = defaultdict(list)
    for b, item in _overdue_invoices(balances, as_of, excluded):
        level = letter_level(item.days_overdue, sequence)
        if level is not None and level > sent.get(item.voucher, -1):
            grouped[(b.transaction.customer_account, item.currency, level)].append((b, item))
    letters = []
    for (account, _, level), found in sorted(grouped.items()):
        setup = sequence[level]
        name = next((b.transaction.customer_name for b, _ in found if b.transaction.customer_name), None)
        items = tuple(item for _, item in found)
        letters.append(LetterDue(account, name, level, setup.code, setup.fee, setup.text, items))
    return letters


# --- interest notes -------------------------------------------------------------------------

DAYS_PER_YEAR = 365


def interest_amount(amount: Decimal, days: int, code: InterestCode, currency: str | None = None) -> Decimal:
    """Interest on `amount` for `days` days, half-up to the cent (to `currency`'s minor unit when named:
    KWD the fils, JPY whole yen).

    D365's daily rule (feature "(GBL) Allow calculating daily interest as the annual percent divided by
    365", article "Set up interest rates for an interest code"): amount × annual % / 365 × days. A
    percent per month is 12 times that per year: 1,000.00 at 1.5 % a month for 45 days is
    1,000.00 × 18 % / 365 × 45 = 22.1917… = 22.19."""
    annual = code.percent * 12 if code.per == "Month" else code.percent
    interest = amount * annual / 100 * days / DAYS_PER_YEAR
    return round_money(interest) if currency is None else round_to(interest, currency)


@dataclass(frozen=True)
class InterestLine:
    item: OverdueItem
    from_date: date  # interest runs from this date (the due date, or where the last note stopped) ...
    to_date: date  # ... to this one, the note's date
    interest: Decimal

    @property
    def days(self) -> int:
        return (self.to_date - self.from_date).days


@dataclass(frozen=True)
class InterestNoteDue:
    customer_account: str
    customer_name: str | None
    currency: str
    lines: tuple[InterestLine, ...]

    @property
    def total(self) -> Decimal:
        return sum((line.interest for line in self.lines), ZERO)


def interest_notes_due(
    balances: Iterable[TransactionBalance],
    as_of: date,
    code: InterestCode,
    charged_to: Mapping[str, date],
    excluded: Collection[str] = frozenset(),
) -> list[InterestNoteDue]:
    """Interest notes as of `as_of`, one per customer (and currency), a line per overdue invoice.

    Interest runs on the invoice's open balance as of `as_of` from its due date, or from the date the
    last note charged it to (`charged_to`), so running again for the same date adds nothing. An invoice
    `grace_days` or fewer days overdue bears none; past them, interest counts from the due date. A note
    below the code's minimum is not created and its interest keeps accruing for the next run."""
    grouped: dict[tuple[str, str], list[tuple[TransactionBalance, InterestLine]]] = defaultdict(list)
    for b, item in _overdue_invoices(balances, as_of, excluded):
        if item.days_overdue <= code.grace_days:
            continue
        start = max(item.due_date, charged_to.get(item.voucher, item.due_date))
        if (days := (as_of - start).days) <= 0:
            continue
        if interest := interest_amount(item.balance, days, code, item.currency):
            grouped[(b.transaction.customer_account, item.currency)].append(
                (b, InterestLine(item, start, as_of, interest))
            )
    notes = []
    for (account, currency), found in sorted(grouped.items()):
        name = next((b.transaction.customer_name for b, _ in found if b.transaction.customer_name), None)
        note = InterestNoteDue(account, name, currency, tuple(line for _, line in found))
        if note.total >= code.minimum_amount:
            notes.append(note)
    return notes


# --- collection activities and promises to pay ----------------------------------------------

ACTIVITY_TYPES = ("Note", "Call", "PromiseToPay")


@dataclass(frozen=True)
class Activity:
    activity_id: str
    customer_account: str
    activity_type: str
    description: str
    created_on: date
    follow_up_date: date | None = None
    owner: str | None = None
    promised_amount: Decimal | None = None
    promised_date: date | None = None
    closed: bool = False


def new_activity(
    activity_id: str,
    customer_account: str,
    activity_type: str,
    description: str,
    created_on: date,
    *,
    follow_up_date: date | None = None,
    owner: str | None = None,
    promised_amount: Decimal | None = None,
    promised_date: date | None = None,
) -> Activity:
    """An activity, checked: a promise to pay needs a positive amount and a date not before today; its
    follow-up date defaults to the promised date (when the collector checks whether it was kept)."""
    if activity_type not in ACTIVITY_TYPES:
        raise CreditManagementError(f"unknown activity type {activity_type!r} (known: {', '.join(ACTIVITY_TYPES)})")
    if activity_type == "PromiseToPay":
        if promised_amount is None or promised_amount <= 0 or promised_date is None:
            raise CreditManagementError("a promise to pay needs a positive promised_amount and a promised_date")
        follow_up_date = follow_up_date or promised_date
    elif promised_amount is not None or promised_date is not None:
        raise CreditManagementError("promised_amount and promised_date belong to a PromiseToPay only")
    return Activity(
        activity_id,
        customer_account,
        activity_type,
        description,
        created_on,
        follow_up_date,
        owner,
        promised_amount,
        promised_date,
    )


def promise_status(activity: Activity, transactions: Iterable[CustomerTransaction], today: date) -> str | None:
    """kept, broken or open for a promise to pay; None for other activities.

    Kept once the customer's payments dated from the day of the promise to the promised date add up to
    the promised amount; broken when the promised date is past and they do not."""
    if activity.activity_type != "PromiseToPay":
        return None
    assert activity.promised_amount is not None and activity.promised_date is not None
    paid = sum(
        (
            -t.amount
            for t in transactions
            if t.transaction_type == "Payment"
            and t.customer_account == activity.customer_account
            and activity.created_on <= t.transaction_date <= activity.promised_date
        ),
        ZERO,
    )
    if paid >= activity.promised_amount:
        return "kept"
    return "broken" if today > activity.promised_date else "open"


# --- disputes -------------------------------------------------------------------------------


def disputed_amounts(
    balances: Iterable[TransactionBalance], disputed: Collection[str], accounting_currency: str | None = None
) -> dict[tuple[str, str], Decimal]:
    """(customer, currency) -> the open balance of its disputed transactions (shown in the aging, whose rows
    are in the accounting currency for foreign-currency transactions: age_balances)."""
    amounts: dict[tuple[str, str], Decimal] = defaultdict(lambda: ZERO)
    for b in balances:
        if b.voucher in disputed and b.is_open:
            t = b.transaction
            amounts[(t.customer_account, t.balance_currency(accounting_currency))] += b.accounting
    return dict(amounts)
