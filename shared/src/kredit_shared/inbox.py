"""Idempotent inbox: the `message_id` of each processed message, committed with its effect."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from kredit_shared.outbox import utcnow


class ProcessedMessage(SQLModel, table=True):
    __tablename__ = "inbox_processed_message"

    consumer: str = Field(primary_key=True)  # the consumer group; one service may read a topic twice
    message_id: str = Field(primary_key=True)
    topic: str
    processed_at: datetime = Field(default_factory=utcnow)


async def claim(session: AsyncSession, consumer: str, topic: str, message_id: str) -> bool:
    """Record the message as processed in the caller's transaction; False if it already was.

    Two replicas racing on one message both see "new"; the primary key makes the second
    commit fail, and its retry then sees the message as processed.
    """
    seen = await session.exec(
        select(ProcessedMessage.message_id).where(
            ProcessedMessage.consumer == consumer, ProcessedMessage.message_id == message_id
        )
    )
    if seen.first() is not None:
        return False
    session.add(ProcessedMessage(consumer=consumer, message_id=message_id, topic=topic))
    return True
