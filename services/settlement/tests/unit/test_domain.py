"""Unit tests of the settlement rules: the source scenario, Microsoft's worked examples, and properties."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kredit_settlement.domain import (
    CashDiscountAdministration,
    DiscountTier,
    Mark,
    MarkRejected,
    OpenTransaction,
    SettlementError,
    SettlementParameters,
    TransactionRejected,
    UseCashDiscount,
    apply_settlement,
    automatic_order,
    available_discount,
    find_marked_invoice,
    new_payment,
    preview_mark,
    reaches_beyond,
    reservations,
    settle_credit,
    settle_new_invoice,
    settle_payment,
)
from kredit_shared.money import round_money

D = Decimal
PARTIAL_OFF = SettlementParameters(calculate_cash_discounts_for_partial_payments=False)


def invoice(
    invoice_id: str,
    amount: str,
    on: date,
    *tiers: tuple[date, str],
    due: date | None = None,
    customer: str = "4027",
    currency: str = "USD",
    open_amount: str | None = None,
) -> OpenTransaction:
    return OpenTransaction(
        voucher=f"FTI-{invoice_id}",
        customer_account=customer,
        transaction_type="Invoice",
        transaction_date=on,
        currency=currency,
        original_amount=D(amount),
        open_amount=D(open_amount or amount),
        invoice_id=invoice_id,
        due_date=due or on + timedelta(days=30),
        cash_discounts=tuple(DiscountTier(d, D(p), round_money(D(amount) * D(p) / 100)) for d, p in tiers),
        cash_discount_account="520100",
    )


def payment(voucher: str, amount: str, on: date, customer: str = "4027", currency: str = "USD") -> OpenTransaction:
    return new_payment(voucher, customer, on, D(amount), currency)


def by_invoice(result):
    return {s.invoice_id: (s.cash_applied, s.cash_discount) for s in result.settlements}


def open_of(transactions, voucher):
    return next(t.open_amount for t in transactions if t.voucher == voucher)


# --- the source: partial payment before the discount date, final payment after it ------------

JUN25, JUL1, JUL9, JUL11 = date(2015, 6, 25), date(2015, 7, 1), date(2015, 7, 9), date(2015, 7, 11)


def invoice_10020(**kw) -> OpenTransaction:
    return invoice("10020", "1000.00", JUN25, (JUL9, "1.00"), due=date(2015, 7, 25), **kw)


def test_the_partial_payment_preview_shows_a_3_00_discount_to_take():
    preview = preview_mark(invoice_10020(), JUL1, Mark("10020", D("297.00"), "Normal"))
    assert preview.cash_discount_date == JUL9
    assert preview.cash_discount_amount == D("10.00")
    assert preview.use_cash_discount is UseCashDiscount.NORMAL
    assert preview.cash_discount_taken == D("0.00")
    assert preview.cash_discount_amount_to_take == D("3.00")
    assert preview.amount_to_settle == D("297.00")


@pytest.mark.parametrize("amount_to_settle", [D("297.00"), D("1000.00"), None])
def test_a_297_payment_settles_300_of_the_invoice_whatever_the_amount_to_settle(amount_to_settle):
    inv, pay = invoice_10020(), payment("ARP-10020", "297.00", JUL1)
    result = settle_credit(pay, [inv], marks=[Mark("10020", amount_to_settle)])
    assert by_invoice(result) == {"10020": (D("297.00"), D("3.00"))}
    assert result.settlements[0].cash_discount_account == "520100"
    assert result.unused_amount == D("0.00")
    after = apply_settlement([inv, pay], result)
    assert open_of(after, "FTI-10020") == D("700.00") and open_of(after, "ARP-10020") == D("0.00")
    assert after[0].discount_taken == D("3.00")


def invoice_10020_after_first_payment() -> OpenTransaction:
    inv, pay = invoice_10020(), payment("ARP-10020", "297.00", JUL1)
    return apply_settlement([inv, pay], settle_credit(pay, [inv], marks=[Mark("10020", D("297.00"))]))[0]


def test_after_the_discount_date_normal_shows_no_discount_to_take():
    preview = preview_mark(invoice_10020_after_first_payment(), JUL11, Mark("10020", D("700.00"), "Normal"))
    assert (preview.cash_discount_date, preview.cash_discount_amount) == (JUL9, D("0.00"))
    assert (preview.cash_discount_taken, preview.cash_discount_amount_to_take) == (D("3.00"), D("0.00"))
    assert preview.amount_to_settle == D("700.00")


def test_always_overrides_the_date_and_takes_the_remaining_7_00():
    """The page shows the tier's full 10.00 (1 % of 1,000.00); 7.00 of it is left to take."""
    preview = preview_mark(invoice_10020_after_first_payment(), JUL11, Mark("10020", D("700.00"), "Always"))
    assert (preview.cash_discount_date, preview.cash_discount_amount) == (JUL9, D("10.00"))
    assert (preview.cash_discount_taken, preview.cash_discount_amount_to_take) == (D("3.00"), D("7.00"))
    assert preview.amount_to_settle == D("693.00")


