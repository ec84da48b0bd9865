"""Smoke tests of the pure checking logic of scripts/chaos.py and scripts/fuzz.py (no stack started):
the invariants hold on a consistent observation and catch each kind of fault; the fuzz catalogue
pairs every malformed record with a message the contract accepts."""

from __future__ import annotations

import copy
import json
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import chaos
import fuzz

from kredit_shared.contracts import (
    CustomerInvoiceIssued,
    CustomerPaymentReceived,
    CustomerTransactionPosted,
    ExchangeRateSet,
    GeneralJournalRequested,
    VoucherPosted,
    journal_event_adapter,
    topics,
)

D = Decimal


def small_workload() -> chaos.Workload:
    w = chaos.Workload()
    invoice = {
        "message_id": "00000000-0000-0000-0000-000000000001",
        "invoice_id": "I1",
        "customer_account": "C1",
        "invoice_date": "2015-01-01",
        "currency": "USD",
        "lines": [{"amount": "100.00", "sales_tax_amount": "10.00", "revenue_account": "401100"}],
    }
    payment = {
        "message_id": "00000000-0000-0000-0000-000000000002",
        "payment_id": "P1",
        "customer_account": "C1",
        "payment_date": "2015-01-02",
        "amount": "40.00",
        "currency": "USD",
    }
    for n, (topic, message) in enumerate(
        [(topics.ERP_CUSTOMER_INVOICES, invoice), (topics.ERP_CUSTOMER_PAYMENTS, payment)]
    ):
        w.steps.append(chaos.Send(topic, "C1", json.dumps(message).encode(), f"valid-{n}", "valid"))
        w.valid_chaos_ids.add(f"valid-{n}")
    w.invoices["I1"], w.payments["P1"] = invoice, payment
    w.poison["poison-1"] = chaos.Send(topics.ERP_CUSTOMER_INVOICES, "C1", b"{", "poison-1", "poison", "not-json")
    return w


def consistent_observation() -> chaos.Observed:
    """What a correct stack shows for small_workload(): 110.00 invoiced, 40.00 paid, 70.00 open."""
    accounts = [("110110", "40.00"), ("130100", "70.00"), ("222200", "-10.00"), ("401100", "-100.00")]
    tb = {
        "accounts": [{"account": a, "balance": b} for a, b in accounts],
        "total_debit": "110.00",
        "total_credit": "110.00",
    }
    collections = {
        "C1": [
            {
                "voucher": "FTI-I1",
                "type": "Invoice",
                "debit": "110.00",
                "credit": None,
                "balance": "70.00",
                "currency": "USD",
            },
            {
                "voucher": "P1",
                "type": "Payment",
                "debit": None,
                "credit": "40.00",
                "balance": "0.00",
                "currency": "USD",
            },
        ]
    }
    settlement = {
        "C1": [
            {
                "voucher": "FTI-I1",
                "type": "Invoice",
                "invoice_id": "I1",
                "original_amount": "110.00",
                "open_amount": "70.00",
                "currency": "USD",
                "accounting_open_amount": "70.00",
            },
            {
                "voucher": "P1",
                "type": "Payment",
                "invoice_id": None,
                "original_amount": "-40.00",
                "open_amount": "0.00",
                "currency": "USD",
                "accounting_open_amount": "0.00",
            },
        ]
    }
    dlq = {topics.ERP_CUSTOMER_INVOICES: [("poison-1", None, "invalid message: not JSON")]}
    return chaos.Observed(tb, Counter({"FTI-I1": 1}), Counter({"P1": 1}), collections, settlement, dlq)


def failed(checks: list[chaos.Check]) -> list[str]:
    return [c.name for c in checks if not c.held]


def test_a_consistent_observation_passes_every_invariant():
    checks, figures = chaos.check(small_workload(), consistent_observation())
    assert failed(checks) == []
    assert figures == {"lost": 0, "duplicated": 0}


