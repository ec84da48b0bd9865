"""Cash application as Dynamics 365 does it, end to end through the contract: ERP messages in, HTTP out,
the four services on the real broker. Each test reproduces the worked numbers of one of Microsoft's public
Dynamics 365 Finance articles to the cent (the vendor articles mirrored for customers).

Settlement's parameters are one row for the whole stack: each test sets every parameter it relies on first,
and waits for what it posted before the next one changes them."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kredit_invoicing.domain import VOUCHER_PREFIXES
from kredit_shared.testing import eventually

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.slow]  # a whole stack per module

D = Decimal
DEFAULTS = {
    "calculate_cash_discounts_for_partial_payments": True,
    "calculate_cash_discounts_for_credit_notes": False,
    "maximum_penny_difference": "0.00",
    "maximum_overpayment_or_underpayment": "0.00",
    "cash_discount_administration": "Specific",
    "automatic_settlement": True,
    "prioritize_settlement": False,
    "use_priority_for_automatic_settlements": False,
    "settlement_priority": [],
}


async def parameters(stack, **changes) -> dict:
    response = await stack.settlement.put("/api/v1/parameters", json=DEFAULTS | changes)
    assert response.status_code == 200, response.text
    return response.json()


def goods(amount: str) -> list[dict]:
    return [{"description": "Goods", "amount": amount}]


async def invoice(stack, customer: str, invoice_id: str, amount: str, on: str, *tiers: tuple[str, str], **more) -> str:
    """Publish an invoice (or credit note, interest note) as the ERP would and wait until settlement holds it.
    Its discount `tiers` (date, percent) are sent when given, so that a `cash_discount_code` in `more` is looked up."""
    await stack.erp_invoice(
        invoice_id=invoice_id,
        customer_account=customer,
        invoice_date=on,
        lines=goods(amount),
        **({"cash_discounts": [{"percent": p, "date": d} for d, p in tiers]} if tiers else {}),
        **more,
    )
    kind = more.get("document_type") or ("CreditNote" if amount.startswith("-") else "Invoice")
    voucher = VOUCHER_PREFIXES[kind] + invoice_id
    await stack.wait_until_open_in_settlement(customer, voucher)
    return voucher


async def rows_when(stack, customer: str, check) -> dict[str, dict]:
    rows = await stack.wait_for_transactions(customer, lambda rows: check({r["voucher"]: r for r in rows}))
    return {r["voucher"]: r for r in rows}


def by_type(rows: dict[str, dict], kind: str) -> list[dict]:
    return [r for r in rows.values() if r["type"] == kind]


async def ledger(stack, voucher: str) -> list[tuple[str, str, str]]:
    async def posted():
        entries = (await stack.ledger.get("/api/v1/ledger-entries", params={"voucher": voucher})).json()["entries"]
        return entries or None

    return sorted((e["account"], e["debit"], e["credit"]) for e in await eventually(posted, timeout=20))


async def preview(stack, customer: str, on: str, *marks: dict, **more) -> list[dict]:
    response = await stack.settlement.post(
        "/api/v1/settlement-preview",
        json={"customer_account": customer, "payment_date": on, "marks": list(marks)} | more,
    )
    assert response.status_code == 200, response.text
    return response.json()["marks"]


def shown(mark: dict) -> tuple:
    keys = ("cash_discount_date", "cash_discount_amount", "use_cash_discount", "cash_discount_taken")
    return (*(mark[k] for k in keys), mark["cash_discount_amount_to_take"], mark["amount_to_settle"])


# --- Settle a partial customer payment that has discounts on credit notes ----------------------


async def test_a_credit_note_with_its_own_1_percent_discount_settles_100_00_of_the_invoice(stack):
    # The clerk settles the two by hand: with automatic settlement the credit note would settle on arrival.
    await parameters(stack, calculate_cash_discounts_for_credit_notes=True, automatic_settlement=False)
    due = {"due_date": "2015-07-28"}
    await invoice(stack, "4035", "10050", "1000.00", "2015-06-28", ("2015-07-12", "1.00"), **due)
    note = await invoice(stack, "4035", "CR-10050", "-100.00", "2015-06-28", ("2015-07-12", "1.00"), **due)

    [inv, cn] = await preview(stack, "4035", "2015-06-28", {"invoice_id": "10050"}, {"invoice_id": "CR-10050"})
    assert (inv["amount_to_settle"], inv["cash_discount_amount"]) == ("990.00", "10.00")
    assert shown(cn) == ("2015-07-12", "-1.00", "Normal", "0.00", "-1.00", "-99.00")

    response = await stack.settlement.post(
        "/api/v1/settlements",
        json={
            "customer_account": "4035",
            "date": "2015-06-28",
            "marks": [{"invoice_id": "10050"}, {"invoice_id": "CR-10050"}],
        },
    )
    assert response.status_code == 201, response.text
    settled = response.json()
    pairs = [
        (p["debit_voucher"], p["credit_voucher"], p["amount_settled"], p["cash_discount_amount"])
        for p in settled["pairs"]
    ]
    assert pairs == [("FTI-10050", note, "99.00", "1.00"), (f"DISC-{note}-2", note, "1.00", "0.00")]
    assert settled["pairs"][0]["cash_discount_voucher"] == f"DISC-{note}"
    assert {t["voucher"]: t["open_amount"] for t in settled["transactions"]} == {"FTI-10050": "900.00", note: "0.00"}

    # Each settled pair reaches collections on its own: wait for both (the credit note closes with the second).
    rows = await rows_when(stack, "4035", lambda r: len(r) == 4 and r[note]["balance"] == "0.00")
    assert rows["FTI-10050"]["balance"] == "900.00"
    discounts = by_type(rows, "CashDiscount")
    assert sorted((r["debit"] or "", r["credit"] or "", r["balance"]) for r in discounts) == [
        ("", "1.00", "0.00"),
        ("1.00", "", "0.00"),
    ], "the offsetting pair of discount transactions"
    for discount in discounts:
        entries = await ledger(stack, discount["voucher"])
        assert {(a, max(d, c)) for a, d, c in entries} == {("130100", "1.00"), ("520100", "1.00")}


# --- Settle a partial customer payment that has multiple discount periods (customer 4031) -------


async def test_294_00_in_the_2_percent_period_takes_6_00_and_693_00_in_the_1_percent_period_takes_7_00(stack):
    await parameters(stack)
    # The chained code as invoicing looks it up: 2 % until June 30, then 1%14D's 1 % until July 9.
    await invoice(stack, "4031", "MD-10030", "1000.00", "2020-06-25", cash_discount_code="2%5D", due_date="2020-07-25")
    first_mark = {"invoice_id": "MD-10030", "amount_to_settle": "294.00"}
    [first] = await preview(stack, "4031", "2020-06-28", first_mark)
    assert shown(first) == ("2020-06-30", "20.00", "Normal", "0.00", "6.00", "294.00")
    await stack.erp_payment(
        payment_id="ARP-MD-1", customer_account="4031", payment_date="2020-06-28", amount="294.00", settle=[first_mark]
    )
    rows = await rows_when(stack, "4031", lambda r: len(r) == 3 and r["FTI-MD-10030"]["balance"] == "700.00")
    assert [d["credit"] for d in by_type(rows, "CashDiscount")] == ["6.00"]

    second_mark = {"invoice_id": "MD-10030", "amount_to_settle": "693.00"}
    [second] = await preview(stack, "4031", "2020-07-08", second_mark)
    # The second tier's 10.00 on the original amount (the article prints 30.00 here, which none of its rules gives).
    assert shown(second)[:4] == ("2020-07-09", "10.00", "Normal", "6.00")
    assert (second["cash_discount_amount_to_take"], second["amount_to_settle"]) == ("7.00", "693.00")
    await stack.erp_payment(
        payment_id="ARP-MD-2", customer_account="4031", payment_date="2020-07-08", amount="693.00", settle=[second_mark]
    )
    rows = await rows_when(stack, "4031", lambda r: len(r) == 5 and r["FTI-MD-10030"]["balance"] == "0.00")
    assert sorted(d["credit"] for d in by_type(rows, "CashDiscount")) == ["6.00", "7.00"]
    assert (rows["ARP-MD-1"]["balance"], rows["ARP-MD-2"]["balance"]) == ("0.00", "0.00")
    second_discount = next(d["voucher"] for d in by_type(rows, "CashDiscount") if d["credit"] == "7.00")
    assert await ledger(stack, second_discount) == [("130100", "0.00", "7.00"), ("520100", "7.00", "0.00")]


# --- Use one payment to settle invoices that span multiple discount periods (customer 4032) -------


@pytest.mark.parametrize(
    ("customer", "on", "paid", "amounts", "settled", "left"),
    [
        # All three in full on June 29: 10042 is in its 2 % period, 10041 in its 1 %, 10040 past its own.
        ("4032-A", "2020-06-29", "2970.00", (None, None, None), ("1000.00/0.00", "990.00/10.00", "980.00/20.00"), None),
        # July 1: 10042 has moved to its 1 % period.
        ("4032-B", "2020-07-01", "2980.00", (None, None, None), ("1000.00/0.00", "990.00/10.00", "990.00/10.00"), None),
        # Half of each on June 29: each partial payment takes its share of the discount.
        (
            "4032-C",
            "2020-06-29",
            "1485.00",
            ("500.00", "495.00", "490.00"),
            ("500.00/0.00", "495.00/5.00", "490.00/10.00"),
            ("500.00", "500.00", "500.00"),
        ),
        # 1,485.00 against the full amounts: oldest first, then the larger discount; 485.00 / 0.98 x 0.02 = 9.90.
        (
            "4032-D",
            "2020-06-29",
            "1485.00",
            ("1000.00", "990.00", "980.00"),
            ("1000.00/0.00", None, "485.00/9.90"),
            ("0.00", "1000.00", "505.10"),
        ),
    ],
)
async def test_one_payment_settles_invoices_that_span_discount_periods(
    stack, customer, on, paid, amounts, settled, left
):
    await parameters(stack)
    ids = [f"{customer}-{n}" for n in ("10040", "10041", "10042")]
    await invoice(stack, customer, ids[0], "1000.00", "2020-05-15", ("2020-05-29", "1.00"), due_date="2020-06-14")
    await invoice(stack, customer, ids[1], "1000.00", "2020-06-25", ("2020-07-09", "1.00"), due_date="2020-07-25")
    await invoice(
        stack,
        customer,
        ids[2],
        "1000.00",
        "2020-06-25",
        ("2020-06-30", "2.00"),
        ("2020-07-09", "1.00"),
        due_date="2020-07-25",
    )
    marks = [{"invoice_id": i} | ({"amount_to_settle": a} if a else {}) for i, a in zip(ids, amounts, strict=True)]
    payment = f"ARP-{customer}"
    await stack.erp_payment(payment_id=payment, customer_account=customer, payment_date=on, amount=paid, settle=marks)

    rows = await rows_when(stack, customer, lambda r: payment in r and r[payment]["balance"] == "0.00")
    assert [rows[f"FTI-{i}"]["balance"] for i in ids] == list(left or ("0.00", "0.00", "0.00"))
    [settlement] = (await stack.settlement.get("/api/v1/settlements", params={"customer_account": customer})).json()[
        "settlements"
    ]
    pairs = {p["debit_voucher"]: f"{p['amount_settled']}/{p['cash_discount_amount']}" for p in settlement["pairs"]}
    assert pairs == {f"FTI-{i}": s for i, s in zip(ids, settled, strict=True) if s}


# --- Settle partial and final payments in full before the discount date (customer 4028) ----------


async def test_two_payments_of_495_00_within_the_period_each_take_5_00(stack):
    await parameters(stack)
    await invoice(stack, "4028", "PF-10010", "1000.00", "2020-06-25", ("2020-07-09", "1.00"), due_date="2020-07-25")
    full, half = {"invoice_id": "PF-10010"}, {"invoice_id": "PF-10010", "amount_to_settle": "500.00"}
    [whole] = await preview(stack, "4028", "2020-07-01", full)
    assert shown(whole) == ("2020-07-09", "10.00", "Normal", "0.00", "10.00", "990.00")
    [partly] = await preview(stack, "4028", "2020-07-01", half)
    assert (partly["cash_discount_amount_to_take"], partly["amount_to_settle"]) == ("5.05", "500.00")

    first_mark = {"invoice_id": "PF-10010", "amount_to_settle": "495.00"}
    [first] = await preview(stack, "4028", "2020-07-01", first_mark)
    assert (first["cash_discount_amount_to_take"], first["amount_to_settle"]) == ("5.00", "495.00")
    await stack.erp_payment(
        payment_id="ARP-PF-1", customer_account="4028", payment_date="2020-07-01", amount="495.00", settle=[first_mark]
    )
    await rows_when(stack, "4028", lambda r: len(r) == 3 and r["FTI-PF-10010"]["balance"] == "500.00")

    [second] = await preview(stack, "4028", "2020-07-08", first_mark)
    assert shown(second) == ("2020-07-09", "10.00", "Normal", "5.00", "5.00", "495.00")
    await stack.erp_payment(
        payment_id="ARP-PF-2", customer_account="4028", payment_date="2020-07-08", amount="495.00", settle=[full]
    )
    rows = await rows_when(stack, "4028", lambda r: len(r) == 5 and r["FTI-PF-10010"]["balance"] == "0.00")
    assert [d["credit"] for d in by_type(rows, "CashDiscount")] == ["5.00", "5.00"]
    assert await ledger(stack, "ARP-PF-2") == [("110110", "495.00", "0.00"), ("130100", "0.00", "495.00")]


# --- Customer payments for a partial amount ----------------------------------------------------


async def test_999_90_on_1_000_00_within_the_underpayment_tolerance_closes_the_invoice(stack):
    await parameters(stack, maximum_overpayment_or_underpayment="0.10")
    await invoice(stack, "PA-1", "PA-1000", "1000.00", "2015-05-04")
    await stack.erp_payment(payment_id="ARP-PA-1", customer_account="PA-1", payment_date="2015-05-20", amount="999.90")
    rows = await rows_when(stack, "PA-1", lambda r: "ARP-PA-1" in r and r["FTI-PA-1000"]["balance"] == "0.00")
    assert rows["ARP-PA-1"]["balance"] == "0.00" and len(rows) == 2

    [settlement] = (await stack.settlement.get("/api/v1/settlements", params={"customer_account": "PA-1"})).json()[
        "settlements"
    ]
    [pair] = settlement["pairs"]
    assert (pair["amount_settled"], pair["difference_amount"], pair["difference_account"]) == (
        "999.90",
        "0.10",
        "520300",
    )
    assert await ledger(stack, "DIFF-PA-1") == [("130100", "0.00", "0.10"), ("520300", "0.10", "0.00")]
    aged = (await stack.collections.get("/api/v1/aged-balances", params={"as_of": "2015-12-31"})).json()
    assert "PA-1" not in {c["customer_account"] for c in aged["customers"]}, "no longer open in aging"


async def test_full_settlement_of_990_00_on_1_000_00_posts_10_00_as_extra_cash_discount(stack):
    await parameters(stack)
    await invoice(stack, "PA-2", "PA-2000", "1000.00", "2015-05-04")
    await stack.erp_payment(
        payment_id="ARP-PA-2",
        customer_account="PA-2",
        payment_date="2015-05-20",
        amount="990.00",
        settle=[{"invoice_id": "PA-2000", "full_settlement": True}],
    )
    rows = await rows_when(stack, "PA-2", lambda r: len(r) == 3 and r["FTI-PA-2000"]["balance"] == "0.00")
    [discount] = by_type(rows, "CashDiscount")
    assert (discount["credit"], rows["ARP-PA-2"]["balance"]) == ("10.00", "0.00")
    assert await ledger(stack, discount["voucher"]) == [("130100", "0.00", "10.00"), ("520100", "10.00", "0.00")]


async def test_a_49_00_partial_payment_within_ten_days_takes_1_00_of_a_2_percent_discount(stack):
    await parameters(stack)
    await invoice(stack, "PA-3", "PA-3000", "100.00", "2015-05-04", ("2015-05-14", "2.00"))
    await stack.erp_payment(payment_id="ARP-PA-3", customer_account="PA-3", payment_date="2015-05-10", amount="49.00")
    rows = await rows_when(stack, "PA-3", lambda r: len(r) == 3 and r["FTI-PA-3000"]["balance"] != "100.00")
    assert rows["FTI-PA-3000"]["balance"] == "50.00" and by_type(rows, "CashDiscount")[0]["credit"] == "1.00"


async def test_98_00_on_the_ninth_day_settles_a_100_00_invoice_with_its_2_00_discount(stack):
    await parameters(stack)
    await invoice(stack, "PA-4", "PA-4000", "100.00", "2020-01-01", ("2020-01-11", "2.00"))
    await stack.erp_payment(payment_id="ARP-PA-4", customer_account="PA-4", payment_date="2020-01-10", amount="98.00")
    rows = await rows_when(stack, "PA-4", lambda r: len(r) == 3 and r["FTI-PA-4000"]["balance"] == "0.00")
    assert (rows["ARP-PA-4"]["balance"], by_type(rows, "CashDiscount")[0]["credit"]) == ("0.00", "2.00")


# --- Cash discounts for overpayments, scenarios 1-3, and configure settlement's 100 / 3 / 98 ----


async def overpay(stack, customer: str, total: str, percent: str, paid: str) -> dict[str, dict]:
    voucher = await invoice(stack, customer, f"{customer}-INV", total, "2015-03-01", ("2015-03-08", percent))
    await stack.erp_payment(
        payment_id=f"ARP-{customer}", customer_account=customer, payment_date="2015-03-05", amount=paid
    )
    return await rows_when(stack, customer, lambda r: len(r) >= 3 and r[voucher]["balance"] == "0.00")


async def test_overpayment_scenario_1_specific_within_the_tolerance_posts_the_0_50_to_the_difference_account(stack):
    await parameters(stack, maximum_overpayment_or_underpayment="1.00")
    rows = await overpay(stack, "OP-1", "105.00", "10.00", "95.00")
    [discount] = by_type(rows, "CashDiscount")
    assert (discount["credit"], discount["balance"], rows["ARP-OP-1"]["balance"]) == ("10.50", "0.00", "0.00")
    assert await ledger(stack, discount["voucher"]) == [("130100", "0.00", "10.50"), ("520100", "10.50", "0.00")]
    assert await ledger(stack, "DIFF-OP-1") == [("130100", "0.50", "0.00"), ("520300", "0.00", "0.50")]


async def test_overpayment_scenario_2_specific_above_the_tolerance_leaves_0_50_open_on_the_payment(stack):
    await parameters(stack, maximum_overpayment_or_underpayment="0.10")
    rows = await overpay(stack, "OP-2", "105.00", "10.00", "95.00")
    [discount] = by_type(rows, "CashDiscount")
    assert (discount["credit"], rows["ARP-OP-2"]["balance"]) == ("10.50", "-0.50")


async def test_overpayment_scenario_3_unspecific_reduces_the_discount_to_10_00(stack):
    await parameters(stack, cash_discount_administration="Unspecific", maximum_overpayment_or_underpayment="1.00")
    rows = await overpay(stack, "OP-3", "105.00", "10.00", "95.00")
    [discount] = by_type(rows, "CashDiscount")
    assert (discount["credit"], rows["ARP-OP-3"]["balance"]) == ("10.00", "0.00")
    assert await ledger(stack, discount["voucher"]) == [("130100", "0.00", "10.00"), ("520100", "10.00", "0.00")]


@pytest.mark.parametrize(
    ("customer", "administration", "tolerance", "discount", "payment_left"),
    [
        ("CS-1", "Unspecific", "0.00", "2.00", "0.00"),
        ("CS-2", "Specific", "1.00", "3.00", "0.00"),
        ("CS-3", "Specific", "0.00", "3.00", "-1.00"),
    ],
)
async def test_configure_settlement_100_00_with_3_00_discount_paid_by_98_00(
    stack, customer, administration, tolerance, discount, payment_left
):
    await parameters(stack, cash_discount_administration=administration, maximum_overpayment_or_underpayment=tolerance)
    rows = await overpay(stack, customer, "100.00", "3.00", "98.00")
    assert (by_type(rows, "CashDiscount")[0]["credit"], rows[f"ARP-{customer}"]["balance"]) == (discount, payment_left)


# --- Automatic settlement and prioritization (customer 2050) ----------------------------------


async def test_a_700_00_payment_pays_the_interest_note_first_by_priority_and_invoice_3_keeps_157_00(stack):
    await parameters(
        stack,
        calculate_cash_discounts_for_partial_payments=False,
        prioritize_settlement=True,
        use_priority_for_automatic_settlements=True,
        settlement_priority=[
            {"criterion": "TransactionType", "order": ["PaymentFee", "CollectionLetter", "InterestNote", "Invoice"]},
            {"criterion": "TransactionDate", "direction": "Ascending"},
            {"criterion": "Voucher"},
        ],
    )
    terms = {"payment_terms": "Net30"}
    await invoice(stack, "2050", "10001", "100.00", "2015-08-15", ("2015-08-29", "2.00"), **terms)
    await invoice(stack, "2050", "10002", "250.00", "2015-09-01", ("2015-09-15", "2.00"), **terms)
    await invoice(stack, "2050", "10003", "500.00", "2015-10-15", ("2015-10-29", "2.00"), **terms)
    await invoice(stack, "2050", "IN-2050", "7.00", "2015-10-15", document_type="InterestNote", **terms)
    await stack.erp_payment(payment_id="ARP-2050", customer_account="2050", payment_date="2015-10-25", amount="700.00")

    rows = await rows_when(stack, "2050", lambda r: "ARP-2050" in r and r["ARP-2050"]["balance"] == "0.00")
    assert {v: (r["type"], r["balance"]) for v, r in rows.items()} == {
        "FTI-10001": ("Invoice", "0.00"),
        "FTI-10002": ("Invoice", "0.00"),
        "FTI-10003": ("Invoice", "157.00"),
        "INT-IN-2050": ("InterestNote", "0.00"),
        "ARP-2050": ("Payment", "0.00"),
    }
    [settlement] = (await stack.settlement.get("/api/v1/settlements", params={"customer_account": "2050"})).json()[
        "settlements"
    ]
    assert [(p["debit_voucher"], p["amount_settled"]) for p in settlement["pairs"]] == [
        ("INT-IN-2050", "7.00"),
        ("FTI-10001", "100.00"),
        ("FTI-10002", "250.00"),
        ("FTI-10003", "343.00"),
    ]


async def test_by_due_date_alone_700_00_pays_three_invoices_in_due_order_and_leaves_the_interest_note(stack):
    """The same documents settled without priority rules: oldest due date first, no partial discounts (the
    article's numbers take none); the interest note, due last, keeps its 7.00 and invoice 3 keeps 150.00."""
    await parameters(stack, calculate_cash_discounts_for_partial_payments=False)
    terms = {"payment_terms": "Net30"}
    await invoice(stack, "2050-D", "D-10001", "100.00", "2015-08-15", ("2015-08-29", "2.00"), **terms)
    await invoice(stack, "2050-D", "D-10002", "250.00", "2015-09-01", ("2015-09-15", "2.00"), **terms)
    await invoice(stack, "2050-D", "D-10003", "500.00", "2015-10-15", ("2015-10-29", "2.00"), **terms)
    await invoice(
        stack, "2050-D", "IN-2050-D", "7.00", "2015-10-15", document_type="InterestNote", due_date="2015-11-30"
    )
    await stack.erp_payment(
        payment_id="ARP-2050-D", customer_account="2050-D", payment_date="2015-10-25", amount="700.00"
    )

    rows = await rows_when(stack, "2050-D", lambda r: "ARP-2050-D" in r and r["ARP-2050-D"]["balance"] == "0.00")
    assert {v: r["balance"] for v, r in rows.items()} == {
        "FTI-D-10001": "0.00",
        "FTI-D-10002": "0.00",
        "FTI-D-10003": "150.00",
        "INT-IN-2050-D": "7.00",
        "ARP-2050-D": "0.00",
    }
    [settlement] = (await stack.settlement.get("/api/v1/settlements", params={"customer_account": "2050-D"})).json()[
        "settlements"
    ]
    assert [(p["debit_voucher"], p["amount_settled"], p["cash_discount_amount"]) for p in settlement["pairs"]] == [
        ("FTI-D-10001", "100.00", "0.00"),
        ("FTI-D-10002", "250.00", "0.00"),
        ("FTI-D-10003", "350.00", "0.00"),
    ]


# --- the vendor articles, mirrored for customers ----------------------------------------------


async def test_a_discount_outside_the_period_with_always_or_a_selected_date(stack):
    await parameters(stack)
    await invoice(stack, "3052", "10030", "2000.00", "2015-06-28", ("2015-07-12", "1.00"))
    [always] = await preview(stack, "3052", "2015-07-15", {"invoice_id": "10030", "use_cash_discount": "Always"})
    assert shown(always) == ("2015-07-12", "20.00", "Always", "0.00", "20.00", "1980.00")
    selected = {"date_to_use_for_calculating_discounts": "2015-06-28"}
    [full] = await preview(stack, "3052", "2015-07-15", {"invoice_id": "10030"}, **selected)
    assert shown(full) == ("2015-07-12", "20.00", "Normal", "0.00", "20.00", "1980.00")
    [part] = await preview(
        stack, "3052", "2015-07-15", {"invoice_id": "10030", "amount_to_settle": "500.00"}, **selected
    )
    assert (part["cash_discount_amount_to_take"], part["amount_to_settle"]) == ("5.05", "500.00")

    await stack.erp_payment(
        payment_id="APP-10030",
        customer_account="3052",
        payment_date="2015-07-15",
        amount="500.00",
        settle=[{"invoice_id": "10030", "amount_to_settle": "500.00"}],
        **selected,
    )
    rows = await rows_when(stack, "3052", lambda r: len(r) == 3 and r["FTI-10030"]["balance"] != "2000.00")
    assert (rows["FTI-10030"]["balance"], by_type(rows, "CashDiscount")[0]["credit"]) == ("1494.95", "5.05")


async def test_a_manual_discount_of_60_00_settles_1_000_00_with_a_940_00_payment(stack):
    await parameters(stack)
    await invoice(stack, "3051", "10040", "1000.00", "2020-06-29", ("2020-07-06", "4.00"), due_date="2020-07-29")
    mark = {"invoice_id": "10040", "cash_discount_amount": "60.00"}
    [shown_mark] = await preview(stack, "3051", "2020-06-30", mark)
    assert shown(shown_mark) == ("2020-07-06", "60.00", "Normal", "0.00", "60.00", "940.00")
    await stack.erp_payment(
        payment_id="ARP-10040", customer_account="3051", payment_date="2020-06-30", amount="940.00", settle=[mark]
    )
    rows = await rows_when(stack, "3051", lambda r: len(r) == 3 and r["FTI-10040"]["balance"] == "0.00")
    assert (rows["ARP-10040"]["balance"], by_type(rows, "CashDiscount")[0]["credit"]) == ("0.00", "60.00")


# --- reversal -----------------------------------------------------------------------------------


async def test_a_settlement_reversed_and_settled_again_ends_as_settling_once(stack):
    await parameters(stack)
    await invoice(stack, "4027-R", "R-10020", "1000.00", "2015-06-25", ("2015-07-09", "1.00"), payment_terms="Net30")
    mark = {"invoice_id": "R-10020", "amount_to_settle": "297.00"}
    await stack.erp_payment(
        payment_id="ARP-R1", customer_account="4027-R", payment_date="2015-07-01", amount="297.00", settle=[mark]
    )
    once = await rows_when(stack, "4027-R", lambda r: len(r) == 3 and r["FTI-R-10020"]["balance"] == "700.00")
    await stack.wait_until_booked(*once)
    before = await stack.trial_balance()

    settlements = (await stack.settlement.get("/api/v1/settlements", params={"customer_account": "4027-R"})).json()
    [settlement] = settlements["settlements"]
    reversed_ = await stack.settlement.post(f"/api/v1/settlements/{settlement['settlement_id']}/reverse")
    assert reversed_.status_code == 200, reversed_.text
    assert {t["voucher"]: t["open_amount"] for t in reversed_.json()["transactions"]} == {
        "FTI-R-10020": "1000.00",
        "ARP-R1": "-297.00",
    }
    again = await stack.settlement.post(f"/api/v1/settlements/{settlement['settlement_id']}/reverse")
    assert again.status_code == 409 and "already reversed" in again.json()["detail"]

    rows = await rows_when(stack, "4027-R", lambda r: len(r) == 4 and r["FTI-R-10020"]["balance"] == "1000.00")
    assert rows["ARP-R1"]["balance"] == "-297.00"
    assert sorted((r["voucher"], r["debit"], r["credit"], r["balance"]) for r in by_type(rows, "CashDiscount")) == [
        ("DISC-R1", None, "3.00", "0.00"),
        ("REV-DISC-R1", "3.00", None, "0.00"),
    ]
    assert await ledger(stack, "REV-DISC-R1") == [("130100", "3.00", "0.00"), ("520100", "0.00", "3.00")]
    aged = (await stack.collections.get("/api/v1/aged-balances", params={"as_of": "2015-07-31"})).json()
    [customer] = [c for c in aged["customers"] if c["customer_account"] == "4027-R"]
    assert customer["balance"] == "703.00"
    [payment_mark] = await preview(stack, "4027-R", "2015-07-01", {"invoice_id": "ARP-R1"})
    assert payment_mark["amount_to_settle"] == "-297.00", "an open payment can be marked"

    settled = await stack.settlement.post(
        "/api/v1/settlements",
        json={"customer_account": "4027-R", "date": "2015-07-01", "marks": [{"invoice_id": "ARP-R1"}, mark]},
    )
    assert settled.status_code == 201, settled.text
    rows = await rows_when(stack, "4027-R", lambda r: len(r) == 5 and r["FTI-R-10020"]["balance"] == "700.00")
    assert {v: r["balance"] for v, r in rows.items() if v in once} == {v: r["balance"] for v, r in once.items()}

    async def settled_in_ledger():
        tb = await stack.trial_balance()
        moved = (D(tb["520100"][side]) - D(before["520100"][side]) for side in ("debit", "credit"))
        return tb if all(m == D("3.00") for m in moved) else None

    after = await eventually(settled_in_ledger, timeout=20)
    for account in ("110110", "130100", "520100"):
        # Reversed and settled again: 3.00 more discount posted and 3.00 reversed, the balances as settled once.
        assert D(after[account]["balance"]) == D(before[account]["balance"]), account
    assert D(after["520100"]["debit"]) - D(before["520100"]["debit"]) == D("3.00")
    assert D(after["520100"]["credit"]) - D(before["520100"]["credit"]) == D("3.00")