def test_the_final_700_payment_after_the_date_closes_the_invoice_without_discount():
    inv, pay = invoice_10020_after_first_payment(), payment("ARP-10021", "700.00", JUL11)
    result = settle_credit(pay, [inv], marks=[Mark("10020", D("700.00"), "Normal")])
    assert by_invoice(result) == {"10020": (D("700.00"), D("0.00"))}
    after = apply_settlement([inv, pay], result)
    assert open_of(after, "FTI-10020") == D("0.00") and open_of(after, "ARP-10021") == D("0.00")


def test_the_final_payment_with_always_leaves_7_00_of_the_payment_open():
    inv, pay = invoice_10020_after_first_payment(), payment("ARP-10021", "700.00", JUL11)
    result = settle_credit(pay, [inv], marks=[Mark("10020", D("700.00"), "Always")])
    assert by_invoice(result) == {"10020": (D("693.00"), D("7.00"))}
    assert result.unused_amount == D("7.00")
    after = apply_settlement([inv, pay], result)
    assert open_of(after, "FTI-10020") == D("0.00") and open_of(after, "ARP-10021") == D("-7.00")


def test_never_takes_no_discount_even_before_the_date():
    result = settle_credit(payment("P", "990.00", JUL1), [invoice_10020()], marks=[Mark("10020", None, "Never")])
    assert by_invoice(result) == {"10020": (D("990.00"), D("0.00"))}


def test_without_the_partial_payment_parameter_a_partial_payment_takes_no_discount():
    result = settle_credit(
        payment("P", "297.00", JUL1), [invoice_10020()], marks=[Mark("10020")], parameters=PARTIAL_OFF
    )
    assert by_invoice(result) == {"10020": (D("297.00"), D("0.00"))}


def test_without_the_partial_payment_parameter_a_full_payment_still_takes_the_whole_discount():
    result = settle_credit(
        payment("P", "990.00", JUL1), [invoice_10020()], marks=[Mark("10020")], parameters=PARTIAL_OFF
    )
    assert by_invoice(result) == {"10020": (D("990.00"), D("10.00"))}


def test_always_takes_a_partial_discount_even_without_the_parameter():
    result = settle_credit(
        payment("P", "297.00", JUL11), [invoice_10020()], marks=[Mark("10020", None, "Always")], parameters=PARTIAL_OFF
    )
    assert by_invoice(result) == {"10020": (D("297.00"), D("3.00"))}


def test_a_payment_on_the_discount_date_itself_takes_the_discount():
    result = settle_credit(payment("P", "990.00", JUL9), [invoice_10020()], marks=[Mark("10020")])
    assert by_invoice(result) == {"10020": (D("990.00"), D("10.00"))}


def test_a_payment_the_day_after_the_discount_date_takes_none():
    result = settle_credit(payment("P", "990.00", date(2015, 7, 10)), [invoice_10020()], marks=[Mark("10020")])
    assert by_invoice(result) == {"10020": (D("990.00"), D("0.00"))}
    assert result.unused_amount == D("0.00")


# --- the brief's worked example: three marked invoices, one payment of 1,485.00 ---------------

MAY15, JUN29, JUN30 = date(2015, 5, 15), date(2015, 6, 29), date(2015, 6, 30)


def three_invoices(year: int = 2015, customer: str = "4032") -> list[OpenTransaction]:
    def d(month: int, day: int) -> date:
        return date(year, month, day)

    return [
        invoice("10040", "1000.00", d(5, 15), (d(5, 29), "1.00"), customer=customer),
        invoice("10041", "1000.00", d(6, 25), (d(7, 9), "1.00"), customer=customer),
        invoice("10042", "1000.00", d(6, 25), (d(6, 30), "2.00"), (d(7, 9), "1.00"), customer=customer),
    ]


def test_marked_invoices_settle_oldest_first_then_the_larger_discount():
    invoices = three_invoices()
    pay = payment("ARP-10040", "1485.00", JUN29, customer="4032")
    result = settle_credit(pay, invoices, marks=[Mark("10041"), Mark("10042"), Mark("10040")])
    assert [s.invoice_id for s in result.settlements] == ["10040", "10042"]
    assert by_invoice(result) == {"10040": (D("1000.00"), D("0.00")), "10042": (D("485.00"), D("9.90"))}
    after = apply_settlement([*invoices, pay], result)
    assert [t.open_amount for t in after] == [D("0.00"), D("1000.00"), D("505.10"), D("0.00")]


