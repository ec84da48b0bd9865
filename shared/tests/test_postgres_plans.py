"""On PostgreSQL every statement is planned for its own parameters: a service's pooled connection keeps its
prepared statements, and a generic plan made while a new database's tables were empty would scan them whole
for good (the inbox lookup of every batch was 6x slower at 15,000 rows, and growing: docs/platform-notes.md)."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from kredit_shared import inbox
from kredit_shared.contracts import ERP_CUSTOMER_INVOICES, ExchangeRateSet
from kredit_shared.database import create_engine, create_session_factory, create_tables
from kredit_shared.migrations import SHARED_TABLES


async def test_on_postgresql_the_inbox_lookup_is_never_run_on_a_generic_plan(database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's plan cache")
    engine = create_engine(database_url)
    sessions = create_session_factory(engine)
    try:
        await create_tables(engine, SHARED_TABLES)
        for _ in range(8):  # PostgreSQL may switch a prepared statement to a generic plan after five executions
            batch = [
                ExchangeRateSet(message_id=str(uuid.uuid4()), currency="EUR", from_date="2026-01-01", rate="1.10")
                for _ in range(3)
            ]
            async with sessions() as session, session.begin():
                assert len((await inbox.claim(session, "plans", ERP_CUSTOMER_INVOICES, batch)).fresh) == 3
        async with sessions() as session:  # the same pooled connection: the prepared statements are its own
            plans = (
                await (await session.connection()).execute(
                    text(
                        "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
                        "WHERE statement LIKE 'SELECT inbox_processed_message.message_id%'"
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    assert [(generic, custom) for generic, custom in plans] == [(0, 8)]
