"""Collections rules: the customer-transaction read model, aged balances, and write-off journals.

Pure: values in, decisions out. No database, broker or web library is imported here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import date, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from kredit_shared.company_setup import AgingBucket, CompanySetup, WriteOffParameters
from kredit_shared.contracts import (
    CustomerTransactionPosted,
    GeneralJournalLine,
    GeneralJournalRequested,
    JournalCancelRefused,
    JournalCreated,
    JournalEvent,
    JournalPosted,
    JournalRejected,
    JournalVoided,
    OpenItemsSettled,
    SettledTransactionRef,
)
from kredit_shared.currencies import round_to, to_accounting
from kredit_shared.money import ZERO, round_money, tidy

# --- read model: transactions and their open balances ----------------------------------------


# The documents an invoice message posts (contract field document_type): what the open invoices page lists.
INVOICE_TYPES = ("Invoice", "CreditNote", "InterestNote", "CollectionLetterFee", "PaymentFee")


@dataclass(frozen=True)
class CustomerTransaction:
    voucher: str
    transaction_type: str  # Invoice, CreditNote, Payment, CashDiscount, WriteOff, InterestNote, ...
    customer_account: str
    transaction_date: date
    amount: Decimal  # signed original amount including sales tax: debit +, credit -
    currency: str
    invoice_id: str | None = None
    due_date: date | None = None
    sales_tax_amount: Decimal = ZERO  # carries the sign of the transaction (negative on a credit note)
    customer_name: str | None = None
    # In a foreign currency (docs/currencies.md): the rate it was booked at and its value in the accounting
    # currency, signed like `amount`. Both None in the accounting currency.
    exchange_rate: Decimal | None = None
    accounting_currency_amount: Decimal | None = None

    @classmethod
    def from_event(cls, event: CustomerTransactionPosted) -> CustomerTransaction:
        return cls(**{name: getattr(event, name) for name in _TRANSACTION_FIELDS})  # same names as the contract

    @property
    def accounting_amount(self) -> Decimal:
        """The original amount in the accounting currency (the amount itself when booked in it)."""
        return self.amount if self.accounting_currency_amount is None else self.accounting_currency_amount

    def balance_currency(self, accounting_currency: str | None) -> str:
        """The currency the transaction's balance counts in (aged balances, credit): the accounting currency
        when it carries an accounting amount, else its own (a transaction without one is in the accounting
        currency by the contract; one in another currency, from before foreign currencies, stays apart)."""
        if accounting_currency is not None and self.accounting_currency_amount is not None:
            return accounting_currency
        return self.currency


_TRANSACTION_FIELDS = tuple(f.name for f in fields(CustomerTransaction))  # looked up once: fields() is slow


@dataclass(frozen=True)
class SettlementDelta:
    """How one settlement moves one transaction's open balance.

    Balances are original + sum of deltas, and sums commute: a settlement that arrives before
    the transactions it names is stored as deltas and counts once those transactions arrive."""

    settlement_id: str
    voucher: str
    amount: Decimal
    settlement_date: date
    accounting_amount: Decimal | None = None  # the same move in the accounting currency; None: `amount`

    @property
    def accounting(self) -> Decimal:
        return self.amount if self.accounting_amount is None else self.accounting_amount


def settlement_deltas(event: OpenItemsSettled) -> list[SettlementDelta]:
    """The debit falls, the credit and the discount transaction rise; in the accounting currency each by
    the settlement's accounting amount for it (at the debit's rate, the credit's rate: docs/currencies.md)."""

    def delta(voucher: str, amount: Decimal, accounting: Decimal) -> SettlementDelta:
        return SettlementDelta(event.settlement_id, voucher, amount, event.settlement_date, accounting)

    # A written-off penny difference or over/underpayment moves the debit beyond cash and discount.
    deltas = [
        delta(
            event.debit_voucher,
            -(event.amount_settled + event.cash_discount_amount + event.difference_amount),
            -event.debit_accounting,
        ),
        delta(event.credit_voucher, event.amount_settled, event.credit_accounting),
    ]
    if event.cash_discount_voucher and (event.cash_discount_amount or event.cash_discount_accounting):
        deltas.append(delta(event.cash_discount_voucher, event.cash_discount_amount, event.cash_discount_accounting))
    return deltas


