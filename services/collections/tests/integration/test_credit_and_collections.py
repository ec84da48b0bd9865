"""Credit and collections management through the real broker and database: credit limits and checks,
collection letters (idempotent, with their fee as an invoice message and an HTML document), interest
notes, activities and disputes, and what the aged balances show of them."""

from __future__ import annotations

import asyncio
import re
from datetime import date, timedelta
from decimal import Decimal

from kredit_shared.contracts import ERP_CUSTOMER_INVOICES, CustomerInvoiceIssued
from kredit_shared.testing import TopicProbe

CAVE = "US-004"
AS_OF = date(2016, 3, 31)


def days_before(days: int) -> str:
    return (AS_OF - timedelta(days=days)).isoformat()


async def put(svc, path: str, body: dict, status: int = 200) -> dict:
    response = await svc.client.put(f"/api/v1{path}", json=body)
    assert response.status_code == status, response.text
    return response.json()


async def post(svc, path: str, body: dict | None = None, status: int = 200) -> dict:
    response = await svc.client.post(f"/api/v1{path}", json=body)
    assert response.status_code == status, response.text
    return response.json()


async def test_credit_limits_groups_and_checks_at_and_over_the_limit(start_collections, database_url):
    async with start_collections(database_url) as svc:
        await svc.post_transaction("FTI-1", "Invoice", "7500.00", on="2016-03-01", account=CAVE, invoice_id="1")
        await svc.post_transaction("FTI-2", "Invoice", "6000.00", on="2016-03-01", account="US-001", invoice_id="2")
        await svc.until_balances(CAVE, {"FTI-1": "7500.00"})
        await svc.until_balances("US-001", {"FTI-2": "6000.00"})

        # A customer nobody set up: no limit, nothing blocked.
        assert await svc.get(f"/customers/{CAVE}/credit") == {
            "customer_account": CAVE,
            "credit_limit": None,
            "credit_group": None,
            "mandatory_credit_limit": False,
            "unlimited_credit_limit": False,
            "group_credit_limit": None,
            "effective_credit_limit": None,
            "balance": "7500.00",
            "available_credit": None,
        }
        assert (await post(svc, "/credit-checks", {"customer_account": CAVE, "amount": "1000000.00"}))[
            "blocked"
        ] is False

        assert (
            "unknown credit group 'RETAIL'"
            in (await put(svc, f"/customers/{CAVE}/credit", {"credit_group": "RETAIL"}, 422))["detail"]
        )
        assert (await put(svc, "/credit-groups/RETAIL", {"credit_limit": "15000.00"}))["credit_limit"] == "15000.00"
        status = await put(svc, f"/customers/{CAVE}/credit", {"credit_limit": "10000.00", "credit_group": "RETAIL"})
        assert {k: status[k] for k in ("effective_credit_limit", "balance", "available_credit")} == {
            "effective_credit_limit": "10000.00",
            "balance": "7500.00",
            "available_credit": "2500.00",
        }

        # Just at the limit (7,500.00 + 500.00 open orders + 2,000.00) passes; one cent more is blocked.
        at = await post(
            svc, "/credit-checks", {"customer_account": CAVE, "amount": "2000.00", "open_orders_amount": "500.00"}
        )
        assert (at["blocked"], at["effective_credit_limit"], at["balance"]) == (False, "10000.00", "7500.00")
        over = await post(
            svc, "/credit-checks", {"customer_account": CAVE, "amount": "2000.01", "open_orders_amount": "500.00"}
        )
        assert over["blocked"] is True and "exceeds the credit limit 10000.00 by 0.01" in over["reason"]

        # The group's limit is shared: with US-001 in the group, the two owe 13,500.00 of 15,000.00.
        await put(svc, "/customers/US-001/credit", {"credit_group": "RETAIL"})
        group = await svc.get("/credit-groups/RETAIL")
        assert (group["customers"], group["balance"]) == (["US-001", CAVE], "13500.00")
        shared = await post(svc, "/credit-checks", {"customer_account": CAVE, "amount": "1500.01"})
        assert shared["blocked"] is True and "credit group RETAIL" in shared["reason"]
        assert (await post(svc, "/credit-checks", {"customer_account": CAVE, "amount": "1500.00"}))["blocked"] is False

        # Mandatory 0.00: no credit at all; unlimited: no check. A subset of fields keeps the others.
        await put(svc, f"/customers/{CAVE}/credit", {"credit_limit": "0.00", "mandatory_credit_limit": True})
        assert (await svc.get(f"/customers/{CAVE}/credit"))["credit_group"] == "RETAIL"
        assert (await post(svc, "/credit-checks", {"customer_account": CAVE, "amount": "0.01"}))["blocked"] is True
        await put(svc, f"/customers/{CAVE}/credit", {"unlimited_credit_limit": True})
        unlimited = await svc.get(f"/customers/{CAVE}/credit")
        assert (unlimited["effective_credit_limit"], unlimited["available_credit"]) == (None, None)

        # The aged balances flag a customer over the limit.
        await put(svc, f"/customers/{CAVE}/credit", {"unlimited_credit_limit": False, "mandatory_credit_limit": False})
        await put(svc, f"/customers/{CAVE}/credit", {"credit_limit": "7499.99", "credit_group": None})
        rows = {r["customer_account"]: r for r in (await svc.get("/aged-balances", as_of="2016-04-30"))["customers"]}
        assert (rows[CAVE]["over_credit_limit"], rows["US-001"]["over_credit_limit"]) == (True, False)
        # ... and so does the workspace: the badge in Cave's row only.
        page = (await svc.client.get("/", params={"as_of": "2016-04-30"})).text
        cave_row, other_row = (
            re.search(rf"<tr>\s*<td><a href=\"/customers/{a}\">.*?</tr>", page, re.S) for a in (CAVE, "US-001")
        )
        assert "over credit limit" in cave_row.group(0) and "over credit limit" not in other_row.group(0)

        # Bad input answers 422 and changes nothing.
        for body in (
            {"customer_account": CAVE, "amount": "-1.00"},
            {"customer_account": CAVE, "amount": 1.5},
            {"customer_account": CAVE},
            {"customer_account": CAVE, "amount": "1.00", "currency": "EUR"},
        ):
            assert (await svc.client.post("/api/v1/credit-checks", json=body)).status_code == 422, body
        assert (await svc.client.put("/api/v1/credit-groups/X", json={"credit_limit": "-5.00"})).status_code == 422
        assert (await svc.client.put(f"/api/v1/customers/{CAVE}/credit", json={"limit": "5"})).status_code == 422
        assert (await svc.client.get("/api/v1/credit-groups/NOPE")).status_code == 404


