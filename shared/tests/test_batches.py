"""A batch subscription on a real broker and real databases: one transaction per fetch, yet a duplicate,
a poison record, a message that fails once and a transient failure each end as they would one by one.

A minimal service applies invoices as effect rows (numbered in the order applied) and answers each
with a voucher; every test publishes its records before the service starts, so one fetch holds them.
"""

from __future__ import annotations

import json
import uuid

from aiokafka import AIOKafkaProducer
from sqlalchemy.exc import OperationalError
from sqlmodel import Field, SQLModel, select

from kredit_shared.contracts import (
    ERP_CUSTOMER_INVOICES,
    GL_JOURNAL_LINES,
    CustomerInvoiceIssued,
    VoucherLine,
    VoucherPosted,
    dead_letter_topic,
)
from kredit_shared.service import ServiceRuntime, UnitOfWork, ensure_topics
from kredit_shared.settings import ServiceSettings
from kredit_shared.testing import TopicProbe, eventually, isolated_kafka, publish, serve


class AppliedInvoice(SQLModel, table=True):
    __tablename__ = "test_batch_applied_invoice"
    seq: int | None = Field(default=None, primary_key=True)  # the order of application
    invoice_id: str = Field(unique=True)  # applying one twice fails the test's transaction
    customer_account: str


class Flaky:
    """Which invoice ids fail on their first attempt, how, and the size of every batch the handler got."""

    def __init__(self, once: dict[str, Exception]) -> None:
        self.once = once
        self.calls: list[int] = []
        self.wanted: set[str] = set()  # REJECT- ids accepted after all (their cause fixed)

    async def apply(self, uow: UnitOfWork, invoices: list[CustomerInvoiceIssued]) -> None:
        self.calls.append(len(invoices))
        for invoice in invoices:
            if (error := self.once.pop(invoice.invoice_id, None)) is not None:
                raise error
            if invoice.invoice_id.startswith("REJECT") and invoice.invoice_id not in self.wanted:
                uow.reject(ERP_CUSTOMER_INVOICES, invoice, f"invoice {invoice.invoice_id} is not wanted")
                continue
            uow.session.add(AppliedInvoice(invoice_id=invoice.invoice_id, customer_account=invoice.customer_account))
            amount = invoice.lines[0].amount
            uow.emit(
                VoucherPosted(
                    voucher=f"V-{invoice.invoice_id}",
                    posting_date=invoice.invoice_date,
                    currency=invoice.currency,
                    lines=[VoucherLine(account="130100", debit=amount), VoucherLine(account="401100", credit=amount)],
                )
            )


def invoice(invoice_id: str, customer: str) -> bytes:
    body = {
        "message_id": str(uuid.uuid4()),
        "invoice_id": invoice_id,
        "customer_account": customer,
        "invoice_date": "2015-06-25",
        "currency": "USD",
        "lines": [{"amount": "10.00"}],
    }
    return json.dumps(body).encode()


async def start_after_publishing(
    kafka,
    database_url: str,
    flaky: Flaky,
    records: list[tuple[str, bytes]],
    headers: dict[int, list[tuple[str, bytes]]] | None = None,  # by position in `records`
    skip_own: bool = False,
):
    settings = ServiceSettings(
        service_name="batch", http_port=0, database_url=database_url, consumer_max_attempts=3, **isolated_kafka(kafka)
    )
    runtime = ServiceRuntime(settings, tables=[AppliedInvoice.__table__])
    runtime.subscribe_batch(ERP_CUSTOMER_INVOICES, CustomerInvoiceIssued.model_validate_json, flaky.apply, skip_own)
    await ensure_topics(settings)
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all", linger_ms=50)
    await producer.start()
    try:
        sent = [
            await producer.send(
                settings.topic(ERP_CUSTOMER_INVOICES), v, key=k.encode(), headers=(headers or {}).get(n)
            )
            for n, (k, v) in enumerate(records)
        ]
        for delivery in sent:
            await delivery
    finally:
        await producer.stop()
    return settings, runtime


async def applied(runtime: ServiceRuntime) -> list[tuple[str, str]]:
    async with runtime.sessions() as session:
        rows = (await session.exec(select(AppliedInvoice).order_by(AppliedInvoice.seq))).all()
        return [(row.customer_account, row.invoice_id) for row in rows]


