"""Unit tests of the pure invoicing rules: terms, cash discounts, vouchers, rejections, fingerprints."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
import yaml
from hypothesis import assume, given
from hypothesis import strategies as st

from kredit_invoicing.domain import (
    VOUCHER_PREFIXES,
    InvoiceRejected,
    compute_cash_discounts,
    compute_due_date,
    discount_amount,
    ensure_same_invoice,
    invoice_fingerprint,
    post_invoice,
)
from kredit_shared.company_setup import DEMO_SETUP_FILE, CompanySetup, load_company_setup
from kredit_shared.contracts import CashDiscountTier, CustomerInvoiceIssued, CustomerTransactionPosted, VoucherPosted

DEMO = load_company_setup()


def _extended_setup() -> CompanySetup:
    """The demo company plus a second revenue account, a 0-day and a 0 % discount code."""
    raw = yaml.safe_load(DEMO_SETUP_FILE.read_text())
    raw["main_accounts"]["402100"] = {"name": "Service revenue", "type": "Revenue"}
    raw["cash_discount_codes"]["3%0D"] = {"percent": "3.00", "days": 0, "account": "520100"}
    raw["cash_discount_codes"]["0%10D"] = {"percent": "0", "days": 10, "account": "520100"}
    return CompanySetup.model_validate(raw)


SETUP = _extended_setup()


def invoice(**overrides) -> CustomerInvoiceIssued:
    """Invoice 10020 of the source (1,000.00, 25/6/2015, Net30, 1%14D) unless overridden."""
    fields = {
        "invoice_id": "10020",
        "customer_account": "4027",
        "customer_name": "Fabrikam customer 4027",
        "invoice_date": "2015-06-25",
        "currency": "USD",
        "payment_terms": "Net30",
        "cash_discount_code": "1%14D",
        "lines": [{"description": "Goods", "amount": "1000.00"}],
    }
    fields.update(overrides)
    return CustomerInvoiceIssued.model_validate(fields)


def lines_of(posted) -> list[tuple[str, str, str]]:
    return [(line.account, str(line.debit), str(line.credit)) for line in posted.ledger_voucher.lines]


def tiers_of(posted) -> list[tuple[str, str, str]]:
    return [(str(t.percent), t.date.isoformat(), str(t.amount)) for t in posted.cash_discounts]


def rejection(message: CustomerInvoiceIssued, setup: CompanySetup = SETUP) -> str:
    with pytest.raises(InvoiceRejected) as caught:
        post_invoice(message, setup)
    assert caught.value.reason.startswith(f"invoice {message.invoice_id}: ")
    return caught.value.reason


# --- the source's example ---------------------------------------------------------------------


def test_invoice_10020_of_the_source_is_due_in_30_days_with_1_percent_until_day_14():
    posted = post_invoice(invoice(), DEMO)

    assert posted.voucher == "FTI-10020"
    assert posted.transaction_type == "Invoice"
    assert posted.due_date == date(2015, 7, 25)
    assert tiers_of(posted) == [("1.00", "2015-07-09", "10.00")]
    assert posted.total == Decimal("1000.00")
    assert posted.cash_discount_account == "520100"
    assert lines_of(posted) == [("130100", "1000.00", "0.00"), ("401100", "0.00", "1000.00")]


def test_the_transaction_carries_what_settlement_and_collections_need():
    uow = post_invoice(invoice(), DEMO).transaction

    assert isinstance(uow, CustomerTransactionPosted)
    assert (uow.voucher, uow.transaction_type, uow.invoice_id, uow.customer_account) == (
        "FTI-10020",
        "Invoice",
        "10020",
        "4027",
    )
    assert uow.customer_name == "Fabrikam customer 4027"
    assert (uow.transaction_date, uow.due_date) == (date(2015, 6, 25), date(2015, 7, 25))
    assert (uow.amount, uow.currency, uow.sales_tax_amount) == (Decimal("1000.00"), "USD", Decimal("0.00"))
    assert uow.cash_discounts == [CashDiscountTier(percent="1.00", date="2015-07-09", amount="10.00")]
    assert uow.cash_discount_account == "520100"


def test_the_ledger_voucher_is_posted_on_the_invoice_date_with_the_customer_on_the_receivable_line():
    vp = post_invoice(invoice(), DEMO).ledger_voucher

    assert (vp.voucher, vp.posting_date, vp.currency, vp.source) == ("FTI-10020", date(2015, 6, 25), "USD", "invoicing")
    assert vp.lines[0].customer_account == "4027"
    assert vp.lines[1].text == "Goods"


def test_messages_survive_the_wire_unchanged():
    for msg in post_invoice(invoice(), DEMO).messages:
        assert type(msg).model_validate_json(msg.model_dump_json()) == msg


def test_message_ids_are_derived_from_the_voucher_so_a_replay_emits_the_same_ids():
    first = post_invoice(invoice(), DEMO)
    again = post_invoice(invoice(), DEMO)
    other = post_invoice(invoice(invoice_id="10021"), DEMO)

    assert [m.message_id for m in first.messages] == [m.message_id for m in again.messages]
    assert first.transaction.message_id != first.ledger_voucher.message_id
    assert first.transaction.message_id != other.transaction.message_id


# --- due dates --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("invoice_date", "terms", "due"),
    [
        ("2023-01-31", "Net30", "2023-03-02"),  # across a short February
        ("2024-01-31", "Net30", "2024-03-01"),  # leap year: February has 29 days
        ("2024-02-29", "Net30", "2024-03-30"),  # from the leap day
        ("2024-02-15", "Net14", "2024-02-29"),  # onto the leap day
        ("2023-12-15", "Net30", "2024-01-14"),  # across the year boundary
        ("2023-12-31", "Net10", "2024-01-10"),
    ],
)
def test_due_date_is_invoice_date_plus_the_terms_days(invoice_date, terms, due):
    assert compute_due_date(date.fromisoformat(invoice_date), terms, None, DEMO) == date.fromisoformat(due)


def test_without_terms_or_due_date_the_invoice_is_due_on_its_date():
    assert post_invoice(invoice(payment_terms=None), DEMO).due_date == date(2015, 6, 25)


def test_an_explicit_due_date_wins_over_the_terms():
    assert post_invoice(invoice(due_date="2015-08-01"), DEMO).due_date == date(2015, 8, 1)
    assert post_invoice(invoice(payment_terms=None, due_date="2015-06-25"), DEMO).due_date == date(2015, 6, 25)


def test_a_due_date_before_the_invoice_date_is_rejected():
    assert "due date 2015-06-24 is before the invoice date 2015-06-25" in rejection(invoice(due_date="2015-06-24"))


def test_unknown_payment_terms_are_rejected_even_with_an_explicit_due_date():
    assert "unknown payment terms 'Net45'" in rejection(invoice(payment_terms="Net45"))
    assert "unknown payment terms 'Net45'" in rejection(invoice(payment_terms="Net45", due_date="2015-07-25"))


# --- cash discounts ---------------------------------------------------------------------------


def test_a_chained_code_gives_2_percent_for_5_days_then_1_percent_until_day_14():
    posted = post_invoice(invoice(invoice_date="2020-06-25", cash_discount_code="2%5D"), DEMO)

    assert tiers_of(posted) == [("2.00", "2020-06-30", "20.00"), ("1.00", "2020-07-09", "10.00")]
    assert posted.cash_discount_account == "520100"


def test_a_0_day_code_ends_the_discount_on_the_invoice_date():
    assert tiers_of(post_invoice(invoice(cash_discount_code="3%0D"), SETUP)) == [("3.00", "2015-06-25", "30.00")]


def test_a_0_percent_code_gives_a_zero_discount():
    assert tiers_of(post_invoice(invoice(cash_discount_code="0%10D"), SETUP)) == [("0", "2015-07-05", "0.00")]


def test_a_0_percent_code_on_a_credit_note_gives_zero_not_minus_zero():
    posted = post_invoice(invoice(cash_discount_code="0%10D", lines=[{"amount": "-1000.00"}]), SETUP)
    assert posted.transaction.model_dump(mode="json")["cash_discounts"][0]["amount"] == "0.00"


def test_no_code_and_no_tiers_means_no_discount():
    posted = post_invoice(invoice(cash_discount_code=None), DEMO)
    assert posted.cash_discounts == ()
    assert posted.cash_discount_account is None


def test_the_discount_base_is_the_total_including_sales_tax():
    posted = post_invoice(invoice(lines=[{"amount": "1000.00", "sales_tax_amount": "250.00"}]), DEMO)
    assert tiers_of(posted) == [("1.00", "2015-07-09", "12.50")]


def test_discount_amounts_round_half_up_to_the_cent():
    assert discount_amount(Decimal("1000.50"), Decimal("1")) == Decimal("10.01")  # 10.005
    assert discount_amount(Decimal("-1000.50"), Decimal("1")) == Decimal("-10.01")
    assert discount_amount(Decimal("0.49"), Decimal("1")) == Decimal("0.00")  # 0.0049


def test_explicit_tiers_win_over_the_code_and_are_sorted_by_date_with_computed_amounts():
    tiers = [{"percent": "1.00", "date": "2015-07-09"}, {"percent": "2.5", "date": "2015-06-30"}]
    posted = post_invoice(invoice(cash_discounts=tiers), DEMO)

    assert tiers_of(posted) == [("2.5", "2015-06-30", "25.00"), ("1.00", "2015-07-09", "10.00")]
    assert posted.cash_discount_account == "520100"  # the code still names the discount account


def test_an_explicit_empty_tier_list_means_no_discount_despite_the_code():
    assert post_invoice(invoice(cash_discounts=[]), DEMO).cash_discounts == ()


def test_explicit_tiers_without_a_code_leave_the_discount_account_to_settlement():
    tiers = [{"percent": "1.00", "date": "2015-07-09"}]
    posted = post_invoice(invoice(cash_discount_code=None, cash_discounts=tiers), DEMO)
    assert tiers_of(posted) == [("1.00", "2015-07-09", "10.00")]
    assert posted.cash_discount_account is None


def test_an_explicit_tier_amount_must_match_the_percent_of_the_total():
    matching = [{"percent": "1.00", "date": "2015-07-09", "amount": "10.00"}]
    assert tiers_of(post_invoice(invoice(cash_discounts=matching), DEMO)) == [("1.00", "2015-07-09", "10.00")]

    wrong = [{"percent": "1.00", "date": "2015-07-09", "amount": "12.00"}]
    assert "cash discount amount 12.00 until 2015-07-09 is not 1.00 % of the total 1000.00 (10.00)" in rejection(
        invoice(cash_discounts=wrong)
    )


def test_explicit_tiers_before_the_invoice_date_or_on_the_same_date_are_rejected():
    early = [{"percent": "1.00", "date": "2015-06-24"}]
    assert "cash discount date 2015-06-24 is before the invoice date" in rejection(invoice(cash_discounts=early))
    twice = [{"percent": "2.00", "date": "2015-07-09"}, {"percent": "1.00", "date": "2015-07-09"}]
    assert "two cash discount tiers end on the same date 2015-07-09" in rejection(invoice(cash_discounts=twice))


def test_an_unknown_discount_code_is_rejected_even_with_explicit_tiers():
    assert "unknown cash discount code '5%1D'" in rejection(invoice(cash_discount_code="5%1D"))
    tiers = [{"percent": "1.00", "date": "2015-07-09"}]
    assert "unknown cash discount code '5%1D'" in rejection(invoice(cash_discount_code="5%1D", cash_discounts=tiers))


def test_compute_cash_discounts_reads_the_chain_from_the_setup():
    tiers = compute_cash_discounts(date(2024, 2, 24), Decimal("500.00"), "2%5D", None, DEMO)
    assert [(t.date, t.amount) for t in tiers] == [
        (date(2024, 2, 29), Decimal("10.00")),
        (date(2024, 3, 9), Decimal("5.00")),
    ]


# --- lines, sales tax and the ledger voucher --------------------------------------------------


def test_sales_tax_is_split_to_the_sales_tax_account():
    posted = post_invoice(invoice(lines=[{"amount": "1000.00", "sales_tax_amount": "250.00"}]), DEMO)

    assert lines_of(posted) == [
        ("130100", "1250.00", "0.00"),
        ("401100", "0.00", "1000.00"),
        ("222200", "0.00", "250.00"),
    ]
    assert (posted.net_amount, posted.sales_tax_amount, posted.total) == (
        Decimal("1000.00"),
        Decimal("250.00"),
        Decimal("1250.00"),
    )
    assert posted.transaction.amount == Decimal("1250.00")
    assert posted.transaction.sales_tax_amount == Decimal("250.00")


def test_each_line_credits_its_own_revenue_account_with_its_text():
    lines = [
        {"description": "Goods", "amount": "600.00", "sales_tax_amount": "150.00"},
        {"description": "Installation", "amount": "400.00", "sales_tax_amount": "100.00", "revenue_account": "402100"},
    ]
    posted = post_invoice(invoice(lines=lines), SETUP)

    assert lines_of(posted) == [
        ("130100", "1250.00", "0.00"),
        ("401100", "0.00", "600.00"),
        ("402100", "0.00", "400.00"),
        ("222200", "0.00", "250.00"),
    ]
    assert [line.text for line in posted.ledger_voucher.lines[1:3]] == ["Goods", "Installation"]


def test_a_credit_note_posts_the_mirror_image_under_its_own_voucher():
    posted = post_invoice(
        invoice(invoice_id="10021", lines=[{"amount": "-1000.00", "sales_tax_amount": "-250.00"}]), DEMO
    )

    assert (posted.voucher, posted.transaction_type) == ("CCN-10021", "CreditNote")
    assert posted.transaction.amount == Decimal("-1250.00")
    assert posted.transaction.sales_tax_amount == Decimal("-250.00")
    assert lines_of(posted) == [
        ("130100", "0.00", "1250.00"),
        ("401100", "1000.00", "0.00"),
        ("222200", "250.00", "0.00"),
    ]
    assert tiers_of(posted) == [("1.00", "2015-07-09", "-12.50")]


def test_an_interest_note_posts_as_its_own_document_type_with_its_own_voucher():
    note = invoice(
        invoice_id="IN-000001",
        payment_terms=None,
        cash_discount_code=None,
        due_date="2015-08-10",
        invoice_date="2015-08-10",
        document_type="InterestNote",
        lines=[{"description": "Interest", "amount": "22.19", "revenue_account": "801100"}],
    )
    posted = post_invoice(note, DEMO)
    assert (posted.voucher, posted.transaction_type, posted.transaction.transaction_type) == (
        "INT-IN-000001",
        "InterestNote",
        "InterestNote",
    )
    assert lines_of(posted) == [("130100", "22.19", "0.00"), ("801100", "0.00", "22.19")]
    fee = invoice(invoice_id="CL-000001", document_type="CollectionLetterFee", cash_discount_code=None)
    assert post_invoice(fee, DEMO).voucher == "CLF-CL-000001"


@pytest.mark.parametrize(
    ("document_type", "amount", "why"),
    [("CreditNote", "10.00", "negative"), ("InterestNote", "-10.00", "positive"), ("Invoice", "-10.00", "positive")],
)
def test_a_document_type_against_the_sign_of_the_total_is_rejected(document_type, amount, why):
    with pytest.raises(InvoiceRejected, match=f"document_type {document_type} needs a {why} total, not {amount}"):
        post_invoice(invoice(document_type=document_type, lines=[{"amount": amount}], cash_discount_code=None), DEMO)


def test_a_document_type_the_sign_implies_keeps_the_fingerprint_of_before_the_field():
    assert invoice_fingerprint(invoice()) == invoice_fingerprint(invoice(document_type="Invoice"))
    assert invoice_fingerprint(invoice()) != invoice_fingerprint(invoice(document_type="InterestNote"))


def test_mixed_sign_lines_post_when_the_total_is_not_zero():
    lines = [{"description": "Goods", "amount": "1000.00"}, {"description": "Rebate", "amount": "-200.00"}]
    posted = post_invoice(invoice(lines=lines), DEMO)

    assert posted.total == Decimal("800.00")
    assert lines_of(posted) == [
        ("130100", "800.00", "0.00"),
        ("401100", "0.00", "1000.00"),
        ("401100", "200.00", "0.00"),
    ]


def test_zero_lines_are_left_out_of_the_voucher():
    lines = [{"amount": "1000.00"}, {"description": "Free sample", "amount": "0.00"}]
    posted = post_invoice(invoice(lines=lines), DEMO)
    assert lines_of(posted) == [("130100", "1000.00", "0.00"), ("401100", "0.00", "1000.00")]


# --- rejections -------------------------------------------------------------------------------


def test_lines_that_net_to_zero_are_rejected():
    lines = [{"amount": "1000.00", "sales_tax_amount": "250.00"}, {"amount": "-1000.00", "sales_tax_amount": "-250.00"}]
    assert "the lines total 0.00 (net 0.00, sales tax 0.00): nothing to post" in rejection(invoice(lines=lines))
    assert "the lines total 0.00" in rejection(invoice(lines=[{"amount": "0.00"}]))


def test_a_net_amount_pointing_against_the_total_is_rejected():
    lines = [{"amount": "100.00", "sales_tax_amount": "50.00"}, {"amount": "-120.00"}]
    assert "net amount -20.00 and total 30.00 have different signs" in rejection(invoice(lines=lines))


def test_sales_tax_against_its_line_is_rejected():
    reason = rejection(invoice(lines=[{"amount": "1000.00"}, {"amount": "100.00", "sales_tax_amount": "-25.00"}]))
    assert "line 2: sales tax -25.00 and amount 100.00 have different signs" in reason
    assert "line 1: sales tax 5.00 and amount 0.00" in rejection(
        invoice(lines=[{"amount": "0", "sales_tax_amount": "5"}])
    )


def test_an_unknown_revenue_account_is_rejected():
    assert "line 1: unknown revenue account '999999'" in rejection(
        invoice(lines=[{"amount": "1", "revenue_account": "999999"}])
    )


def test_a_currency_other_than_the_accounting_currency_without_any_rate_is_rejected():
    # Foreign currencies are booked since issue 17; one with no rate at all is still refused (test_currencies.py).
    with pytest.raises(InvoiceRejected) as caught:
        post_invoice(invoice(currency="EUR"), SETUP)
    assert caught.value.reason.startswith("invoice 10020 is in EUR and states no exchange_rate")


# --- a second message for the same invoice ----------------------------------------------------


def test_the_fingerprint_ignores_the_message_id_and_number_spelling():
    first = invoice(
        message_id="7f1c0000-0000-4000-8000-000000000001", lines=[{"description": "Goods", "amount": "1000"}]
    )
    again = invoice(
        message_id="7f1c0000-0000-4000-8000-000000000002", lines=[{"description": "Goods", "amount": "1000.00"}]
    )

    assert invoice_fingerprint(first) == invoice_fingerprint(again)
    assert post_invoice(first, DEMO).fingerprint == invoice_fingerprint(again)
    ensure_same_invoice(invoice_fingerprint(first), again)  # identical content: a no-op, no exception


@pytest.mark.parametrize(
    "change",
    [
        {"lines": [{"description": "Goods", "amount": "1000.01"}]},
        {"lines": [{"description": "Other goods", "amount": "1000.00"}]},
        {"due_date": "2015-07-26"},
        {"cash_discount_code": "2%10D"},
        {"customer_account": "4028"},
    ],
)
def test_a_second_message_with_different_content_is_rejected(change):
    posted = post_invoice(invoice(), DEMO)
    changed = invoice(**change)

    assert invoice_fingerprint(changed) != posted.fingerprint
    with pytest.raises(InvoiceRejected, match="invoice 10020: already posted with different content"):
        ensure_same_invoice(posted.fingerprint, changed)


# --- properties -------------------------------------------------------------------------------

cents = st.integers(min_value=-(10**9), max_value=10**9).map(lambda c: Decimal(c) / 100)


@st.composite
def invoice_lines(draw):
    amount = draw(cents)
    tax = abs(draw(cents)) / 4 if amount else Decimal(0)
    return {
        "amount": str(amount),
        "sales_tax_amount": str(Decimal(round(tax * 100 * (1 if amount > 0 else -1))) / 100),
        "revenue_account": draw(st.sampled_from(["401100", "402100", None])),
    }


@given(
    lines=st.lists(invoice_lines(), min_size=1, max_size=6),
    code=st.sampled_from([None, "1%14D", "2%5D", "2%10D", "3%0D", "0%10D"]),
    terms=st.sampled_from([None, "Net30", "Net14", "Net10"]),
)
def test_every_voucher_balances_and_discounts_never_exceed_the_total(lines, code, terms):
    try:
        posted = post_invoice(invoice(lines=lines, cash_discount_code=code, payment_terms=terms), SETUP)
    except InvoiceRejected:
        assume(False)
        return
    voucher: VoucherPosted = posted.ledger_voucher

    assert sum(line.debit for line in voucher.lines) == sum(line.credit for line in voucher.lines)
    receivable = voucher.lines[0]
    assert (receivable.account, receivable.debit - receivable.credit) == ("130100", posted.total)
    for line in voucher.lines:
        assert line.debit >= 0 and line.credit >= 0 and (line.debit == 0) != (line.credit == 0)
    assert posted.total == posted.net_amount + posted.sales_tax_amount == posted.transaction.amount
    for tier in posted.cash_discounts:
        assert abs(tier.amount) <= abs(posted.total)
        assert tier.amount == 0 or (tier.amount > 0) == (posted.total > 0)
    assert [t.date for t in posted.cash_discounts] == sorted(t.date for t in posted.cash_discounts)


@given(total=cents, percent=st.integers(min_value=0, max_value=10000).map(lambda p: Decimal(p) / 100))
def test_a_discount_amount_never_exceeds_the_total(total, percent):
    amount = discount_amount(total, percent)
    assert abs(amount) <= abs(total)
    assert amount == amount.quantize(Decimal("0.01"))


# --- document types (contract extension `document_type`) --------------------------------------


@pytest.mark.parametrize("document_type", ["InterestNote", "CollectionLetterFee", "PaymentFee"])
def test_a_document_type_becomes_the_customer_transaction_type(document_type):
    posted = post_invoice(
        invoice(document_type=document_type, lines=[{"amount": "7.00"}], cash_discount_code=None), SETUP
    )
    assert (posted.transaction_type, posted.transaction.transaction_type, posted.voucher) == (
        document_type,
        document_type,
        VOUCHER_PREFIXES[document_type] + "10020",
    )
    assert VOUCHER_PREFIXES[document_type] != "FTI-", "its own number series, told apart from invoices"
    assert lines_of(posted) == [("130100", "7.00", "0.00"), ("401100", "0.00", "7.00")]


@pytest.mark.parametrize(
    ("document_type", "amount", "kind"),
    [
        (None, "-5.00", "CreditNote"),
        ("CreditNote", "-5.00", "CreditNote"),
        ("Invoice", "5.00", "Invoice"),
    ],
)
def test_without_a_special_document_type_the_sign_of_the_total_decides(document_type, amount, kind):
    posted = post_invoice(invoice(document_type=document_type, lines=[{"amount": amount}]), SETUP)
    assert posted.transaction.transaction_type == kind


@pytest.mark.parametrize(
    ("document_type", "amount"), [("CreditNote", "5.00"), ("InterestNote", "-5.00"), ("PaymentFee", "-1.00")]
)
def test_a_document_type_that_contradicts_the_sign_of_the_total_is_rejected(document_type, amount):
    assert "needs a" in rejection(invoice(document_type=document_type, lines=[{"amount": amount}]))


def test_an_unknown_document_type_is_a_validation_error():
    with pytest.raises(ValueError, match="document_type"):
        invoice(document_type="Dunning")


def test_an_omitted_document_type_keeps_the_fingerprint_invoices_had_before_the_field():
    # The digest of invoice() as stored before document_type existed (so re-sent invoices stay no-ops).
    assert invoice_fingerprint(invoice()) == "07495e61efc6b7f975a27f16d52cc1dc071ff96f0b3aa1e3477282e7185469b1"
