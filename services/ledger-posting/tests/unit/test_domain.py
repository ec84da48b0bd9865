"""Unit tests of the ledger-posting rules (pure, no I/O), against the demo company setup."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kredit_ledger_posting.domain import (
    DuplicateVoucher,
    InvalidJournalRequest,
    InvalidVoucher,
    JournalAlreadyPosted,
    JournalNotPostable,
    LedgerEntry,
    UnbalancedJournal,
    VoidedJournal,
    entries_for_voucher,
    is_new_voucher,
    journal_posted_event,
    open_journal,
    post_journal,
    trial_balance,
    void_journal,
    voucher_count,
    voucher_fingerprint,
)
from kredit_shared.company_setup import load_company_setup
from kredit_shared.contracts import GeneralJournalRequested, VoucherPosted

SETUP = load_company_setup()
DAY = date(2015, 7, 1)


def voucher(*lines: tuple[str, str, str], number: str = "INV-1", currency: str = "USD", **extra) -> VoucherPosted:
    return VoucherPosted.model_validate(
        {
            "voucher": number,
            "posting_date": DAY,
            "currency": currency,
            "source": "invoicing",
            **extra,
            "lines": [{"account": a, "debit": d, "credit": c} for a, d, c in lines],
        }
    )


def journal_request(*lines: dict, journal_name: str = "WriteOff") -> GeneralJournalRequested:
    base = {"currency": "USD", "transaction_date": "2015-07-01", "reason_code": "BadDebt"}
    return GeneralJournalRequested.model_validate(
        {"request_id": "req-1", "journal_name": journal_name, "lines": [base | line for line in lines]}
    )


WRITE_OFF = (
    {
        "account_type": "Customer",
        "account": "4027",
        "credit": "100.00",
        "settles": [{"voucher": "INV-1", "invoice_id": "10020", "amount": "100.00"}],
    },
    {"account_type": "Ledger", "account": "618900", "debit": "100.00", "reason_comment": "bankrupt"},
)


# --- subledger vouchers ---------------------------------------------------------------------------


def test_a_balanced_voucher_posts_one_entry_per_line():
    entries = entries_for_voucher(voucher(("130100", "1000.00", "0"), ("401100", "0", "1000.00")), SETUP)
    assert [(e.account, e.debit, e.credit, e.voucher, e.posting_date, e.source) for e in entries] == [
        ("130100", Decimal("1000.00"), Decimal("0.00"), "INV-1", DAY, "invoicing"),
        ("401100", Decimal("0.00"), Decimal("1000.00"), "INV-1", DAY, "invoicing"),
    ]


@pytest.mark.parametrize(
    ("lines", "extra", "reason"),
    [
        (
            [("130100", "100.00", "0"), ("401100", "0", "90.00")],
            {},
            "voucher INV-1 does not balance: debits total 100.00, credits total 90.00",
        ),
        ([("130100", "100.00", "0"), ("999999", "0", "100.00")], {}, "line 2: unknown main account '999999'"),
        (
            [("130100", "100.00", "0"), ("401100", "0", "100.00")],
            {"currency": "EUR"},
            "currency EUR is not the accounting currency USD",
        ),
        ([("130100", "-100.00", "0"), ("401100", "0", "-100.00")], {}, "line 1 has a negative amount"),
        ([("130100", "100.00", "100.00"), ("401100", "0", "0.01")], {}, "line 1 has both a debit"),
        (
            [("130100", "100.00", "0"), ("401100", "0", "100.00"), ("222200", "0", "0")],
            {},
            "line 3 has zero on both sides",
        ),
        ([("130100", "0", "0"), ("401100", "0", "0")], {}, "voucher INV-1 has no line with a non-zero amount"),
    ],
    ids=["unbalanced", "unknown-account", "foreign-currency", "negative", "both-sides", "zero-line", "all-zero"],
)
def test_rejects_an_invalid_voucher_with_its_reason(lines, extra, reason):
    with pytest.raises(InvalidVoucher, match=reason):
        entries_for_voucher(voucher(*lines, **extra), SETUP)


def test_a_redelivered_voucher_with_the_same_content_is_a_no_op():
    first = voucher(("130100", "100", "0"), ("401100", "0", "100"))
    again = voucher(("401100", "0", "100.00"), ("130100", "100.00", "0"))  # new message_id, lines reordered
    assert first.message_id != again.message_id
    assert is_new_voucher(first, None) is True
    assert is_new_voucher(again, voucher_fingerprint(first)) is False


def test_a_posted_voucher_number_with_different_content_is_rejected():
    posted = voucher_fingerprint(voucher(("130100", "100.00", "0"), ("401100", "0", "100.00")))
    changed = voucher(("130100", "101.00", "0"), ("401100", "0", "101.00"))
    with pytest.raises(DuplicateVoucher, match="INV-1 is already posted with different content"):
        is_new_voucher(changed, posted)


# --- general journals -----------------------------------------------------------------------------


def test_each_journal_name_numbers_batches_and_vouchers_from_its_own_sequence():
    write_offs = [open_journal(journal_request(*WRITE_OFF), SETUP, n, n) for n in (1, 2)]
    general = open_journal(journal_request(*WRITE_OFF, journal_name="GenJrn"), SETUP, 1, 7)
    assert [j.batch_number for j in write_offs] == ["WOJ-000001", "WOJ-000002"]
    assert [j.vouchers for j in write_offs] == [["WOV-000001"], ["WOV-000002"]]
    assert (general.batch_number, general.vouchers, general.status) == ("GNJ-000001", ["GJV-000007"], "open")


def test_each_voucher_group_gets_its_own_voucher_and_must_balance_on_its_own():
    grouped = [
        {"account_type": "Customer", "account": "US-004", "credit": "100.00", "voucher_group": "FTI-1"},
        {"account_type": "Ledger", "account": "618900", "debit": "100.00", "voucher_group": "FTI-1"},
        {"account_type": "Customer", "account": "US-004", "credit": "50.00", "voucher_group": "FTI-2"},
        {"account_type": "Ledger", "account": "618900", "debit": "50.00", "voucher_group": "FTI-2"},
    ]
    request = journal_request(*grouped)
    assert voucher_count(request) == 2
    journal = open_journal(request, SETUP, 1, 5)
    assert [line.voucher for line in journal.lines] == ["WOV-000005"] * 2 + ["WOV-000006"] * 2
    posted, entries = post_journal(journal, SETUP)
    assert {e.voucher for e in entries} == {"WOV-000005", "WOV-000006"}

    crossed = [dict(line) for line in grouped]
    crossed[1]["debit"], crossed[3]["debit"] = "50.00", "100.00"  # balanced overall, not per voucher
    with pytest.raises(UnbalancedJournal, match="voucher WOV-000001 on .* debits total 50.00, credits total 100.00"):
        post_journal(open_journal(journal_request(*crossed), SETUP, 1, 1), SETUP)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ({"account_type": "Ledger", "account": "999999", "debit": "1.00"}, "line 1: unknown main account '999999'"),
        ({"account_type": "Ledger", "account": "618900", "debit": "-1.00"}, "line 1 has a negative amount"),
        ({"account_type": "Customer", "account": "4027", "debit": "1.00", "credit": "1.00"}, "line 1 has both"),
        (
            {"account_type": "Ledger", "account": "618900", "debit": "1.00", "currency": "EUR"},
            "currency EUR is not the accounting currency USD",
        ),
    ],
)
def test_rejects_an_invalid_journal_request_with_its_reason(line, reason):
    with pytest.raises(InvalidJournalRequest, match=reason):
        open_journal(journal_request(line), SETUP, 1, 1)


def test_rejects_an_unknown_journal_name():
    with pytest.raises(InvalidJournalRequest, match="unknown journal name 'Daily'"):
        open_journal(journal_request(*WRITE_OFF, journal_name="Daily"), SETUP, 1, 1)


def test_customer_lines_post_to_the_summary_account_keeping_the_customer():
    posted, entries = post_journal(open_journal(journal_request(*WRITE_OFF), SETUP, 1, 1), SETUP)
    assert [(e.account, e.debit, e.credit, e.customer_account, e.voucher) for e in entries] == [
        ("130100", Decimal("0.00"), Decimal("100.00"), "4027", "WOV-000001"),
        ("618900", Decimal("100.00"), Decimal("0.00"), None, "WOV-000001"),
    ]
    assert (posted.status, posted.posting_date) == ("posted", DAY)
    event = journal_posted_event(posted)
    assert event.batch_number == "WOJ-000001" and event.lines[0].voucher == "WOV-000001"
    assert event.lines[0].settles[0].invoice_id == "10020"


def test_posting_a_journal_twice_is_refused():
    posted, _ = post_journal(open_journal(journal_request(*WRITE_OFF), SETUP, 1, 1), SETUP)
    with pytest.raises(JournalAlreadyPosted, match="WOJ-000001 is already posted"):
        post_journal(posted, SETUP)


def test_an_open_journal_is_voided_once_and_then_never_posts_but_a_posted_one_cannot_be_voided():
    journal = open_journal(journal_request(*WRITE_OFF), SETUP, 1, 1)
    voided = void_journal(journal)
    assert (voided.status, voided.lines) == ("voided", journal.lines)  # kept for audit
    assert void_journal(voided) == voided
    with pytest.raises(VoidedJournal, match="WOJ-000001 is voided"):
        post_journal(voided, SETUP)
    posted, _ = post_journal(journal, SETUP)
    with pytest.raises(JournalAlreadyPosted, match="WOJ-000001 is already posted .* cannot be cancelled"):
        void_journal(posted)


def test_an_unbalanced_journal_can_be_opened_but_not_posted():
    journal = open_journal(journal_request(WRITE_OFF[0], WRITE_OFF[1] | {"debit": "90.00"}), SETUP, 1, 1)
    with pytest.raises(UnbalancedJournal, match="debits total 90.00, credits total 100.00") as refused:
        post_journal(journal, SETUP)
    assert isinstance(refused.value, JournalNotPostable)  # the API answers 409


def test_a_journal_must_balance_on_each_date():
    journal = open_journal(
        journal_request(WRITE_OFF[0], WRITE_OFF[1] | {"transaction_date": "2015-07-02"}), SETUP, 1, 1
    )
    with pytest.raises(UnbalancedJournal, match="on 2015-07-01 does not balance"):
        post_journal(journal, SETUP)


# --- trial balance --------------------------------------------------------------------------------


def test_trial_balance_sums_entries_up_to_the_date_and_omits_idle_accounts():
    sale = entries_for_voucher(voucher(("130100", "1000.00", "0"), ("401100", "0", "1000.00")), SETUP)
    later = entries_for_voucher(
        voucher(("110110", "990.00", "0"), ("130100", "0", "990.00"), number="PAY-1", posting_date="2015-07-20"), SETUP
    )
    tb = trial_balance(sale + later, SETUP, as_of=date(2015, 7, 10))
    assert [(r.account, r.name, r.debit, r.credit, r.balance) for r in tb.accounts] == [
        ("130100", "Accounts receivable", Decimal("1000.00"), Decimal("0.00"), Decimal("1000.00")),
        ("401100", "Sales revenue", Decimal("0.00"), Decimal("1000.00"), Decimal("-1000.00")),
    ]
    assert tb.total_debit == tb.total_credit == Decimal("1000.00")
    assert len(trial_balance(sale + later, SETUP, as_of=date(2015, 7, 20)).accounts) == 3


ACCOUNTS = st.sampled_from(sorted(SETUP.main_accounts))
CENTS = st.integers(min_value=1, max_value=10_000_000)


@st.composite
def balanced_vouchers(draw, number: int) -> VoucherPosted:
    debits = draw(st.lists(st.tuples(ACCOUNTS, CENTS), min_size=1, max_size=4))
    credits = draw(st.lists(st.tuples(ACCOUNTS, CENTS), min_size=1, max_size=4))
    difference = sum(c for _, c in debits) - sum(c for _, c in credits)
    balancing = draw(ACCOUNTS)  # one more line on the short side makes the voucher balance
    if difference > 0:
        credits.append((balancing, difference))
    elif difference < 0:
        debits.append((balancing, -difference))
    lines = [(a, str(Decimal(c) / 100), "0") for a, c in debits] + [(a, "0", str(Decimal(c) / 100)) for a, c in credits]
    day = draw(st.dates(min_value=date(2015, 1, 1), max_value=date(2015, 12, 31)))
    return voucher(*lines, number=f"V-{number}", posting_date=day.isoformat())


@given(st.data(), st.dates(min_value=date(2015, 1, 1), max_value=date(2015, 12, 31)))
def test_any_balanced_vouchers_give_a_balanced_trial_balance(data, as_of):
    count = data.draw(st.integers(0, 8))
    entries: list[LedgerEntry] = []
    for n in range(count):
        entries += entries_for_voucher(data.draw(balanced_vouchers(n)), SETUP)
    tb = trial_balance(entries, SETUP, as_of)
    assert tb.total_debit == tb.total_credit
    for row in tb.accounts:
        mine = [e for e in entries if e.account == row.account and e.posting_date <= as_of]
        assert row.balance == sum((e.debit - e.credit for e in mine), Decimal(0))
