from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from kredit_settlement.tables import TABLES
from kredit_shared.contracts import AR_CUSTOMER_TRANSACTIONS, AR_SETTLEMENTS, GL_JOURNAL_LINES
from kredit_shared.testing import HandlerDatabase, handler_database


@pytest.fixture
async def db() -> AsyncIterator[HandlerDatabase]:
    """Settlement's tables in memory; it publishes what app.py declares."""
    publishes = [AR_CUSTOMER_TRANSACTIONS, AR_SETTLEMENTS, GL_JOURNAL_LINES]
    async with handler_database(TABLES, publishes=publishes) as database:
        yield database
