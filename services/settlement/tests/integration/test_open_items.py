"""Open credits, credit notes and posted write-offs settle the customer's open items automatically."""

from __future__ import annotations

import uuid
from decimal import Decimal

from kredit_shared.contracts import (
    AR_CUSTOMER_TRANSACTIONS,
    AR_SETTLEMENTS,
    ERP_CUSTOMER_PAYMENTS,
    GL_JOURNAL_EVENTS,
    GL_JOURNAL_LINES,
)
from kredit_shared.testing import eventually

D = Decimal


async def test_a_new_invoice_takes_open_credits_and_a_credit_note_pays_open_invoices(start_settlement):
    async with start_settlement() as service:
        await service.pay("ARP-4701-1", "500.00", "2015-06-20", customer="4701")
        await service.transaction("ARP-4701-1")
        assert (await service.open_transactions("4701"))["ARP-4701-1"]["open_amount"] == "-500.00"

        await service.invoice("4701-1", customer="4701", wait=False)
        [by_payment] = await service.settlements(credit_voucher="ARP-4701-1")
        # As if the payment had come after the invoice: 1 % of the 505.05 that 500.00 settles on 20 June.
        assert by_payment | {"message_id": None} == {
            "message_id": None,
            "settlement_id": "FTI-4701-1:ARP-4701-1:1",
            "customer_account": "4701",
            "settlement_date": "2015-06-20",
            "currency": "USD",
            "debit_voucher": "FTI-4701-1",
            "credit_voucher": "ARP-4701-1",
            "amount_settled": "500.00",
            "cash_discount_amount": "5.05",
            "cash_discount_voucher": "DISC-4701-1",
        }

        await service.invoice("4701-CN", "-100.00", customer="4701", tiers=[], on="2015-06-30", wait=False)
        [by_note] = await service.settlements(credit_voucher="CCN-4701-CN")
        assert (by_note["debit_voucher"], by_note["amount_settled"], by_note["cash_discount_amount"]) == (
            "FTI-4701-1",
            "100.00",
            "0.00",
        )
        assert {v: t["open_amount"] for v, t in (await service.open_transactions("4701")).items()} == {
            "FTI-4701-1": "394.95"
        }

        # A credit note before any invoice stays open until one comes.
        await service.invoice("4702-CN", "-50.00", customer="4702", tiers=[], on="2015-06-01")
        await service.invoice("4702-1", "200.00", customer="4702", wait=False)
        [by_earlier_note] = await service.settlements(credit_voucher="CCN-4702-CN")
        assert (by_earlier_note["debit_voucher"], by_earlier_note["amount_settled"]) == ("FTI-4702-1", "50.00")

        # Settlement's own postings came back on the customer-transactions topic and were ignored.
        await service.invoice("4701-1", customer="4701", wait=False)  # and so is a re-sent invoice
        assert await service.published(AR_CUSTOMER_TRANSACTIONS + ".dlq") == []
        assert len(await service.published(AR_SETTLEMENTS, 0)) == 3

        # What settlement did not post itself, or a voucher used twice, is reported, not dropped.
        await service.invoice("4701-X", "5.00", customer="4701", voucher="ARP-4701-1", wait=False)
        await service.invoice(
            "4701-Y", "-5.00", customer="4701", voucher="ARP-ELSEWHERE", transaction_type="Payment", wait=False
        )
        reasons = [r.headers["x-dlq-reason"] for r in await service.dead_letters(AR_CUSTOMER_TRANSACTIONS, count=2)]
        assert reasons == [
            "voucher ARP-4701-1 is already a Payment of customer 4701 for -500.00",
            "Payment ARP-ELSEWHERE is unknown: settlement posts payments, cash discounts and "
            "write-offs itself and takes only invoices and credit notes from others",
        ]


def journal_posted(batch: str, *lines: dict, message_id: str | None = None, event_type: str = "JournalPosted") -> dict:
    return {
        "message_id": message_id or str(uuid.uuid4()),
        "event_type": event_type,
        "journal_name": "WriteOff",
        "batch_number": batch,
        "request_id": f"req-{batch}",
        "posting_date": "2015-09-30",
        "lines": list(lines),
    }


def customer_line(
    voucher: str, customer: str, *, debit: str = "0.00", credit: str = "0.00", settles: list[tuple[str, str]] = ()
) -> dict:
    return {
        "account_type": "Customer",
        "account": customer,
        "debit": debit,
        "credit": credit,
        "currency": "USD",
        "transaction_date": "2015-09-30",
        "voucher": voucher,
        "reason_code": "BadDebt",
        "settles": [{"voucher": v, "amount": a} for v, a in settles],
    }


def ledger_line(voucher: str, *, debit: str = "0.00", credit: str = "0.00") -> dict:
    return {
        "account_type": "Ledger",
        "account": "618900",
        "debit": debit,
        "credit": credit,
        "currency": "USD",
        "transaction_date": "2015-09-30",
        "voucher": voucher,
    }


