"""The shared plumbing on a real broker and real databases: outbox, inbox, dead letters.

A minimal service consumes invoices and answers each with a voucher, so these tests exercise
only the plumbing; each service's own tests cover its domain.
"""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlmodel import Field, SQLModel

from kredit_shared.contracts import (
    ERP_CUSTOMER_INVOICES,
    GL_JOURNAL_LINES,
    CustomerInvoiceIssued,
    VoucherLine,
    VoucherPosted,
    dead_letter_topic,
)
from kredit_shared.service import Rejected, ServiceRuntime, Transaction, ensure_topics
from kredit_shared.settings import ServiceSettings
from kredit_shared.testing import TopicProbe, eventually, isolated_kafka, publish, serve


class EchoEffect(SQLModel, table=True):
    __tablename__ = "test_echo_effect"
    invoice_id: str = Field(primary_key=True)
    times_applied: int = 0


async def echo_invoice(tx: Transaction, invoice: CustomerInvoiceIssued) -> None:
    if invoice.invoice_id.startswith("REJECT"):
        raise Rejected(f"invoice {invoice.invoice_id} is not wanted")
    effect = await tx.session.get(EchoEffect, invoice.invoice_id) or EchoEffect(invoice_id=invoice.invoice_id)
    effect.times_applied += 1
    tx.session.add(effect)
    total = sum((line.amount for line in invoice.lines), Decimal(0))
    tx.emit(
        VoucherPosted(
            voucher=f"ECHO-{invoice.invoice_id}", posting_date=invoice.invoice_date, currency=invoice.currency,
            lines=[VoucherLine(account="130100", debit=total), VoucherLine(account="401100", credit=total)],
        )
    )


def echo_settings(kafka, database_url: str, **overrides) -> ServiceSettings:
    return ServiceSettings(
        service_name="echo", http_port=0, database_url=database_url, **isolated_kafka(kafka), **overrides
    )


def echo_app(settings: ServiceSettings):
    runtime = ServiceRuntime(settings, tables=[EchoEffect.__table__])
    runtime.subscribe(ERP_CUSTOMER_INVOICES, CustomerInvoiceIssued.model_validate_json, echo_invoice)
    return runtime, runtime.http_app("echo")


def invoice(invoice_id: str, **changes) -> dict:
    body = {
        "message_id": str(uuid.uuid4()), "invoice_id": invoice_id, "customer_account": "4027",
        "invoice_date": "2015-06-25", "currency": "USD", "lines": [{"amount": "1000.00"}],
    }
    return body | changes


async def times_applied(runtime: ServiceRuntime, invoice_id: str) -> int:
    async with runtime.sessions() as session:
        effect = await session.get(EchoEffect, invoice_id)
        return effect.times_applied if effect else 0


async def test_a_consumed_message_commits_its_effect_and_relays_its_output(kafka, database_url):
    settings = echo_settings(kafka, database_url)
    runtime, app = echo_app(settings)
    async with serve(app), TopicProbe(kafka.bootstrap_servers, [settings.topic(GL_JOURNAL_LINES)]) as out:
        await publish(kafka.bootstrap_servers, settings.topic(ERP_CUSTOMER_INVOICES), invoice("10020"))
        [voucher] = await out.wait_for(lambda r: True)
        assert voucher.key == "ECHO-10020"
        assert voucher.json()["lines"][0] == {"account": "130100", "debit": "1000.00", "credit": "0.00", "text": "",
                                              "customer_account": None}
        assert await times_applied(runtime, "10020") == 1


async def test_the_same_message_delivered_twice_has_one_effect(kafka, database_url):
    settings = echo_settings(kafka, database_url)
    runtime, app = echo_app(settings)
    message = invoice("10021")
    async with serve(app), TopicProbe(kafka.bootstrap_servers, [settings.topic(GL_JOURNAL_LINES)]) as out:
        for _ in range(2):
            await publish(kafka.bootstrap_servers, settings.topic(ERP_CUSTOMER_INVOICES), message)
        await publish(kafka.bootstrap_servers, settings.topic(ERP_CUSTOMER_INVOICES), invoice("10022"))
        await out.wait_for(lambda r: r.key == "ECHO-10022")  # the later message went through
        assert await times_applied(runtime, "10021") == 1
        assert len([r for r in await out.settle(0.3) if r.key == "ECHO-10021"]) == 1


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "invalid message: "),
        (json.dumps({"message_id": str(uuid.uuid4()), "invoice_id": "X1"}).encode(), "customer_account: Field required"),
        (json.dumps(invoice("X2", lines=[{"amount": 12.5}])).encode(), "lines.0.amount: amount must be a decimal string"),
        (json.dumps(invoice("X3", currency="ABC")).encode(), "currency: currency 'ABC' is not an ISO 4217 code"),
        (json.dumps(invoice("REJECT-1")).encode(), "invoice REJECT-1 is not wanted"),
    ],
    ids=["not-json", "missing-fields", "float-amount", "unknown-currency", "rejected-by-handler"],
)
async def test_a_bad_message_is_dead_lettered_with_its_reason_and_the_next_one_is_processed(kafka, raw, reason, tmp_path):
    settings = echo_settings(kafka, f"sqlite+aiosqlite:///{tmp_path / 'echo.db'}")
    runtime, app = echo_app(settings)
    dlq = settings.topic(dead_letter_topic(ERP_CUSTOMER_INVOICES))
    async with serve(app), TopicProbe(kafka.bootstrap_servers, [dlq, settings.topic(GL_JOURNAL_LINES)]) as probe:
        await publish(kafka.bootstrap_servers, settings.topic(ERP_CUSTOMER_INVOICES), raw)
        await publish(kafka.bootstrap_servers, settings.topic(ERP_CUSTOMER_INVOICES), invoice("GOOD-1"))
        [dead] = await probe.wait_for(lambda r: r.topic == dlq)
        assert dead.value == raw, "the original bytes are kept"
        assert reason in dead.headers["x-dlq-reason"]
        assert dead.headers["x-dlq-source-topic"] == ERP_CUSTOMER_INVOICES
        await probe.wait_for(lambda r: r.key == "ECHO-GOOD-1")
        assert await times_applied(runtime, "GOOD-1") == 1


