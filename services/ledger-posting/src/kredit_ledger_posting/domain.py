"""Ledger-posting rules: which vouchers and journals may post, the entries they make, the trial balance."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from enum import StrEnum
from json.encoder import encode_basestring_ascii as _json_string  # json.dumps' own, ensure_ascii

from kredit_shared.company_setup import CompanySetup
from kredit_shared.contracts import (
    GeneralJournalLine,
    GeneralJournalRequested,
    JournalPosted,
    PostedJournalLine,
    VoucherLine,
    VoucherPosted,
    digest,
)
from kredit_shared.currencies import (
    NoExchangeRate,
    Rates,
    check_precision,
    to_accounting,
    unsupported_reason,
)
from kredit_shared.money import MAX_AMOUNT, ZERO, format_amount, format_transaction_amount, round_money

SEQUENCE_DIGITS = 6  # "WOJ-000001"
UNKNOWN_ACCOUNT_NAME = "(not in the chart of accounts)"


class LedgerError(Exception):
    """Base of the ledger's refusals; the message says what is wrong and can be shown to a user."""


class InvalidVoucher(LedgerError):
    """A subledger voucher that must not post (the consumer dead-letters it)."""


class DuplicateVoucher(InvalidVoucher):
    """The voucher number is already posted with different content."""


class InvalidJournalRequest(LedgerError):
    """A general journal request that cannot become a journal (answered with JournalRejected)."""


class JournalNotPostable(LedgerError):
    """The journal cannot be posted in its current state (HTTP 409)."""


class JournalAlreadyPosted(JournalNotPostable):
    pass


class UnbalancedJournal(JournalNotPostable):
    pass


class FourEyesViolation(LedgerError):
    """The poster requested the journal, and the setup wants two people (write_off.four_eyes_write_off)."""


class VoidedJournal(JournalNotPostable):
    """Its requester cancelled it: kept for audit, never postable."""


@dataclass(frozen=True)
class LedgerEntry:
    account: str
    debit: Decimal
    credit: Decimal
    voucher: str
    posting_date: date
    text: str
    source: str
    currency: str  # the accounting currency: `debit` and `credit` are in it
    customer_account: str | None = None  # dimension of entries on the customer summary account
    # What the entry books in a foreign currency (signed, debit positive); None in the accounting currency.
    transaction_currency: str | None = None
    transaction_currency_amount: Decimal | None = None


def _line_problem(debit: Decimal, credit: Decimal) -> str | None:
    if debit < 0 or credit < 0:
        return f"has a negative amount (debit {debit}, credit {credit})"
    if debit and credit:
        return f"has both a debit ({debit}) and a credit ({credit})"
    if not debit and not credit:
        return "has zero on both sides"
    return None


def _check_currency(where: str, currency: str, setup: CompanySetup, error: type[LedgerError]) -> None:
    if currency != setup.accounting_currency:
        raise error(
            f"{where}: currency {currency} is not the accounting currency {setup.accounting_currency}"
            " (a voucher is in the accounting currency; its lines may carry a transaction currency)"
        )


def _check_balanced(where: str, amounts: Iterable[tuple[Decimal, Decimal]], error: type[LedgerError]) -> None:
    """`amounts`: (debit, credit) per line, in the accounting currency."""
    amounts = list(amounts)
    debit = round_money(sum((d for d, _ in amounts), ZERO))
    credit = round_money(sum((c for _, c in amounts), ZERO))
    if debit != credit:
        raise error(f"{where} does not balance: debits total {debit}, credits total {credit}")


# --- subledger vouchers (posted at once) ------------------------------------------------------


