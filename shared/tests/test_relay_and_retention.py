"""The outbox relay keeps order and gauges its backlog cheaply; retention keeps the outbox, the inbox and the
documents waiting for an exchange rate small."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import date, timedelta

from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from sqlalchemy import insert
from sqlmodel import select

from kredit_shared import outbox, retention
from kredit_shared.contracts import GL_JOURNAL_LINES
from kredit_shared.database import create_engine, create_session_factory, create_tables
from kredit_shared.exchange_rates import WaitingDocumentRow
from kredit_shared.inbox import ProcessedMessage
from kredit_shared.outbox import OutboxMessage, _key_index, utcnow
from kredit_shared.service import ServiceRuntime
from kredit_shared.settings import ServiceSettings
from kredit_shared.testing import TopicProbe, eventually, isolated_kafka, serve

DAY = timedelta(days=1)


def outbox_row(key: str, created_days_ago: float, published_days_ago: float | None) -> dict:
    now = utcnow()
    return {
        "message_id": str(uuid.uuid4()),
        "topic": GL_JOURNAL_LINES,
        "key": key,
        "payload": b"{}",
        "headers": [],
        "created_at": now - created_days_ago * DAY,
        "published_at": None if published_days_ago is None else now - published_days_ago * DAY,
    }


def inbox_row(message_id: str, days_ago: float) -> dict:
    return {"consumer": "c", "message_id": message_id, "topic": "t", "processed_at": utcnow() - days_ago * DAY}


def waiting_row(message_id: str, days_ago: float) -> dict:
    return {
        "topic": "t",
        "message_id": message_id,
        "currency": "EUR",
        "document_date": date(2026, 3, 1),
        "message": "{}",
        "kept_at": utcnow() - days_ago * DAY,
    }


def deleted_so_far(service: str, table: str) -> float:
    return REGISTRY.get_sample_value("kredit_retention_deleted_total", {"service": service, "table": table}) or 0.0


async def test_published_outbox_rows_and_inbox_entries_older_than_the_period_are_deleted_in_batches(database_url):
    service = f"retention-{uuid.uuid4().hex[:6]}"
    settings = ServiceSettings(
        service_name=service, http_port=0, database_url=database_url, retention_days=7, retention_batch_size=2
    )
    engine = create_engine(database_url)
    sessions = create_session_factory(engine)
    try:
        await create_tables(engine, [OutboxMessage.__table__, ProcessedMessage.__table__, WaitingDocumentRow.__table__])
        async with sessions() as session, session.begin():
            connection = await session.connection()
            rows = [outbox_row(f"old-{n}", 9, 8) for n in range(5)]  # published 8 days ago: go
            rows += [outbox_row("recent", 9, 6), outbox_row("unsent", 30, None)]  # stay: too recent, not sent
            await connection.execute(insert(OutboxMessage.__table__), rows)
            inbox = [inbox_row(f"old-{n}", 8) for n in range(3)] + [inbox_row(f"new-{n}", 1) for n in range(2)]
            await connection.execute(insert(ProcessedMessage.__table__), inbox)
            waiting = [waiting_row(f"old-{n}", 8) for n in range(3)] + [waiting_row("new", 6)]
            await connection.execute(insert(WaitingDocumentRow.__table__), waiting)

        assert await retention.delete_expired(settings, sessions) == {"outbox": 5, "inbox": 3, "waiting_for_rate": 3}

        async with sessions() as session:
            assert sorted((await session.exec(select(OutboxMessage.key))).all()) == ["recent", "unsent"]
            assert sorted((await session.exec(select(ProcessedMessage.message_id))).all()) == ["new-0", "new-1"]
            assert (await session.exec(select(WaitingDocumentRow.message_id))).all() == ["new"]
        assert deleted_so_far(service, "outbox_message") == 5
        assert deleted_so_far(service, "inbox_processed_message") == 3
        assert deleted_so_far(service, "document_waiting_for_rate") == 3
        expected = {"outbox": 0, "inbox": 0, "waiting_for_rate": 0}
        assert await retention.delete_expired(settings, sessions) == expected
    finally:
        await engine.dispose()


async def test_every_service_runs_the_retention_job(kafka, database_url):
    settings = ServiceSettings(
        service_name="retention-job",
        http_port=0,
        database_url=database_url,
        retention_days=1,
        retention_interval_seconds=0.2,
        **isolated_kafka(kafka),
    )
    runtime = ServiceRuntime(settings, tables=[])
    async with serve(runtime.http_app("retention")):
        async with runtime.sessions() as session, session.begin():
            await (await session.connection()).execute(
                insert(OutboxMessage.__table__), [outbox_row("old", 3, 2), outbox_row("new", 0, 0)]
            )

        async def only_the_new_row_left() -> bool:
            async with runtime.sessions() as session:
                return (await session.exec(select(OutboxMessage.key))).all() == ["new"]

        await eventually(only_the_new_row_left, timeout=10)


async def test_the_backlog_gauge_counts_what_is_behind_a_full_batch(kafka, database_url):
    settings = ServiceSettings(
        service_name=f"gauge-{uuid.uuid4().hex[:6]}",
        http_port=0,
        database_url=database_url,
        outbox_relay_enabled=False,
        outbox_batch_size=3,
        **isolated_kafka(kafka),
    )
    runtime = ServiceRuntime(settings, tables=[])

    def pending() -> float | None:
        return REGISTRY.get_sample_value("kredit_outbox_pending", {"service": settings.service_name})

    async with (
        serve(runtime.http_app("gauge")),
        TopicProbe(kafka.bootstrap_servers, [settings.topic(GL_JOURNAL_LINES)]) as probe,
    ):
        async with runtime.sessions() as session, session.begin():
            rows = [outbox_row(f"R{n}", 0, None) for n in range(5)]
            await (await session.connection()).execute(insert(OutboxMessage.__table__), rows)
        assert await runtime.relay.publish_pending() == 3
        assert pending() == 2
        assert await runtime.relay.publish_pending() == 2
        assert pending() == 0
        assert await runtime.relay.publish_pending() == 0
        assert pending() == 0
        await probe.wait_for(lambda r: True, count=5)
        assert sorted(r.key for r in await probe.settle(0.3)) == ["R0", "R1", "R2", "R3", "R4"], "each row once"


async def test_two_relays_racing_publish_each_keys_rows_once_in_commit_order(kafka, database_url):
    settings = ServiceSettings(
        service_name="order",
        http_port=0,
        database_url=database_url,
        outbox_relay_enabled=False,
        outbox_batch_size=7,
        **isolated_kafka(kafka),
    )
    runtime = ServiceRuntime(settings, tables=[])
    async with (
        serve(runtime.http_app("order")),
        TopicProbe(kafka.bootstrap_servers, [settings.topic(GL_JOURNAL_LINES)]) as probe,
    ):
        other = outbox.OutboxRelay(settings, runtime.sessions, runtime.producer)
        for commit in range(4):
            async with runtime.sessions() as session, session.begin():
                rows = [outbox_row(f"K{n % 2}", 0, None) | {"payload": f"{commit}-{n}".encode()} for n in range(20)]
                await (await session.connection()).execute(insert(OutboxMessage.__table__), rows)
            while sum(await asyncio.gather(runtime.relay.publish_pending(), other.publish_pending())):
                pass
        await probe.wait_for(lambda r: True, count=80)
        records = await probe.settle(0.5)
    for key in ("K0", "K1"):
        sent = [f"{c}-{n}".encode() for c in range(4) for n in range(20) if f"K{n % 2}" == key]
        assert [r.value for r in records if r.key == key] == sent, "once each, in commit order"


async def test_the_relay_batches_a_partitions_rows_in_commit_order_on_the_partition_of_their_key(kafka, database_url):
    """More rows a partition than one batch holds (256 KiB), a record larger than a batch (not than a request),
    a row without key: each is published once, each key's rows in commit order, on the partition the producer's
    own partitioner gives the key (so a key stays on its partition whichever way a relay sends)."""
    settings = ServiceSettings(
        service_name="batches",
        http_port=0,
        database_url=database_url,
        outbox_relay_enabled=False,
        **isolated_kafka(kafka),
    )
    runtime = ServiceRuntime(settings, tables=[])
    topic = settings.topic(GL_JOURNAL_LINES)
    payloads = {n: f"{n:04d}".encode() * (500 if n != 150 else 100_000) for n in range(400)}  # 2 KB; row 150: 400 KB
    async with serve(runtime.http_app("batches")):
        async with runtime.sessions() as session, session.begin():
            rows = [outbox_row(f"K{n % 9}" if n != 7 else None, 0, None) | {"payload": payloads[n]} for n in range(400)]
            await (await session.connection()).execute(insert(OutboxMessage.__table__), rows)
        assert await runtime.relay.publish_pending() == 400
        partitions = sorted(await runtime.producer.partitions_for(topic))
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka.bootstrap_servers, auto_offset_reset="earliest")
    await consumer.start()
    try:
        records: list = []

        async def all_read() -> bool:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
            return len(records) >= 400

        await eventually(all_read, timeout=20)
    finally:
        await consumer.stop()
    assert sorted(r.value for r in records) == sorted(payloads.values()), "each row once, whole"
    for k in range(9):
        key = f"K{k}".encode()
        mine = [r for r in records if r.key == key]
        assert [r.value for r in mine] == [payloads[n] for n in range(400) if n % 9 == k and n != 7], "commit order"
        assert {r.partition for r in mine} == {DefaultPartitioner()(key, partitions, partitions)}


def test_stored_headers_read_back_small_and_large_alike():
    """A message's few headers come from a cache, a dead letter's (reason, original headers) are decoded each time:
    both are what was stored, bytes that are not UTF-8 and null values included."""
    small = [("message-type", b"VoucherPosted"), ("n", None)]
    large = [*small, ("x-dlq-reason", b"r" * 600), ("raw", b"\xff\xfe")]
    for headers in (small, large):
        encoded = json.dumps(outbox.encode_headers(headers))
        assert outbox.stored_headers(encoded) == tuple(headers)


@given(key=st.binary(max_size=40), partitions=st.integers(min_value=1, max_value=64))
def test_a_keyed_row_goes_to_the_partition_the_producers_partitioner_picks(key: bytes, partitions: int):
    """The relay's cached murmur2 (outbox._key_index) sends a key where aiokafka's producer would: a customer's
    messages stay on one partition, in order, whichever of the two published them."""
    all_partitions = list(range(partitions))
    assert all_partitions[_key_index(key, partitions)] == DefaultPartitioner()(key, all_partitions, all_partitions)
