"""The runtime every service shares: database, broker, subscribers with inbox and dead letters,
the outbox relay, and the HTTP app with /healthz and /metrics.

A service adds only its tables, its handlers and its routes:

    runtime = ServiceRuntime(settings, tables=[...])
    runtime.subscribe(topics.X, Model.model_validate_json, handlers.do_x)
    runtime.publishes(topics.Y)  # every topic its handlers and routes emit to
    app = runtime.http_app("Kredit x", routers=[api.router])
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import hashlib
import logging
import socket
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

import structlog
import uvicorn
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.errors import IncompatibleBrokerVersion, InvalidPartitionsError, KafkaConnectionError
from aiokafka.helpers import create_ssl_context
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.kafka.security import parse_security
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from sqlalchemy import Table, event
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session
from sqlmodel.ext.asyncio.session import AsyncSession

from kredit_shared import asyncapi, audit, auth, failpoints, inbox, logs, metrics, outbox, retention, telemetry
from kredit_shared.company_setup import CompanySetup, SetupError
from kredit_shared.contracts.messages import ContractMessage, derived_message_id
from kredit_shared.contracts.topics import ALL_TOPICS, dead_letter_topic
from kredit_shared.database import bulk_insert, create_engine, create_session_factory, create_tables, ping, table_of
from kredit_shared.errors import describe_validation_error
from kredit_shared.fetch_pacing import pace_fetches
from kredit_shared.http import install_http_hardening
from kredit_shared.migrations import SHARED_TABLES, Migrations, SchemaError, upgrade
from kredit_shared.settings import ServiceSettings

log = logging.getLogger(__name__)

M = TypeVar("M")
T = TypeVar("T")
S = TypeVar("S", bound=ServiceSettings)


class Rejected(Exception):
    """Bad input: the message goes to its dead-letter topic with this reason; nothing is committed."""


@dataclass
class UnitOfWork:
    """One database transaction: the state change and the messages it emits commit together. (Not called a
    transaction: in this domain that is the customer's invoice, payment or discount.)"""

    session: AsyncSession
    emitted: int = 0
    service: str = ""  # the service's name, for metrics
    # The Kafka records the messages being handled came from (by id of the parsed message), so a
    # dead letter keeps the original bytes, headers and position.
    records: dict[int, ConsumerRecord] = field(default_factory=dict)
    group_id: str = ""
    # The topics the service declared (`ServiceRuntime.publishes`): its AsyncAPI document lists
    # them, so emitting elsewhere is a bug. None: not checked (a test's runtime that declares none).
    publishes: frozenset[str] | None = None
    rejected: list[Rejection] = field(default_factory=list)  # whole messages dead-lettered (`reject`)
    _outbox: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        # Whatever commits the session (the runtime, an HTTP route, a test) writes the queued messages
        # first, in one insert: a whole batch's output costs one statement, not an ORM flush per row.
        event.listen(self.session.sync_session, "before_commit", self._write_outbox)

    def _write_outbox(self, session: Session) -> None:
        if self._outbox:
            now = outbox.utcnow()  # the commit's time, one object for all: bulk_insert converts it once
            for row in self._outbox:
                row["created_at"] = now
            # Runs inside the async commit, so the sync API is the right one here.
            connection = session.connection()
            connection.exec_driver_sql(*bulk_insert(connection.dialect, table_of(outbox.OutboxMessage), self._outbox))
            self._outbox.clear()

    def emit(self, message: ContractMessage) -> None:
        if self.publishes is not None and message.topic not in self.publishes:
            raise RuntimeError(f"{type(message).__name__} goes to {message.topic}, which the service does not declare")
        self._outbox.append(outbox.message_row(message))
        self.emitted += 1

    def dead_letter(self, source_topic: str, message: ContractMessage, reason: str) -> None:
        """Report a rejected part of an otherwise accepted message, atomically with its effect."""
        record = self.records.get(id(message))
        if record is not None:
            letter = _dead_letter_of(record, source_topic, reason, "rejected", self.group_id)
        else:
            letter = outbox.DeadLetter(
                source_topic,
                message.key().encode(),
                message.model_dump_json().encode(),
                [],
                reason,
                "rejected",
                consumer=self.group_id,
            )
        self.emit_dead_letter(letter, message.message_id)

    def reject(self, source_topic: str, message: ContractMessage, reason: str) -> None:
        """Dead-letter a whole message the handler cannot accept, while the rest of its batch commits.
        Unlike a partial `dead_letter`, the message counts as not processed: the runtime releases its
        inbox entry, so a replay of it (`kredit dlq replay`) is processed once its cause is fixed."""
        self.dead_letter(source_topic, message, reason)
        self.rejected.append(Rejection(source_topic, message, self.records.get(id(message)), reason, self._outbox[-1]))

    def on_commit(self, action: Callable[..., object], *args: object) -> None:
        """Run `action(*args)` once the transaction commits (a metric, a log line): a retried batch does not
        count twice, and a rolled-back one not at all."""
        event.listen(self.session.sync_session, "after_commit", lambda _session: action(*args), once=True)

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """A part of the transaction that may fail alone: if the block raises, what it wrote and queued (messages,
        dead letters, rejections) is undone, and the exception goes on."""
        queued, rejected, emitted = list(self._outbox), list(self.rejected), self.emitted
        try:
            async with self.session.begin_nested():
                yield
        except BaseException:
            self._outbox, self.rejected, self.emitted = queued, rejected, emitted
            raise

    def emit_dead_letter(self, letter: outbox.DeadLetter, message_id: str) -> None:
        self._outbox.append(outbox.dead_letter_row(letter, message_id))
        self.emitted += 1

    def withdraw(self, row: dict[str, Any]) -> None:
        """Take back a queued message (a dead letter already written for the same record)."""
        self._outbox = [queued for queued in self._outbox if queued is not row]
        self.emitted -= 1


@dataclass(frozen=True)
class Rejection:
    # The message's topic: not the batch's when a handler handles another topic's messages again
    # (exchange_rates.book_waiting books kept invoices in a batch of rates).
    topic: str
    message: ContractMessage
    record: ConsumerRecord | None
    reason: str
    row: dict[str, Any]  # its dead letter in the transaction's outbox


def _dead_letter_position(topic: str, record: ConsumerRecord) -> str:
    """The inbox key recording that a record was dead-lettered: a redelivery is not dead-lettered twice."""
    digest = hashlib.sha256(record.value or b"").hexdigest()[:16]
    return f"dlq:{topic}:{record.partition}:{record.offset}:{digest}"


def _dead_letter_of(
    record: ConsumerRecord, topic: str, reason: str, error_type: str, consumer: str
) -> outbox.DeadLetter:
    return outbox.DeadLetter(
        source_topic=topic,
        key=record.key,
        value=record.value,
        headers=list(record.headers or ()),
        reason=reason,
        error_type=error_type,
        partition=record.partition,
        offset=record.offset,
        consumer=consumer,
    )


@dataclass(frozen=True)
class _Subscription:
    topic: str
    parse: Callable[[bytes], Any]
    handle: Callable[[UnitOfWork, Any], Awaitable[None]] | None = None
    handle_batch: Callable[[UnitOfWork, list[Any]], Awaitable[None]] | None = None
    skip_own: bool = False  # records this service published itself are passed over (subscribe_batch)

    async def run(self, uow: UnitOfWork, messages: list[Any]) -> None:
        if self.handle_batch is not None:
            await self.handle_batch(uow, messages)
        else:
            for message in messages:
                await self.handle(uow, message)  # type: ignore[misc]


# SQLSTATEs that heal by themselves: serialization failure, deadlock, lock not available, the server
# shutting down or refusing connections (class 08 is added below: connection exceptions).
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "53300"})


