"""Bad payments go to the dead-letter topic with their reason; bad marks only reject themselves."""

from __future__ import annotations

import json
from decimal import Decimal

from kredit_shared.contracts import AR_CUSTOMER_TRANSACTIONS, AR_SETTLEMENTS, ERP_CUSTOMER_PAYMENTS, GL_JOURNAL_LINES

D = Decimal


async def test_bad_payments_are_dead_lettered_and_post_nothing(start_settlement):
    async with start_settlement() as service:
        await service.invoice("4401-1", customer="4401")
        rejected = {
            "must be positive, got 0.00": await service.pay("P-ZERO", "0.00", "2015-07-01", customer="4401"),
            "must be positive, got -5.00": await service.pay("P-NEG", "-5.00", "2015-07-01", customer="4401"),
            "in EUR; payments are accepted in the accounting currency USD only": await service.pay(
                "P-EUR", "297.00", "2015-07-01", customer="4401", currency="EUR"
            ),
            "bank account '999999' is not a main account": await service.pay(
                "P-BANK", "297.00", "2015-07-01", customer="4401", bank_account="999999"
            ),
            "amount: amount must be a decimal string": await service.pay(
                "P-FLOAT", 297.5, "2015-07-01", customer="4401"
            ),
        }
        await service.pay("ARP-4401-1", "297.00", "2015-07-01", customer="4401", marks=[("4401-1", None, "Normal")])
        await service.settlements(credit_voucher="ARP-4401-1")

        dead = await service.dead_letters(ERP_CUSTOMER_PAYMENTS, count=len(rejected))
        for reason, message in rejected.items():
            [record] = [r for r in dead if r.json()["payment_id"] == message["payment_id"]]
            assert reason in record.headers["x-dlq-reason"]
            assert record.value == json.dumps(message).encode(), "the original bytes are kept"
        assert not [t for t in await service.published(AR_CUSTOMER_TRANSACTIONS) if t["voucher"].startswith("P-")]
        assert not [v for v in await service.published(GL_JOURNAL_LINES, 0) if v["voucher"].startswith("P-")]
        assert await service.balance("FTI-4401-1", "4401") == D("700.00")


async def test_a_payment_with_invalid_marks_posts_as_an_open_credit_and_reports_them(start_settlement):
    async with start_settlement() as service:
        await service.invoice("4501-1", customer="4501")
        await service.invoice("4999-1", customer="4999")
        await service.invoice("4501-EUR", "500.00", customer="4501", tiers=[], currency="EUR")
        await service.invoice("4501-2", "100.00", customer="4501", tiers=[])

        await service.pay(
            "ARP-4501-1",
            "297.00",
            "2015-07-01",
            customer="4501",
            marks=[
                ("NOPE", None, "Normal"),
                ("4999-1", None, "Normal"),
                ("4501-EUR", None, "Normal"),
                ("4501-1", None, "Sometimes"),
                ("4501-2", "60.00", "Normal"),
            ],
        )
        [record] = await service.dead_letters(ERP_CUSTOMER_PAYMENTS)
        reason = record.headers["x-dlq-reason"]
        for words in (
            "'4999-1' belongs to another customer",
            "'4501-EUR' is in EUR",
            "'Sometimes' is not one of",
            "The payment was posted",
            "237.00 of it is open as a credit",
            "1 mark(s) wait for their invoice",
        ):
            assert words in reason
        assert "NOPE" not in reason, "a mark waiting for its invoice is state, not a rejection"
        pending = (await service.http.get("/api/v1/pending-marks", params={"customer_account": "4501"})).json()
        assert [(m["payment_id"], m["invoice_id"], m["reserved"]) for m in pending["pending_marks"]] == [
            ("ARP-4501-1", "NOPE", "237.00")
        ]
        assert record.json()["payment_id"] == "ARP-4501-1"

        [valid] = await service.settlements(credit_voucher="ARP-4501-1")
        assert (valid["debit_voucher"], valid["amount_settled"]) == ("FTI-4501-2", "60.00")
        assert (await service.transaction("ARP-4501-1"))["amount"] == "-297.00"
        await service.voucher("ARP-4501-1")
        open_now = await service.open_transactions("4501")
        assert open_now["ARP-4501-1"]["open_amount"] == "-237.00"
        assert open_now["FTI-4501-1"]["open_amount"] == "1000.00"


async def test_a_payment_received_again_has_one_effect_and_a_changed_one_is_rejected(start_settlement):
    async with start_settlement() as service:
        await service.invoice("4601-1", customer="4601")
        first = await service.pay(
            "ARP-4601-1", "297.00", "2015-07-01", customer="4601", marks=[("4601-1", None, "Normal")]
        )
        await service.publish(ERP_CUSTOMER_PAYMENTS, first, key="4601")  # redelivered: same message_id
        await service.pay(
            "ARP-4601-1",
            "297.00",
            "2015-07-01",
            customer="4601",  # re-sent: a new message_id
            marks=[("4601-1", None, "Normal")],
        )
        await service.pay("ARP-4601-1", "300.00", "2015-07-01", customer="4601")  # the same id, other content
        [changed] = await service.dead_letters(ERP_CUSTOMER_PAYMENTS)
        assert "ARP-4601-1 was already received" in changed.headers["x-dlq-reason"]
        assert "different content" in changed.headers["x-dlq-reason"]
        assert changed.json()["amount"] == "300.00"

        await service.pay("ARP-4601-2", "100.00", "2015-07-02", customer="4601")  # a later payment goes through
        await service.settlements(credit_voucher="ARP-4601-2")
        assert [t["voucher"] for t in await service.published(AR_CUSTOMER_TRANSACTIONS)] == [
            "FTI-4601-1",
            "ARP-4601-1",
            "DISC-4601-1",
            "ARP-4601-2",
            "DISC-4601-2",
        ]
        assert len([s for s in await service.published(AR_SETTLEMENTS, 0) if s["credit_voucher"] == "ARP-4601-1"]) == 1
        assert await service.balance("FTI-4601-1", "4601") == D("598.99"), "100.00 + 1.01 discount off 700.00"
