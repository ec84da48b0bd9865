"""Foreign currencies end to end through the contract (docs/currencies.md): ERP messages in, HTTP out, the four
services on the real broker.

The worked example is Dynamics 365's *Cash discounts*, "Example: Exchange rates for cash discounts": the company
books in USD; an invoice of EUR 1,000.00 at 1.10 (D365: 110 per 100) with a 2 % discount, paid with EUR 980.00
at 0.80 inside the discount period. The discount is EUR 20.00, converted at the payment's rate: USD 16.00."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from kredit_shared.contracts import ERP_CUSTOMER_INVOICES, dead_letter_topic
from kredit_shared.testing import TopicProbe, eventually

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.slow]  # a whole stack per module

D = Decimal


async def balances(stack) -> dict[str, Decimal]:
    return {account: D(row["balance"]) for account, row in (await stack.trial_balance()).items()}


def moved(before: dict[str, Decimal], after: dict[str, Decimal]) -> dict[str, Decimal]:
    """What each account moved by between two trial balances (accounts that did not move left out)."""
    return {a: after.get(a, D(0)) - before.get(a, D(0)) for a in after if after.get(a, D(0)) != before.get(a, D(0))}


async def settled_in_ledger(stack, before: dict[str, Decimal], expected: dict[str, Decimal]) -> dict[str, Decimal]:
    async def reached():
        now = moved(before, await balances(stack))
        return now if now == expected else None

    try:
        return await eventually(reached, timeout=30)
    except TimeoutError:  # say what the ledger holds instead
        assert moved(before, await balances(stack)) == expected
        raise


async def test_the_d365_example_books_the_discount_at_the_payments_rate_and_the_realized_loss(stack):
    before = await balances(stack)
    await stack.erp_invoice(
        invoice_id="FX-1001",
        customer_account="FX-4001",
        invoice_date="2026-03-02",
        currency="EUR",
        exchange_rate="1.10",
        payment_terms="Net30",
        cash_discounts=[{"percent": "2.00", "date": "2026-03-12"}],
        lines=[{"description": "Goods", "amount": "1000.00"}],
    )
    await settled_in_ledger(stack, before, {"130100": D("1100.00"), "401100": D("-1100.00")})
    await stack.wait_until_open_in_settlement("FX-4001", "FTI-FX-1001")

    after_invoice = await balances(stack)
    await stack.erp_payment(
        payment_id="FX-P-1001",
        customer_account="FX-4001",
        payment_date="2026-03-06",
        amount="980.00",
        currency="EUR",
        exchange_rate="0.80",
        settle=[{"invoice_id": "FX-1001"}],
    )
    # bank +784.00, cash discount 16.00, realized loss 300.00; the receivable is cleared.
    await settled_in_ledger(
        stack,
        after_invoice,
        {"110110": D("784.00"), "520100": D("16.00"), "810100": D("300.00"), "130100": D("-1100.00")},
    )

    # The customer page: the transaction currency as the contract has it, and the accounting currency beside it.
    rows = await stack.wait_for_transactions(
        "FX-4001", lambda rows: len(rows) >= 3 and all(D(r["balance"]) == 0 for r in rows)
    )
    by_type = {r["type"]: r for r in rows}
    invoice = by_type["Invoice"]
    assert (invoice["currency"], D(invoice["debit"]), D(invoice["accounting_currency_amount"])) == (
        "EUR",
        D("1000.00"),
        D("1100.00"),
    )
    assert D(by_type["Payment"]["credit"]) == D("980.00")
    assert D(by_type["Payment"]["accounting_currency_amount"]) == D("-784.00")
    assert D(by_type["CashDiscount"]["credit"]) == D("20.00")
    assert D(by_type["CashDiscount"]["accounting_currency_amount"]) == D("-16.00")
    assert all(D(r["accounting_currency_balance"]) == 0 for r in rows)


async def test_a_kwd_invoice_and_its_discounted_payment_are_settled_to_the_fils_and_booked_to_the_cent(stack):
    """KWD has three decimals: KWD 1,000.125 at 3.25 (USD 3,250.41) with 2 % (KWD 20.0025 -> 20.003), paid with
    KWD 980.122 at 3.20 inside the discount period: bank 3,136.39, discount 64.01 (20.003 x 3.20 = 64.0096), and the
    realized loss 3,250.41 - 3,136.39 - 64.01 = 50.01."""
    before = await balances(stack)
    await stack.erp_invoice(
        invoice_id="FX-KWD-1",
        customer_account="FX-4005",
        invoice_date="2026-03-02",
        currency="KWD",
        exchange_rate="3.25",
        payment_terms="Net30",
        cash_discounts=[{"percent": "2.00", "date": "2026-03-12"}],
        lines=[{"description": "Goods", "amount": "1000.125"}],
    )
    await settled_in_ledger(stack, before, {"130100": D("3250.41"), "401100": D("-3250.41")})
    await stack.wait_until_open_in_settlement("FX-4005", "FTI-FX-KWD-1")

    after_invoice = await balances(stack)
    await stack.erp_payment(
        payment_id="FX-P-KWD-1",
        customer_account="FX-4005",
        payment_date="2026-03-06",
        amount="980.122",
        currency="KWD",
        exchange_rate="3.20",
        settle=[{"invoice_id": "FX-KWD-1"}],
    )
    await settled_in_ledger(
        stack,
        after_invoice,
        {"110110": D("3136.39"), "520100": D("64.01"), "810100": D("50.01"), "130100": D("-3250.41")},
    )

    rows = await stack.wait_for_transactions(
        "FX-4005", lambda rows: len(rows) >= 3 and all(D(r["balance"]) == 0 for r in rows)
    )
    by_type = {r["type"]: r for r in rows}
    # the answers carry the fils as they are ("1000.125"), and the accounting currency to the cent
    assert (by_type["Invoice"]["currency"], by_type["Invoice"]["debit"]) == ("KWD", "1000.125")
    assert by_type["Invoice"]["accounting_currency_amount"] == "3250.41"
    assert (by_type["Payment"]["credit"], by_type["Payment"]["accounting_currency_amount"]) == ("980.122", "-3136.39")
    assert (by_type["CashDiscount"]["credit"], by_type["CashDiscount"]["accounting_currency_amount"]) == (
        "20.003",
        "-64.01",
    )
    assert all(D(r["accounting_currency_balance"]) == 0 for r in rows)


async def test_an_invoice_that_overtakes_its_rate_is_dead_lettered_then_booked_when_the_rate_is_set(stack):
    """The GBP invoice states no rate and comes first: dead-lettered at once (the contract), and kept; the rate
    set over HTTP afterwards reaches invoicing on gl.exchange-rates, which books the invoice at it (no replay)."""
    before = await balances(stack)
    dlq = stack.topic_prefix + dead_letter_topic(ERP_CUSTOMER_INVOICES)
    async with TopicProbe(stack.bootstrap_servers, [dlq]) as probe:
        await stack.erp_invoice(
            invoice_id="FX-GBP-1",
            customer_account="FX-4002",
            invoice_date="2026-02-01",
            currency="GBP",
            lines=[{"amount": "200.00"}],
        )
        [letter] = await probe.wait_for(lambda r: json.loads(r.value).get("invoice_id") == "FX-GBP-1", timeout=20)
    assert letter.headers["x-dlq-reason"] == (
        "invoice FX-GBP-1 is in GBP and states no exchange_rate, and there is no GBP rate for 2026-02-01 (send "
        "exchange_rate, or set a rate: docs/currencies.md). It will be booked automatically when a rate for it is "
        "set over HTTP; a replay is not needed."
    )
    assert moved(before, await balances(stack)) == {}

    answer = await stack.ledger.put("/api/v1/exchange-rates/GBP/2026-01-01", json={"rate": "1.25"})
    assert answer.status_code == 200, answer.text
    listed = (await stack.ledger.get("/api/v1/exchange-rates", params={"currency": "GBP"})).json()
    assert [(r["currency"], r["from_date"], r["rate"], r["source"]) for r in listed["rates"]] == [
        ("GBP", "2026-01-01", "1.25", "api")
    ]

    # GBP 200.00 at 1.25
    await settled_in_ledger(stack, before, {"130100": D("250.00"), "401100": D("-250.00")})


async def test_a_rate_for_the_accounting_currency_is_refused(stack):
    answer = await stack.ledger.put("/api/v1/exchange-rates/USD/2026-01-01", json={"rate": "1.25"})
    assert answer.status_code == 422 and "accounting currency" in answer.text
    # A currency with three decimals is booked (issue 17): its rate is accepted like any other.
    answer = await stack.ledger.put("/api/v1/exchange-rates/KWD/2026-01-01", json={"rate": "3.25"})
    assert answer.status_code == 200, answer.text


async def test_a_foreign_invoice_without_any_rate_is_dead_lettered_with_the_reason(stack):
    dlq = stack.topic_prefix + dead_letter_topic(ERP_CUSTOMER_INVOICES)
    async with TopicProbe(stack.bootstrap_servers, [dlq]) as probe:
        await stack.erp_invoice(
            invoice_id="FX-CHF-1",
            customer_account="FX-4003",
            invoice_date="2026-02-01",
            currency="CHF",
            lines=[{"amount": "100.00"}],
        )
        [letter] = await probe.wait_for(lambda r: json.loads(r.value).get("invoice_id") == "FX-CHF-1", timeout=20)
    assert letter.headers["x-dlq-reason"] == (
        "invoice FX-CHF-1 is in CHF and states no exchange_rate, and there is no CHF rate for 2026-02-01 (send "
        "exchange_rate, or set a rate: docs/currencies.md). It will be booked automatically when a rate for it is "
        "set over HTTP; a replay is not needed."
    )


async def test_a_foreign_balance_is_written_off_at_the_write_off_dates_rate_with_the_difference_realized(stack):
    """EUR 500.00 booked at 1.10 (USD 550.00) is written off when EUR is at 1.20: the bad debt is USD 600.00, the
    receivable falls by the 550.00 it was booked at, and the 50.00 between them is a realized exchange gain."""
    await stack.erp_invoice(
        invoice_id="FX-WO-1",
        customer_account="FX-4004",
        invoice_date="2026-04-01",
        currency="EUR",
        exchange_rate="1.10",
        lines=[{"amount": "500.00"}],
    )
    await stack.wait_until_open_in_settlement("FX-4004", "FTI-FX-WO-1")
    await stack.wait_for_transactions("FX-4004", lambda rows: len(rows) == 1)
    assert (await stack.ledger.put("/api/v1/exchange-rates/EUR/2026-06-01", json={"rate": "1.20"})).status_code == 200

    async def journal_created():  # the rate reaches collections on gl.exchange-rates; until then it refuses
        answer = await stack.collections.post(
            "/api/v1/write-offs", json={"customer_account": "FX-4004", "date": "2026-06-30"}
        )
        assert answer.status_code == 202, answer.text
        write_off_id = answer.json()["write_off_id"]

        async def decided():
            current = (await stack.collections.get(f"/api/v1/write-offs/{write_off_id}")).json()
            return current if current["status"] in ("journal-created", "rejected") else None

        current = await eventually(decided, timeout=20)
        return current if current["status"] == "journal-created" else None

    created = await eventually(journal_created, timeout=60, interval=0.5)
    before = await balances(stack)
    posted = await stack.ledger.post(f"/api/v1/journals/{created['journal_batch_number']}/post")
    assert posted.status_code == 200, posted.text
    await settled_in_ledger(stack, before, {"130100": D("-550.00"), "618900": D("600.00"), "710100": D("-50.00")})

    # Written off in both currencies, and no open item left over from the exchange difference.
    rows = await stack.wait_for_transactions(
        "FX-4004", lambda rows: any(r["type"] == "WriteOff" for r in rows) and all(D(r["balance"]) == 0 for r in rows)
    )
    assert all(D(r.get("accounting_currency_balance", r["balance"])) == 0 for r in rows)
    open_items = (await stack.settlement.get("/api/v1/customers/FX-4004/open-transactions")).json()
    assert [t for t in open_items["transactions"] if D(t["open_amount"]) != 0] == []