async def test_a_batch_with_a_duplicate_a_poison_record_and_a_message_that_fails_once_applies_each_valid_one_once_in_order(
    kafka, database_url
):
    a1 = invoice("A-1", "A")
    records = [
        ("A", a1),
        ("B", invoice("B-1", "B")),
        ("A", a1),  # the same message again
        ("B", b"{not json"),
        ("A", invoice("A-2", "A")),  # fails on its first attempt
        ("B", invoice("B-2", "B")),
        ("B", invoice("REJECT-B-3", "B")),
        ("A", invoice("A-3", "A")),
        ("B", invoice("B-4", "B")),
    ]
    flaky = Flaky({"A-2": RuntimeError("a bug that fails this message once")})
    settings, runtime = await start_after_publishing(kafka, database_url, flaky, records)
    dlq = settings.topic(dead_letter_topic(ERP_CUSTOMER_INVOICES))
    out = settings.topic(GL_JOURNAL_LINES)
    async with serve(runtime.http_app("batch")), TopicProbe(kafka.bootstrap_servers, [dlq, out]) as probe:
        await probe.wait_for(lambda r: r.topic == out, count=6)
        await probe.wait_for(lambda r: r.topic == dlq, count=2)
        records_seen = await probe.settle(1.0)
        effects = await applied(runtime)

    assert sorted(effects) == sorted(
        [("A", "A-1"), ("A", "A-2"), ("A", "A-3"), ("B", "B-1"), ("B", "B-2"), ("B", "B-4")]
    )
    for customer, expected in (("A", ["A-1", "A-2", "A-3"]), ("B", ["B-1", "B-2", "B-4"])):
        assert [i for c, i in effects if c == customer] == expected, "each customer's messages in the order sent"
    outputs = sorted(r.key for r in records_seen if r.topic == out)
    assert outputs == sorted(f"V-{i}" for _, i in effects), "each output once"
    dead = sorted((r.value, r.headers["x-dlq-reason"]) for r in records_seen if r.topic == dlq)
    assert [value for value, _ in dead] == sorted([b"{not json", records[6][1]]), "only the bad ones, once each"
    assert any(reason == "invoice REJECT-B-3 is not wanted" for _, reason in dead)
    assert flaky.calls[0] == 7, "the first attempt took the whole fetch but the poison record and the duplicate"
    assert flaky.calls[1:] == [1] * 7, "after a failure that is not transient: one by one, in fetch order"


async def test_a_transient_failure_retries_the_whole_batch(kafka, database_url):
    records = [("A", invoice(f"A-{n}", "A")) for n in range(5)]
    flaky = Flaky({"A-3": OperationalError("INSERT ...", {}, Exception("database is locked"))})
    settings, runtime = await start_after_publishing(kafka, database_url, flaky, records)
    async with serve(runtime.http_app("batch")):
        await eventually(lambda: _count(applied(runtime), 5))
    assert await applied(runtime) == [("A", f"A-{n}") for n in range(5)]
    assert flaky.calls == [5, 5], "retried as one batch, not one by one"


async def _count(rows, expected: int) -> bool:
    return len(await rows) == expected


async def test_a_message_rejected_in_a_batch_is_processed_when_replayed_after_its_cause_is_fixed(kafka, database_url):
    rejected = invoice("REJECT-1", "A")
    records = [("A", invoice("A-1", "A")), ("A", rejected), ("A", invoice("A-2", "A"))]
    flaky = Flaky({})
    settings, runtime = await start_after_publishing(kafka, database_url, flaky, records)
    dlq = settings.topic(dead_letter_topic(ERP_CUSTOMER_INVOICES))
    async with serve(runtime.http_app("batch")), TopicProbe(kafka.bootstrap_servers, [dlq]) as probe:
        [letter] = await probe.wait_for(lambda r: r.topic == dlq)
        assert letter.value == rejected and letter.headers["x-dlq-reason"] == "invoice REJECT-1 is not wanted"
        await eventually(lambda: _count(applied(runtime), 2))
        assert flaky.calls == [3], "one batch: the rejected message did not hold back the others"

        flaky.wanted.add("REJECT-1")  # the cause is fixed; the same record is sent again, as a replay does
        await publish(kafka.bootstrap_servers, settings.topic(ERP_CUSTOMER_INVOICES), rejected, key="A")
        await eventually(lambda: _count(applied(runtime), 3))
        assert await probe.settle(0.5) == [letter], "no second dead letter"
    assert await applied(runtime) == [("A", "A-1"), ("A", "A-2"), ("A", "REJECT-1")]


async def test_a_subscription_skipping_its_own_records_passes_over_what_the_service_published_and_no_more(
    kafka, database_url
):
    records = [("A", invoice(f"A-{n}", "A")) for n in range(4)]
    headers = {
        1: [("kredit-producer", b"batch")],  # published by this service (its relay's header)
        2: [("kredit-producer", b"invoicing")],  # by another service
        3: [("kredit-producer", b"batch"), ("kredit-producer", b"invoicing")],  # the last one counts
    }
    flaky = Flaky({})
    settings, runtime = await start_after_publishing(kafka, database_url, flaky, records, headers, skip_own=True)
    out = settings.topic(GL_JOURNAL_LINES)
    async with serve(runtime.http_app("batch")), TopicProbe(kafka.bootstrap_servers, [out]) as probe:
        published = await probe.wait_for(lambda r: r.topic == out, count=3)
        await eventually(lambda: _count(applied(runtime), 3))
    assert await applied(runtime) == [("A", "A-0"), ("A", "A-2"), ("A", "A-3")]
    assert flaky.calls == [3]
    assert {r.headers["kredit-producer"] for r in published} == {"batch"}, "the relay names the service"
