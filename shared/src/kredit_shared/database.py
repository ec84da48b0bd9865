"""Async database engines and sessions: SQLite by default, PostgreSQL by URL."""

from __future__ import annotations

import functools
import operator
import sqlite3
import ssl as ssl_module
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy
from sqlalchemy import BigInteger, Column, Dialect, Numeric, Table, TypeDecorator, event, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeEngine
from sqlmodel import Field, SQLModel, text
from sqlmodel.ext.asyncio.session import AsyncSession

from kredit_shared.money import tidy

SessionFactory = async_sessionmaker[AsyncSession]

# Places of a transaction-currency amount column: the most decimals a currency we book has (KWD, BHD, ...).
TRANSACTION_PLACES = 3


def normalise_url(url: str) -> str:
    """Accept plain `postgresql://` and `sqlite:///` URLs and pick the async drivers."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    if url.startswith("sqlite://") and not url.startswith("sqlite+"):
        return "sqlite+aiosqlite://" + url.split("://", 1)[1]
    return url


# A statement that has not answered in this long is stuck, not slow: asyncpg then raises TimeoutError
# (a transient failure, retried) instead of waiting forever, e.g. on a connection left in a bad
# state by a cancelled operation. Measured: the slowest statement of a chaos run took a few seconds.
STATEMENT_TIMEOUT_SECONDS = 60


def _journal_mode_wal(cursor: Any, attempts: int = 100) -> None:
    """Switch a SQLite database to WAL. The switch needs the file to itself and SQLite does not wait for it:
    replicas opening a new database file together (each migrating it at start) can find it busy for a moment,
    so a busy switch is tried again; a database already in WAL mode answers at once."""
    for attempt in range(attempts):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or attempt == attempts - 1:
                raise
            time.sleep(0.05)  # in the driver's thread (aiosqlite), not the event loop


def create_engine(
    url: str, ssl_mode: str = "prefer", ssl_root_cert: Path | None = None, *, pooled: bool = True
) -> AsyncEngine:
    """`ssl_mode` as libpq's sslmode (PostgreSQL only); verify-ca/verify-full check the server's
    certificate against `ssl_root_cert` (the system's CAs when None). `pooled=False` gives an engine
    that opens a connection per use: for probes, so a probe that times out can never leave a broken
    connection in the pool the consumer and the API use."""
    url = normalise_url(url)
    pool: dict[str, Any] = {} if pooled else {"poolclass": NullPool}
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30}, **pool)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:
            # WAL lets the relay read while a handler writes; busy waits instead of failing.
            cursor = dbapi_connection.cursor()
            _journal_mode_wal(cursor)
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    if pooled:
        pool = {"pool_size": 10, "max_overflow": 10, "pool_pre_ping": True}
    ssl: str | ssl_module.SSLContext = ssl_mode
    if ssl_mode in ("verify-ca", "verify-full"):
        ssl = ssl_module.create_default_context(cafile=ssl_root_cert)
        ssl.check_hostname = ssl_mode == "verify-full"
    # Every statement planned for its own parameters (PostgreSQL >= 12). asyncpg prepares each statement once
    # per connection, and after five executions PostgreSQL may keep a generic plan: one made while a table was
    # empty (a new database) scans the whole table for good, e.g. the inbox lookup of every batch, 6x slower at
    # 15,000 rows and growing, until an ANALYZE (autovacuum, if on) invalidates it. Our statements run once per
    # batch, so planning each costs little.
    settings = {"plan_cache_mode": "force_custom_plan"}
    connect_args = {"command_timeout": STATEMENT_TIMEOUT_SECONDS, "ssl": ssl, "server_settings": settings}
    return create_async_engine(url, connect_args=connect_args, **pool)


def create_session_factory(engine: AsyncEngine) -> SessionFactory:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


# Any constant works: it only has to be the same for every replica of one database (migrations take it too).
SCHEMA_LOCK_KEY = 0x6B736368  # "ksch"


async def create_tables(engine: AsyncEngine, tables: Sequence[Table]) -> None:
    """Create this service's tables (all services share SQLModel's metadata, each owns a subset).

    Replicas starting together would race in CREATE TABLE (PostgreSQL then fails on its catalog's
    unique index), so on PostgreSQL one replica at a time creates, under a transaction-scoped lock."""
    async with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            await connection.execute(text(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK_KEY})"))
        await connection.run_sync(SQLModel.metadata.create_all, tables=list(tables))


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


class ExactDecimal(TypeDecorator[Decimal]):
    """NUMERIC on PostgreSQL. SQLite has no decimal type and would round-trip through a float, so
    there the value is stored as a scaled integer (cents for money): comparisons and SUM() stay exact.

    Places: 2 for accounting-currency amounts; TRANSACTION_PLACES (3) for amounts in a transaction currency
    (KWD has three decimals), read back in money.tidy's form (two places unless the third is not zero), so a
    USD amount comes back exactly as from a two-place column. Headroom: NUMERIC(18, 3) holds the largest amount
    (15 integer digits, money.MAX_AMOUNT) with its three decimals; on SQLite that amount is 10^18 thousandths
    and int64 ends at 9.2 × 10^18, so a value always fits but a SQL SUM() of a three-place column would overflow
    past ~9 maximal amounts (two places: ~92). No service sums a transaction-currency column in SQL (totals
    are added in Python, exactly); ledger-posting's trial balance sums only the two-place accounting columns."""

    impl = Numeric
    cache_ok = True

    def __init__(self, places: int = 2) -> None:
        super().__init__()
        self.places = places
        self._quantum = Decimal(1).scaleb(-places)

    def __repr__(self) -> str:
        # How migrations render the type: TypeDecorator's own repr shows the Numeric and loses `places`.
        return f"{type(self).__name__}({self.places})"

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(18, self.places))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = Decimal(value)
        if dialect.name != "sqlite":
            return value
        return self._scaled(value)

    def _scaled(self, value: Decimal) -> int:
        scaled = value.scaleb(self.places)
        whole = int(scaled)
        if whole != scaled:
            raise ValueError(f"{value} has more than {self.places} decimals")
        return whole

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        """On SQLite, process_bind_param without TypeDecorator's wrapper around it (the impl, an integer, has no
        processor of its own): every amount of every insert goes through it."""
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)
        scaled = self._scaled

        def process(value: Any) -> int | None:
            if value is None:
                return None
            return scaled(value if type(value) is Decimal else Decimal(value))

        return process

    def process_result_value(self, value: Any, dialect: Any) -> Decimal | None:
        if value is None:
            return None
        if dialect.name != "sqlite":
            result = Decimal(value).quantize(self._quantum)
            return tidy(result) if self.places == TRANSACTION_PLACES else result
        # The scaled integer as a Decimal with exactly `places` decimals, or in money.tidy's form: a row of a busy
        # table is read hundreds of times a batch, and quantizing twice cost three times this.
        scaled = int(value)
        if self.places == TRANSACTION_PLACES:
            cents, thousandth = divmod(scaled, 10)
            if not thousandth:
                return Decimal(cents).scaleb(-2)
        return Decimal(scaled).scaleb(-self.places)