def is_transient(error: BaseException) -> bool:
    """Worth retrying without limit because the message is not at fault: a lost connection, a busy or
    locked database, a serialization failure or deadlock. A data error (overflow, invalid text), a
    constraint violation or a bug is not: it is retried a few times (a racing replica's row is seen
    on the next try) and then dead-lettered."""
    if isinstance(error, DBAPIError):
        if error.connection_invalidated:
            return True
        sqlstate = getattr(error.orig, "sqlstate", None)
        if sqlstate:
            return sqlstate in _TRANSIENT_SQLSTATES or sqlstate.startswith("08")
        # SQLAlchemy always sets `orig` on a DBAPIError: the driver's exception it wraps.
        if isinstance(error, InterfaceError) or isinstance(error.orig.__cause__ or error.orig, OSError):  # type: ignore[union-attr]
            return True  # the connection itself failed
        # SQLite (no SQLSTATE): only a busy/locked database or a file it cannot open heals.
        text = str(error.orig).lower()
        return isinstance(error, OperationalError) and any(
            s in text for s in ("database is locked", "database is busy", "unable to open", "disk i/o error")
        )
    if isinstance(error, (ConnectionError, TimeoutError, KafkaConnectionError, PoolTimeout)):
        return True  # PoolTimeout: every pooled connection busy for pool_timeout; load, not the message
    return isinstance(error, OSError) and not isinstance(error, (FileNotFoundError, PermissionError))


class _NotDone(Exception):
    """A permanent failure, after its retries: the record goes to its dead-letter topic."""


def _describe_parse_error(error: Exception) -> str:
    if isinstance(error, ValidationError):
        return describe_validation_error(error)
    if isinstance(error, RecursionError):
        return "the JSON is nested too deeply"
    if isinstance(error, UnicodeDecodeError):
        return f"the body is not UTF-8 ({error.reason} at byte {error.start})"
    return str(error) or type(error).__name__


async def _lenient_records(records: tuple[ConsumerRecord, ...], original: Callable[..., Awaitable[Any]]) -> Any:
    """FastStream's batch parser decodes every record's headers as UTF-8 (one binary or null header would
    fail the whole fetch before our code runs) and collects every value into the message's body. The runtime
    uses neither: it reads the original records (`raw_message`) and decodes each one itself. So the parser
    gets header-less copies of the first and last record only (they name the fetch in FastStream's logs),
    and a fetch of 500 records costs it what a fetch of two does."""
    ends = records if len(records) < 2 else (records[0], records[-1])
    message = await original(tuple(dataclasses.replace(r, headers=()) for r in ends))
    message.raw_message = records
    return message


