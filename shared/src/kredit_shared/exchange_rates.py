"""The exchange rates a service books foreign-currency documents at (docs/currencies.md).

The company setup's `exchange_rates` are the seed. Rates set later over HTTP (ledger-posting's
`PUT /api/v1/exchange-rates/{currency}/{from_date}`) reach every service on `gl.exchange-rates`; each
keeps them in its own `exchange_rate` table, and they win over the setup's for the same currency and date.

A document refused only because no rate was known for its currency and date is dead-lettered as the contract
says, and kept (`keep_until_rate`): when a rate that covers it arrives, `record_rates` books it in the same
transaction, through the service's own handler of its topic, so nobody has to replay it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter
from sqlalchemy import Index, delete, exists, text
from sqlalchemy.exc import DBAPIError
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kredit_shared import inbox
from kredit_shared.company_setup import CompanySetup, ExchangeRatePeriod
from kredit_shared.contracts import GL_EXCHANGE_RATES, ExchangeRateSet
from kredit_shared.contracts.messages import ContractMessage
from kredit_shared.contracts.parsing import json_parser
from kredit_shared.currencies import Rates, rate_refusal
from kredit_shared.database import ExactDecimal, insert_new
from kredit_shared.outbox import utcnow

if TYPE_CHECKING:  # the runtime's module imports this one (its tables)
    from kredit_shared.service import ServiceRuntime, UnitOfWork

log = logging.getLogger(__name__)

RATE_PLACES = 10  # the contract's rate has at most 10 decimals


class ExchangeRateRow(SQLModel, table=True):
    """A rate set over HTTP: the latest message per currency and date wins."""

    __tablename__ = "exchange_rate"

    currency: str = Field(primary_key=True, max_length=3)
    from_date: dt.date = Field(primary_key=True)
    rate: Decimal = Field(sa_type=ExactDecimal(RATE_PLACES), nullable=False)
    set_by: str | None = None
    recorded_at: dt.datetime = Field(default_factory=utcnow)


class WaitingDocumentRow(SQLModel, table=True):
    """A document refused only because no rate was known for its currency and date (it was dead-lettered
    with that reason): booked once a rate covering it arrives (record_rates), or deleted by retention."""

    __tablename__ = "document_waiting_for_rate"
    __table_args__ = (Index("ux_document_waiting_for_rate_message", "topic", "message_id", unique=True),)

    id: int | None = Field(default=None, primary_key=True)  # arrival order: booked in this order
    topic: str  # the contract topic it came on; the service's handler of that topic books it
    message_id: str
    currency: str = Field(max_length=3)
    document_date: dt.date  # a rate from this date or earlier books it
    message: str  # the message's JSON
    kept_at: dt.datetime = Field(default_factory=utcnow, index=True)  # the retention job deletes by age


DOCUMENTS_WAITING_FOR_RATE = Counter(
    "kredit_documents_waiting_for_rate_total",
    "Documents refused for want of an exchange rate: kept, then booked when their rate arrived (or rejected "
    "again for another reason, already_processed by a replay of their dead letter, or failed: a bug)",
    ["service", "topic", "outcome"],
)

# Keeping documents and recording rates take turns on PostgreSQL (_take_turns).
WAITING_LOCK_KEY = 0x6B726174  # "krat"

BOOKED_WHEN_RATE_IS_SET = "It will be booked automatically when a rate for it is set over HTTP; a replay is not needed."

# How the service parses and handles a topic's messages (ServiceRuntime.handler_of): how a kept document is booked.
Parse = Callable[[bytes], Any]
HandleBatch = Callable[["UnitOfWork", list[Any]], Awaitable[None]]
HandlerOf = Callable[[str], tuple[Parse, HandleBatch]]


class RateRecordedMeanwhile(Exception):
    """A rate for the document being kept was recorded after its handler read the rates (by another replica):
    the runtime handles the message again (a failure: its batch goes one by one, each retried), and then it is
    booked. Not retried without limit: were the handler's rates ever at odds with the table, the message would
    end dead-lettered, not hold the consumer."""


async def _take_turns(session: AsyncSession, exclusive: bool) -> None:
    """On PostgreSQL, transactions keeping documents (shared) and recording rates (exclusive) take turns until
    they commit, so no document is kept unseen by a rate recorded at the same moment by another replica: the
    rates' transaction sees every document kept before it, one keeping a document every rate recorded before it
    (READ COMMITTED). SQLite has one writer, and every handler writes (its inbox entries) before it reads."""
    if session.get_bind().dialect.name == "postgresql":
        lock = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        await (await session.connection()).execute(text(f"SELECT {lock}({WAITING_LOCK_KEY})"))


async def keep_until_rate(
    uow: UnitOfWork, topic: str, message: ContractMessage, currency: str, on: dt.date, reason: str
) -> None:
    """Dead-letter a document refused only because no `currency` rate is known for `on` (the contract's answer,
    at once, with `reason`), and keep it: `record_rates` books it when a rate that covers it arrives."""
    await _take_turns(uow.session, exclusive=False)
    stored = select(col(ExchangeRateRow.from_date)).where(
        col(ExchangeRateRow.currency) == currency, col(ExchangeRateRow.from_date) <= on
    )
    if (await uow.session.exec(stored.limit(1))).first() is not None:
        raise RateRecordedMeanwhile(
            f"a {currency} rate for {on} was recorded while {topic} {message.message_id} waited"
        )
    uow.reject(topic, message, f"{reason}. {BOOKED_WHEN_RATE_IS_SET}")
    row = {
        "topic": topic,
        "message_id": message.message_id,
        "currency": currency,
        "document_date": on,
        "message": message.model_dump_json(),
        "kept_at": utcnow(),
    }
    await insert_new(uow.session, WaitingDocumentRow, [row])  # a replay refused again is kept once
    uow.on_commit(DOCUMENTS_WAITING_FOR_RATE.labels(uow.service, topic, "kept").inc)


async def record_rates(
    uow: UnitOfWork, messages: Sequence[ExchangeRateSet], accounting_currency: str, handler_of: HandlerOf | None = None
) -> None:
    """Keep the rates a batch carries; a later message for the same currency and date replaces an earlier one.
    Then book the kept documents a rate now covers (`book_waiting`), unless `handler_of` is None.

    Ledger-posting's API never sends a rate it refuses (`rate_refusal`); one that comes all the same (another
    producer) is dead-lettered with the API's reason, not kept unused."""
    usable = []
    for message in messages:
        if (reason := rate_refusal(message.currency, accounting_currency)) is not None:
            uow.reject(GL_EXCHANGE_RATES, message, reason)
        else:
            usable.append(message)
    latest = {(m.currency, m.from_date): m for m in usable}  # in fetch order: a key's messages in order
    if not latest:
        return
    session = uow.session
    await _take_turns(session, exclusive=True)
    query = select(ExchangeRateRow).where(col(ExchangeRateRow.currency).in_(sorted({c for c, _ in latest})))
    existing = {(row.currency, row.from_date): row for row in (await session.exec(query)).all()}
    new = []
    for key, message in latest.items():
        if (row := existing.get(key)) is not None:
            row.rate, row.set_by, row.recorded_at = message.rate, message.set_by, utcnow()
        else:
            new.append(
                {
                    "currency": message.currency,
                    "from_date": message.from_date,
                    "rate": message.rate,
                    "set_by": message.set_by,
                    "recorded_at": utcnow(),
                }
            )
    await insert_new(session, ExchangeRateRow, new)
    if handler_of is not None:
        await book_waiting(uow, handler_of)