def test_each_kind_of_fault_is_caught():
    w = small_workload()

    lost = consistent_observation()
    lost.ledger_ar_vouchers = Counter()
    checks, figures = chaos.check(w, lost)
    assert figures["lost"] == 1 and "every valid invoice and payment in ledger and collections" in failed(checks)

    twice = consistent_observation()
    twice.ledger_cash_vouchers = Counter({"P1": 2})
    assert chaos.check(w, twice)[1]["duplicated"] == 1

    over = consistent_observation()
    over.settlement["C1"][0]["open_amount"] = "-5.00"
    assert "no transaction over-settled (0 ≤ open ≤ original)" in failed(chaos.check(w, over)[0])

    disagree = consistent_observation()
    disagree.collections["C1"][0]["balance"] = "69.99"
    assert "AR 130100 = open balances in collections = in settlement" in failed(chaos.check(w, disagree)[0])

    no_dlq = consistent_observation()
    no_dlq.dlq = {}
    assert any(name.startswith("every poison message on its DLQ") for name in failed(chaos.check(w, no_dlq)[0]))

    pending = consistent_observation()
    pending.dlq[topics.ERP_CUSTOMER_PAYMENTS] = [
        ("valid-1", None, "rejected mark(s) (kept: it settles if that invoice arrives)")
    ]
    assert "DLQs hold only rejects (no pending mark)" in failed(chaos.check(w, pending)[0])


def foreign_workload_and_observation() -> tuple[chaos.Workload, chaos.Observed]:
    """EUR 100.00 invoiced at 1.10 (USD 110.00), EUR 40.00 paid at 1.20 (USD 48.00) and settled against it: the
    40.00 of the invoice was booked at 44.00, so settling realizes a gain of 4.00 and USD 66.00 stays open."""
    w = small_workload()
    w.invoices["I1"] |= {"currency": "EUR", "exchange_rate": "1.10"}
    w.invoices["I1"]["lines"] = [{"amount": "100.00", "revenue_account": "401100"}]
    w.payments["P1"] |= {"currency": "EUR", "exchange_rate": "1.20"}
    o = consistent_observation()
    accounts = [("110110", "48.00"), ("130100", "66.00"), ("401100", "-110.00"), ("710100", "-4.00")]
    o.trial_balance = {
        "accounts": [{"account": a, "balance": b} for a, b in accounts],
        "total_debit": "114.00",
        "total_credit": "114.00",
    }
    invoice_row, payment_row = o.collections["C1"]
    invoice_row |= {"debit": "100.00", "balance": "60.00", "currency": "EUR", "accounting_currency_balance": "66.00"}
    payment_row |= {"currency": "EUR", "accounting_currency_balance": "0.00"}
    invoice_open, payment_open = o.settlement["C1"]
    invoice_open |= {"original_amount": "100.00", "open_amount": "60.00", "currency": "EUR"}
    invoice_open["accounting_open_amount"] = "66.00"
    payment_open |= {"currency": "EUR"}
    return w, o


def test_foreign_currency_books_are_checked_in_the_accounting_currency_and_per_currency():
    w, o = foreign_workload_and_observation()
    assert failed(chaos.check(w, o)[0]) == []

    # A settlement that did not post its realized gain: the ledger agrees with itself, not with the open items.
    no_gain = foreign_workload_and_observation()[1]
    no_gain.trial_balance["accounts"] = [
        {"account": a, "balance": b} for a, b in [("110110", "48.00"), ("130100", "62.00"), ("401100", "-110.00")]
    ]
    assert failed(chaos.check(w, no_gain)[0]) == ["AR 130100 = open balances in collections = in settlement"]

    # Revenue booked at the payment's rate instead of the invoice's.
    wrong_rate = foreign_workload_and_observation()[1]
    wrong_rate.trial_balance["accounts"][2]["balance"] = "-120.00"
    assert "revenue 401100 = valid invoices' net" in failed(chaos.check(w, wrong_rate)[0])

    # Collections and settlement agree in USD but not in EUR.
    apart = foreign_workload_and_observation()[1]
    apart.settlement["C1"][0]["open_amount"] = "59.99"
    assert failed(chaos.check(w, apart)[0]) == ["each currency's open balances: collections = settlement"]