def _no_decoding(message: Any) -> None:
    """The handler takes the raw records; nothing is decoded by content type here (see _parse)."""
    return None


class ServiceRuntime:
    def __init__(
        self, settings: ServiceSettings, tables: Sequence[Table], migrations: Migrations | None = None
    ) -> None:
        """`migrations`: the service's schema history, applied at start (`upgrade head`). Without one
        (test-only runtimes) the tables are created as they are."""
        self.settings = settings
        self.engine = create_engine(settings.database_url, settings.database_ssl_mode, settings.database_ssl_root_cert)
        self.sessions = create_session_factory(self.engine)
        # Probes get their own connections and are never cancelled mid-query: a cancelled asyncpg
        # query can leave its connection unusable, and in the shared pool it once stalled the
        # consumer for good (found by the chaos run on PostgreSQL under load).
        self._probe_engine = create_engine(
            settings.database_url, settings.database_ssl_mode, settings.database_ssl_root_cert, pooled=False
        )
        self._database_probe: asyncio.Task[None] | None = None
        self.tables = [*tables, *SHARED_TABLES]
        self.migrations = migrations
        # Per-message "Received/Processed" logs go to DEBUG; outcomes are in /metrics.
        self.broker = KafkaBroker(
            settings.kafka_bootstrap_servers,
            security=kafka_security(settings),
            log_level=logging.DEBUG,
            graceful_timeout=10,
            logger=logging.getLogger("faststream.access.kafka"),  # a plain logger: the process's one format
        )
        self.producer: AIOKafkaProducer | None = None
        self.relay: outbox.OutboxRelay | None = None
        # SQLite has one writer at a time, and its busy handler retries with sleeps of up to 100 ms: a consumer
        # that begins its next batch as it commits the last one left the relay waiting to mark what it had sent
        # until the consumer ran out of work, so the services downstream waited too (a timeline of `make bench`
        # showed the relay up to 0.7 s behind). The consumer's transactions and the relay's marking take turns.
        self._write_turn: AbstractAsyncContextManager[Any] = (
            asyncio.Lock() if self.engine.dialect.name == "sqlite" else nullcontext()
        )
        self._relay_task: asyncio.Task[None] | None = None
        self._retention_task: asyncio.Task[None] | None = None
        self._subscriptions: dict[str, _Subscription] = {}
        self.publications: list[str] = []  # contract topics the service emits to (see `publishes`)
        self.retrying_since: float | None = None  # monotonic time the current message's retries began
        self._lag_labels: set[tuple[str, str, str]] = set()
        self.prepared_before_start = False

    # --- transactions -------------------------------------------------------------------------

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[UnitOfWork]:
        async with self.sessions() as session, session.begin():
            declared = frozenset(self.publications) or None
            uow = UnitOfWork(
                session, group_id=self.settings.group_id, publishes=declared, service=self.settings.service_name
            )
            yield uow
        if uow.emitted and self.relay is not None:
            self.relay.wake()

    # --- consuming ----------------------------------------------------------------------------

    def subscribe(
        self,
        topic: str,
        parse: Callable[[bytes], M],
        handle: Callable[[UnitOfWork, M], Awaitable[None]],
    ) -> None:
        """Consume `topic`: parse, skip duplicates (inbox), handle each message in its own transaction,
        then commit the offsets. Unparseable messages and those the handler rejects (`Rejected`) go
        to `<topic>.dlq` and the consumer moves on."""
        self._subscriptions[self.settings.topic(topic)] = _Subscription(topic, parse, handle=handle)

    def subscribe_batch(
        self,
        topic: str,
        parse: Callable[[bytes], M],
        handle_batch: Callable[[UnitOfWork, list[M]], Awaitable[None]],
        skip_own: bool = False,
    ) -> None:
        """For a hot topic: the handler gets the new messages of a whole fetch at once (in fetch order, so
        each key's messages in order), in one transaction, after one inbox lookup for them all. It
        reports bad ones with `uow.dead_letter` so they do not hold back the rest. A transient failure
        retries the batch; any other failure retries its messages one by one (see _consume_batch).

        `skip_own`: the records the service published itself (its `kredit-producer` header) are passed over
        unread, for a topic where handling them could only find what the service already holds."""
        self._subscriptions[self.settings.topic(topic)] = _Subscription(
            topic, parse, handle_batch=handle_batch, skip_own=skip_own
        )

    def handler_of(
        self, topic: str
    ) -> tuple[Callable[[bytes], Any], Callable[[UnitOfWork, list[Any]], Awaitable[None]]]:
        """How the service parses and handles `topic`'s messages: to handle kept ones again inside another
        transaction (exchange_rates.book_waiting); the caller claims them in the inbox."""
        subscription = self._subscriptions[self.settings.topic(topic)]
        return subscription.parse, subscription.run

    def publishes(self, *topics: str) -> None:
        """Declare the contract topics the service's handlers and routes emit to (its AsyncAPI document)."""
        self.publications.extend(t for t in topics if t not in self.publications)

    def asyncapi(self) -> dict[str, Any]:
        """The service's AsyncAPI document, from its subscriptions and declared publications."""
        consumes = [s.topic for s in self._subscriptions.values()]
        return asyncapi.document(self.settings.service_name, consumes, self.publications)

    def _register_consumer(self) -> None:
        """One consumer for all of the service's topics: one group join at start-up instead of one
        per topic (each join costs about half the session timeout). It fetches in batches."""
        if not self._subscriptions:
            return
        settings = self.settings

        @self.broker.subscriber(
            *self._subscriptions,
            batch=True,
            max_records=settings.consumer_batch_size,
            batch_timeout_ms=settings.kafka_fetch_max_wait_ms,
            group_id=settings.group_id,
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.MANUAL,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            parser=_lenient_records,
            decoder=_no_decoding,
            title=f"{settings.service_name}-consumer",
            include_in_schema=False,  # raw records: the contract is declared in kredit_shared.asyncapi
        )
        async def consume(message: KafkaMessage) -> None:
            try:
                await self._consume_fetch(message.raw_message)
            except BaseException:
                # Nothing of this fetch may be committed past: rewind to its first record of each
                # partition (what was done is in the inbox, so the replay skips it) and let it fail.
                await message.nack()
                raise
            await message.ack()  # offsets only after every message's effect is committed

    async def _consume_fetch(self, records: Sequence[ConsumerRecord]) -> None:
        by_topic: dict[str, list[ConsumerRecord]] = defaultdict(list)
        for record in records:  # per topic, in fetch order: per-partition order is kept
            by_topic[record.topic].append(record)
        name = self.settings.service_name
        for topic, topic_records in by_topic.items():
            subscription = self._subscriptions[topic]
            if subscription.skip_own:
                topic_records = self._without_own(subscription, topic_records)
            if subscription.handle_batch is not None and len(topic_records) > 1:
                with telemetry.consuming(name, subscription.topic, topic_records):
                    await self._consume_batch(subscription, topic_records)
            else:
                for record in topic_records:
                    with telemetry.consuming(name, subscription.topic, [record]):
                        await self._consume_one(subscription, record)

    def _without_own(self, sub: _Subscription, records: list[ConsumerRecord]) -> list[ConsumerRecord]:
        own = self.settings.service_name.encode()
        others = [r for r in records if outbox.producer_of(r.headers) != own]
        if skipped := len(records) - len(others):
            metrics.MESSAGES_CONSUMED.labels(self.settings.service_name, sub.topic, "own").inc(skipped)
        return others

    async def _consume_one(self, sub: _Subscription, record: ConsumerRecord, parsed: Any | None = None) -> None:
        name = self.settings.service_name
        started = time.perf_counter()
        if parsed is None and (parsed := await self._parse(sub, record)) is None:
            return
        try:
            fresh = await self._retrying(lambda: self._handle(sub, [(record, parsed)]), sub.topic, record)
        except Rejected as e:
            await self._dead_letter(sub.topic, record, str(e), "rejected")
            return
        except _NotDone as e:
            await self._dead_letter(sub.topic, record, f"unexpected error: {e.__cause__!r}", "unexpected")
            return
        failpoints.hit(self.settings, "consumer-after-commit")
        metrics.MESSAGES_CONSUMED.labels(name, sub.topic, "processed" if fresh else "duplicate").inc()
        metrics.HANDLER_SECONDS.labels(name, sub.topic).observe(time.perf_counter() - started)

    async def _consume_batch(self, sub: _Subscription, records: list[ConsumerRecord]) -> None:
        """The new messages of a fetch in one transaction. A transient failure retries the batch; any other
        failure (a bug one message triggers, a `Rejected` the handler raised, a racing replica's commit)
        sends the batch through one by one, which finds the message at fault and dead-letters it alone."""
        name = self.settings.service_name
        started = time.perf_counter()
        parsed = [(record, message) for record in records if (message := await self._parse(sub, record)) is not None]
        if not parsed:
            return
        try:
            fresh = await self._retrying(lambda: self._handle(sub, parsed), sub.topic, parsed[0][0], max_attempts=1)
        except (Rejected, _NotDone) as e:
            log.warning(
                "%s: a batch of %d from %s failed (%r); processing it one by one",
                name,
                len(parsed),
                sub.topic,
                e.__cause__ or e,
            )
            for record, message in parsed:
                await self._consume_one(sub, record, message)
            return
        failpoints.hit(self.settings, "consumer-after-commit")
        metrics.MESSAGES_CONSUMED.labels(name, sub.topic, "processed").inc(fresh)
        metrics.MESSAGES_CONSUMED.labels(name, sub.topic, "duplicate").inc(len(parsed) - fresh)
        metrics.HANDLER_SECONDS.labels(name, sub.topic).observe(time.perf_counter() - started)

    async def _retrying(
        self,
        attempt: Callable[[], Awaitable[T]],
        topic: str,
        record: ConsumerRecord,
        max_attempts: int | None = None,
    ) -> T:
        """Run `attempt` until it succeeds. Transient failures (see is_transient) are retried without
        limit, with backoff, while /readyz reports the consumer as stuck; any other failure is retried
        `max_attempts` times (default `consumer_max_attempts`) and then raised as _NotDone. `Rejected`
        passes straight through."""
        name = self.settings.service_name
        max_attempts = max_attempts or self.settings.consumer_max_attempts
        failures = 0
        try:
            while True:
                try:
                    return await attempt()
                except Rejected:
                    raise
                except Exception as e:
                    transient = is_transient(e)
                    failures += 1
                    if not transient and failures >= max_attempts:
                        if max_attempts > 1:
                            log.exception("%s: giving up on %s@%s:%s", name, topic, record.partition, record.offset)
                        raise _NotDone() from e
                    if self.retrying_since is None:
                        self.retrying_since = time.monotonic()
                    metrics.CONSUMER_RETRYING_SECONDS.labels(name).set(time.monotonic() - self.retrying_since)
                    log.warning(
                        "%s: retrying %s@%s:%s (%s, attempt %d) after %r",
                        name,
                        topic,
                        record.partition,
                        record.offset,
                        "transient" if transient else "error",
                        failures,
                        e,
                    )
                    metrics.MESSAGES_CONSUMED.labels(name, topic, "retried").inc()
                    await asyncio.sleep(min(0.1 * 2**failures, 5.0))
        finally:
            self.retrying_since = None
            metrics.CONSUMER_RETRYING_SECONDS.labels(name).set(0)

    async def _parse(self, sub: _Subscription, record: ConsumerRecord) -> Any | None:
        """The parsed message, or None once an unparseable one is dead-lettered. Any failure to turn the
        bytes into a contract message (encoding, JSON, depth, number range, validation) is the record's
        own fault, so it alone is dead-lettered and the rest of the fetch goes on."""
        try:
            if record.value is None:
                raise ValueError("the record has no value (a tombstone)")
            message = sub.parse(record.value)
            telemetry.note_message(message)
            return message
        except Exception as e:  # see above: nothing may escape with the fetch behind it
            await self._dead_letter(sub.topic, record, f"invalid message: {_describe_parse_error(e)}", "invalid")
            return None

    async def _handle(self, sub: _Subscription, parsed: Sequence[tuple[ConsumerRecord, Any]]) -> int:
        """Handle the messages not seen before in one transaction; returns how many were new."""
        async with self._write_turn, self.unit_of_work() as uow:
            uow.records = {id(message): record for record, message in parsed}
            claimed = await inbox.claim(uow.session, self.settings.group_id, sub.topic, [m for _, m in parsed])
            for message in claimed.reused:
                uow.dead_letter(
                    sub.topic,
                    message,
                    f"message_id {message.message_id} was already processed with "
                    f"different content; a message_id cannot be reused",
                )
            if claimed.fresh:
                await sub.run(uow, claimed.fresh)
            # Not processed, also when redelivered (then _release drops them); a handler may reject messages of
            # another topic it handled again (those were claimed by it, not counted here).
            rejected = sum(r.topic == sub.topic for r in uow.rejected)
            if uow.rejected:
                await self._release(uow)
        for rejection in uow.rejected:
            self._log_rejection(rejection)
        return len(claimed.fresh) - rejected

    async def _release(self, uow: UnitOfWork) -> None:
        """The messages the handler rejected whole are not processed: their inbox entries go, so a replay
        is handled. Their records' positions are kept instead, so a redelivery after a crash is not
        dead-lettered twice."""
        await inbox.release(uow.session, self.settings.group_id, [r.message.message_id for r in uow.rejected])
        for rejection in list(uow.rejected):
            if rejection.record is None:
                continue
            position = _dead_letter_position(rejection.topic, rejection.record)
            if not await inbox.claim_key(uow.session, self.settings.group_id, rejection.topic, position):
                uow.withdraw(rejection.row)
                uow.rejected.remove(rejection)

    def _log_rejection(self, rejection: Rejection) -> None:
        topic, record, message = rejection.topic, rejection.record, rejection.message
        context = {"message_id": message.message_id}
        if isinstance(customer := getattr(message, "customer_account", None), str):
            context["customer_account"] = customer
        if record is not None:
            context |= {"partition": record.partition, "offset": record.offset}
        with structlog.contextvars.bound_contextvars(**context):
            position = f"{record.partition}:{record.offset}" if record is not None else "-"
            log.warning("%s: dead-lettering %s@%s: %s", self.settings.service_name, topic, position, rejection.reason)
        metrics.MESSAGES_CONSUMED.labels(self.settings.service_name, topic, "dead_lettered").inc()

    async def _dead_letter(self, topic: str, record: ConsumerRecord, reason: str, error_type: str) -> None:
        """Queue the original bytes and headers for `<topic>.dlq` (through the outbox), naming the error.
        A record dead-lettered before (redelivered after a crash before the offset commit) is not
        dead-lettered twice: its position and content are recorded in the inbox with the letter."""
        log.warning(
            "%s: dead-lettering %s@%s:%s: %s",
            self.settings.service_name,
            topic,
            record.partition,
            record.offset,
            reason,
        )
        letter = _dead_letter_of(record, topic, reason, error_type, self.settings.group_id)
        position = _dead_letter_position(topic, record)

        async def write() -> None:
            async with self.unit_of_work() as uow:
                if await inbox.claim_key(uow.session, self.settings.group_id, topic, position):
                    uow.emit_dead_letter(letter, derived_message_id(uuid.NAMESPACE_URL, position))

        try:
            await self._retrying(write, topic, record)
        except _NotDone:
            raise RuntimeError(f"cannot record the dead letter of {topic}@{record.partition}:{record.offset}") from None
        metrics.MESSAGES_CONSUMED.labels(self.settings.service_name, topic, "dead_lettered").inc()

    # --- lifecycle ----------------------------------------------------------------------------

    async def prepare(self) -> None:
        """What must be in place before anything is consumed: the topics and the schema."""
        await ensure_topics(self.settings)
        if self.migrations is not None:
            await upgrade(self.engine, self.migrations)
        else:
            await create_tables(self.engine, self.tables)

    async def start(self) -> None:
        if self.prepared_before_start:  # by run_service, just before serving
            self.prepared_before_start = False
        else:
            await self.prepare()
        self.producer = AIOKafkaProducer(
            # Larger batches per partition than the default 16 KiB: the relay sends thousands of rows at once.
            **kafka_options(self.settings),
            acks="all",
            linger_ms=2,
            max_batch_size=256 * 1024,
            max_request_size=outbox.MAX_REQUEST_BYTES,
        )
        await self.producer.start()
        self.relay = outbox.OutboxRelay(self.settings, self.sessions, self.producer, self._write_turn)
        if self.settings.outbox_relay_enabled:
            self._relay_task = asyncio.create_task(self.relay.run_forever(), name="outbox-relay")
        if self.settings.retention_days > 0:
            self._retention_task = asyncio.create_task(
                retention.run_forever(self.settings, self.sessions), name="retention"
            )
        self._register_consumer()
        await self.broker.start()
        for consumer in self._consumers():
            pace_fetches(consumer, self.settings.kafka_fetch_max_wait_ms, self.settings.kafka_fetch_idle_wait_ms)

    async def stop(self) -> None:
        await self.broker.stop()
        for task in (self._relay_task, self._retention_task):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        if self.producer is not None:
            await self.producer.stop()
        await self.engine.dispose()
        await self._probe_engine.dispose()

    async def health(self) -> dict[str, str]:
        checks: dict[str, str] = {}
        if self._database_probe is None or self._database_probe.done():
            self._database_probe = asyncio.create_task(ping(self._probe_engine), name="database-probe")
            self._database_probe.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved
        try:  # a probe that outlasts the timeout goes on in the background; the next call waits for it
            await asyncio.wait_for(asyncio.shield(self._database_probe), 2)
            checks["database"] = "ok"
        except Exception as e:  # any failure means unhealthy
            log.warning("%s: database unreachable: %r", self.settings.service_name, e)
            checks["database"] = "unreachable"
        checks["broker"] = "ok" if await self.broker.ping(timeout=2) else "unreachable"
        return checks

    def _consumers(self) -> list[AIOKafkaConsumer]:
        """The broker's started consumers (the service's one, see _register_consumer)."""
        consumers = (getattr(subscriber, "consumer", None) for subscriber in self.broker.subscribers)
        return [consumer for consumer in consumers if consumer is not None]

    async def report_lag(self) -> None:
        """Set kredit_consumer_lag for the partitions assigned to this process now (others are removed)."""
        name = self.settings.service_name
        current: set[tuple[str, str, str]] = set()
        for consumer in self._consumers():
            for tp in consumer.assignment():
                highwater = consumer.highwater(tp)
                if highwater is None:  # nothing fetched from it yet
                    continue
                try:
                    position = await asyncio.wait_for(consumer.position(tp), 1)
                except Exception:  # a rebalance in progress: report it next scrape
                    continue
                labels = (name, self.settings.logical_topic(tp.topic), str(tp.partition))
                metrics.CONSUMER_LAG.labels(*labels).set(max(highwater - position, 0))
                current.add(labels)
        for labels in self._lag_labels - current:
            metrics.CONSUMER_LAG.remove(*labels)
        self._lag_labels = current

    def readiness(self) -> dict[str, str]:
        """What /readyz adds to /healthz: the consumer is not stuck on one message, the relay publishes."""
        limit = self.settings.stuck_after_seconds
        now = time.monotonic()
        checks = {"consumer": "ok", "outbox_relay": "ok"}
        if self.retrying_since is not None and now - self.retrying_since > limit:
            checks["consumer"] = f"retrying one message for {now - self.retrying_since:.0f} s"
        if self.relay is not None and self.relay.failing_since is not None and now - self.relay.failing_since > limit:
            checks["outbox_relay"] = f"failing for {now - self.relay.failing_since:.0f} s"
        return checks

    def http_app(self, title: str, routers: Sequence[APIRouter] = ()) -> FastAPI:
        """The service's FastAPI app: probes, metrics, the audit trail, and `routers`. Raises
        AuthConfigError when tokens cannot be verified; refuses to start while a route has no access rule."""

        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            auth.check_rules(app)
            await self.start()
            try:
                yield
            finally:
                await self.stop()

        app = FastAPI(title=title, lifespan=lifespan)
        app.state.runtime = self
        app.state.auth = auth.TokenVerifier(self.settings)
        app.state.rate_limiter = auth.RateLimiter.from_settings(self.settings)
        app.add_middleware(audit.AuditTrail)
        if self.settings.cors_origins:  # none by default: only the service's own pages call it
            # Bearer tokens in a header, no cookies: a configured origin's page sends its own token.
            app.add_middleware(
                CORSMiddleware,
                allow_origins=self.settings.cors_origins,
                allow_methods=["GET", "POST", "PUT"],
                allow_headers=["Authorization", "Content-Type"],
                expose_headers=["Retry-After"],
            )

        @app.get("/livez", tags=["operations"], dependencies=[auth.PUBLIC])
        async def livez() -> JSONResponse:
            """200 while the process serves requests: liveness checks nothing outside it, so an outage of the
            broker or the database never restarts the pods (they wait; /readyz tells)."""
            return JSONResponse({"status": "ok"})

        @app.get("/healthz", tags=["operations"], dependencies=[auth.PUBLIC])
        async def healthz() -> JSONResponse:
            """200 while the database and the broker answer."""
            checks = await self.health()
            healthy = all(v == "ok" for v in checks.values())
            return JSONResponse(
                {"status": "ok" if healthy else "unavailable", "checks": checks}, 200 if healthy else 503
            )

        @app.get("/readyz", tags=["operations"], dependencies=[auth.PUBLIC])
        async def readyz() -> JSONResponse:
            """503 while a consumer has been stuck on one message, or the outbox relay failing, for longer
            than `STUCK_AFTER_SECONDS`, or while /healthz fails."""
            checks = await self.health() | self.readiness()
            ready = all(v == "ok" for v in checks.values())
            return JSONResponse({"status": "ok" if ready else "unavailable", "checks": checks}, 200 if ready else 503)

        @app.get("/metrics", tags=["operations"], dependencies=[auth.PUBLIC])
        async def prometheus_metrics() -> Response:
            await self.report_lag()
            return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

        # The contract's document, public like /docs and /openapi.json.
        app.include_router(asyncapi.router(self.asyncapi), dependencies=[auth.PUBLIC])
        install_http_hardening(app, self.settings.http_max_body_bytes)
        app.add_middleware(telemetry.HttpTelemetry, service=self.settings.service_name)  # outermost: sees every answer
        for router in [*routers, audit.router]:
            app.include_router(router)
        return app