@dataclass(frozen=True)
class TransactionBalance:
    """A transaction as the collections pages show it: `balance` is what is still open, signed, in the
    transaction's currency; `accounting_balance` the same in the accounting currency."""

    transaction: CustomerTransaction
    balance: Decimal
    # None (a value built by hand): the balance itself in the accounting currency, else its share of the
    # accounting amount.
    accounting_balance: Decimal | None = None

    def __post_init__(self) -> None:
        if self.accounting_balance is None:
            t = self.transaction
            share = self.balance if t.accounting_currency_amount is None or not t.amount else None
            if share is None:
                share = round_money(t.accounting_amount * self.balance / t.amount)
            object.__setattr__(self, "accounting_balance", share)

    @property
    def accounting(self) -> Decimal:
        """The open balance in the accounting currency."""
        assert self.accounting_balance is not None  # filled in __post_init__
        return self.accounting_balance

    @property
    def voucher(self) -> str:
        return self.transaction.voucher

    @property
    def debit(self) -> Decimal:  # the debit and credit columns show the original amount
        return max(self.transaction.amount, ZERO)

    @property
    def credit(self) -> Decimal:
        return max(-self.transaction.amount, ZERO)

    @property
    def is_open(self) -> bool:
        return self.balance != 0


def transaction_balances(
    transactions: Iterable[CustomerTransaction], deltas: Iterable[SettlementDelta], as_of: date | None = None
) -> list[TransactionBalance]:
    """Open balances, oldest first. With `as_of`, later transactions and later settlements don't count."""
    moved: dict[str, Decimal] = defaultdict(lambda: ZERO)
    moved_accounting: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for d in deltas:
        if as_of is None or d.settlement_date <= as_of:
            moved[d.voucher] += d.amount
            moved_accounting[d.voucher] += d.accounting
    rows = [
        TransactionBalance(
            t,
            tidy(t.amount + moved[t.voucher]),  # exact: a sum of transaction amounts (KWD: three decimals)
            round_money(t.accounting_amount + moved_accounting[t.voucher]),
        )
        for t in transactions
        if as_of is None or t.transaction_date <= as_of
    ]
    return sorted(rows, key=lambda r: (r.transaction.transaction_date, r.voucher))


def open_invoices(balances: Iterable[TransactionBalance]) -> list[TransactionBalance]:
    """Invoices and credit notes with something still open, by due date (the Open customer invoices page)."""
    rows = [b for b in balances if b.is_open and b.transaction.transaction_type in INVOICE_TYPES]
    return sorted(rows, key=lambda r: (r.transaction.due_date or r.transaction.transaction_date, r.voucher))


# --- aged balances ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AgedBalance:
    customer_account: str
    customer_name: str | None
    # One row per customer and currency: amounts of two currencies never add up. A transaction in a foreign
    # currency counts in the accounting currency, at its accounting balance (docs/currencies.md).
    currency: str
    balance: Decimal
    buckets: Mapping[str, Decimal]  # bucket label -> amount, in the order of the setup


def days_past_due(transaction: CustomerTransaction, as_of: date) -> int:
    # Payments and credits have no due date: they age from their transaction date.
    return (as_of - (transaction.due_date or transaction.transaction_date)).days


def bucket_for(days: int, buckets: Sequence[AgingBucket]) -> str:
    for bucket in buckets:
        if bucket.max_days is None or days <= bucket.max_days:
            return bucket.label
    return buckets[-1].label  # a validated setup always ends open-ended; be safe if not