# --- Microsoft: "Use one payment to settle invoices that span multiple discount periods" -----


@pytest.mark.parametrize("amounts", [(None, None, None), (D("1000.00"), D("990.00"), D("980.00"))])
def test_ms_one_payment_settles_all_three_invoices_on_june_29_for_2970(amounts):
    """Use one payment to settle invoices that span multiple discount periods: 2,970.00 and 30.00 discount."""
    invoices = three_invoices(2020)
    pay = payment("ARP-10040", "2970.00", date(2020, 6, 29), customer="4032")
    marks = [Mark(i, a) for i, a in zip(["10040", "10041", "10042"], amounts)]
    result = settle_credit(pay, invoices, marks=marks)
    assert by_invoice(result) == {
        "10040": (D("1000.00"), D("0.00")),
        "10041": (D("990.00"), D("10.00")),
        "10042": (D("980.00"), D("20.00")),
    }
    assert result.cash_discount == D("30.00") and result.unused_amount == D("0.00")


def test_ms_one_payment_settles_all_three_invoices_on_july_1_for_2980():
    """Use one payment to settle invoices that span multiple discount periods: July 1 is in the 1 % period."""
    result = settle_credit(
        payment("ARP-10040", "2980.00", date(2020, 7, 1), customer="4032"),
        three_invoices(2020),
        marks=[Mark("10040"), Mark("10041"), Mark("10042")],
    )
    assert by_invoice(result) == {
        "10040": (D("1000.00"), D("0.00")),
        "10041": (D("990.00"), D("10.00")),
        "10042": (D("990.00"), D("10.00")),
    }
    assert result.unused_amount == D("0.00")


def test_ms_half_of_each_invoice_on_june_29_takes_5_00_and_10_00():
    """Use one payment to settle invoices that span multiple discount periods: partial settlement on June 29."""
    invoices = three_invoices(2020)
    pay = payment("ARP-10040", "1485.00", date(2020, 6, 29), customer="4032")
    marks = [Mark("10040", D("500.00")), Mark("10041", D("495.00")), Mark("10042", D("490.00"))]
    result = settle_credit(pay, invoices, marks=marks)
    assert by_invoice(result) == {
        "10040": (D("500.00"), D("0.00")),
        "10041": (D("495.00"), D("5.00")),
        "10042": (D("490.00"), D("10.00")),
    }
    after = apply_settlement([*invoices, pay], result)
    assert [t.open_amount for t in after] == [D("500.00"), D("500.00"), D("500.00"), D("0.00")]


def test_ms_1485_with_unchanged_amounts_to_settle_leaves_10042_at_505_10():
    """Use one payment to settle invoices that span multiple discount periods: 485.00 ÷ 0.98 × 0.02 = 9.90."""
    invoices = three_invoices(2020)
    pay = payment("ARP-10040", "1485.00", date(2020, 6, 29), customer="4032")
    marks = [Mark("10040", D("1000.00")), Mark("10041", D("990.00")), Mark("10042", D("980.00"))]
    result = settle_credit(pay, invoices, marks=marks)
    assert by_invoice(result) == {"10040": (D("1000.00"), D("0.00")), "10042": (D("485.00"), D("9.90"))}
    assert [t.open_amount for t in apply_settlement([*invoices, pay], result)][:3] == [
        D("0.00"),
        D("1000.00"),
        D("505.10"),
    ]


# --- Microsoft: "Settle a partial customer payment that has multiple discount periods" -------


def test_ms_partial_payment_in_the_2_percent_period_then_the_rest_in_the_1_percent_period():
    """Settle a partial customer payment that has multiple discount periods: 294.00 + 6.00, then 693.00 + 7.00.

    The article shows "Cash discount amount 30.00" on the second preview, which no rule of its other examples
    gives; we show the second tier's 10.00 (1 % of 1,000.00), as the partial-before-discount article does.
    """
    inv = invoice(
        "10030", "1000.00", date(2020, 6, 25), (date(2020, 6, 30), "2.00"), (date(2020, 7, 9), "1.00"), customer="4031"
    )
    first = preview_mark(inv, date(2020, 6, 28), Mark("10030", D("294.00")))
    assert (first.cash_discount_date, first.cash_discount_amount) == (date(2020, 6, 30), D("20.00"))
    assert (first.cash_discount_taken, first.cash_discount_amount_to_take) == (D("0.00"), D("6.00"))

    pay1 = payment("ARP-10030", "294.00", date(2020, 6, 28), customer="4031")
    inv = apply_settlement([inv, pay1], settle_credit(pay1, [inv], marks=[Mark("10030", D("294.00"))]))[0]
    assert inv.open_amount == D("700.00")

    second = preview_mark(inv, date(2020, 7, 8), Mark("10030", D("693.00")))
    assert (second.cash_discount_date, second.cash_discount_amount) == (date(2020, 7, 9), D("10.00"))
    assert (second.cash_discount_taken, second.cash_discount_amount_to_take) == (D("6.00"), D("7.00"))
    pay2 = payment("ARP-10031", "693.00", date(2020, 7, 8), customer="4031")
    result = settle_credit(pay2, [inv], marks=[Mark("10030", D("693.00"))])
    assert by_invoice(result) == {"10030": (D("693.00"), D("7.00"))}
    assert apply_settlement([inv, pay2], result)[0].open_amount == D("0.00")


