"""Write-offs through the real broker: the four entry points of spec 000 each propose a
GeneralJournalRequested, ledger-posting's journal events move the request along, and every refusal
answers 4xx without emitting anything."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from kredit_shared.contracts import GL_JOURNAL_EVENTS, GeneralJournalRequested, dead_letter_topic
from kredit_shared.testing import TopicProbe, eventually

CAVE, CONTOSO, BIRCH = "US-004", "US-001", "US-010"


def rows(journal: GeneralJournalRequested) -> list[tuple[str, str, str, str]]:
    return [(l.account_type, l.account, str(l.debit), str(l.credit)) for l in journal.lines]


def settles(journal: GeneralJournalRequested) -> list[list[tuple[str, str]]]:
    return [[(s.voucher, str(s.amount)) for s in l.settles] for l in journal.lines]


def assert_one_customer_line_and_one_balanced_voucher(journal: GeneralJournalRequested) -> None:
    """Seed 000: one line reverses the customer balance; the journal is one voucher (no groups)."""
    assert [l.account_type for l in journal.lines].count("Customer") == 1
    assert {l.voucher_group for l in journal.lines} == {None}
    assert sum(l.debit for l in journal.lines) == sum(l.credit for l in journal.lines)


async def test_a_write_off_of_selected_transactions_goes_from_requested_to_posted(start_collections, database_url):
    async with start_collections(database_url) as svc:
        # spec 000, entry point 2: the Collections page of Cave Wholesales, two transactions, "Bad debt".
        await svc.post_transaction(
            "CIV-000101",
            "Invoice",
            "1200.00",
            on="2016-01-01",
            due="2016-01-31",
            account=CAVE,
            invoice_id="000101",
            name="Cave Wholesales",
        )
        await svc.post_transaction(
            "CIV-000102", "Invoice", "345.67", on="2016-01-20", due="2016-02-19", account=CAVE, invoice_id="000102"
        )
        await svc.post_transaction("CIV-000103", "Invoice", "50.00", on="2016-01-25", account=CAVE, invoice_id="000103")
        await svc.until_balances(CAVE, {"CIV-000101": "1200.00", "CIV-000102": "345.67", "CIV-000103": "50.00"})

        write_off_id = await svc.write_off(
            customer_account=CAVE, vouchers=["CIV-000101", "CIV-000102"], reason_comment="Bad debt", date="2016-03-01"
        )
        journal = await svc.journal(write_off_id)
        assert (journal.request_id, journal.journal_name) == (write_off_id, "WriteOff")
        assert rows(journal) == [("Customer", CAVE, "0.00", "1545.67"), ("Ledger", "618900", "1545.67", "0.00")]
        assert settles(journal) == [[("CIV-000101", "1200.00"), ("CIV-000102", "345.67")], []]
        assert_one_customer_line_and_one_balanced_voucher(journal)
        assert {(l.reason_code, l.reason_comment, str(l.transaction_date)) for l in journal.lines} == {
            ("BadDebt", "Bad debt", "2016-03-01")
        }

        requested = await svc.get(f"/write-offs/{write_off_id}")
        assert {
            k: requested[k] for k in ("write_off_id", "customer_account", "status", "reason", "journal_batch_number")
        } == {
            "write_off_id": write_off_id,
            "customer_account": CAVE,
            "status": "requested",
            "reason": None,
            "journal_batch_number": None,
        }
        assert requested["lines"] == journal.model_dump(mode="json")["lines"]

        await svc.journal_created(write_off_id, "WOJ-000001")
        assert (await svc.until_status(write_off_id, "journal-created"))["journal_batch_number"] == "WOJ-000001"
        await svc.journal_posted(journal, "WOJ-000001")
        assert (await svc.until_status(write_off_id, "posted"))["journal_batch_number"] == "WOJ-000001"

        # Posted but not yet settled: the items still look open, yet a second write-off would be a double one.
        assert "CIV-000101" in await svc.refused(409, customer_account=CAVE, vouchers=["CIV-000101"])
        # settlement books the write-off voucher and settles the invoice against it, as it would on JournalPosted.
        await svc.post_transaction("WOV-000001", "WriteOff", "-1200.00", on="2016-03-01", account=CAVE)
        await svc.settle("S-WO-1", "CIV-000101", "WOV-000001", "1200.00", on="2016-03-01", account=CAVE)
        await svc.until_balances(
            CAVE, {"CIV-000101": "0.00", "CIV-000102": "345.67", "CIV-000103": "50.00", "WOV-000001": "0.00"}
        )
        assert "not open" in await svc.refused(422, customer_account=CAVE, vouchers=["CIV-000101"])

        # Two collectors write off the same invoice at the same moment: one wins, the other gets a 409.
        both = await asyncio.gather(
            *(
                svc.client.post("/api/v1/write-offs", json={"customer_account": CAVE, "invoice_id": "000103"})
                for _ in range(2)
            )
        )
        assert sorted(r.status_code for r in both) == [202, 409], [r.text for r in both]
        await svc.journals.settle(0.3)
        assert len(svc.journals.records) == 2


async def test_each_entry_point_proposes_its_write_off_journal(start_collections):
    async with start_collections() as svc:
        # Birch company (aged balances page): two open invoices, one partly paid; the payment is used up.
        await svc.post_transaction(
            "CIV-000500",
            "Invoice",
            "800.00",
            on="2016-01-05",
            due="2016-02-04",
            account=BIRCH,
            invoice_id="000500",
            name="Birch company",
        )
        await svc.post_transaction(
            "CIV-000501", "Invoice", "150.00", on="2016-02-05", due="2016-03-06", account=BIRCH, invoice_id="000501"
        )
        await svc.post_transaction("ARP-000900", "Payment", "-300.00", on="2016-02-10", account=BIRCH)
        await svc.settle("S-9", "CIV-000500", "ARP-000900", "300.00", on="2016-02-10", account=BIRCH)
        # Contoso Retail San Diego (all customers page): an invoice and an open credit note.
        await svc.post_transaction(
            "CIV-000600",
            "Invoice",
            "2000.00",
            on="2016-01-10",
            account=CONTOSO,
            invoice_id="000600",
            name="Contoso Retail San Diego",
        )
        await svc.post_transaction(
            "CCN-000010", "CreditNote", "-250.00", on="2016-01-15", account=CONTOSO, invoice_id="000010"
        )
        # The open customer invoices page: CIV-000667 of another customer, and an invoice with sales tax.
        await svc.post_transaction(
            "CIV-000667", "Invoice", "499.00", on="2016-02-01", account="US-027", invoice_id="000667"
        )
        await svc.post_transaction(
            "CIV-000668", "Invoice", "1100.00", on="2016-02-01", account="US-027", invoice_id="000668", tax="100.00"
        )
        await svc.until_balances(BIRCH, {"CIV-000500": "500.00", "CIV-000501": "150.00", "ARP-000900": "0.00"})
        await svc.until_balances(CONTOSO, {"CIV-000600": "2000.00", "CCN-000010": "-250.00"})
        await svc.until_balances("US-027", {"CIV-000667": "499.00", "CIV-000668": "1100.00"})

        # 1. Aged balances: the Birch company row, its whole balance.
        [birch_row] = [
            c
            for c in (await svc.get("/aged-balances", as_of="2016-03-31"))["customers"]
            if c["customer_name"] == "Birch company"
        ]
        birch = await svc.journal(await svc.write_off(customer_account=birch_row["customer_account"]))
        assert rows(birch) == [("Customer", BIRCH, "0.00", "650.00"), ("Ledger", "618900", "650.00", "0.00")]
        assert settles(birch) == [[("CIV-000500", "500.00"), ("CIV-000501", "150.00")], []]
        assert sum(l.credit for l in birch.lines if l.account_type == "Customer") == Decimal(birch_row["balance"])

        # 3. Open customer invoices: one invoice, with another reason code than the default.
        [invoice] = [i for i in (await svc.get("/open-invoices"))["invoices"] if i["voucher"] == "CIV-000667"]
        single = await svc.journal(
            await svc.write_off(
                customer_account=invoice["customer_account"], invoice_id=invoice["invoice_id"], reason_code="SmallBal"
            )
        )
        assert rows(single) == [("Customer", "US-027", "0.00", "499.00"), ("Ledger", "618900", "499.00", "0.00")]
        assert settles(single)[0] == [("CIV-000667", "499.00")]
        assert {l.reason_code for l in single.lines} == {"SmallBal"}

        # 4. All customers: Contoso's whole balance, net of the open credit note, which is settled on its side.
        contoso = await svc.journal(
            await svc.write_off(customer_account=CONTOSO, reason_code="Bankrupt", reason_comment="Customer bankrupt")
        )
        assert rows(contoso) == [("Customer", CONTOSO, "0.00", "1750.00"), ("Ledger", "618900", "1750.00", "0.00")]
        assert settles(contoso) == [[("CIV-000600", "2000.00"), ("CCN-000010", "-250.00")], []]
        assert {(l.reason_code, l.reason_comment) for l in contoso.lines} == {("Bankrupt", "Customer bankrupt")}

        # Separate sales tax on: the tax share goes back to 222200, only the net hits 618900.
        parameters = {"journal_name": "WriteOff", "reason_code": "BadDebt", "separate_sales_tax": True}
        assert (await svc.client.put("/api/v1/parameters/write-off", json=parameters)).json() == parameters
        assert await svc.get("/parameters/write-off") == parameters
        taxed = await svc.journal(await svc.write_off(customer_account="US-027", vouchers=["CIV-000668"]))
        assert rows(taxed) == [
            ("Customer", "US-027", "0.00", "1100.00"),
            ("Ledger", "618900", "1000.00", "0.00"),
            ("Ledger", "222200", "100.00", "0.00"),
        ]

        for journal in (birch, single, contoso, taxed):
            assert journal.journal_name == "WriteOff"
            assert_one_customer_line_and_one_balanced_voucher(journal)


async def test_refused_write_offs_answer_4xx_and_emit_nothing(start_collections):
    async with start_collections() as svc:
        await svc.post_transaction("CIV-1", "Invoice", "100.00", on="2016-01-01", account=CAVE, invoice_id="1")
        await svc.post_transaction("CIV-2", "Invoice", "200.00", on="2016-01-01", account=CAVE, invoice_id="2")
        await svc.post_transaction("CIV-3", "Invoice", "300.00", on="2016-01-01", account=CAVE, invoice_id="3")
        await svc.post_transaction("ARP-1", "Payment", "-100.00", on="2016-01-02", account=CAVE)
        await svc.settle("S-1", "CIV-1", "ARP-1", "100.00", on="2016-01-02", account=CAVE)
        await svc.post_transaction("CIV-9", "Invoice", "900.00", on="2016-01-01", account=CONTOSO, invoice_id="9")
        await svc.post_transaction("CIV-E", "Invoice", "10.00", on="2016-01-01", account=CONTOSO, currency="EUR")
        await svc.post_transaction("CIV-P", "Invoice", "50.00", on="2016-01-01", account="US-100")
        await svc.post_transaction("ARP-P", "Payment", "-50.00", on="2016-01-01", account="US-100")
        await svc.settle("S-P", "CIV-P", "ARP-P", "50.00", on="2016-01-01", account="US-100")
        await svc.until_balances(CAVE, {"CIV-1": "0.00", "CIV-2": "200.00", "CIV-3": "300.00", "ARP-1": "0.00"})
        await svc.until_balances(CONTOSO, {"CIV-9": "900.00", "CIV-E": "10.00"})
        await svc.until_balances("US-100", {"CIV-P": "0.00", "ARP-P": "0.00"})
        pending = await svc.write_off(customer_account=CAVE, vouchers=["CIV-2"])
        await svc.journal(pending)

        assert "'US-999' has no transactions" in await svc.refused(404, customer_account="US-999")
        assert "nothing open" in await svc.refused(422, customer_account="US-100")
        assert "not transactions of customer US-004: CIV-9" in await svc.refused(
            422, customer_account=CAVE, vouchers=["CIV-9"]
        )
        assert "not open (already settled): CIV-1" in await svc.refused(422, customer_account=CAVE, vouchers=["CIV-1"])
        assert "invoice '4'" in await svc.refused(422, customer_account=CAVE, invoice_id="4")
        assert "unknown reason code 'Lost'" in await svc.refused(
            422, customer_account=CAVE, vouchers=["CIV-3"], reason_code="Lost"
        )
        assert "CIV-2" in await svc.refused(409, customer_account=CAVE)  # the whole balance includes CIV-2
        assert "EUR, USD" in await svc.refused(422, customer_account=CONTOSO)
        assert (await svc.client.post("/api/v1/write-offs", json={"vouchers": ["CIV-3"]})).status_code == 422
        assert (await svc.client.get("/api/v1/write-offs/nope")).status_code == 404

        # Journal events of other journals are ignored; a rejected journal frees its vouchers again.
        await svc.journal_created("not-a-write-off", "GNJ-000001")
        await svc.journal_rejected(pending, "journal name WriteOff is blocked")
        rejected = await svc.until_status(pending, "rejected")
        assert rejected["reason"] == "journal name WriteOff is blocked"
        await svc.journal_created(pending, "WOJ-000009")  # too late: rejected is final
        again = await svc.write_off(customer_account=CAVE, vouchers=["CIV-2"])
        await svc.journal(again)
        assert (await svc.get(f"/write-offs/{pending}"))["status"] == "rejected"
        assert len(await svc.journals.settle(0.3)) == 2, "only the two accepted write-offs were proposed"


async def test_write_off_parameters_are_edited_within_the_setup(start_collections):
    async with start_collections() as svc:
        defaults = {"journal_name": "WriteOff", "reason_code": "BadDebt", "separate_sales_tax": False}
        assert await svc.get("/parameters/write-off") == defaults
        assert (await svc.get("/reason-codes"))["reason_codes"] == [
            {"code": "BadDebt", "description": "Bad debt"},
            {"code": "Bankrupt", "description": "Customer bankrupt"},
            {"code": "SmallBal", "description": "Small balance"},
        ]

        async def put(**changes):
            return await svc.client.put("/api/v1/parameters/write-off", json=defaults | changes)

        assert "unknown journal name 'Nope'" in (await put(journal_name="Nope")).json()["detail"]
        assert "unknown reason code 'Lost'" in (await put(reason_code="Lost")).json()["detail"]
        assert (await put(separate_sales_tax="maybe")).status_code == 422
        assert await svc.get("/parameters/write-off") == defaults
        assert (await put(journal_name="GenJrn", reason_code="SmallBal")).status_code == 200

        await svc.post_transaction("CIV-1", "Invoice", "10.00", on="2016-01-01", account=CAVE)
        await svc.until_balances(CAVE, {"CIV-1": "10.00"})
        journal = await svc.journal(await svc.write_off(customer_account=CAVE))
        assert journal.journal_name == "GenJrn"
        assert {l.reason_code for l in journal.lines} == {"SmallBal"}


async def test_a_cancelled_write_off_frees_its_invoice_once_ledger_posting_has_voided_the_journal(
    start_collections, database_url
):
    async with start_collections(database_url) as svc:
        await svc.post_transaction("CIV-1", "Invoice", "100.00", on="2016-01-01", account=CAVE, invoice_id="1")
        await svc.until_balances(CAVE, {"CIV-1": "100.00"})
        first = await svc.write_off(customer_account=CAVE, invoice_id="1")
        await svc.journal(first)
        await svc.journal_created(first, "WOJ-000001")
        await svc.until_status(first, "journal-created")

        cancelling = await svc.cancel(first, 202, reason="wrong customer")
        assert {k: cancelling[k] for k in ("status", "reason", "journal_batch_number")} == {
            "status": "cancelling",
            "reason": "wrong customer",
            "journal_batch_number": "WOJ-000001",
        }
        assert (await svc.cancel(first, 202))["status"] == "cancelling", "asking again answers the same"
        [cancel] = await svc.cancels(first)  # the second call sent nothing
        assert (cancel.request_id, cancel.journal_name, cancel.reason) == (first, "WriteOff", "wrong customer")
        # Not free yet: the journal might be posted before ledger-posting sees the cancel.
        assert "CIV-1" in await svc.refused(409, customer_account=CAVE, invoice_id="1")

        await svc.journal_voided(first, "WOJ-000001")
        await svc.until_status(first, "cancelled")
        assert (await svc.cancel(first, 200))["status"] == "cancelled"
        await svc.journal_voided(first, "WOJ-000001")  # redelivered, and a stray late event: nothing changes
        await svc.journal_posted(await svc.journal(first), "WOJ-000001")

        second = await svc.write_off(customer_account=CAVE, invoice_id="1")
        assert [s.voucher for l in (await svc.journal(second)).lines for s in l.settles] == ["CIV-1"]
        await svc.cancels(first, count=1)
        assert (await svc.get(f"/write-offs/{first}"))["status"] == "cancelled"


async def test_a_cancel_that_loses_the_race_with_the_posting_ends_posted_and_keeps_the_invoice(start_collections):
    async with start_collections() as svc:
        await svc.post_transaction("CIV-1", "Invoice", "100.00", on="2016-01-01", account=CAVE, invoice_id="1")
        await svc.post_transaction("CIV-2", "Invoice", "200.00", on="2016-01-01", account=CAVE, invoice_id="2")
        await svc.until_balances(CAVE, {"CIV-1": "100.00", "CIV-2": "200.00"})
        raced = await svc.write_off(customer_account=CAVE, invoice_id="1")
        journal = await svc.journal(raced)
        assert (await svc.cancel(raced, 202))["status"] == "cancelling"  # still `requested`: allowed
        # ledger-posting had posted the journal before the cancel arrived, so it refuses the cancel.
        await svc.journal_created(raced, "WOJ-000001")
        await svc.journal_posted(journal, "WOJ-000001")
        await svc.cancel_refused(raced, "WOJ-000001", "journal WOJ-000001 is already posted; it cannot be cancelled")

        async def refusal_recorded():
            write_off = await svc.until_status(raced, "posted")
            assert write_off["reason"] == "journal WOJ-000001 is already posted; it cannot be cancelled"
            return write_off

        await eventually(refusal_recorded)
        assert "CIV-1" in await svc.refused(409, customer_account=CAVE, invoice_id="1"), "never written off twice"
        assert "already posted" in (await svc.cancel(raced, 409))["detail"]

        rejected = await svc.write_off(customer_account=CAVE, invoice_id="2")
        await svc.journal_rejected(rejected, "unbalanced")
        await svc.until_status(rejected, "rejected")
        assert "already rejected: unbalanced" in (await svc.cancel(rejected, 409))["detail"]
        assert "no write-off 'nope'" in (await svc.cancel("nope", 404))["detail"]
        assert (await svc.client.post(f"/api/v1/write-offs/{rejected}/cancel", json={"why": "x"})).status_code == 422
        await svc.cancels(raced, count=1)
        await svc.cancels(rejected, count=0)


async def test_a_posted_journal_that_is_not_the_requested_one_is_dead_lettered_and_not_applied(start_collections):
    async with start_collections() as svc:
        dlq_topic = svc.settings.topic(dead_letter_topic(GL_JOURNAL_EVENTS))
        async with TopicProbe(svc.settings.kafka_bootstrap_servers, [dlq_topic]) as dlq:
            await svc.post_transaction("CIV-1", "Invoice", "120.00", on="2016-01-01", account=CAVE, invoice_id="1")
            await svc.post_transaction("CIV-2", "Invoice", "80.00", on="2016-01-01", account=CAVE, invoice_id="2")
            await svc.until_balances(CAVE, {"CIV-1": "120.00", "CIV-2": "80.00"})
            write_off_id = await svc.write_off(customer_account=CAVE, vouchers=["CIV-1"])
            journal = await svc.journal(write_off_id)

            # The posted lines settle another invoice than the one requested: reported, not applied.
            changed = journal.model_copy(
                update={
                    "lines": [
                        l.model_copy(update={"settles": [s.model_copy(update={"voucher": "CIV-2"}) for s in l.settles]})
                        for l in journal.lines
                    ]
                }
            )
            await svc.journal_posted(changed, "WOJ-000001")
            [letter] = await dlq.wait_for(lambda r: True)
            reason = letter.headers["x-dlq-reason"]
            assert f"its lines differ from write-off {write_off_id}'s journal" in reason and "CIV-2" in reason

            # A write-off journal collections never requested.
            forged = journal.model_copy(update={"request_id": "never-requested"})
            await svc.journal_posted(forged, "WOJ-000002")
            await dlq.wait_for(lambda r: "collections never requested it" in r.headers["x-dlq-reason"])
            assert (await svc.get(f"/write-offs/{write_off_id}"))["status"] == "requested"

            # The journal as requested moves the write-off along; a ledger-only journal of others is ignored.
            await svc.journal_posted(journal, "WOJ-000001")
            await svc.until_status(write_off_id, "posted")
            ledger_only = journal.model_copy(
                update={
                    "request_id": "general-journal",
                    "lines": [l for l in journal.lines if l.account_type == "Ledger"],
                }
            )
            await svc.journal_posted(ledger_only, "GNJ-000001")
            assert len(await dlq.settle(0.5)) == 2
