"""Settlement's values: transactions with what is open on them, marks, parameters, and what a settlement decides.

Pure: frozen values, no I/O. Amounts are Decimal, half-up to the cent; signed like the ledger (debit +, credit −)
on transactions, positive on the settlement results that name their side.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from enum import StrEnum

from kredit_shared.currencies import SettledInAccountingCurrency
from kredit_shared.money import ZERO, round_money

ONE = Decimal(1)

# Transactions that debit the customer (what a credit settles); the document types of the contract extensions.
DEBIT_TYPES = ("Invoice", "InterestNote", "CollectionLetterFee", "PaymentFee")
# What settlement takes from others on ar.customer-transactions; it posts payments, discounts and write-offs itself.
POSTED_ELSEWHERE = (*DEBIT_TYPES, "CreditNote")


class SettlementError(Exception):
    """A settlement the rules cannot carry out; the message says why."""


class TransactionRejected(SettlementError):
    """A posted transaction or payment settlement cannot take (a zero or negative payment, a currency without
    exchange accounts, ...); the message says why."""


class PaymentAwaitsRate(TransactionRejected):
    """A payment rejected only because no rate is known for its `currency` on `on`: a rate set later books it."""

    def __init__(self, reason: str, currency: str, on: date) -> None:
        super().__init__(reason)
        self.currency = currency
        self.on = on


class MarkRejected(SettlementError):
    """A mark that cannot be settled. The payment still posts; the caller records the reason."""

    def __init__(self, invoice_id: str, reason: str) -> None:
        super().__init__(f"mark on invoice {invoice_id!r} rejected: {reason}")
        self.invoice_id = invoice_id
        self.reason = reason


class Unknown(SettlementError):
    """A settlement, payment or transaction nobody posted (HTTP 404)."""


class UnknownInvoice(MarkRejected):
    """The marked transaction is not known (yet): it may still be on its way from invoicing."""


class InvalidParameters(SettlementError):
    """Settlement parameters that contradict each other or the setup; `field` names the culprit."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field


class UseCashDiscount(StrEnum):
    NORMAL = "Normal"  # only before the discount date, partial payments only if the parameter allows
    ALWAYS = "Always"  # overrides the date and the partial-payment parameter
    NEVER = "Never"


class CashDiscountAdministration(StrEnum):
    """What an overpayment does to a cash discount (D365 *Cash discounts for overpayments*)."""

    SPECIFIC = "Specific"  # the full discount is taken; the overpayment is written off (tolerance) or stays open
    UNSPECIFIC = "Unspecific"  # the overpayment reduces the discount


class PriorityCriterion(StrEnum):
    TRANSACTION_TYPE = "TransactionType"
    DUE_DATE = "DueDate"
    TRANSACTION_DATE = "TransactionDate"
    CASH_DISCOUNT_DATE = "CashDiscountDate"
    AMOUNT = "Amount"
    VOUCHER = "Voucher"


# D365's settlement priority page calls the letter fee "Collection letter"; both names mean the same type.
TYPE_ALIASES = {"CollectionLetter": "CollectionLetterFee"}


@dataclass(frozen=True)
class PriorityRule:
    criterion: PriorityCriterion
    descending: bool = False
    order: tuple[str, ...] = ()  # TransactionType: the types settled first, in order (aliases resolved)


class DifferenceKind(StrEnum):
    PENNY = "penny difference"
    OVER_UNDER = "overpayment or underpayment"


