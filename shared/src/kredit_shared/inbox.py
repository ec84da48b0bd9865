"""Idempotent inbox: the `message_id` of each processed message, committed with its effect."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import delete
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kredit_shared.contracts.messages import ContractMessage, digest
from kredit_shared.contracts.parsing import parsed_json
from kredit_shared.database import insert_rows, table_of
from kredit_shared.outbox import utcnow

M = TypeVar("M", bound=ContractMessage)


class ProcessedMessage(SQLModel, table=True):
    __tablename__ = "inbox_processed_message"

    consumer: str = Field(primary_key=True)  # the consumer group; one service may read a topic twice
    message_id: str = Field(primary_key=True)
    topic: str
    # What the message said, so a reused message_id with other content is told from a redelivery.
    fingerprint: str | None = None
    processed_at: datetime = Field(default_factory=utcnow, index=True)  # the retention job deletes by age


def fingerprint(message: ContractMessage) -> str:
    """The content as the contract reads it: key order and spacing of the JSON don't count (the parsed message
    is re-serialized as model_dump_json writes it, in field order; kept so, since stored fingerprints must keep
    matching)."""
    return digest(parsed_json(message))


@dataclass(frozen=True)
class Claimed(Generic[M]):
    fresh: list[M]  # to process now
    reused: list[M]  # a message_id already processed with other content: to dead-letter


async def claim(session: AsyncSession, consumer: str, topic: str, messages: Sequence[M]) -> Claimed[M]:
    """Record the messages as processed in the caller's transaction. A redelivered message, or the same
    one twice in a batch, is left out; one whose id was processed with different content is `reused`.

    Two replicas racing on one message both see "new"; the primary key makes the second
    insert or commit fail, and its retry then sees the message as processed.
    """
    ids = {m.message_id for m in messages}
    seen = dict(
        (
            await session.exec(
                select(col(ProcessedMessage.message_id), col(ProcessedMessage.fingerprint)).where(
                    col(ProcessedMessage.consumer) == consumer, col(ProcessedMessage.message_id).in_(ids)
                )
            )
        ).all()
    )
    fresh: list[M] = []
    reused: list[M] = []
    rows: list[dict[str, Any]] = []
    now = utcnow()
    for message in messages:
        content = fingerprint(message)
        if message.message_id not in seen:
            seen[message.message_id] = content
            fresh.append(message)
            rows.append(
                {
                    "consumer": consumer,
                    "message_id": message.message_id,
                    "topic": topic,
                    "fingerprint": content,
                    "processed_at": now,
                }
            )
        elif seen[message.message_id] not in (content, None):  # None: recorded before fingerprints were kept
            reused.append(message)
    await insert_rows(session, table_of(ProcessedMessage), rows)  # one executemany for the batch
    return Claimed(fresh, reused)


async def claim_key(session: AsyncSession, consumer: str, topic: str, key: str) -> bool:
    """Record a key that is not a message_id (e.g. a dead-lettered record's position); False if it was
    recorded before."""
    if await session.get(ProcessedMessage, (consumer, key)) is not None:
        return False
    session.add(ProcessedMessage(consumer=consumer, message_id=key, topic=topic))
    return True


async def release(session: AsyncSession, consumer: str, message_ids: Sequence[str]) -> None:
    """Forget that these messages were processed (they were rejected whole), in the caller's transaction."""
    if message_ids:
        await session.exec(
            delete(ProcessedMessage).where(
                col(ProcessedMessage.consumer) == consumer, col(ProcessedMessage.message_id).in_(message_ids)
            )
        )