def entries_for_voucher(voucher: VoucherPosted, setup: CompanySetup) -> tuple[LedgerEntry, ...]:
    """The ledger entries of a subledger voucher, or InvalidVoucher naming the first thing wrong."""
    where = f"voucher {voucher.voucher}"
    _check_currency(where, voucher.currency, setup, InvalidVoucher)
    if not any(line.debit or line.credit for line in voucher.lines):
        raise InvalidVoucher(f"{where} has no line with a non-zero amount")
    for n, line in enumerate(voucher.lines, 1):
        if problem := _line_problem(line.debit, line.credit):
            raise InvalidVoucher(f"{where} line {n} {problem}")
        if line.account not in setup.main_accounts:
            raise InvalidVoucher(f"{where} line {n}: unknown main account {line.account!r}")
        if (line.transaction_currency is None) != (line.transaction_currency_amount is None):
            raise InvalidVoucher(
                f"{where} line {n}: transaction_currency and transaction_currency_amount come together or not at all"
            )
    _check_balanced(where, ((line.debit, line.credit) for line in voucher.lines), InvalidVoucher)
    return tuple(
        LedgerEntry(
            account=line.account,
            debit=round_money(line.debit),
            credit=round_money(line.credit),
            voucher=voucher.voucher,
            posting_date=voucher.posting_date,
            text=line.text or voucher.description,
            source=voucher.source,
            currency=voucher.currency,
            customer_account=line.customer_account,
            transaction_currency=line.transaction_currency,
            transaction_currency_amount=line.transaction_currency_amount,
        )
        for line in voucher.lines
    )


def voucher_fingerprint(voucher: VoucherPosted) -> str:
    """SHA-256 of the voucher's content without message_id, to store beside the posted voucher number.

    Amounts are compared in their two-decimal wire form and line order is ignored: neither changes
    what is posted, so "100" and "100.00", or the same lines reordered, are the same voucher.

    The content is the canonical JSON (content_fingerprint's: keys sorted, no spaces) of the voucher's
    JSON form, model_dump(mode="json"), with its lines sorted by their own canonical JSON. It is written
    out here field by field, as pydantic's serializers and json.dumps cost more than the rest of a posting;
    stored fingerprints are compared byte for byte, so the unit tests (test_fingerprint.py) check it against
    that original definition over generated vouchers of every shape."""
    lines = ",".join(sorted(_line_json(line) for line in voucher.lines))
    return digest(
        f'{{"currency":{_json_string(voucher.currency)},"description":{_json_string(voucher.description)},'
        f'"lines":[{lines}],"posting_date":"{voucher.posting_date.isoformat()}",'
        f'"source":{_json_string(voucher.source)},"voucher":{_json_string(voucher.voucher)}}}'
    )


def _line_json(line: VoucherLine) -> str:
    """A voucher line's canonical JSON. Its transaction currency and amount are left out while unset, as on
    the wire, so a voucher in the accounting currency keeps the fingerprint it had before they existed."""
    customer = "null" if line.customer_account is None else _json_string(line.customer_account)
    text = (
        f'{{"account":{_json_string(line.account)},"credit":"{format_amount(line.credit)}",'
        f'"customer_account":{customer},"debit":"{format_amount(line.debit)}","text":{_json_string(line.text)}'
    )
    if line.transaction_currency is not None:
        text += f',"transaction_currency":{_json_string(line.transaction_currency)}'
    if line.transaction_currency_amount is not None:
        text += f',"transaction_currency_amount":"{format_transaction_amount(line.transaction_currency_amount)}"'
    return text + "}"


def is_new_voucher(voucher: VoucherPosted, posted_fingerprint: str | None) -> bool:
    """Whether to post `voucher`, given the fingerprint stored when its number was posted (None: never).

    False is a redelivery of the same content (a no-op); different content raises DuplicateVoucher."""
    if posted_fingerprint is None:
        return True
    if posted_fingerprint == voucher_fingerprint(voucher):
        return False
    raise DuplicateVoucher(f"voucher {voucher.voucher} is already posted with different content")


# --- general journals (kept open for review) --------------------------------------------------


class JournalStatus(StrEnum):
    OPEN = "open"  # awaiting review
    POSTED = "posted"
    VOIDED = "voided"  # cancelled by its requester: kept, never postable