@dataclass(frozen=True)
class SettlementParameters:
    """D365's settlement parameters (*Accounts receivable parameters*, Settlement)."""

    calculate_cash_discounts_for_partial_payments: bool = True
    calculate_cash_discounts_for_credit_notes: bool = False
    maximum_penny_difference: Decimal = ZERO
    maximum_overpayment_or_underpayment: Decimal = ZERO
    cash_discount_administration: CashDiscountAdministration = CashDiscountAdministration.SPECIFIC
    automatic_settlement: bool = True
    prioritize_settlement: bool = False
    use_priority_for_automatic_settlements: bool = False
    settlement_priority: tuple[PriorityRule, ...] = ()

    def difference_kind(self, amount: Decimal) -> DifferenceKind | None:
        """Where a penny difference or over/underpayment of `amount` (positive) goes; None: it stays open.

        Up to the maximum penny difference to the penny account, else up to the maximum over/underpayment
        to the over/underpayment account (D365 *Configure settlement*)."""
        if amount <= 0:
            return None
        if amount <= self.maximum_penny_difference:
            return DifferenceKind.PENNY
        if amount <= self.maximum_overpayment_or_underpayment:
            return DifferenceKind.OVER_UNDER
        return None

    @property
    def automatic_priority(self) -> tuple[PriorityRule, ...]:
        """The priority automatic settlement follows; () for the default (oldest due date first)."""
        if self.automatic_settlement and self.use_priority_for_automatic_settlements:
            return self.settlement_priority
        return ()

    @property
    def marking_priority(self) -> tuple[PriorityRule, ...]:
        """The priority marked transactions settle in (D365's *Mark by priority*); () for the source's order."""
        return self.settlement_priority if self.prioritize_settlement else ()


DEFAULTS = SettlementParameters()


@dataclass(frozen=True)
class Accounts:
    """The ledger accounts settlement posts to besides the customer's (D365 *Accounts for automatic transactions*),
    and the accounting currency with the accounts of realized exchange differences (docs/currencies.md)."""

    cash_discount: str | None = None  # for discounts of transactions whose discount code named no account
    penny_difference: str | None = None
    overpayment_underpayment: str | None = None
    # Compared by the three accounts above only: these came later and every setup has them (docs/currencies.md).
    accounting_currency: str = field(default="USD", compare=False)
    realized_gain: str | None = field(default=None, compare=False)
    realized_loss: str | None = field(default=None, compare=False)

    def for_exchange(self, loss: Decimal) -> str:
        """The account of a realized exchange loss (positive) or gain (negative)."""
        account = self.realized_loss if loss > 0 else self.realized_gain
        if account is None:
            raise SettlementError(
                f"the settlement realizes an exchange {'loss' if loss > 0 else 'gain'} of {abs(loss)} "
                f"{self.accounting_currency}, and the company setup names no exchange_accounts to post it to"
            )
        return account

    def for_discount(self, named: str | None) -> str:
        account = named or self.cash_discount
        if account is None:
            raise SettlementError("the transaction names no cash discount account and the setup has no default")
        return account

    def for_difference(self, kind: DifferenceKind) -> str:
        account = self.penny_difference if kind is DifferenceKind.PENNY else self.overpayment_underpayment
        if account is None:
            raise SettlementError(f"the setup names no account for a {kind}")
        return account


def default_discount_account(configured: str | None, code_accounts: Iterable[str]) -> str | None:
    """The account for discounts of transactions that name none: the configured one, else the account the
    setup's discount codes share, if they share one."""
    shared = set(code_accounts)
    return configured or (shared.pop() if len(shared) == 1 else None)


def check_parameters(parameters: SettlementParameters, accounts: Accounts) -> None:
    """Raise InvalidParameters for a combination settlement could not carry out."""
    for name, maximum, account in (
        ("maximum_penny_difference", parameters.maximum_penny_difference, accounts.penny_difference),
        (
            "maximum_overpayment_or_underpayment",
            parameters.maximum_overpayment_or_underpayment,
            accounts.overpayment_underpayment,
        ),
    ):
        if maximum < 0:
            raise InvalidParameters(name, f"must not be negative, got {maximum}")
        if maximum > 0 and account is None:
            raise InvalidParameters(name, "the company setup names no account to post the difference to")
    seen: set[PriorityCriterion] = set()
    for n, rule in enumerate(parameters.settlement_priority):
        where = f"settlement_priority.{n}"
        if rule.criterion in seen:
            raise InvalidParameters(where, f"{rule.criterion.value} is listed twice")
        seen.add(rule.criterion)
        if (rule.criterion is PriorityCriterion.TRANSACTION_TYPE) != bool(rule.order):
            raise InvalidParameters(where, "an order of document types belongs to TransactionType, and only there")
        unknown = [t for t in rule.order if t not in DEBIT_TYPES]
        if unknown:
            raise InvalidParameters(
                f"{where}.order", f"unknown type(s) {', '.join(unknown)}: not one of {', '.join(DEBIT_TYPES)}"
            )


