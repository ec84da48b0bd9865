"""Foreign currencies through the real broker (docs/currencies.md, issue 17): the D365 example's vouchers and
settlement to the cent, its reversal, a mark on an item of another currency, and a payment with no rate."""

from __future__ import annotations

from decimal import Decimal

from kredit_shared.contracts import ERP_CUSTOMER_PAYMENTS

D = Decimal


def lines(voucher: dict) -> list[tuple[str, str, str, str | None, str | None]]:
    return [
        (
            line["account"],
            line["debit"],
            line["credit"],
            line.get("transaction_currency"),
            line.get("transaction_currency_amount"),
        )
        for line in voucher["lines"]
    ]


async def test_the_d365_example_books_the_discount_at_the_payment_rate_and_a_realized_loss(start_settlement):
    async with start_settlement() as service:
        await service.invoice(
            "EU-1",
            "1000.00",
            customer="4901",
            tiers=[("2015-07-05", "2.00", "20.00")],
            currency="EUR",
            exchange_rate="1.10",
            accounting_currency_amount="1100.00",
        )
        await service.pay(
            "ARP-EU-1",
            "980.00",
            "2015-07-01",
            customer="4901",
            marks=[("EU-1", None, "Normal")],
            currency="EUR",
            exchange_rate="0.80",
        )
        [settled] = await service.settlements(credit_voucher="ARP-EU-1")
        assert {k: settled[k] for k in settled if k not in ("message_id", "settlement_date", "customer_account")} == {
            "settlement_id": "ARP-EU-1:1",
            "currency": "EUR",
            "debit_voucher": "FTI-EU-1",
            "credit_voucher": "ARP-EU-1",
            "amount_settled": "980.00",
            "cash_discount_amount": "20.00",
            "cash_discount_voucher": "DISC-EU-1",
            "debit_accounting_amount": "1100.00",
            "credit_accounting_amount": "784.00",
            "cash_discount_accounting_amount": "16.00",
            "difference_accounting_amount": "0.00",
            "realized_exchange_loss": "300.00",
        }

        payment = await service.voucher("ARP-EU-1")
        assert payment["currency"] == "USD"
        assert lines(payment) == [
            ("110110", "784.00", "0.00", "EUR", "980.00"),
            ("130100", "0.00", "784.00", "EUR", "-980.00"),
        ]
        assert lines(await service.voucher("DISC-EU-1")) == [
            ("520100", "16.00", "0.00", "EUR", "20.00"),
            ("130100", "0.00", "16.00", "EUR", "-20.00"),
        ]
        assert lines(await service.voucher("EXCH-EU-1")) == [
            ("810100", "300.00", "0.00", "EUR", "0.00"),
            ("130100", "0.00", "300.00", "EUR", "0.00"),
        ]
        posted = await service.transaction("ARP-EU-1")
        assert (posted["exchange_rate"], posted["accounting_currency_amount"]) == ("0.80", "-784.00")
        discount = await service.transaction("DISC-EU-1")
        assert (discount["exchange_rate"], discount["accounting_currency_amount"]) == ("0.80", "-16.00")

        items = await service.open_transactions("4901", include_settled=True)
        assert (items["FTI-EU-1"]["accounting_open_amount"], items["FTI-EU-1"]["exchange_rate"]) == ("0.00", "1.10")
        assert items["ARP-EU-1"]["accounting_original_amount"] == "-784.00"

        # Reversed: the balances come back in both currencies and the loss is reversed.
        response = await service.http.post("/api/v1/settlements/ARP-EU-1/reverse")
        assert response.status_code == 200, response.text
        [pair] = response.json()["pairs"]
        assert (pair["realized_exchange_loss"], pair["debit_accounting_amount"]) == ("-300.00", "-1100.00")
        [undone] = await service.settlements(credit_voucher="ARP-EU-1", amount_settled="-980.00")
        assert (undone["realized_exchange_loss"], undone["credit_accounting_amount"]) == ("-300.00", "-784.00")
        assert lines(await service.voucher("REV-EXCH-EU-1")) == [
            ("130100", "300.00", "0.00", "EUR", "0.00"),
            ("810100", "0.00", "300.00", "EUR", "0.00"),
        ]
        items = await service.open_transactions("4901")
        assert items["FTI-EU-1"]["accounting_open_amount"] == "1100.00"
        assert items["ARP-EU-1"]["accounting_open_amount"] == "-784.00"