def test_a_fifth_of_the_chaos_customers_deal_in_the_foreign_currency_at_the_rates_their_documents_state():
    w = chaos.generate(3000, seed=7)
    foreign = {m["customer_account"] for m in [*w.invoices.values(), *w.payments.values()] if m["currency"] != "USD"}
    assert len(foreign) == 60 * 0.2  # 3,000 records over 60 customers: every customer has documents
    for message in [*w.invoices.values(), *w.payments.values()]:
        if message["customer_account"] in foreign:
            assert message["currency"] == chaos.FOREIGN
            assert D(message["exchange_rate"]) in chaos.DOCUMENT_RATES
        else:
            assert message["currency"] == "USD" and "exchange_rate" not in message
    assert len({m["exchange_rate"] for m in w.payments.values() if "exchange_rate" in m}) > 1


def test_write_off_refusals_that_differ_only_in_their_ids_count_as_one_reason():
    first = chaos._without_ids("customer C0012 has nothing open: invoice INV-000123 (FTI-INV-000123) is settled")
    second = chaos._without_ids("customer M000045 has nothing open: invoice INV-000777 (CCN-INV-000777) is settled")
    assert first == second == "customer <customer> has nothing open: invoice <invoice> (<invoice>) is settled"
    assert chaos._without_ids("reason code 'X' is unknown") == "reason code 'X' is unknown"


def test_chaos_converges_only_once_every_lag_is_zero_and_nothing_moved():
    state = ("tb", "aged")
    watch = chaos.Stillness(quiet=10, stuck=180)
    # A consumer rejoining its group or restarting: its lag stands still, work is pending.
    assert all(watch.observe(t, state, {"collections": 751, "settlement": 0}) is None for t in range(0, 60))
    # It catches up; the stack is converged 10 s after the last change, not before.
    assert watch.observe(60, state, {"collections": 0, "settlement": 0}) is None
    assert watch.observe(69, state, {"collections": 0, "settlement": 0}) is None
    assert watch.observe(70, state, {"collections": 0, "settlement": 0}) == (True, 60)
    # A change of state alone (an outbox published late) restarts the quiet period.
    assert watch.observe(71, ("tb2", "aged"), {"collections": 0, "settlement": 0}) is None
    assert watch.observe(80, ("tb2", "aged"), {"collections": 0, "settlement": 0}) is None


def test_chaos_stops_waiting_when_lag_is_left_and_nothing_moves():
    watch = chaos.Stillness(quiet=10, stuck=180)
    assert watch.observe(0, ("s",), {"settlement": 3}) is None
    assert watch.observe(179, ("s",), {"settlement": 3}) is None
    assert watch.observe(180, ("s",), {"settlement": 3}) == (False, 0)


def test_the_chaos_workload_is_reproducible_and_mixed():
    first, again = chaos.generate(3000, seed=7), chaos.generate(3000, seed=7)
    assert [s.value for s in first.sends()] == [s.value for s in again.sends()]
    kinds = Counter(s.kind for s in first.sends())
    assert 10 <= kinds["duplicate"] <= 60 and 10 <= len(first.poison) <= 60
    assert {s.variant for s in first.scenarios} == {"Never", "Always", "Normal"}
    assert any(isinstance(step, chaos.WriteOff) for step in first.steps)
    parse = {topics.ERP_CUSTOMER_INVOICES: CustomerInvoiceIssued, topics.ERP_CUSTOMER_PAYMENTS: CustomerPaymentReceived}
    for send in first.sends():
        if send.kind == "valid":
            parse[send.topic].model_validate_json(send.value)  # every "valid" record is valid by the contract