@dataclass(frozen=True)
class Journal:
    """A general journal (batch) kept open until a user posts it. Its lines carry their vouchers."""

    batch_number: str
    journal_name: str
    description: str
    lines: tuple[PostedJournalLine, ...]
    request_id: str | None = None
    status: JournalStatus = JournalStatus.OPEN
    posting_date: date | None = None
    requested_by: str | None = None  # token subjects (kredit_shared.auth)
    posted_by: str | None = None

    @property
    def vouchers(self) -> list[str]:
        return list(dict.fromkeys(line.voucher for line in self.lines))


def sequence_number(prefix: str, value: int) -> str:
    """Format the next value of a number sequence, e.g. ("WOJ-", 1) -> "WOJ-000001"."""
    if value < 1:
        raise ValueError(f"number sequence values start at 1, got {value}")
    return f"{prefix}{value:0{SEQUENCE_DIGITS}d}"


@dataclass(frozen=True)
class _Booked:
    """A journal line's rate and amounts in the accounting currency."""

    rate: Decimal
    debit: Decimal
    credit: Decimal
    foreign: bool


def _setup_rates(setup: CompanySetup) -> Rates:
    return Rates(setup.accounting_currency, setup.exchange_rates)


def _check_journal_lines(
    where: str,
    lines: Sequence[GeneralJournalLine],
    setup: CompanySetup,
    error: type[LedgerError],
    rates: Rates | None = None,
) -> list[_Booked]:
    """Each line's rate and accounting-currency amounts, or `error` naming the first line that cannot post.

    A line in a foreign currency is converted at its exchange_rate, else at `rates`' rate for its
    transaction date (docs/currencies.md); a line in the accounting currency is at 1, exactly as before."""
    rates = rates if rates is not None else _setup_rates(setup)
    accounting = setup.accounting_currency
    booked = []
    # Customer accounts are not checked: customers live in the AR services, not in this one.
    for n, line in enumerate(lines, 1):
        if problem := _line_problem(line.debit, line.credit):
            raise error(f"{where} line {n} {problem}")
        foreign = line.currency != accounting
        if foreign:
            _check_foreign_amounts(f"{where} line {n}", line, error)
        if line.account_type == "Ledger" and line.account not in setup.main_accounts:
            raise error(f"{where} line {n}: unknown main account {line.account!r}")
        try:
            rate = rates.resolve(line.currency, line.transaction_date, line.exchange_rate, document="the line")
        except NoExchangeRate as e:
            why = f"currency {line.currency} is not the accounting currency {accounting}; " if foreign else ""
            raise error(f"{where} line {n}: {why}{e}") from None
        debit, credit = to_accounting(line.debit, rate, accounting), to_accounting(line.credit, rate, accounting)
        if foreign:
            amount = line.debit or line.credit
            if not debit and not credit:
                raise error(
                    f"{where} line {n}: {amount} {line.currency} at the exchange rate {rate:f} is 0.00 {accounting}"
                )
            if (value := debit or credit) > MAX_AMOUNT:
                raise error(
                    f"{where} line {n}: {amount} {line.currency} at the exchange rate {rate:f} is {value} "
                    f"{accounting}, more than the largest amount {MAX_AMOUNT}"
                )
        booked.append(_Booked(rate=rate, debit=debit, credit=credit, foreign=foreign))
    return booked


def _check_foreign_amounts(where: str, line: GeneralJournalLine, error: type[LedgerError]) -> None:
    if (reason := unsupported_reason(line.currency)) is not None:
        raise error(f"{where}: {reason}")
    settled = ((f"settles.{n}.amount", ref.amount) for n, ref in enumerate(line.settles))
    for what, value in (("debit", line.debit), ("credit", line.credit), *settled):
        try:
            check_precision(value, line.currency, what)
        except ValueError as e:
            raise error(f"{where}: {e}") from None


def journal_line_accounting(line: GeneralJournalLine, accounting_currency: str) -> tuple[Decimal, Decimal] | None:
    """An opened journal line's debit and credit in the accounting currency at the rate it was opened with;
    None for a line in the accounting currency (its amounts are those already)."""
    if line.currency == accounting_currency or line.exchange_rate is None:
        return None
    return (
        to_accounting(line.debit, line.exchange_rate, accounting_currency),
        to_accounting(line.credit, line.exchange_rate, accounting_currency),
    )


