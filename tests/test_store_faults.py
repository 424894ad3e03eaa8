"""Database errors that mean "the database is unavailable" are told from the message's own faults,
on errors the real databases raise."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from mailgateway.store import db
from mailgateway.store.db import create_engine
from mailgateway.store.faults import database_unavailable
from mailgateway.store.repo import Store
from tests.conftest import PG_ADMIN, pg_url


async def raised(store: Store, *statements: str) -> BaseException:
    """The error the statements raise in one transaction."""
    with pytest.raises(Exception) as caught:
        async with store.engine.begin() as connection:
            for statement in statements:
                await connection.execute(text(statement))
    return caught.value


@pytest.mark.parametrize(
    ("pragma", "statement"),
    [
        (
            "PRAGMA max_page_count=1",
            "INSERT INTO contacts (email, name, created_at) "
            "VALUES (hex(randomblob(200000)), '', CURRENT_TIMESTAMP)",
        ),
        ("PRAGMA query_only=ON", "DELETE FROM contacts"),
    ],
    ids=["disk-full", "read-only"],
)
async def test_sqlite_full_and_read_only_are_unavailable(
    sqlite_url: str, pragma: str, statement: str
) -> None:
    """SQLITE_FULL and SQLITE_READONLY say the database is unavailable."""
    store = Store(create_engine(sqlite_url))
    try:
        assert database_unavailable(await raised(store, pragma, statement))
    finally:
        await store.close()


async def _admin(*statements: str) -> None:
    connection = await asyncpg.connect(PG_ADMIN, timeout=5)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


async def test_postgresql_lost_and_refused_connections_are_unavailable(pg_database: str) -> None:
    """A session terminated mid-transaction, and a database that refuses connections, say the
    database is unavailable."""
    store = Store(create_engine(pg_url(pg_database)))
    terminate = (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE datname = '{pg_database}' AND pid <> pg_backend_pid()"
    )
    try:
        with pytest.raises(DBAPIError) as lost:
            async with store.engine.begin() as connection:
                await connection.execute(text("SELECT 1"))
                await _admin(terminate)
                await connection.execute(text("SELECT 1"))
        assert database_unavailable(lost.value)
        await _admin(f'ALTER DATABASE "{pg_database}" WITH ALLOW_CONNECTIONS false', terminate)
        await store.engine.dispose()
        assert database_unavailable(await raised(store, "SELECT 1"))
    finally:
        await _admin(f'ALTER DATABASE "{pg_database}" WITH ALLOW_CONNECTIONS true')
        await store.close()


async def test_message_faults_are_not_unavailability(store: Store) -> None:
    """A duplicate key or a missing value is the work's fault, not the database's."""
    insert = (
        "INSERT INTO contacts (email, name, created_at) VALUES ('a@x.test', '', CURRENT_TIMESTAMP)"
    )
    missing = "INSERT INTO contacts (email, name, created_at) VALUES (NULL, '', CURRENT_TIMESTAMP)"
    assert not database_unavailable(await raised(store, insert, insert))
    assert not database_unavailable(await raised(store, missing))


def test_connection_refused_is_unavailable() -> None:
    """No server listening (connection refused) says the database is unavailable; a plain bug
    does not."""
    assert database_unavailable(ConnectionRefusedError(111, "Connection refused"))
    assert not database_unavailable(ValueError("bug"))


async def backend_pids(store: Store, count: int) -> set[int]:
    """The server processes behind `count` pooled connections checked out together."""
    connections = [await store.engine.connect() for _ in range(count)]
    try:
        return {await c.scalar(text("SELECT pg_backend_pid()")) for c in connections}
    finally:
        for connection in connections:
            await connection.close()


async def test_postgresql_idle_connection_killed_is_replaced_before_use(
    pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pooled connections whose server sessions ended while idle are pinged and replaced at
    check-out: the next transactions succeed on new sessions."""
    monkeypatch.setattr(db, "IDLE_PING", 0.0)
    store = Store(create_engine(pg_url(pg_database)))
    try:
        before = await backend_pids(store, 3)
        await _admin(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
            f"WHERE datname = '{pg_database}' AND pid <> pg_backend_pid()"
        )
        after = await backend_pids(store, 3)
        assert len(after) == 3
        assert not after & before
    finally:
        await store.close()


async def test_postgresql_connection_in_use_a_moment_ago_is_not_pinged(
    pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection checked in less than IDLE_PING ago is handed out without a ping (so a
    session ended in that moment fails the next transaction, which reports it unavailable)."""
    monkeypatch.setattr(db, "IDLE_PING", 3600.0)
    store = Store(create_engine(pg_url(pg_database)))
    try:
        await backend_pids(store, 1)
        await _admin(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
            f"WHERE datname = '{pg_database}' AND pid <> pg_backend_pid()"
        )
        failed = await raised(store, "SELECT 1")
        assert database_unavailable(failed)
        assert len(await backend_pids(store, 1)) == 1
    finally:
        await store.close()