def priority_rule(criterion: str, direction: str = "Ascending", order: list[str] | None = None) -> PriorityRule:
    """A rule from its wire form (aliases of types resolved)."""
    return PriorityRule(
        PriorityCriterion(criterion),
        direction == "Descending",
        tuple(TYPE_ALIASES.get(t, t) for t in order or ()),
    )


@dataclass(frozen=True)
class DiscountTier:
    """`percent` (Decimal("2.00") is 2 %) when paid on or before `date`."""

    date: date
    percent: Decimal
    amount: Decimal | None = None  # the full discount on the original amount, as invoicing computed it


@dataclass(frozen=True)
class OpenTransaction:
    """A customer transaction with what is still open on it. Amounts are signed: debit +, credit −."""

    voucher: str
    customer_account: str
    transaction_type: str  # Invoice, CreditNote, Payment, CashDiscount, WriteOff, InterestNote, ...
    transaction_date: date
    currency: str
    original_amount: Decimal
    open_amount: Decimal
    invoice_id: str | None = None
    due_date: date | None = None
    cash_discounts: tuple[DiscountTier, ...] = ()
    discount_taken: Decimal = ZERO
    cash_discount_account: str | None = None
    # False for a payment that carried marks, a write-off, a credit posted while automatic settlement was off,
    # and a credit whose settlement was reversed: its open balance is never applied automatically
    # (docs/ordering.md), only by its marks, the write-off it belongs to, or a person.
    auto_settle: bool = True
    # A payment's *selected date* (date_to_use_for_calculating_discounts): its discounts are taken as of this day.
    discount_date: date | None = None
    # Accounting-currency units per unit of `currency` it was booked at, and its amounts in the accounting
    # currency (docs/currencies.md). Left out: rate 1, the accounting amounts are the amounts themselves.
    exchange_rate: Decimal = ONE
    accounting_original_amount: Decimal = None  # type: ignore[assignment]  # filled in by __post_init__
    accounting_open_amount: Decimal = None  # type: ignore[assignment]  # filled in by __post_init__

    def __post_init__(self) -> None:
        if self.accounting_original_amount is None:
            original = (
                self.original_amount
                if self.exchange_rate == ONE
                else round_money(self.original_amount * self.exchange_rate)
            )
            object.__setattr__(self, "accounting_original_amount", original)
        if self.accounting_open_amount is None:
            if self.open_amount == self.original_amount:
                accounting_open = self.accounting_original_amount
            elif self.exchange_rate == ONE:
                accounting_open = self.open_amount
            else:
                accounting_open = round_money(self.open_amount * self.exchange_rate)
            object.__setattr__(self, "accounting_open_amount", accounting_open)

    def with_open(
        self, open_amount: Decimal, accounting_open_amount: Decimal, discount_taken: Decimal
    ) -> OpenTransaction:
        """`dataclasses.replace(self, open_amount=…, accounting_open_amount=…, discount_taken=…)`: the transaction
        after a settlement, at a quarter of replace's cost (every settled pair makes one). Both accounting
        amounts are set, so __post_init__ has nothing to fill in."""
        changed = object.__new__(OpenTransaction)
        values = changed.__dict__
        values.update(self.__dict__)
        values["open_amount"] = open_amount
        values["accounting_open_amount"] = accounting_open_amount
        values["discount_taken"] = discount_taken
        return changed

    @property
    def is_debit(self) -> bool:
        return self.transaction_type in DEBIT_TYPES

    @property
    def is_credit(self) -> bool:
        return self.transaction_type in ("Payment", "CreditNote")


