"""Variants of the source scenario: Use cash discount, the discount date, and the partial-payment parameter."""

from __future__ import annotations

from decimal import Decimal

D = Decimal


def discount_of(settled: dict) -> tuple[str, str]:
    return settled["amount_settled"], settled["cash_discount_amount"]


async def test_use_cash_discount_and_the_discount_date_decide_what_is_taken(start_settlement):
    async with start_settlement() as service:
        for customer in ("4101", "4102", "4103", "4104"):
            await service.invoice(f"{customer}-1", customer=customer)

        # Always on the final payment after the date: 693.00 + the remaining 7.00; 7.00 of the payment stays open.
        await service.pay("ARP-4101-1", "297.00", "2015-07-01", customer="4101", marks=[("4101-1", "297.00", "Normal")])
        await service.settlements(credit_voucher="ARP-4101-1")
        await service.pay("ARP-4101-2", "700.00", "2015-07-11", customer="4101", marks=[("4101-1", "700.00", "Always")])
        [always] = await service.settlements(credit_voucher="ARP-4101-2")
        assert discount_of(always) == ("693.00", "7.00") and always["cash_discount_voucher"] == "DISC-4101-2"
        assert (await service.transaction("DISC-4101-2"))["amount"] == "-7.00"
        assert {v: t["open_amount"] for v, t in (await service.open_transactions("4101")).items()} == {
            "ARP-4101-2": "-7.00"
        }

        # Never on the first payment: no discount, 703.00 left.
        await service.pay("ARP-4102-1", "297.00", "2015-07-01", customer="4102", marks=[("4102-1", "297.00", "Never")])
        [never] = await service.settlements(credit_voucher="ARP-4102-1")
        assert discount_of(never) == ("297.00", "0.00") and never["cash_discount_voucher"] is None
        assert await service.balance("FTI-4102-1", "4102") == D("703.00")

        # Paid in full on the discount date itself: the full 10.00 is taken.
        await service.pay("ARP-4103-1", "990.00", "2015-07-09", customer="4103", marks=[("4103-1", None, "Normal")])
        [on_the_date] = await service.settlements(credit_voucher="ARP-4103-1")
        assert discount_of(on_the_date) == ("990.00", "10.00")
        assert await service.balance("FTI-4103-1", "4103") == D("0.00")

        # No marks: automatic settlement takes the Normal discount of the partial payment.
        await service.pay("ARP-4104-1", "297.00", "2015-07-01", customer="4104")
        [automatic] = await service.settlements(credit_voucher="ARP-4104-1")
        assert discount_of(automatic) == ("297.00", "3.00")


async def test_without_the_partial_payment_parameter_only_a_full_payment_takes_the_discount(start_settlement):
    async with start_settlement() as service:
        for bad in (
            {"calculate_cash_discounts_for_partial_payments": "yes"},
            {},
            {"calculate_cash_discounts_for_partial_payments": False, "other": 1},
        ):
            assert (await service.http.put("/api/v1/parameters", json=bad)).status_code == 422
        response = await service.http.put(
            "/api/v1/parameters", json={"calculate_cash_discounts_for_partial_payments": False}
        )
        assert response.status_code == 200 and response.json() == {
            "calculate_cash_discounts_for_partial_payments": False
        }
        assert (await service.http.get("/api/v1/parameters")).json() == {
            "calculate_cash_discounts_for_partial_payments": False
        }

        await service.invoice("4201-1", customer="4201")
        await service.invoice("4202-1", customer="4202")
        preview = (await service.preview("2015-07-01", ("4201-1", "297.00", "Normal"), customer="4201")).json()
        assert preview["marks"][0]["cash_discount_amount_to_take"] == "0.00"

        await service.pay("ARP-4201-1", "297.00", "2015-07-01", customer="4201", marks=[("4201-1", "297.00", "Normal")])
        [partial] = await service.settlements(credit_voucher="ARP-4201-1")
        assert discount_of(partial) == ("297.00", "0.00")
        assert await service.balance("FTI-4201-1", "4201") == D("703.00")

        await service.pay("ARP-4202-1", "990.00", "2015-07-01", customer="4202", marks=[("4202-1", None, "Normal")])
        [full] = await service.settlements(credit_voucher="ARP-4202-1")
        assert discount_of(full) == ("990.00", "10.00")
        assert await service.balance("FTI-4202-1", "4202") == D("0.00")


async def test_the_preview_says_what_is_wrong_with_a_mark(start_settlement):
    async with start_settlement() as service:
        await service.invoice("4301-1", customer="4301")
        unknown = await service.preview("2015-07-01", ("NOPE", None, "Normal"), customer="4301")
        assert unknown.status_code == 404 and "no invoice 'NOPE'" in unknown.json()["detail"]
        foreign = await service.preview("2015-07-01", ("4301-1", None, "Normal"), customer="4999")
        assert foreign.status_code == 422 and "another customer" in foreign.json()["detail"]
        odd = await service.preview("2015-07-01", ("4301-1", None, "Sometimes"), customer="4301")
        assert odd.status_code == 422 and "'Sometimes' is not one of Normal, Always, Never" in odd.json()["detail"]
        bad_date = await service.http.post(
            "/api/v1/settlement-preview",
            json={"customer_account": "4301", "payment_date": "1 July", "marks": [{"invoice_id": "4301-1"}]},
        )
        assert bad_date.status_code == 422
        whole = await service.preview("2015-07-01", ("4301-1", None, "Normal"), customer="4301")
        assert whole.json()["marks"][0] == {
            "invoice_id": "4301-1",
            "cash_discount_date": "2015-07-09",
            "cash_discount_amount": "10.00",
            "use_cash_discount": "Normal",
            "cash_discount_taken": "0.00",
            "cash_discount_amount_to_take": "10.00",
            "amount_to_settle": "990.00",
        }
