"""Settling foreign-currency items across exchange rates (docs/currencies.md, issue 17): the accounting-currency
amounts of each pair, the realized exchange loss or gain, discounts at the payment's rate, and the property that
the customer's accounting-currency AR always equals the sum of its open items' accounting amounts."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kredit_settlement import posting
from kredit_settlement.domain import (
    Accounts,
    DiscountTier,
    Mark,
    MarkRejected,
    MarksRejected,
    OpenTransaction,
    SettlementError,
    SettlementParameters,
    TransactionRejected,
    account_settlement,
    admit_transaction,
    book,
    find_marked_invoice,
    new_payment,
    payment_rate,
    reverse,
    settle_credit,
    settle_marked,
    settle_payment,
    vouchers_needed,
)
from kredit_shared.contracts import VoucherPosted
from kredit_shared.currencies import Rates

D = Decimal
JUN25, JUL1 = date(2015, 6, 25), date(2015, 7, 1)
ACCOUNTS = Accounts("520100", None, None, "USD", "710100", "810100")
SETUP = posting.SettlementSetup(
    accounting_currency="USD",
    main_accounts=frozenset({"110110", "130100", "520100", "710100", "810100"}),
    bank_account="110110",
    summary_account="130100",
    cash_discount_account="520100",
    parameters=SettlementParameters(),
    realized_gain_account="710100",
    realized_loss_account="810100",
)


def invoice(
    invoice_id: str, amount: str, rate: str, currency: str = "EUR", percent: str | None = None, on: date = JUN25
) -> OpenTransaction:
    amount_, rate_ = D(amount), D(rate)
    accounting = (amount_ * rate_).quantize(D("0.01"))
    return OpenTransaction(
        voucher=f"FTI-{invoice_id}",
        customer_account="4027",
        transaction_type="Invoice",
        transaction_date=on,
        currency=currency,
        original_amount=amount_,
        open_amount=amount_,
        invoice_id=invoice_id,
        due_date=on + timedelta(days=30),
        cash_discounts=(DiscountTier(on + timedelta(days=10), D(percent)),) if percent else (),
        cash_discount_account="520100" if percent else None,
        exchange_rate=rate_,
        accounting_original_amount=accounting,
        accounting_open_amount=accounting,
    )


def payment(voucher: str, amount: str, rate: str, currency: str = "EUR", on: date = JUL1) -> OpenTransaction:
    return new_payment(voucher, "4027", on, D(amount), currency, exchange_rate=D(rate), accounting_currency="USD")


def booked(results, transactions, accounts: Accounts = ACCOUNTS, settlement_id: str = "S"):
    needed = vouchers_needed(results, transactions, accounts)
    vouchers = {key: [f"{key[0]}{key[1]}-{n}" for n in range(count)] for key, count in needed.items()}
    return book(results, transactions, settlement_id, vouchers, accounts)


# --- the worked example ---------------------------------------------------------------------------


def test_the_d365_example_discount_at_the_payment_rate_and_the_realized_loss():
    inv = invoice("1", "1000.00", "1.10", percent="2.00")
    pay = payment("ARP-1", "980.00", "0.80")
    assert (inv.accounting_open_amount, pay.accounting_open_amount) == (D("1100.00"), D("-784.00"))
    result = settle_credit(pay, [inv], marks=[Mark("1")])
    [s] = result.settlements
    assert (s.cash_applied, s.cash_discount) == (D("980.00"), D("20.00")), "settled in EUR as today"

    [line] = account_settlement(result, [inv, pay], "USD").lines
    assert (line.debit, line.credit, line.cash_discount, line.difference) == (
        D("1100.00"),
        D("784.00"),
        D("16.00"),
        D("0.00"),
    )
    assert line.realized_loss == D("300.00")

    booking = booked([result], [inv, pay])
    [pair] = booking.pairs
    assert (pair.debit_accounting_amount, pair.credit_accounting_amount, pair.cash_discount_accounting_amount) == (
        D("1100.00"),
        D("784.00"),
        D("16.00"),
    )
    assert (pair.realized_exchange_loss, pair.exchange_account) == (D("300.00"), "810100")
    assert pair.exchange_voucher == "EXCH-ARP-1-0"
    [disc] = booking.discounts
    assert (disc.original_amount, disc.accounting_original_amount, disc.exchange_rate) == (
        D("-20.00"),
        D("-16.00"),
        D("0.80"),
    )
    after = {t.voucher: t for t in booking.transactions}
    assert after["FTI-1"].accounting_open_amount == after["ARP-1"].accounting_open_amount == D("0.00")


def test_the_vouchers_of_the_d365_example_are_in_usd_and_carry_the_euros():
    inv = invoice("1", "1000.00", "1.10", percent="2.00")
    pay = payment("ARP-1", "980.00", "0.80")
    booking = booked([settle_credit(pay, [inv], marks=[Mark("1")])], [inv, pay])
    payment_voucher = posting.voucher_of(SETUP, pay, "110110", "Payment")
    discount_voucher = posting.voucher_of(SETUP, booking.discounts[0], "520100", "Discount")
    [pair] = booking.pairs
    assert pair.exchange_voucher and pair.exchange_account
    exchange_voucher = posting.ledger_voucher(
        SETUP,
        pair.exchange_voucher,
        pair.settlement_date,
        "EUR",
        "4027",
        D("0.00"),
        -pair.realized_loss,
        pair.exchange_account,
        "loss",
    )

    def lines(v: VoucherPosted) -> list[tuple[str, Decimal, Decimal, Decimal | None]]:
        assert v.currency == "USD"
        return [(line.account, line.debit, line.credit, line.transaction_currency_amount) for line in v.lines]

    assert lines(payment_voucher) == [
        ("110110", D("784.00"), D("0.00"), D("980.00")),
        ("130100", 0, D("784.00"), D("-980.00")),
    ]
    assert lines(discount_voucher) == [("520100", D("16.00"), 0, D("20.00")), ("130100", 0, D("16.00"), D("-20.00"))]
    assert lines(exchange_voucher) == [("810100", D("300.00"), 0, D("0.00")), ("130100", 0, D("300.00"), D("0.00"))]
    assert all(line.transaction_currency == "EUR" for line in payment_voucher.lines)


def test_a_usd_settlement_has_no_accounting_fields_and_no_difference():
    inv = invoice("1", "1000.00", "1", currency="USD", percent="1.00")
    pay = new_payment("ARP-1", "4027", JUL1, D("297.00"), "USD")
    booking = booked([settle_credit(pay, [inv])], [inv, pay])
    [pair] = booking.pairs
    assert pair.debit_accounting_amount is None and pair.realized_exchange_loss is None
    assert pair.exchange_voucher is None
    after = {t.voucher: t for t in booking.transactions}
    assert after["FTI-1"].accounting_open_amount == after["FTI-1"].open_amount == D("700.00")
    voucher = posting.voucher_of(SETUP, pay, "110110", "Payment")
    assert voucher.model_dump(mode="json")["lines"][0] == {
        "account": "110110",
        "debit": "297.00",
        "credit": "0.00",
        "text": "Payment",
        "customer_account": None,
    }


def test_a_gain_when_the_payment_rate_is_higher():
    inv = invoice("1", "1000.00", "0.80")
    pay = payment("ARP-1", "1000.00", "1.10")
    booking = booked([settle_credit(pay, [inv])], [inv, pay])
    [pair] = booking.pairs
    assert (pair.debit_accounting_amount, pair.credit_accounting_amount) == (D("800.00"), D("1100.00"))
    assert (pair.realized_exchange_loss, pair.exchange_account) == (D("-300.00"), "710100")


def test_a_difference_without_exchange_accounts_is_refused():
    inv = invoice("1", "1000.00", "0.80")
    pay = payment("ARP-1", "1000.00", "1.10")
    with pytest.raises(SettlementError, match="names no exchange_accounts"):
        booked([settle_credit(pay, [inv])], [inv, pay], Accounts("520100"))


def test_partial_payments_the_last_one_closes_the_remainder_exactly():
    inv = invoice("1", "100.00", "1.2345")  # 123.45 USD
    txns = [inv]
    falls = []
    for n, (amount, rate) in enumerate([("33.33", "1.30"), ("33.33", "1.30"), ("33.34", "1.10")]):
        pay = payment(f"P{n}", amount, rate)
        booking = booked([settle_credit(pay, txns)], [*txns, pay])
        [pair] = booking.pairs
        falls.append(pair.debit_accounting_amount)
        assert pair.credit_accounting_amount == -pay.accounting_original_amount
        txns = [t for t in booking.transactions if t.voucher == "FTI-1"]
    assert falls == [D("41.15"), D("41.15"), D("41.15")]
    assert sum(falls) == D("123.45") and txns[0].open_amount == txns[0].accounting_open_amount == 0


def test_jpy_has_no_minor_unit_the_discount_is_whole_yen():
    inv = invoice("1", "1055", "0.0067", currency="JPY", percent="2.00")
    pay = payment("P", "1034", "0.0070", currency="JPY")
    result = settle_credit(pay, [inv], marks=[Mark("1")])
    [s] = result.settlements
    assert (s.cash_applied, s.cash_discount) == (D("1034"), D("21")), "2 % of JPY 1,055 is JPY 21"
    [line] = account_settlement(result, [inv, pay], "USD").lines
    assert (line.debit, line.credit, line.cash_discount) == (D("7.07"), D("7.24"), D("0.15"))
    assert line.realized_loss == D("-0.32")


def test_a_credit_notes_own_discount_is_at_its_rate_and_closes_it():
    note = OpenTransaction(
        "CCN-1",
        "4027",
        "CreditNote",
        JUN25,
        "EUR",
        D("-100.00"),
        D("-100.00"),
        invoice_id="CN1",
        cash_discounts=(DiscountTier(date(2015, 7, 5), D("2.00")),),
        cash_discount_account="520100",
        exchange_rate=D("1.2"),
        accounting_original_amount=D("-120.00"),
        accounting_open_amount=D("-120.00"),
    )
    inv = invoice("1", "500.00", "1.00")
    parameters = SettlementParameters(calculate_cash_discounts_for_credit_notes=True)
    result = settle_credit(note, [inv], settlement_date=JUL1, parameters=parameters)
    assert result.credit_discount == D("2.00")
    booking = booked([result], [inv, note])
    own = next(d for d in booking.discounts if d.original_amount > 0)
    assert own.accounting_original_amount == D("2.40")
    after = {t.voucher: t for t in booking.transactions}
    assert after["CCN-1"].accounting_open_amount == 0
    assert sum(p.realized_loss for p in booking.pairs) == D("98.00") - D("117.60")


def test_marks_on_items_of_another_currency_are_refused_with_a_reason():
    usd = invoice("USD1", "100.00", "1", currency="USD")
    eur = invoice("EUR1", "100.00", "1.10")
    pay = payment("P", "100.00", "1.05")
    result = settle_credit(pay, [usd, eur], marks=[Mark("USD1"), Mark("EUR1")])
    assert [s.debit_voucher for s in result.settlements] == ["FTI-EUR1"]
    [rejected] = result.rejected_marks
    assert rejected.invoice_id == "USD1" and "is in USD, the credit in EUR" in rejected.reason
    # Automatic settlement only takes debits of the payment's currency.
    [auto] = settle_payment(payment("P2", "500.00", "1.05"), [usd, eur])
    assert [s.debit_voucher for s in auto.settlements] == ["FTI-EUR1"]


def test_a_payment_without_a_rate_is_rejected_with_the_reason():
    rates = Rates("USD")
    assert payment_rate("P", "USD", JUL1, None, rates) == 1
    assert payment_rate("P", "EUR", JUL1, D("0.8"), rates) == D("0.8")
    with pytest.raises(TransactionRejected, match="states no exchange_rate, and there is no EUR rate for 2015-07-01"):
        payment_rate("P", "EUR", JUL1, None, rates)


def test_intake_refuses_a_rate_in_the_accounting_currency_and_a_wrong_accounting_sign():
    odd = invoice("1", "100.00", "1.10", currency="USD")
    with pytest.raises(TransactionRejected, match="accounting currency USD"):
        admit_transaction(odd, None, False, SettlementParameters(), "USD")
    flipped = invoice("2", "100.00", "1.10").__class__(
        **{**vars(invoice("2", "100.00", "1.10")), "accounting_original_amount": D("-110.00")}
    )
    with pytest.raises(TransactionRejected, match="wrong sign in the accounting currency"):
        admit_transaction(flipped, None, False, SettlementParameters(), "USD")
    assert admit_transaction(invoice("3", "100.00", "1.10"), None, False, SettlementParameters(), "USD")


def test_reversal_restores_the_accounting_balances_and_reverses_the_loss():
    inv = invoice("1", "1000.00", "1.10", percent="2.00")
    pay = payment("ARP-1", "980.00", "0.80")
    booking = booked([settle_credit(pay, [inv], marks=[Mark("1")])], [inv, pay])
    undone = reverse(booking.pairs, [*booking.transactions, *booking.discounts], JUL1)
    [opposite] = undone.pairs
    assert (opposite.realized_exchange_loss, opposite.debit_accounting_amount) == (D("-300.00"), D("-1100.00"))
    assert opposite.exchange_voucher == "REV-EXCH-ARP-1-0"
    after = {t.voucher: t for t in undone.transactions}
    assert after["FTI-1"].accounting_open_amount == D("1100.00")
    assert after["ARP-1"].accounting_open_amount == D("-784.00")
    [rev_disc] = undone.discounts
    assert rev_disc.accounting_original_amount == D("16.00")


# --- the property -----------------------------------------------------------------------------------

rates_ = st.decimals(D("0.0100"), D("250.0000"), places=4)
amounts = st.integers(1, 500_000).map(lambda c: D(c).scaleb(-2))


def _ar(voucher: VoucherPosted) -> Decimal:
    """What a voucher does to the customer's AR (the summary account), and it balances."""
    assert sum(line.debit for line in voucher.lines) == sum(line.credit for line in voucher.lines)
    return sum((line.debit - line.credit for line in voucher.lines if line.account == "130100"), D(0))


