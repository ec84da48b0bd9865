"""Unit tests of the collections rules (pure, no I/O), against the demo company setup.

Sources cited in tests:
- spec 000 / 003: docs/scenarios.md (the task guides the product is built from).
- [concepts] Microsoft, "Collections management key concepts", section "Creating write-off transactions"
  (learn.microsoft.com/dynamics365/finance/accounts-receivable/cm-collections-concepts).
- [defaults] Microsoft, "About default entries for write-off transactions" (Dynamics AX 2012,
  learn.microsoft.com/dynamicsax-2012/appuser-itpro/about-default-entries-for-write-off-transactions).
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from kredit_collections.domain import (
    CustomerTransaction,
    InvalidSelection,
    MixedCurrencies,
    NotCancellable,
    NothingToWriteOff,
    TransactionBalance,
    UnknownCustomer,
    UnknownReasonCode,
    WriteOffConflict,
    WriteOffError,
    WriteOffProgress,
    WriteOffSettings,
    age_balances,
    aging_cutoffs,
    bucket_for,
    build_write_off_journal,
    open_invoices,
    select_for_write_off,
    settlement_deltas,
    transaction_balances,
)
from kredit_shared.company_setup import WriteOffParameters, load_company_setup
from kredit_shared.contracts import (
    CustomerTransactionPosted,
    GeneralJournalRequested,
    JournalCancelRefused,
    JournalCreated,
    JournalPosted,
    JournalRejected,
    JournalVoided,
    OpenItemsSettled,
)

SETUP = load_company_setup()
SETTINGS = WriteOffSettings.from_setup(SETUP)
WITH_TAX = WriteOffSettings.from_setup(
    SETUP, WriteOffParameters(journal_name="WriteOff", reason_code="BadDebt", separate_sales_tax=True)
)
D = Decimal


def uow(
    voucher: str,
    amount: str,
    *,
    type: str = "Invoice",
    account: str = "4027",
    on: date = date(2015, 6, 25),
    due: date | None = None,
    invoice_id: str | None = None,
    tax: str = "0.00",
    currency: str = "USD",
    name: str | None = None,
) -> CustomerTransaction:
    return CustomerTransaction(
        voucher=voucher,
        transaction_type=type,
        customer_account=account,
        transaction_date=on,
        amount=D(amount),
        currency=currency,
        invoice_id=invoice_id,
        due_date=due,
        sales_tax_amount=D(tax),
        customer_name=name,
    )


def settled(
    sid: str,
    debit: str,
    credit: str,
    amount: str,
    on: date,
    discount: str = "0.00",
    discount_voucher: str | None = None,
) -> OpenItemsSettled:
    return OpenItemsSettled(
        settlement_id=sid,
        customer_account="4027",
        settlement_date=on,
        currency="USD",
        debit_voucher=debit,
        credit_voucher=credit,
        amount_settled=D(amount),
        cash_discount_amount=D(discount),
        cash_discount_voucher=discount_voucher,
    )


def is_open(*pairs: tuple[CustomerTransaction, str]) -> list[TransactionBalance]:
    return [TransactionBalance(t, D(balance)) for t, balance in pairs]


# --- read model: spec 003, FTI-10020 paid 297.00 + 3.00 discount, then 700.00 -------------------

FTI = uow("FTI-10020", "1000.00", due=date(2015, 7, 25), invoice_id="10020")
ARP1 = uow("ARP-10020", "-297.00", type="Payment", on=date(2015, 7, 1))
DISC = uow("DISC-10020", "-3.00", type="CashDiscount", on=date(2015, 7, 1))
ARP2 = uow("ARP-10021", "-700.00", type="Payment", on=date(2015, 7, 11))
SOURCE_TXS = [FTI, ARP1, DISC, ARP2]
PARTIAL = settled("S1", "FTI-10020", "ARP-10020", "297.00", date(2015, 7, 1), "3.00", "DISC-10020")
FINAL = settled("S2", "FTI-10020", "ARP-10021", "700.00", date(2015, 7, 11))


def test_settlement_deltas_move_debit_credit_and_discount_vouchers():
    assert [(d.voucher, d.amount) for d in settlement_deltas(PARTIAL)] == [
        ("FTI-10020", D("-300.00")),
        ("ARP-10020", D("297.00")),
        ("DISC-10020", D("3.00")),
    ]
    assert [(d.voucher, d.amount) for d in settlement_deltas(FINAL)] == [
        ("FTI-10020", D("-700.00")),
        ("ARP-10021", D("700.00")),
    ]


def test_a_written_off_difference_moves_the_debit_beyond_cash_and_discount():
    underpaid = settled("S3", "FTI-1", "ARP-1", "999.90", date(2015, 7, 1)).model_copy(
        update={"difference_amount": D("0.10")}
    )
    overpaid = settled("S4", "FTI-2", "ARP-2", "95.00", date(2015, 7, 1), "10.50", "DISC-2").model_copy(
        update={"difference_amount": D("-0.50")}
    )
    assert [(d.voucher, d.amount) for d in settlement_deltas(underpaid)] == [
        ("FTI-1", D("-1000.00")),
        ("ARP-1", D("999.90")),
    ]
    assert [(d.voucher, d.amount) for d in settlement_deltas(overpaid)] == [
        ("FTI-2", D("-105.00")),
        ("ARP-2", D("95.00")),
        ("DISC-2", D("10.50")),
    ]


def test_a_reversal_is_the_settlement_with_every_amount_negated():
    reversal = settled("S1:R", "FTI-10020", "ARP-10020", "-297.00", date(2015, 7, 1), "-3.00", "REV-DISC-10020")
    txs = [*SOURCE_TXS[:3], uow("REV-DISC-10020", "3.00", type="CashDiscount", on=date(2015, 7, 1))]
    rows = {
        r.voucher: r.balance
        for r in transaction_balances(txs, [*settlement_deltas(PARTIAL), *settlement_deltas(reversal)])
    }
    assert rows == {
        "FTI-10020": D("1000.00"),
        "ARP-10020": D("-297.00"),
        "DISC-10020": D("0.00"),
        "REV-DISC-10020": D("0.00"),
    }


def test_partial_payment_leaves_700_open_on_the_invoice():
    rows = {r.voucher: r.balance for r in transaction_balances(SOURCE_TXS, settlement_deltas(PARTIAL))}
    assert rows == {
        "FTI-10020": D("700.00"),
        "ARP-10020": D("0.00"),
        "DISC-10020": D("0.00"),
        "ARP-10021": D("-700.00"),
    }


def test_final_customer_transactions_match_the_source_table():
    deltas = settlement_deltas(PARTIAL) + settlement_deltas(FINAL)
    rows = [
        (r.voucher, r.transaction.transaction_type, r.debit, r.credit, r.balance)
        for r in transaction_balances(SOURCE_TXS, deltas)
    ]
    assert rows == [
        ("FTI-10020", "Invoice", D("1000.00"), D("0"), D("0.00")),
        ("ARP-10020", "Payment", D("0"), D("297.00"), D("0.00")),
        ("DISC-10020", "CashDiscount", D("0"), D("3.00"), D("0.00")),
        ("ARP-10021", "Payment", D("0"), D("700.00"), D("0.00")),
    ]


def test_balances_do_not_depend_on_the_order_events_arrive_in():
    deltas = settlement_deltas(PARTIAL) + settlement_deltas(FINAL)
    expected = transaction_balances(SOURCE_TXS, deltas)
    for txs, ds in zip(itertools.permutations(SOURCE_TXS), itertools.cycle(itertools.permutations(deltas))):
        assert transaction_balances(txs, ds) == expected


def test_a_settlement_that_arrives_before_its_invoice_counts_once_the_invoice_arrives():
    deltas = settlement_deltas(PARTIAL)  # stored while only the payment is known
    assert [r.voucher for r in transaction_balances([ARP1], deltas)] == ["ARP-10020"]
    assert transaction_balances([ARP1, FTI], deltas)[0].balance == D("700.00")


def test_transaction_read_model_is_built_from_the_event():
    event = CustomerTransactionPosted(
        voucher="FTI-10020",
        transaction_type="Invoice",
        customer_account="4027",
        transaction_date="2015-06-25",
        invoice_id="10020",
        amount="1000.00",
        currency="USD",
        due_date="2015-07-25",
        customer_name="Fabrikam customer 4027",
    )
    assert CustomerTransaction.from_event(event) == replace(FTI, customer_name="Fabrikam customer 4027")


def test_open_invoices_are_invoices_and_credit_notes_with_something_open_by_due_date():
    assert [r.voucher for r in open_invoices(CAVE_TXS)] == ["CCN-000007", "CIV-000200", "CIV-000101", "CIV-000102"]


# --- aged balances --------------------------------------------------------------------------------

AS_OF = date(2015, 12, 31)


@pytest.mark.parametrize(
    ("days", "bucket"),
    [
        (-10, "Current"),
        (0, "Current"),
        (1, "1-30"),
        (30, "1-30"),
        (31, "31-60"),
        (60, "31-60"),
        (61, "61-90"),
        (90, "61-90"),
        (91, "91+"),
        (400, "91+"),
    ],
)
def test_an_invoice_ages_into_the_bucket_of_its_days_past_due(days, bucket):
    invoice = uow("FTI-1", "100.00", on=AS_OF - timedelta(days=days + 30), due=AS_OF - timedelta(days=days))
    [row] = age_balances([invoice], [], AS_OF, SETUP.aging_buckets)
    assert row.balance == D("100.00")
    assert row.buckets == {b.label: D("100.00") if b.label == bucket else D("0") for b in SETUP.aging_buckets}


@given(st.integers(min_value=-400, max_value=400))
def test_the_cutoff_dates_put_a_transaction_in_the_bucket_its_days_past_due_do(days):
    """The aged sums the database adds up (tables.aged_sums) bucket by these dates instead of by days."""
    aging_date = AS_OF - timedelta(days=days)
    cutoffs = aging_cutoffs(AS_OF, SETUP.aging_buckets)
    index = next((i for i, cutoff in enumerate(cutoffs) if aging_date >= cutoff), len(SETUP.aging_buckets) - 1)
    assert SETUP.aging_buckets[index].label == bucket_for(days, SETUP.aging_buckets)


@given(st.dates(), st.dates())
@example(date.min, date.min)
@example(date(1, 3, 1), date.min)
def test_the_cutoff_dates_bucket_any_date_as_its_days_past_due_do_even_in_year_1(as_of, aging_date):
    """GET /api/v1/aged-balances(.csv)?as_of=0001-01-01 answered 500: the cutoffs fell before the first date."""
    cutoffs = aging_cutoffs(as_of, SETUP.aging_buckets)
    index = next((i for i, cutoff in enumerate(cutoffs) if aging_date >= cutoff), len(SETUP.aging_buckets) - 1)
    assert SETUP.aging_buckets[index].label == bucket_for((as_of - aging_date).days, SETUP.aging_buckets)


def test_credits_without_due_date_age_by_transaction_date_as_negative_amounts():
    invoice = uow("FTI-1", "500.00", on=date(2015, 10, 1), due=date(2015, 10, 31))  # 61 days past due
    payment = uow("ARP-1", "-200.00", type="Payment", on=date(2015, 12, 1))  # 30 days old
    [row] = age_balances([invoice, payment], [], AS_OF, SETUP.aging_buckets)
    assert row.balance == D("300.00")
    assert row.buckets["61-90"] == D("500.00") and row.buckets["1-30"] == D("-200.00")


def test_an_as_of_date_before_the_invoice_shows_nothing():
    assert age_balances([FTI], [], date(2015, 6, 24), SETUP.aging_buckets) == []
    [row] = age_balances([FTI], [], date(2015, 6, 25), SETUP.aging_buckets)
    assert row.buckets["Current"] == D("1000.00")


def test_settlements_after_the_as_of_date_do_not_reduce_the_balance():
    deltas = settlement_deltas(PARTIAL) + settlement_deltas(FINAL)
    [before] = age_balances(SOURCE_TXS, deltas, date(2015, 6, 30), SETUP.aging_buckets)
    [between] = age_balances(SOURCE_TXS, deltas, date(2015, 7, 10), SETUP.aging_buckets)
    assert before.balance == D("1000.00")
    assert between.balance == D("700.00")  # the 1 July settlement counts, the 11 July one not yet
    assert age_balances(SOURCE_TXS, deltas, date(2015, 7, 11), SETUP.aging_buckets) == []


def test_customers_with_nothing_open_drop_out_but_offsetting_buckets_stay():
    old = uow("FTI-1", "100.00", account="A", on=date(2015, 1, 1), due=date(2015, 1, 31))
    credit = uow("CN-1", "-100.00", type="CreditNote", account="A", on=AS_OF)
    settled_one = uow("FTI-2", "50.00", account="B", on=AS_OF)
    deltas = settlement_deltas(settled("S", "FTI-2", "X", "50.00", AS_OF))
    [row] = age_balances([old, credit, settled_one], deltas, AS_OF, SETUP.aging_buckets)
    assert (row.customer_account, row.balance, row.buckets["91+"], row.buckets["Current"]) == (
        "A",
        D("0"),
        D("100.00"),
        D("-100.00"),
    )


def test_each_currency_of_a_customer_ages_in_its_own_row():
    rows = age_balances(
        [uow("FTI-1", "10.00", on=AS_OF, name="Birch company"), uow("FTI-2", "20.00", on=AS_OF, currency="EUR")],
        [],
        AS_OF,
        SETUP.aging_buckets,
    )
    assert [(r.customer_account, r.currency, r.balance) for r in rows] == [
        ("4027", "EUR", D("20.00")),
        ("4027", "USD", D("10.00")),
    ]
    assert rows[1].customer_name == "Birch company"


# --- write-off settings and selection ------------------------------------------------------------

CAVE = "US-004"
CAVE_TXS = transaction_balances(
    [
        uow("CIV-000101", "1200.00", account=CAVE, invoice_id="000101", name="Cave Wholesales", due=date(2016, 1, 31)),
        uow("CIV-000102", "345.67", account=CAVE, invoice_id="000102", due=date(2016, 2, 29)),
        uow("CCN-000007", "-100.00", type="CreditNote", account=CAVE, invoice_id="000007"),
        uow("ARP-000050", "-200.00", type="Payment", account=CAVE),
        uow("CIV-000100", "80.00", account=CAVE, invoice_id="000100"),
        uow("CIV-000200", "99.00", account="US-001"),
    ],
    settlement_deltas(settled("S9", "CIV-000100", "ARP-000050", "80.00", date(2016, 1, 5))),
)


def test_settings_come_from_the_demo_setup():
    assert SETTINGS == WriteOffSettings("WriteOff", "BadDebt", False, "618900", "222200", SETUP.reason_codes)


def test_edited_parameters_must_name_a_journal_and_a_reason_code_of_the_setup():
    with pytest.raises(UnknownReasonCode, match="Nope"):
        WriteOffSettings.from_setup(SETUP, WriteOffParameters(journal_name="WriteOff", reason_code="Nope"))
    with pytest.raises(WriteOffError, match="journal name 'Nope'"):
        WriteOffSettings.from_setup(SETUP, WriteOffParameters(journal_name="Nope", reason_code="BadDebt"))


def test_the_whole_balance_selects_every_open_debit_and_credit_item():
    chosen = select_for_write_off(CAVE, CAVE_TXS)  # oldest first, then by voucher; CIV-000100 is settled
    assert [c.voucher for c in chosen] == ["ARP-000050", "CCN-000007", "CIV-000101", "CIV-000102"]
    assert sum(c.balance for c in chosen) == D("1325.67")


def test_selected_vouchers_and_one_invoice_select_just_those():
    assert [
        c.voucher for c in select_for_write_off(CAVE, CAVE_TXS, vouchers=["CIV-000102", "CIV-000101", "CIV-000102"])
    ] == ["CIV-000102", "CIV-000101"]
    assert [c.voucher for c in select_for_write_off(CAVE, CAVE_TXS, invoice_id="000102")] == ["CIV-000102"]


@pytest.mark.parametrize(
    ("account", "kwargs", "error", "message"),
    [
        ("US-999", {}, UnknownCustomer, "US-999"),
        ("US-001", {"vouchers": ["CIV-000101"]}, InvalidSelection, "not transactions of customer US-001: CIV-000101"),
        (CAVE, {"vouchers": ["CIV-000100"]}, InvalidSelection, "not open.*CIV-000100"),
        (CAVE, {"invoice_id": "000100"}, InvalidSelection, "not open.*CIV-000100"),
        (CAVE, {"invoice_id": "999"}, InvalidSelection, "invoice '999'"),
        (CAVE, {"vouchers": []}, NothingToWriteOff, "no vouchers"),
        (CAVE, {"vouchers": ["CIV-000101"], "invoice_id": "000102"}, InvalidSelection, "not both"),
        (CAVE, {"pending_vouchers": {"CCN-000007"}}, WriteOffConflict, "CCN-000007"),
    ],
)
def test_selection_guards(account, kwargs, error, message):
    with pytest.raises(error, match=message):
        select_for_write_off(account, CAVE_TXS, **kwargs)


def test_a_customer_with_nothing_open_has_nothing_to_write_off():
    with pytest.raises(NothingToWriteOff, match="nothing open"):
        select_for_write_off(
            "4027", transaction_balances(SOURCE_TXS, settlement_deltas(PARTIAL) + settlement_deltas(FINAL))
        )


def test_a_write_off_cannot_mix_currencies():
    balances = transaction_balances([uow("A", "1.00"), uow("B", "2.00", currency="EUR")], [])
    with pytest.raises(MixedCurrencies, match="EUR, USD"):
        select_for_write_off("4027", balances)


def test_the_conflict_is_its_own_exception_type_for_a_409():
    assert issubclass(WriteOffConflict, WriteOffError)
    assert not issubclass(WriteOffConflict, (InvalidSelection, NothingToWriteOff, UnknownCustomer))


# --- write-off journals ---------------------------------------------------------------------------


def totals(journal: GeneralJournalRequested) -> tuple[Decimal, Decimal]:
    return sum((l.debit for l in journal.lines), D(0)), sum((l.credit for l in journal.lines), D(0))


def write_off(items, settings=SETTINGS, **kwargs) -> GeneralJournalRequested:
    return build_write_off_journal(items, settings, request_id="wo-1", transaction_date=date(2016, 3, 1), **kwargs)


def totals_by_group(journal: GeneralJournalRequested) -> dict[str | None, tuple[Decimal, Decimal]]:
    groups: dict[str | None, tuple[Decimal, Decimal]] = {}
    for l in journal.lines:
        debit, credit = groups.get(l.voucher_group, (D(0), D(0)))
        groups[l.voucher_group] = (debit + l.debit, credit + l.credit)
    return groups


def rows(journal: GeneralJournalRequested) -> list[tuple[str, str, Decimal, Decimal]]:
    return [(l.account_type, l.account, l.debit, l.credit) for l in journal.lines]


def test_spec_000_two_selected_transactions_of_cave_wholesales_with_comment_bad_debt():
    items = select_for_write_off(CAVE, CAVE_TXS, vouchers=["CIV-000101", "CIV-000102"])
    journal = write_off(items, reason_comment="Bad debt")
    assert journal.journal_name == "WriteOff"
    assert journal.description == "Write off transactions for US-004 Cave Wholesales"
    # spec 000 / [concepts]: one line reverses the customer balance (per customer, currency and posting
    # profile), one or more post to the write-off account; the customer line names each item it settles.
    assert rows(journal) == [("Customer", CAVE, D(0), D("1545.67")), ("Ledger", "618900", D("1545.67"), D(0))]
    assert [[(s.voucher, s.invoice_id, s.amount) for s in l.settles] for l in journal.lines] == [
        [("CIV-000101", "000101", D("1200.00")), ("CIV-000102", "000102", D("345.67"))],
        [],
    ]
    assert [l.text for l in journal.lines] == ["Write off transactions for US-004 Cave Wholesales"] * 2
    assert {(l.reason_code, l.reason_comment, l.currency, l.transaction_date) for l in journal.lines} == {
        ("BadDebt", "Bad debt", "USD", date(2016, 3, 1))
    }
    assert totals(journal) == (D("1545.67"), D("1545.67"))


def test_issue_18_two_invoices_of_120_and_80_give_one_customer_line_of_200_and_one_write_off_line():
    items = is_open(
        (uow("FTI-1", "120.00", invoice_id="1"), "120.00"), (uow("FTI-2", "80.00", invoice_id="2"), "80.00")
    )
    journal = write_off(items)
    assert rows(journal) == [("Customer", "4027", D(0), D("200.00")), ("Ledger", "618900", D("200.00"), D(0))]
    assert [(s.voucher, s.amount) for s in journal.lines[0].settles] == [("FTI-1", D("120.00")), ("FTI-2", D("80.00"))]


def test_the_whole_write_off_is_one_balanced_voucher():
    journal = write_off(select_for_write_off(CAVE, CAVE_TXS, vouchers=["CIV-000101", "CIV-000102"]), WITH_TAX)
    assert {l.voucher_group for l in journal.lines} == {None}  # no group: the whole journal is one voucher
    assert totals_by_group(journal) == {None: (D("1545.67"), D("1545.67"))}


def test_the_reason_code_can_be_overridden_but_must_exist():
    items = select_for_write_off(CAVE, CAVE_TXS, vouchers=["CIV-000101", "CIV-000102"])
    assert {l.reason_code for l in write_off(items, reason_code="Bankrupt").lines} == {"Bankrupt"}
    with pytest.raises(UnknownReasonCode, match="'Lost'.*BadDebt, Bankrupt, SmallBal"):
        write_off(items, reason_code="Lost")


def test_the_whole_balance_reverses_the_net_of_debit_and_credit_items_in_one_customer_line():
    # [defaults]: the customer line carries the total of the open transactions; a debit total gives a credit.
    # Each item is named with its own signed amount, so settlement settles each on its own side.
    journal = write_off(select_for_write_off(CAVE, CAVE_TXS))
    assert rows(journal) == [("Customer", CAVE, D(0), D("1325.67")), ("Ledger", "618900", D("1325.67"), D(0))]
    assert [(s.voucher, s.amount) for s in journal.lines[0].settles] == [
        ("ARP-000050", D("-120.00")),
        ("CCN-000007", D("-100.00")),
        ("CIV-000101", D("1200.00")),
        ("CIV-000102", D("345.67")),
    ]


def test_an_open_credit_balance_is_reversed_with_a_debit():
    # [defaults]: "If the total of the amounts is a credit, a debit is created."
    journal = write_off(is_open((uow("ARP-1", "-40.00", type="Payment"), "-40.00")))
    assert rows(journal) == [("Customer", "4027", D("40.00"), D(0)), ("Ledger", "618900", D(0), D("40.00"))]
    assert journal.lines[0].text == "Write-off ARP-1"


def test_a_net_zero_write_off_settles_item_by_item_because_zero_lines_are_refused():
    journal = write_off(
        is_open((uow("FTI-1", "100.00"), "100.00"), (uow("CN-1", "-100.00", type="CreditNote"), "-100.00"))
    )
    assert rows(journal) == [
        ("Customer", "4027", D(0), D("100.00")),
        ("Ledger", "618900", D("100.00"), D(0)),
        ("Customer", "4027", D("100.00"), D(0)),
        ("Ledger", "618900", D(0), D("100.00")),
    ]
    assert [l.voucher_group for l in journal.lines] == ["FTI-1", "FTI-1", "CN-1", "CN-1"]
    assert all(debit == credit for debit, credit in totals_by_group(journal).values())


def test_separate_sales_tax_posts_one_tax_line_for_all_items():
    # 1,100.00 incl. 100.00 tax and 220.00 incl. 20.00 tax, both open in full: one line per ledger account.
    items = is_open((uow("FTI-1", "1100.00", tax="100.00"), "1100.00"), (uow("FTI-2", "220.00", tax="20.00"), "220.00"))
    assert rows(write_off(items, WITH_TAX)) == [
        ("Customer", "4027", D(0), D("1320.00")),
        ("Ledger", "618900", D("1200.00"), D(0)),
        ("Ledger", "222200", D("120.00"), D(0)),
    ]


def test_without_separate_sales_tax_the_write_off_line_includes_the_tax():
    # [defaults]: "If the Separate sales tax check box ... is not selected, the amount includes sales tax."
    journal = write_off(is_open((uow("FTI-1", "1100.00", tax="100.00"), "1100.00")))
    assert rows(journal) == [("Customer", "4027", D(0), D("1100.00")), ("Ledger", "618900", D("1100.00"), D(0))]


def test_separate_sales_tax_reverses_the_tax_share_of_what_is_still_open():
    # [concepts]/[defaults]: a third line type, for sales tax, only with Separate sales tax.
    # 1,100.00 incl. 100.00 tax, 333.33 paid: 766.67 × 100 / 1100 = 69.697 -> 69.70 tax, 696.97 net.
    journal = write_off(is_open((uow("FTI-1", "1100.00", tax="100.00"), "766.67")), WITH_TAX)
    assert rows(journal) == [
        ("Customer", "4027", D(0), D("766.67")),
        ("Ledger", "618900", D("696.97"), D(0)),
        ("Ledger", "222200", D("69.70"), D(0)),
    ]


def test_the_rounding_difference_of_the_tax_share_lands_on_the_write_off_line():
    # 0.05 × 1 / 3 = 0.0167 -> 0.02 tax; the write-off line takes 0.03 so the voucher balances.
    journal = write_off(is_open((uow("FTI-1", "3.00", tax="1.00"), "0.05")), WITH_TAX)
    assert rows(journal)[1:] == [("Ledger", "618900", D("0.03"), D(0)), ("Ledger", "222200", D("0.02"), D(0))]


def test_a_credit_note_gives_back_its_tax_share_on_the_debit_side():
    journal = write_off(is_open((uow("CN-1", "-110.00", type="CreditNote", tax="-10.00"), "-110.00")), WITH_TAX)
    assert rows(journal) == [
        ("Customer", "4027", D("110.00"), D(0)),
        ("Ledger", "618900", D(0), D("100.00")),
        ("Ledger", "222200", D(0), D("10.00")),
    ]


def test_build_guards_what_selection_guards():
    with pytest.raises(NothingToWriteOff):
        write_off([])
    with pytest.raises(MixedCurrencies):
        write_off(is_open((uow("A", "1.00"), "1.00"), (uow("B", "1.00", currency="EUR"), "1.00")))
    with pytest.raises(InvalidSelection, match="one customer"):
        write_off(is_open((uow("A", "1.00"), "1.00"), (uow("B", "1.00", account="X"), "1.00")))
    with pytest.raises(InvalidSelection, match="not open"):
        write_off(is_open((uow("A", "1.00"), "0.00")))


cents = st.integers(-(10**8), 10**8).filter(bool).map(lambda c: D(c) / 100)


@st.composite
def open_items(draw) -> list[TransactionBalance]:
    items = []
    for n in range(draw(st.integers(1, 8))):
        amount = draw(cents)
        sign = 1 if amount > 0 else -1
        balance = sign * draw(st.integers(1, int(abs(amount) * 100))) * D("0.01")
        tax = sign * draw(st.integers(0, int(abs(amount) * 100))) * D("0.01")
        items.append(TransactionBalance(uow(f"V{n}", str(amount), tax=str(tax)), balance))
    return items


@given(open_items(), st.booleans())
def test_every_write_off_journal_balances(items, separate_tax):
    settings = WITH_TAX if separate_tax else SETTINGS
    journal = write_off(items, settings)
    debit, credit = totals(journal)
    assert debit == credit
    customer = [l for l in journal.lines if l.account_type == "Customer"]
    written_off = sum((i.balance for i in items), D(0))
    assert sum((l.credit - l.debit for l in customer), D(0)) == written_off
    assert sorted(s.voucher for l in customer for s in l.settles) == sorted(i.voucher for i in items)
    assert sum((s.amount for l in customer for s in l.settles), D(0)) == written_off
    assert all(bool(l.debit) != bool(l.credit) for l in journal.lines)  # never zero, never both sides
    assert all(debit == credit for debit, credit in totals_by_group(journal).values())
    if written_off:  # one customer line, one line per ledger account, one voucher
        assert len(customer) == 1 and len(journal.lines) <= 3
        assert {l.voucher_group for l in journal.lines} == {None}
    else:  # item by item, each a voucher of its own
        assert [l.voucher_group for l in customer] == [s.voucher for l in customer for s in l.settles]
    assert {l.reason_code for l in journal.lines} == {"BadDebt"}


# --- write-off requests --------------------------------------------------------------------------

CREATED = JournalCreated(request_id="wo-1", journal_name="WriteOff", batch_number="WOJ-000001")
POSTED = JournalPosted(
    request_id="wo-1", journal_name="WriteOff", batch_number="WOJ-000001", posting_date=date(2016, 3, 1), lines=[]
)
REJECTED = JournalRejected(request_id="wo-1", journal_name="WriteOff", reason="unbalanced")


def test_a_write_off_is_requested_then_journal_created_then_posted():
    created = WriteOffProgress().after(CREATED)
    assert created == WriteOffProgress("journal-created", "WOJ-000001")
    assert created.after(POSTED) == WriteOffProgress("posted", "WOJ-000001")
    assert WriteOffProgress().after(POSTED).status == "posted"  # a missed JournalCreated loses nothing


def test_posted_and_rejected_are_final_and_only_rejected_frees_the_vouchers():
    posted, rejected = WriteOffProgress().after(POSTED), WriteOffProgress().after(REJECTED)
    assert rejected == WriteOffProgress("rejected", None, "unbalanced")
    assert posted.after(CREATED) == posted and posted.after(REJECTED) == posted
    assert rejected.after(CREATED) == rejected
    assert [
        p.claims_its_vouchers for p in (WriteOffProgress(), WriteOffProgress().after(CREATED), posted, rejected)
    ] == [True, True, True, False]


VOIDED = JournalVoided(request_id="wo-1", journal_name="WriteOff", batch_number="WOJ-000001")
REFUSED = JournalCancelRefused(
    request_id="wo-1", journal_name="WriteOff", batch_number="WOJ-000001", reason="journal WOJ-000001 is already posted"
)


def test_a_cancelled_write_off_keeps_its_vouchers_until_the_journal_is_voided():
    for before in (WriteOffProgress(), WriteOffProgress().after(CREATED)):
        cancelling = before.cancel("by mistake")
        assert (cancelling.status, cancelling.reason, cancelling.claims_its_vouchers) == (
            "cancelling",
            "by mistake",
            True,
        )
        assert cancelling.cancel("again") == cancelling, "a second cancel changes nothing"
        assert cancelling.after(CREATED) == WriteOffProgress("cancelling", "WOJ-000001", "by mistake")
        cancelled = cancelling.after(CREATED).after(VOIDED)
        assert (cancelled.status, cancelled.claims_its_vouchers) == ("cancelled", False)
        assert cancelled.cancel(None) == cancelled
        assert cancelled.after(POSTED) == cancelled and cancelled.after(CREATED) == cancelled


def test_a_cancel_that_comes_too_late_ends_posted_and_posted_or_rejected_cannot_be_cancelled():
    cancelling = WriteOffProgress().after(CREATED).cancel("by mistake")
    posted = cancelling.after(POSTED)
    assert posted == WriteOffProgress("posted", "WOJ-000001")
    assert posted.after(REFUSED) == WriteOffProgress("posted", "WOJ-000001", REFUSED.reason)
    assert cancelling.after(REFUSED) == WriteOffProgress("posted", "WOJ-000001", REFUSED.reason)  # any order
    assert posted.after(REFUSED).claims_its_vouchers
    with pytest.raises(NotCancellable, match="already posted .*WOJ-000001"):
        posted.cancel(None)
    with pytest.raises(NotCancellable, match="already rejected: unbalanced"):
        WriteOffProgress().after(REJECTED).cancel(None)
    assert cancelling.after(REJECTED).status == "rejected"
