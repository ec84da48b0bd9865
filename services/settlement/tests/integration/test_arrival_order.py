"""Payments and write-offs that overtake the invoices they name, through the real broker (issue 9)."""

from __future__ import annotations

from decimal import Decimal

from kredit_shared.contracts import ERP_CUSTOMER_PAYMENTS, GL_JOURNAL_EVENTS
from kredit_shared.testing import eventually

from .test_open_items import customer_line, journal_posted, ledger_line

D = Decimal


async def _balances(service, customer: str, *vouchers: str) -> list[Decimal | None]:
    return [await service.balance(v, customer) for v in vouchers]


async def test_a_payment_marked_for_the_second_invoice_is_not_taken_by_the_first(start_settlement):
    """ERP sent A (1,000.00), B (500.00), then P (500.00 marked for B); P reached settlement first."""
    async with start_settlement() as service:
        await service.pay("ARP-5101", "500.00", "2015-07-01", customer="5101", marks=[("5101-B", None, "Normal")])
        await service.transaction("ARP-5101")
        await service.invoice("5101-A", "1000.00", customer="5101", tiers=[])
        await service.invoice("5101-B", "500.00", customer="5101", tiers=[], on="2015-06-26", wait=False)
        await eventually(
            lambda: _is(
                _balances(service, "5101", "FTI-5101-A", "FTI-5101-B", "ARP-5101"), [D("1000.00"), D("0.00"), D("0.00")]
            )
        )
        assert await service.published(ERP_CUSTOMER_PAYMENTS + ".dlq", 0.5) == []


async def test_two_marked_payments_each_pay_their_own_invoice_whatever_comes_first(start_settlement):
    """Two invoices of 100.00 (2 % until day 10), payments of 49.00 and 98.00 marked for the first and the
    second, published right after them: each payment settles its own invoice with its own discount."""
    async with start_settlement() as service:
        tiers = [("2015-07-05", "2.00", "2.00")]
        await service.pay("ARP-5201-1", "49.00", "2015-07-01", customer="5201", marks=[("5201-1", None, "Normal")])
        await service.pay("ARP-5201-2", "98.00", "2015-07-01", customer="5201", marks=[("5201-2", None, "Normal")])
        await service.transaction("ARP-5201-2")
        await service.invoice("5201-1", "100.00", customer="5201", on="2015-06-25", tiers=tiers, wait=False)
        await service.invoice("5201-2", "100.00", customer="5201", on="2015-06-25", tiers=tiers, wait=False)
        await eventually(
            lambda: _is(
                _balances(service, "5201", "FTI-5201-1", "FTI-5201-2", "ARP-5201-1", "ARP-5201-2"),
                [D("50.00"), D("0.00"), D("0.00"), D("0.00")],
            )
        )
        settled = await service.settlements(count=2, customer_account="5201")
        assert sorted(
            (s["debit_voucher"], s["credit_voucher"], s["amount_settled"], s["cash_discount_amount"]) for s in settled
        ) == [("FTI-5201-1", "ARP-5201-1", "49.00", "1.00"), ("FTI-5201-2", "ARP-5201-2", "98.00", "2.00")]


async def test_a_write_off_posted_before_settlement_knows_the_invoice_settles_it_when_it_arrives(start_settlement):
    async with start_settlement() as service:
        await service.invoice("5301-0", "80.00", customer="5301", tiers=[])  # must not be touched by the write-off
        posted = journal_posted(
            "WOJ-53",
            customer_line("WOV-53", "5301", credit="1000.00", settles=[("FTI-5301-1", "1000.00")]),
            ledger_line("WOV-53", debit="1000.00"),
        )
        await service.publish(GL_JOURNAL_EVENTS, posted, key="WOJ-53")
        await service.transaction("WOV-53")
        pending = (await service.http.get("/api/v1/pending-marks", params={"customer_account": "5301"})).json()
        assert [(w["write_off_voucher"], w["voucher"], w["amount"]) for w in pending["pending_write_offs"]] == [
            ("WOV-53", "FTI-5301-1", "1000.00")
        ]
        await service.invoice("5301-2", "300.00", customer="5301", tiers=[], on="2015-07-01")
        assert await _balances(service, "5301", "FTI-5301-0", "FTI-5301-2") == [D("80.00"), D("300.00")], (
            "a write-off waiting for its invoice is not applied to others"
        )

        await service.invoice("5301-1", "1000.00", customer="5301", wait=False)
        await eventually(lambda: _is(_balances(service, "5301", "FTI-5301-1", "WOV-53"), [D("0.00"), D("0.00")]))
        [settled] = await service.settlements(credit_voucher="WOV-53")
        assert (settled["debit_voucher"], settled["amount_settled"]) == ("FTI-5301-1", "1000.00")
        assert await service.published(GL_JOURNAL_EVENTS + ".dlq", 0.5) == []
        assert (await service.http.get("/api/v1/pending-marks")).json()["pending_write_offs"] == []


async def test_a_payment_before_the_write_off_journal_posts_settles_first_and_the_excess_stays_held(start_settlement):
    async with start_settlement() as service:
        await service.invoice("5401-1", "1000.00", customer="5401", tiers=[])
        # The write-off of 1,000.00 was requested; meanwhile the customer paid 400.00.
        await service.pay("ARP-5401", "400.00", "2015-09-01", customer="5401", marks=[("5401-1", None, "Normal")])
        await service.settlements(credit_voucher="ARP-5401")
        posted = journal_posted(
            "WOJ-54",
            customer_line("WOV-54", "5401", credit="1000.00", settles=[("FTI-5401-1", "1000.00")]),
            ledger_line("WOV-54", debit="1000.00"),
        )
        await service.publish(GL_JOURNAL_EVENTS, posted, key="WOJ-54")
        [settled] = await service.settlements(credit_voucher="WOV-54")
        assert settled["amount_settled"] == "600.00", "only what is still open is written off"
        [report] = await service.dead_letters(GL_JOURNAL_EVENTS)
        assert "400.00 left open on WOV-54" in report.headers["x-dlq-reason"]
        assert await _balances(service, "5401", "FTI-5401-1", "WOV-54") == [D("0.00"), D("-400.00")]

        await service.invoice("5401-2", "500.00", customer="5401", tiers=[], on="2015-10-01")
        assert await service.balance("FTI-5401-2", "5401") == D("500.00"), "the excess is never applied automatically"
        assert await service.balance("WOV-54", "5401") == D("-400.00")


async def test_releasing_a_pending_mark_makes_the_money_an_automatic_credit(start_settlement):
    async with start_settlement() as service:
        await service.invoice("5501-1", "300.00", customer="5501", tiers=[])
        await service.pay("ARP-5501", "200.00", "2015-07-01", customer="5501", marks=[("5501-TYPO", None, "Normal")])
        await service.transaction("ARP-5501")
        assert await service.balance("FTI-5501-1", "5501") == D("300.00"), "reserved for the mark"
        released = await service.http.post("/api/v1/pending-marks/ARP-5501/release")
        assert released.status_code == 200, released.text
        assert released.json()["settled"] == [
            {"debit_voucher": "FTI-5501-1", "cash_applied": "200.00", "cash_discount": "0.00"}
        ]
        await eventually(lambda: _is(service.balance("FTI-5501-1", "5501"), D("100.00")))
        assert (await service.http.post("/api/v1/pending-marks/ARP-5501/release")).status_code == 409
        assert (await service.http.post("/api/v1/pending-marks/NOPE/release")).status_code == 404


async def _is(value, expected) -> bool:
    return (await value) == expected