@settings(max_examples=150, deadline=None)
@given(
    invoices=st.lists(st.tuples(amounts, rates_, st.sampled_from([None, "1.00", "2.00"])), min_size=1, max_size=4),
    payments=st.lists(st.tuples(amounts, rates_, st.booleans()), min_size=1, max_size=5),
    tolerance=st.sampled_from(["0.00", "0.05", "5.00"]),
)
def test_the_customers_ar_equals_its_open_accounting_amounts_after_any_settlements(invoices, payments, tolerance):
    accounts = Accounts("520100", "520300", "520400", "USD", "710100", "810100")
    parameters = SettlementParameters(
        maximum_penny_difference=D(tolerance), maximum_overpayment_or_underpayment=D(tolerance)
    )
    txns = [invoice(f"I{n}", str(a), str(r), percent=p) for n, (a, r, p) in enumerate(invoices)]
    ar = sum((posting.voucher_of(SETUP, t, "401100", "invoice").lines[0].debit for t in txns), D(0))
    realized = D(0)
    everything: list[OpenTransaction] = list(txns)
    for n, (amount, rate, marked) in enumerate(payments):
        pay = payment(f"P{n}", str(amount), str(rate), on=JUL1 + timedelta(days=n * 3))
        ar += _ar(posting.voucher_of(SETUP, pay, "110110", "payment"))
        open_debits = [t for t in txns if t.open_amount > 0]
        marks = [Mark(t.invoice_id or "") for t in open_debits[:2]] if marked and open_debits else None
        results = settle_payment(pay, txns, marks=marks, parameters=parameters)
        booking = booked(results, [*txns, pay], accounts, f"S{n}")
        for d in booking.discounts:
            ar += _ar(posting.voucher_of(SETUP, d, "520100", "discount"))
        for p in booking.pairs:
            assert (
                p.debit_accounting
                == p.credit_accounting + p.cash_discount_accounting + p.difference_accounting + p.realized_loss
            )
            realized += p.realized_loss
            for amount_, account in (
                (p.difference_accounting, p.difference_account),
                (p.realized_loss, p.exchange_account),
            ):
                if amount_:
                    assert account is not None
                    ar += _ar(posting.ledger_voucher(SETUP, "V", JUL1, "EUR", "4027", D(0), -amount_, account, "x"))
        txns = list(booking.transactions)
        everything = [*[t for t in everything if t.voucher not in {x.voucher for x in txns}], *txns, *booking.discounts]
        for t in txns:
            assert t.open_amount * t.accounting_open_amount >= 0, f"{t.voucher}: the two balances on one side"
            if t.open_amount == 0:
                assert t.accounting_open_amount == 0, f"{t.voucher} closed in EUR but not in USD"
    assert ar == sum((t.accounting_open_amount for t in everything), D(0))