# --- Microsoft: "Settle partial and final payments in full before the discount date" ---------


def invoice_10010() -> OpenTransaction:
    return invoice("10010", "1000.00", date(2020, 6, 25), (date(2020, 7, 9), "1.00"), customer="4028")


@pytest.mark.parametrize(
    ("amount_to_settle", "to_take", "cash"),
    [
        (None, D("10.00"), D("990.00")),
        (D("990.00"), D("10.00"), D("990.00")),
        (D("500.00"), D("5.05"), D("500.00")),  # 500.00 ÷ 0.99 × 0.01 = 5.05
        (D("495.00"), D("5.00"), D("495.00")),
    ],
)
def test_ms_settle_transactions_page_shows_the_discount_to_take(amount_to_settle, to_take, cash):
    """Settle partial and final payments in full before the discount date: the Settle transactions page."""
    preview = preview_mark(invoice_10010(), date(2020, 7, 1), Mark("10010", amount_to_settle))
    assert (preview.cash_discount_date, preview.cash_discount_amount) == (date(2020, 7, 9), D("10.00"))
    assert (preview.cash_discount_amount_to_take, preview.amount_to_settle) == (to_take, cash)


def test_ms_two_payments_of_495_within_the_period_each_take_5_00():
    """Settle partial and final payments in full before the discount date: 495.00 + 5.00 twice; the second
    preview shows the tier's 10.00, 5.00 of it taken and 5.00 to take, as the article does."""
    inv = invoice_10010()
    pay1 = payment("ARP-10010", "495.00", date(2020, 7, 1), customer="4028")
    result1 = settle_credit(pay1, [inv], marks=[Mark("10010", D("495.00"))])
    assert by_invoice(result1) == {"10010": (D("495.00"), D("5.00"))}
    inv = apply_settlement([inv, pay1], result1)[0]
    assert inv.open_amount == D("500.00")

    preview = preview_mark(inv, date(2020, 7, 8), Mark("10010", D("495.00")))
    assert preview.cash_discount_amount == D("10.00")
    assert (preview.cash_discount_taken, preview.cash_discount_amount_to_take) == (D("5.00"), D("5.00"))
    pay2 = payment("ARP-10011", "495.00", date(2020, 7, 8), customer="4028")
    result2 = settle_credit(pay2, [inv], marks=[Mark("10010")])
    assert by_invoice(result2) == {"10010": (D("495.00"), D("5.00"))}
    after = apply_settlement([inv, pay2], result2)
    assert [t.open_amount for t in after] == [D("0.00"), D("0.00")] and after[0].discount_taken == D("10.00")


# --- Microsoft (AX 2012): "Scenario: Cash discount handling for overpayments" ---------------


def test_ms_an_overpayment_takes_the_full_discount_and_leaves_the_excess_open():
    """Scenario: Cash discount handling for overpayments, scenario 2: 95.00 against 105.00 less 10.50."""
    inv = invoice("105", "105.00", date(2015, 3, 1), (date(2015, 3, 8), "10.00"))
    pay = payment("P-95", "95.00", date(2015, 3, 5))
    result = settle_credit(pay, [inv])
    assert by_invoice(result) == {"105": (D("94.50"), D("10.50"))}
    assert result.unused_amount == D("0.50")
    after = apply_settlement([inv, pay], result)
    assert [t.open_amount for t in after] == [D("0.00"), D("-0.50")]


# --- Microsoft (AX 2012): "Scenario: Automatic settlement and prioritization" ---------------


