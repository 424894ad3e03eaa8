"""Engine set-up (SQLite durability pragmas, PostgreSQL by URL) and schema migration (Alembic)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Connection, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS = Path(__file__).with_name("migrations")

READ_ONLY = "mailgateway_read_only"  # execution option: a SQLite read that takes no write lock

SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=10000",
)


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    """Make every SQLite connection durable (WAL + FULL fsync) and patient with writers; take
    over transaction control from the driver so that `_on_sqlite_begin` decides how to begin."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in SQLITE_PRAGMAS:
        cursor.execute(pragma)
    cursor.close()


def _on_sqlite_begin(connection: Any) -> None:
    """Begin every transaction as IMMEDIATE: a transaction that reads, then writes, would
    otherwise fail with SQLITE_BUSY instead of waiting when another writer committed between.
    A connection marked READ_ONLY begins a deferred one: it takes no write lock, so in WAL mode
    it never waits for a writer (nor makes one wait)."""
    if connection.get_execution_options().get(READ_ONLY):
        connection.exec_driver_sql("BEGIN")
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_engine(async_url: str) -> AsyncEngine:
    """An async engine for the URL; SQLite files get their folder created and durability pragmas."""
    url = make_url(async_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 10})
        event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
        event.listen(engine.sync_engine, "begin", _on_sqlite_begin)
        return engine
    return create_async_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def _alembic_config(connection: Connection) -> AlembicConfig:
    """An Alembic configuration that runs our bundled migrations on the given connection."""
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection, revision: str) -> None:
    """Run the migrations up to the revision on a synchronous connection."""
    command.upgrade(_alembic_config(connection), revision)


def _current(connection: Connection) -> str | None:
    """The schema revision the database is at, or None when it was never migrated."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str:
    """The newest revision the bundled migrations know."""
    from alembic.script import ScriptDirectory

    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Create or migrate the schema to the revision (default: the newest)."""
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade, revision)


async def current_revision(engine: AsyncEngine) -> str | None:
    """The schema revision the database is at."""
    async with engine.connect() as connection:
        return await connection.run_sync(_current)
