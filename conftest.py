"""Fixtures for every test suite: a real broker, real databases (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from kredit_shared.auth import ensure_local_key
from kredit_shared.testing import BrokerUnderTest, broker_under_test, fresh_postgres_database, postgres_server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files holding a slow test first, each file's tests kept together (a stable sort by file): the
    workers of `-n 2 --dist loadfile` then end on the quick files together, not one waiting on the other's
    last long file."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


@pytest.fixture(scope="session", autouse=True)
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every service of the session (in-process or a process) verifies tokens with this local key;
    `kredit_shared.testing.auth_header` / `token_header` mint them."""
    key = ensure_local_key(tmp_path_factory.mktemp("auth") / "signing.key")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUTH_SIGNING_KEY_FILE", str(key))
        patch.delenv("AUTH_JWKS_URL", raising=False)
        yield key


@pytest.fixture(scope="session")
def kafka() -> Iterator[BrokerUnderTest]:
    with broker_under_test() as broker:
        yield broker


@pytest.fixture(scope="session")
async def postgres_admin_url() -> AsyncIterator[str | None]:
    async with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_admin_url: str | None
) -> AsyncIterator[str]:
    """A fresh, empty database of each kind; persistence tests run once per kind."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
        return
    if postgres_admin_url is None:
        pytest.skip("no PostgreSQL server reachable and no Docker engine for a testcontainer")
    async with fresh_postgres_database(postgres_admin_url) as url:
        yield url