def test_ms_default_automatic_settlement_takes_the_oldest_due_date_first():
    """Scenario: Automatic settlement and prioritization, default automatic settlement: 700.00 on October 25.

    The article's numbers take no partial discount on invoice 3, so the parameter is off here. It does not
    give the interest note's due date; it is settled last, so it is given a later one.
    """
    txns = [
        invoice("10003", "500.00", date(2015, 10, 15), (date(2015, 10, 29), "2.00"), customer="2050"),
        invoice("INT", "7.00", date(2015, 10, 15), due=date(2015, 11, 30), customer="2050"),
        invoice("10002", "250.00", date(2015, 9, 1), (date(2015, 9, 15), "2.00"), customer="2050"),
        invoice("10001", "100.00", date(2015, 8, 15), (date(2015, 8, 29), "2.00"), customer="2050"),
    ]
    pay = payment("P-700", "700.00", date(2015, 10, 25), customer="2050")
    result = settle_credit(pay, txns, parameters=PARTIAL_OFF)
    assert [(s.invoice_id, s.cash_applied, s.cash_discount) for s in result.settlements] == [
        ("10001", D("100.00"), D("0.00")),
        ("10002", D("250.00"), D("0.00")),
        ("10003", D("350.00"), D("0.00")),
    ]
    after = apply_settlement([*txns, pay], result)
    assert [t.open_amount for t in after] == [D("150.00"), D("7.00"), D("0.00"), D("0.00"), D("0.00")]


def test_ms_settle_one_payment_with_two_invoices():
    """Scenario: Settle a customer payment with an invoice, option 3: 600.00 settles both invoices."""
    txns = [
        invoice("0100", "100.00", date(2015, 1, 15), customer="4050"),
        invoice("0200", "500.00", date(2015, 1, 25), customer="4050"),
    ]
    pay = payment("P", "600.00", date(2015, 2, 1), customer="4050")
    result = settle_credit(pay, txns, marks=[Mark("0100"), Mark("0200")])
    assert sum(t.open_amount for t in apply_settlement([*txns, pay], result)) == D("0.00")


# --- automatic settlement, credits and credit notes ------------------------------------------


def test_automatic_settlement_of_a_payment_takes_the_normal_discount():
    result = settle_credit(payment("P", "297.00", JUL1), [invoice_10020()])
    assert by_invoice(result) == {"10020": (D("297.00"), D("3.00"))}


def test_automatic_settlement_ignores_other_customers_other_currencies_and_closed_invoices():
    txns = [
        invoice("A", "100.00", JUN25, customer="other"),
        invoice("B", "100.00", JUN25, currency="EUR"),
        invoice("C", "100.00", JUN25, open_amount="0.00"),
        invoice("D", "100.00", JUN25),
    ]
    result = settle_credit(payment("P", "500.00", JUL1), txns)
    assert by_invoice(result) == {"D": (D("100.00"), D("0.00"))}
    assert result.unused_amount == D("400.00")


def test_an_overpayment_stays_open_as_a_credit():
    result = settle_credit(payment("P", "1200.00", date(2015, 8, 1)), [invoice_10020()], marks=[Mark("10020")])
    assert by_invoice(result) == {"10020": (D("1000.00"), D("0.00"))}
    assert result.unused_amount == D("200.00")


def test_an_underpayment_leaves_the_invoice_open_with_its_remainder():
    inv, pay = invoice_10020(), payment("P", "400.00", date(2015, 8, 1))
    after = apply_settlement([inv, pay], settle_credit(pay, [inv], marks=[Mark("10020")]))
    assert [t.open_amount for t in after] == [D("600.00"), D("0.00")]


def credit_note(voucher: str, amount: str, on: date, customer: str = "4027") -> OpenTransaction:
    return OpenTransaction(
        voucher=voucher,
        customer_account=customer,
        transaction_type="CreditNote",
        transaction_date=on,
        currency="USD",
        original_amount=-D(amount),
        open_amount=-D(amount),
        invoice_id=f"CR-{voucher}",
    )


def test_a_credit_note_settles_against_an_invoice_without_discount():
    inv, cn = invoice_10020(), credit_note("CCRN-1", "100.00", JUL1)
    result = settle_credit(cn, [inv])
    assert by_invoice(result) == {"10020": (D("100.00"), D("0.00"))}
    assert [t.open_amount for t in apply_settlement([inv, cn], result)] == [D("900.00"), D("0.00")]


def test_a_credit_note_marked_with_normal_takes_the_discount():
    result = settle_credit(credit_note("CCRN-1", "99.00", JUL1), [invoice_10020()], marks=[Mark("10020")])
    assert by_invoice(result) == {"10020": (D("99.00"), D("1.00"))}


def test_a_new_invoice_takes_waiting_credits_in_arrival_order_as_if_it_had_come_first():
    """A payment gets the discount it would have had as of its payment date; a credit note none."""
    note = credit_note("CCRN-1", "100.00", date(2015, 6, 1))
    early_payment = payment("ARP-9", "450.00", date(2015, 6, 28))
    other_customer = credit_note("CCRN-2", "100.00", date(2015, 5, 1), customer="other")
    inv = invoice_10020()
    results = settle_new_invoice(inv, [(note, None), (other_customer, None), (early_payment, None)])
    assert [
        (r.credit_voucher, r.cash_applied, r.cash_discount, r.unused_amount, r.settlement_date) for r in results
    ] == [
        ("CCRN-1", D("100.00"), D("0.00"), D("0.00"), JUN25),
        ("ARP-9", D("450.00"), D("4.55"), D("0.00"), date(2015, 6, 28)),
    ]
    txns = [inv, note, early_payment]
    for r in results:
        txns = apply_settlement(txns, r)
    assert [t.open_amount for t in txns] == [D("445.45"), D("0.00"), D("0.00")]