def _runtime_of(request: Request) -> ServiceRuntime:
    return request.app.state.runtime


async def _session_of(request: Request) -> AsyncIterator[AsyncSession]:
    async with _runtime_of(request).sessions() as session:
        yield session


def _setup_of(request: Request) -> CompanySetup:
    """The company setup a service's `create_app` keeps on `app.state.setup`."""
    setup: CompanySetup = request.app.state.setup
    return setup


# FastAPI dependencies for a service's routes (the app comes from `ServiceRuntime.http_app`).
RuntimeDep = Annotated[ServiceRuntime, Depends(_runtime_of)]
SessionDep = Annotated[AsyncSession, Depends(_session_of)]
SetupDep = Annotated[CompanySetup, Depends(_setup_of)]


async def ensure_topics(settings: ServiceSettings) -> None:
    """Create every contract topic and its dead-letter topic if missing (memory brokers forget them)."""
    names = [settings.topic(t) for topic in ALL_TOPICS for t in (topic, dead_letter_topic(topic))]
    if not settings.kafka_create_topics:
        # The operator made them (with ACLs a service sees only the topics it may use, so it cannot
        # even check the others); a missing one shows as a consumer or relay error naming it.
        return
    admin = AIOKafkaAdminClient(**kafka_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(n, settings.topic_partitions, 1) for n in names if n not in existing]
        if missing:
            response = await admin.create_topics(missing)
            for topic, code, message in getattr(response, "topic_errors", []):
                if code not in (0, 36):  # 36: created meanwhile by another service
                    raise RuntimeError(f"cannot create topic {topic}: {message}")
        await _raise_partitions(admin, settings, [n for n in names if n in existing])
    finally:
        await admin.close()


