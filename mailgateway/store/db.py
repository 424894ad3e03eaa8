"""Engine set-up (SQLite durability pragmas, PostgreSQL by URL) and schema migration (Alembic)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Connection, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

MIGRATIONS = Path(__file__).with_name("migrations")

# A pooled PostgreSQL connection is pinged before use only after it has sat idle this long.
# SQLAlchemy's pre-ping on every check-out costs two round trips on asyncpg (a BEGIN and a
# ROLLBACK) for each transaction: under intake load about 0.1 ms of CPU a message and most of
# a small commit's wall time. A connection used within the last second is trusted; should the
# server vanish within that second, that transaction fails (a 451 at intake, the worker's next
# poll again) and SQLAlchemy replaces the pool's connections.
IDLE_PING = 1.0

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
    engine = create_async_engine(url, pool_size=10, max_overflow=10)
    _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: AsyncEngine) -> None:
    """Ping a pooled connection at check-out when it was idle for IDLE_PING seconds or more; a
    failed ping makes the pool replace it (SQLAlchemy's DisconnectionError contract)."""
    pool = engine.sync_engine.pool
    dialect = engine.sync_engine.dialect

    def checked_in(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["idle_since"] = time.monotonic()

    def checked_out(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since < IDLE_PING:
            return  # a new connection, or one in use a moment ago
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise DisconnectionError(str(error)) from error

    event.listen(pool, "checkin", checked_in)
    event.listen(pool, "checkout", checked_out)


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
