"""Cash application as Dynamics 365 does it, on the pure domain: the worked numbers of Microsoft's settlement
articles (credit-note discounts, partial amounts, overpayments, configure settlement, prioritization, the
vendor articles mirrored for customers), and properties of the money where it is split."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kredit_settlement.domain import (
    Accounts,
    CashDiscountAdministration,
    DiscountTier,
    InvalidParameters,
    Mark,
    MarkRejected,
    MarksRejected,
    MarksUnknown,
    OpenTransaction,
    SettlementParameters,
    Unknown,
    apply_settlement,
    book,
    check_parameters,
    new_payment,
    preview_mark,
    preview_marks,
    priority_rule,
    reverse,
    settle_credit,
    settle_marked,
    settle_new_invoice,
    settle_new_transaction,
    settle_payment,
    vouchers_needed,
)
from kredit_shared.money import round_money

D = Decimal
ACCOUNTS = Accounts("520100", "520200", "520300")
SPECIFIC = SettlementParameters(calculate_cash_discounts_for_partial_payments=False)


def document(
    voucher: str,
    amount: str,
    on: date,
    *tiers: tuple[date, str],
    kind: str | None = None,
    invoice_id: str | None = None,
    due: date | None = None,
    customer: str = "4035",
) -> OpenTransaction:
    total = D(amount)
    return OpenTransaction(
        voucher=voucher,
        customer_account=customer,
        transaction_type=kind or ("Invoice" if total > 0 else "CreditNote"),
        transaction_date=on,
        currency="USD",
        original_amount=total,
        open_amount=total,
        invoice_id=invoice_id or voucher.split("-", 1)[1],
        due_date=due or on + timedelta(days=30),
        cash_discounts=tuple(DiscountTier(d, D(p), round_money(total * D(p) / 100)) for d, p in tiers),
        cash_discount_account="520100",
    )


def pay(voucher: str, amount: str, on: date, customer: str = "4035", **kw) -> OpenTransaction:
    return new_payment(voucher, customer, on, D(amount), "USD", **kw)


def open_after(transactions, results) -> dict[str, Decimal]:
    for r in results:
        transactions = apply_settlement(transactions, r)
    return {t.voucher: t.open_amount for t in transactions}


def lines(result) -> list[tuple]:
    return [(s.debit_voucher, s.cash_applied, s.cash_discount, s.difference) for s in result.settlements]


# --- Settle a partial customer payment that has discounts on credit notes (customer 4035) -------

JUN28, JUL1, JUL12 = date(2015, 6, 28), date(2015, 7, 1), date(2015, 7, 12)
CREDIT_NOTES = SettlementParameters(calculate_cash_discounts_for_credit_notes=True)


def invoice_10050() -> OpenTransaction:
    return document("FTI-10050", "1000.00", JUN28, (JUL12, "1.00"), due=date(2015, 7, 28))


def credit_note_10050() -> OpenTransaction:
    return document("CCRN-10050", "-100.00", JUN28, (JUL12, "1.00"), invoice_id="CR-10050", due=date(2015, 7, 28))


def test_the_preview_of_a_credit_note_shows_its_own_discount_of_minus_1_00_and_99_00_to_settle():
    preview = preview_mark(credit_note_10050(), JUN28, Mark("CR-10050"), CREDIT_NOTES)
    assert (preview.cash_discount_date, preview.cash_discount_amount, preview.use_cash_discount.value) == (
        JUL12,
        D("-1.00"),
        "Normal",
    )
    assert (preview.cash_discount_taken, preview.cash_discount_amount_to_take, preview.amount_to_settle) == (
        D("0.00"),
        D("-1.00"),
        D("-99.00"),
    )
    assert preview_mark(invoice_10050(), JUN28, Mark("10050"), CREDIT_NOTES).amount_to_settle == D("990.00")


def test_without_the_parameter_a_credit_note_shows_its_discount_but_takes_none():
    preview = preview_mark(credit_note_10050(), JUN28, Mark("CR-10050"), SettlementParameters())
    assert (preview.cash_discount_amount, preview.cash_discount_amount_to_take, preview.amount_to_settle) == (
        D("-1.00"),
        D("0.00"),
        D("-100.00"),
    )


def test_a_credit_note_settles_100_00_of_the_invoice_as_99_00_and_a_1_00_discount_on_each_side():
    inv, note = invoice_10050(), credit_note_10050()
    [result] = settle_marked([inv, note], [Mark("10050"), Mark("CR-10050")], "4035", JUN28, parameters=CREDIT_NOTES)
    assert result.credit_voucher == "CCRN-10050"
    assert lines(result) == [("FTI-10050", D("99.00"), D("1.00"), D("0.00"))]
    assert (result.credit_discount, result.unused_amount) == (D("1.00"), D("0.00"))
    assert open_after([inv, note], [result]) == {"FTI-10050": D("900.00"), "CCRN-10050": D("0.00")}

    booked = book(
        [result],
        [inv, note],
        "STL-1",
        {k: [f"DISC-{n}" for n in range(c)] for k, c in vouchers_needed([result]).items()},
        ACCOUNTS,
    )
    assert sorted(d.original_amount for d in booked.discounts) == [D("-1.00"), D("1.00")], "the offsetting pair"
    assert [(p.debit_voucher, p.credit_voucher, p.amount_settled) for p in booked.pairs] == [
        ("FTI-10050", "CCRN-10050", D("99.00")),
        ("DISC-1", "CCRN-10050", D("1.00")),
    ]


@pytest.mark.parametrize("invoice_first", [True, False])
def test_with_automatic_settlement_a_credit_note_takes_the_same_discounts_on_arrival(invoice_first):
    inv, note = invoice_10050(), credit_note_10050()
    if invoice_first:
        results = settle_new_transaction(note, [inv], parameters=CREDIT_NOTES)
    else:
        results = settle_new_invoice(inv, [(note, None)], parameters=CREDIT_NOTES)
    [result] = results
    assert lines(result) == [("FTI-10050", D("99.00"), D("1.00"), D("0.00"))] and result.credit_discount == D("1.00")
    assert settle_new_transaction(note, [inv])[0].cash_discount == D("0.00"), "without the parameter: none"


def test_the_vendor_mirror_a_200_00_credit_note_with_a_2_00_discount_settles_200_00_leaving_800_00():
    inv = document("FTI-10070", "1000.00", date(2015, 6, 29), (date(2015, 7, 13), "1.00"))
    note = document("CCN-10071", "-200.00", date(2015, 7, 2), (date(2015, 7, 13), "1.00"), invoice_id="CR-10071")
    [result] = settle_marked(
        [inv, note], [Mark("10070"), Mark("CR-10071")], "4035", date(2015, 7, 2), parameters=CREDIT_NOTES
    )
    assert lines(result) == [("FTI-10070", D("198.00"), D("2.00"), D("0.00"))]
    assert result.credit_discount == D("2.00")
    assert open_after([inv, note], [result]) == {"FTI-10070": D("800.00"), "CCN-10071": D("0.00")}


# --- Customer payments for a partial amount ----------------------------------------------------

JAN1 = date(2020, 1, 1)


def test_a_49_00_partial_payment_within_the_period_takes_a_1_00_discount():
    inv = document("FTI-1", "100.00", JAN1, (JAN1 + timedelta(days=10), "2.00"))
    result = settle_credit(pay("ARP-1", "49.00", JAN1 + timedelta(days=5)), [inv])
    assert lines(result) == [("FTI-1", D("49.00"), D("1.00"), D("0.00"))]


def test_a_98_00_payment_within_the_period_settles_the_100_00_invoice_with_the_2_00_discount():
    inv = document("FTI-1", "100.00", JAN1, (JAN1 + timedelta(days=10), "2.00"))
    result = settle_credit(pay("ARP-1", "98.00", JAN1 + timedelta(days=9)), [inv], parameters=SPECIFIC)
    assert lines(result) == [("FTI-1", D("98.00"), D("2.00"), D("0.00"))]


def test_a_credit_note_for_a_discounted_invoice_shows_98_00_to_settle_and_a_minus_2_00_discount():
    note = document("CCN-2", "-100.00", JAN1, (JAN1 + timedelta(days=10), "2.00"))
    preview = preview_mark(note, JAN1, Mark("2"), CREDIT_NOTES)
    assert (preview.amount_to_settle, preview.cash_discount_amount) == (D("-98.00"), D("-2.00"))


@pytest.mark.parametrize(
    ("penny", "over_under", "kind_account"),
    [(D("0.00"), D("0.10"), "520300"), (D("0.10"), D("0.00"), "520200"), (D("0.10"), D("5.00"), "520200")],
)
def test_999_90_on_1_000_00_closes_the_invoice_within_the_tolerance(penny, over_under, kind_account):
    parameters = SettlementParameters(maximum_penny_difference=penny, maximum_overpayment_or_underpayment=over_under)
    inv, payment = document("FTI-1", "1000.00", JAN1), pay("ARP-1", "999.90", JAN1)
    result = settle_credit(payment, [inv], parameters=parameters)
    assert lines(result) == [("FTI-1", D("999.90"), D("0.00"), D("0.10"))]
    assert ACCOUNTS.for_difference(result.settlements[0].difference_kind) == kind_account
    assert open_after([inv, payment], [result]) == {"FTI-1": D("0.00"), "ARP-1": D("0.00")}


def test_outside_the_tolerance_the_rest_stays_open():
    parameters = SettlementParameters(maximum_overpayment_or_underpayment=D("0.09"))
    inv, payment = document("FTI-1", "1000.00", JAN1), pay("ARP-1", "999.90", JAN1)
    assert open_after([inv, payment], [settle_credit(payment, [inv], parameters=parameters)])["FTI-1"] == D("0.10")


def test_full_settlement_of_990_00_on_1_000_00_posts_the_10_00_as_extra_cash_discount():
    inv, payment = document("FTI-1", "1000.00", JAN1), pay("ARP-1", "990.00", JAN1)
    result = settle_credit(payment, [inv], marks=[Mark("1", full_settlement=True)])
    assert lines(result) == [("FTI-1", D("990.00"), D("10.00"), D("0.00"))]
    assert result.settlements[0].cash_discount_account == "520100"
    assert open_after([inv, payment], [result]) == {"FTI-1": D("0.00"), "ARP-1": D("0.00")}


def test_full_settlement_adds_the_unpaid_rest_to_the_discount_the_payment_takes():
    inv = document("FTI-1", "1000.00", JAN1, (JAN1 + timedelta(days=14), "1.00"))
    result = settle_credit(pay("ARP-1", "980.00", JAN1), [inv], marks=[Mark("1", full_settlement=True)])
    assert lines(result) == [("FTI-1", D("980.00"), D("20.00"), D("0.00"))]


# --- Cash discounts for overpayments, scenarios 1-3; configure settlement's 100 / 3 / 98 ---------

DAY1, DAY5 = date(2015, 3, 1), date(2015, 3, 5)


def invoice_105() -> OpenTransaction:
    return document("FTI-105", "105.00", DAY1, (DAY1 + timedelta(days=7), "10.00"))


@pytest.mark.parametrize("marked", [False, True])
def test_scenario_1_specific_within_the_tolerance_takes_10_50_and_writes_off_the_0_50(marked):
    parameters = SettlementParameters(maximum_overpayment_or_underpayment=D("1.00"))
    inv, payment = invoice_105(), pay("ARP-95", "95.00", DAY5)
    result = settle_credit(payment, [inv], marks=[Mark("105")] if marked else None, parameters=parameters)
    assert lines(result) == [("FTI-105", D("95.00"), D("10.50"), D("-0.50"))]
    assert result.unused_amount == D("0.00")
    assert open_after([inv, payment], [result]) == {"FTI-105": D("0.00"), "ARP-95": D("0.00")}


def test_scenario_2_specific_above_the_tolerance_takes_10_50_and_leaves_0_50_on_the_payment():
    parameters = SettlementParameters(maximum_overpayment_or_underpayment=D("0.49"))
    inv, payment = invoice_105(), pay("ARP-95", "95.00", DAY5)
    result = settle_credit(payment, [inv], parameters=parameters)
    assert lines(result) == [("FTI-105", D("94.50"), D("10.50"), D("0.00"))]
    assert open_after([inv, payment], [result]) == {"FTI-105": D("0.00"), "ARP-95": D("-0.50")}


@pytest.mark.parametrize("tolerance", [D("0.00"), D("5.00")])
def test_scenario_3_unspecific_reduces_the_discount_to_10_00_whatever_the_tolerance(tolerance):
    parameters = SettlementParameters(
        cash_discount_administration=CashDiscountAdministration.UNSPECIFIC,
        maximum_overpayment_or_underpayment=tolerance,
    )
    inv, payment = invoice_105(), pay("ARP-95", "95.00", DAY5)
    result = settle_credit(payment, [inv], parameters=parameters)
    assert lines(result) == [("FTI-105", D("95.00"), D("10.00"), D("0.00"))]
    assert open_after([inv, payment], [result]) == {"FTI-105": D("0.00"), "ARP-95": D("0.00")}


@pytest.mark.parametrize(
    ("administration", "tolerance", "expected", "payment_left"),
    [
        ("Unspecific", "0.00", ("98.00", "2.00", "0.00"), "0.00"),
        ("Specific", "1.00", ("98.00", "3.00", "-1.00"), "0.00"),
        ("Specific", "0.00", ("97.00", "3.00", "0.00"), "-1.00"),
    ],
)
def test_configure_settlement_100_with_a_3_00_discount_paid_by_98_00(administration, tolerance, expected, payment_left):
    parameters = SettlementParameters(
        cash_discount_administration=CashDiscountAdministration(administration),
        maximum_overpayment_or_underpayment=D(tolerance),
    )
    inv, payment = (
        document("FTI-100", "100.00", DAY1, (DAY1 + timedelta(days=10), "3.00")),
        pay("ARP-98", "98.00", DAY5),
    )
    result = settle_credit(payment, [inv], parameters=parameters)
    assert lines(result) == [("FTI-100", *map(D, expected))]
    assert open_after([inv, payment], [result]) == {"FTI-100": D("0.00"), "ARP-98": D(payment_left)}


def test_unspecific_takes_an_overpayment_off_the_last_settled_discount_first():
    parameters = SettlementParameters(cash_discount_administration=CashDiscountAdministration.UNSPECIFIC)
    first = document("FTI-A", "100.00", DAY1, (DAY1 + timedelta(days=10), "2.00"))
    second = document("FTI-B", "100.00", DAY1 + timedelta(days=1), (DAY1 + timedelta(days=10), "2.00"))
    result = settle_credit(pay("ARP-1", "199.00", DAY5), [first, second], parameters=parameters)
    assert lines(result) == [("FTI-A", D("99.00"), D("1.00"), D("0.00")), ("FTI-B", D("100.00"), D("0.00"), D("0.00"))]
    beyond = settle_credit(pay("ARP-2", "201.00", DAY5), [first, second], parameters=parameters)
    assert beyond.cash_discount == D("0.00")
    assert beyond.unused_amount == D("1.00"), "an overpayment beyond every discount stays on the payment"


# --- Automatic settlement and prioritization (customer 2050) ----------------------------------

AUG15, SEP1, OCT15, OCT25 = date(2015, 8, 15), date(2015, 9, 1), date(2015, 10, 15), date(2015, 10, 25)
PRIORITY = (
    priority_rule("TransactionType", order=["PaymentFee", "CollectionLetter", "InterestNote", "Invoice"]),
    priority_rule("TransactionDate", "Ascending"),
    priority_rule("Voucher"),
)


def customer_2050() -> list[OpenTransaction]:
    return [
        document("FTI-10001", "100.00", AUG15, (date(2015, 8, 29), "2.00"), customer="2050"),
        document("FTI-10002", "250.00", SEP1, (date(2015, 9, 15), "2.00"), customer="2050"),
        document("FTI-10003", "500.00", OCT15, (date(2015, 10, 29), "2.00"), customer="2050"),
        document("FTI-INT-2050", "7.00", OCT15, kind="InterestNote", customer="2050"),
    ]


def test_with_user_defined_priority_the_interest_note_is_settled_first_and_invoice_3_keeps_157_00():
    parameters = replace(
        SPECIFIC, prioritize_settlement=True, use_priority_for_automatic_settlements=True, settlement_priority=PRIORITY
    )
    debits, payment = customer_2050(), pay("ARP-2050", "700.00", OCT25, customer="2050")
    result = settle_credit(payment, debits, parameters=parameters)
    assert [(s.debit_voucher, s.cash_applied) for s in result.settlements] == [
        ("FTI-INT-2050", D("7.00")),
        ("FTI-10001", D("100.00")),
        ("FTI-10002", D("250.00")),
        ("FTI-10003", D("343.00")),
    ]
    assert open_after([*debits, payment], [result])["FTI-10003"] == D("157.00")


def test_by_default_automatic_settlement_goes_by_due_date_and_invoice_3_keeps_150_00():
    debits = customer_2050()
    debits[3] = replace(debits[3], due_date=date(2015, 11, 30))
    payment = pay("ARP-2050", "700.00", OCT25, customer="2050")
    after = open_after([*debits, payment], [settle_credit(payment, debits, parameters=SPECIFIC)])
    assert (after["FTI-10003"], after["FTI-INT-2050"]) == (D("150.00"), D("7.00"))


def test_the_priority_is_used_only_when_automatic_settlement_is_told_to():
    parameters = replace(SPECIFIC, prioritize_settlement=True, settlement_priority=PRIORITY)
    debits = customer_2050()
    debits[3] = replace(debits[3], due_date=date(2015, 11, 30))
    result = settle_credit(pay("ARP-2050", "700.00", OCT25, customer="2050"), debits, parameters=parameters)
    assert result.settlements[-1].debit_voucher == "FTI-10003"


def test_marking_by_priority_orders_the_marks_too():
    parameters = replace(SPECIFIC, prioritize_settlement=True, settlement_priority=PRIORITY)
    marks = [Mark(i) for i in ("10001", "10002", "10003", "INT-2050")]
    result = settle_credit(
        pay("ARP-2050", "10.00", OCT25, customer="2050"), customer_2050(), marks=marks, parameters=parameters
    )
    assert [s.debit_voucher for s in result.settlements] == ["FTI-INT-2050", "FTI-10001"]


def test_parameters_that_cannot_work_name_the_field():
    with pytest.raises(InvalidParameters, match="maximum_penny_difference: the company setup names no account"):
        check_parameters(SettlementParameters(maximum_penny_difference=D("0.05")), Accounts("520100"))
    with pytest.raises(InvalidParameters, match=r"settlement_priority\.0\.order: unknown type"):
        check_parameters(
            SettlementParameters(settlement_priority=(priority_rule("TransactionType", order=["Bill"]),)), ACCOUNTS
        )
    with pytest.raises(InvalidParameters, match="settlement_priority.1: TransactionDate is listed twice"):
        check_parameters(
            SettlementParameters(
                settlement_priority=(priority_rule("TransactionDate"), priority_rule("TransactionDate"))
            ),
            ACCOUNTS,
        )


# --- the vendor articles, mirrored: a discount outside the period, a manual discount ------------

INV_DAY, DISC_DAY, LATE = date(2015, 6, 28), date(2015, 7, 12), date(2015, 7, 15)


def invoice_10030() -> OpenTransaction:
    return document("FTI-10030", "2000.00", INV_DAY, (DISC_DAY, "1.00"))


def test_always_after_the_period_takes_the_20_00_discount_and_settles_1_980_00():
    preview = preview_mark(invoice_10030(), LATE, Mark("10030", use_cash_discount="Always"))
    assert (preview.cash_discount_date, preview.cash_discount_amount) == (DISC_DAY, D("20.00"))
    assert (preview.cash_discount_amount_to_take, preview.amount_to_settle) == (D("20.00"), D("1980.00"))


def test_a_selected_date_inside_the_period_takes_the_discount_5_05_on_a_500_00_payment():
    full = preview_mark(invoice_10030(), LATE, Mark("10030"), discount_date=INV_DAY)
    assert (full.cash_discount_amount, full.cash_discount_amount_to_take, full.amount_to_settle) == (
        D("20.00"),
        D("20.00"),
        D("1980.00"),
    )
    part = preview_mark(invoice_10030(), LATE, Mark("10030", D("500.00")), discount_date=INV_DAY)
    assert (part.cash_discount_amount_to_take, part.amount_to_settle) == (D("5.05"), D("500.00"))

    inv, payment = invoice_10030(), pay("APP-10030", "500.00", LATE, discount_date=INV_DAY)
    result = settle_credit(payment, [inv], marks=[Mark("10030", D("500.00"))])
    assert lines(result) == [("FTI-10030", D("500.00"), D("5.05"), D("0.00"))]
    assert open_after([inv, payment], [result])["FTI-10030"] == D("1494.95")
    without = settle_credit(replace(payment, discount_date=None), [inv], marks=[Mark("10030", D("500.00"))])
    assert without.cash_discount == D("0.00"), "the payment date alone is after the period"


def test_a_manual_discount_of_60_00_on_1_000_00_settles_it_with_940_00():
    inv = document("FTI-10040", "1000.00", date(2020, 6, 29), (date(2020, 7, 6), "4.00"))
    mark = Mark("10040", cash_discount_amount=D("60.00"))
    preview = preview_mark(inv, date(2020, 6, 30), mark)
    assert (preview.cash_discount_amount, preview.cash_discount_amount_to_take, preview.amount_to_settle) == (
        D("60.00"),
        D("60.00"),
        D("940.00"),
    )
    payment = pay("ARP-10040", "940.00", date(2020, 6, 30))
    result = settle_credit(payment, [inv], marks=[mark])
    assert lines(result) == [("FTI-10040", D("940.00"), D("60.00"), D("0.00"))]
    assert open_after([inv, payment], [result]) == {"FTI-10040": D("0.00"), "ARP-10040": D("0.00")}


# --- marks, manual settlement, reversal ---------------------------------------------------------


def test_a_payment_may_mark_a_credit_note_and_both_pay_the_invoice():
    inv = document("FTI-1", "1000.00", JAN1)
    note = document("CCN-2", "-100.00", JAN1)
    payment = pay("ARP-3", "900.00", JAN1 + timedelta(days=1))
    results = settle_payment(payment, [inv, note], marks=[Mark("1"), Mark("2")])
    assert [(r.credit_voucher, r.cash_applied) for r in results] == [("CCN-2", D("100.00")), ("ARP-3", D("900.00"))]
    assert open_after([inv, note, payment], results) == {"FTI-1": D("0.00"), "CCN-2": D("0.00"), "ARP-3": D("0.00")}


def test_marks_with_unknown_fields_or_contradictions_are_rejected_naming_them():
    inv, payment = document("FTI-1", "1000.00", JAN1), pay("ARP-1", "100.00", JAN1)
    bad = [
        Mark("1", unknown_fields=("full_setlement",)),
        Mark("1", use_cash_discount="Never", cash_discount_amount=D("5.00")),
    ]
    result = settle_credit(payment, [inv], marks=[*bad, Mark("ARP-1")])
    assert "unknown field(s) 'full_setlement'" in result.rejected_marks[0].reason
    assert "contradicts use_cash_discount Never" in result.rejected_marks[1].reason
    assert "ARP-1 cannot settle itself" in result.rejected_marks[2].reason
    assert result.settlements == ()


def test_a_manual_settlement_is_all_or_nothing():
    inv, note = invoice_10050(), credit_note_10050()
    with pytest.raises(MarksUnknown, match="NOPE: no invoice 'NOPE' is known") as refused:
        settle_marked([inv, note], [Mark("10050"), Mark("NOPE")], "4035", JUN28)
    assert refused.value.all_unknown and isinstance(refused.value, Unknown), "answered 404"
    with pytest.raises(MarksRejected, match="nothing to settle: mark at least a credit") as refused:
        settle_marked([inv, note], [Mark("10050")], "4035", JUN28)
    assert not isinstance(refused.value, Unknown), "answered 422"
    with pytest.raises(MarkRejected):
        preview_mark(note, JUN28, Mark("CR-10050", full_settlement=True))


def test_a_preview_refuses_an_unknown_transaction_by_its_reason_alone():
    inv, note = invoice_10050(), credit_note_10050()
    [shown] = preview_marks([Mark("10050")], [inv, note], "4035", JUN28)
    assert shown.invoice_id == "10050"
    with pytest.raises(Unknown) as unknown:
        preview_marks([Mark("10050"), Mark("NOPE")], [inv, note], "4035", JUN28)
    assert str(unknown.value) == "no invoice 'NOPE' is known", "the 404's detail"
    with pytest.raises(MarkRejected, match="belongs to another customer"):
        preview_marks([Mark("10050")], [inv, note], "4027", JUN28)


def balances(transactions) -> dict[str, Decimal]:
    return {t.voucher: t.open_amount for t in transactions if t.transaction_type != "CashDiscount"}


def booked(results, transactions, settlement_id="STL-1"):
    names = {k: [f"{k[0]}{k[1]}-{n}" for n in range(c)] for k, c in vouchers_needed(results).items()}
    return book(results, transactions, settlement_id, names, ACCOUNTS)


def test_a_reversal_restores_balances_and_discount_and_settling_again_gives_the_same_result():
    inv, payment = (
        document("FTI-10020", "1000.00", date(2015, 6, 25), (date(2015, 7, 9), "1.00")),
        pay("ARP-10020", "297.00", date(2015, 7, 1)),
    )
    once = booked(settle_payment(payment, [inv], marks=[Mark("10020", D("297.00"))]), [inv, payment])
    settled = {t.voucher: t for t in once.transactions}
    assert (settled["FTI-10020"].open_amount, settled["FTI-10020"].discount_taken) == (D("700.00"), D("3.00"))

    undone = reverse(once.pairs, [*once.transactions, *once.discounts], date(2015, 7, 1))
    back = {t.voucher: t for t in undone.transactions}
    assert (back["FTI-10020"].open_amount, back["FTI-10020"].discount_taken) == (D("1000.00"), D("0.00"))
    assert back["ARP-10020"].open_amount == D("-297.00") and not back["ARP-10020"].auto_settle
    assert [(d.voucher, d.original_amount) for d in undone.discounts] == [("REV-DISC-ARP-10020-0", D("3.00"))]
    assert [(p.amount_settled, p.cash_discount_amount) for p in undone.pairs] == [(D("-297.00"), D("-3.00"))]

    again = booked(
        settle_marked(list(undone.transactions), [Mark("ARP-10020"), Mark("10020")], "4035", date(2015, 7, 1)),
        list(undone.transactions),
        "STL-2",
    )
    assert balances(again.transactions) == balances(once.transactions)


def test_a_credit_note_discount_is_reversed_by_an_opposite_pair():
    inv, note = invoice_10050(), credit_note_10050()
    once = booked(
        settle_marked([inv, note], [Mark("10050"), Mark("CR-10050")], "4035", JUN28, parameters=CREDIT_NOTES),
        [inv, note],
    )
    undone = reverse(once.pairs, [*once.transactions, *once.discounts], JUN28)
    assert balances(undone.transactions) == {"FTI-10050": D("1000.00"), "CCRN-10050": D("-100.00")}
    assert sorted(d.original_amount for d in undone.discounts) == [D("-1.00"), D("1.00")]
    assert [p.settlement_id for p in undone.pairs] == ["STL-1:1:R", "STL-1:2:R", "STL-1:2:RD"]


# --- properties -----------------------------------------------------------------------------------

cents = st.integers(min_value=1, max_value=500_000).map(lambda c: D(c) / 100)


@st.composite
def cash_applications(draw):
    on = date(2020, 1, 1)
    invoices = [
        document(
            f"FTI-{i}",
            str(draw(cents)),
            on,
            *(
                [(on + timedelta(days=10), draw(st.sampled_from(["1.00", "2.00", "3.00", "10.00"])))]
                if draw(st.booleans())
                else []
            ),
        )
        for i in range(draw(st.integers(1, 3)))
    ]
    payment = pay("ARP-P", str(draw(cents)), on + timedelta(days=draw(st.integers(0, 20))))
    marks = None
    if draw(st.booleans()):
        marks = [
            Mark(
                t.invoice_id,
                draw(st.none() | cents),
                full_settlement=draw(st.booleans()),
                cash_discount_amount=draw(st.none() | st.just(D("0.00")) | cents.filter(t.open_amount.__gt__)),
            )
            for t in invoices
        ]
    parameters = SettlementParameters(
        calculate_cash_discounts_for_partial_payments=draw(st.booleans()),
        maximum_penny_difference=draw(st.sampled_from([D("0.00"), D("0.05")])),
        maximum_overpayment_or_underpayment=draw(st.sampled_from([D("0.00"), D("1.00"), D("10.00")])),
        cash_discount_administration=draw(st.sampled_from(list(CashDiscountAdministration))),
    )
    return invoices, payment, marks, parameters


@settings(max_examples=300, deadline=None)
@given(cash_applications())
def test_every_cent_of_a_settlement_is_accounted_for(application):
    invoices, payment, marks, parameters = application
    result = settle_credit(payment, invoices, marks=marks, parameters=parameters)
    for s in result.settlements:
        assert all(a == round_money(a) for a in (s.cash_applied, s.cash_discount, s.difference))
        assert s.cash_applied > 0 and s.cash_discount >= 0
        assert abs(s.difference) <= max(
            parameters.maximum_penny_difference, parameters.maximum_overpayment_or_underpayment
        )
    assert result.cash_applied + result.unused_amount == -payment.open_amount, "the payment is used or stays open"
    after = {t.voucher: t.open_amount for t in apply_settlement([*invoices, payment], result)}
    assert all(after[t.voucher] >= 0 for t in invoices) and after["ARP-P"] <= 0
    moved = sum((t.open_amount - after[t.voucher] for t in invoices), D(0))
    assert moved == result.cash_applied + result.cash_discount + sum((s.difference for s in result.settlements), D(0))

    # Booked and reversed, every balance is back where it was.
    setup = booked([result], [*invoices, payment])
    ledger = sum((d.original_amount for d in setup.discounts), D(0))
    assert ledger == -result.cash_discount, "the discount transactions carry exactly the discounts"
    undone = reverse(setup.pairs, [*setup.transactions, *setup.discounts], payment.transaction_date)
    assert {t.voucher: t.open_amount for t in undone.transactions if t.transaction_type != "CashDiscount"} == {
        t.voucher: t.open_amount for t in [*invoices, payment]
    }


def test_a_setup_seeding_a_tolerance_without_an_account_stops_the_service_naming_it():
    from kredit_settlement.posting import SettlementSetup
    from kredit_shared.company_setup import SetupError, load_company_setup

    setup = load_company_setup()
    assert SettlementSetup.from_setup(setup).accounts == ACCOUNTS
    seeded = setup.settlement.model_copy(
        update={
            "maximum_penny_difference": D("0.05"),
            "accounts": setup.settlement.accounts.model_copy(update={"penny_difference": None}),
        }
    )
    with pytest.raises(SetupError, match="settlement.maximum_penny_difference"):
        SettlementSetup.from_setup(setup.model_copy(update={"settlement": seeded}))
