"""The shared plumbing on a real broker and real databases: outbox, inbox, dead letters, poison isolation.

A minimal service consumes invoices and answers each with a voucher, so these tests exercise
only the plumbing; each service's own tests cover its domain.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DataError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlmodel import Field, SQLModel

from kredit_shared import outbox, service
from kredit_shared.contracts import (
    ERP_CUSTOMER_INVOICES,
    GL_JOURNAL_LINES,
    CustomerInvoiceIssued,
    VoucherLine,
    VoucherPosted,
    dead_letter_topic,
)
from kredit_shared.outbox import OutboxMessage
from kredit_shared.service import Rejected, ServiceRuntime, UnitOfWork, ensure_topics, is_transient
from kredit_shared.settings import ServiceSettings
from kredit_shared.testing import TopicProbe, eventually, isolated_kafka, publish, publish_many, serve


class EchoEffect(SQLModel, table=True):
    __tablename__ = "test_echo_effect"
    invoice_id: str = Field(primary_key=True)
    times_applied: int = 0


async def echo_invoice(uow: UnitOfWork, invoice: CustomerInvoiceIssued) -> None:
    if invoice.invoice_id.startswith("REJECT"):
        raise Rejected(f"invoice {invoice.invoice_id} is not wanted")
    effect = await uow.session.get(EchoEffect, invoice.invoice_id) or EchoEffect(invoice_id=invoice.invoice_id)
    effect.times_applied += 1
    uow.session.add(effect)
    total = sum((line.amount for line in invoice.lines), Decimal(0))
    uow.emit(
        VoucherPosted(
            voucher=f"ECHO-{invoice.invoice_id}",
            posting_date=invoice.invoice_date,
            currency=invoice.currency,
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
        "message_id": str(uuid.uuid4()),
        "invoice_id": invoice_id,
        "customer_account": "4027",
        "invoice_date": "2015-06-25",
        "currency": "USD",
        "lines": [{"amount": "1000.00"}],
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
        assert voucher.json()["lines"][0] == {
            "account": "130100",
            "debit": "1000.00",
            "credit": "0.00",
            "text": "",
            "customer_account": None,
        }
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
        (
            json.dumps({"message_id": str(uuid.uuid4()), "invoice_id": "X1"}).encode(),
            "customer_account: Field required",
        ),
        (
            json.dumps(invoice("X2", lines=[{"amount": 12.5}])).encode(),
            "lines.0.amount: amount must be a decimal string",
        ),
        (json.dumps(invoice("X3", currency="ABC")).encode(), "currency: currency 'ABC' is not an ISO 4217 code"),
        (json.dumps(invoice("REJECT-1")).encode(), "invoice REJECT-1 is not wanted"),
        (
            json.dumps({k: v for k, v in invoice("X4").items() if k != "message_id"}).encode(),
            "message_id is required (the producer's UUID, used to skip redeliveries)",
        ),
        (json.dumps(invoice("X5", message_id="X5-1")).encode(), "message_id: message_id 'X5-1' is not a UUID string"),
    ],
    ids=[
        "not-json",
        "missing-fields",
        "float-amount",
        "unknown-currency",
        "rejected-by-handler",
        "no-message-id",
        "message-id-not-a-uuid",
    ],
)
async def test_a_bad_message_is_dead_lettered_with_its_reason_and_the_next_one_is_processed(
    kafka, raw, reason, tmp_path
):
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


async def echo_invoices(uow: UnitOfWork, invoices: list[CustomerInvoiceIssued]) -> None:
    for invoice in invoices:
        if invoice.invoice_id.startswith("BOOM"):
            raise RuntimeError("a bug that only this message triggers")
        if invoice.invoice_id.startswith("REJECT"):
            uow.dead_letter(ERP_CUSTOMER_INVOICES, invoice, f"invoice {invoice.invoice_id} is not wanted")
            continue
        await echo_invoice(uow, invoice)


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
    async with (
        serve(runtime.http_app("echo")),
        TopicProbe(kafka.bootstrap_servers, [dlq, settings.topic(GL_JOURNAL_LINES)]) as probe,
    ):
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


# --- poison isolation: no input, however hostile, loses a valid message or wedges a consumer ---------
# These publish their records before the service starts, so its first fetch holds them all: a poison
# record must be dead-lettered alone while every valid record of the same fetch takes effect.


def nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


POISON = {
    "amount-1e26": json.dumps(invoice("P", lines=[{"amount": "1e26"}])).encode(),
    "amount-1e309": json.dumps(invoice("P", lines=[{"amount": "1e309"}])).encode(),
    "amount-28-digits": json.dumps(invoice("P", lines=[{"amount": "1" * 28}])).encode(),
    "amount-json-int-1e26": json.dumps(invoice("P", lines=[{"amount": 10**26}])).encode(),
    "json-nested-5000-deep": nested(5000),
    "not-utf8": b"\xff\xfe{\x00",
    "empty-body": b"",
}


async def start_after_publishing(kafka, settings, records: list) -> None:
    await ensure_topics(settings)
    await publish_many(kafka.bootstrap_servers, settings.topic(ERP_CUSTOMER_INVOICES), records)


@pytest.mark.parametrize("kind", list(POISON))
async def test_a_poison_record_is_dead_lettered_alone_and_the_rest_of_its_fetch_takes_effect(kafka, kind, tmp_path):
    settings = echo_settings(kafka, f"sqlite+aiosqlite:///{tmp_path / 'echo.db'}")
    runtime, app = echo_app(settings)
    poison = POISON[kind]
    await start_after_publishing(kafka, settings, [invoice("A"), poison, invoice("B"), invoice("C")])
    dlq = settings.topic(dead_letter_topic(ERP_CUSTOMER_INVOICES))
    async with serve(app), TopicProbe(kafka.bootstrap_servers, [dlq]) as probe:
        [dead] = await probe.wait_for(lambda r: True)
        assert dead.value == poison, "the original bytes are kept"
        assert dead.headers["x-dlq-reason"].startswith("invalid message: ")
        assert dead.headers["x-dlq-source-offset"] == "1"
        for valid in "ABC":
            await eventually(lambda valid=valid: times_applied(runtime, valid))


@pytest.mark.parametrize(
    ("kind", "headers"),
    [
        ("binary-header", [("traceparent", b"\xff\xfe\x00binary")]),
        ("null-header", [("baggage", None)]),
        ("json-content-type", [("content-type", b"application/json")]),
    ],
)
async def test_a_valid_message_takes_effect_whatever_its_headers_say(kafka, kind, headers, tmp_path):
    settings = echo_settings(kafka, f"sqlite+aiosqlite:///{tmp_path / 'echo.db'}")
    runtime, app = echo_app(settings)
    await start_after_publishing(kafka, settings, [invoice("A"), (invoice("H"), headers), invoice("B")])
    async with serve(app):
        for valid in "AHB":
            await eventually(lambda valid=valid: times_applied(runtime, valid))


async def test_a_non_json_body_labelled_json_is_dead_lettered_with_its_headers_kept(kafka, tmp_path):
    settings = echo_settings(kafka, f"sqlite+aiosqlite:///{tmp_path / 'echo.db'}")
    runtime, app = echo_app(settings)
    labelled = (b"<xml/>", [("content-type", b"application/json"), ("trace", b"\xff")])
    await start_after_publishing(kafka, settings, [invoice("A"), labelled, invoice("B")])
    dlq = settings.topic(dead_letter_topic(ERP_CUSTOMER_INVOICES))
    async with serve(app), TopicProbe(kafka.bootstrap_servers, [dlq]) as probe:
        [dead] = await probe.wait_for(lambda r: True)
        assert dead.value == b"<xml/>"
        assert dead.headers["content-type"] == "application/json"
        assert "trace" in dead.headers
        await eventually(lambda: times_applied(runtime, "B"))


async def test_a_reused_message_id_with_other_content_is_dead_lettered_and_an_exact_redelivery_is_not(
    kafka, database_url
):
    settings = echo_settings(kafka, database_url)
    runtime, app = echo_app(settings)
    first = invoice("R1")
    reused = first | {"invoice_id": "R2"}
    await start_after_publishing(kafka, settings, [first, first, reused, invoice("AFTER")])
    dlq = settings.topic(dead_letter_topic(ERP_CUSTOMER_INVOICES))
    async with serve(app), TopicProbe(kafka.bootstrap_servers, [dlq]) as probe:
        await eventually(lambda: times_applied(runtime, "AFTER"))
        [dead] = await probe.wait_for(lambda r: True)
        assert json.loads(dead.value)["invoice_id"] == "R2"
        assert dead.headers["x-dlq-reason"] == (
            f"message_id {first['message_id']} was already processed with "
            f"different content; a message_id cannot be reused"
        )
        assert dead.headers["x-dlq-source-offset"] == "2", "the original record, not a re-serialised copy"
        assert await times_applied(runtime, "R1") == 1
        assert await times_applied(runtime, "R2") == 0
        assert len(await probe.settle(0.3)) == 1


async def test_a_record_dead_lettered_twice_after_a_crash_is_published_once(kafka, database_url):
    """A redelivered poison record (the consumer died before committing its offset) is not dead-lettered again."""
    from aiokafka import ConsumerRecord

    settings = echo_settings(kafka, database_url, outbox_relay_enabled=False)
    runtime, app = echo_app(settings)
    record = ConsumerRecord(settings.topic(ERP_CUSTOMER_INVOICES), 0, 7, 0, 0, b"k", b"{bad", None, 1, 4, [])
    async with serve(app):
        for _ in range(2):
            await runtime._dead_letter(ERP_CUSTOMER_INVOICES, record, "invalid message: x", "invalid")
        async with runtime.sessions() as session:
            rows = (
                (
                    await session.exec(
                        select(OutboxMessage).where(OutboxMessage.topic == dead_letter_topic(ERP_CUSTOMER_INVOICES))
                    )
                )
                .scalars()
                .all()
            )
        assert len(rows) == 1
        assert rows[0].payload == b"{bad"


FAILURES = {"SQL-ERROR": 0}


async def echo_or_fail(uow: UnitOfWork, message: CustomerInvoiceIssued) -> None:
    if message.invoice_id == "SQL-ERROR":
        FAILURES["SQL-ERROR"] += 1
        await uow.session.exec(text("SELECT * FROM no_such_table"))  # a data/schema error: retrying cannot heal it
    if message.invoice_id == "STUCK" and FAILURES.get("STUCK"):
        raise ConnectionError("the database went away")  # transient: retried until it heals
    await echo_invoice(uow, message)


def failing_app(settings):
    runtime = ServiceRuntime(settings, tables=[EchoEffect.__table__])
    runtime.subscribe(ERP_CUSTOMER_INVOICES, CustomerInvoiceIssued.model_validate_json, echo_or_fail)
    return runtime, runtime.http_app("echo")


async def test_a_permanent_database_error_is_dead_lettered_after_its_retries_and_the_next_message_goes_on(
    kafka, database_url
):
    settings = echo_settings(kafka, database_url, consumer_max_attempts=3)
    runtime, app = failing_app(settings)
    FAILURES["SQL-ERROR"] = 0
    await start_after_publishing(kafka, settings, [invoice("SQL-ERROR"), invoice("NEXT")])
    dlq = settings.topic(dead_letter_topic(ERP_CUSTOMER_INVOICES))
    async with serve(app), TopicProbe(kafka.bootstrap_servers, [dlq]) as probe:
        [dead] = await probe.wait_for(lambda r: True)
        assert dead.headers["x-dlq-error-type"] == "unexpected"
        assert FAILURES["SQL-ERROR"] == 3
        await eventually(lambda: times_applied(runtime, "NEXT"))


async def test_readiness_fails_while_a_consumer_is_stuck_and_recovers_when_it_heals(kafka, tmp_path):
    settings = echo_settings(kafka, f"sqlite+aiosqlite:///{tmp_path / 'echo.db'}", stuck_after_seconds=0.5)
    runtime, app = failing_app(settings)
    FAILURES["STUCK"] = 1
    await start_after_publishing(kafka, settings, [invoice("STUCK")])
    async with serve(app) as http:

        async def not_ready() -> bool:
            response = await http.get("/readyz")
            return response.status_code == 503 and response.json()["checks"]["consumer"].startswith("retrying")

        await eventually(not_ready)
        assert (await http.get("/healthz")).status_code == 200, "liveness does not depend on one message"
        FAILURES["STUCK"] = 0
        await eventually(lambda: times_applied(runtime, "STUCK"), timeout=20)
        assert (await http.get("/readyz")).status_code == 200


async def test_an_oversized_outbox_row_is_dead_lettered_truncated_and_the_rows_around_it_are_published_once(
    kafka, database_url
):
    settings = echo_settings(kafka, database_url, outbox_relay_enabled=False)
    runtime, app = echo_app(settings)
    out, dlq = settings.topic(GL_JOURNAL_LINES), settings.topic(dead_letter_topic(GL_JOURNAL_LINES))
    async with serve(app), TopicProbe(kafka.bootstrap_servers, [out, dlq]) as probe:
        async with runtime.sessions() as session, session.begin():
            for n, size in enumerate([10, 2_000_000, 10]):
                session.add(
                    OutboxMessage(
                        message_id=str(uuid.uuid4()),
                        topic=GL_JOURNAL_LINES,
                        key=f"V{n}",
                        payload=b"x" * size,
                        headers=[["message-type", "VoucherPosted"]],
                    )
                )
        await runtime.relay.publish_pending()
        await runtime.relay.publish_pending()  # nothing left: nothing is published again
        records = await probe.wait_for(lambda r: True, count=3)
        assert sorted((r.topic, r.key) for r in await probe.settle(0.5)) == sorted(
            [(out, "V0"), (dlq, "V1"), (out, "V2")]
        )
        [truncated] = [r for r in records if r.topic == dlq]
        assert truncated.headers["x-dlq-truncated"] == "true"
        assert truncated.headers["x-dlq-original-size"] == "2000000"
        assert len(truncated.value) < 1_000_000
        async with runtime.sessions() as session:
            pending = (
                await session.exec(
                    select(func.count()).select_from(OutboxMessage).where(OutboxMessage.published_at.is_(None))
                )
            ).scalar_one()
        assert pending == 0


class _Orig(Exception):
    def __init__(self, sqlstate: str | None = None, message: str = "") -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (OperationalError("stmt", {}, _Orig("40001")), True),  # serialization failure
        (OperationalError("stmt", {}, _Orig("40P01")), True),  # deadlock
        (OperationalError("stmt", {}, _Orig("08006")), True),  # connection failure
        (DataError("stmt", {}, _Orig("22003")), False),  # numeric value out of range
        (DataError("stmt", {}, _Orig("22021")), False),  # invalid byte sequence (e.g. \u0000)
        (IntegrityError("stmt", {}, _Orig("23505")), False),
        (OperationalError("stmt", {}, _Orig(None, "database is locked")), True),  # SQLite busy
        (OperationalError("stmt", {}, _Orig(None, "no such table: x")), False),
        (InterfaceError("stmt", {}, _Orig(None, "connection is closed")), True),
        (ConnectionRefusedError(), True),
        (TimeoutError(), True),  # also asyncpg's statement timeout
        (PoolTimeout(), True),  # every pooled connection busy: load, not the message
        (ValueError("a bug"), False),
    ],
)
def test_only_failures_that_heal_by_themselves_are_transient(error, transient):
    assert is_transient(error) is transient


async def test_a_slow_database_probe_is_reported_but_never_cancelled_nor_run_on_the_shared_pool(
    monkeypatch, kafka, tmp_path
):
    # Cancelling an asyncpg query can leave its connection unusable; in the shared pool that once
    # stalled a consumer for good. A slow probe must go on in the background, on its own engine.
    runtime = ServiceRuntime(echo_settings(kafka, f"sqlite:///{tmp_path}/echo.db"), tables=[])
    release, pinged = asyncio.Event(), []

    async def slow_ping(engine) -> None:
        pinged.append(engine)
        await release.wait()

    monkeypatch.setattr(service, "ping", slow_ping)
    try:
        assert (await runtime.health())["database"] == "unreachable"
        assert (await runtime.health())["database"] == "unreachable"  # waits for the same probe
        assert len(pinged) == 1 and pinged[0] is not runtime.engine
        release.set()
        assert (await runtime.health())["database"] == "ok"
        assert all(engine is not runtime.engine for engine in pinged)
    finally:
        await runtime.stop()


async def test_a_handler_dead_letter_keeps_the_original_record(kafka, database_url):
    """A part rejected by a batch handler is reported with the bytes the producer sent, and where they were."""
    settings = echo_settings(kafka, database_url)
    runtime = ServiceRuntime(settings, tables=[EchoEffect.__table__])
    runtime.subscribe_batch(ERP_CUSTOMER_INVOICES, CustomerInvoiceIssued.model_validate_json, echo_invoices)
    rejected = json.dumps(invoice("REJECT-9"), indent=2).encode()  # spacing a re-serialisation would lose
    await start_after_publishing(kafka, settings, [invoice("OK-1"), (rejected, [("trace", b"t-1")]), invoice("OK-2")])
    dlq = settings.topic(dead_letter_topic(ERP_CUSTOMER_INVOICES))
    async with serve(runtime.http_app("echo")), TopicProbe(kafka.bootstrap_servers, [dlq]) as probe:
        [dead] = await probe.wait_for(lambda r: True)
        assert dead.value == rejected
        assert dead.headers["trace"] == "t-1"
        assert (dead.headers["x-dlq-source-partition"], dead.headers["x-dlq-source-offset"]) == ("0", "1")
        assert dead.headers["x-dlq-reason"] == "invoice REJECT-9 is not wanted"
        await eventually(lambda: times_applied(runtime, "OK-2"))


def test_outbox_rows_keep_binary_headers_exactly():
    from kredit_shared.outbox import decode_headers, encode_headers

    headers = [("a", b"text"), ("b", b"\xff\x00"), ("a", None)]
    assert decode_headers(json.loads(json.dumps(encode_headers(headers)))) == headers


async def test_two_relays_on_one_database_publish_each_row_once(kafka, database_url):
    """Two replicas share a database (on SQLite too, where there is no advisory lock)."""
    settings = echo_settings(kafka, database_url, outbox_relay_enabled=False)
    runtime, app = echo_app(settings)
    out = settings.topic(GL_JOURNAL_LINES)
    async with serve(app), TopicProbe(kafka.bootstrap_servers, [out]) as probe:
        other = outbox.OutboxRelay(settings, runtime.sessions, runtime.producer)
        for round_ in range(5):
            async with runtime.sessions() as session, session.begin():
                for n in range(50):
                    session.add(
                        OutboxMessage(
                            message_id=str(uuid.uuid4()),
                            topic=GL_JOURNAL_LINES,
                            key=f"R{round_}-{n}",
                            payload=b"{}",
                            headers=[],
                        )
                    )
            await asyncio.gather(runtime.relay.publish_pending(), other.publish_pending())
            await asyncio.gather(runtime.relay.publish_pending(), other.publish_pending())
        await probe.wait_for(lambda r: True, count=250)
        keys = [r.key for r in await probe.settle(0.5)]
        assert len(keys) == len(set(keys)) == 250
