"""Transactional outbox: messages are rows committed with the state change; a relay publishes them.

A crash between commit and publish loses nothing: unpublished rows are sent after restart. A crash
between publish and marking them sent re-publishes them with the same `message_id`, which the
consumers' inbox turns into a no-op (at-least-once delivery, exactly-once effect).
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import functools
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner, murmur2
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from sqlalchemy import JSON, Column, LargeBinary, func, make_url, text, update
from sqlmodel import Field, SQLModel, col, select

from kredit_shared import failpoints, metrics, telemetry
from kredit_shared.contracts.messages import ContractMessage
from kredit_shared.contracts.topics import dead_letter_topic
from kredit_shared.database import SessionFactory, normalise_url, table_of
from kredit_shared.settings import ServiceSettings

log = logging.getLogger(__name__)

# Any constant works: it only has to be the same for every relay of one database.
_RELAY_LOCK_KEY = 0x6B726564  # "kred"


def utcnow() -> datetime:
    return datetime.now(UTC)


class OutboxMessage(SQLModel, table=True):
    __tablename__ = "outbox_message"

    id: int | None = Field(default=None, primary_key=True)
    message_id: str = Field(index=True)
    topic: str  # the contract's topic name; the relay adds the deployment's prefix
    key: str | None
    payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    # Kafka headers as [name, value] pairs (see encode_headers): a dead letter keeps the original's,
    # which may repeat a name or hold bytes that are not UTF-8.
    headers: list[list[Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    published_at: datetime | None = Field(default=None, index=True)


Header = tuple[str, bytes | None]


def encode_headers(headers: Sequence[Header]) -> list[list[Any]]:
    """JSON-safe headers: a UTF-8 value as text, other bytes as {"base64": …}, a null value as null."""
    encoded: list[list[Any]] = []
    for name, value in headers:
        if value is None:
            encoded.append([name, None])
            continue
        try:
            encoded.append([name, value.decode()])
        except UnicodeDecodeError:
            encoded.append([name, {"base64": base64.b64encode(value).decode()}])
    return encoded


def decode_headers(encoded: list[list[Any]]) -> list[Header]:
    decoded: list[Header] = []
    for name, value in encoded:
        if isinstance(value, dict):
            decoded.append((name, base64.b64decode(value["base64"])))
        else:
            decoded.append((name, None if value is None else value.encode()))
    return decoded


# The relay appends the row's message_id as the record's last header of this name.
RELAYED_ID_HEADER = "message-id"
# ... and, before it, the name of the service publishing it (ServiceRuntime.subscribe_batch's `skip_own`).
PRODUCER_HEADER = "kredit-producer"


def producer_of(headers: Sequence[tuple[str, bytes | None]] | None) -> bytes | None:
    """The service that published a record: its last `kredit-producer` header (None: not one of ours)."""
    return next((v for k, v in reversed(headers or ()) if k == PRODUCER_HEADER), None)


def relayed_id(headers: Sequence[tuple[str, bytes | None]] | None) -> str | None:
    """The id the relay published a record under: its last `message-id` header (a dead letter keeps the
    original record's headers before it). Copies the at-least-once relay sent again share it."""
    return next((v.decode() for k, v in reversed(headers or ()) if k == RELAYED_ID_HEADER and v), None)


def message_row(message: ContractMessage) -> dict[str, Any]:
    """The outbox row of a contract message (a transaction inserts its rows in one statement); the writer adds
    `created_at`, the commit's time (UnitOfWork._write_outbox)."""
    # The trace context of the span writing it: the relay's span continues that trace.
    trace = telemetry.trace_headers()
    message_type = type(message).__name__
    return {
        "message_id": message.message_id,
        "topic": message.topic,
        "key": message.key(),
        "payload": message.model_dump_json().encode(),
        "headers": encode_headers([("message-type", message_type.encode()), *trace])
        if trace
        else _type_headers(message_type),
    }


@functools.lru_cache(maxsize=256)
def _type_headers(message_type: str) -> list[list[Any]]:
    """The stored headers of a message of this type without a trace context: one list for all of them (never
    changed), which bulk_insert then encodes once a statement."""
    return encode_headers([("message-type", message_type.encode())])


@dataclass(frozen=True)
class DeadLetter:
    """A rejected record as it will appear on `<topic>.dlq`: the original bytes and headers, plus
    `x-dlq-*` headers naming the error and where the record came from."""

    source_topic: str
    key: bytes | None
    value: bytes | None
    headers: Sequence[Header]
    reason: str
    error_type: str
    partition: int | None = None  # None: not from a Kafka record (e.g. an HTTP command's message)
    offset: int | None = None
    consumer: str = ""

    def record_headers(self) -> list[Header]:
        value = self.value or b""
        kept = [(k, v) for k, v in self.headers if not k.startswith("x-dlq-")]
        dlq: list[tuple[str, str]] = [
            ("x-dlq-reason", self.reason[:MAX_REASON_CHARS]),
            ("x-dlq-error-type", self.error_type),
            ("x-dlq-source-topic", self.source_topic),
        ]
        if self.partition is not None:
            dlq += [("x-dlq-source-partition", str(self.partition)), ("x-dlq-source-offset", str(self.offset))]
        if self.consumer:
            dlq.append(("x-dlq-consumer", self.consumer))
        if len(value) > MAX_DEAD_LETTER_BYTES:
            dlq += [
                ("x-dlq-truncated", "true"),
                ("x-dlq-original-size", str(len(value))),
                ("x-dlq-original-sha256", hashlib.sha256(value).hexdigest()),
            ]
        return kept + [(k, v.encode()) for k, v in dlq]

    def payload(self) -> bytes:
        """The original bytes; a copy cut short when they could not be published again whole."""
        return (self.value or b"")[:MAX_DEAD_LETTER_BYTES]


# A dead letter must always be publishable, whatever came in: the producer refuses records over 1 MiB.
MAX_DEAD_LETTER_BYTES = 256 * 1024
MAX_REASON_CHARS = 4000


def dead_letter_row(letter: DeadLetter, message_id: str) -> dict[str, Any]:
    """The outbox row of a dead letter: committed with the effect (or the inbox entry) that goes with
    it, so it is published once. Without `created_at`, as message_row."""
    return {
        "message_id": message_id,
        "topic": dead_letter_topic(letter.source_topic),
        "key": letter.key.decode(errors="replace") if letter.key is not None else None,
        "payload": letter.payload(),
        "headers": encode_headers(letter.record_headers()),
        "created_at": utcnow(),
    }


# What the relay reads of a row: plain tuples, not ORM objects (thousands per batch). The headers as their
# JSON text, decoded through a cache: most rows of a service carry the same few (see stored_headers).
_RELAYED = (
    col(OutboxMessage.id),
    col(OutboxMessage.message_id),
    col(OutboxMessage.topic),
    col(OutboxMessage.key),
    col(OutboxMessage.payload),
    sqlalchemy.cast(col(OutboxMessage.headers), sqlalchemy.Text).label("headers"),
)


def stored_headers(encoded: str) -> tuple[Header, ...]:
    """The headers of an outbox row from the JSON text stored (encode_headers' form). Small ones (a message's)
    through a cache; a dead letter's, which carry a reason and the original record's headers, decoded each time
    so the cache stays small whatever came in."""
    return _cached_headers(encoded) if len(encoded) <= 512 else _headers(encoded)


def _headers(encoded: str) -> tuple[Header, ...]:
    return tuple(decode_headers(json.loads(encoded)))


_cached_headers = functools.lru_cache(maxsize=1024)(_headers)


# The largest record the relay's producer sends (aiokafka's default max_request_size, passed to the producer
# explicitly): a larger row is dead-lettered, cut short (OutboxRelay._unpublishable).
MAX_REQUEST_BYTES = 1024 * 1024


def _sqlite_lock_file(database_url: str) -> str | None:
    """The relay's lock file of a SQLite database file; None for PostgreSQL and in-memory SQLite."""
    url = make_url(normalise_url(database_url))
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return f"{url.database}.relay-lock"


@functools.lru_cache(maxsize=65536)
def _key_index(key: bytes, partitions: int) -> int:
    """The index of the partition DefaultPartitioner gives a key among `partitions` (its murmur2 of the key, pure
    Python in aiokafka, was a fifth of the relay's CPU): a service's keys are its customers, so a cache holds them."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class RelayError(Exception):
    """Some rows were not published this round (the acknowledged ones are marked sent)."""


class OutboxRelay:
    """Publishes unsent outbox rows in commit order (acks=all) and marks them sent."""

    def __init__(
        self,
        settings: ServiceSettings,
        sessions: SessionFactory,
        producer: AIOKafkaProducer,
        write_turn: AbstractAsyncContextManager[Any] | None = None,
    ) -> None:
        """`write_turn`: held while marking rows sent, so the process's other writers take turns with it
        (ServiceRuntime's, on SQLite)."""
        self._settings = settings
        self._write_turn = write_turn or nullcontext()
        self._sessions = sessions
        self._producer = producer
        # The producer's own, for a keyless row; a key goes to the partition it picks (_key_index).
        self._partitioner = DefaultPartitioner()
        self._wakeup = asyncio.Event()
        self.failing_since: float | None = None  # monotonic time of the first failure in a row (readiness)
        self._postgres = make_url(normalise_url(settings.database_url)).get_backend_name() == "postgresql"
        self._lock_path = _sqlite_lock_file(settings.database_url)

    def wake(self) -> None:
        """Called after a commit that queued messages, so they go out without waiting for the poll."""
        self._wakeup.set()

    async def run_forever(self) -> None:
        while True:
            try:
                published = await self.publish_pending()
                self.failing_since = None
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay failed; retrying")
                if self.failing_since is None:
                    self.failing_since = time.monotonic()
                published = 0
            if published < self._settings.outbox_batch_size:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), self._settings.outbox_poll_interval_seconds)
                except TimeoutError:
                    pass

    async def publish_pending(self) -> int:
        """Publish one batch; returns how many rows were sent (0 also when another relay is at it)."""
        # One relay at a time per database keeps each key's messages in commit order and publishes each
        # row once. SQLite has no advisory lock: a lock file next to the database (its replicas share one
        # host) does it there without holding the database's write lock while the broker acknowledges.
        with self._file_lock() as locked:
            if not locked:
                return 0
            return await self._publish_batch()

    @contextmanager
    def _file_lock(self) -> Iterator[bool]:
        if self._lock_path is None:
            yield True
            return
        with open(self._lock_path, "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    async def _publish_batch(self) -> int:
        async with self._sessions() as session:
            # Core statements (raw SQL, six columns: wider than SQLModel's typed select) through the connection.
            connection = await session.connection()
            if self._postgres:  # the transaction-scoped lock lasts until the batch is marked sent
                locked = await connection.execute(text(f"SELECT pg_try_advisory_xact_lock({_RELAY_LOCK_KEY})"))
                if not locked.scalar():
                    return 0
            rows = (
                await connection.execute(
                    sqlalchemy.select(*_RELAYED)
                    .where(col(OutboxMessage.published_at).is_(None))
                    .order_by(col(OutboxMessage.id))
                    .limit(self._settings.outbox_batch_size)
                )
            ).all()
            # The backlog without a COUNT(*) over the table: the rows behind this batch (max(id) is one
            # index lookup) and the failed ones. An upper bound: ids skipped by rolled-back inserts count.
            newest = (await session.exec(select(func.max(OutboxMessage.id)))).one()
            if not rows:
                metrics.OUTBOX_PENDING.labels(self._settings.service_name).set(0)
                return 0
            if not self._postgres:
                # SQLite: end the read here. A transaction that reads and then writes fails if a consumer
                # commits in between; the marking below begins with its write and waits for its turn.
                await session.commit()
            failpoints.hit(self._settings, "relay-before-publish")
            outcomes = await self._publish(rows)
            failpoints.hit(self._settings, "relay-after-publish")
            # Every row the broker acknowledged is marked sent, so a later row's failure never makes the
            # relay publish it again; a failed row stays pending and is retried on the next round.
            sent = [row for row, outcome in zip(rows, outcomes) if not isinstance(outcome, BaseException)]
            failed = [(row, outcome) for row, outcome in zip(rows, outcomes) if isinstance(outcome, BaseException)]
            async with self._write_turn:
                if sent:  # a Core statement: the ORM's bulk update would look for the rows in the session first
                    table = table_of(OutboxMessage)
                    await (await session.connection()).execute(
                        update(table).where(table.c.id.in_([r.id for r in sent])).values(published_at=utcnow())
                    )
                await session.commit()
            pending = (newest or 0) - rows[-1].id + len(failed)
        for topic, count in Counter(row.topic for row in sent).items():
            metrics.OUTBOX_PUBLISHED.labels(self._settings.service_name, topic).inc(count)
        for row in sent:
            if row.topic.endswith(".dlq"):  # counted once published, whoever wrote it (runtime or handler)
                error_type = next((v for k, v in stored_headers(row.headers) if k == "x-dlq-error-type"), None)
                metrics.DEAD_LETTERS.labels(
                    self._settings.service_name,
                    row.topic.removesuffix(".dlq"),
                    (error_type or b"").decode(errors="replace"),
                ).inc()
        metrics.OUTBOX_PENDING.labels(self._settings.service_name).set(pending)
        if failed:
            row, error = failed[0]
            raise RelayError(
                f"{len(failed)} of {len(rows)} outbox rows not published; first: row {row.id} to {row.topic}: {error!r}"
            )
        return len(rows)

    async def _publish(self, rows: Sequence[Any]) -> list[BaseException | None]:
        """Send the rows, in their order within each partition, and wait for every acknowledgement; each row's
        outcome (None: acknowledged). The rows of a partition go in batches the relay builds itself, one
        delivery a batch: the producer's `send` costs ~10 µs of CPU more a record (a future and a
        partitioner call each)."""
        producer, service = self._producer, self._settings.service_name
        partitions: dict[str, list[int]] = {}
        building: dict[tuple[str, int], tuple[BatchBuilder, list[int]]] = {}  # per partition: batch, its rows
        deliveries: list[tuple[asyncio.Future[Any], list[int]]] = []

        async def send(topic: str, partition: int) -> None:
            batch, members = building.pop((topic, partition))
            deliveries.append((await producer.send_batch(batch, topic, partition=partition), members))

        for index, row in enumerate(rows):
            topic = self._settings.topic(row.topic)
            key = row.key.encode() if row.key is not None else None
            ours = [(PRODUCER_HEADER, service.encode()), (RELAYED_ID_HEADER, row.message_id.encode())]
            with telemetry.publishing(service, row.topic, [*stored_headers(row.headers), *ours]) as headers:
                size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, row.payload, headers)
                if size > MAX_REQUEST_BYTES:
                    deliveries.append((await self._unpublishable(row, topic, key, headers, size), [index]))
                    continue
                if topic not in partitions:
                    partitions[topic] = sorted(await producer.partitions_for(topic))
                partition = (
                    self._partitioner(None, partitions[topic], partitions[topic])
                    if key is None
                    else partitions[topic][_key_index(key, len(partitions[topic]))]
                )
                if (topic, partition) not in building:
                    building[topic, partition] = (producer.create_batch(), [])
                batch, members = building[topic, partition]
                if batch.append(key=key, value=row.payload, timestamp=None, headers=headers) is None:
                    await send(topic, partition)  # full: a new batch takes the record (it is within the limit)
                    batch, members = building[topic, partition] = (producer.create_batch(), [])
                    batch.append(key=key, value=row.payload, timestamp=None, headers=headers)
                members.append(index)
        for topic, partition in list(building):
            await send(topic, partition)
        outcomes: list[BaseException | None] = [None] * len(rows)
        results = await asyncio.gather(*(delivery for delivery, _ in deliveries), return_exceptions=True)
        for (_, members), result in zip(deliveries, results):
            if isinstance(result, BaseException):
                for index in members:
                    outcomes[index] = result
        return outcomes

    async def _unpublishable(
        self, row: Any, topic: str, key: bytes | None, headers: list[Header], size: int
    ) -> asyncio.Future[Any]:
        """A row the producer can never send (over its size limit) is replaced by a truncated dead letter of
        itself, so one oversized message cannot stop everything behind it."""
        log.error(
            "outbox row %s to %s (%d bytes) is too large to publish; dead-lettering a truncated copy",
            row.id,
            row.topic,
            len(row.payload),
        )
        metrics.OUTBOX_UNPUBLISHABLE.labels(self._settings.service_name, row.topic).inc()
        metrics.DEAD_LETTERS.labels(self._settings.service_name, row.topic, "unpublishable").inc()
        letter = DeadLetter(
            source_topic=row.topic,
            key=key,
            value=row.payload,
            headers=headers,
            reason=f"could not be published: the record is {size} bytes, over the producer's limit ({MAX_REQUEST_BYTES})",
            error_type="unpublishable",
            consumer=self._settings.service_name,
        )
        return await self._producer.send(
            self._settings.topic(dead_letter_topic(row.topic)),
            value=letter.payload(),
            key=key,
            headers=letter.record_headers(),
        )