class TopicError(Exception):
    """The topics cannot be made what the settings ask for; the message says why and what to do."""


async def _raise_partitions(admin: AIOKafkaAdminClient, settings: ServiceSettings, names: list[str]) -> None:
    """Give existing topics TOPIC_PARTITIONS partitions when they have fewer (never fewer: Kafka cannot
    remove partitions, and a topic with more is left alone)."""
    if not names:
        return
    wanted = settings.topic_partitions
    counts = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(names)}
    short = {name: count for name, count in counts.items() if count < wanted}
    if not short:
        return
    try:
        await admin.create_partitions({name: NewPartitions(total_count=wanted) for name in short})
    except InvalidPartitionsError:
        # Another replica raised them first (a request for the count a topic has is refused), or not.
        counts = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(list(short))}
        if still_short := sorted(name for name, count in counts.items() if count < wanted):
            raise TopicError(f"{settings.service_name}: cannot add partitions to {', '.join(still_short)}") from None
    except IncompatibleBrokerVersion:
        raise TopicError(
            f"{settings.service_name}: TOPIC_PARTITIONS={wanted}, but {len(short)} topics have fewer "
            f"(e.g. {next(iter(short))}: {next(iter(short.values()))}) and the broker at "
            f"{settings.kafka_bootstrap_servers} cannot add partitions (it does not offer CreatePartitions; "
            f"Tansu 0.6 does not). Set TOPIC_PARTITIONS to the topics' count, or recreate the topics "
            f"(the local broker forgets them when it restarts)."
        ) from None
    # A key's partition is its hash modulo the count: from now on some keys land elsewhere, so records of
    # one key published before and after may be consumed out of order until the older ones are consumed.
    log.warning(
        "%s: raised %d topics to %d partitions (%s); a key's records published before and after may be "
        "consumed out of order until the older ones are consumed: raise partitions while producers are quiet",
        settings.service_name,
        len(short),
        wanted,
        ", ".join(f"{name} from {count}" for name, count in sorted(short.items())),
    )