def test_a_new_invoice_settles_a_pending_mark_but_no_held_credit():
    marked = replace(payment("ARP-1", "500.00", JUL1), auto_settle=False)
    held_write_off = OpenTransaction(
        "WOV-1", "4027", "WriteOff", JUL1, "USD", D("-300.00"), D("-300.00"), auto_settle=False
    )
    inv = invoice_10020()
    [result] = settle_new_invoice(inv, [(held_write_off, None), (marked, Mark("10020", D("297.00")))])
    assert (result.credit_voucher, result.cash_applied, result.cash_discount) == ("ARP-1", D("297.00"), D("3.00"))
    [rejected] = settle_new_invoice(invoice("X", "10.00", JUN25, customer="other"), [(marked, Mark("X"))])
    assert rejected.settlements == () and "another customer" in rejected.rejected_marks[0].reason


def test_reservations_hold_the_amounts_to_settle_then_the_rest():
    marks = [Mark("A", D("60.00")), Mark("B", D("100.00")), Mark("C")]
    assert reservations(D("120.00"), marks) == [D("60.00"), D("60.00"), D("0.00")]
    assert reservations(D("200.00"), [Mark("A", D("60.00")), Mark("C")]) == [D("60.00"), D("140.00")]


def test_a_new_invoice_smaller_than_the_credit_leaves_the_rest_of_the_credit_open():
    pay = payment("ARP-1", "1500.00", date(2015, 8, 1))
    results = settle_new_invoice(invoice_10020(), [(pay, None)])
    assert [(r.cash_applied, r.unused_amount) for r in results] == [(D("1000.00"), D("500.00"))]


# --- rejected marks and bad payments ----------------------------------------------------------


def test_bad_marks_are_rejected_with_a_reason_and_the_good_ones_still_settle():
    txns = [
        invoice_10020(),
        invoice("OTHER", "50.00", JUN25, customer="9999"),
        invoice("CLOSED", "50.00", JUN25, open_amount="0.00"),
        invoice("EURO", "50.00", JUN25, currency="EUR"),
        invoice("ODD", "50.00", JUN25),
    ]
    marks = [
        Mark("NOPE"),
        Mark("OTHER"),
        Mark("CLOSED"),
        Mark("EURO"),
        Mark("ODD", None, "Sometimes"),
        Mark("10020", D("-1.00")),
        Mark("10020"),
        Mark("10020"),
    ]
    result = settle_credit(payment("P", "297.00", JUL1), txns, marks=marks)
    reasons = {r.invoice_id: r.reason for r in result.rejected_marks[:5]}
    assert "no invoice 'NOPE'" in reasons["NOPE"]
    assert "another customer" in reasons["OTHER"]
    assert "not open" in reasons["CLOSED"]
    assert "EUR" in reasons["EURO"]
    assert "'Sometimes' is not one of Normal, Always, Never" in reasons["ODD"]
    assert [r.reason for r in result.rejected_marks[5:]] == [
        "amount_to_settle must be positive, got -1.00",
        "invoice '10020' is marked more than once",
    ]
    assert by_invoice(result) == {"10020": (D("297.00"), D("3.00"))}


def test_when_every_mark_is_rejected_the_whole_payment_stays_open():
    result = settle_credit(payment("P", "297.00", JUL1), [invoice_10020()], marks=[Mark("NOPE")])
    assert result.settlements == () and result.unused_amount == D("297.00")
    assert len(result.rejected_marks) == 1


def test_find_marked_invoice_raises_a_rejection_the_caller_can_report():
    with pytest.raises(MarkRejected, match="another customer") as raised:
        find_marked_invoice(Mark("10020"), [invoice_10020()], customer_account="4031")
    assert raised.value.invoice_id == "10020"


def test_a_preview_of_an_invalid_use_cash_discount_is_rejected():
    with pytest.raises(MarkRejected, match="'Maybe' is not one of"):
        preview_mark(invoice_10020(), JUL1, Mark("10020", None, "Maybe"))


@pytest.mark.parametrize("amount", [D("0.00"), D("-5.00")])
def test_a_zero_or_negative_payment_is_a_domain_error(amount):
    with pytest.raises(TransactionRejected, match="must be positive"):
        new_payment("ARP-1", "4027", JUL1, amount, "USD")


