from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from kredit_collections.tables import TABLES
from kredit_shared.contracts import ERP_CUSTOMER_INVOICES, GL_GENERAL_JOURNALS
from kredit_shared.testing import HandlerDatabase, handler_database


@pytest.fixture
async def db() -> AsyncIterator[HandlerDatabase]:
    """Collections' tables in memory; it publishes what app.py declares."""
    async with handler_database(TABLES, publishes=[GL_GENERAL_JOURNALS, ERP_CUSTOMER_INVOICES]) as database:
        yield database