def age_balances(
    transactions: Iterable[CustomerTransaction],
    deltas: Iterable[SettlementDelta],
    as_of: date,
    buckets: Sequence[AgingBucket],
    accounting_currency: str | None = None,
) -> list[AgedBalance]:
    """Per customer (and currency): open balance as of `as_of`, split into aging buckets by due date.

    Foreign-currency transactions count in `accounting_currency`, at their accounting balances."""
    amounts: dict[tuple[str, str], dict[str, Decimal]] = {}
    names: dict[tuple[str, str], str | None] = {}
    for item in transaction_balances(transactions, deltas, as_of):
        t = item.transaction
        key = (t.customer_account, t.balance_currency(accounting_currency))
        row = amounts.setdefault(key, {b.label: ZERO for b in buckets})
        row[bucket_for(days_past_due(t, as_of), buckets)] += item.accounting
        names[key] = t.customer_name or names.get(key)  # the newest name wins
    return [
        aged_balance(account, names[(account, currency)], currency, row)
        for (account, currency), row in sorted(amounts.items())
        if any(row.values())  # the balance is the sum of the buckets: all zero means nothing to show
    ]


def aged_balance(account: str, name: str | None, currency: str, buckets: Mapping[str, Decimal]) -> AgedBalance:
    return AgedBalance(account, name, currency, round_money(sum(buckets.values(), ZERO)), buckets)


def aging_cutoffs(as_of: date, buckets: Sequence[AgingBucket]) -> list[date]:
    """age_balances' buckets as dates, for a database that ages many transactions at once: a transaction
    whose aging date (due date, else transaction date) is on or after `cutoffs[i]`, and not on or after an
    earlier cutoff, is in bucket i (bucket_for); one before every cutoff is in the last bucket. A cutoff before
    the first date there is (an as-of date in year 1) is that date: no transaction is older."""
    cutoffs = []
    for bucket in buckets:
        if bucket.max_days is None:
            break
        days = min(bucket.max_days, (as_of - date.min).days)
        cutoffs.append(as_of - timedelta(days=days))
    return cutoffs


# --- write-off -------------------------------------------------------------------------------


class WriteOffError(ValueError):
    """A write-off that cannot be made; the message says why (the API answers 4xx)."""


class UnknownCustomer(WriteOffError):
    """The read model has no transaction of this customer (the API answers 404)."""


class NothingToWriteOff(WriteOffError):
    """No open item, or an empty selection."""


class InvalidSelection(WriteOffError):
    """A voucher or invoice that is not this customer's, or is not open."""


class UnknownReasonCode(WriteOffError):
    """Not one of the setup's reason codes."""


class MixedCurrencies(WriteOffError):
    """Open items of two currencies in one write-off."""


class NoWriteOffRate(WriteOffError):
    """A write-off in a foreign currency with no exchange rate for its date, or no exchange accounts in the
    setup to post the difference to: the request is recorded as rejected with this reason."""


class WriteOffConflict(WriteOffError):
    """An item is already in a write-off journal that is not posted yet (the API answers 409)."""


class NotCancellable(WriteOffConflict):
    """The write-off is posted or rejected: there is nothing left to cancel (409)."""


@dataclass(frozen=True)
class WriteOffSettings:
    """Write-off parameters (editable) joined with the setup they point into."""

    journal_name: str
    reason_code: str  # the default, which a write-off may override
    separate_sales_tax: bool
    write_off_account: str
    sales_tax_account: str
    reason_codes: Mapping[str, str]  # code -> description

    @classmethod
    def from_setup(cls, setup: CompanySetup, parameters: WriteOffParameters | None = None) -> WriteOffSettings:
        p = parameters or setup.write_off
        if p.journal_name not in setup.journal_names:
            raise WriteOffError(f"unknown journal name {p.journal_name!r} (known: {', '.join(setup.journal_names)})")
        _check_reason_code(p.reason_code, setup.reason_codes)
        return cls(
            p.journal_name,
            p.reason_code,
            p.separate_sales_tax,
            setup.customer_posting_profile.write_off_account,
            setup.sales_tax_account,
            dict(setup.reason_codes),
        )