async def test_a_posted_write_off_settles_what_it_names(start_settlement):
    async with start_settlement() as service:
        await service.invoice("4801-1", customer="4801")
        await service.invoice("4802-1", customer="4802")
        await service.pay("ARP-4802-1", "300.00", "2015-08-01", customer="4802")
        await service.settlements(credit_voucher="ARP-4802-1")
        await service.pay("ARP-4803-1", "200.00", "2015-08-01", customer="4803")
        await service.transaction("ARP-4803-1")

        created = journal_posted("WOJ-0", event_type="JournalCreated")
        await service.publish(GL_JOURNAL_EVENTS, created, key="WOJ-0")
        posted = journal_posted(
            "WOJ-1",
            customer_line("WOV-1", "4801", credit="1000.00", settles=[("FTI-4801-1", "1000.00")]),
            ledger_line("WOV-1", debit="1000.00"),
            # 4802 paid 300.00 since the journal was proposed: 700.00 is settled, 300.00 reported.
            customer_line("WOV-2", "4802", credit="1000.00", settles=[("FTI-4802-1", "1000.00")]),
            ledger_line("WOV-2", debit="1000.00"),
            # An open credit is written off by a debit line.
            customer_line("WOV-3", "4803", debit="200.00", settles=[("ARP-4803-1", "-200.00")]),
            ledger_line("WOV-3", credit="200.00"),
        )
        await service.publish(GL_JOURNAL_EVENTS, posted, key="WOJ-1")

        assert (await service.transaction("WOV-1"))["transaction_type"] == "WriteOff"
        assert [
            (t["transaction_type"], t["amount"])
            for t in [await service.transaction(v) for v in ("WOV-1", "WOV-2", "WOV-3")]
        ] == [("WriteOff", "-1000.00"), ("WriteOff", "-1000.00"), ("WriteOff", "200.00")]
        [one] = await service.settlements(credit_voucher="WOV-1")
        assert (one["debit_voucher"], one["amount_settled"], one["settlement_id"]) == (
            "FTI-4801-1",
            "1000.00",
            "WOV-1:1",
        )
        [two] = await service.settlements(credit_voucher="WOV-2")
        assert (two["debit_voucher"], two["amount_settled"]) == ("FTI-4802-1", "700.00")
        [three] = await service.settlements(debit_voucher="WOV-3")
        assert (three["credit_voucher"], three["amount_settled"]) == ("ARP-4803-1", "200.00")

        [report] = await service.dead_letters(GL_JOURNAL_EVENTS)
        reason = report.headers["x-dlq-reason"]
        assert "WOJ-1" in reason and "WOV-2" in reason and "only 700.00 was open" in reason
        assert "300.00 left open on WOV-2" in reason

        assert await service.balance("FTI-4801-1", "4801") == D("0.00")
        assert await service.open_transactions("4801") == {}
        assert {v: t["open_amount"] for v, t in (await service.open_transactions("4802")).items()} == {
            "WOV-2": "-300.00"
        }
        assert await service.open_transactions("4803") == {}

        await service.publish(GL_JOURNAL_EVENTS, posted, key="WOJ-1")  # redelivered
        await service.publish(GL_JOURNAL_EVENTS, posted | {"message_id": str(uuid.uuid4())}, key="WOJ-1")  # re-sent
        assert (
            len([s for s in await service.published(AR_SETTLEMENTS, 1.0) if s["settlement_id"].startswith("WOV-")]) == 3
        )
        assert not [v for v in await service.published(GL_JOURNAL_LINES, 0) if v["voucher"].startswith("WOV-")], (
            "ledger-posting posted the write-off voucher already"
        )
        assert len(await service.published(GL_JOURNAL_EVENTS + ".dlq", 0)) == 1


