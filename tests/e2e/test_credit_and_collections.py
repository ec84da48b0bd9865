"""Credit and collections management end to end, through the contract only (issue 18): credit checks
at and just over the limit, collection letters whose fee becomes a receivable with a balanced voucher,
an interest note to the cent, and the seed's write-off layout settling each invoice."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest

from kredit_shared.testing import eventually

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.slow]  # a whole stack per module

TODAY = date.today()


def days_ago(days: int) -> str:
    return (TODAY - timedelta(days=days)).isoformat()


def goods(amount: str) -> list[dict]:
    return [{"description": "Goods", "amount": amount}]


async def invoice_due(stack, account: str, invoice_id: str, amount: str, overdue_days: int) -> None:
    await stack.erp_invoice(
        invoice_id=invoice_id,
        customer_account=account,
        customer_name=f"Customer {account}",
        invoice_date=days_ago(overdue_days + 30),
        due_date=days_ago(overdue_days),
        lines=goods(amount),
    )


async def until_transaction(stack, account: str, voucher: str) -> dict:
    rows = await stack.wait_for_transactions(account, lambda rows: any(r["voucher"] == voucher for r in rows))
    return next(r for r in rows if r["voucher"] == voucher)


async def ledger_when(stack, after_check) -> dict:
    async def moved():
        tb = await stack.trial_balance()
        return tb if after_check(tb) else None

    return await eventually(moved, timeout=20)


def balance(tb: dict, account: str) -> Decimal:
    return Decimal(tb[account]["balance"]) if account in tb else Decimal("0.00")


async def post_json(client, path: str, body: dict | None = None, status: int = 200) -> dict:
    response = await client.post(path, json=body)
    assert response.status_code == status, response.text
    return response.json()


async def test_credit_checks_pass_at_the_limit_and_block_just_over_it(stack):
    await invoice_due(stack, "CR-1", "CR-1-1", "7500.00", 0)
    await until_transaction(stack, "CR-1", "FTI-CR-1-1")
    response = await stack.collections.put("/api/v1/customers/CR-1/credit", json={"credit_limit": "10000.00"})
    assert response.status_code == 200, response.text
    assert (response.json()["effective_credit_limit"], response.json()["available_credit"]) == ("10000.00", "2500.00")

    at = await post_json(stack.collections, "/api/v1/credit-checks", {"customer_account": "CR-1", "amount": "2500.00"})
    assert (at["blocked"], at["balance"], at["effective_credit_limit"]) == (False, "7500.00", "10000.00")
    over = await post_json(
        stack.collections, "/api/v1/credit-checks", {"customer_account": "CR-1", "amount": "2500.01"}
    )
    assert over["blocked"] is True and "by 0.01" in over["reason"]

    # A payment lowers the balance the check sees (settlement -> collections).
    await stack.erp_payment(payment_id="CR-1-P", customer_account="CR-1", payment_date=days_ago(0), amount="0.01")

    async def paid():
        check = await post_json(
            stack.collections, "/api/v1/credit-checks", {"customer_account": "CR-1", "amount": "2500.01"}
        )
        return check if check["balance"] == "7499.99" else None

    assert (await eventually(paid, timeout=20))["blocked"] is False


async def test_letters_for_15_35_and_65_days_overdue_post_the_fee_as_a_receivable_once(stack):
    for invoice_id, days, amount in (("DUN-15", 15, "150.00"), ("DUN-35", 35, "350.00"), ("DUN-65", 65, "650.00")):
        await invoice_due(stack, "DUN-1", invoice_id, amount, days)
    await stack.wait_for_transactions("DUN-1", lambda rows: len(rows) == 3)
    await stack.wait_until_booked("FTI-DUN-15", "FTI-DUN-35", "FTI-DUN-65")
    before = await stack.trial_balance()

    run = await post_json(stack.collections, "/api/v1/collection-letter-runs", {"as_of": TODAY.isoformat()})
    letters = [l for l in run["letters"] if l["customer_account"] == "DUN-1"]
    assert [(l["code"], l["fee"], [i["invoice_id"] for i in l["invoices"]]) for l in letters] == [
        ("Reminder", "0.00", ["DUN-15"]),
        ("Second", "25.00", ["DUN-35"]),
        ("Final", "0.00", ["DUN-65"]),
    ]
    second = letters[1]
    page = (await stack.collections.get(second["document_url"])).text
    assert all(text in page for text in ("Collection letter", "Second", "DUN-35", "350.00", "25.00", "375.00"))

    # invoicing posts the fee: a CollectionLetterFee customer transaction and a balanced voucher.
    fee = await until_transaction(stack, "DUN-1", f"CLF-{second['letter_id']}")
    assert (fee["type"], fee["debit"], fee["balance"], fee["invoice_id"]) == (
        "CollectionLetterFee",
        "25.00",
        "25.00",
        second["letter_id"],
    )
    await stack.wait_until_open_in_settlement("DUN-1", f"CLF-{second['letter_id']}")
    after = await ledger_when(stack, lambda tb: balance(tb, "801200") != balance(before, "801200"))
    assert balance(after, "801200") - balance(before, "801200") == Decimal("-25.00")
    assert balance(after, "130100") - balance(before, "130100") == Decimal("25.00")

    again = await post_json(stack.collections, "/api/v1/collection-letter-runs", {"as_of": TODAY.isoformat()})
    assert [l for l in again["letters"] if l["customer_account"] == "DUN-1"] == []
    listed = (await stack.collections.get("/api/v1/customers/DUN-1/collection-letters")).json()["letters"]
    assert len(listed) == 3


async def test_interest_on_1000_at_1_5_percent_a_month_for_45_days_posts_22_19_balanced(stack):
    await invoice_due(stack, "INT-1", "INT-1-1", "1000.00", 45)
    await until_transaction(stack, "INT-1", "FTI-INT-1-1")
    await stack.wait_until_booked("FTI-INT-1-1")
    before = await stack.trial_balance()

    run = await post_json(
        stack.collections, "/api/v1/interest-note-runs", {"as_of": TODAY.isoformat(), "customer_account": "INT-1"}
    )
    [note] = run["interest_notes"]
    assert (note["total"], note["lines"][0]["days"], note["interest_code"]) == ("22.19", 45, "1.5%M")

    posted = await until_transaction(stack, "INT-1", f"INT-{note['note_id']}")
    assert (posted["type"], posted["debit"], posted["balance"]) == ("InterestNote", "22.19", "22.19")
    after = await ledger_when(stack, lambda tb: balance(tb, "801100") != balance(before, "801100"))
    assert balance(after, "801100") - balance(before, "801100") == Decimal("-22.19")
    assert balance(after, "130100") - balance(before, "130100") == Decimal("22.19")
    assert (
        await post_json(
            stack.collections, "/api/v1/interest-note-runs", {"as_of": TODAY.isoformat(), "customer_account": "INT-1"}
        )
    )["interest_notes"] == []

    # settlement treats the note as a receivable: a payment of both settles both.
    await stack.wait_until_open_in_settlement("INT-1", f"INT-{note['note_id']}")
    await stack.erp_payment(payment_id="INT-1-P", customer_account="INT-1", payment_date=days_ago(0), amount="1022.19")
    await stack.wait_for_transactions(
        "INT-1", lambda rows: len(rows) == 3 and all(r["balance"] == "0.00" for r in rows)
    )


async def test_a_write_off_of_120_and_80_is_one_customer_line_of_200_and_settles_both_invoices(stack):
    for invoice_id, amount in (("WO-120", "120.00"), ("WO-80", "80.00")):
        await invoice_due(stack, "WO-1", invoice_id, amount, 10)
    await stack.wait_for_transactions("WO-1", lambda rows: len(rows) == 2)
    for voucher in ("FTI-WO-120", "FTI-WO-80"):
        await stack.wait_until_open_in_settlement("WO-1", voucher)

    response = await stack.collections.post("/api/v1/write-offs", json={"customer_account": "WO-1"})
    assert response.status_code == 202, response.text
    write_off_id = response.json()["write_off_id"]

    async def created():
        body = (await stack.collections.get(f"/api/v1/write-offs/{write_off_id}")).json()
        return body if body["journal_batch_number"] else None

    batch = (await eventually(created, timeout=20))["journal_batch_number"]
    journal = (await stack.ledger.get(f"/api/v1/journals/{batch}")).json()
    assert [(l["account_type"], l["account"], l["debit"], l["credit"]) for l in journal["lines"]] == [
        ("Customer", "WO-1", "0.00", "200.00"),
        ("Ledger", "618900", "200.00", "0.00"),
    ]
    assert (await stack.ledger.post(f"/api/v1/journals/{batch}/post")).status_code == 200
    rows = await stack.wait_for_transactions(
        "WO-1", lambda rows: len(rows) == 3 and all(r["balance"] == "0.00" for r in rows)
    )
    assert {r["voucher"]: r["balance"] for r in rows if r["type"] == "Invoice"} == {
        "FTI-WO-120": "0.00",
        "FTI-WO-80": "0.00",
    }
