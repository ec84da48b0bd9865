"""The source document: partial payment before the discount date, final payment after it (customer 4027)."""

from __future__ import annotations

from decimal import Decimal

from kredit_shared.contracts import AR_CUSTOMER_TRANSACTIONS, AR_SETTLEMENTS, GL_JOURNAL_LINES

D = Decimal


def preview_row(response) -> dict:
    assert response.status_code == 200, response.text
    [row] = response.json()["marks"]
    return row


async def test_a_partial_payment_takes_3_00_discount_and_the_final_payment_after_the_date_none(
    start_settlement, database_url
):
    async with start_settlement(database_url) as service:
        assert (await service.http.get("/api/v1/parameters")).json() == {
            "calculate_cash_discounts_for_partial_payments": True
        }
        await service.invoice("10020", "1000.00")

        # Settle open transactions, 1 July, invoice 10020 marked with 297.00 and Normal.
        assert preview_row(await service.preview("2015-07-01", ("10020", "297.00", "Normal"))) == {
            "invoice_id": "10020",
            "cash_discount_date": "2015-07-09",
            "cash_discount_amount": "10.00",
            "use_cash_discount": "Normal",
            "cash_discount_taken": "0.00",
            "cash_discount_amount_to_take": "3.00",
            "amount_to_settle": "297.00",
        }

        await service.pay("ARP-10020", "297.00", "2015-07-01", marks=[("10020", "297.00", "Normal")])
        [settled] = await service.settlements(credit_voucher="ARP-10020")
        assert {
            k: settled[k]
            for k in (
                "debit_voucher",
                "amount_settled",
                "cash_discount_amount",
                "cash_discount_voucher",
                "settlement_date",
                "currency",
                "customer_account",
            )
        } == {
            "debit_voucher": "FTI-10020",
            "amount_settled": "297.00",
            "cash_discount_amount": "3.00",
            "cash_discount_voucher": "DISC-10020",
            "settlement_date": "2015-07-01",
            "currency": "USD",
            "customer_account": "4027",
        }
        payment, discount = await service.transaction("ARP-10020"), await service.transaction("DISC-10020")
        assert (payment["transaction_type"], payment["amount"], payment["transaction_date"]) == (
            "Payment",
            "-297.00",
            "2015-07-01",
        )
        assert (discount["transaction_type"], discount["amount"], discount["transaction_date"]) == (
            "CashDiscount",
            "-3.00",
            "2015-07-01",
        )
        assert await service.balance("FTI-10020") == D("700.00")

        # 11 July, after the discount date: Normal shows nothing more to take, Always the remaining 7.00.
        assert preview_row(await service.preview("2015-07-11", ("10020", "700.00", "Normal"))) == {
            "invoice_id": "10020",
            "cash_discount_date": "2015-07-09",
            "cash_discount_amount": "0.00",
            "use_cash_discount": "Normal",
            "cash_discount_taken": "3.00",
            "cash_discount_amount_to_take": "0.00",
            "amount_to_settle": "700.00",
        }
        always = preview_row(await service.preview("2015-07-11", ("10020", "700.00", "Always")))
        # The tier's full 10.00 is shown; 7.00 of it is left to take.
        assert (always["cash_discount_amount"], always["cash_discount_amount_to_take"], always["amount_to_settle"]) == (
            "10.00",
            "7.00",
            "693.00",
        )

        await service.pay("ARP-10021", "700.00", "2015-07-11", marks=[("10020", "700.00", "Normal")])
        [final] = await service.settlements(credit_voucher="ARP-10021")
        assert (final["amount_settled"], final["cash_discount_amount"], final["cash_discount_voucher"]) == (
            "700.00",
            "0.00",
            None,
        )

        # The source's final customer transactions: every balance 0.00.
        everything = await service.open_transactions(include_settled=True)
        assert {v: (t["type"], t["original_amount"], t["open_amount"]) for v, t in everything.items()} == {
            "FTI-10020": ("Invoice", "1000.00", "0.00"),
            "ARP-10020": ("Payment", "-297.00", "0.00"),
            "DISC-10020": ("CashDiscount", "-3.00", "0.00"),
            "ARP-10021": ("Payment", "-700.00", "0.00"),
        }
        assert await service.open_transactions() == {}

        # The ledger: bank debits 297.00 and 700.00, discounts 3.00, each against receivables 130100.
        vouchers = {
            v["voucher"]: [(l["account"], l["debit"], l["credit"]) for l in v["lines"]]
            for v in await service.published(GL_JOURNAL_LINES)
        }
        assert vouchers == {
            "ARP-10020": [("110110", "297.00", "0.00"), ("130100", "0.00", "297.00")],
            "DISC-10020": [("520100", "3.00", "0.00"), ("130100", "0.00", "3.00")],
            "ARP-10021": [("110110", "700.00", "0.00"), ("130100", "0.00", "700.00")],
        }
        assert len(await service.published(AR_SETTLEMENTS, 0)) == 2
        posted = [t["voucher"] for t in await service.published(AR_CUSTOMER_TRANSACTIONS, 0)]
        assert posted == ["FTI-10020", "ARP-10020", "DISC-10020", "ARP-10021"], "the invoice plus settlement's postings"
