from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from kredit_ledger_posting.tables import TABLES
from kredit_shared.contracts import GL_EXCHANGE_RATES, GL_JOURNAL_EVENTS
from kredit_shared.testing import HandlerDatabase, handler_database


@pytest.fixture
async def db() -> AsyncIterator[HandlerDatabase]:
    """Ledger-posting's tables in memory; it publishes what app.py declares."""
    async with handler_database(TABLES, publishes=[GL_JOURNAL_EVENTS, GL_EXCHANGE_RATES]) as database:
        yield database
