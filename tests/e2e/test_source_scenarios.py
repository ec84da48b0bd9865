"""The two source documents end to end, through the contract only: ERP messages in, HTTP out.

Spec 003: a partial payment before the cash discount date and the final payment after it.
Spec 000: write-off journals from the four entry points of Credit and collections.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from kredit_shared.testing import eventually

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.slow]  # a whole stack per module


def row(voucher, type_, date, invoice_id, debit, credit, balance):
    return {
        "voucher": voucher,
        "type": type_,
        "date": date,
        "invoice_id": invoice_id,
        "debit": debit,
        "credit": credit,
        "balance": balance,
    }


def table(rows: list[dict]) -> list[dict]:
    keys = ("voucher", "type", "date", "invoice_id", "debit", "credit", "balance")
    return [{k: r[k] for k in keys} for r in rows]


def amount(tb: dict[str, dict], account: str, column: str = "balance") -> Decimal:
    return Decimal(tb[account][column]) if account in tb else Decimal("0.00")


async def test_partial_payment_before_the_discount_date_then_the_rest_after_it(stack):
    await stack.erp_invoice(
        invoice_id="10020",
        customer_account="4027",
        customer_name="Fabrikam customer 4027",
        invoice_date="2015-06-25",
        payment_terms="Net30",
        cash_discount_code="1%14D",
        lines=[{"description": "Goods", "amount": "1000.00", "sales_tax_amount": "0.00", "revenue_account": "401100"}],
    )
    await stack.wait_until_open_in_settlement("4027", "FTI-10020")
    invoice = (await stack.invoicing.get("/api/v1/invoices/10020")).json()
    assert invoice["due_date"] == "2015-07-25"

    preview = await stack.settlement.post(
        "/api/v1/settlement-preview",
        json={
            "customer_account": "4027",
            "payment_date": "2015-07-01",
            "marks": [{"invoice_id": "10020", "amount_to_settle": "297.00", "use_cash_discount": "Normal"}],
        },
    )
    assert preview.status_code == 200, preview.text
    [mark] = preview.json()["marks"]
    assert (
        mark["cash_discount_date"],
        mark["cash_discount_amount"],
        mark["use_cash_discount"],
        mark["cash_discount_taken"],
        mark["cash_discount_amount_to_take"],
    ) == ("2015-07-09", "10.00", "Normal", "0.00", "3.00")

    await stack.erp_payment(
        payment_id="ARP-10020",
        customer_account="4027",
        payment_date="2015-07-01",
        amount="297.00",
        settle=[{"invoice_id": "10020", "amount_to_settle": "297.00", "use_cash_discount": "Normal"}],
    )
    rows = await stack.wait_for_transactions(
        "4027",
        lambda rows: (
            any(r["voucher"] == "DISC-10020" for r in rows)
            and next(r for r in rows if r["voucher"] == "FTI-10020")["balance"] == "700.00"
        ),
    )
    assert table(rows) == [
        row("FTI-10020", "Invoice", "2015-06-25", "10020", "1000.00", None, "700.00"),
        row("ARP-10020", "Payment", "2015-07-01", None, None, "297.00", "0.00"),
        row("DISC-10020", "CashDiscount", "2015-07-01", None, None, "3.00", "0.00"),
    ]

    after_date = {
        "customer_account": "4027",
        "payment_date": "2015-07-11",
        "marks": [{"invoice_id": "10020", "amount_to_settle": "700.00", "use_cash_discount": "Normal"}],
    }
    [normal] = (await stack.settlement.post("/api/v1/settlement-preview", json=after_date)).json()["marks"]
    assert (normal["cash_discount_amount"], normal["cash_discount_taken"], normal["cash_discount_amount_to_take"]) == (
        "0.00",
        "3.00",
        "0.00",
    )
    after_date["marks"][0]["use_cash_discount"] = "Always"
    [always] = (await stack.settlement.post("/api/v1/settlement-preview", json=after_date)).json()["marks"]
    assert (always["cash_discount_amount_to_take"], always["amount_to_settle"]) == ("7.00", "693.00")

    await stack.erp_payment(
        payment_id="ARP-10021",
        customer_account="4027",
        payment_date="2015-07-11",
        amount="700.00",
        settle=[{"invoice_id": "10020", "amount_to_settle": "700.00", "use_cash_discount": "Normal"}],
    )
    rows = await stack.wait_for_transactions(
        "4027", lambda rows: len(rows) == 4 and all(r["balance"] == "0.00" for r in rows)
    )
    assert table(rows) == [
        row("FTI-10020", "Invoice", "2015-06-25", "10020", "1000.00", None, "0.00"),
        row("ARP-10020", "Payment", "2015-07-01", None, None, "297.00", "0.00"),
        row("DISC-10020", "CashDiscount", "2015-07-01", None, None, "3.00", "0.00"),
        row("ARP-10021", "Payment", "2015-07-11", None, None, "700.00", "0.00"),
    ]

    async def ledger_settled():
        tb = await stack.trial_balance()
        return tb if amount(tb, "110110", "debit") == Decimal("997.00") else None

    tb = await eventually(ledger_settled, timeout=20)
    assert amount(tb, "130100") == Decimal("0.00")
    assert amount(tb, "110110", "debit") == Decimal("997.00")
    assert amount(tb, "520100", "debit") == Decimal("3.00")
    assert amount(tb, "401100", "credit") == Decimal("1000.00")


async def write_off_and_post(stack, body: dict) -> dict:
    """POST a write-off, wait for its journal, post the journal, wait until it is settled."""
    response = await stack.collections.post("/api/v1/write-offs", json=body)
    assert response.status_code == 202, response.text
    write_off_id = response.json()["write_off_id"]

    async def status(expected: str):
        current = (await stack.collections.get(f"/api/v1/write-offs/{write_off_id}")).json()
        return current if current["status"] == expected else None

    created = await eventually(lambda: status("journal-created"), timeout=20)
    batch = created["journal_batch_number"]
    journal = (await stack.ledger.get(f"/api/v1/journals/{batch}")).json()
    assert journal["journal_name"] == "WriteOff" and journal["status"] == "open"
    assert journal["total_debit"] == journal["total_credit"]
    posted = await stack.ledger.post(f"/api/v1/journals/{batch}/post")
    assert posted.status_code == 200, posted.text
    await eventually(lambda: status("posted"), timeout=20)
    return journal


async def invoices_open(stack, account: str, count: int) -> None:
    await stack.wait_for_transactions(account, lambda rows: len(rows) == count)
    for r in await stack.transactions(account):
        await stack.wait_until_open_in_settlement(account, r["voucher"])


def goods(amount: str, tax: str = "0.00") -> list[dict]:
    return [{"description": "Goods", "amount": amount, "sales_tax_amount": tax}]


async def aged_customers(stack) -> set[str]:
    """Customers with a balance today (write-offs are dated today unless a date is given)."""
    body = (await stack.collections.get("/api/v1/aged-balances")).json()
    return {c["customer_account"] for c in body["customers"]}


async def test_collections_page_writes_off_two_selected_transactions_with_reason_bad_debt(stack):
    for invoice_id, date, amount_ in (("CW-1001", "2015-03-10", "450.00"), ("CW-1002", "2015-04-02", "180.00")):
        await stack.erp_invoice(
            invoice_id=invoice_id,
            customer_account="US-004",
            customer_name="Cave Wholesales",
            invoice_date=date,
            payment_terms="Net30",
            lines=goods(amount_),
        )
    await invoices_open(stack, "US-004", 2)
    await stack.wait_until_booked("FTI-CW-1001", "FTI-CW-1002")
    before = await stack.trial_balance()

    journal = await write_off_and_post(
        stack, {"customer_account": "US-004", "vouchers": ["FTI-CW-1001", "FTI-CW-1002"], "reason_comment": "Bad debt"}
    )
    # Seed 000: one line reverses the customer balance (the net of both), one posts to the write-off
    # account; the customer line names both invoices, and each is settled on its own.
    assert [(l["account_type"], l["account"], l["debit"], l["credit"]) for l in journal["lines"]] == [
        ("Customer", "US-004", "0.00", "630.00"),
        ("Ledger", "618900", "630.00", "0.00"),
    ]
    assert [(s["voucher"], s["amount"]) for s in journal["lines"][0]["settles"]] == [
        ("FTI-CW-1001", "450.00"),
        ("FTI-CW-1002", "180.00"),
    ]
    assert len({l["voucher"] for l in journal["lines"]}) == 1, "one balanced voucher"
    assert {(l["reason_code"], l["reason_comment"]) for l in journal["lines"]} == {("BadDebt", "Bad debt")}

    rows = await stack.wait_for_transactions(
        "US-004", lambda rows: len(rows) == 3 and all(r["balance"] == "0.00" for r in rows)
    )
    assert sorted(r["type"] for r in rows) == ["Invoice", "Invoice", "WriteOff"]
    assert "US-004" not in await aged_customers(stack)
    after = await stack.trial_balance()
    assert amount(after, "130100") - amount(before, "130100") == Decimal("-630.00")
    assert amount(after, "618900") - amount(before, "618900") == Decimal("630.00")


async def test_open_invoices_page_writes_off_one_invoice(stack):
    await stack.erp_invoice(
        invoice_id="CIV-000667",
        customer_account="US-002",
        customer_name="Contoso Retail LA",
        invoice_date="2015-01-20",
        payment_terms="Net30",
        lines=goods("320.00"),
    )
    await stack.erp_invoice(
        invoice_id="CIV-000668",
        customer_account="US-002",
        customer_name="Contoso Retail LA",
        invoice_date="2015-02-20",
        payment_terms="Net30",
        lines=goods("80.00"),
    )
    await invoices_open(stack, "US-002", 2)
    open_invoices = (await stack.collections.get("/api/v1/open-invoices", params={"customer_account": "US-002"})).json()
    assert "CIV-000667" in str(open_invoices)

    journal = await write_off_and_post(stack, {"customer_account": "US-002", "invoice_id": "CIV-000667"})
    assert [
        (l["account_type"], l["debit"], l["credit"]) for l in journal["lines"] if l["account_type"] == "Customer"
    ] == [("Customer", "0.00", "320.00")]
    rows = await stack.wait_for_transactions(
        "US-002",
        lambda rows: (
            any(r["type"] == "WriteOff" for r in rows)
            and next(r for r in rows if r["invoice_id"] == "CIV-000667")["balance"] == "0.00"
        ),
    )
    assert next(r for r in rows if r["invoice_id"] == "CIV-000668")["balance"] == "80.00", (
        "the other invoice stays open"
    )
    assert "US-002" in await aged_customers(stack)


async def test_aged_balances_page_writes_off_the_whole_balance_of_a_customer(stack):
    await stack.erp_invoice(
        invoice_id="BI-3001",
        customer_account="US-010",
        customer_name="Birch company",
        invoice_date="2015-02-01",
        payment_terms="Net30",
        lines=goods("75.00"),
    )
    await invoices_open(stack, "US-010", 1)
    assert "US-010" in await aged_customers(stack)
    await write_off_and_post(stack, {"customer_account": "US-010"})
    await stack.wait_for_transactions(
        "US-010", lambda rows: all(r["balance"] == "0.00" for r in rows) and len(rows) == 2
    )
    assert "US-010" not in await aged_customers(stack)


async def test_all_customers_page_writes_off_a_customer_with_the_sales_tax_separated(stack):
    parameters = (await stack.collections.get("/api/v1/parameters/write-off")).json()
    assert (
        await stack.collections.put("/api/v1/parameters/write-off", json=parameters | {"separate_sales_tax": True})
    ).status_code == 200
    try:
        await stack.erp_invoice(
            invoice_id="CR-2001",
            customer_account="US-001",
            customer_name="Contoso Retail San Diego",
            invoice_date="2015-05-15",
            payment_terms="Net30",
            lines=goods("1200.00", tax="100.00"),
        )
        await invoices_open(stack, "US-001", 1)
        await stack.wait_until_booked("FTI-CR-2001")
        before = await stack.trial_balance()
        journal = await write_off_and_post(stack, {"customer_account": "US-001", "reason_code": "Bankrupt"})
        assert sorted((l["account"], l["debit"]) for l in journal["lines"] if l["account_type"] == "Ledger") == [
            ("222200", "100.00"),
            ("618900", "1200.00"),
        ]
        assert {l["reason_code"] for l in journal["lines"]} == {"Bankrupt"}
        await stack.wait_for_transactions("US-001", lambda rows: all(r["balance"] == "0.00" for r in rows))
        after = await stack.trial_balance()
        assert amount(after, "130100") - amount(before, "130100") == Decimal("-1300.00")
        assert amount(after, "618900") - amount(before, "618900") == Decimal("1200.00")
        assert amount(after, "222200") - amount(before, "222200") == Decimal("100.00")
    finally:
        await stack.collections.put("/api/v1/parameters/write-off", json=parameters)


async def test_payments_that_overtake_their_invoice_settle_as_if_they_had_arrived_in_order(stack):
    """The ERP sends the invoice and both payments at once: the payments reach settlement first (the
    invoice goes through invoicing), yet the source's numbers come out, discount included."""
    account = "4127"
    await stack.erp_invoice(
        invoice_id="10120",
        customer_account=account,
        invoice_date="2015-06-25",
        payment_terms="Net30",
        cash_discount_code="1%14D",
        lines=goods("1000.00"),
    )
    for payment_id, date, paid in (("ARP-10120", "2015-07-01", "297.00"), ("ARP-10121", "2015-07-11", "700.00")):
        await stack.erp_payment(
            payment_id=payment_id,
            customer_account=account,
            payment_date=date,
            amount=paid,
            settle=[{"invoice_id": "10120", "amount_to_settle": paid, "use_cash_discount": "Normal"}],
        )
    rows = await stack.wait_for_transactions(
        account, lambda rows: len(rows) == 4 and all(r["balance"] == "0.00" for r in rows)
    )
    assert table(rows) == [
        row("FTI-10120", "Invoice", "2015-06-25", "10120", "1000.00", None, "0.00"),
        row("ARP-10120", "Payment", "2015-07-01", None, None, "297.00", "0.00"),
        row("DISC-10120", "CashDiscount", "2015-07-01", None, None, "3.00", "0.00"),
        row("ARP-10121", "Payment", "2015-07-11", None, None, "700.00", "0.00"),
    ]