PARSERS = {
    topics.ERP_CUSTOMER_INVOICES: CustomerInvoiceIssued.model_validate_json,
    topics.ERP_CUSTOMER_PAYMENTS: CustomerPaymentReceived.model_validate_json,
    topics.AR_CUSTOMER_TRANSACTIONS: CustomerTransactionPosted.model_validate_json,
    topics.GL_JOURNAL_LINES: VoucherPosted.model_validate_json,
    topics.GL_GENERAL_JOURNALS: GeneralJournalRequested.model_validate_json,
    topics.GL_JOURNAL_EVENTS: journal_event_adapter.validate_json,
    topics.GL_EXCHANGE_RATES: ExchangeRateSet.model_validate_json,
}


@pytest.mark.parametrize("spec", fuzz.SPECS, ids=[s.topic for s in fuzz.SPECS])
def test_every_fuzz_case_is_malformed_and_paired_with_a_valid_message(spec):
    cases = fuzz.catalogue(spec)
    assert {c.category for c in cases} >= {
        "syntax",
        "headers",
        "money",
        "dates",
        "currency",
        "ids",
        "structure",
        "domain",
        "size",
        "duplicates",
    }
    valid = spec.build()
    PARSERS[spec.topic](json.dumps(valid).encode())
    assert sum(fuzz.ledger_effect(spec.topic, valid).values(), D(0)) == 0, "a valid message keeps the ledger balanced"
    for case in cases:
        assert case.value != json.dumps(valid).encode()
        if case.first is not None:
            PARSERS[spec.topic](json.dumps(case.first).encode())
            assert json.loads(case.value)["message_id"] == case.first["message_id"]


def test_each_fuzzed_rate_has_a_currency_of_its_own_and_an_invoice_that_waits_for_it():
    rates = [fuzz.exchange_rate() for _ in range(3)]
    invoices = [CustomerInvoiceIssued.model_validate_json(json.dumps(fuzz.kept_invoice(r))) for r in rates]
    assert len({r["currency"] for r in rates}) == 3 and "USD" not in {r["currency"] for r in rates}
    assert [(i.currency, i.exchange_rate) for i in invoices] == [(r["currency"], None) for r in rates]
    assert len({i.invoice_id for i in invoices}) == 3


def test_path_helpers_reach_into_lists():
    message = {"lines": [{"amount": "1.00"}, {"amount": "2.00"}]}
    changed = copy.deepcopy(message)
    fuzz._set(changed, "lines.1.amount", "9.00")
    assert fuzz._get(changed, "lines.1.amount") == "9.00" and message["lines"][1]["amount"] == "2.00"


def test_the_demo_prints_each_curl_with_the_token_of_the_role_it_needs():
    import importlib.util

    spec = importlib.util.spec_from_file_location("kredit_demo", Path(__file__).parents[2] / "scripts" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    lines = [line for line in demo.try_commands(Path("data"), 8080, 8083) if "curl" in line]
    assert lines and all('-H "Authorization: Bearer $(cat data/tokens/' in line for line in lines)
    by_call = {line.split("localhost:")[1].split()[0].strip("'"): line for line in lines}
    assert "collector.token" in by_call["8080/api/v1/write-offs"]
    assert "accountant.token" in by_call["8083/api/v1/journals/WOJ-000001/post"]  # not the requester: four-eyes
    assert "admin.token" in by_call["8083/api/v1/audit"]


def test_a_dead_letter_the_relay_published_twice_counts_once_but_two_letters_of_one_record_count_twice():
    class Record:
        def __init__(self, letter_id: str) -> None:
            self.headers = [("x-chaos-id", b"poison-1"), ("message-id", letter_id.encode())]

    relay_copy = [Record("letter-a"), Record("letter-a")]
    assert len(chaos.unique_letters(relay_copy)) == 1
    dead_lettered_twice = [Record("letter-a"), Record("letter-b")]
    assert len(chaos.unique_letters(dead_lettered_twice)) == 2