def test_settling_a_credit_with_nothing_open_is_a_domain_error():
    closed = OpenTransaction("ARP-1", "4027", "Payment", JUL1, "USD", D("-10.00"), D("0.00"))
    with pytest.raises(TransactionRejected, match="nothing to settle"):
        settle_credit(closed, [invoice_10020()])


def test_applying_a_stale_settlement_is_refused():
    inv, pay = invoice_10020(), payment("P", "1000.00", date(2015, 8, 1))
    result = settle_credit(pay, [inv])
    settled = apply_settlement([inv, pay], result)
    with pytest.raises(SettlementError, match="open balance"):
        apply_settlement(settled, result)
    with pytest.raises(SettlementError, match="unknown transactions: P"):
        apply_settlement([inv], result)


def test_the_available_discount_is_the_tier_percent_of_the_open_balance():
    inv = invoice("X", "1000.00", JUN25, (JUN30, "2.00"), (JUL9, "1.00"), open_amount="700.00")
    assert [available_discount(inv, d) for d in (JUN29, JUN30, JUL1, JUL9, JUL11)] == [
        D("14.00"),
        D("14.00"),
        D("7.00"),
        D("7.00"),
        D("0.00"),
    ]
    assert available_discount(inv, JUL11, UseCashDiscount.ALWAYS) == D("7.00")
    assert available_discount(inv, JUN29, UseCashDiscount.NEVER) == D("0.00")


# --- properties ---------------------------------------------------------------------------------

START = date(2020, 1, 1)
cents = st.integers(min_value=1, max_value=2_000_000).map(lambda c: D(c) / 100)
percents = st.sampled_from(["0.50", "1.00", "1.50", "2.00", "3.00", "10.00", "33.33"]).map(D)


@st.composite
def open_invoices(draw, index: int) -> OpenTransaction:
    original = draw(cents)
    paid_share = draw(st.sampled_from([0, 0, 1, 3, 7]))  # sometimes partly settled already
    open_amount = max(round_money(original * (10 - paid_share) / 10), D("0.01"))
    on = START + timedelta(days=draw(st.integers(0, 20)))
    tier_days = sorted(draw(st.lists(st.integers(0, 30), max_size=2, unique=True)))
    tier_percents = sorted(draw(st.lists(percents, min_size=len(tier_days), max_size=len(tier_days))), reverse=True)
    tiers = tuple(DiscountTier(on + timedelta(days=d), p) for d, p in zip(tier_days, tier_percents))
    return OpenTransaction(
        f"FTI-{index}",
        "C1",
        "Invoice",
        on,
        "USD",
        original,
        open_amount,
        invoice_id=str(index),
        due_date=on + timedelta(days=30),
        cash_discounts=tiers,
        cash_discount_account="520100",
    )


@st.composite
def scenarios(draw):
    invoices = [draw(open_invoices(i)) for i in range(draw(st.integers(1, 4)))]
    pay = new_payment("P", "C1", START + timedelta(days=draw(st.integers(0, 50))), draw(cents), "USD")
    marks = None
    if draw(st.booleans()):
        chosen = draw(st.lists(st.sampled_from(invoices), min_size=1, unique_by=lambda t: t.voucher))
        marks = [
            Mark(t.invoice_id, draw(st.none() | cents), draw(st.sampled_from(list(UseCashDiscount)))) for t in chosen
        ]
    partial = draw(st.booleans())
    return invoices, pay, marks, SettlementParameters(calculate_cash_discounts_for_partial_payments=partial)


