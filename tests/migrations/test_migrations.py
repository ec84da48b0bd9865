"""Schema migrations of every service, on SQLite and PostgreSQL: an empty database is migrated, a database
of the release before migrations is adopted (or refused, naming what differs), a newer schema is refused,
and the models agree with the migrations (a model change without a migration fails here)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, MetaData, String, inspect, text
from sqlmodel import SQLModel

from kredit_shared.database import create_engine
from kredit_shared.migrations import INITIAL_REVISION, Migrations, SchemaError, index_names, of_package, upgrade
from kredit_shared.testing import isolated_kafka

PACKAGES = {
    "invoicing": "kredit_invoicing",
    "settlement": "kredit_settlement",
    "collections": "kredit_collections",
    "ledger-posting": "kredit_ledger_posting",
}
services = pytest.mark.parametrize("service", list(PACKAGES))


async def revision_of(engine) -> tuple[str, ...]:
    async with engine.connect() as connection:
        return await connection.run_sync(lambda c: MigrationContext.configure(c).get_current_heads())


async def table_names(engine) -> set[str]:
    async with engine.connect() as connection:
        return set(await connection.run_sync(lambda c: inspect(c).get_table_names()))


async def model_differences(engine, migrations: Migrations) -> list:
    async with engine.connect() as connection:
        return await connection.run_sync(
            lambda c: compare_metadata(MigrationContext.configure(c), migrations.metadata())
        )


async def create_like_the_previous_release(engine, migrations: Migrations) -> None:
    """What start-up did before migrations: create_all of the models, no alembic_version. Once later
    revisions exist, the models are ahead of that release: its schema is then revision 0001's."""
    async with engine.begin() as connection:
        if migrations.script().get_current_head() == INITIAL_REVISION:
            await connection.run_sync(SQLModel.metadata.create_all, tables=list(migrations.tables))
        else:
            await connection.run_sync(lambda c: command.upgrade(migrations.config(c), INITIAL_REVISION))
            await connection.execute(text("DROP TABLE alembic_version"))


@services
async def test_an_empty_database_is_migrated_to_the_newest_revision_with_every_model_table(database_url, service):
    migrations = of_package(service, PACKAGES[service])
    engine = create_engine(database_url)
    try:
        await upgrade(engine, migrations)
        assert await revision_of(engine) == (migrations.script().get_current_head(),)
        assert {t.name for t in migrations.tables} <= await table_names(engine)
        await upgrade(engine, migrations)  # a second start finds nothing to do
        assert await revision_of(engine) == (migrations.script().get_current_head(),)
    finally:
        await engine.dispose()


@services
async def test_the_models_and_the_migrations_agree(database_url, service):
    """Fails when a table or column changes in the models without a migration:
    `make migration SERVICE=<service> MSG=...` writes it."""
    migrations = of_package(service, PACKAGES[service])
    engine = create_engine(database_url)
    try:
        await upgrade(engine, migrations)
        assert await model_differences(engine, migrations) == []
        # Autogenerate skips an index on an expression (its warning): the migrations must make it by hand.
        async with engine.connect() as connection:
            for table in migrations.tables:
                declared = {i.name for i in table.indexes}
                assert declared <= await connection.run_sync(index_names, table.name), table.name
    finally:
        await engine.dispose()


async def test_a_model_change_without_a_migration_is_found(database_url):
    """The check above can fail: a column added to a model shows as a difference."""
    migrations = of_package("invoicing", "kredit_invoicing")
    engine = create_engine(database_url)
    try:
        await upgrade(engine, migrations)
        changed = MetaData()
        for table in migrations.tables:
            copy = table.to_metadata(changed)
            if table.name == "invoicing_invoice":
                copy.append_column(Column("purchase_order", String(), nullable=True))
        changed_migrations = Migrations("invoicing", migrations.location, list(changed.tables.values()))
        differences = await model_differences(engine, changed_migrations)
        assert [(d[0], d[2], d[3].name) for d in differences] == [("add_column", "invoicing_invoice", "purchase_order")]
    finally:
        await engine.dispose()