async def test_collection_letters_per_level_with_the_fee_as_an_invoice_message_and_an_html_document(
    start_collections, database_url
):
    async with start_collections(database_url) as svc:
        invoices_topic = svc.settings.topic(ERP_CUSTOMER_INVOICES)
        async with TopicProbe(svc.settings.kafka_bootstrap_servers, [invoices_topic]) as erp_invoices:
            for voucher, days, amount in (("FTI-15", 15, "150.00"), ("FTI-35", 35, "350.00"), ("FTI-65", 65, "650.00")):
                await svc.post_transaction(
                    voucher,
                    "Invoice",
                    amount,
                    on=days_before(days + 30),
                    due=days_before(days),
                    account=CAVE,
                    invoice_id=voucher.removeprefix("FTI-"),
                    name="Cave Wholesales",
                )
            await svc.post_transaction("FTI-5", "Invoice", "50.00", on="2016-03-01", due=days_before(5), account=CAVE)
            await svc.until_balances(
                CAVE, {"FTI-15": "150.00", "FTI-35": "350.00", "FTI-65": "650.00", "FTI-5": "50.00"}
            )

            run = await post(svc, "/collection-letter-runs", {"as_of": AS_OF.isoformat()})
            letters = run["letters"]
            assert [(l["code"], l["level"], l["fee"], [i["voucher"] for i in l["invoices"]]) for l in letters] == [
                ("Reminder", 1, "0.00", ["FTI-15"]),
                ("Second", 2, "25.00", ["FTI-35"]),
                ("Final", 3, "0.00", ["FTI-65"]),
            ]
            assert [l["invoices"][0]["days_overdue"] for l in letters] == [15, 35, 65]
            second = letters[1]
            assert (second["fee_invoice_id"], second["total"]) == (second["letter_id"], "350.00")

            # The fee goes to invoicing as a CollectionLetterFee invoice of 25.00 to the fee account.
            [record] = await erp_invoices.wait_for(lambda r: True)
            fee = CustomerInvoiceIssued.model_validate_json(record.value)
            assert (fee.invoice_id, fee.customer_account, fee.document_type, str(fee.invoice_date)) == (
                second["letter_id"],
                CAVE,
                "CollectionLetterFee",
                "2016-03-31",
            )
            assert [(l.amount, l.revenue_account) for l in fee.lines] == [(Decimal("25.00"), "801200")]
            assert record.key == CAVE

            # Running again for the same date creates nothing, and sends no second fee.
            assert (await post(svc, "/collection-letter-runs", {"as_of": AS_OF.isoformat()}))["letters"] == []
            assert len(await erp_invoices.settle(0.5)) == 1

            # The document opens and lists the invoices.
            response = await svc.client.get(second["document_url"])
            assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
            page = response.text
            for text in (
                "Collection letter",
                second["letter_id"],
                "Second",
                CAVE,
                "Cave Wholesales",
                "FTI-35",
                "350.00",
            ):
                assert text in page, text
            assert "25.00" in page and "375.00" in page  # the fee and the total due
            assert "FTI-65" not in page

            listed = await svc.get(f"/customers/{CAVE}/collection-letters")
            assert [l["letter_id"] for l in listed["letters"]] == [l["letter_id"] for l in letters]
            assert await svc.get(f"/collection-letters/{second['letter_id']}") == second

            # 15 days later FTI-5 is 20 days overdue (a reminder) and FTI-15 30 days (the second letter, with
            # its fee); FTI-35 and FTI-65 have had their level already.
            later = await post(svc, "/collection-letter-runs", {"as_of": (AS_OF + timedelta(days=15)).isoformat()})
            assert [(l["code"], [i["voucher"] for i in l["invoices"]]) for l in later["letters"]] == [
                ("Reminder", ["FTI-5"]),
                ("Second", ["FTI-15"]),
            ]
            assert len(await erp_invoices.wait_for(lambda r: True, count=2)) == 2
            assert (await svc.client.get("/api/v1/collection-letters/CL-999999/document")).status_code == 404
            assert (
                await svc.client.post("/api/v1/collection-letter-runs", json={"as_of": "31.03.2016"})
            ).status_code == 422