def kafka_security(settings: ServiceSettings) -> BaseSecurity | None:
    """The broker credentials of the settings, as FastStream takes them (aiokafka's via kafka_options)."""
    protocol = settings.kafka_security_protocol
    context = None
    if protocol in ("SSL", "SASL_SSL"):
        context = create_ssl_context(
            cafile=settings.kafka_ssl_cafile, certfile=settings.kafka_ssl_certfile, keyfile=settings.kafka_ssl_keyfile
        )
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return BaseSecurity(ssl_context=context, use_ssl=True)
    sasl = {"SCRAM-SHA-512": SASLScram512, "SCRAM-SHA-256": SASLScram256, "PLAIN": SASLPlaintext}
    password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
    return sasl[settings.kafka_sasl_mechanism](
        settings.kafka_sasl_username or "", password, ssl_context=context, use_ssl=protocol == "SASL_SSL"
    )


def kafka_options(settings: ServiceSettings) -> dict[str, Any]:
    """Keyword arguments for an aiokafka client: the bootstrap servers and the same credentials."""
    return {"bootstrap_servers": settings.kafka_bootstrap_servers, **parse_security(kafka_security(settings))}


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


# The collector's thresholds for a service: a fetch of 500 messages makes hundreds of thousands of objects, nearly
# all freed by reference counting; with the default (700, 10, 10) the collector ran hundreds of times a fetch
# and kept walking what lives on, ~20 % of settlement's CPU per payment in-process. Young collections still come
# every 20,000 allocations, so cyclic garbage stays bounded (RSS under sustained load: docs/operations.md).
GC_THRESHOLDS = (20_000, 20, 20)


