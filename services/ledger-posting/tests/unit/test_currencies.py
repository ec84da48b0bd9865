"""Unit tests of foreign currencies in the ledger (docs/currencies.md): voucher lines keep their
transaction currency and amount; general journal lines in a foreign currency are converted at their rate
and must balance in the accounting currency."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from kredit_ledger_posting.domain import (
    InvalidJournalRequest,
    InvalidVoucher,
    UnbalancedJournal,
    entries_for_voucher,
    journal_line_accounting,
    journal_posted_event,
    open_journal,
    post_journal,
    trial_balance,
    voucher_fingerprint,
)
from kredit_shared.company_setup import DEMO_SETUP_FILE, CompanySetup, load_company_setup
from kredit_shared.contracts import GeneralJournalRequested, VoucherPosted
from kredit_shared.currencies import Rates, to_accounting

DEMO = load_company_setup()


def _with_eur_rates() -> CompanySetup:
    raw = yaml.safe_load(DEMO_SETUP_FILE.read_text())
    raw["exchange_rates"] = {"EUR": [{"from_date": "2015-01-01", "rate": "1.25"}]}
    return CompanySetup.model_validate(raw)


EUR_SETUP = _with_eur_rates()


def voucher(*lines: dict, currency: str = "USD") -> VoucherPosted:
    return VoucherPosted.model_validate(
        {"voucher": "FTI-E1", "posting_date": "2015-06-25", "currency": currency, "source": "invoicing", "lines": lines}
    )


EUR_INVOICE = (
    {"account": "130100", "debit": "1100.00", "transaction_currency": "EUR", "transaction_currency_amount": "1000.00"},
    {
        "account": "401100",
        "credit": "1100.00",
        "transaction_currency": "EUR",
        "transaction_currency_amount": "-1000.00",
    },
)


def journal(*lines: dict) -> GeneralJournalRequested:
    base = {"currency": "EUR", "transaction_date": "2015-08-31", "reason_code": "BadDebt"}
    return GeneralJournalRequested.model_validate(
        {"request_id": "req-1", "journal_name": "WriteOff", "lines": [base | line for line in lines]}
    )


def write_off(amount: str = "700.00", **rate) -> GeneralJournalRequested:
    return journal(
        {"account_type": "Customer", "account": "4027", "credit": amount, **rate},
        {"account_type": "Ledger", "account": "618900", "debit": amount, **rate},
    )


def booked(entries) -> list[tuple]:
    return [
        (e.account, str(e.debit), str(e.credit), e.currency, e.transaction_currency, e.transaction_currency_amount)
        for e in entries
    ]


# --- vouchers ------------------------------------------------------------------------------------


def test_voucher_lines_keep_their_transaction_currency_and_amount():
    entries = entries_for_voucher(voucher(*EUR_INVOICE), DEMO)
    assert booked(entries) == [
        ("130100", "1100.00", "0.00", "USD", "EUR", Decimal("1000.00")),
        ("401100", "0.00", "1100.00", "USD", "EUR", Decimal("-1000.00")),
    ]
    plain = entries_for_voucher(
        voucher({"account": "130100", "debit": "1"}, {"account": "401100", "credit": "1"}), DEMO
    )
    assert [(e.transaction_currency, e.transaction_currency_amount) for e in plain] == [(None, None)] * 2


def test_a_voucher_is_still_in_the_accounting_currency_and_its_line_currency_comes_with_an_amount():
    with pytest.raises(InvalidVoucher, match="currency EUR is not the accounting currency USD"):
        entries_for_voucher(voucher(*EUR_INVOICE, currency="EUR"), DEMO)
    half = ({"account": "130100", "debit": "1", "transaction_currency": "EUR"}, {"account": "401100", "credit": "1"})
    with pytest.raises(InvalidVoucher, match="line 1: transaction_currency and transaction_currency_amount come"):
        entries_for_voucher(voucher(*half), DEMO)


def test_an_accounting_currency_voucher_has_the_fingerprint_it_had_before():
    # the new line fields are absent from its content, so a voucher posted before them is the same voucher
    usd = voucher({"account": "130100", "debit": "1"}, {"account": "401100", "credit": "1"})
    assert all(
        set(line) == {"account", "debit", "credit", "text", "customer_account"}
        for line in usd.model_dump(mode="json")["lines"]
    )
    assert voucher_fingerprint(usd) != voucher_fingerprint(voucher(*EUR_INVOICE))


# --- general journals ---------------------------------------------------------------------------


def test_a_eur_write_off_at_its_rate_posts_in_usd_and_keeps_the_eur_amounts():
    opened = open_journal(write_off(exchange_rate="1.10"), DEMO, 1, 1)
    posted, entries = post_journal(opened, DEMO)
    assert booked(entries) == [
        ("130100", "0.00", "770.00", "USD", "EUR", Decimal("-700.00")),
        ("618900", "770.00", "0.00", "USD", "EUR", Decimal("700.00")),
    ]
    event = journal_posted_event(posted)
    assert [(line.currency, line.credit or line.debit, line.exchange_rate) for line in event.lines] == [
        ("EUR", Decimal("700.00"), Decimal("1.10")),
        ("EUR", Decimal("700.00"), Decimal("1.10")),
    ]
    assert event.model_dump(mode="json")["lines"][0]["exchange_rate"] == "1.10"
    assert journal_line_accounting(event.lines[0], "USD") == (Decimal("0.00"), Decimal("770.00"))
    tb = trial_balance(entries, DEMO, date(2015, 12, 31))
    assert (tb.total_debit, tb.total_credit) == (Decimal("770.00"), Decimal("770.00"))


def test_a_line_without_a_rate_takes_the_rate_for_its_date_when_the_journal_opens():
    opened = open_journal(write_off(), EUR_SETUP, 1, 1)
    assert [line.exchange_rate for line in opened.lines] == [Decimal("1.25")] * 2
    # posted later at that rate, whatever the rates are by then
    _, entries = post_journal(opened, EUR_SETUP, rates=Rates("USD", {}))
    assert [(e.debit, e.credit) for e in entries] == [
        (Decimal("0.00"), Decimal("875.00")),
        (Decimal("875.00"), Decimal("0.00")),
    ]
    # rates loaded by the handler (e.g. set over HTTP) are used as given
    later = Rates("USD", {"EUR": EUR_SETUP.exchange_rates["EUR"] + []})
    assert open_journal(write_off(), DEMO, 1, 1, later).lines[0].exchange_rate == Decimal("1.25")


def test_a_foreign_line_without_any_rate_is_refused_with_the_reason():
    with pytest.raises(InvalidJournalRequest) as caught:
        open_journal(write_off(), DEMO, 1, 1)
    assert str(caught.value) == (
        "journal request req-1 line 1: currency EUR is not the accounting currency USD; the line is in EUR and "
        "states no exchange_rate, and there is no EUR rate for 2015-08-31 (send exchange_rate, or set a rate: "
        "docs/currencies.md)"
    )


def test_accounting_currency_lines_post_exactly_as_before_and_may_not_state_another_rate():
    usd = write_off()
    usd = journal(*({**line.model_dump(mode="json"), "currency": "USD"} for line in usd.lines))
    opened = open_journal(usd, DEMO, 1, 1)
    assert all(line.exchange_rate is None for line in opened.lines)
    assert all(
        "exchange_rate" not in line
        for line in journal_posted_event(post_journal(opened, DEMO)[0]).model_dump(mode="json")["lines"]
    )
    _, entries = post_journal(opened, DEMO)
    assert booked(entries) == [
        ("130100", "0.00", "700.00", "USD", None, None),
        ("618900", "700.00", "0.00", "USD", None, None),
    ]
    with pytest.raises(
        InvalidJournalRequest,
        match="line 1: the line is in the accounting currency USD; its exchange_rate must be 1, not 1.10",
    ):
        open_journal(
            journal(
                {
                    "account_type": "Ledger",
                    "account": "618900",
                    "debit": "1",
                    "currency": "USD",
                    "exchange_rate": "1.10",
                }
            ),
            DEMO,
            1,
            1,
        )


def test_a_journal_balanced_in_eur_must_also_balance_in_usd():
    # EUR 0.03 credit = 0.045 -> 0.05 USD; three EUR 0.01 debits = 0.015 -> 0.02 each, 0.06 USD
    lines = [{"account_type": "Customer", "account": "4027", "credit": "0.03", "exchange_rate": "1.5"}]
    lines += [{"account_type": "Ledger", "account": "618900", "debit": "0.01", "exchange_rate": "1.5"}] * 3
    with pytest.raises(UnbalancedJournal, match="debits total 0.06, credits total 0.05"):
        post_journal(open_journal(journal(*lines), DEMO, 1, 1), DEMO)


def test_a_foreign_line_may_balance_against_accounting_currency_lines():
    # a write-off at a rate other than the invoice's: the difference to a realized loss line in USD
    opened = open_journal(
        journal(
            {"account_type": "Customer", "account": "4027", "credit": "700.00", "exchange_rate": "1.10"},
            {"account_type": "Ledger", "account": "618900", "debit": "700.00", "exchange_rate": "1.00"},
            {"account_type": "Ledger", "account": "810100", "debit": "70.00", "currency": "USD"},
        ),
        DEMO,
        1,
        1,
    )
    _, entries = post_journal(opened, DEMO)
    assert booked(entries) == [
        ("130100", "0.00", "770.00", "USD", "EUR", Decimal("-700.00")),
        ("618900", "700.00", "0.00", "USD", "EUR", Decimal("700.00")),
        ("810100", "70.00", "0.00", "USD", None, None),
    ]


def test_a_kwd_write_off_keeps_its_fils_and_posts_to_the_cent():
    request = journal(
        {"account_type": "Customer", "account": "4027", "credit": "10.125", "currency": "KWD", "exchange_rate": "3.25"},
        {"account_type": "Ledger", "account": "618900", "debit": "10.125", "currency": "KWD", "exchange_rate": "3.25"},
    )
    posted, entries = post_journal(open_journal(request, DEMO, 1, 1), DEMO)
    assert booked(entries) == [
        ("130100", "0.00", "32.91", "USD", "KWD", Decimal("-10.125")),  # 32.90625
        ("618900", "32.91", "0.00", "USD", "KWD", Decimal("10.125")),
    ]
    assert journal_posted_event(posted).model_dump(mode="json")["lines"][0]["credit"] == "10.125"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ({"currency": "JPY", "debit": "10.50"}, "line 1: debit 10.50 JPY: the currency has no decimals"),
        ({"currency": "CLF", "debit": "10.00"}, "line 1: currency CLF has 4 decimal places"),
        (
            {"currency": "JPY", "debit": "1", "exchange_rate": "0.001"},
            "line 1: 1.00 JPY at the exchange rate 0.001 is 0.00 USD",
        ),
        (
            {"debit": "999999999999999.00", "exchange_rate": "10"},
            "line 1: 999999999999999.00 EUR at the exchange rate 10 is 9999999999999990.00 USD, more than the largest",
        ),
    ],
)
def test_a_foreign_line_that_cannot_be_booked_is_refused(line, reason):
    with pytest.raises(InvalidJournalRequest, match=reason):
        open_journal(
            journal({"account_type": "Ledger", "account": "618900", "exchange_rate": "1.10"} | line), DEMO, 1, 1
        )


@given(
    st.lists(st.decimals(min_value=Decimal("0.01"), max_value=Decimal("1000000"), places=2), min_size=1, max_size=6),
    st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("1000"), places=4).filter(lambda r: r > 0),
)
def test_a_write_off_with_its_difference_in_usd_balances_in_the_accounting_currency(amounts, rate):
    """Per written-off EUR item: the customer credit and the write-off debit at one rate, as collections
    builds them; each converted line equals its own conversion and the journal balances in USD."""
    lines = []
    for amount in amounts:
        lines.append({"account_type": "Customer", "account": "4027", "credit": str(amount), "exchange_rate": str(rate)})
        lines.append({"account_type": "Ledger", "account": "618900", "debit": str(amount), "exchange_rate": str(rate)})
    try:
        opened = open_journal(journal(*lines), DEMO, 1, 1)
    except InvalidJournalRequest as e:
        assert "is 0.00 USD" in str(e)
        return
    _, entries = post_journal(opened, DEMO)
    assert sum(e.debit for e in entries) == sum(e.credit for e in entries)
    for entry, line in zip(entries, opened.lines, strict=True):
        assert entry.debit - entry.credit == to_accounting(line.debit - line.credit, rate, "USD")
        assert (entry.transaction_currency, entry.transaction_currency_amount) == ("EUR", line.debit - line.credit)
