"""Aged balances a page of customers at a time, one customer, any as-of date; and the read model fed a
whole fetch at once through the real broker."""

from __future__ import annotations

import json
import uuid

from aiokafka import AIOKafkaProducer

from kredit_collections.app import create_app
from kredit_collections.settings import CollectionsSettings
from kredit_shared.contracts import AR_CUSTOMER_TRANSACTIONS, AR_SETTLEMENTS, dead_letter_topic
from kredit_shared.service import ensure_topics
from kredit_shared.testing import TopicProbe, eventually, isolated_kafka, serve

AS_OF = "2015-12-31"


async def open_invoice(svc, account: str, voucher: str, amount: str, due: str = "2015-07-25") -> None:
    await svc.post_transaction(voucher, "Invoice", amount, on="2015-06-25", account=account, due=due, name=account)


async def test_pages_of_customers_follow_the_cursor_and_together_are_the_whole_list(start_collections, database_url):
    async with start_collections(database_url) as svc:
        for n in range(1, 8):
            await open_invoice(svc, f"C{n}", f"FTI-C{n}", f"{n}00.00")
        await svc.post_transaction("ARP-C3", "Payment", "-300.00", on="2015-07-01", account="C3")
        await svc.settle("S-C3", "FTI-C3", "ARP-C3", "300.00", on="2015-07-01", account="C3")  # nothing open
        await svc.until_balances("C3", {"FTI-C3": "0.00", "ARP-C3": "0.00"})
        await svc.until_balances("C7", {"FTI-C7": "700.00"})

        whole = await svc.get("/aged-balances", as_of=AS_OF, limit=1000)
        assert [c["customer_account"] for c in whole["customers"]] == ["C1", "C2", "C4", "C5", "C6", "C7"]
        assert whole["next_cursor"] is None

        pages, cursor = [], None
        while True:
            page = await svc.get("/aged-balances", as_of=AS_OF, limit=2, **({"cursor": cursor} if cursor else {}))
            pages.append([c["customer_account"] for c in page["customers"]])
            assert page["buckets"] == whole["buckets"]
            if (cursor := page["next_cursor"]) is None:
                break
        assert pages == [["C1", "C2"], ["C4", "C5"], ["C6", "C7"]], "full pages: a settled customer is skipped"
        paged = [c for p in pages for c in p]
        assert paged == [c["customer_account"] for c in whole["customers"]]


async def test_one_customer_as_of_any_date(start_collections, database_url):
    async with start_collections(database_url) as svc:
        await open_invoice(svc, "4027", "FTI-10020", "1000.00", due="2015-07-25")
        await open_invoice(svc, "OTHER", "FTI-9", "5.00")
        await svc.post_transaction("ARP-1", "Payment", "-600.00", on="2015-08-10", account="4027")
        await svc.settle("S-1", "FTI-10020", "ARP-1", "600.00", on="2015-08-10", account="4027")
        await svc.until_balances("4027", {"FTI-10020": "400.00", "ARP-1": "0.00"})

        async def aged(as_of: str) -> dict:
            body = await svc.get("/aged-balances", as_of=as_of, customer_account="4027")
            assert body["next_cursor"] is None
            [row] = body["customers"]
            return {"balance": row["balance"]} | {k: v for k, v in row["buckets"].items() if v != "0.00"}

        assert await aged("2015-07-20") == {"balance": "1000.00", "Current": "1000.00"}
        assert await aged("2015-08-05") == {"balance": "1000.00", "1-30": "1000.00"}, "the payment came later"
        assert await aged("2015-08-31") == {"balance": "400.00", "31-60": "400.00"}
        assert (await svc.get("/aged-balances", as_of=AS_OF, customer_account="NOBODY"))["customers"] == []


