"""Foreign currencies in collections (docs/currencies.md): every transaction and its open balance in both
currencies, aged balances and credit in the accounting currency, write-offs at the write-off date's rate
with the exchange difference to realized gain or loss. Pure, no I/O.

Sources: Microsoft, Dynamics 365 Finance, "Cash discounts", example "Exchange rates for cash discounts"
(invoice EUR 1,000.00 at 1.10, payment EUR 980.00 at 0.80 with EUR 20.00 discount: 300.00 realized loss).
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kredit_collections.credit_domain import credit_balance, disputed_amounts
from kredit_collections.domain import (
    CustomerTransaction,
    NoWriteOffRate,
    TransactionBalance,
    WriteOffExchange,
    WriteOffSettings,
    age_balances,
    build_write_off_journal,
    posted_journal_differences,
    settlement_deltas,
    transaction_balances,
    write_off_exchange,
)
from kredit_collections.ui import money
from kredit_shared.company_setup import WriteOffParameters, load_company_setup
from kredit_shared.contracts import CustomerTransactionPosted, GeneralJournalLine, OpenItemsSettled
from kredit_shared.currencies import to_accounting

SETUP = load_company_setup()
SETTINGS = WriteOffSettings.from_setup(SETUP)
WITH_TAX = WriteOffSettings.from_setup(
    SETUP, WriteOffParameters(journal_name="WriteOff", reason_code="BadDebt", separate_sales_tax=True)
)
D = Decimal
ZERO = D("0.00")
ON = date(2026, 3, 1)
GAIN, LOSS = "710100", "810100"


def eur(voucher: str, amount: str, rate: str, *, type: str = "Invoice", account: str = "4027", tax: str = "0.00"):
    value = D(amount)
    return CustomerTransaction(
        voucher=voucher,
        transaction_type=type,
        customer_account=account,
        transaction_date=date(2026, 1, 15),
        amount=value,
        currency="EUR",
        due_date=date(2026, 2, 14) if value > 0 else None,
        sales_tax_amount=D(tax),
        exchange_rate=D(rate),
        accounting_currency_amount=to_accounting(value, D(rate), "USD"),
    )


def settled(sid: str, debit: str, credit: str, amount: str, **accounting: str) -> OpenItemsSettled:
    return OpenItemsSettled(
        settlement_id=sid,
        customer_account="4027",
        settlement_date=date(2026, 2, 1),
        currency="EUR",
        debit_voucher=debit,
        credit_voucher=credit,
        amount_settled=D(amount),
        **{k: D(v) for k, v in accounting.items()},
    )


# --- the read model: both amounts --------------------------------------------------------------------------


def test_a_transaction_keeps_its_rate_and_accounting_amount_from_the_message():
    event = CustomerTransactionPosted(
        voucher="FTI-1",
        transaction_type="Invoice",
        customer_account="4027",
        transaction_date=date(2026, 1, 15),
        amount=D("1000.00"),
        currency="EUR",
        exchange_rate=D("1.10"),
        accounting_currency_amount=D("1100.00"),
    )
    t = CustomerTransaction.from_event(event)
    assert (t.amount, t.exchange_rate, t.accounting_amount) == (D("1000.00"), D("1.10"), D("1100.00"))
    usd = CustomerTransaction.from_event(event.model_copy(update={"exchange_rate": None, "currency": "USD"}))
    assert usd.accounting_amount == D("1100.00")  # the message's accounting amount wins when given
    plain = CustomerTransaction.from_event(
        event.model_copy(update={"exchange_rate": None, "accounting_currency_amount": None, "currency": "USD"})
    )
    assert (plain.exchange_rate, plain.accounting_amount) == (None, D("1000.00"))  # absent: the amount itself


INVOICE = eur("FTI-1", "1000.00", "1.10")  # 1,100.00 USD
PAYMENT = eur("ARP-1", "-980.00", "0.80", type="Payment")  # -784.00 USD
DISCOUNT = eur("DISC-1", "-20.00", "0.80", type="CashDiscount")  # -16.00 USD
ARTICLE = settled(
    "S-1",
    "FTI-1",
    "ARP-1",
    "980.00",
    cash_discount_amount="20.00",
    debit_accounting_amount="1100.00",
    credit_accounting_amount="784.00",
    cash_discount_accounting_amount="16.00",
    realized_exchange_loss="300.00",
).model_copy(update={"cash_discount_voucher": "DISC-1"})


def test_the_articles_settlement_moves_each_accounting_balance_by_its_own_rate():
    assert [(d.voucher, d.amount, d.accounting) for d in settlement_deltas(ARTICLE)] == [
        ("FTI-1", D("-1000.00"), D("-1100.00")),
        ("ARP-1", D("980.00"), D("784.00")),
        ("DISC-1", D("20.00"), D("16.00")),
    ]
    balances = transaction_balances([INVOICE, PAYMENT, DISCOUNT], settlement_deltas(ARTICLE))
    assert [(b.voucher, b.balance, b.accounting) for b in balances] == [
        ("ARP-1", ZERO, ZERO),
        ("DISC-1", ZERO, ZERO),
        ("FTI-1", ZERO, ZERO),
    ]


def test_before_the_settlement_the_customer_owes_the_accounting_amounts_in_the_accounting_currency():
    rows = age_balances([INVOICE, PAYMENT, DISCOUNT], [], date(2026, 2, 1), SETUP.aging_buckets, "USD")
    assert [(r.currency, r.balance) for r in rows] == [("USD", D("300.00"))]  # 1,100.00 - 784.00 - 16.00
    balances = transaction_balances([INVOICE, PAYMENT, DISCOUNT], [])
    assert credit_balance(balances, "USD") == D("300.00")


def test_a_foreign_customer_ages_in_one_accounting_currency_row_with_its_usd_items():
    usd = CustomerTransaction("CIV-1", "Invoice", "4027", date(2026, 1, 15), D("50.00"), "USD")
    partial = settled(
        "S-2", "FTI-1", "ARP-1", "500.00", debit_accounting_amount="550.00", credit_accounting_amount="400.00"
    )
    rows = age_balances(
        [INVOICE, PAYMENT, usd], settlement_deltas(partial), date(2026, 3, 20), SETUP.aging_buckets, "USD"
    )
    # FTI-1: EUR 500.00 open = 550.00 USD (31-60 days past due); ARP-1: EUR -480.00 = -384.00 USD; CIV-1 50.00.
    assert [(r.customer_account, r.currency, r.balance) for r in rows] == [("4027", "USD", D("216.00"))]
    assert rows[0].buckets["31-60"] == D("550.00")
    disputed = disputed_amounts(transaction_balances([INVOICE], settlement_deltas(partial)), {"FTI-1"}, "USD")
    assert disputed == {("4027", "USD"): D("550.00")}


def test_settlement_deltas_commute_in_both_currencies():
    deltas = settlement_deltas(ARTICLE)
    forward = transaction_balances([INVOICE, PAYMENT, DISCOUNT], deltas)
    backward = transaction_balances([DISCOUNT, PAYMENT, INVOICE], list(reversed(deltas)))
    assert forward == backward


# Random customers: EUR and USD items at random rates, settled pair by pair as settlement does
# (docs/currencies.md): the debit falls at its own rate, all that is left when it closes; the credit rises
# at its rate, all that is left when it closes; the rest is the realized loss.

rates = st.integers(1, 300_000).map(lambda n: D(n) / 10_000)  # 0.0001 .. 30.0000
amounts = st.integers(1, 10**7).map(lambda c: D(c) / 100)


@st.composite
def histories(draw):
    transactions: list[CustomerTransaction] = []
    for n in range(draw(st.integers(1, 6))):
        currency = draw(st.sampled_from(["EUR", "USD"]))
        sign = draw(st.sampled_from([1, -1]))
        amount = sign * draw(amounts)
        rate = draw(rates) if currency == "EUR" else None
        transactions.append(
            CustomerTransaction(
                f"V{n}",
                "Invoice" if sign > 0 else "Payment",
                draw(st.sampled_from(["A", "B"])),
                date(2026, 1, 1 + n),
                amount,
                currency,
                due_date=date(2026, 1, 1 + n),
                exchange_rate=rate,
                accounting_currency_amount=to_accounting(amount, rate, "USD") if rate is not None else None,
            )
        )
    open_ = {t.voucher: (t.amount, t.accounting_amount) for t in transactions}
    events = []
    for n in range(draw(st.integers(0, 8))):
        debits = [t for t in transactions if open_[t.voucher][0] > 0]
        if not debits:
            break
        debit = draw(st.sampled_from(debits))
        credits = [
            t
            for t in transactions
            if open_[t.voucher][0] < 0 and t.customer_account == debit.customer_account and t.currency == debit.currency
        ]
        if not credits:
            continue
        credit = draw(st.sampled_from(credits))
        most = min(open_[debit.voucher][0], -open_[credit.voucher][0])
        amount = draw(st.integers(1, int(most * 100)).map(lambda c: D(c) / 100))

        def moved(t: CustomerTransaction, part: Decimal) -> Decimal:
            left, left_accounting = open_[t.voucher]
            if part == abs(left):  # all that is left when it closes (whatever rounding left it at)
                return left_accounting if left > 0 else -left_accounting
            return to_accounting(part, t.exchange_rate or D(1), "USD")

        debit_accounting, credit_accounting = moved(debit, amount), moved(credit, amount)
        for t, sign, accounting in ((debit, -1, debit_accounting), (credit, 1, credit_accounting)):
            left, left_accounting = open_[t.voucher]
            open_[t.voucher] = (left + sign * amount, left_accounting + sign * accounting)
        foreign = debit.currency == "EUR"
        events.append(
            OpenItemsSettled(
                settlement_id=f"S{n}",
                customer_account=debit.customer_account,
                settlement_date=date(2026, 2, 1),
                currency=debit.currency,
                debit_voucher=debit.voucher,
                credit_voucher=credit.voucher,
                amount_settled=amount,
                debit_accounting_amount=debit_accounting if foreign else None,
                credit_accounting_amount=credit_accounting if foreign else None,
                realized_exchange_loss=debit_accounting - credit_accounting if foreign else None,
            )
        )
    return transactions, events, open_


@settings(max_examples=500)
@given(histories(), st.randoms(use_true_random=False))
def test_a_customers_accounting_balance_is_the_sum_of_its_open_items_in_any_order(history, rnd: random.Random):
    transactions, events, expected = history
    deltas = [d for e in events for d in settlement_deltas(e)]
    rnd.shuffle(deltas)  # messages arrive in any order
    rnd.shuffle(transactions)
    balances = transaction_balances(transactions, deltas)
    assert {b.voucher: (b.balance, b.accounting) for b in balances} == expected
    for b in balances:
        if b.balance == 0:
            assert b.accounting == 0  # an item closes in both currencies at once
    aged = {
        r.customer_account: r for r in age_balances(transactions, deltas, date(2026, 6, 1), SETUP.aging_buckets, "USD")
    }
    open_items: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for b in balances:
        open_items[b.transaction.customer_account] += b.accounting
    for account in ("A", "B"):
        own = [b for b in balances if b.transaction.customer_account == account]
        assert credit_balance(own, "USD") == open_items[account]
        assert (aged[account].balance if account in aged else ZERO) == open_items[account]
        if account in aged:
            assert aged[account].currency == "USD"
            assert sum(aged[account].buckets.values(), ZERO) == open_items[account]


# --- write-offs in a foreign currency ----------------------------------------------------------------------


def exchange(rate: str) -> WriteOffExchange:
    return WriteOffExchange("USD", D(rate), GAIN, LOSS)


def write_off(items, settings=SETTINGS, rate: str | None = "1.20"):
    return build_write_off_journal(
        items,
        settings,
        request_id="wo-eur",
        transaction_date=ON,
        exchange=exchange(rate) if rate is not None else None,
    )


def booked(line: GeneralJournalLine) -> Decimal:
    """The line in the accounting currency, as ledger-posting books it (debit +): each side × rate, rounded."""
    rate = line.exchange_rate or D(1)
    return to_accounting(line.debit, rate, "USD") - to_accounting(line.credit, rate, "USD")


def rows(journal):
    return [
        (l.account_type, l.account, l.currency, l.debit, l.credit, l.exchange_rate, len(l.settles))
        for l in journal.lines
    ]


def test_a_eur_invoice_booked_at_1_10_written_off_at_1_20_posts_a_realized_gain():
    journal = write_off(transaction_balances([eur("FTI-1", "100.00", "1.10")], []))
    assert rows(journal) == [
        ("Customer", "4027", "EUR", ZERO, D("100.00"), D("1.20"), 1),
        ("Ledger", "618900", "EUR", D("100.00"), ZERO, D("1.20"), 0),
        ("Customer", "4027", "USD", D("10.00"), ZERO, None, 0),  # receivables fall by 110.00, not 120.00
        ("Ledger", GAIN, "USD", ZERO, D("10.00"), None, 0),
    ]
    [ref] = journal.lines[0].settles
    assert (ref.voucher, ref.amount, ref.accounting_amount) == ("FTI-1", D("100.00"), D("110.00"))
    assert sum((booked(l) for l in journal.lines), ZERO) == 0
    assert sum((booked(l) for l in journal.lines if l.account_type == "Customer"), ZERO) == D("-110.00")
    assert {l.reason_code for l in journal.lines} == {"BadDebt"}


def test_written_off_at_a_lower_rate_the_difference_is_a_realized_loss():
    journal = write_off(transaction_balances([eur("FTI-1", "100.00", "1.10")], []), rate="0.90")
    assert rows(journal)[2:] == [
        ("Customer", "4027", "USD", ZERO, D("20.00"), None, 0),
        ("Ledger", LOSS, "USD", D("20.00"), ZERO, None, 0),
    ]


def test_at_the_booking_rate_there_is_no_difference_line():
    journal = write_off(transaction_balances([eur("FTI-1", "100.00", "1.10")], []), rate="1.10")
    assert [(l.account_type, l.currency) for l in journal.lines] == [("Customer", "EUR"), ("Ledger", "EUR")]


def test_a_partly_settled_item_writes_off_its_accounting_balance():
    partial = settled(
        "S-1", "FTI-1", "ARP-1", "40.00", debit_accounting_amount="44.00", credit_accounting_amount="48.00"
    )
    items = [b for b in transaction_balances([eur("FTI-1", "100.00", "1.10")], settlement_deltas(partial))]
    journal = write_off(items, rate="1.25")  # EUR 60.00 open, 66.00 USD; at 1.25 worth 75.00
    assert journal.lines[0].settles[0].accounting_amount == D("66.00")
    assert rows(journal)[2:] == [
        ("Customer", "4027", "USD", D("9.00"), ZERO, None, 0),
        ("Ledger", GAIN, "USD", ZERO, D("9.00"), None, 0),
    ]


def test_in_the_accounting_currency_the_journal_is_exactly_as_before():
    usd = CustomerTransaction("CIV-1", "Invoice", "4027", date(2026, 1, 15), D("100.00"), "USD")
    journal = write_off(transaction_balances([usd], []), rate=None)
    assert write_off_exchange(SETUP, "USD", None, ON) is None
    assert [l.exchange_rate for l in journal.lines] == [None, None]
    assert [s.accounting_currency_amount for s in journal.lines[0].settles] == [None]
    assert "exchange_rate" not in journal.model_dump_json() and "accounting_currency" not in journal.model_dump_json()


def test_a_foreign_write_off_needs_a_rate_and_the_exchange_accounts():
    assert write_off_exchange(SETUP, "EUR", D("1.20"), ON) == exchange("1.20")
    with pytest.raises(NoWriteOffRate, match="no EUR rate for 2026-03-01"):
        write_off_exchange(SETUP, "EUR", None, ON)
    with pytest.raises(NoWriteOffRate, match="no exchange_accounts"):
        write_off_exchange(replace_setup(exchange_accounts=None), "EUR", D("1.20"), ON)


def replace_setup(**changes):
    return SETUP.model_copy(update=changes)


def test_a_posted_journal_with_another_rate_or_accounting_amount_is_not_the_one_requested():
    journal = write_off(transaction_balances([eur("FTI-1", "100.00", "1.10")], []))
    lines = list(journal.lines)
    assert posted_journal_differences(lines, lines) == []
    other_rate = [lines[0].model_copy(update={"exchange_rate": D("1.30")}), *lines[1:]]
    assert posted_journal_differences(lines, other_rate)
    ref = lines[0].settles[0].model_copy(update={"accounting_currency_amount": D("1.00")})
    other_amount = [lines[0].model_copy(update={"settles": [ref]}), *lines[1:]]
    assert posted_journal_differences(lines, other_amount)


@st.composite
def foreign_items(draw) -> list[TransactionBalance]:
    items = []
    for n in range(draw(st.integers(1, 6))):
        sign = draw(st.sampled_from([1, -1]))
        amount = sign * draw(amounts)
        rate = draw(rates)
        balance = sign * draw(st.integers(1, int(abs(amount) * 100))) * D("0.01")
        tax = sign * draw(st.integers(0, int(abs(amount) * 100))) * D("0.01")
        t = eur(f"V{n}", str(amount), str(rate), tax=str(tax))
        accounting = t.accounting_amount if balance == amount else to_accounting(balance, rate, "USD")
        items.append(TransactionBalance(t, balance, accounting))
    return items


@settings(max_examples=300)
@given(foreign_items(), rates, st.booleans())
def test_every_foreign_write_off_balances_in_the_accounting_currency(items, rate, separate_tax):
    journal = write_off(items, WITH_TAX if separate_tax else SETTINGS, rate=str(rate))
    written_off = sum((i.accounting for i in items), ZERO)
    groups: dict[str | None, Decimal] = defaultdict(lambda: ZERO)
    for line in journal.lines:
        groups[line.voucher_group] += booked(line)
    assert set(groups.values()) == {ZERO}  # every voucher balances in the accounting currency
    customer = [l for l in journal.lines if l.account_type == "Customer"]
    assert sum((booked(l) for l in customer), ZERO) == -written_off  # receivables fall by exactly that
    settling = [l for l in customer if l.settles]
    assert all(l.currency == "EUR" and l.exchange_rate == rate for l in settling)
    assert all(not l.settles and l.currency == "USD" and l.exchange_rate is None for l in customer if l not in settling)
    assert sum((s.accounting_amount for l in settling for s in l.settles), ZERO) == written_off
    assert sum((l.credit - l.debit for l in settling), ZERO) == sum((i.balance for i in items), ZERO)
    for line in journal.lines:
        assert bool(line.debit) != bool(line.credit)  # never zero, never both sides
        if line.account_type == "Ledger" and line.currency == "USD":
            assert line.account == (LOSS if line.debit else GAIN)
        elif line.account_type == "Ledger":
            assert line.exchange_rate == rate and line.account in ("618900", "222200")


def test_the_workspace_shows_amounts_to_their_currencys_precision_and_a_sum_of_nothing_as_zero():
    assert money(Decimal("1000.125")) == "1,000.125"  # KWD keeps its fils
    assert money(Decimal("1000.10")) == "1,000.10"
    assert money(0) == "0.00"  # a template's sum over no transactions (a customer with nothing open)
    assert money(None) == ""
