"""A consumer whose fetches find nothing waits longer between them, up to KAFKA_FETCH_IDLE_WAIT_MS, and is back at
KAFKA_FETCH_MAX_WAIT_MS with the first fetch that brings records (kredit_shared.fetch_pacing). Real client, real
broker: the pacing wraps aiokafka's private fetcher, and these tests are what says an upgrade still fits."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from kredit_shared.contracts import ERP_CUSTOMER_INVOICES, GL_JOURNAL_LINES
from kredit_shared.fetch_pacing import pace_fetches
from kredit_shared.testing import TopicProbe, eventually, publish, serve

from .test_reliable_messaging import echo_app, echo_settings, invoice


@asynccontextmanager
async def consumer_of_new_topic(kafka) -> AsyncIterator[tuple[AIOKafkaConsumer, str]]:
    topic = f"{kafka.topic_prefix}pacing-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka.bootstrap_servers, auto_offset_reset="earliest", fetch_max_wait_ms=20
    )
    await consumer.start()
    try:
        yield consumer, topic
    finally:
        await consumer.stop()


def waits_of_each_fetch(consumer: AIOKafkaConsumer) -> list[int]:
    """The wait each fetch from now on is sent with (read as it starts: the pacing changes it only after a
    response, and a consumer has one fetch in flight per broker)."""
    fetcher, waits = consumer._fetcher, []
    paced = fetcher._proc_fetch_request

    async def noted(*args):
        waits.append(fetcher._fetch_max_wait_ms)
        return await paced(*args)

    fetcher._proc_fetch_request = noted
    return waits


async def test_an_idle_consumer_doubles_its_wait_and_a_record_brings_the_short_wait_back(kafka):
    async with consumer_of_new_topic(kafka) as (consumer, topic):
        assert pace_fetches(consumer, busy_wait_ms=20, idle_wait_ms=160)
        waits = waits_of_each_fetch(consumer)
        await eventually(lambda: waits.count(160) >= 2, timeout=10)
        idle = waits[: waits.index(160) + 1]
        assert idle[-4:] == [20, 40, 80, 160]  # doubling after each empty fetch, up to the idle wait
        assert set(waits) == {20, 40, 80, 160}

        before_the_record = len(waits)
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers)
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"one")
        finally:
            await producer.stop()
        batches = await consumer.getmany(timeout_ms=5000)
        assert [r.value for records in batches.values() for r in records] == [b"one"]
        await eventually(lambda: 20 in waits[before_the_record:] and waits[-1] != 20, timeout=10)
        # Idle fetches (the one that brought the record may have been sent before it); the ones after start short.
        after = waits[before_the_record:]
        first_short = after.index(20)
        assert set(after[:first_short]) <= {160}
        assert after[first_short : first_short + 2] == [20, 40]


async def test_no_pacing_when_the_idle_wait_is_not_longer(kafka):
    async with consumer_of_new_topic(kafka) as (consumer, _topic):
        assert not pace_fetches(consumer, busy_wait_ms=500, idle_wait_ms=200)  # e.g. Apache Kafka's 500 ms wait
        assert not pace_fetches(consumer, busy_wait_ms=20, idle_wait_ms=0)  # turned off
        waits = waits_of_each_fetch(consumer)
        await eventually(lambda: len(waits) >= 5, timeout=10)
        assert set(waits) == {20}


async def test_a_service_paces_its_consumer_and_still_handles_what_comes_after_a_quiet_spell(kafka, tmp_path):
    settings = echo_settings(kafka, f"sqlite+aiosqlite:///{tmp_path / 'echo.db'}", kafka_fetch_idle_wait_ms=160)
    runtime, app = echo_app(settings)
    async with serve(app), TopicProbe(kafka.bootstrap_servers, [settings.topic(GL_JOURNAL_LINES)]) as out:
        [consumer] = runtime._consumers()
        await eventually(lambda: consumer._fetcher._fetch_max_wait_ms == 160, timeout=10)
        await publish(kafka.bootstrap_servers, settings.topic(ERP_CUSTOMER_INVOICES), invoice("10090"))
        [voucher] = await out.wait_for(lambda r: True)
        assert voucher.key == "ECHO-10090"
