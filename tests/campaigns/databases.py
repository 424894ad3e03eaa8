"""Fresh, migrated databases for the long campaign runs (the tests use conftest's fixtures)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg

from mailgateway.store.db import create_engine, upgrade
from tests.conftest import PG_ADMIN, pg_url


async def migrate(url: str) -> None:
    """Bring a database to the current schema."""
    engine = create_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


async def _admin(statement: str) -> None:
    """One administrative statement on the PostgreSQL server."""
    connection = await asyncpg.connect(PG_ADMIN, timeout=5)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def campaign_database(kind: str, workdir: Path) -> AsyncIterator[str]:
    """A migrated, empty database of the kind ('sqlite' or 'postgresql'); its URL. A PostgreSQL
    database is dropped afterwards."""
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{workdir / 'var' / 'mailgateway.db'}"
        await migrate(url)
        yield url
        return
    name = f"mg_campaign_{uuid.uuid4().hex[:10]}"
    await _admin(f'CREATE DATABASE "{name}"')
    try:
        url = pg_url(name)
        await migrate(url)
        yield url
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