def applicable_percent(inv: OpenTransaction, on: date, use: UseCashDiscount) -> Decimal:
    """Independent restatement of which tier applies."""
    if use is UseCashDiscount.NEVER or not inv.cash_discounts:
        return D(0)
    live = [t.percent for t in inv.cash_discounts if on <= t.date]
    if live:
        return live[0]
    return inv.cash_discounts[-1].percent if use is UseCashDiscount.ALWAYS else D(0)


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_no_settlement_breaks_the_money_invariants(scenario):
    invoices, pay, marks, parameters = scenario
    result = settle_credit(pay, invoices, marks=marks, parameters=parameters)
    by_voucher = {t.voucher: t for t in invoices}
    uses = {m.invoice_id: UseCashDiscount(m.use_cash_discount) for m in marks or []}
    for s in result.settlements:
        inv = by_voucher[s.debit_voucher]
        for amount in (s.cash_applied, s.cash_discount):
            assert amount >= 0 and amount == round_money(amount)
        assert s.total_settled <= inv.open_amount, "never settles more than the open balance"
        p = applicable_percent(inv, result.settlement_date, uses.get(s.invoice_id, UseCashDiscount.NORMAL))
        assert s.cash_discount <= round_money(p / 100 * s.total_settled), "discount within its percent"
        if (
            s.cash_discount
            and not parameters.calculate_cash_discounts_for_partial_payments
            and uses.get(s.invoice_id, UseCashDiscount.NORMAL) is UseCashDiscount.NORMAL
        ):
            assert s.total_settled == inv.open_amount, "no partial discount without the parameter"
    assert result.cash_applied + result.unused_amount == -pay.open_amount, "the payment is used or stays open"
    assert result.cash_applied <= -pay.open_amount and result.unused_amount >= 0

    after = {t.voucher: t for t in apply_settlement([*invoices, pay], result)}
    for s in result.settlements:
        assert after[s.debit_voucher].open_amount == by_voucher[s.debit_voucher].open_amount - s.total_settled
    assert all(after[t.voucher].open_amount >= 0 for t in invoices), "no invoice goes negative"
    assert after["P"].open_amount == -result.unused_amount


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_preview_agrees_with_the_settlement_it_previews(data):
    inv = data.draw(open_invoices(1))
    on = START + timedelta(days=data.draw(st.integers(0, 50)))
    mark = Mark("1", data.draw(cents), data.draw(st.sampled_from(list(UseCashDiscount))))
    preview = preview_mark(inv, on, mark)
    result = settle_credit(new_payment("P", "C1", on, D("100000.00"), "USD"), [inv], marks=[mark])
    settled = result.settlements[0]
    assert (preview.amount_to_settle, preview.cash_discount_amount_to_take) == (
        settled.cash_applied,
        settled.cash_discount,
    )
    assert preview.cash_discount_amount_to_take <= preview.cash_discount_amount


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_new_invoice_never_takes_more_than_its_balance_or_the_credits(data):
    inv = data.draw(open_invoices(1))
    credits = [
        OpenTransaction(f"C{i}", "C1", "Payment", START, "USD", -a, -a)
        for i, a in enumerate(data.draw(st.lists(cents, max_size=4)))
    ]
    txns = [inv, *credits]
    for result in settle_new_invoice(inv, [(c, None) for c in credits]):
        assert result.cash_discount <= available_discount(txns[0], START), (
            "at most the discount due on the payment date"
        )
        txns = apply_settlement(txns, result)
    left = txns[0].open_amount
    assert 0 <= left <= inv.open_amount
    assert all(t.open_amount <= 0 for t in txns[1:])
    assert inv.open_amount - left >= -sum(c.open_amount for c in credits) + sum(t.open_amount for t in txns[1:])


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_automatic_settlement_over_the_debits_it_reaches_is_settlement_over_all(data):
    """The handler reads an automatic payment's debits page by page in automatic_order and stops once
    reaches_beyond says no: the first debits must then settle exactly as all of them would."""
    invoices = [data.draw(open_invoices(i)) for i in range(data.draw(st.integers(1, 8)))]
    pay = new_payment("P", "C1", START + timedelta(days=data.draw(st.integers(0, 50))), data.draw(cents), "USD")
    parameters = SettlementParameters(
        calculate_cash_discounts_for_partial_payments=data.draw(st.booleans()),
        maximum_penny_difference=data.draw(st.sampled_from([D("0.00"), D("0.05")])),
        maximum_overpayment_or_underpayment=data.draw(st.sampled_from([D("0.00"), D("5.00"), D("500.00")])),
        cash_discount_administration=data.draw(st.sampled_from(list(CashDiscountAdministration))),
    )
    ordered = automatic_order(invoices, parameters, START)
    everything = settle_payment(pay, invoices, parameters=parameters)
    stops = [n for n in range(len(ordered) + 1) if not reaches_beyond(pay, ordered[:n], parameters=parameters)]
    for n in stops:
        assert settle_payment(pay, ordered[:n], parameters=parameters) == everything
    if stops:  # and it does not stop before the last debit the payment touches
        paid = {s.debit_voucher for r in everything for s in r.settlements}
        assert all(t.voucher not in paid for t in ordered[stops[0] :])


_cents = st.decimals(min_value=Decimal("-99999.99"), max_value=Decimal("99999.99"), places=2)


@given(
    original=_cents,
    rate=st.sampled_from([Decimal(1), Decimal("1.0965"), Decimal("0.0072")]),
    open_amount=_cents,
    accounting_open=_cents,
    discount=_cents,
)
def test_with_open_is_replace_of_the_three_amounts(original, rate, open_amount, accounting_open, discount):
    t = OpenTransaction(
        "INV-1", "4027", "Invoice", date(2015, 6, 1), "EUR", original, original, "INV-1", exchange_rate=rate
    )
    changed = t.with_open(open_amount, accounting_open, discount)
    expected = replace(t, open_amount=open_amount, accounting_open_amount=accounting_open, discount_taken=discount)
    assert changed == expected
    assert vars(changed) == vars(expected)  # every field, the ones eq leaves out too
    assert t.open_amount == original  # the original is untouched