def voucher_count(request: GeneralJournalRequested) -> int:
    """How many vouchers the journal takes: one per distinct voucher group (no group = one voucher)."""
    return len({line.voucher_group for line in request.lines})


def check_journal_request(request: GeneralJournalRequested, setup: CompanySetup, rates: Rates | None = None) -> None:
    """InvalidJournalRequest if the request cannot become a journal (checked before numbers are taken),
    e.g. a line in a foreign currency without a rate (`rates`: default the setup's)."""
    _check_request(request, setup, rates)


def _check_request(request: GeneralJournalRequested, setup: CompanySetup, rates: Rates | None) -> list[_Booked]:
    if request.journal_name not in setup.journal_names:
        known = ", ".join(sorted(setup.journal_names))
        raise InvalidJournalRequest(f"unknown journal name {request.journal_name!r} (known: {known})")
    return _check_journal_lines(
        f"journal request {request.request_id}", request.lines, setup, InvalidJournalRequest, rates
    )


def open_journal(
    request: GeneralJournalRequested,
    setup: CompanySetup,
    batch_sequence: int,
    first_voucher_sequence: int,
    rates: Rates | None = None,
) -> Journal:
    """Build an open journal; the caller supplies the next value of this journal name's own batch
    sequence and the first of `voucher_count(request)` values of its voucher sequence. Unbalanced
    journals are accepted here: a user reviews them before posting.

    A foreign-currency line that states no exchange_rate gets the one it is booked at (the rate for its
    date as the journal opens), so the journal is reviewed and posted at one rate."""
    booked = _check_request(request, setup, rates)
    name = setup.journal_names[request.journal_name]
    groups = list(dict.fromkeys(line.voucher_group for line in request.lines))
    voucher_of = {g: sequence_number(name.voucher_prefix, first_voucher_sequence + i) for i, g in enumerate(groups)}
    return Journal(
        batch_number=sequence_number(name.batch_prefix, batch_sequence),
        journal_name=request.journal_name,
        description=request.description,
        lines=tuple(
            PostedJournalLine(
                **line.model_dump()
                | {"voucher": voucher_of[line.voucher_group]}
                | ({"exchange_rate": b.rate} if b.foreign else {})
            )
            for line, b in zip(request.lines, booked, strict=True)
        ),
        request_id=request.request_id,
        requested_by=request.requested_by,
    )


def post_journal(
    journal: Journal, setup: CompanySetup, posted_by: str | None = None, rates: Rates | None = None
) -> tuple[Journal, tuple[LedgerEntry, ...]]:
    """The posted journal and its ledger entries, or a JournalNotPostable saying why not, or a
    FourEyesViolation when `posted_by` requested it and the setup wants a second person.

    Entries are in the accounting currency; each voucher must balance there (foreign-currency lines
    converted at their rate), and its entries keep the lines' transaction currency and amount."""
    where = f"journal {journal.batch_number}"
    if journal.status == JournalStatus.POSTED:
        raise JournalAlreadyPosted(f"{where} is already posted (posting date {journal.posting_date})")
    if journal.status == JournalStatus.VOIDED:
        raise VoidedJournal(f"{where} is voided: its request {journal.request_id} was cancelled")
    if setup.write_off.four_eyes_write_off and journal.requested_by is not None and journal.requested_by == posted_by:
        raise FourEyesViolation(
            f"{posted_by} requested {where} and may not also post it (four-eyes: the setup's "
            "write_off.four_eyes_write_off); another accountant must post it"
        )
    booked = _check_journal_lines(where, journal.lines, setup, JournalNotPostable, rates)
    # Balanced per voucher and date, not only overall: otherwise a trial balance as of a date
    # between the voucher's dates would not balance.
    by_voucher_date: dict[tuple[str, date], list[tuple[Decimal, Decimal]]] = defaultdict(list)
    for line, b in zip(journal.lines, booked, strict=True):
        by_voucher_date[(line.voucher, line.transaction_date)].append((b.debit, b.credit))
    for (voucher, day), amounts in sorted(by_voucher_date.items()):
        _check_balanced(f"{where}: voucher {voucher} on {day}", amounts, UnbalancedJournal)
    summary = setup.customer_posting_profile.summary_account
    entries = tuple(
        LedgerEntry(
            account=summary if line.account_type == "Customer" else line.account,
            debit=b.debit,
            credit=b.credit,
            voucher=line.voucher,
            posting_date=line.transaction_date,
            text=line.text or journal.description,
            source=f"{journal.journal_name} {journal.batch_number}",
            currency=setup.accounting_currency,
            customer_account=line.account if line.account_type == "Customer" else None,
            transaction_currency=line.currency if b.foreign else None,
            transaction_currency_amount=line.debit - line.credit if b.foreign else None,
        )
        for line, b in zip(journal.lines, booked, strict=True)
    )
    posting_date = max(day for _, day in by_voucher_date)
    return replace(journal, status=JournalStatus.POSTED, posting_date=posting_date, posted_by=posted_by), entries