# --- three decimals (KWD) -------------------------------------------------------------------------


def test_a_kwd_payment_with_discount_settles_to_the_fils_and_books_to_the_cent():
    """KWD 1,000.125 at 3.25 with 2 % (20.0025 -> 20.003 fils, half-up); KWD 980.122 paid at 3.20."""
    inv = invoice("K1", "1000.125", "3.25", currency="KWD", percent="2.00")
    pay = payment("ARP-K1", "980.122", "3.20", currency="KWD")
    assert str(pay.original_amount) == "-980.122"
    assert (inv.accounting_open_amount, pay.accounting_open_amount) == (D("3250.41"), D("-3136.39"))  # 3136.3904
    result = settle_credit(pay, [inv], marks=[Mark("K1")])
    [s] = result.settlements
    assert (str(s.cash_applied), str(s.cash_discount)) == ("980.122", "20.003")
    [line] = account_settlement(result, [inv, pay], "USD").lines
    assert (line.debit, line.credit, line.cash_discount) == (D("3250.41"), D("3136.39"), D("64.01"))  # 64.0096
    assert line.realized_loss == D("50.01")
    booking = booked([result], [inv, pay])
    [disc] = booking.discounts
    assert (str(disc.original_amount), disc.accounting_original_amount) == ("-20.003", D("-64.01"))
    after = {t.voucher: t for t in booking.transactions}
    assert after["FTI-K1"].open_amount == after["ARP-K1"].open_amount == 0
    assert after["FTI-K1"].accounting_open_amount == after["ARP-K1"].accounting_open_amount == D("0.00")


