"""The customer-transaction read model through the real broker: customer transactions, aged
balances and open invoices as the collections UI reads them."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from sqlalchemy import func
from sqlmodel import select

from kredit_collections.tables import SettlementDeltaRow
from kredit_shared.testing import eventually


async def test_customer_4027_matches_the_source_table_even_when_settlements_arrive_first(
    start_collections, database_url
):
    async with start_collections(database_url) as svc:
        # spec 003: 297.00 + 3.00 discount on 1 July, then 700.00 on 11 July; settlement reports come first.
        await svc.settle(
            "S-1",
            "FTI-10020",
            "ARP-10020",
            "297.00",
            on="2015-07-01",
            account="4027",
            discount="3.00",
            discount_voucher="DISC-10020",
        )
        await svc.settle("S-2", "FTI-10020", "ARP-10021", "700.00", on="2015-07-11", account="4027")
        await eventually(lambda: stored_deltas(svc, 5))
        assert (await svc.client.get("/api/v1/customers/4027/transactions")).status_code == 404

        await svc.post_transaction(
            "FTI-10020",
            "Invoice",
            "1000.00",
            on="2015-06-25",
            account="4027",
            invoice_id="10020",
            due="2015-07-25",
            name="Fabrikam customer 4027",
        )
        await svc.post_transaction("ARP-10020", "Payment", "-297.00", on="2015-07-01", account="4027")
        await svc.post_transaction("DISC-10020", "CashDiscount", "-3.00", on="2015-07-01", account="4027")
        await svc.post_transaction("FTI-10020", "Invoice", "999.00", on="2015-06-25", account="4027")  # again: ignored
        await svc.post_transaction("ARP-10021", "Payment", "-700.00", on="2015-07-11", account="4027")
        await svc.until_balances(
            "4027", {"FTI-10020": "0.00", "ARP-10020": "0.00", "DISC-10020": "0.00", "ARP-10021": "0.00"}
        )

        page = await svc.get("/customers/4027/transactions")
        assert page == {
            "customer_account": "4027",
            "transactions": [
                row("FTI-10020", "Invoice", "2015-06-25", "10020", debit="1000.00", due_date="2015-07-25"),
                row("ARP-10020", "Payment", "2015-07-01", None, credit="297.00"),
                row("DISC-10020", "CashDiscount", "2015-07-01", None, credit="3.00"),
                row("ARP-10021", "Payment", "2015-07-11", None, credit="700.00"),
            ],
        }
        # Between the two payments 700.00 was open, not yet due; after the second nothing is.
        [between] = (await svc.get("/aged-balances", as_of="2015-07-10"))["customers"]
        assert (between["balance"], between["buckets"]["Current"]) == ("700.00", "700.00")
        assert (await svc.get("/aged-balances", as_of="2015-07-11"))["customers"] == []
        assert (await svc.get("/open-invoices", customer_account="4027"))["invoices"] == []


def row(voucher, type, on, invoice_id, *, debit=None, credit=None, due_date=None) -> dict:
    return {
        "voucher": voucher,
        "type": type,
        "date": on,
        "invoice_id": invoice_id,
        "debit": debit,
        "credit": credit,
        "balance": "0.00",
        "currency": "USD",
        "due_date": due_date,
        "disputed": False,
    }


async def stored_deltas(svc, expected: int) -> bool:
    # Settlements of unknown transactions are invisible through the API; count what was stored.
    async with svc.runtime.sessions() as session:
        return (await session.exec(select(func.count()).select_from(SettlementDeltaRow))).one() == expected


async def test_aged_balances_put_each_open_invoice_in_the_bucket_of_its_days_past_due(start_collections):
    async with start_collections() as svc:
        birch, contoso = "US-010", "US-001"
        on = "2015-09-01"
        await svc.post_transaction(
            "CIV-1", "Invoice", "100.00", on=on, due="2016-04-15", account=birch, invoice_id="1", name="Birch company"
        )  # not yet due
        await svc.post_transaction(
            "CIV-2", "Invoice", "200.00", on=on, due="2016-03-15", account=birch, invoice_id="2"
        )  # 16 days past due
        await svc.post_transaction(
            "CIV-3", "Invoice", "300.00", on=on, due="2016-01-15", account=birch, invoice_id="3"
        )  # 76 days
        await svc.post_transaction("ARP-1", "Payment", "-50.00", on="2016-02-01", account=birch)
        await svc.settle("S-1", "CIV-3", "ARP-1", "50.00", on="2016-02-01", account=birch)
        await svc.post_transaction(
            "CIV-4",
            "Invoice",
            "400.00",
            on=on,
            due="2015-10-01",
            account=contoso,
            invoice_id="4",
            name="Contoso Retail San Diego",
        )  # 182 days
        await svc.post_transaction(
            "CIV-5", "Invoice", "500.00", on=on, due="2016-02-15", account=contoso, invoice_id="5"
        )  # 45 days
        await svc.until_balances(birch, {"CIV-1": "100.00", "CIV-2": "200.00", "CIV-3": "250.00", "ARP-1": "0.00"})
        await svc.until_balances(contoso, {"CIV-4": "400.00", "CIV-5": "500.00"})

        aged = await svc.get("/aged-balances", as_of="2016-03-31")
        assert aged["as_of"] == "2016-03-31"
        assert aged["buckets"] == ["Current", "1-30", "31-60", "61-90", "91+"]
        assert aged["customers"] == [
            {
                "customer_account": "US-001",
                "customer_name": "Contoso Retail San Diego",
                "currency": "USD",
                "balance": "900.00",
                "buckets": buckets(**{"31-60": "500.00", "91+": "400.00"}),
                "over_credit_limit": False,
                "disputed": "0.00",
            },
            {
                "customer_account": "US-010",
                "customer_name": "Birch company",
                "currency": "USD",
                "balance": "550.00",
                "buckets": buckets(Current="100.00", **{"1-30": "200.00", "61-90": "250.00"}),
                "over_credit_limit": False,
                "disputed": "0.00",
            },
        ]
        for customer in aged["customers"]:  # the aged total is the sum of the customer's open transactions
            open_items = await svc.balances(customer["customer_account"])
            assert sum(Decimal(b) for b in open_items.values()) == Decimal(customer["balance"])

        invoices = (await svc.get("/open-invoices", customer_account=birch))["invoices"]
        assert [(i["voucher"], i["invoice_id"], i["due_date"], i["amount"], i["balance"]) for i in invoices] == [
            ("CIV-3", "3", "2016-01-15", "300.00", "250.00"),
            ("CIV-2", "2", "2016-03-15", "200.00", "200.00"),
            ("CIV-1", "1", "2016-04-15", "100.00", "100.00"),
        ]
        assert [i["voucher"] for i in (await svc.get("/open-invoices"))["invoices"]] == [
            "CIV-4",
            "CIV-3",
            "CIV-5",
            "CIV-2",
            "CIV-1",
        ]
        assert (await svc.get("/aged-balances"))["as_of"] == date.today().isoformat()


def buckets(**amounts: str) -> dict[str, str]:
    return {label: amounts.get(label, "0.00") for label in ["Current", "1-30", "31-60", "61-90", "91+"]}