def void_journal(journal: Journal) -> Journal:
    """The journal voided on its requester's cancel (a voided one stays as it is), or
    JournalAlreadyPosted: a posted journal is only ever undone by new, opposite postings."""
    if journal.status == JournalStatus.POSTED:
        raise JournalAlreadyPosted(
            f"journal {journal.batch_number} is already posted (posting date {journal.posting_date}); "
            "it cannot be cancelled"
        )
    return replace(journal, status=JournalStatus.VOIDED)


def journal_posted_event(journal: Journal) -> JournalPosted:
    """The JournalPosted message of a posted journal (its lines carry the voucher and the settled items)."""
    if journal.status != JournalStatus.POSTED or journal.posting_date is None:
        raise ValueError(f"journal {journal.batch_number} is not posted")
    return JournalPosted(
        request_id=journal.request_id,
        journal_name=journal.journal_name,
        batch_number=journal.batch_number,
        posting_date=journal.posting_date,
        lines=list(journal.lines),
        requested_by=journal.requested_by,
        posted_by=journal.posted_by,
    )


# --- trial balance ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialBalanceRow:
    account: str
    name: str
    debit: Decimal
    credit: Decimal
    balance: Decimal  # debit - credit


@dataclass(frozen=True)
class TrialBalance:
    as_of: date
    accounts: tuple[TrialBalanceRow, ...]  # only accounts with entries up to as_of, by account number
    total_debit: Decimal
    total_credit: Decimal


def trial_balance(entries: Iterable[LedgerEntry], setup: CompanySetup, as_of: date) -> TrialBalance:
    """Debit and credit per account of the entries posted on or before `as_of`."""
    totals: dict[str, tuple[Decimal, Decimal]] = defaultdict(lambda: (ZERO, ZERO))
    for entry in entries:
        if entry.posting_date <= as_of:
            debit, credit = totals[entry.account]
            totals[entry.account] = (debit + entry.debit, credit + entry.credit)
    return trial_balance_from_totals(totals, setup, as_of)


def trial_balance_from_totals(
    totals: dict[str, tuple[Decimal, Decimal]], setup: CompanySetup, as_of: date
) -> TrialBalance:
    """The trial balance from (debit, credit) totals per account, e.g. summed by the database."""
    rows = tuple(
        TrialBalanceRow(
            account=account,
            name=setup.main_accounts[account].name if account in setup.main_accounts else UNKNOWN_ACCOUNT_NAME,
            debit=round_money(debit),
            credit=round_money(credit),
            balance=round_money(debit - credit),
        )
        for account, (debit, credit) in sorted(totals.items())
    )
    return TrialBalance(
        as_of=as_of,
        accounts=rows,
        total_debit=round_money(sum((r.debit for r in rows), ZERO)),
        total_credit=round_money(sum((r.credit for r in rows), ZERO)),
    )
