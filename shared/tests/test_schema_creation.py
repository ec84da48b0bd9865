"""Many replicas starting at once on a fresh PostgreSQL database all create their schema (issue: replicas
crashed in concurrent CREATE TABLE on PostgreSQL's catalog index)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import inspect

from kredit_shared import inbox, outbox
from kredit_shared.database import create_engine, create_tables
from kredit_shared.testing import fresh_postgres_database


async def test_ten_replicas_create_their_tables_at_once_on_a_fresh_postgresql_database(postgres_admin_url):
    if postgres_admin_url is None:
        pytest.skip("no PostgreSQL server reachable")
    tables = [outbox.OutboxMessage.__table__, inbox.ProcessedMessage.__table__]
    async with fresh_postgres_database(postgres_admin_url) as url:
        engines = [create_engine(url) for _ in range(10)]
        try:
            await asyncio.gather(*(create_tables(engine, tables) for engine in engines))
            async with engines[0].connect() as connection:
                names = await connection.run_sync(lambda c: inspect(c).get_table_names())
            assert {"outbox_message", "inbox_processed_message"} <= set(names)
        finally:
            await asyncio.gather(*(engine.dispose() for engine in engines))
