"""Retention: published outbox rows, old inbox entries and documents that waited too long for an exchange rate
are deleted, so no table grows forever.

Every service runs `run_forever` (ServiceRuntime starts it). Rows go in small batches, one transaction
each, so no delete holds a lock (SQLite's one write lock, PostgreSQL's row locks) for long; replicas
may run it at once (a row deleted by one is simply not found by the other).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, tuple_
from sqlalchemy.sql import Select
from sqlmodel import SQLModel, col, select

from kredit_shared import metrics
from kredit_shared.database import SessionFactory
from kredit_shared.exchange_rates import WaitingDocumentRow
from kredit_shared.inbox import ProcessedMessage
from kredit_shared.outbox import OutboxMessage, utcnow
from kredit_shared.settings import ServiceSettings

log = logging.getLogger(__name__)


async def delete_expired(settings: ServiceSettings, sessions: SessionFactory) -> dict[str, int]:
    """Delete outbox rows published, inbox entries recorded, and documents kept for a rate (exchange_rates;
    their dead letter told someone, and a rate may never come), more than `retention_days` ago; returns how
    many of each."""
    cutoff = utcnow() - timedelta(days=settings.retention_days)
    limit = settings.retention_batch_size
    published = select(col(OutboxMessage.id)).where(col(OutboxMessage.published_at) < cutoff).limit(limit)
    processed = select(col(ProcessedMessage.consumer), col(ProcessedMessage.message_id)).where(
        col(ProcessedMessage.processed_at) < cutoff
    )
    inbox_key = tuple_(ProcessedMessage.consumer, ProcessedMessage.message_id)
    waiting = select(col(WaitingDocumentRow.id)).where(col(WaitingDocumentRow.kept_at) < cutoff).limit(limit)
    return {
        "outbox": await _delete_in_batches(settings, sessions, OutboxMessage, OutboxMessage.id, published),
        "inbox": await _delete_in_batches(settings, sessions, ProcessedMessage, inbox_key, processed.limit(limit)),
        "waiting_for_rate": await _delete_in_batches(
            settings, sessions, WaitingDocumentRow, WaitingDocumentRow.id, waiting
        ),
    }


async def _delete_in_batches(
    settings: ServiceSettings, sessions: SessionFactory, model: type[SQLModel], key: Any, batch: Select
) -> int:
    """Delete the rows whose `key` is in `batch` (a select of at most retention_batch_size keys) until
    none are left; returns how many."""
    total = 0
    while True:
        async with sessions() as session, session.begin():
            result = await session.exec(delete(model).where(key.in_(batch)))
        deleted = result.rowcount
        total += deleted
        metrics.RETENTION_DELETED.labels(settings.service_name, model.__tablename__).inc(deleted)
        if deleted < settings.retention_batch_size:
            return total
        await asyncio.sleep(0)  # let the consumer and the relay in between batches


async def run_forever(settings: ServiceSettings, sessions: SessionFactory) -> None:
    while True:
        try:
            deleted = await delete_expired(settings, sessions)
            if any(deleted.values()):
                log.info("%s: retention deleted %s", settings.service_name, deleted)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: retention failed; trying again at the next interval", settings.service_name)
        await asyncio.sleep(settings.retention_interval_seconds)