def test_a_person_marks_a_kwd_item_to_the_fils():
    """Settling by hand (HTTP) names no currency: the marks' amounts are checked against the item's, so a KWD
    invoice takes three decimals where a USD one takes two (issue 13)."""
    inv = invoice("K2", "100.000", "3.25", currency="KWD")
    pay = payment("ARP-K2", "100.000", "3.25", currency="KWD")
    [result] = settle_marked([inv, pay], [Mark("K2", D("40.125")), Mark("ARP-K2")], "4027", JUL1)
    assert str(result.settlements[0].cash_applied) == "40.125"
    assert find_marked_invoice(Mark("K2", D("1.125"), cash_discount_amount=D("0.001")), [inv], "4027") == inv


@pytest.mark.parametrize(
    ("currency", "amount", "why"),
    [
        ("USD", "1.005", "amount_to_settle 1.005 USD: the currency has 2 decimals"),
        ("JPY", "1.5", "amount_to_settle 1.5 JPY: the currency has no decimals"),
        ("KWD", "1.0005", "amount_to_settle 1.0005 KWD: the currency has 3 decimals"),
    ],
)
def test_a_mark_with_more_decimals_than_the_items_currency_is_refused(currency, amount, why):
    inv = invoice("X1", "100.00", "1.00", currency=currency)
    pay = payment("ARP-X1", "100.00", "1.00", currency=currency)
    with pytest.raises(MarkRejected, match=why):
        find_marked_invoice(Mark("X1", D(amount)), [inv], "4027")
    with pytest.raises(MarksRejected, match=f"X1: {why}"):
        settle_marked([inv, pay], [Mark("X1", D(amount)), Mark("ARP-X1")], "4027", JUL1)
    with pytest.raises(MarkRejected, match="cash_discount_amount 1.5 JPY"):
        find_marked_invoice(Mark("X1", cash_discount_amount=D("1.5")), [invoice("X1", "100", "1", "JPY")], "4027")


def test_a_jpy_payment_stays_in_whole_yen():
    pay = payment("ARP-J1", "1055", "0.0091", currency="JPY")
    assert str(pay.original_amount) == "-1055.00"