async def test_a_mark_on_another_currency_is_refused_and_a_payment_without_a_rate_dead_lettered(start_settlement):
    async with start_settlement() as service:
        await service.invoice("US-1", "100.00", customer="4902", tiers=[])
        await service.invoice(
            "EU-2",
            "100.00",
            customer="4902",
            tiers=[],
            currency="EUR",
            exchange_rate="1.10",
            accounting_currency_amount="110.00",
        )
        await service.pay(
            "ARP-EU-2",
            "150.00",
            "2015-07-01",
            customer="4902",
            marks=[("US-1", None, "Normal"), ("EU-2", None, "Normal")],
            currency="EUR",
            exchange_rate="1.20",
        )
        [settled] = await service.settlements(credit_voucher="ARP-EU-2")
        assert (settled["debit_voucher"], settled["realized_exchange_loss"]) == ("FTI-EU-2", "-10.00")
        assert (await service.voucher("EXCH-EU-2"))["lines"][0]["account"] == "130100", "a gain debits AR"
        [refused] = await service.dead_letters(ERP_CUSTOMER_PAYMENTS, containing="ARP-EU-2")
        assert "invoice 'US-1' is in USD, the credit in EUR" in refused.headers["x-dlq-reason"]
        assert await service.balance("FTI-US-1", "4902") == D("100.00")

        await service.pay("P-NO-RATE", "50.00", "2015-07-01", customer="4902", currency="EUR")
        [dead] = await service.dead_letters(ERP_CUSTOMER_PAYMENTS, containing="P-NO-RATE")
        reason = dead.headers["x-dlq-reason"]
        assert "states no exchange_rate, and there is no EUR rate for 2015-07-01" in reason
        assert "P-NO-RATE" not in await service.open_transactions("4902", include_settled=True)


async def test_a_person_settles_a_kwd_item_to_the_fils_and_too_many_decimals_are_a_422(start_settlement):
    """Marks made over HTTP are checked against the marked item's currency: three decimals for KWD, two for
    USD, none for JPY (issue 13)."""
    async with start_settlement() as service:
        assert (await service.http.put("/api/v1/parameters", json={"automatic_settlement": False})).status_code == 200
        kwd = {"currency": "KWD", "exchange_rate": "3.25"}
        await service.invoice("KW-1", "100.000", customer="4903", tiers=[], accounting_currency_amount="325.00", **kwd)
        await service.invoice("US-9", "100.00", customer="4903", tiers=[])
        await service.invoice(
            "JP-9",
            "100",
            customer="4903",
            tiers=[],
            currency="JPY",
            exchange_rate="0.0091",
            accounting_currency_amount="0.91",
        )
        await service.pay("ARP-KW-1", "60.000", "2015-07-01", customer="4903", **kwd)
        await service.transaction("ARP-KW-1")

        preview = await service.preview("2015-07-01", ("KW-1", "40.125", "Never"), customer="4903")
        assert preview.status_code == 200, preview.text
        assert preview.json()["marks"][0]["amount_to_settle"] == "40.125"
        for invoice_id, amount, why in [
            ("US-9", "1.005", "amount_to_settle 1.005 USD: the currency has 2 decimals"),
            ("JP-9", "1.5", "amount_to_settle 1.50 JPY: the currency has no decimals"),
        ]:
            refused = await service.preview("2015-07-01", (invoice_id, amount, "Normal"), customer="4903")
            assert refused.status_code == 422 and why in refused.json()["detail"], refused.text
            assert refused.headers["content-type"] == "application/problem+json"
        body = {"customer_account": "4903", "date": "2015-07-01"}
        refused = await service.http.post(
            "/api/v1/settlements",
            json=body | {"marks": [{"invoice_id": "US-9", "amount_to_settle": "1.005"}, {"invoice_id": "ARP-KW-1"}]},
        )
        assert refused.status_code == 422 and "US-9: amount_to_settle 1.005 USD" in refused.json()["detail"]

        settled = await service.http.post(
            "/api/v1/settlements",
            json=body | {"marks": [{"invoice_id": "KW-1", "amount_to_settle": "40.125"}, {"invoice_id": "ARP-KW-1"}]},
        )
        assert settled.status_code == 201, settled.text
        assert [p["amount_settled"] for p in settled.json()["pairs"]] == ["40.125"]
        assert await service.balance("FTI-KW-1", "4903") == D("59.875")
