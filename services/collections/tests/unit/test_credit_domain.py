"""Unit tests of the credit and collections management rules (pure, no I/O).

Sources cited in tests:
- [limits] Microsoft, "Credit limit scenarios" (learn.microsoft.com/dynamics365/finance/accounts-receivable/
  credit-limit-scenarios): the five scenarios of customer credit groups and individual limits.
- [interest] Microsoft, "Set up interest rates for an interest code": with "(GBL) Allow calculating daily
  interest as the annual percent divided by 365", interest = overdue amount × annual % / 365 × overdue days.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kredit_collections.credit_domain import (
    CreditManagementError,
    CustomerCredit,
    check_credit,
    disputed_amounts,
    effective_credit_limit,
    interest_amount,
    interest_notes_due,
    is_over_credit_limit,
    letter_level,
    letters_due,
    new_activity,
    promise_status,
)
from kredit_collections.domain import CustomerTransaction, TransactionBalance
from kredit_shared.company_setup import InterestCode, load_company_setup

D = Decimal
SETUP = load_company_setup()
assert SETUP.collection_letters is not None and SETUP.interest is not None
SEQUENCE = SETUP.collection_letters.sequence
MONTHLY = SETUP.interest.codes["1.5%M"]
YEARLY = SETUP.interest.codes["18%Y"]
AS_OF = date(2016, 3, 31)


def credit(**fields) -> CustomerCredit:
    return CustomerCredit("US-004", **fields)


# --- effective credit limit: the five scenarios of [limits] ------------------------------------


def test_limits_1_group_limit_more_than_the_individual_one_the_individual_counts():
    assert effective_credit_limit(credit(credit_limit=D("10000"), credit_group="G"), D("15000")) == D("10000")


def test_limits_2_individual_limit_more_than_the_group_one_the_group_counts():
    assert effective_credit_limit(credit(credit_limit=D("20000"), credit_group="G"), D("15000")) == D("15000")


def test_limits_3_individual_0_with_mandatory_credit_limit_means_no_credit_even_in_a_group():
    mandatory = credit(credit_limit=D("0.00"), credit_group="G", mandatory_credit_limit=True)
    assert effective_credit_limit(mandatory, D("15000")) == D("0.00")
    decision = check_credit(mandatory, D("15000"), D("0.00"), D("0.01"), group_balance=D("0.00"))
    assert decision.blocked and "mandatory credit limit 0.00" in decision.reason


def test_limits_4_individual_0_with_unlimited_credit_limit_means_no_check_even_in_a_group():
    unlimited = credit(credit_limit=D("0.00"), credit_group="G", unlimited_credit_limit=True)
    assert effective_credit_limit(unlimited, D("15000")) is None
    decision = check_credit(unlimited, D("15000"), D("99999.00"), D("1000000.00"), group_balance=D("99999.00"))
    assert not decision.blocked and decision.available_credit is None


def test_limits_5_individual_0_without_options_in_a_group_the_group_limit_counts():
    assert effective_credit_limit(credit(credit_limit=D("0.00"), credit_group="G"), D("15000")) == D("15000")


def test_without_a_group_an_individual_limit_counts_and_none_or_0_means_no_check():
    assert effective_credit_limit(credit(credit_limit=D("10000")), None) == D("10000")
    assert effective_credit_limit(credit(), None) is None
    assert effective_credit_limit(credit(credit_limit=D("0.00")), None) is None
    assert effective_credit_limit(credit(credit_limit=D("500"), mandatory_credit_limit=True), D("100")) == D("500")


# --- credit checks ----------------------------------------------------------------------------


def test_an_order_exactly_at_the_limit_passes_and_a_cent_over_is_blocked():
    c = credit(credit_limit=D("10000.00"))
    at = check_credit(c, None, D("7500.00"), D("2000.00"), open_orders=D("500.00"))
    assert (at.blocked, at.effective_credit_limit, at.available_credit) == (False, D("10000.00"), D("2500.00"))
    over = check_credit(c, None, D("7500.00"), D("2000.01"), open_orders=D("500.00"))
    assert over.blocked
    assert over.reason == (
        "balance 7500.00 + open orders 500.00 + order 2000.01 = 10000.01 exceeds the credit limit 10000.00 by 0.01"
    )


def test_the_group_limit_is_shared_by_its_customers_and_checked_first():
    # The customer alone is well within the group's 15,000, but the group's customers owe 14,000 together.
    c = credit(credit_group="G")
    decision = check_credit(c, D("15000.00"), D("1000.00"), D("1000.01"), group_balance=D("14000.00"))
    assert decision.blocked and "credit group G" in decision.reason and "by 0.01" in decision.reason
    assert not check_credit(c, D("15000.00"), D("1000.00"), D("1000.00"), group_balance=D("14000.00")).blocked


def test_no_limit_set_blocks_nothing():
    decision = check_credit(credit(), None, D("1000000.00"), D("1.00"))
    assert not decision.blocked and decision.effective_credit_limit is None and "no credit limit" in decision.reason


@given(
    st.integers(0, 10**7).map(lambda c: D(c) / 100),
    st.integers(-(10**6), 10**7).map(lambda c: D(c) / 100),
    st.integers(0, 10**6).map(lambda c: D(c) / 100),
)
def test_blocked_exactly_when_balance_plus_order_exceeds_the_limit(limit, balance, amount):
    decision = check_credit(credit(credit_limit=limit, mandatory_credit_limit=True), None, balance, amount)
    assert decision.blocked == (balance + amount > limit)
    assert decision.available_credit == limit - balance
    assert is_over_credit_limit(balance, limit) == (balance > limit)


# --- collection letters ---------------------------------------------------------------------


def invoice(
    voucher: str, amount: str, due: date, account: str = "US-004", currency: str = "USD"
) -> CustomerTransaction:
    return CustomerTransaction(
        voucher=voucher,
        transaction_type="Invoice",
        customer_account=account,
        transaction_date=due - timedelta(days=30),
        amount=D(amount),
        currency=currency,
        invoice_id=voucher.removeprefix("FTI-"),
        due_date=due,
        customer_name="Cave Wholesales",
    )


def open_(*transactions: CustomerTransaction, balance: dict[str, str] | None = None) -> list[TransactionBalance]:
    return [TransactionBalance(t, D((balance or {}).get(t.voucher, str(t.amount)))) for t in transactions]


def overdue(days: int) -> date:
    return AS_OF - timedelta(days=days)


def test_the_demo_sequence_is_reminder_at_15_second_at_30_with_a_fee_and_final_at_60():
    assert [(level.code, level.days_overdue, level.fee) for level in SEQUENCE] == [
        ("Reminder", 15, D("0.00")),
        ("Second", 30, D("25.00")),
        ("Final", 60, D("0.00")),
    ]
    assert [letter_level(days, SEQUENCE) for days in (1, 14, 15, 29, 30, 59, 60, 365)] == [
        None,
        None,
        0,
        0,
        1,
        1,
        2,
        2,
    ]


def test_invoices_15_35_and_65_days_overdue_get_a_reminder_a_second_letter_with_its_fee_and_a_final_letter():
    balances = open_(
        invoice("FTI-1", "100.00", overdue(15)),
        invoice("FTI-2", "200.00", overdue(35)),
        invoice("FTI-3", "300.00", overdue(65)),
        invoice("FTI-4", "400.00", overdue(14)),  # not yet
    )
    letters = letters_due(balances, AS_OF, SEQUENCE, sent={})
    assert [(l.code, l.fee, [i.voucher for i in l.items], [i.days_overdue for i in l.items]) for l in letters] == [
        ("Reminder", D("0.00"), ["FTI-1"], [15]),
        ("Second", D("25.00"), ["FTI-2"], [35]),
        ("Final", D("0.00"), ["FTI-3"], [65]),
    ]
    assert [l.total for l in letters] == [D("100.00"), D("200.00"), D("300.00")]


def test_a_level_is_never_sent_twice_for_the_same_invoice_and_invoices_move_up_the_sequence():
    balances = open_(invoice("FTI-1", "100.00", overdue(15)), invoice("FTI-2", "200.00", overdue(35)))
    assert letters_due(balances, AS_OF, SEQUENCE, sent={"FTI-1": 0, "FTI-2": 1}) == []
    later = AS_OF + timedelta(days=15)  # FTI-1 is now 30 days overdue: the second letter, FTI-2 stays
    [second] = letters_due(balances, later, SEQUENCE, sent={"FTI-1": 0, "FTI-2": 1})
    assert (second.code, [i.voucher for i in second.items]) == ("Second", ["FTI-1"])
    # An invoice that already had the final letter never gets an earlier level.
    assert letters_due(balances, AS_OF, SEQUENCE, sent={"FTI-1": 2, "FTI-2": 2}) == []


def test_paid_disputed_and_excluded_invoices_and_credits_get_no_letter():
    balances = open_(
        invoice("FTI-1", "100.00", overdue(40)),
        invoice("FTI-2", "200.00", overdue(40)),
        invoice("FTI-3", "300.00", overdue(40)),
        balance={"FTI-1": "0.00"},
    )
    [letter] = letters_due(balances, AS_OF, SEQUENCE, sent={}, excluded={"FTI-2"})
    assert [i.voucher for i in letter.items] == ["FTI-3"]


def test_one_letter_per_customer_and_level_lists_all_its_invoices_at_that_level():
    balances = open_(
        invoice("FTI-1", "100.00", overdue(20)),
        invoice("FTI-2", "50.00", overdue(16)),
        invoice("FTI-9", "70.00", overdue(20), account="US-001"),
    )
    letters = letters_due(balances, AS_OF, SEQUENCE, sent={})
    assert [(l.customer_account, [i.voucher for i in l.items]) for l in letters] == [
        ("US-001", ["FTI-9"]),
        ("US-004", ["FTI-1", "FTI-2"]),
    ]


# --- interest notes: [interest], day count actual/365 ---------------------------------------


def test_1000_at_1_5_percent_a_month_for_45_days_is_22_19():
    # 1,000.00 × (1.5 % × 12) / 365 × 45 = 22.1917… -> 22.19
    assert interest_amount(D("1000.00"), 45, MONTHLY) == D("22.19")
    [note] = interest_notes_due(open_(invoice("FTI-1", "1000.00", overdue(45))), AS_OF, MONTHLY, charged_to={})
    [line] = note.lines
    assert (line.days, line.from_date, line.to_date, line.interest, note.total) == (
        45,
        overdue(45),
        AS_OF,
        D("22.19"),
        D("22.19"),
    )


def test_a_yearly_percent_is_per_365_days():
    assert interest_amount(D("1000.00"), 365, YEARLY) == D("180.00")
    assert interest_amount(D("1000.00"), 1, YEARLY) == D("0.49")  # 0.4931…


def test_interest_is_charged_up_to_a_date_once_and_then_from_that_date_on():
    balances = open_(invoice("FTI-1", "1000.00", overdue(45)))
    assert interest_notes_due(balances, AS_OF, MONTHLY, charged_to={"FTI-1": AS_OF}) == []
    [later] = interest_notes_due(balances, AS_OF + timedelta(days=10), MONTHLY, charged_to={"FTI-1": AS_OF})
    assert (later.lines[0].from_date, later.lines[0].days, later.total) == (AS_OF, 10, D("4.93"))  # 4.9315…


def test_grace_days_and_the_minimum_amount():
    code = InterestCode(percent=D("18"), per="Year", minimum_amount=D("5.00"), grace_days=10)
    assert interest_notes_due(open_(invoice("FTI-1", "1000.00", overdue(10))), AS_OF, code, {}) == []
    # 11 days overdue: past the grace days, interest from the due date: 1000 × 18 % / 365 × 11 = 5.42
    [note] = interest_notes_due(open_(invoice("FTI-1", "1000.00", overdue(11))), AS_OF, code, {})
    assert note.total == D("5.42")
    # 4.93 is under the 5.00 minimum: no note, the interest keeps accruing.
    assert interest_notes_due(open_(invoice("FTI-2", "100.00", overdue(100))), AS_OF, code, {}) == []


def test_interest_runs_on_the_open_balance_of_each_invoice_and_skips_disputed_ones():
    balances = open_(
        invoice("FTI-1", "1000.00", overdue(30)),
        invoice("FTI-2", "500.00", overdue(30)),
        invoice("FTI-3", "800.00", overdue(30)),
        balance={"FTI-1": "400.00"},
    )
    [note] = interest_notes_due(balances, AS_OF, MONTHLY, charged_to={}, excluded={"FTI-3"})
    assert [(l.item.voucher, l.item.balance, l.interest) for l in note.lines] == [
        ("FTI-1", D("400.00"), D("5.92")),  # 400 × 18 % / 365 × 30 = 5.917…
        ("FTI-2", D("500.00"), D("7.40")),  # 7.397…
    ]
    assert note.total == D("13.32")


# --- activities and disputes ----------------------------------------------------------------


def payment(voucher: str, amount: str, on: date) -> CustomerTransaction:
    return CustomerTransaction(voucher, "Payment", "US-004", on, D(amount), "USD")


def test_a_promise_to_pay_is_open_then_kept_or_broken():
    promise = new_activity(
        "a-1",
        "US-004",
        "PromiseToPay",
        "will pay on Friday",
        date(2016, 3, 1),
        promised_amount=D("500.00"),
        promised_date=date(2016, 3, 4),
    )
    assert promise.follow_up_date == date(2016, 3, 4)
    assert promise_status(promise, [], date(2016, 3, 4)) == "open"
    assert promise_status(promise, [], date(2016, 3, 5)) == "broken"
    paid_late = [payment("ARP-1", "-300.00", date(2016, 3, 2)), payment("ARP-2", "-200.00", date(2016, 3, 7))]
    assert promise_status(promise, paid_late, date(2016, 3, 8)) == "broken"
    paid = [payment("ARP-1", "-300.00", date(2016, 3, 2)), payment("ARP-2", "-200.00", date(2016, 3, 4))]
    assert promise_status(promise, paid, date(2016, 3, 8)) == "kept"
    note = new_activity("a-2", "US-004", "Note", "called, no answer", date(2016, 3, 1))
    assert promise_status(note, [], date(2016, 3, 8)) is None


@pytest.mark.parametrize(
    ("kind", "fields", "message"),
    [
        ("Visit", {}, "unknown activity type 'Visit'"),
        ("PromiseToPay", {"promised_date": date(2016, 3, 4)}, "positive promised_amount"),
        ("PromiseToPay", {"promised_amount": D("0.00"), "promised_date": date(2016, 3, 4)}, "positive"),
        ("Call", {"promised_amount": D("5.00")}, "PromiseToPay only"),
    ],
)
def test_activity_guards(kind, fields, message):
    with pytest.raises(CreditManagementError, match=message):
        new_activity("a", "US-004", kind, "", date(2016, 3, 1), **fields)


def test_disputed_amounts_per_customer_and_currency():
    balances = open_(
        invoice("FTI-1", "100.00", overdue(5)),
        invoice("FTI-2", "200.00", overdue(5)),
        invoice("FTI-3", "300.00", overdue(5)),
        balance={"FTI-3": "0.00"},
    )
    assert disputed_amounts(balances, {"FTI-1", "FTI-3"}) == {("US-004", "USD"): D("100.00")}
