"""The rules that used to sit in settlement's handlers (issue 13): a foreign document needs exchange accounts,
which marks wait for their invoice and in which place, what a release and a reversal refuse, and how a posted
write-off journal line becomes a customer transaction."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from kredit_settlement.domain import (
    Accounts,
    Mark,
    NothingToRelease,
    OpenTransaction,
    RejectedMark,
    ReversalRefused,
    TransactionRejected,
    check_currency,
    check_reversible,
    line_vouchers,
    marks_to_keep,
    named_by_several_lines,
    new_payment,
    release,
    write_off_transaction,
)

D = Decimal
JUL1 = date(2015, 7, 1)
WITH_EXCHANGE_ACCOUNTS = Accounts("520100", None, None, "USD", "710100", "810100")
WITHOUT = Accounts("520100", None, None, "USD")


def test_a_foreign_document_needs_the_exchange_accounts_one_in_the_accounting_currency_does_not():
    check_currency("payment P1", "USD", WITHOUT)
    check_currency("payment P1", "EUR", WITH_EXCHANGE_ACCOUNTS)
    with pytest.raises(TransactionRejected, match="payment P1 is in EUR, not the accounting currency USD, and the"):
        check_currency("payment P1", "EUR", WITHOUT)
    with pytest.raises(TransactionRejected):
        check_currency("payment P1", "EUR", Accounts("520100", None, None, "USD", "710100", None))


def test_marks_on_unknown_invoices_are_kept_in_their_place_the_first_of_an_invoice_marked_twice():
    marks = [Mark("A"), Mark("B", D("10.00")), Mark("C"), Mark("B", D("20.00"))]
    rejected = [
        RejectedMark("A", "not open", False),
        RejectedMark("B", "no invoice 'B' is known", True),
        RejectedMark("C", "no invoice 'C' is known", True),
    ]
    assert marks_to_keep(marks, rejected) == [(1, Mark("B", D("10.00"))), (2, Mark("C"))]
    assert marks_to_keep(marks, rejected[:1]) == []


def marked_payment(amount: str = "100.00") -> OpenTransaction:
    return new_payment("P1", "4027", JUL1, D(amount), "USD", marked=True)


def test_a_release_turns_a_held_payment_automatic_and_refuses_one_that_holds_nothing():
    held = marked_payment()
    assert not held.auto_settle and held.open_amount < 0
    released = release("P1", held)
    assert released.auto_settle and released.open_amount == held.open_amount
    with pytest.raises(NothingToRelease, match="payment P1 holds nothing: it settles automatically already"):
        release("P1", released)
    closed = OpenTransaction(**{**vars(held), "open_amount": D("0.00"), "accounting_open_amount": D("0.00")})
    with pytest.raises(NothingToRelease, match="payment P1 holds nothing: nothing of it is open"):
        release("P1", closed)
    with pytest.raises(NothingToRelease, match="nothing of it is open"):
        release("P1", None)


def test_a_settlement_is_reversed_once_and_a_reversal_never():
    check_reversible("S1", [(None, None), (None, None)])
    with pytest.raises(ReversalRefused, match="settlement S1 was already reversed by S1:reversed"):
        check_reversible("S1", [(None, None), ("S1:reversed", None)])
    with pytest.raises(ReversalRefused, match="settlement S1:reversed is itself a reversal"):
        check_reversible("S1:reversed", [(None, "S1")])


def test_a_write_off_line_is_a_customer_transaction_of_its_signed_amount_never_applied_automatically():
    plain = write_off_transaction("WO-1", "4027", JUL1, "USD", D("-100.00"), None, [])
    assert (plain.transaction_type, plain.open_amount, plain.accounting_open_amount) == (
        "WriteOff",
        D("-100.00"),
        D("-100.00"),
    )
    assert (plain.auto_settle, plain.exchange_rate) == (False, D(1))
    foreign = write_off_transaction("WO-2", "4027", JUL1, "EUR", D("-100.00"), D("1.20"), [D("110.00"), D("5.00")])
    assert (foreign.open_amount, foreign.accounting_open_amount, foreign.exchange_rate) == (
        D("-100.00"),
        D("-115.00"),
        D("1.20"),
    ), "its accounting amount is what it takes off the named transactions"


def test_journal_lines_sharing_a_voucher_are_numbered_and_a_transaction_named_by_two_lines_is_a_problem():
    assert line_vouchers(["V", "W", "V", "V"]) == ["V", "W", "V-2", "V-3"]
    assert named_by_several_lines([["A", "B", "A"], ["C"], ["B"]]) == ["B is named by 2 lines"]
    assert named_by_several_lines([["A"], ["B"]]) == []