async def test_as_of_the_first_date_there_is_nothing_is_open_yet(start_collections):
    """schemathesis found the CSV answering 500 for 0001-01-01: the bucket cutoffs fell before the first date."""
    async with start_collections() as svc:
        await open_invoice(svc, "4027", "FTI-10020", "1000.00")
        await svc.until_balances("4027", {"FTI-10020": "1000.00"})
        assert (await svc.get("/aged-balances", as_of="0001-01-01"))["customers"] == []
        response = await svc.client.get("/api/v1/aged-balances.csv", params={"as_of": "0001-01-01"})
        assert response.status_code == 200, response.text
        assert response.text.splitlines()[1:] == []  # the header row only: no customer, no total


async def test_paging_parameters_out_of_range_are_refused(start_collections):
    async with start_collections() as svc:
        for params in ({"limit": 0}, {"limit": 1001}, {"cursor": "a b"}, {"customer_account": ""}):
            response = await svc.client.get("/api/v1/aged-balances", params=params)
            assert response.status_code == 422, (params, response.text)


async def test_a_fetch_of_transactions_and_settlements_applies_each_once_and_the_first_version_wins(
    kafka, database_url
):
    """Records waiting before the service starts, so a fetch holds them together: a voucher posted twice
    with different amounts (the first counts), an exact duplicate, a settlement and records that are not JSON."""
    settings = CollectionsSettings(database_url=database_url, **isolated_kafka(kafka))

    def transaction(voucher: str, amount: str, account: str, type_: str = "Invoice") -> bytes:
        body = {
            "message_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{voucher}/{amount}")),  # same content, same id
            "voucher": voucher,
            "transaction_type": type_,
            "customer_account": account,
            "transaction_date": "2015-06-25",
            "amount": amount,
            "currency": "USD",
            "due_date": "2015-07-25",
        }
        return json.dumps(body).encode()

    settled = {
        "message_id": "00000000-0000-4000-8000-000000000001",
        "settlement_id": "S-1",
        "customer_account": "A",
        "settlement_date": "2015-07-01",
        "currency": "USD",
        "debit_voucher": "FTI-A1",
        "credit_voucher": "ARP-A1",
        "amount_settled": "100.00",
    }
    records = [
        (AR_CUSTOMER_TRANSACTIONS, "A", transaction("FTI-A1", "1000.00", "A")),
        (AR_CUSTOMER_TRANSACTIONS, "B", transaction("FTI-B1", "50.00", "B")),
        (AR_CUSTOMER_TRANSACTIONS, "A", transaction("FTI-A1", "999.00", "A")),  # a re-post: the first wins
        (AR_CUSTOMER_TRANSACTIONS, "B", b"{not json"),
        (AR_CUSTOMER_TRANSACTIONS, "B", transaction("FTI-B1", "50.00", "B")),  # the same message again
        (AR_CUSTOMER_TRANSACTIONS, "A", transaction("ARP-A1", "-100.00", "A", "Payment")),
        (AR_SETTLEMENTS, "A", json.dumps(settled).encode()),
        (AR_SETTLEMENTS, "A", json.dumps(settled).encode()),
        (AR_SETTLEMENTS, "A", b"[]"),
    ]
    await ensure_topics(settings)
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all", linger_ms=50)
    await producer.start()
    try:
        for delivery in [await producer.send(settings.topic(t), v, key=k.encode()) for t, k, v in records]:
            await delivery
    finally:
        await producer.stop()
    dlqs = [settings.topic(dead_letter_topic(t)) for t in (AR_CUSTOMER_TRANSACTIONS, AR_SETTLEMENTS)]
    async with serve(create_app(settings)) as client, TopicProbe(kafka.bootstrap_servers, dlqs) as probe:

        async def balances(account: str) -> dict[str, str]:
            response = await client.get(f"/api/v1/customers/{account}/transactions")
            assert response.status_code == 200
            return {t["voucher"]: t["balance"] for t in response.json()["transactions"]}

        async def settled_as_expected() -> bool:
            return await balances("A") == {"FTI-A1": "900.00", "ARP-A1": "0.00"}

        await eventually(settled_as_expected)
        assert await balances("B") == {"FTI-B1": "50.00"}
        await probe.wait_for(lambda r: True, count=2)
        dead = await probe.settle(0.5)
        assert sorted(r.value for r in dead) == [b"[]", b"{not json"], "the records that are not messages, once"
