"""Ledger-posting rules: which vouchers and journals may post, the entries they make, the trial balance."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from typing import Literal

from kredit_shared.company_setup import CompanySetup
from kredit_shared.contracts import (
    GeneralJournalLine,
    GeneralJournalRequested,
    JournalPosted,
    PostedJournalLine,
    VoucherLine,
    VoucherPosted,
)
from kredit_shared.money import ZERO, round_money

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
    currency: str
    customer_account: str | None = None  # dimension of entries on the customer summary account


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
            " (multi-currency posting is not supported yet)"
        )


def _check_balanced(where: str, lines: Iterable[VoucherLine | GeneralJournalLine], error: type[LedgerError]) -> None:
    lines = list(lines)
    debit = round_money(sum((line.debit for line in lines), ZERO))
    credit = round_money(sum((line.credit for line in lines), ZERO))
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
    _check_balanced(where, voucher.lines, InvalidVoucher)
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
        )
        for line in voucher.lines
    )


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def voucher_fingerprint(voucher: VoucherPosted) -> str:
    """SHA-256 of the voucher's content without message_id, to store beside the posted voucher number.

    Amounts are compared in their two-decimal wire form and line order is ignored: neither changes
    what is posted, so "100" and "100.00", or the same lines reordered, are the same voucher."""
    content = voucher.model_dump(mode="json", exclude={"message_id"})
    content["lines"] = sorted(content["lines"], key=_canonical)
    return hashlib.sha256(_canonical(content).encode()).hexdigest()


def is_new_voucher(voucher: VoucherPosted, posted_fingerprint: str | None) -> bool:
    """Whether to post `voucher`, given the fingerprint stored when its number was posted (None: never).

    False is a redelivery of the same content (a no-op); different content raises DuplicateVoucher."""
    if posted_fingerprint is None:
        return True
    if posted_fingerprint == voucher_fingerprint(voucher):
        return False
    raise DuplicateVoucher(f"voucher {voucher.voucher} is already posted with different content")


# --- general journals (kept open for review) --------------------------------------------------

JournalStatus = Literal["open", "posted", "voided"]


@dataclass(frozen=True)
class Journal:
    """A general journal (batch) kept open until a user posts it. Its lines carry their vouchers."""

    batch_number: str
    journal_name: str
    description: str
    lines: tuple[PostedJournalLine, ...]
    request_id: str | None = None
    status: JournalStatus = "open"
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


def _check_journal_lines(
    where: str, lines: Sequence[GeneralJournalLine], setup: CompanySetup, error: type[LedgerError]
) -> None:
    # Customer accounts are not checked: customers live in the AR services, not in this one.
    for n, line in enumerate(lines, 1):
        if problem := _line_problem(line.debit, line.credit):
            raise error(f"{where} line {n} {problem}")
        _check_currency(f"{where} line {n}", line.currency, setup, error)
        if line.account_type == "Ledger" and line.account not in setup.main_accounts:
            raise error(f"{where} line {n}: unknown main account {line.account!r}")


def voucher_count(request: GeneralJournalRequested) -> int:
    """How many vouchers the journal takes: one per distinct voucher group (no group = one voucher)."""
    return len({line.voucher_group for line in request.lines})


def check_journal_request(request: GeneralJournalRequested, setup: CompanySetup) -> None:
    """InvalidJournalRequest if the request cannot become a journal (checked before numbers are taken)."""
    if request.journal_name not in setup.journal_names:
        known = ", ".join(sorted(setup.journal_names))
        raise InvalidJournalRequest(f"unknown journal name {request.journal_name!r} (known: {known})")
    _check_journal_lines(f"journal request {request.request_id}", request.lines, setup, InvalidJournalRequest)


def open_journal(
    request: GeneralJournalRequested, setup: CompanySetup, batch_sequence: int, first_voucher_sequence: int
) -> Journal:
    """Build an open journal; the caller supplies the next value of this journal name's own batch
    sequence and the first of `voucher_count(request)` values of its voucher sequence. Unbalanced
    journals are accepted here: a user reviews them before posting."""
    check_journal_request(request, setup)
    name = setup.journal_names[request.journal_name]
    groups = list(dict.fromkeys(line.voucher_group for line in request.lines))
    voucher_of = {g: sequence_number(name.voucher_prefix, first_voucher_sequence + i) for i, g in enumerate(groups)}
    return Journal(
        batch_number=sequence_number(name.batch_prefix, batch_sequence),
        journal_name=request.journal_name,
        description=request.description,
        lines=tuple(
            PostedJournalLine(**line.model_dump(), voucher=voucher_of[line.voucher_group]) for line in request.lines
        ),
        request_id=request.request_id,
        requested_by=request.requested_by,
    )


def post_journal(
    journal: Journal, setup: CompanySetup, posted_by: str | None = None
) -> tuple[Journal, tuple[LedgerEntry, ...]]:
    """The posted journal and its ledger entries, or a JournalNotPostable saying why not, or a
    FourEyesViolation when `posted_by` requested it and the setup wants a second person."""
    where = f"journal {journal.batch_number}"
    if journal.status == "posted":
        raise JournalAlreadyPosted(f"{where} is already posted (posting date {journal.posting_date})")
    if journal.status == "voided":
        raise VoidedJournal(f"{where} is voided: its request {journal.request_id} was cancelled")
    if setup.write_off.four_eyes_write_off and journal.requested_by is not None and journal.requested_by == posted_by:
        raise FourEyesViolation(
            f"{posted_by} requested {where} and may not also post it (four-eyes: the setup's "
            "write_off.four_eyes_write_off); another accountant must post it"
        )
    _check_journal_lines(where, journal.lines, setup, JournalNotPostable)
    # Balanced per voucher and date, not only overall: otherwise a trial balance as of a date
    # between the voucher's dates would not balance.
    by_voucher_date: dict[tuple[str, date], list[GeneralJournalLine]] = defaultdict(list)
    for line in journal.lines:
        by_voucher_date[(line.voucher, line.transaction_date)].append(line)
    for (voucher, day), lines in sorted(by_voucher_date.items()):
        _check_balanced(f"{where}: voucher {voucher} on {day}", lines, UnbalancedJournal)
    summary = setup.customer_posting_profile.summary_account
    entries = tuple(
        LedgerEntry(
            account=summary if line.account_type == "Customer" else line.account,
            debit=round_money(line.debit),
            credit=round_money(line.credit),
            voucher=line.voucher,
            posting_date=line.transaction_date,
            text=line.text or journal.description,
            source=f"{journal.journal_name} {journal.batch_number}",
            currency=line.currency,
            customer_account=line.account if line.account_type == "Customer" else None,
        )
        for line in journal.lines
    )
    posting_date = max(day for _, day in by_voucher_date)
    return replace(journal, status="posted", posting_date=posting_date, posted_by=posted_by), entries


def void_journal(journal: Journal) -> Journal:
    """The journal voided on its requester's cancel (a voided one stays as it is), or
    JournalAlreadyPosted: a posted journal is only ever undone by new, opposite postings."""
    if journal.status == "posted":
        raise JournalAlreadyPosted(
            f"journal {journal.batch_number} is already posted (posting date {journal.posting_date}); "
            "it cannot be cancelled"
        )
    return replace(journal, status="voided")


def journal_posted_event(journal: Journal) -> JournalPosted:
    """The JournalPosted message of a posted journal (its lines carry the voucher and the settled items)."""
    if journal.status != "posted" or journal.posting_date is None:
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