@dataclass(frozen=True)
class WriteOffExchange:
    """How a write-off in a foreign currency is booked (docs/currencies.md): at the rate of its date, and
    the difference between that value and the accounting balance written off to realized gain or loss."""

    accounting_currency: str
    rate: Decimal
    realized_gain_account: str
    realized_loss_account: str


def write_off_exchange(setup: CompanySetup, currency: str, rate: Decimal | None, on: date) -> WriteOffExchange | None:
    """None for a write-off in the accounting currency (booked exactly as before currencies); else the
    rate `rate` of its date (None: there is none) and the setup's exchange accounts, or NoWriteOffRate."""
    if currency == setup.accounting_currency:
        return None
    if rate is None:
        raise NoWriteOffRate(
            f"the write-off is in {currency} and there is no {currency} rate for {on.isoformat()} "
            "(set a rate: docs/currencies.md)"
        )
    if (accounts := setup.exchange_accounts) is None:
        raise NoWriteOffRate(
            f"the write-off is in {currency}, but the company setup has no exchange_accounts to post "
            "its exchange difference to (docs/currencies.md)"
        )
    return WriteOffExchange(setup.accounting_currency, rate, accounts.realized_gain, accounts.realized_loss)


def _check_reason_code(code: str, known: Mapping[str, str]) -> None:
    if code not in known:
        raise UnknownReasonCode(f"unknown reason code {code!r} (known: {', '.join(known)})")


def select_for_write_off(
    customer_account: str,
    balances: Iterable[TransactionBalance],
    *,
    vouchers: Sequence[str] | None = None,
    invoice_id: str | None = None,
    pending_vouchers: Collection[str] = frozenset(),
) -> list[TransactionBalance]:
    """The open items a write-off covers: the whole balance (debit and credit items alike), the
    selected vouchers, or one invoice. `pending_vouchers` are items claimed by another write-off
    (see `WriteOffProgress.claims_its_vouchers`)."""
    own = [b for b in balances if b.transaction.customer_account == customer_account]
    if not own:
        raise UnknownCustomer(f"customer {customer_account!r} has no transactions")
    if vouchers is not None and invoice_id is not None:
        raise InvalidSelection("give either vouchers or an invoice_id, not both")
    if invoice_id is not None:
        chosen = [
            b for b in own if b.transaction.invoice_id == invoice_id and b.transaction.transaction_type in INVOICE_TYPES
        ]
        if not chosen:
            raise InvalidSelection(f"invoice {invoice_id!r} is not an invoice of customer {customer_account}")
    elif vouchers is not None:
        by_voucher = {b.voucher: b for b in own}
        if foreign := [v for v in vouchers if v not in by_voucher]:
            raise InvalidSelection(f"not transactions of customer {customer_account}: {', '.join(foreign)}")
        chosen = [by_voucher[v] for v in dict.fromkeys(vouchers)]
        if not chosen:
            raise NothingToWriteOff("no vouchers selected")
    else:
        chosen = [b for b in own if b.is_open]
        if not chosen:
            raise NothingToWriteOff(f"customer {customer_account} has nothing open to write off")
    if settled := [b.voucher for b in chosen if not b.is_open]:
        raise InvalidSelection(f"not open (already settled): {', '.join(settled)}")
    if len(currencies := {b.transaction.currency for b in chosen}) > 1:
        raise MixedCurrencies(
            f"one write-off cannot mix currencies ({', '.join(sorted(currencies))}); "
            "write off each currency's vouchers separately"
        )
    # Even for a whole-balance write-off: skipping these would quietly write off less than asked.
    if pending := [b.voucher for b in chosen if b.voucher in pending_vouchers]:
        raise WriteOffConflict(f"already in a write-off that is not yet posted and settled: {', '.join(pending)}")
    return chosen


