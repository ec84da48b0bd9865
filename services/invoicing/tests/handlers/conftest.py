from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from kredit_invoicing.tables import TABLES
from kredit_shared.contracts import AR_CUSTOMER_TRANSACTIONS, GL_JOURNAL_LINES
from kredit_shared.testing import HandlerDatabase, handler_database


@pytest.fixture
async def db() -> AsyncIterator[HandlerDatabase]:
    """Invoicing's tables in memory; it publishes what app.py declares."""
    async with handler_database(TABLES, publishes=[AR_CUSTOMER_TRANSACTIONS, GL_JOURNAL_LINES]) as database:
        yield database