async def test_interest_notes_are_posted_once_per_date_as_interest_note_invoices(start_collections):
    async with start_collections() as svc:
        invoices_topic = svc.settings.topic(ERP_CUSTOMER_INVOICES)
        async with TopicProbe(svc.settings.kafka_bootstrap_servers, [invoices_topic]) as erp_invoices:
            await svc.post_transaction(
                "FTI-1000", "Invoice", "1000.00", on="2016-01-16", due=days_before(45), account=CAVE, invoice_id="1000"
            )
            await svc.until_balances(CAVE, {"FTI-1000": "1000.00"})
            assert [c["interest_code"] for c in await svc.get("/interest-codes")] == ["1.5%M", "18%Y"]

            run = await post(svc, "/interest-note-runs", {"as_of": AS_OF.isoformat()})
            [note] = run["interest_notes"]
            assert (note["interest_code"], note["total"], note["note_date"]) == ("1.5%M", "22.19", "2016-03-31")
            assert [(l["voucher"], l["days"], l["balance"], l["interest"]) for l in note["lines"]] == [
                ("FTI-1000", 45, "1000.00", "22.19")
            ]
            [record] = await erp_invoices.wait_for(lambda r: True)
            message = CustomerInvoiceIssued.model_validate_json(record.value)
            assert (message.invoice_id, message.document_type) == (note["note_id"], "InterestNote")
            assert [(l.amount, l.revenue_account) for l in message.lines] == [(Decimal("22.19"), "801100")]

            assert (await post(svc, "/interest-note-runs", {"as_of": AS_OF.isoformat()}))["interest_notes"] == []
            assert len(await erp_invoices.settle(0.5)) == 1
            assert [n["note_id"] for n in (await svc.get(f"/customers/{CAVE}/interest-notes"))["interest_notes"]] == [
                note["note_id"]
            ]
            assert (
                "unknown interest code 'NOPE'"
                in (await post(svc, "/interest-note-runs", {"interest_code": "NOPE"}, status=422))["detail"]
            )