async def test_a_posted_journal_naming_what_cannot_be_settled_as_stated_is_dead_lettered_and_not_applied(
    start_settlement,
):
    # Defence in depth: a forged or corrupted JournalPosted changes nothing in settlement.
    async with start_settlement() as service:
        await service.invoice("4811-1", customer="4811")
        await service.invoice("4812-1", customer="4812")
        forged = journal_posted(
            "WOJ-F1",
            # Writes off another customer's invoice ...
            customer_line("WOV-F1", "4811", credit="1000.00", settles=[("FTI-4812-1", "1000.00")]),
            ledger_line("WOV-F1", debit="1000.00"),
            # ... and names more than the line reverses.
            customer_line("WOV-F2", "4811", credit="10.00", settles=[("FTI-4811-1", "1000.00")]),
            ledger_line("WOV-F2", debit="10.00"),
        )
        await service.publish(GL_JOURNAL_EVENTS, forged, key="WOJ-F1")
        [report] = await service.dead_letters(GL_JOURNAL_EVENTS)
        reason = report.headers["x-dlq-reason"]
        assert "journal WOJ-F1 was posted, but it names transactions settlement cannot settle as stated" in reason
        assert "WOV-F1: FTI-4812-1 belongs to customer 4812, not 4811" in reason
        assert "WOV-F2: names 1000.00 in all, but the line reverses 10.00" in reason
        assert await service.balance("FTI-4811-1", "4811") == D("1000.00")
        assert await service.balance("FTI-4812-1", "4812") == D("1000.00")
        assert "WOV-F1" not in await service.open_transactions("4811", include_settled=True)
        assert not [s for s in await service.published(AR_SETTLEMENTS, 0.5) if s["settlement_id"].startswith("WOV-F")]

        # The same journal stated correctly settles (a new batch: the first was not applied).
        fixed = journal_posted(
            "WOJ-F2",
            customer_line("WOV-F3", "4811", credit="1000.00", settles=[("FTI-4811-1", "1000.00")]),
            ledger_line("WOV-F3", debit="1000.00"),
        )
        await service.publish(GL_JOURNAL_EVENTS, fixed, key="WOJ-F2")
        await service.settlements(credit_voucher="WOV-F3")
        assert await service.balance("FTI-4811-1", "4811") == D("0.00")


async def test_a_payment_that_overtakes_its_invoice_settles_its_marks_when_the_invoice_arrives(start_settlement):
    """The ERP's payment goes straight to settlement while its invoice goes through invoicing first."""
    async with start_settlement() as service:
        await service.pay("ARP-10020", "297.00", "2015-07-01", marks=[("10020", "297.00", "Normal")])
        await service.pay("ARP-10021", "700.00", "2015-07-11", marks=[("10020", "700.00", "Normal")])
        await service.transaction("ARP-10021")
        assert await service.balance("ARP-10020") == Decimal("-297.00"), "the money is posted at once"
        pending = (await service.http.get("/api/v1/pending-marks", params={"customer_account": "4027"})).json()
        assert [(m["payment_id"], m["invoice_id"], m["reserved"]) for m in pending["pending_marks"]] == [
            ("ARP-10020", "10020", "297.00"),
            ("ARP-10021", "10020", "700.00"),
        ], "waiting marks are state"
        metrics = (await service.http.get("/metrics")).text
        assert "kredit_settlement_pending_marks 2.0" in metrics and "kredit_settlement_reserved_amount 997.0" in metrics

        await service.invoice("10020", wait=False)
        assert (await service.transaction("DISC-10020"))["amount"] == "-3.00", "discount as of the payment date"
        await eventually(lambda: _is(service.balance("FTI-10020"), Decimal("0.00")))
        assert await service.balance("ARP-10020") == await service.balance("ARP-10021") == Decimal("0.00")
        settled = await service.settlements(count=2, debit_voucher="FTI-10020")
        assert sorted((s["credit_voucher"], s["amount_settled"], s["cash_discount_amount"]) for s in settled) == [
            ("ARP-10020", "297.00", "3.00"),
            ("ARP-10021", "700.00", "0.00"),
        ]
        assert await service.published(ERP_CUSTOMER_PAYMENTS + ".dlq", 0) == [], "nothing was rejected"
        assert (await service.http.get("/api/v1/pending-marks")).json()["pending_marks"] == []


async def _is(value, expected) -> bool:
    return (await value) == expected


async def test_an_automatic_payment_pays_the_oldest_due_of_many_open_invoices(start_settlement, database_url):
    """More open invoices than the first read takes (64): the payment still pays them in automatic
    settlement's order (due date, then voucher by code point: 'B' before 'a'), as far as its money goes."""
    async with start_settlement(database_url) as service:
        invoices = [
            (f"FTI-{'a' if i % 2 else 'B'}{i:02d}", "2015-07-20" if i % 5 == 0 else "2015-07-25") for i in range(90)
        ]
        for i, (voucher, due) in enumerate(invoices):
            await service.invoice(f"MANY-{i}", "10.00", customer="4750", due=due, tiers=[], voucher=voucher, wait=False)
        await eventually(lambda: service.balance(invoices[-1][0], customer="4750"))

        await service.pay("ARP-4750-1", "705.00", "2015-08-01", customer="4750")
        settled = await service.settlements(71, credit_voucher="ARP-4750-1")
        in_order = sorted(invoices, key=lambda v: (v[1], v[0]))
        assert [(s["debit_voucher"], s["amount_settled"]) for s in settled] == [
            *((voucher, "10.00") for voucher, _ in in_order[:70]),
            (in_order[70][0], "5.00"),
        ]
        assert (await service.open_transactions("4750"))[in_order[70][0]]["open_amount"] == "5.00"
