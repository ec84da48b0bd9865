"""OpenItems writes a batch's changed open items in one statement on each database, and refuses to overwrite a
row that changed since it was read (its version moved on), naming the transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal

import pytest
from sqlalchemy import select, update

from kredit_settlement.domain import OpenTransaction
from kredit_settlement.tables import TABLES, ConcurrentUpdate, OpenItems, OpenTransactionRow
from kredit_shared.database import create_engine, create_session_factory, create_tables, table_of
from kredit_shared.migrations import SHARED_TABLES

D = Decimal


def invoice(voucher: str, amount: str) -> OpenTransaction:
    return OpenTransaction(voucher, "4711", "Invoice", date(2015, 6, 25), "USD", D(amount), D(amount), voucher)


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[object]:
    engine = create_engine(database_url)
    await create_tables(engine, [*TABLES, *SHARED_TABLES])
    try:
        yield create_session_factory(engine)
    finally:
        await engine.dispose()


async def stored(sessions, voucher: str) -> tuple:
    """(open amount, accounting open amount, discount taken, version) as stored."""
    c = table_of(OpenTransactionRow).c
    query = select(c.open_amount, c.accounting_open_amount, c.discount_taken, c.version).where(c.voucher == voucher)
    async with sessions() as session:
        return tuple((await session.exec(query)).one())


async def test_a_batch_of_changed_open_items_is_written_with_their_next_versions(sessions):
    async with sessions() as session, session.begin():
        await OpenItems(session).save([invoice("FTI-1", "100.00"), invoice("FTI-2", "250.00"), invoice("FTI-3", "9")])
    async with sessions() as session, session.begin():
        store = OpenItems(session, deferred=True)
        first, second, third = await store.find_all(["FTI-1", "FTI-2", "FTI-3"])
        await store.save([first.with_open(D("40.00"), D("40.00"), D("1.00")), third.with_open(D("0"), D("0"), D("0"))])
        await store.flush()
    assert await stored(sessions, "FTI-1") == (D("40.00"), D("40.00"), D("1.00"), 2)
    assert await stored(sessions, "FTI-2") == (D("250.00"), D("250.00"), D("0.00"), 1)  # not changed, not written
    assert await stored(sessions, "FTI-3") == (D(0), D(0), D(0), 2)


async def test_an_open_item_changed_since_it_was_read_is_not_overwritten(sessions):
    async with sessions() as session, session.begin():
        await OpenItems(session).save([invoice("FTI-1", "100.00"), invoice("FTI-2", "250.00")])
    async with sessions() as session:
        store = OpenItems(session, deferred=True)
        first, second = await store.find_all(["FTI-1", "FTI-2"])
        await session.commit()  # nothing held: another transaction settles FTI-2 meanwhile
        async with sessions() as other, other.begin():
            c = table_of(OpenTransactionRow).c
            await other.exec(
                update(table_of(OpenTransactionRow)).where(c.voucher == "FTI-2").values(version=c.version + 1)
            )
        await store.save(
            [first.with_open(D("40.00"), D("40.00"), D(0)), second.with_open(D("50.00"), D("50.00"), D(0))]
        )
        with pytest.raises(ConcurrentUpdate, match="FTI-2 changed since it was read"):
            await store.flush()
        await session.rollback()
    assert await stored(sessions, "FTI-1") == (D("100.00"), D("100.00"), D("0.00"), 1)  # the batch rolls back
    assert (await stored(sessions, "FTI-2"))[3] == 2