def sales_tax_share(item: TransactionBalance) -> Decimal:
    """The sales tax inside what is still open: remaining × tax / original total, half-up to the transaction
    currency's minor unit (the cent; JPY whole yen, KWD the fils).

    abs() on both: a producer that sends a credit note's tax unsigned cannot flip the share's sign."""
    t = item.transaction
    if not t.sales_tax_amount or not t.amount:
        return ZERO
    return round_to(item.balance * abs(t.sales_tax_amount) / abs(t.amount), t.currency)


def build_write_off_journal(
    items: Sequence[TransactionBalance],
    settings: WriteOffSettings,
    *,
    request_id: str,
    transaction_date: date,
    reason_code: str | None = None,
    reason_comment: str | None = None,
    customer_name: str | None = None,
    exchange: WriteOffExchange | None = None,
) -> GeneralJournalRequested:
    """The general journal that writes off `items` (open items of one customer, one currency).

    Seed 000 and D365's *Collections management key concepts*: one Customer line per customer,
    currency and posting profile reverses the balance written off (the net of every item) and names
    each item in `settles`, so settlement settles every item on its own when the journal posts; one
    line per ledger account posts the write-off (the write-off account and, with separate sales tax,
    the sales-tax account). A write-off covers one customer and one currency and every customer has
    the same posting profile, so that is one Customer line and one voucher for the whole journal.

    A net of zero cannot be one line (a journal line is never zero on both sides): then each item
    gets its own Customer line and write-off line, grouped as a voucher of its own.

    In a foreign currency (docs/currencies.md, `exchange`) those lines are in that currency at the rate of
    the write-off date, and each settled item also names the accounting balance it removes. Ledger-posting
    books each line at `round(amount × rate)`; what that differs from the accounting balance written off is
    posted in the accounting currency, per voucher: a Customer line (no settles) so that receivables fall by
    exactly the accounting balance, and a Ledger line to realized gain or loss so that the voucher balances."""
    if not items:
        raise NothingToWriteOff("nothing selected to write off")
    code = reason_code or settings.reason_code
    _check_reason_code(code, settings.reason_codes)
    if len(accounts := {i.transaction.customer_account for i in items}) > 1:
        raise InvalidSelection(f"one write-off covers one customer, got {', '.join(sorted(accounts))}")
    if len(currencies := {i.transaction.currency for i in items}) > 1:
        raise MixedCurrencies(f"one write-off cannot mix currencies ({', '.join(sorted(currencies))})")
    if settled := [i.voucher for i in items if not i.is_open]:
        raise InvalidSelection(f"not open (already settled): {', '.join(settled)}")
    account, currency = accounts.pop(), currencies.pop()
    rate = exchange.rate if exchange is not None else None
    name = customer_name or next((i.transaction.customer_name for i in items if i.transaction.customer_name), "")
    description = f"Write off transactions for {account} {name}".strip()

    def line(
        account_type: str, to: str, amount: Decimal, text: str, *, accounting: bool = False, **extra: Any
    ) -> GeneralJournalLine:
        # `amount` is signed from the ledger's side: positive is a debit. `accounting`: an exchange
        # difference line, in the accounting currency.
        return GeneralJournalLine(
            account_type=account_type,
            account=to,
            debit=max(amount, ZERO),
            credit=max(-amount, ZERO),
            currency=exchange.accounting_currency if exchange is not None and accounting else currency,
            transaction_date=transaction_date,
            text=text,
            reason_code=code,
            reason_comment=reason_comment or None,
            exchange_rate=None if accounting else rate,
            **extra,
        )

    net_zero = sum((i.balance for i in items), ZERO) == 0
    groups = [[i] for i in items] if net_zero else [list(items)]
    lines: list[GeneralJournalLine] = []
    for group in groups:
        single = group[0].voucher if len(group) == 1 else None
        text = f"Write-off {single}" if single else description
        group_id = single if net_zero else None  # no group anywhere: the whole journal is one voucher
        total = sum((i.balance for i in group), ZERO)
        tax = sum((sales_tax_share(i) for i in group), ZERO) if settings.separate_sales_tax else ZERO
        settles = [
            SettledTransactionRef(
                voucher=i.voucher,
                invoice_id=i.transaction.invoice_id,
                amount=i.balance,
                accounting_currency_amount=i.accounting if exchange is not None else None,
            )
            for i in group
        ]
        lines.append(line("Customer", account, -total, text, settles=settles, voucher_group=group_id))
        # The tax share is rounded on its own, so the write-off line takes the rounding difference.
        ledger = [
            (ledger_account, amount)
            for ledger_account, amount in ((settings.write_off_account, total - tax), (settings.sales_tax_account, tax))
            if amount
        ]
        lines += [line("Ledger", to, amount, text, voucher_group=group_id) for to, amount in ledger]
        if exchange is not None:
            customer, difference = exchange_difference(
                total, [amount for _, amount in ledger], sum((i.accounting for i in group), ZERO), exchange
            )
            difference_text = f"{text}: exchange difference"
            if customer:
                lines.append(
                    line("Customer", account, customer, difference_text, accounting=True, voucher_group=group_id)
                )
            if difference:
                to = exchange.realized_loss_account if difference > 0 else exchange.realized_gain_account
                lines.append(line("Ledger", to, difference, difference_text, accounting=True, voucher_group=group_id))
    return GeneralJournalRequested(
        request_id=request_id, journal_name=settings.journal_name, description=description, lines=lines
    )


