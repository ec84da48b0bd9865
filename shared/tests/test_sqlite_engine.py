"""A SQLite engine switches its database to WAL even when the file is busy for a moment: replicas opening a new
database file together (each migrating it at start: tests/migrations) must not fail on the switch."""

from __future__ import annotations

import sqlite3
import threading

from kredit_shared.database import create_engine


async def test_an_engine_opening_a_database_another_connection_writes_waits_and_switches_it_to_wal(tmp_path):
    path = tmp_path / "busy.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")  # a write in the file's first journal mode: SQLite refuses the switch at once
    holder.execute("INSERT INTO t VALUES (1)")
    release = threading.Timer(0.3, holder.execute, ["COMMIT"])
    release.start()
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        async with engine.connect() as connection:
            mode = (await connection.exec_driver_sql("PRAGMA journal_mode")).scalar()
            rows = (await connection.exec_driver_sql("SELECT x FROM t")).scalars().all()
        assert (mode, rows) == ("wal", [1])
    finally:
        release.join()
        await engine.dispose()
        holder.close()
