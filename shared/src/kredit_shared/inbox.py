"""Idempotent inbox: the `message_id` of each processed message, committed with its effect."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, TypeVar

from sqlalchemy import select
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from kredit_shared.outbox import utcnow


class _Identified(Protocol):
    message_id: str


M = TypeVar("M", bound=_Identified)


class ProcessedMessage(SQLModel, table=True):
    __tablename__ = "inbox_processed_message"

    consumer: str = Field(primary_key=True)  # the consumer group; one service may read a topic twice
    message_id: str = Field(primary_key=True)
    topic: str
    processed_at: datetime = Field(default_factory=utcnow)


async def claim(session: AsyncSession, consumer: str, topic: str, messages: Sequence[M]) -> list[M]:
    """Record the messages as processed in the caller's transaction; returns those not processed
    before (a redelivered message, or the same one twice in a batch, is left out).

    Two replicas racing on one message both see "new"; the primary key makes the second
    commit fail, and its retry then sees the message as processed.
    """
    ids = {m.message_id for m in messages}
    seen = set(
        (
            await session.exec(
                select(ProcessedMessage.message_id).where(
                    ProcessedMessage.consumer == consumer, ProcessedMessage.message_id.in_(ids)
                )
            )
        ).scalars()
    )
    fresh = []
    for message in messages:
        if message.message_id not in seen:
            seen.add(message.message_id)
            fresh.append(message)
    session.add_all(ProcessedMessage(consumer=consumer, message_id=m.message_id, topic=topic) for m in fresh)
    return fresh
