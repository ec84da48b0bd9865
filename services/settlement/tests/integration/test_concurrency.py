"""Two replicas on one PostgreSQL database never settle more than an invoice's balance."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import pytest

from kredit_settlement.app import create_app
from kredit_settlement.settings import SettlementSettings
from kredit_shared.contracts import AR_CUSTOMER_TRANSACTIONS, AR_SETTLEMENTS, ERP_CUSTOMER_PAYMENTS
from kredit_shared.testing import TopicProbe, eventually, fresh_postgres_database, isolated_kafka, publish, serve

D = Decimal
PAYMENTS = 8


def assigned_partitions(app) -> set:
    [subscriber] = app.state.runtime.broker.subscribers
    return subscriber.consumer.assignment() if subscriber.consumer else set()


async def test_payments_racing_for_one_invoice_on_two_replicas_settle_its_balance_once(kafka, postgres_admin_url):
    if postgres_admin_url is None:
        pytest.skip("no PostgreSQL server reachable and no Docker engine for a testcontainer")
    async with fresh_postgres_database(postgres_admin_url) as database_url:
        settings = SettlementSettings(http_port=0, database_url=database_url, **isolated_kafka(kafka))
        first, second = create_app(settings), create_app(settings)
        topics = [settings.topic(t) for t in (AR_CUSTOMER_TRANSACTIONS, AR_SETTLEMENTS)]
        async with TopicProbe(kafka.bootstrap_servers, topics) as probe, serve(first) as http, serve(second):
            # Both replicas hold partitions, so payments keyed apart are handled at the same time.
            await eventually(lambda: assigned_partitions(first) and assigned_partitions(second), timeout=20)
            invoice = {
                "message_id": str(uuid.uuid4()),
                "voucher": "FTI-RACE",
                "transaction_type": "Invoice",
                "customer_account": "4900",
                "transaction_date": "2015-06-25",
                "invoice_id": "RACE",
                "amount": "1000.00",
                "currency": "USD",
                "due_date": "2015-07-25",
            }
            await publish(kafka.bootstrap_servers, settings.topic(AR_CUSTOMER_TRANSACTIONS), invoice, key="4900")

            async def invoice_is_known() -> bool:
                response = await http.get("/api/v1/customers/4900/open-transactions")
                return "FTI-RACE" in {t["voucher"] for t in response.json()["transactions"]}

            await eventually(invoice_is_known)
            # Keys other than the customer spread one customer's payments over the partitions of both replicas,
            # which the contract's keying would prevent: only the customer lock stands between them.
            await asyncio.gather(
                *(
                    publish(
                        kafka.bootstrap_servers,
                        settings.topic(ERP_CUSTOMER_PAYMENTS),
                        {
                            "message_id": str(uuid.uuid4()),
                            "payment_id": f"ARP-RACE-{n}",
                            "customer_account": "4900",
                            "payment_date": "2015-07-01",
                            "amount": "250.00",
                            "currency": "USD",
                            "settle": [{"invoice_id": "RACE"}],
                        },
                        key=f"race-{n}",
                    )
                    for n in range(PAYMENTS)
                )
            )
            await probe.wait_for(lambda r: r.json().get("transaction_type") == "Payment", count=PAYMENTS, timeout=30)
            await probe.settle(1.0)

            settled = [r.json() for r in probe.records if r.topic == settings.topic(AR_SETTLEMENTS)]
            assert sum(D(s["amount_settled"]) for s in settled) == D("1000.00")
            assert {s["debit_voucher"] for s in settled} == {"FTI-RACE"}
            response = await http.get("/api/v1/customers/4900/open-transactions", params={"include_settled": True})
            balances = {t["voucher"]: D(t["open_amount"]) for t in response.json()["transactions"]}
            assert balances["FTI-RACE"] == D("0.00")
            assert sum(b for v, b in balances.items() if v.startswith("ARP-")) == D("-1000.00"), (
                "what was not settled stays open on the payments"
            )
