"""database.bulk_insert stores what SQLAlchemy's own insert stores, and refuses rows it would store wrongly."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from unittest.mock import patch

import pytest
import sqlalchemy
from sqlalchemy import insert, select

from kredit_shared.contracts import CustomerPaymentReceived
from kredit_shared.database import (
    _insert_plan,
    _InsertPlan,
    bulk_insert,
    create_engine,
    create_session_factory,
    create_tables,
    insert_new,
    insert_rows,
    table_of,
)
from kredit_shared.exchange_rates import ExchangeRateRow
from kredit_shared.migrations import SHARED_TABLES
from kredit_shared.outbox import DeadLetter, OutboxMessage, dead_letter_row, message_row

PAYMENT = CustomerPaymentReceived(
    payment_id="P1",
    customer_account="C1",
    payment_date=dt.date(2026, 1, 1),
    amount=Decimal("10.50"),
    currency="USD",
)
LETTER = DeadLetter("erp.customer-payments", None, b"\xff{", [("h", b"\xfe"), ("n", None)], "bad", "rejected")


async def test_bulk_inserted_rows_read_back_as_sqlalchemys_insert_stores_them(database_url):
    """Bytes, JSON (a non-UTF-8 header as base64), a NULL key, a time with its zone, an exact decimal on SQLite
    (a scaled integer), a date: each column as SQLAlchemy's executemany stores it, on both databases."""
    engine = create_engine(database_url)
    try:
        await create_tables(engine, SHARED_TABLES)
        sessions = create_session_factory(engine)
        now = dt.datetime.now(dt.UTC)
        outbox_rows = [row | {"created_at": now} for row in (message_row(PAYMENT), dead_letter_row(LETTER, "m-2"))]
        when = dt.datetime(2026, 1, 2, 9, 30, tzinfo=dt.UTC)
        rate_row = {"currency": "EUR", "from_date": dt.date(2026, 1, 2), "rate": Decimal("1.0832"), "set_by": None}
        rate_row |= {"recorded_at": when}
        async with sessions() as session, session.begin():
            await (await session.connection()).execute(insert(table_of(OutboxMessage)), outbox_rows)
            await insert_rows(session, table_of(OutboxMessage), outbox_rows)
            await insert_new(session, ExchangeRateRow, [rate_row, rate_row | {"rate": Decimal("2")}])
        async with sessions() as session:
            stored = (await session.exec(select(table_of(OutboxMessage)).order_by("id"))).all()
            rates = (await session.exec(select(table_of(ExchangeRateRow)))).all()
        by_sqlalchemy, by_bulk_insert = stored[:2], stored[2:]
        assert [row[1:] for row in by_bulk_insert] == [row[1:] for row in by_sqlalchemy]  # all but the id
        assert by_bulk_insert[1].key is None
        assert by_bulk_insert[1].headers[:2] == [["h", {"base64": "/g=="}], ["n", None]]
        assert [(r.currency, r.from_date, r.rate) for r in rates] == [("EUR", dt.date(2026, 1, 2), Decimal("1.0832"))]
    finally:
        await engine.dispose()


def test_rows_with_other_keys_or_without_a_defaulted_column_are_refused():
    dialect = create_engine("sqlite+aiosqlite:///:memory:").dialect
    row = message_row(PAYMENT) | {"created_at": dt.datetime.now(dt.UTC)}
    with pytest.raises(ValueError, match="differ in their keys"):
        bulk_insert(dialect, table_of(OutboxMessage), [row, row | {"published_at": None}])
    with pytest.raises(ValueError, match="differ in their keys"):
        bulk_insert(dialect, table_of(OutboxMessage), [row, {k: v for k, v in row.items() if k != "key"} | {"x": 1}])
    with pytest.raises(ValueError, match="created_at, which have defaults"):
        bulk_insert(dialect, table_of(OutboxMessage), [{k: v for k, v in row.items() if k != "created_at"}])


def test_each_row_gets_its_own_values_when_rows_share_some():
    """The converters remember what they made of each value object (rows of a batch share one commit time and a
    headers list per message type): a row with another value, and one with the first value again after it, still
    get theirs, and a shared value is converted once."""
    dialect = create_engine("sqlite+aiosqlite:///:memory:").dialect
    table = table_of(OutboxMessage)
    first, second = dt.datetime(2026, 1, 2, 9, 30, tzinfo=dt.UTC), dt.datetime(2026, 1, 3, 9, 30, tzinfo=dt.UTC)
    payment, letter = message_row(PAYMENT)["headers"], dead_letter_row(LETTER, "m-2")["headers"]
    shared = [(first, payment), (first, letter), (second, payment), (first, letter), (first, [["h", "other"]])]
    rows = [message_row(PAYMENT) | {"created_at": when, "headers": headers} for when, headers in shared]
    _, together = bulk_insert(dialect, table, rows)
    assert together == [bulk_insert(dialect, table, [row])[1][0] for row in rows]
    assert together[0][-2:] != together[1][-2:] != together[2][-2:]
    assert together[1] == together[3]

    keys = tuple(rows[0])
    plan = _insert_plan(table, keys, dialect, False)
    calls: dict[str, int] = {}

    def counted(position: int, converter: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def convert(value: Any) -> Any:
            calls[keys[position]] = calls.get(keys[position], 0) + 1
            return converter(value)

        return convert

    counting = tuple((position, counted(position, converter)) for position, converter in plan.converters)
    with patch("kredit_shared.database._insert_plan", return_value=_InsertPlan(plan.sql, plan.row_values, counting)):
        assert bulk_insert(dialect, table, rows)[1] == together
    assert calls["created_at"] == 2 and calls["headers"] == 3  # the two times, the two shared lists and the other


def test_a_message_type_shares_one_headers_list_without_a_trace():
    assert (
        message_row(PAYMENT)["headers"]
        is message_row(PAYMENT)["headers"]
        == [["message-type", "CustomerPaymentReceived"]]
    )


@pytest.mark.parametrize(
    "value",
    [dt.date(2026, 1, 2), dt.date(999, 12, 31), dt.date(1, 1, 1), dt.datetime(2026, 1, 2, 9, 30), None],
)
def test_a_sqlite_date_is_written_as_sqlalchemys_date_processor_writes_it(value: dt.date | None):
    dialect = create_engine("sqlite+aiosqlite:///:memory:").dialect
    table = table_of(ExchangeRateRow)
    processor = sqlalchemy.Date().dialect_impl(dialect).bind_processor(dialect)
    row = {"currency": "EUR", "from_date": value, "rate": Decimal("1.0832"), "recorded_at": dt.datetime.now(dt.UTC)}
    assert bulk_insert(dialect, table, [row])[1][0][1] == processor(value)


async def test_rows_get_their_ids_in_the_order_given(database_url):
    """The relay publishes the outbox by id: a batch's rows must be numbered in the order they were emitted, also
    when PostgreSQL takes them as column arrays in one statement."""
    engine = create_engine(database_url)
    try:
        await create_tables(engine, SHARED_TABLES)
        sessions = create_session_factory(engine)
        now = dt.datetime.now(dt.UTC)
        rows = [message_row(PAYMENT) | {"message_id": f"m-{n:04d}", "created_at": now} for n in range(1000, 0, -1)]
        async with sessions() as session, session.begin():
            await insert_rows(session, table_of(OutboxMessage), rows)
        async with sessions() as session:
            stored = (await session.exec(select(OutboxMessage.message_id).order_by(OutboxMessage.id))).all()
        assert [message_id for (message_id,) in stored] == [row["message_id"] for row in rows]
    finally:
        await engine.dispose()