def money_field(**kwargs: Any) -> Any:
    """A SQLModel field holding an accounting-currency amount (Decimal, two places) exactly on every database."""
    return Field(sa_type=ExactDecimal(2), nullable=False, **kwargs)


def transaction_money_field(**kwargs: Any) -> Any:
    """A SQLModel field holding an amount in a transaction currency (up to three places: KWD) exactly."""
    return Field(sa_type=ExactDecimal(TRANSACTION_PLACES), nullable=False, **kwargs)


def optional_transaction_money_field(**kwargs: Any) -> Any:
    """Like transaction_money_field, nullable (default None)."""
    return Field(default=None, sa_type=ExactDecimal(TRANSACTION_PLACES), nullable=True, **kwargs)


def table_of(model: type[SQLModel]) -> Table:
    """A table model's table: SQLModel's metaclass sets `__table__`, its type hints do not declare it."""
    return model.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class _InsertPlan:
    sql: str
    row_values: Callable[[Mapping[str, Any]], tuple[Any, ...]]  # a row's values in column order
    converters: tuple[tuple[int, Callable[[Any], Any]], ...]  # (position, the column type's bind processor)
    by_column: bool = False  # one parameter per column, an array of every row's value (PostgreSQL)


@functools.lru_cache(maxsize=256)  # a service has a few dozen (table, keys); tests make many engines
def _insert_plan(table: Table, keys: tuple[str, ...], dialect: Dialect, skip_conflicts: bool) -> _InsertPlan:
    if dialect.paramstyle not in _PLACEHOLDERS:
        raise NotImplementedError(f"bulk inserts know no {dialect.paramstyle} placeholders")
    columns = [table.c[key] for key in keys]
    missing = [c.name for c in table.c if c.name not in keys and c.default is not None]
    if missing:  # a default only SQLAlchemy's own insert would fill in
        raise ValueError(f"rows for {table.name} leave out {', '.join(missing)}, which have defaults")
    quote = dialect.identifier_preparer
    into = f"INSERT INTO {quote.format_table(table)} ({', '.join(quote.format_column(c) for c in columns)}) "
    by_column = dialect.name == "postgresql"
    if by_column:
        # One statement whose parameters are the columns, as arrays: PostgreSQL runs an executemany as one
        # execution per row (~35 µs each), which made a batch's inserts wait longer than its CPU took. Rows go in
        # the arrays' order (WITH ORDINALITY … ORDER BY), so serial ids keep the order the rows were given in.
        names = [f"c{n}" for n in range(1, len(keys) + 1)]
        arrays = ", ".join(f"${n}::{column.type.compile(dialect=dialect)}[]" for n, column in enumerate(columns, 1))
        select = f"SELECT {', '.join(names)} FROM unnest({arrays}) WITH ORDINALITY AS rows({', '.join(names)}, n)"
        sql = f"{into}{select} ORDER BY n"
    else:
        placeholders = ", ".join(_PLACEHOLDERS[dialect.paramstyle](n) for n in range(1, len(keys) + 1))
        sql = f"{into}VALUES ({placeholders})"
    sql += " ON CONFLICT DO NOTHING" if skip_conflicts else ""
    converters = tuple(
        (position, _sqlite_date(converter) if dialect.name == "sqlite" and _is_date(column) else converter)
        for position, column in enumerate(columns)
        if (converter := column.type.dialect_impl(dialect).bind_processor(dialect)) is not None
    )
    # itemgetter gives a tuple for two keys or more, the value itself for one
    row_values = operator.itemgetter(*keys) if len(keys) > 1 else lambda row: (row[keys[0]],)
    return _InsertPlan(sql, row_values, converters, by_column)


