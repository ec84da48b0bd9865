"""The settlement service on the real broker: parameters, settling posted items by hand, reversal, and the
refusals around them (unknown fields, unknown or unsettleable items, reversing twice)."""

from __future__ import annotations

from decimal import Decimal

from kredit_shared.contracts import AR_CUSTOMER_TRANSACTIONS, AR_SETTLEMENTS, ERP_CUSTOMER_PAYMENTS, GL_JOURNAL_EVENTS

from .test_open_items import customer_line, journal_posted, ledger_line

D = Decimal


async def test_parameters_take_any_subset_and_refuse_unknown_fields_naming_them(start_settlement):
    async with start_settlement() as service:
        put = service.http.put
        for body, named in [
            ({"maximum_penny_diference": "0.10"}, "maximum_penny_diference"),
            ({"automatic_settlement": None}, "automatic_settlement"),
            ({"cash_discount_administration": "Vague"}, "cash_discount_administration"),
            ({"maximum_penny_difference": "-0.01"}, "maximum_penny_difference"),
            ({"settlement_priority": [{"criterion": "TransactionType", "order": ["Bill"]}]}, "settlement_priority"),
            ({"settlement_priority": [{"criterion": "Voucher", "order": ["Invoice"]}]}, "settlement_priority"),
            ({"settlement_priority": [{"criterion": "Colour"}]}, "settlement_priority"),
        ]:
            response = await put("/api/v1/parameters", json=body)
            assert response.status_code == 422, (body, response.text)
            assert named in response.json()["detail"], response.json()["detail"]

        response = await put("/api/v1/parameters", json={"maximum_overpayment_or_underpayment": "0.10"})
        assert response.status_code == 200
        assert response.json() == {
            "calculate_cash_discounts_for_partial_payments": True,
            "maximum_overpayment_or_underpayment": "0.10",
        }
        response = await put(
            "/api/v1/parameters",
            json={
                "automatic_settlement": True,
                "settlement_priority": [{"criterion": "DueDate", "direction": "Descending"}],
            },
        )
        shown = (await service.http.get("/api/v1/parameters")).json()
        assert (
            shown
            == response.json()
            == {
                "calculate_cash_discounts_for_partial_payments": True,
                "maximum_overpayment_or_underpayment": "0.10",
                "automatic_settlement": True,
                "settlement_priority": [{"criterion": "DueDate", "direction": "Descending"}],
            }
        )
        everything = (await service.http.get("/api/v1/parameters", params={"include_defaults": True})).json()
        assert everything["cash_discount_administration"] == "Specific" and len(everything) == 9


async def test_a_payment_mark_with_an_unknown_field_is_refused_naming_it_and_the_payment_posts(start_settlement):
    async with start_settlement() as service:
        await service.invoice("4601-1", customer="4601")
        await service.pay(
            "ARP-4601-1",
            "990.00",
            "2015-07-01",
            customer="4601",
            settle=[{"invoice_id": "4601-1", "full_setlement": True}],
        )
        [record] = await service.dead_letters(ERP_CUSTOMER_PAYMENTS)
        assert "unknown field(s) 'full_setlement'" in record.headers["x-dlq-reason"]
        assert (await service.balance("ARP-4601-1", "4601"), await service.balance("FTI-4601-1", "4601")) == (
            D("-990.00"),
            D("1000.00"),
        )


async def test_settling_by_hand_marks_an_open_payment_and_a_credit_note_against_invoices(start_settlement):
    async with start_settlement() as service:
        assert (await service.http.put("/api/v1/parameters", json={"automatic_settlement": False})).status_code == 200
        await service.invoice("4602-1", customer="4602", tiers=[])
        await service.invoice("4602-CN", "-100.00", customer="4602", tiers=[])
        await service.pay("ARP-4602-1", "900.00", "2015-07-01", customer="4602")
        await service.transaction("ARP-4602-1")
        assert await service.balance("ARP-4602-1", "4602") == D("-900.00"), "automatic settlement is off"

        preview = (
            await service.preview(
                "2015-07-01", ("4602-CN", None, "Normal"), ("ARP-4602-1", None, "Normal"), customer="4602"
            )
        ).json()
        assert [m["amount_to_settle"] for m in preview["marks"]] == ["-100.00", "-900.00"]

        settle = service.http.post
        body = {"customer_account": "4602", "date": "2015-07-01"}
        refused = [
            ({"marks": [{"invoice_id": "4602-1"}, {"invoice_id": "NOPE"}]}, 404, "NOPE"),
            ({"marks": [{"invoice_id": "4602-1"}, {"invoice_id": "4602-1"}]}, 422, "marked more than once"),
            ({"marks": [{"invoice_id": "4602-CN"}, {"invoice_id": "ARP-4602-1"}]}, 422, "mark at least a debit"),
            ({"marks": [{"invoice_id": "4602-1", "colour": "red"}, {"invoice_id": "4602-CN"}]}, 422, "colour"),
        ]
        for extra, status, words in refused:
            response = await settle("/api/v1/settlements", json=body | extra)
            assert response.status_code == status and words in response.json()["detail"], response.text

        response = await settle(
            "/api/v1/settlements",
            json=body | {"marks": [{"invoice_id": "4602-1"}, {"invoice_id": "4602-CN"}, {"invoice_id": "ARP-4602-1"}]},
        )
        assert response.status_code == 201, response.text
        settled = response.json()
        assert [(p["credit_voucher"], p["amount_settled"]) for p in settled["pairs"]] == [
            ("CCN-4602-CN", "100.00"),
            ("ARP-4602-1", "900.00"),
        ]
        published = await service.settlements(2, debit_voucher="FTI-4602-1")
        assert {p["settlement_id"] for p in published} == {
            f"{settled['settlement_id']}:1",
            f"{settled['settlement_id']}:2",
        }
        assert await service.balance("FTI-4602-1", "4602") == D("0.00")

        closed = await settle(
            "/api/v1/settlements", json=body | {"marks": [{"invoice_id": "4602-1"}, {"invoice_id": "4602-CN"}]}
        )
        assert closed.status_code == 422 and "not open" in closed.json()["detail"]


