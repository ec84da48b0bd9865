"""The runtime every service shares: database, broker, subscribers with inbox and dead letters,
the outbox relay, and the HTTP app with /healthz and /metrics.

A service adds only its tables, its handlers and its routes:

    runtime = ServiceRuntime(settings, tables=[...])
    runtime.subscribe(topics.X, Model.model_validate_json, handlers.do_x)
    app = runtime.http_app("Kredit x", routers=[api.router])
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import uvicorn
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from sqlalchemy import Table
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlmodel.ext.asyncio.session import AsyncSession

from kredit_shared import failpoints, inbox, metrics, outbox
from kredit_shared.company_setup import SetupError
from kredit_shared.contracts.messages import ContractMessage
from kredit_shared.contracts.topics import ALL_TOPICS, dead_letter_topic
from kredit_shared.database import create_engine, create_session_factory, create_tables, ping
from kredit_shared.errors import describe_validation_error
from kredit_shared.http import install_http_hardening
from kredit_shared.settings import ServiceSettings

log = logging.getLogger(__name__)

M = TypeVar("M")
S = TypeVar("S", bound=ServiceSettings)


class Rejected(Exception):
    """Bad input: the message goes to its dead-letter topic with this reason; nothing is committed."""


@dataclass
class Transaction:
    """One database transaction: the state change and the messages it emits commit together."""

    session: AsyncSession
    emitted: int = 0

    def emit(self, message: ContractMessage) -> None:
        outbox.add_message(self.session, message)
        self.emitted += 1

    def dead_letter(self, source_topic: str, message: ContractMessage, reason: str) -> None:
        """Report a rejected part of an otherwise accepted message, atomically with its effect."""
        outbox.add_dead_letter(self.session, source_topic, message, reason)
        self.emitted += 1


@dataclass(frozen=True)
class _Subscription:
    topic: str
    parse: Callable[[bytes], Any]
    handle: Callable[[Transaction, Any], Awaitable[None]] | None = None
    handle_batch: Callable[[Transaction, list[Any]], Awaitable[None]] | None = None

    async def run(self, tx: Transaction, messages: list[Any]) -> None:
        if self.handle_batch is not None:
            await self.handle_batch(tx, messages)
        else:
            for message in messages:
                await self.handle(tx, message)


def _is_transient(error: Exception) -> bool:
    """A lost connection or a lock timeout heals by itself; a constraint violation that survives its
    retries (a racing replica's row is seen on the first) is a bug to dead-letter."""
    return isinstance(error, (OperationalError, OSError)) or (
        isinstance(error, DBAPIError) and not isinstance(error, IntegrityError)
    )


class ServiceRuntime:
    def __init__(self, settings: ServiceSettings, tables: Sequence[Table]) -> None:
        self.settings = settings
        self.engine = create_engine(settings.database_url)
        self.sessions = create_session_factory(self.engine)
        self.tables = [*tables, outbox.OutboxMessage.__table__, inbox.ProcessedMessage.__table__]
        # Per-message "Received/Processed" logs go to DEBUG; outcomes are in /metrics.
        self.broker = KafkaBroker(settings.kafka_bootstrap_servers, log_level=logging.DEBUG, graceful_timeout=10)
        self.producer: AIOKafkaProducer | None = None
        self.relay: outbox.OutboxRelay | None = None
        self._relay_task: asyncio.Task[None] | None = None
        self._subscriptions: dict[str, _Subscription] = {}

    # --- transactions -------------------------------------------------------------------------

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self.sessions() as session, session.begin():
            tx = Transaction(session)
            yield tx
        if tx.emitted and self.relay is not None:
            self.relay.wake()

    # --- consuming ----------------------------------------------------------------------------

    def subscribe(
        self,
        topic: str,
        parse: Callable[[bytes], M],
        handle: Callable[[Transaction, M], Awaitable[None]],
    ) -> None:
        """Consume `topic`: parse, skip duplicates (inbox), handle each message in its own transaction,
        then commit the offsets. Unparseable messages and those the handler rejects (`Rejected`) go
        to `<topic>.dlq` and the consumer moves on."""
        self._subscriptions[self.settings.topic(topic)] = _Subscription(topic, parse, handle=handle)

    def subscribe_batch(
        self,
        topic: str,
        parse: Callable[[bytes], M],
        handle_batch: Callable[[Transaction, list[M]], Awaitable[None]],
    ) -> None:
        """For a hot topic: the handler gets the new messages of a whole fetch at once, in one
        transaction, and reports bad ones with `tx.dead_letter` so they do not hold back the rest.
        If the batch fails anyway, its messages are retried one by one."""
        self._subscriptions[self.settings.topic(topic)] = _Subscription(topic, parse, handle_batch=handle_batch)

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
            title=f"{settings.service_name}-consumer",
        )
        async def consume(message: KafkaMessage) -> None:
            by_topic: dict[str, list[Any]] = defaultdict(list)
            for record in message.raw_message:  # per topic, in fetch order: per-partition order is kept
                by_topic[record.topic].append(record)
            for topic, records in by_topic.items():
                subscription = self._subscriptions[topic]
                if subscription.handle_batch is not None and len(records) > 1:
                    await self._consume_batch(subscription, records)
                else:
                    for record in records:
                        await self._consume_one(subscription, record)
            await message.ack()  # offsets only after every message's effect is committed

    async def _consume_one(self, sub: _Subscription, record: Any) -> None:
        name = self.settings.service_name
        started = time.perf_counter()
        parsed = await self._parse(sub, record)
        if parsed is None:
            return
        for attempt in itertools.count(1):
            try:
                outcome = "processed" if await self._handle(sub, [parsed]) else "duplicate"
                break
            except Rejected as e:
                await self._dead_letter(sub.topic, record, str(e), "rejected")
                return
            except Exception as e:
                if _is_transient(e) or attempt < self.settings.consumer_max_attempts:
                    log.warning("%s: retrying %s@%s:%s after %r", name, sub.topic, record.partition, record.offset, e)
                    metrics.MESSAGES_CONSUMED.labels(name, sub.topic, "retried").inc()
                    await asyncio.sleep(min(0.1 * 2**attempt, 5.0))
                    continue
                log.exception("%s: giving up on %s@%s:%s", name, sub.topic, record.partition, record.offset)
                await self._dead_letter(sub.topic, record, f"unexpected error: {e!r}", "unexpected")
                return
        failpoints.hit(self.settings, "consumer-after-commit")
        metrics.MESSAGES_CONSUMED.labels(name, sub.topic, outcome).inc()
        metrics.HANDLER_SECONDS.labels(name, sub.topic).observe(time.perf_counter() - started)

    async def _consume_batch(self, sub: _Subscription, records: list[Any]) -> None:
        name = self.settings.service_name
        started = time.perf_counter()
        parsed = [(record, message) for record in records if (message := await self._parse(sub, record)) is not None]
        try:
            fresh = await self._handle(sub, [message for _, message in parsed])
        except Exception as e:  # noqa: BLE001 - whatever it was, one by one finds the message at fault
            log.warning("%s: a batch of %d from %s failed (%r); processing it one by one", name, len(parsed), sub.topic, e)
            for record, _ in parsed:
                await self._consume_one(sub, record)
            return
        failpoints.hit(self.settings, "consumer-after-commit")
        metrics.MESSAGES_CONSUMED.labels(name, sub.topic, "processed").inc(fresh)
        metrics.MESSAGES_CONSUMED.labels(name, sub.topic, "duplicate").inc(len(parsed) - fresh)
        metrics.HANDLER_SECONDS.labels(name, sub.topic).observe(time.perf_counter() - started)

    async def _parse(self, sub: _Subscription, record: Any) -> Any | None:
        """The parsed message, or None once an unparseable one is dead-lettered."""
        try:
            return sub.parse(record.value)
        except (ValidationError, ValueError) as e:
            reason = describe_validation_error(e) if isinstance(e, ValidationError) else str(e)
            await self._dead_letter(sub.topic, record, f"invalid message: {reason}", "invalid")
            return None

    async def _handle(self, sub: _Subscription, messages: list[Any]) -> int:
        """Handle the messages not seen before in one transaction; returns how many were new."""
        async with self.transaction() as tx:
            fresh = await inbox.claim(tx.session, self.settings.group_id, sub.topic, messages)
            if fresh:
                await sub.run(tx, fresh)
        return len(fresh)

    async def _dead_letter(self, topic: str, record: Any, reason: str, error_type: str) -> None:
        """Publish the original bytes and headers to `<topic>.dlq`, naming the error (acks=all)."""
        assert self.producer is not None
        log.warning("%s: dead-lettering %s@%s:%s: %s", self.settings.service_name, topic, record.partition, record.offset, reason)
        headers = [h for h in (record.headers or []) if not h[0].startswith("x-dlq-")]
        headers += [
            ("x-dlq-reason", reason.encode()),
            ("x-dlq-error-type", error_type.encode()),
            ("x-dlq-source-topic", topic.encode()),
            ("x-dlq-source-partition", str(record.partition).encode()),
            ("x-dlq-source-offset", str(record.offset).encode()),
            ("x-dlq-consumer", self.settings.group_id.encode()),
        ]
        await self.producer.send_and_wait(
            self.settings.topic(dead_letter_topic(topic)), value=record.value, key=record.key, headers=headers
        )
        metrics.MESSAGES_CONSUMED.labels(self.settings.service_name, topic, "dead_lettered").inc()

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        await ensure_topics(self.settings)
        await create_tables(self.engine, self.tables)
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers, acks="all", linger_ms=2
        )
        await self.producer.start()
        self.relay = outbox.OutboxRelay(self.settings, self.sessions, self.producer)
        if self.settings.outbox_relay_enabled:
            self._relay_task = asyncio.create_task(self.relay.run_forever(), name="outbox-relay")
        self._register_consumer()
        await self.broker.start()

    async def stop(self) -> None:
        await self.broker.stop()
        if self._relay_task is not None:
            self._relay_task.cancel()
            try:
                await self._relay_task
            except asyncio.CancelledError:
                pass
        if self.producer is not None:
            await self.producer.stop()
        await self.engine.dispose()

    async def health(self) -> dict[str, str]:
        checks: dict[str, str] = {}
        try:
            await asyncio.wait_for(ping(self.engine), 2)
            checks["database"] = "ok"
        except Exception as e:  # noqa: BLE001 - any failure means unhealthy
            checks["database"] = f"unreachable: {e!r}"
        checks["broker"] = "ok" if await self.broker.ping(timeout=2) else "unreachable"
        return checks

    def http_app(self, title: str, routers: Sequence[APIRouter] = ()) -> FastAPI:
        @asynccontextmanager
        async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
            await self.start()
            try:
                yield
            finally:
                await self.stop()

        app = FastAPI(title=title, lifespan=lifespan)
        app.state.runtime = self

        @app.get("/healthz", tags=["operations"])
        async def healthz() -> JSONResponse:
            checks = await self.health()
            healthy = all(v == "ok" for v in checks.values())
            return JSONResponse({"status": "ok" if healthy else "unavailable", "checks": checks}, 200 if healthy else 503)

        @app.get("/metrics", tags=["operations"])
        async def prometheus_metrics() -> Response:
            return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

        install_http_hardening(app, self.settings.http_max_body_bytes)
        for router in routers:
            app.include_router(router)
        return app