def _is_date(column: Column[Any]) -> bool:
    return type(column.type) is sqlalchemy.Date


def _sqlite_date(converter: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """SQLite's DATE processor, with a date written by date.isoformat: the same text (YYYY-MM-DD, its storage
    format), without formatting it in Python; anything else (a datetime, a string) goes through the processor."""

    def process(value: Any) -> Any:
        return value.isoformat() if type(value) is date else converter(value)

    return process


_PLACEHOLDERS: dict[str, Callable[[int], str]] = {"qmark": lambda _: "?", "numeric_dollar": lambda n: f"${n}"}


def bulk_insert(
    dialect: Dialect, table: Table, rows: Sequence[Mapping[str, Any]], *, skip_conflicts: bool = False
) -> tuple[str, list[tuple[Any, ...]] | tuple[list[Any], ...]]:
    """The driver's INSERT statement and its parameters, for `exec_driver_sql`: one tuple per row (an executemany),
    or on PostgreSQL one list per column (a single statement, see _insert_plan).

    What SQLAlchemy's own `execute(insert(table), rows)` stores, with each column type's bind processor, without
    its per-row parameter compilation: that cost more than the rest of the insert on every hot path (~10 % of a
    service's CPU per message). Every row has the same keys; a column left out gets NULL or the database's
    default, so one with a Python-side default must be given."""
    keys = rows[0].keys()
    plan = _insert_plan(table, tuple(keys), dialect, skip_conflicts)
    parameters: list[tuple[Any, ...]] = []
    # What each converter made of each value object it was given, by identity: rows of a batch share some (one
    # commit time for every inbox and outbox row, one headers list for each message type), which a converter
    # would format again for each row. The rows hold every value until the call returns, so no id is reused.
    converters: list[tuple[int, Callable[[Any], Any], dict[int, Any]]] = [
        (position, converter, {}) for position, converter in plan.converters
    ]
    for row in rows:
        if row.keys() != keys:
            raise ValueError(f"rows for {table.name} differ in their keys: {sorted(row)} and {sorted(keys)}")
        values = plan.row_values(row)
        if converters:
            converted = list(values)
            for position, converter, made in converters:
                value = converted[position]
                if (result := made.get(id(value), _NOTHING)) is _NOTHING:
                    result = made[id(value)] = converter(value)
                converted[position] = result
            values = tuple(converted)
        parameters.append(values)
    if plan.by_column:
        return plan.sql, tuple(list(column) for column in zip(*parameters, strict=True))
    return plan.sql, parameters


_NOTHING = object()


async def insert_rows(
    session: AsyncSession, table: Table, rows: Sequence[Mapping[str, Any]], *, skip_conflicts: bool = False
) -> None:
    """Insert `rows` (plain values) in one executemany, in the session's transaction (see bulk_insert).
    `skip_conflicts`: ON CONFLICT DO NOTHING."""
    if rows:
        connection = await session.connection()
        await connection.exec_driver_sql(*bulk_insert(connection.dialect, table, rows, skip_conflicts=skip_conflicts))


async def insert_new(session: AsyncSession, model: type[SQLModel], rows: Sequence[dict[str, Any]]) -> None:
    """INSERT … ON CONFLICT DO NOTHING: a row whose key is already stored (or comes earlier in `rows`)
    is ignored, also when a concurrent transaction stores it at the same moment. One executemany."""
    await insert_rows(session, table_of(model), rows, skip_conflicts=True)
