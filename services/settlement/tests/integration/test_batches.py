"""Settlement takes a whole fetch in one transaction: a duplicate, a poison record, a message the domain rejects
and a payment whose marks are rejected each end as they would one by one, and each customer's messages apply in
the order they came. The records are published while the service is down, so one fetch holds them all."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

from prometheus_client import REGISTRY

from kredit_settlement.settings import SettlementSettings
from kredit_shared.contracts import AR_CUSTOMER_TRANSACTIONS, AR_SETTLEMENTS, ERP_CUSTOMER_PAYMENTS, GL_JOURNAL_LINES
from kredit_shared.service import ensure_topics
from kredit_shared.testing import eventually, isolated_kafka, publish_many

D = Decimal


def invoice(invoice_id: str, customer: str, amount: str, on: str) -> dict:
    return {
        "message_id": str(uuid.uuid4()),
        "voucher": f"FTI-{invoice_id}",
        "transaction_type": "Invoice",
        "customer_account": customer,
        "transaction_date": on,
        "invoice_id": invoice_id,
        "amount": amount,
        "currency": "USD",
        "due_date": on,
        "cash_discounts": [],
    }


def payment(payment_id: str, customer: str, amount: str, marks: list[str] | None = None, **changes: str) -> dict:
    body = {
        "message_id": str(uuid.uuid4()),
        "payment_id": payment_id,
        "customer_account": customer,
        "payment_date": "2015-08-01",
        "amount": amount,
        "currency": "USD",
    } | changes
    if marks is not None:
        body["settle"] = [{"invoice_id": i, "use_cash_discount": "Never"} for i in marks]
    return body


def batches_handled(topic: str) -> float:
    return REGISTRY.get_sample_value("kredit_handler_seconds_count", {"service": "settlement", "topic": topic}) or 0


async def test_a_fetch_of_payments_settles_each_once_in_customer_order_and_dead_letters_only_the_bad(
    kafka, start_settlement
):
    isolated = isolated_kafka(kafka)
    settings = SettlementSettings(http_port=0, database_url="sqlite+aiosqlite://", **isolated)
    topic = settings.topic
    await ensure_topics(settings)
    first = invoice("B-1", "4801", "100.00", "2015-07-01")
    await publish_many(
        kafka.bootstrap_servers,
        topic(AR_CUSTOMER_TRANSACTIONS),
        [
            first,
            invoice("B-2", "4801", "100.00", "2015-07-02"),
            invoice("B-3", "4802", "50.00", "2015-07-01"),
            first,  # the same message again: a duplicate
            invoice("B-BAD", "4801", "-5.00", "2015-07-01"),  # an invoice with a credit's sign: rejected
        ],
    )
    async with start_settlement(**isolated) as service:
        await eventually(lambda: service.balance("FTI-B-3", "4802"))
        [bad] = await service.dead_letters(AR_CUSTOMER_TRANSACTIONS)
        assert "wrong sign" in bad.headers["x-dlq-reason"]
        assert await service.balance("FTI-B-1", "4801") == D("100.00")
        assert await service.balance("FTI-B-2", "4801") == D("100.00")

    first = payment("P-B1", "4801", "60.00")  # automatic: the oldest invoice first
    records = [
        first,
        first,  # a duplicate
        b'{"message_id": "not a payment"',  # poison: not even JSON
        payment("P-EUR", "4801", "10.00", currency="EUR"),  # rejected by the domain
        payment("P-B1", "4801", "99.00"),  # the payment id again with other content: rejected
        payment("P-B2", "4801", "80.00", marks=["B-3", "B-2"]),  # B-3 is another customer's: that mark rejected
        payment("P-B3", "4801", "60.00"),  # after P-B1: takes what is left of B-1, then B-2
        payment("P-C1", "4802", "50.00", marks=["B-3"]),
    ]
    before = batches_handled(ERP_CUSTOMER_PAYMENTS)
    await publish_many(kafka.bootstrap_servers, topic(ERP_CUSTOMER_PAYMENTS), records, key="4801")
    async with start_settlement(**isolated) as service:
        dead = await service.dead_letters(ERP_CUSTOMER_PAYMENTS, count=4)
        reasons = sorted(r.headers["x-dlq-reason"] for r in dead)
        expected = [
            "invalid message",
            "payment P-B1 was already received",
            "payment P-EUR is in EUR",
            "rejected mark(s) of payment P-B2: invoice 'B-3': invoice 'B-3' belongs to another customer",
        ]
        assert [e for e, r in zip(expected, reasons) if r.startswith(e)] == expected, reasons
        await service.settlements(count=5)
        posted = await service.published(AR_CUSTOMER_TRANSACTIONS, 1.0)
        payments = [t["voucher"] for t in posted if t["transaction_type"] == "Payment"]
        assert sorted(payments) == ["P-B1", "P-B2", "P-B3", "P-C1"], "each payment posted once"
        vouchers = [v["voucher"] for v in await service.published(GL_JOURNAL_LINES, 0)]
        assert sorted(v for v in vouchers if v.startswith("P-")) == ["P-B1", "P-B2", "P-B3", "P-C1"]

        settled = [
            (s["credit_voucher"], s["debit_voucher"], s["amount_settled"])
            for s in await service.published(AR_SETTLEMENTS, 0)
        ]
        # In fetch order per customer: P-B1 takes 60 of B-1, P-B2 (marked) 80 of B-2, P-B3 the rest of both.
        assert settled == [
            ("P-B1", "FTI-B-1", "60.00"),
            ("P-B2", "FTI-B-2", "80.00"),
            ("P-B3", "FTI-B-1", "40.00"),
            ("P-B3", "FTI-B-2", "20.00"),
            ("P-C1", "FTI-B-3", "50.00"),
        ]
        for voucher in ("FTI-B-1", "FTI-B-2"):
            assert await service.balance(voucher, "4801") == D("0.00")
        assert await service.balance("FTI-B-3", "4802") == D("0.00")
        assert (await service.open_transactions("4801")) == {}, "every payment of 4801 used up"
        assert batches_handled(ERP_CUSTOMER_PAYMENTS) - before == 1, "one transaction for the fetch, no fallback"
        [letter] = [r for r in dead if "P-B2" in r.headers["x-dlq-reason"]]
        assert json.loads(letter.value)["payment_id"] == "P-B2"