async def test_activities_make_the_worklist_and_disputes_hold_invoices_out_of_letters_and_interest(
    start_collections, database_url
):
    async with start_collections(database_url) as svc:
        today = date.today()
        for voucher, amount in (("FTI-A", "100.00"), ("FTI-B", "200.00")):
            await svc.post_transaction(
                voucher,
                "Invoice",
                amount,
                on=(today - timedelta(days=70)).isoformat(),
                due=(today - timedelta(days=40)).isoformat(),
                account=CAVE,
                invoice_id=voucher.removeprefix("FTI-"),
            )
        await svc.until_balances(CAVE, {"FTI-A": "100.00", "FTI-B": "200.00"})

        # Disputes: one open dispute per invoice; the disputed one is in no letter and no interest note.
        dispute = await post(svc, "/disputes", {"customer_account": CAVE, "invoice_id": "A", "reason": "damaged"}, 201)
        assert (dispute["voucher"], dispute["status"]) == ("FTI-A", "open")
        assert (
            "already disputed"
            in (await post(svc, "/disputes", {"customer_account": CAVE, "voucher": "FTI-A", "reason": "again"}, 409))[
                "detail"
            ]
        )
        assert await post(svc, "/disputes", {"customer_account": CAVE, "invoice_id": "Z", "reason": "x"}, 404)
        assert await post(svc, "/disputes", {"customer_account": CAVE, "reason": "which?"}, 422)
        [letter] = (await post(svc, "/collection-letter-runs"))["letters"]
        assert [i["voucher"] for i in letter["invoices"]] == ["FTI-B"]
        [note] = (await post(svc, "/interest-note-runs"))["interest_notes"]
        assert [l["voucher"] for l in note["lines"]] == ["FTI-B"]
        [row] = (await svc.get("/aged-balances"))["customers"]
        assert (row["balance"], row["disputed"]) == ("300.00", "100.00")
        assert re.search(r'<td class="num">100\.00</td>\s*<td></td>', (await svc.client.get("/")).text)
        transactions = {
            t["voucher"]: t["disputed"] for t in (await svc.get(f"/customers/{CAVE}/transactions"))["transactions"]
        }
        assert transactions == {"FTI-A": True, "FTI-B": False}
        resolved = await post(svc, f"/disputes/{dispute['dispute_id']}/resolve", {"resolution": "credit note agreed"})
        assert (resolved["status"], resolved["resolution"]) == ("resolved", "credit note agreed")
        assert [d["status"] for d in (await svc.get("/disputes", customer_account=CAVE))["disputes"]] == ["resolved"]
        [letter] = (await post(svc, "/collection-letter-runs"))["letters"]  # resolved: FTI-A takes part again
        assert [i["voucher"] for i in letter["invoices"]] == ["FTI-A"]

        # Activities: notes, calls and promises with a follow-up date and an owner; the worklist.
        call = await post(
            svc,
            "/activities",
            {
                "customer_account": CAVE,
                "activity_type": "Call",
                "description": "asked for a copy of invoice B",
                "follow_up_date": (today + timedelta(days=2)).isoformat(),
                "owner": "ann",
            },
            201,
        )
        promise = await post(
            svc,
            "/activities",
            {
                "customer_account": CAVE,
                "activity_type": "PromiseToPay",
                "description": "pays invoice B today",
                "promised_amount": "200.00",
                "promised_date": today.isoformat(),
                "owner": "bob",
            },
            201,
        )
        assert (promise["follow_up_date"], promise["promise_status"]) == (today.isoformat(), "open")
        await post(svc, "/activities", {"customer_account": CAVE, "activity_type": "Note", "description": "x"}, 201)

        tomorrow = (today + timedelta(days=1)).isoformat()
        worklist = (await svc.get("/activities", due_before=tomorrow, as_of=tomorrow))["activities"]
        assert [(a["activity_id"], a["promise_status"]) for a in worklist] == [(promise["activity_id"], "broken")]
        later = (await svc.get("/activities", due_before=(today + timedelta(days=3)).isoformat()))["activities"]
        assert [a["activity_id"] for a in later] == [promise["activity_id"], call["activity_id"]]
        assert [a["owner"] for a in (await svc.get("/activities", owner="ann"))["activities"]] == ["ann"]

        # The customer pays 200.00 today: the promise is kept.
        await svc.post_transaction("ARP-1", "Payment", "-200.00", on=today.isoformat(), account=CAVE)
        await svc.until_balances(CAVE, {"FTI-A": "100.00", "FTI-B": "200.00", "ARP-1": "-200.00"})
        [kept] = [a for a in (await svc.get("/activities", as_of=tomorrow))["activities"] if a["owner"] == "bob"]
        assert kept["promise_status"] == "kept"

        closed = await post(svc, f"/activities/{call['activity_id']}/close")
        assert closed["closed"] is True
        assert call["activity_id"] not in [a["activity_id"] for a in (await svc.get("/activities"))["activities"]]
        for body in (
            {"customer_account": CAVE, "activity_type": "PromiseToPay", "description": "no amount"},
            {"customer_account": CAVE, "activity_type": "Visit"},
            {"customer_account": CAVE, "activity_type": "Note", "promised_amount": "5.00"},
        ):
            assert (await svc.client.post("/api/v1/activities", json=body)).status_code == 422, body
        assert (await svc.client.post("/api/v1/activities/nope/close")).status_code == 404


async def test_two_letter_runs_at_the_same_moment_send_each_letter_once(start_collections, database_url):
    async with start_collections(database_url) as svc:
        for n in range(1, 4):
            await svc.post_transaction(
                f"FTI-{n}", "Invoice", "100.00", on="2016-01-01", due=days_before(20 * n), account=f"US-{n:03d}"
            )
            await svc.until_balances(f"US-{n:03d}", {f"FTI-{n}": "100.00"})
        answers = await asyncio.gather(
            *(svc.client.post("/api/v1/collection-letter-runs", json={"as_of": AS_OF.isoformat()}) for _ in range(2))
        )
        assert {a.status_code for a in answers} <= {200, 409}, [a.text for a in answers]
        sent = [l["letter_id"] for a in answers if a.status_code == 200 for l in a.json()["letters"]]
        assert len(sent) == len(set(sent)) == 3
        interest = await asyncio.gather(
            *(svc.client.post("/api/v1/interest-note-runs", json={"as_of": AS_OF.isoformat()}) for _ in range(2))
        )
        notes = [n["note_id"] for a in interest if a.status_code == 200 for n in a.json()["interest_notes"]]
        assert {a.status_code for a in interest} <= {200, 409} and len(notes) == len(set(notes)) == 3