def run_service(create_app: Callable[[S], FastAPI], settings_class: type[S]) -> None:
    """Entry point of `python -m kredit_<service>`: serve the app until SIGINT/SIGTERM. Invalid
    settings, an invalid company setup or a taken port end it with a message, not a traceback."""
    try:
        settings = settings_class()
    except ValidationError as e:
        sys.exit(f"{settings_class.__name__}: invalid settings: {describe_validation_error(e, whole='settings')}")
    logs.configure_logging(settings.log_level, settings.log_format)
    telemetry.configure_tracing(settings.service_name, settings.otel_exporter_otlp_endpoint)
    if not port_is_free(settings.http_host, settings.http_port):
        sys.exit(
            f"{settings.service_name}: port {settings.http_host}:{settings.http_port} is already in use "
            f"(set HTTP_PORT to another port)"
        )
    try:
        app = create_app(settings)
    except (SetupError, auth.AuthConfigError) as e:
        sys.exit(f"{settings.service_name}: {e}" if isinstance(e, auth.AuthConfigError) else str(e))
    if problem := _prepare(app.state.runtime):
        sys.exit(problem)
    # What start-up made (modules, schemas, the app) lives as long as the process: out of the collector's
    # sight, a full collection no longer walks it (~0.1 s of CPU each time under load).
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    # log_config=None: uvicorn's loggers keep the format configured above.
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_config=None)


def _prepare(runtime: ServiceRuntime) -> str | None:
    """Topics and schema before serving, so a newer schema or an unreachable broker or database ends the
    process with one clear line (inside uvicorn's lifespan it would be a traceback)."""

    async def prepare() -> None:
        try:
            await runtime.prepare()
        finally:
            await runtime.engine.dispose()  # its connections belong to this event loop

    try:
        asyncio.run(prepare())
        runtime.prepared_before_start = True
    except (SchemaError, TopicError) as e:
        return str(e)
    except KafkaConnectionError:
        return (
            f"{runtime.settings.service_name}: cannot reach the Kafka broker at "
            f"{runtime.settings.kafka_bootstrap_servers} (KAFKA_BOOTSTRAP_SERVERS)"
        )
    except (OSError, DBAPIError) as e:
        return f"{runtime.settings.service_name}: cannot open the database: {getattr(e, 'orig', None) or e}"
    return None
