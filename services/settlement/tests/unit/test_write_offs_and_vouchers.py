"""Unit tests of write-off settlement, cash discount voucher names and settling new transactions."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from kredit_settlement.domain import (
    OpenTransaction,
    PairSettled,
    cash_discount_vouchers,
    first_vouchers,
    settle_new_transaction,
    settle_write_off,
    write_off_problems,
)

D = Decimal
ON = date(2015, 9, 30)


def txn(
    voucher: str, kind: str, amount: str, open_amount: str | None = None, customer: str = "4027", currency: str = "USD"
) -> OpenTransaction:
    return OpenTransaction(
        voucher,
        customer,
        kind,
        date(2015, 6, 25),
        currency,
        D(amount),
        D(open_amount or amount),
        invoice_id=voucher if kind == "Invoice" else None,
    )


def write_off(voucher: str, amount: str) -> OpenTransaction:
    return OpenTransaction(voucher, "4027", "WriteOff", ON, "USD", D(amount), D(amount))


def test_a_write_off_settles_the_invoice_it_names_against_itself():
    outcome = settle_write_off(
        write_off("WOV-1", "-1000.00"), [("FTI-1", D("1000.00"))], [txn("FTI-1", "Invoice", "1000.00")]
    )
    assert outcome.pairs == (PairSettled("FTI-1", "WOV-1", D("1000.00")),)
    assert outcome.write_off.open_amount == D("0.00") and outcome.settled[0].open_amount == D("0.00")
    assert outcome.shortfalls == ()


def test_a_netted_write_off_of_invoices_and_a_credit_closes_everything():
    items = [
        txn("FTI-1", "Invoice", "1000.00"),
        txn("FTI-2", "Invoice", "500.00", "200.00"),
        txn("ARP-1", "Payment", "-300.00"),
    ]
    outcome = settle_write_off(
        write_off("WOV-1", "-900.00"), [("FTI-1", D("1000.00")), ("ARP-1", D("-300.00")), ("FTI-2", D("200.00"))], items
    )
    assert outcome.pairs == (
        PairSettled("FTI-1", "WOV-1", D("1000.00")),
        PairSettled("WOV-1", "ARP-1", D("300.00")),
        PairSettled("FTI-2", "WOV-1", D("200.00")),
    )
    assert outcome.write_off.open_amount == D("0.00")
    assert [t.open_amount for t in outcome.settled] == [D("0.00"), D("0.00"), D("0.00")]


def test_what_is_no_longer_open_is_reported_and_stays_open_on_the_write_off():
    items = [
        txn("FTI-1", "Invoice", "1000.00", "700.00"),
        txn("FTI-2", "Invoice", "100.00", "0.00"),
        txn("FTI-3", "Invoice", "100.00", customer="other"),
        txn("FTI-4", "Invoice", "100.00", currency="EUR"),
    ]
    named = [
        ("FTI-1", D("1000.00")),
        ("FTI-2", D("100.00")),
        ("FTI-3", D("100.00")),
        ("FTI-4", D("100.00")),
        ("FTI-9", D("100.00")),
    ]
    outcome = settle_write_off(write_off("WOV-1", "-1400.00"), named, items)
    assert outcome.pairs == (PairSettled("FTI-1", "WOV-1", D("700.00")),)
    assert outcome.write_off.open_amount == D("-700.00")
    assert [s.split(" ")[0] for s in outcome.shortfalls] == ["FTI-1", "FTI-2", "FTI-3", "FTI-4"]
    assert "only 700.00 was open: 700.00 settled, 300.00 left open on WOV-1" in outcome.shortfalls[0]
    assert "belongs to customer other" in outcome.shortfalls[2] and "is in EUR" in outcome.shortfalls[3]
    assert outcome.pending == (("FTI-9", D("100.00")),), "not known yet is not a shortfall: it waits"


def test_a_write_off_named_as_it_can_be_settled_has_no_problems_even_if_not_all_is_open_or_known():
    items = [txn("FTI-1", "Invoice", "120.00", "20.00"), txn("ARP-1", "Payment", "-50.00")]
    named = [("FTI-1", D("120.00")), ("FTI-2", D("80.00")), ("ARP-1", D("-50.00"))]
    assert write_off_problems(write_off("WOV-1", "-150.00"), named, items) == []


def test_a_write_off_that_cannot_be_settled_as_stated_says_each_reason():
    items = [
        txn("FTI-1", "Invoice", "100.00"),
        txn("FTI-3", "Invoice", "100.00", customer="other"),
        txn("FTI-4", "Invoice", "100.00", currency="EUR"),
        txn("ARP-1", "Payment", "-50.00"),
    ]
    named = [
        ("FTI-1", D("150.00")),  # more than the invoice ever was
        ("FTI-1", D("10.00")),  # twice
        ("FTI-3", D("100.00")),
        ("FTI-4", D("100.00")),
        ("ARP-1", D("50.00")),  # a credit named as a debit
        ("FTI-9", D("0.00")),
    ]
    assert write_off_problems(write_off("WOV-1", "-400.00"), named, items) == [
        "names 410.00 in all, but the line reverses 400.00",
        "FTI-1 of 100.00 is named for more, 150.00",
        "names FTI-1 twice",
        "FTI-3 belongs to customer other, not 4027",
        "FTI-4 is in EUR, the write-off in USD",
        "ARP-1 of -50.00 is named for 50.00, on the other side",
        "names FTI-9 for 0.00",
    ]


def test_cash_discount_vouchers_follow_the_payment_and_skip_taken_ones():
    assert cash_discount_vouchers("ARP-10020", 1) == ["DISC-10020"]
    assert cash_discount_vouchers("ARP-10020", 3) == ["DISC-10020", "DISC-10020-2", "DISC-10020-3"]
    assert cash_discount_vouchers("PAY7", 1) == ["DISC-PAY7"]
    assert cash_discount_vouchers("ARP-10020", 2, taken={"DISC-10020"}) == ["DISC-10020-2", "DISC-10020-3"]
    assert cash_discount_vouchers("ARP-10020", 0) == []


def test_a_batch_asks_about_the_first_names_of_each_kind_a_credit_may_post():
    assert first_vouchers("ARP-10020", 1) == ["DISC-10020", "DIFF-10020", "EXCH-10020"]
    assert first_vouchers("7", 2) == ["DISC-7", "DISC-7-2", "DIFF-7", "DIFF-7-2", "EXCH-7", "EXCH-7-2"]


def test_a_new_credit_note_pays_open_invoices_but_no_held_write_off():
    [by_note] = settle_new_transaction(txn("CN-1", "CreditNote", "-40.00"), [txn("FTI-2", "Invoice", "100.00")])
    assert (by_note.settlements[0].debit_voucher, by_note.cash_applied) == ("FTI-2", D("40.00"))
    held = OpenTransaction("WOV-1", "4027", "WriteOff", ON, "USD", D("50.00"), D("50.00"), auto_settle=False)
    assert settle_new_transaction(txn("CN-3", "CreditNote", "-40.00"), [held]) == []
    assert settle_new_transaction(txn("CN-2", "CreditNote", "-10.00"), []) == []