async def book_waiting(uow: UnitOfWork, handler_of: HandlerOf) -> None:
    """Handle again, one by one in the order they arrived, the kept documents whose currency now has a rate on or
    before their date, each through the service's handler of its topic, in the caller's transaction. Their rows
    go, booked or rejected again (then for another reason, dead-lettered by the handler)."""
    session = uow.session
    covered = exists().where(
        col(ExchangeRateRow.currency) == col(WaitingDocumentRow.currency),
        col(ExchangeRateRow.from_date) <= col(WaitingDocumentRow.document_date),
    )
    waiting = col(WaitingDocumentRow.id), col(WaitingDocumentRow.topic), col(WaitingDocumentRow.message)
    rows = (await session.exec(select(*waiting).where(covered).order_by(waiting[0]))).all()
    if not rows:
        return
    await session.exec(delete(WaitingDocumentRow).where(waiting[0].in_([row_id for row_id, _, _ in rows])))
    for _, topic, message in rows:
        parse, handle = handler_of(topic)
        document = parse(message.encode())
        try:
            # A document its handler fails on (a bug) must not hold back the rates, nor the others: it alone
            # is undone, and its dead letter stays for a replay once the bug is fixed.
            async with uow.savepoint():
                outcome = await _book(uow, topic, document, handle)
        except DBAPIError:
            raise  # the database's trouble, not the document's: the runtime retries the batch
        except Exception:
            log.exception("%s: %s %s waited for its exchange rate and failed", uow.service, topic, document.message_id)
            outcome = "failed"
        uow.on_commit(DOCUMENTS_WAITING_FOR_RATE.labels(uow.service, topic, outcome).inc)
        if outcome == "booked":
            info = "%s: %s %s waited for its exchange rate and is booked now"
            uow.on_commit(log.info, info, uow.service, topic, document.message_id)


async def _book(uow: UnitOfWork, topic: str, document: Any, handle: HandleBatch) -> str:
    """Claim the document in the inbox, as the consumer does, and handle it: one whose dead letter was replayed
    and processed meanwhile is passed over, and a replay after this is a duplicate."""
    if not (await inbox.claim(uow.session, uow.group_id, topic, [document])).fresh:
        return "already_processed"
    rejected = len(uow.rejected)
    await handle(uow, [document])
    return "rejected" if len(uow.rejected) > rejected else "booked"


def subscribe(runtime: ServiceRuntime, accounting_currency: str) -> None:
    """Every service that books foreign documents keeps the rates set over HTTP, and books what waited for them."""
    record = partial(record_rates, accounting_currency=accounting_currency, handler_of=runtime.handler_of)
    runtime.subscribe_batch(GL_EXCHANGE_RATES, json_parser(ExchangeRateSet), record)


async def load_rates(session: AsyncSession, setup: CompanySetup) -> Rates:
    """The setup's rates with those set over HTTP on top: one read per batch, not per document."""
    stored = (await session.exec(select(ExchangeRateRow))).all()
    periods: dict[str, dict[dt.date, ExchangeRatePeriod]] = {
        currency: {p.from_date: p for p in setup_periods} for currency, setup_periods in setup.exchange_rates.items()
    }
    for row in stored:
        periods.setdefault(row.currency, {})[row.from_date] = ExchangeRatePeriod(from_date=row.from_date, rate=row.rate)
    return Rates(setup.accounting_currency, {currency: list(p.values()) for currency, p in periods.items()})
