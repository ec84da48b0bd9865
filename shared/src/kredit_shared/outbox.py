"""Transactional outbox: messages are rows committed with the state change; a relay publishes them.

A crash between commit and publish loses nothing: unpublished rows are sent after restart. A crash
between publish and marking them sent re-publishes them with the same `message_id`, which the
consumers' inbox turns into a no-op (at-least-once delivery, exactly-once effect).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from sqlalchemy import JSON, Column, LargeBinary, func, select, update
from sqlmodel import Field, SQLModel, text
from sqlmodel.ext.asyncio.session import AsyncSession

from kredit_shared import failpoints, metrics
from kredit_shared.contracts.messages import ContractMessage
from kredit_shared.contracts.topics import dead_letter_topic
from kredit_shared.database import SessionFactory
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
    key: str
    payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    headers: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    published_at: datetime | None = Field(default=None, index=True)


def add_message(session: AsyncSession, message: ContractMessage) -> None:
    """Queue a contract message in the caller's transaction."""
    session.add(
        OutboxMessage(
            message_id=message.message_id,
            topic=message.topic,
            key=message.key(),
            payload=message.model_dump_json().encode(),
            headers={"message-type": type(message).__name__},
        )
    )


def add_dead_letter(session: AsyncSession, source_topic: str, message: ContractMessage, reason: str) -> None:
    """Queue a dead-letter entry in the caller's transaction, e.g. a rejected part of an accepted message."""
    session.add(
        OutboxMessage(
            message_id=message.message_id,
            topic=dead_letter_topic(source_topic),
            key=message.key(),
            payload=message.model_dump_json().encode(),
            headers={"x-dlq-reason": reason, "x-dlq-error-type": "rejected", "x-dlq-source-topic": source_topic},
        )
    )


class OutboxRelay:
    """Publishes unsent outbox rows in commit order (acks=all) and marks them sent."""

    def __init__(self, settings: ServiceSettings, sessions: SessionFactory, producer: AIOKafkaProducer) -> None:
        self._settings = settings
        self._sessions = sessions
        self._producer = producer
        self._wakeup = asyncio.Event()

    def wake(self) -> None:
        """Called after a commit that queued messages, so they go out without waiting for the poll."""
        self._wakeup.set()

    async def run_forever(self) -> None:
        while True:
            try:
                published = await self.publish_pending()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay failed; retrying")
                published = 0
            if published < self._settings.outbox_batch_size:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), self._settings.outbox_poll_interval_seconds)
                except TimeoutError:
                    pass

    async def publish_pending(self) -> int:
        """Publish one batch; returns how many rows were sent."""
        async with self._sessions() as session, session.begin():
            if session.bind.dialect.name == "postgresql":
                # One relay at a time per database keeps each key's messages in commit order.
                locked = await session.exec(text(f"SELECT pg_try_advisory_xact_lock({_RELAY_LOCK_KEY})"))
                if not locked.scalar():
                    return 0
            rows = (
                await session.exec(
                    select(OutboxMessage)
                    .where(OutboxMessage.published_at.is_(None))
                    .order_by(OutboxMessage.id)
                    .limit(self._settings.outbox_batch_size)
                )
            ).scalars().all()
            if not rows:
                metrics.OUTBOX_PENDING.labels(self._settings.service_name).set(0)
                return 0
            failpoints.hit(self._settings, "relay-before-publish")
            # Sends are pipelined; the producer keeps per-partition order.
            deliveries = [
                await self._producer.send(
                    self._settings.topic(row.topic),
                    value=row.payload,
                    key=row.key.encode(),
                    headers=[(k, v.encode()) for k, v in {**row.headers, "message-id": row.message_id}.items()],
                )
                for row in rows
            ]
            await asyncio.gather(*deliveries)
            failpoints.hit(self._settings, "relay-after-publish")
            await session.exec(
                update(OutboxMessage).where(OutboxMessage.id.in_([r.id for r in rows])).values(published_at=utcnow())
            )
        for row in rows:
            metrics.OUTBOX_PUBLISHED.labels(self._settings.service_name, row.topic).inc()
        await self._report_pending()
        return len(rows)

    async def _report_pending(self) -> None:
        async with self._sessions() as session:
            pending = (
                await session.exec(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.published_at.is_(None)))
            ).scalar_one()
        metrics.OUTBOX_PENDING.labels(self._settings.service_name).set(pending)
