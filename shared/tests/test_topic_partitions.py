"""Start-up gives existing topics TOPIC_PARTITIONS partitions when they have fewer, never fewer, and says
clearly when the broker cannot add partitions (the local Tansu broker offers no CreatePartitions)."""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.errors import IncompatibleBrokerVersion

from kredit_shared.contracts.topics import ALL_TOPICS, dead_letter_topic
from kredit_shared.service import TopicError, ensure_topics
from kredit_shared.settings import ServiceSettings
from kredit_shared.testing import isolated_kafka


def settings(kafka, prefix: str, partitions: int) -> ServiceSettings:
    return ServiceSettings(
        service_name="t",
        http_port=0,
        database_url="sqlite://",
        **(isolated_kafka(kafka) | {"topic_prefix": prefix}),
        topic_partitions=partitions,
    )


async def partition_counts(kafka, prefix: str) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        names = [prefix + t for topic in ALL_TOPICS for t in (topic, dead_letter_topic(topic))]
        return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(names)}
    finally:
        await admin.close()


async def broker_can_add_partitions(kafka, topic: str) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_partitions({topic: NewPartitions(total_count=3)}, validate_only=True)
        return True
    except IncompatibleBrokerVersion:
        return False
    finally:
        await admin.close()


async def test_topics_with_more_partitions_than_configured_are_left_alone(kafka):
    prefix = isolated_kafka(kafka)["topic_prefix"]
    await ensure_topics(settings(kafka, prefix, 6))
    await ensure_topics(settings(kafka, prefix, 2))
    assert set((await partition_counts(kafka, prefix)).values()) == {6}


async def test_a_higher_partition_count_is_applied_or_refused_with_the_reason(kafka):
    prefix = isolated_kafka(kafka)["topic_prefix"]
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:  # one topic made earlier with fewer partitions (e.g. before TOPIC_PARTITIONS was raised)
        await admin.create_topics([NewTopic(prefix + ALL_TOPICS[0], 2, 1)])
    finally:
        await admin.close()
    if await broker_can_add_partitions(kafka, prefix + ALL_TOPICS[0]):
        await ensure_topics(settings(kafka, prefix, 4))
        assert set((await partition_counts(kafka, prefix)).values()) == {4}
        return
    with pytest.raises(TopicError) as refused:
        await ensure_topics(settings(kafka, prefix, 4))
    message = str(refused.value)
    assert "TOPIC_PARTITIONS=4" in message and f"{prefix}{ALL_TOPICS[0]}: 2" in message
    assert "cannot add partitions" in message and "CreatePartitions" in message
    assert (await partition_counts(kafka, prefix))[prefix + ALL_TOPICS[0]] == 2