async def test_a_reversal_posts_opposite_transactions_and_is_refused_twice(start_settlement):
    async with start_settlement() as service:
        await service.invoice("4603-1", customer="4603")
        await service.pay("ARP-4603-1", "297.00", "2015-07-01", customer="4603", marks=[("4603-1", "297.00", "Normal")])
        [settled] = await service.settlements(credit_voucher="ARP-4603-1")
        assert (await service.http.post("/api/v1/settlements/NOPE/reverse")).status_code == 404

        response = await service.http.post("/api/v1/settlements/ARP-4603-1/reverse", json={"date": "2015-07-02"})
        assert response.status_code == 200, response.text
        reversal = response.json()
        assert (reversal["settlement_id"], reversal["reversal_of"], reversal["date"]) == (
            "ARP-4603-1:reversed",
            "ARP-4603-1",
            "2015-07-02",
        )
        [opposite] = await service.settlements(settlement_id=f"{settled['settlement_id']}:R")
        assert (opposite["amount_settled"], opposite["cash_discount_amount"], opposite["cash_discount_voucher"]) == (
            "-297.00",
            "-3.00",
            "REV-DISC-4603-1",
        )
        assert (await service.transaction("REV-DISC-4603-1"))["amount"] == "3.00"
        rev = await service.voucher("REV-DISC-4603-1")
        assert [(line["account"], line["debit"], line["credit"]) for line in rev["lines"]] == [
            ("130100", "3.00", "0.00"),
            ("520100", "0.00", "3.00"),
        ]
        assert await service.balance("FTI-4603-1", "4603") == D("1000.00")
        history = (await service.http.get("/api/v1/settlements", params={"customer_account": "4603"})).json()
        assert [(s["settlement_id"], s["reversed_by"], s["reversal_of"]) for s in history["settlements"]] == [
            ("ARP-4603-1", "ARP-4603-1:reversed", None),
            ("ARP-4603-1:reversed", None, "ARP-4603-1"),
        ]
        for again in ("ARP-4603-1", "ARP-4603-1:reversed", settled["settlement_id"]):
            response = await service.http.post(f"/api/v1/settlements/{again}/reverse")
            assert response.status_code == 409, response.text
        early = await service.http.post("/api/v1/settlements/ARP-4603-1/reverse", json={"date": "2015-06-30"})
        assert early.status_code == 409


async def test_a_write_offs_settlement_is_reversed_in_the_ledger_not_here(start_settlement):
    async with start_settlement() as service:
        await service.invoice("4604-1", "100.00", customer="4604", tiers=[])
        posted = journal_posted(
            "WOJ-4604",
            customer_line("WOV-4604", "4604", credit="100.00", settles=[("FTI-4604-1", "100.00")]),
            ledger_line("WOV-4604", debit="100.00"),
        )
        await service.publish(GL_JOURNAL_EVENTS, posted, key="WOJ-4604")
        await service.settlements(credit_voucher="WOV-4604")
        response = await service.http.post("/api/v1/settlements/WOV-4604/reverse")
        assert response.status_code == 409 and "reversing its journal" in response.json()["detail"]


async def test_a_pending_mark_that_turns_out_to_name_a_credit_note_is_reported(start_settlement):
    async with start_settlement() as service:
        await service.pay("ARP-4605-1", "50.00", "2015-07-01", customer="4605", marks=[("4605-CN", None, "Normal")])
        await service.transaction("ARP-4605-1")
        await service.invoice("4605-CN", "-20.00", customer="4605", tiers=[])
        [record] = await service.dead_letters(AR_CUSTOMER_TRANSACTIONS)
        assert "is a credit note" in record.headers["x-dlq-reason"]
        pending = (await service.http.get("/api/v1/pending-marks", params={"customer_account": "4605"})).json()
        assert pending["pending_marks"] == []
        assert await service.published(AR_SETTLEMENTS) == []