def exchange_difference(
    total: Decimal, ledger: Sequence[Decimal], written_off: Decimal, exchange: WriteOffExchange
) -> tuple[Decimal, Decimal]:
    """The exchange difference lines of a foreign write-off voucher, signed from the ledger's side (debit +),
    in the accounting currency: (Customer line, realized gain/loss line).

    `total` is the balance written off in the transaction currency (the Customer line reverses it),
    `ledger` the amounts of its write-off account lines, `written_off` the accounting balance of the items.
    Ledger-posting converts each line on its own, `round(amount × rate)`, so receivables move by
    `-round(total × rate)`: the Customer line makes that `-written_off`. The gain/loss line balances the
    voucher: positive (a debit) is a realized loss, negative a gain."""
    currency, rate = exchange.accounting_currency, exchange.rate
    customer_value = -to_accounting(total, rate, currency)
    ledger_value = sum((to_accounting(amount, rate, currency) for amount in ledger), ZERO)
    customer = -written_off - customer_value
    return customer, -(customer_value + ledger_value + customer)


# --- defence in depth: a posted journal must be the one requested ----------------------------

# What moves money on a journal line; other fields (texts, who posted it) may be added on the way.
_MONEY_FIELDS = ("account_type", "account", "debit", "credit", "currency", "transaction_date")


def _money_of(line: GeneralJournalLine, requested: GeneralJournalLine | None = None) -> tuple[object, ...]:
    """What moves money on `line`. A foreign-currency line's rate and the accounting amounts it settles count
    too, when the requested line states them (`requested`: that line; itself when None)."""
    requested = requested or line
    money: tuple[object, ...] = (
        *(getattr(line, f) for f in _MONEY_FIELDS),
        tuple((s.voucher, s.amount) for s in line.settles),
    )
    if requested.exchange_rate is not None:
        money += (line.exchange_rate,)
    if any(s.accounting_currency_amount is not None for s in requested.settles):
        money += (tuple(s.accounting_currency_amount for s in line.settles),)
    return money


