"""Shared fixtures: the two databases (SQLite and PostgreSQL), a configuration folder, a store."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from mailgateway.store.db import create_engine, upgrade
from mailgateway.store.repo import Store
from tests.support import write_config
from tests.system import require_system

PG_ADMIN = os.environ.get("MAILGATEWAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def pg_url(database: str, driver: str = "postgresql+asyncpg") -> str:
    """The test server's URL for one database."""
    base = PG_ADMIN.rsplit("/", 1)[0].split("://", 1)[1]
    return f"{driver}://{base}/{database}"


async def _pg_execute(*statements: str) -> None:
    """Run administrative statements on the test server."""
    connection = await asyncpg.connect(PG_ADMIN, timeout=5)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


async def _migrate(url: str) -> None:
    """Bring a database to the current schema with the project's own migrations."""
    engine = create_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A PostgreSQL database migrated once, copied for each test."""
    name = f"mg_template_{uuid.uuid4().hex[:8]}"
    try:
        asyncio.run(_pg_execute(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as error:
        require_system(f"PostgreSQL at {PG_ADMIN} is not reachable ({type(error).__name__})")
    asyncio.run(_migrate(pg_url(name)))
    yield name
    asyncio.run(_pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def pg_database(pg_template: str) -> Iterator[str]:
    """A migrated, empty PostgreSQL database (its name), dropped afterwards."""
    name = f"mg_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"'))
    yield name
    asyncio.run(_pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A migrated, empty SQLite database file."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'var' / 'mailgateway.db'}"
    asyncio.run(_migrate(url))
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """A migrated, empty database of each kind; the test runs once per kind."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return pg_url(request.getfixturevalue("pg_database"))


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    """The gateway's store on the test database."""
    store = Store(create_engine(db_url))
    yield store
    await store.close()


@pytest.fixture
def config_dir(tmp_path: Path, db_url: str) -> Path:
    """A configuration folder (two inboxes, one disabled) using the test database."""
    return write_config(tmp_path / "config", db_url)