@services
async def test_a_database_made_before_migrations_is_adopted_and_keeps_its_rows(database_url, service):
    migrations = of_package(service, PACKAGES[service])
    engine = create_engine(database_url)
    try:
        await create_like_the_previous_release(engine, migrations)
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO inbox_processed_message (consumer, message_id, topic, processed_at) "
                    "VALUES ('c', 'm-1', 't', CURRENT_TIMESTAMP)"
                )
            )
        await upgrade(engine, migrations)
        assert await revision_of(engine) == (migrations.script().get_current_head(),)
        assert await model_differences(engine, migrations) == []
        async with engine.connect() as connection:
            kept = (await connection.execute(text("SELECT message_id FROM inbox_processed_message"))).scalars().all()
        assert kept == ["m-1"]
    finally:
        await engine.dispose()


async def test_a_database_made_before_migrations_that_differs_is_refused_naming_the_difference(database_url):
    migrations = of_package("invoicing", "kredit_invoicing")
    engine = create_engine(database_url)
    try:
        await create_like_the_previous_release(engine, migrations)
        async with engine.begin() as connection:
            await connection.execute(text("ALTER TABLE outbox_message DROP COLUMN created_at"))
            await connection.execute(text("DROP TABLE invoicing_voucher_line"))
        with pytest.raises(SchemaError) as refused:
            await upgrade(engine, migrations)
        message = str(refused.value)
        assert "no schema revision" in message
        assert "outbox_message lacks column created_at" in message
        assert "table invoicing_voucher_line is missing" in message
        assert await revision_of(engine) == ()  # nothing was stamped or created
        assert "invoicing_voucher_line" not in await table_names(engine)
    finally:
        await engine.dispose()


async def test_a_database_at_a_revision_newer_than_the_code_is_refused(database_url):
    migrations = of_package("settlement", "kredit_settlement")
    engine = create_engine(database_url)
    try:
        await upgrade(engine, migrations)
        async with engine.begin() as connection:
            await connection.execute(text("UPDATE alembic_version SET version_num = '0099'"))
        with pytest.raises(SchemaError) as refused:
            await upgrade(engine, migrations)
        assert "0099" in str(refused.value) and "newer release" in str(refused.value)
        assert await revision_of(engine) == ("0099",)
    finally:
        await engine.dispose()


@pytest.mark.slow
def test_the_service_refuses_to_start_on_a_newer_schema_with_one_clear_line(kafka, tmp_path):
    database = tmp_path / "invoicing.db"
    engine_url = f"sqlite+aiosqlite:///{database}"

    async def migrate_then_pretend_newer() -> None:
        engine = create_engine(engine_url)
        try:
            await upgrade(engine, of_package("invoicing", "kredit_invoicing"))
            async with engine.begin() as connection:
                await connection.execute(text("UPDATE alembic_version SET version_num = '0099'"))
        finally:
            await engine.dispose()

    asyncio.run(migrate_then_pretend_newer())
    settings = isolated_kafka(kafka)
    env = os.environ | {
        "DATABASE_URL": engine_url,
        "HTTP_PORT": "0",
        "KAFKA_BOOTSTRAP_SERVERS": settings["kafka_bootstrap_servers"],
        "TOPIC_PREFIX": settings["topic_prefix"],
    }
    result = subprocess.run(
        [sys.executable, "-m", "kredit_invoicing"], env=env, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("invoicing: the database is at schema revision 0099"), result.stderr


async def test_ten_replicas_migrating_one_database_at_once_all_start(database_url):
    """Replicas starting together must not race in CREATE TABLE (PostgreSQL fails on its catalog index;
    SQLite on 'table already exists'): one migrates, the others wait and find it done."""
    migrations = of_package("ledger-posting", "kredit_ledger_posting")
    engines = [create_engine(database_url) for _ in range(10)]
    try:
        await asyncio.gather(*(upgrade(engine, migrations) for engine in engines))
        assert await revision_of(engines[0]) == (migrations.script().get_current_head(),)
    finally:
        await asyncio.gather(*(engine.dispose() for engine in engines))


def test_the_migrations_script_finds_no_model_change_without_a_migration():
    script = Path(__file__).resolve().parents[2] / "scripts" / "migrations.py"
    result = subprocess.run([sys.executable, str(script), "check"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("models and migrations agree") == len(PACKAGES)