async def test_a_crash_before_the_relay_publishes_loses_nothing(kafka, database_url):
    """Commit with the relay off (as if the process died before publishing), then restart it."""
    settings = echo_settings(kafka, database_url, outbox_relay_enabled=False)
    runtime, app = echo_app(settings)
    async with TopicProbe(kafka.bootstrap_servers, [settings.topic(GL_JOURNAL_LINES)]) as out:
        async with serve(app):
            await publish(kafka.bootstrap_servers, settings.topic(ERP_CUSTOMER_INVOICES), invoice("10030"))
            await eventually(lambda: times_applied(runtime, "10030"))
        assert [r for r in await out.settle(0.3)] == []
        restarted, app = echo_app(settings.model_copy(update={"outbox_relay_enabled": True}))
        async with serve(app):
            await out.wait_for(lambda r: r.key == "ECHO-10030")
            await out.settle(0.5)
        assert len(out.records) == 1
        assert await times_applied(restarted, "10030") == 1


async def test_outbox_rows_are_marked_sent_once_published(kafka, database_url):
    from kredit_shared.outbox import OutboxMessage

    settings = echo_settings(kafka, database_url)
    runtime, app = echo_app(settings)
    async with serve(app), TopicProbe(kafka.bootstrap_servers, [settings.topic(GL_JOURNAL_LINES)]) as out:
        for n in range(5):
            await publish(kafka.bootstrap_servers, settings.topic(ERP_CUSTOMER_INVOICES), invoice(f"B{n}"))
        await out.wait_for(lambda r: True, count=5)

        async def pending() -> int:
            async with runtime.sessions() as session:
                count = select(func.count()).select_from(OutboxMessage).where(OutboxMessage.published_at.is_(None))
                return (await session.exec(count)).scalar_one()

        await eventually(lambda: _is_zero(pending()))


async def _is_zero(value) -> bool:
    return (await value) == 0


async def echo_invoices(tx: Transaction, invoices: list[CustomerInvoiceIssued]) -> None:
    for invoice in invoices:
        if invoice.invoice_id.startswith("BOOM"):
            raise RuntimeError("a bug that only this message triggers")
        if invoice.invoice_id.startswith("REJECT"):
            tx.dead_letter(ERP_CUSTOMER_INVOICES, invoice, f"invoice {invoice.invoice_id} is not wanted")
            continue
        await echo_invoice(tx, invoice)


async def test_a_batch_handler_commits_a_fetch_at_once_and_isolates_the_messages_at_fault(kafka, database_url):
    settings = echo_settings(kafka, database_url, consumer_max_attempts=2)
    runtime = ServiceRuntime(settings, tables=[EchoEffect.__table__])
    runtime.subscribe_batch(ERP_CUSTOMER_INVOICES, CustomerInvoiceIssued.model_validate_json, echo_invoices)
    twice = invoice("DUP-1")
    messages = [invoice(f"B-{n}") for n in range(20)] + [twice, twice, invoice("REJECT-2")]
    await ensure_topics(settings)
    for message in messages:  # all waiting before the service starts: its first fetch takes them together
        await publish(kafka.bootstrap_servers, settings.topic(ERP_CUSTOMER_INVOICES), message)
    dlq = settings.topic(dead_letter_topic(ERP_CUSTOMER_INVOICES))
    async with serve(runtime.http_app("echo")), TopicProbe(kafka.bootstrap_servers, [dlq, settings.topic(GL_JOURNAL_LINES)]) as probe:
        await probe.wait_for(lambda r: r.topic != dlq, count=21)
        [rejected] = await probe.wait_for(lambda r: r.topic == dlq)
        assert rejected.headers["x-dlq-reason"] == "invoice REJECT-2 is not wanted"
        assert [await times_applied(runtime, f"B-{n}") for n in range(20)] == [1] * 20
        assert await times_applied(runtime, "DUP-1") == 1

        await publish(kafka.bootstrap_servers, settings.topic(ERP_CUSTOMER_INVOICES), invoice("BOOM-1"))
        await publish(kafka.bootstrap_servers, settings.topic(ERP_CUSTOMER_INVOICES), invoice("AFTER-BOOM"))
        [crashed] = await probe.wait_for(lambda r: r.topic == dlq and "BOOM" in r.value.decode())
        assert crashed.headers["x-dlq-reason"].startswith("unexpected error: RuntimeError('a bug that only this")
        await probe.wait_for(lambda r: r.key == "ECHO-AFTER-BOOM")
        assert len([r for r in await probe.settle(0.3) if r.topic != dlq]) == 22