def posted_journal_differences(
    requested: Sequence[GeneralJournalLine], posted: Sequence[GeneralJournalLine]
) -> list[str]:
    """How the lines of a posted journal differ from the lines collections requested (none: the same).

    ledger-posting keeps the requested lines in their order and only adds a voucher to each, so any
    difference in accounts, amounts, currency, date or settled transactions means the event is not
    the journal collections asked for (forged, or corrupted on the way): it must not be applied."""
    if len(requested) != len(posted):
        return [f"{len(posted)} lines posted, {len(requested)} requested"]
    return [
        f"line {n}: posted {_money_of(p, r)}, requested {_money_of(r)}"
        for n, (r, p) in enumerate(zip(requested, posted), 1)
        if _money_of(r) != _money_of(p, r)
    ]


# --- write-off requests: how far ledger-posting has got --------------------------------------


class WriteOffStatus(StrEnum):
    """How far a write-off request has got; the values are what the API, the UI and the table show."""

    REQUESTED = "requested"
    JOURNAL_CREATED = "journal-created"
    POSTED = "posted"
    REJECTED = "rejected"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


FINAL = (WriteOffStatus.POSTED, WriteOffStatus.REJECTED, WriteOffStatus.CANCELLED)


@dataclass(frozen=True)
class WriteOffProgress:
    """requested -> journal-created -> posted | rejected, or, on a cancel before posting,
    -> cancelling -> cancelled (journal voided) | posted (the posting won the race)."""

    status: WriteOffStatus = WriteOffStatus.REQUESTED
    journal_batch_number: str | None = None
    reason: str | None = None  # why the journal was rejected, the write-off cancelled, or a cancel refused

    @property
    def claims_its_vouchers(self) -> bool:
        """Whether its vouchers are off limits to another write-off. A posted write-off keeps them
        until settlement reports them settled (then they are no longer open); until then a second
        write-off of the same items would write them off twice. A cancelling one keeps them too:
        its journal may yet be posted before the cancel reaches ledger-posting."""
        return self.status not in (WriteOffStatus.REJECTED, WriteOffStatus.CANCELLED)

    def cancel(self, reason: str | None) -> WriteOffProgress:
        """Cancelling (a cancel asked twice changes nothing), or NotCancellable once posted or rejected."""
        if self.status in (WriteOffStatus.CANCELLING, WriteOffStatus.CANCELLED):
            return self
        if self.status in (WriteOffStatus.POSTED, WriteOffStatus.REJECTED):
            why = f": {self.reason}" if self.reason else ""
            raise NotCancellable(
                f"the write-off is already {self.status}{why}"
                + (f" (journal {self.journal_batch_number})" if self.journal_batch_number else "")
            )
        return replace(self, status=WriteOffStatus.CANCELLING, reason=reason)

    def after(self, event: JournalEvent) -> WriteOffProgress:
        """Posted, rejected and cancelled are final: a late or redelivered event changes nothing,
        except that a refused cancel adds its reason to a posted write-off."""
        if self.status in FINAL:
            if self.status == WriteOffStatus.POSTED and isinstance(event, JournalCancelRefused):
                return replace(self, reason=event.reason)
            return self
        match event:
            case JournalCreated():
                status = (
                    WriteOffStatus.CANCELLING
                    if self.status == WriteOffStatus.CANCELLING
                    else WriteOffStatus.JOURNAL_CREATED
                )
                return replace(self, status=status, journal_batch_number=event.batch_number)
            case JournalPosted():  # also while cancelling: the posting won the race
                return replace(self, status=WriteOffStatus.POSTED, journal_batch_number=event.batch_number, reason=None)
            case JournalCancelRefused():  # the journal was posted first (its JournalPosted came before)
                return replace(
                    self, status=WriteOffStatus.POSTED, journal_batch_number=event.batch_number, reason=event.reason
                )
            case JournalRejected():
                return replace(self, status=WriteOffStatus.REJECTED, reason=event.reason)
            case JournalVoided():
                return replace(self, status=WriteOffStatus.CANCELLED, journal_batch_number=event.batch_number)
        return self