@dataclass(frozen=True)
class Mark:
    """A transaction marked for settlement: a debit (invoice, interest note, fee), a credit note or an open
    payment, named by its invoice id or voucher. `use_cash_discount` stays a string so a bad value rejects only
    this mark; `unknown_fields` are fields the sender gave that settlement does not know (they reject it too)."""

    invoice_id: str
    amount_to_settle: Decimal | None = None  # cash to apply; None = whatever the credit covers
    use_cash_discount: str = UseCashDiscount.NORMAL
    full_settlement: bool = False  # close the debit; what the cash leaves open is posted as extra cash discount
    cash_discount_amount: Decimal | None = None  # overrides the calculated discount (D365's manual discount)
    unknown_fields: tuple[str, ...] = ()


MARK_FIELDS = ("invoice_id", "amount_to_settle", "use_cash_discount", "full_settlement", "cash_discount_amount")


@dataclass(frozen=True)
class InvoiceSettlement:
    """One debit settled by the credit: its open balance falls by cash_applied + cash_discount + difference.

    `difference` is a written-off penny difference or over/underpayment: positive when the debit was
    underpaid, negative when the credit overpaid it (the overpayment is then part of cash_applied)."""

    debit_voucher: str
    invoice_id: str | None
    cash_applied: Decimal
    cash_discount: Decimal
    cash_discount_account: str | None  # None when no discount, or when the invoice named no account
    difference: Decimal = ZERO
    difference_kind: DifferenceKind | None = None

    @property
    def total_settled(self) -> Decimal:
        return self.cash_applied + self.cash_discount + self.difference


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
    # A credit note's own cash discount (calculate_cash_discounts_for_credit_notes): the credit rises by it too.
    credit_discount: Decimal = ZERO
    credit_discount_account: str | None = None

    @property
    def cash_applied(self) -> Decimal:
        return sum((s.cash_applied for s in self.settlements), ZERO)

    @property
    def cash_discount(self) -> Decimal:
        return sum((s.cash_discount for s in self.settlements), ZERO)

    @property
    def settled_anything(self) -> bool:
        return bool(self.settlements) or self.credit_discount > 0


@dataclass(frozen=True)
class MarkPreview:
    """The discount fields of the *Settle open transactions* page for one mark; signed like the transaction
    (a credit note's discount and amount to settle are negative, as D365 shows them)."""

    invoice_id: str
    cash_discount_date: date | None
    # The tier's discount on the original amount (or the manual one): what was taken does not lower it.
    cash_discount_amount: Decimal
    use_cash_discount: UseCashDiscount
    cash_discount_taken: Decimal
    cash_discount_amount_to_take: Decimal
    amount_to_settle: Decimal


@dataclass(frozen=True)
class SettledPair(SettledInAccountingCurrency):
    """One settled debit/credit pair as history keeps it and OpenItemsSettled publishes it."""

    settlement_id: str
    customer_account: str
    settlement_date: date
    currency: str
    debit_voucher: str
    credit_voucher: str
    amount_settled: Decimal
    cash_discount_amount: Decimal = ZERO
    cash_discount_voucher: str | None = None
    difference_amount: Decimal = ZERO
    difference_account: str | None = None
    difference_voucher: str | None = None  # the ledger voucher that posted the difference
    # In a foreign currency (None in the accounting currency, where each equals its transaction amount): what
    # the pair moves in the accounting currency (docs/currencies.md). The debit's accounting balance falls by
    # debit_accounting_amount, the credit's rises by credit_accounting_amount; the realized exchange loss
    # (negative: a gain) is debit - credit - discount - difference, posted on `exchange_voucher`.
    debit_accounting_amount: Decimal | None = None
    credit_accounting_amount: Decimal | None = None
    cash_discount_accounting_amount: Decimal | None = None
    difference_accounting_amount: Decimal | None = None
    realized_exchange_loss: Decimal | None = None
    exchange_account: str | None = None
    exchange_voucher: str | None = None

    @property
    def realized_loss(self) -> Decimal:
        return ZERO if self.realized_exchange_loss is None else self.realized_exchange_loss