def _runtime_of(request: Request) -> ServiceRuntime:
    return request.app.state.runtime


async def _session_of(request: Request) -> AsyncIterator[AsyncSession]:
    async with _runtime_of(request).sessions() as session:
        yield session


# FastAPI dependencies for a service's routes (the app comes from `ServiceRuntime.http_app`).
RuntimeDep = Annotated[ServiceRuntime, Depends(_runtime_of)]
SessionDep = Annotated[AsyncSession, Depends(_session_of)]


async def ensure_topics(settings: ServiceSettings) -> None:
    """Create every contract topic and its dead-letter topic if missing (memory brokers forget them)."""
    names = [settings.topic(t) for topic in ALL_TOPICS for t in (topic, dead_letter_topic(topic))]
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(n, settings.topic_partitions, 1) for n in names if n not in existing]
        if missing:
            response = await admin.create_topics(missing)
            for topic, code, message in getattr(response, "topic_errors", []):
                if code not in (0, 36):  # 36: created meanwhile by another service
                    raise RuntimeError(f"cannot create topic {topic}: {message}")
    finally:
        await admin.close()


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def run_service(create_app: Callable[[S], FastAPI], settings_class: type[S]) -> None:
    """Entry point of `python -m kredit_<service>`: serve the app until SIGINT/SIGTERM. Invalid
    settings, an invalid company setup or a taken port end it with a message, not a traceback."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = settings_class()
    except ValidationError as e:
        sys.exit(f"{settings_class.__name__}: invalid settings: {describe_validation_error(e, whole='settings')}")
    if not port_is_free(settings.http_host, settings.http_port):
        sys.exit(
            f"{settings.service_name}: port {settings.http_host}:{settings.http_port} is already in use "
            f"(set HTTP_PORT to another port)"
        )
    try:
        app = create_app(settings)
    except SetupError as e:
        sys.exit(str(e))
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_level="info")
