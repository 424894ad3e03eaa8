"""API tokens: `tokens create/list/revoke`, only digests stored, and the api_tokens migration."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, select

from mailgateway.config import load_config
from mailgateway.store.api import api_tokens
from mailgateway.store.db import create_engine
from mailgateway.store.repo import Store
from mailgateway.store.schema import Base
from mailgateway.tokens import authenticate, token_digest
from tests.cli_support import run


def stored_tokens(db_url: str) -> list[Any]:
    """Every row of api_tokens."""

    async def read() -> list[Any]:
        store = Store(create_engine(db_url))
        try:
            async with store.engine.connect() as connection:
                return list((await connection.execute(select(api_tokens))).all())
        finally:
            await store.close()

    return asyncio.run(read())


def user_of(config_dir: Path, db_url: str, token: str) -> str | None:
    """The user a token authenticates as, or None."""

    async def check() -> str | None:
        store = Store(create_engine(db_url))
        try:
            user = await authenticate(load_config(config_dir), store, token)
        finally:
            await store.close()
        return None if user is None else user.id

    return asyncio.run(check())


def test_create_prints_the_token_once_and_stores_its_digest(config_dir: Path, db_url: str) -> None:
    """`tokens create` prints only the token on stdout; the database holds its SHA-256 and
    never the token itself."""
    result = run("tokens", "create", "alice", "--config", config_dir)
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert token.startswith("mgt_") and len(token) > 40 and "\n" not in token
    [row] = stored_tokens(db_url)
    assert (row.user_id, row.digest) == ("alice", token_digest(token))
    assert all(token not in str(value) for value in row)
    assert user_of(config_dir, db_url, token) == "alice"


def test_two_tokens_differ(config_dir: Path) -> None:
    """Each `tokens create` issues a new random token."""
    first = run("tokens", "create", "alice", "--config", config_dir).stdout.strip()
    second = run("tokens", "create", "alice", "--config", config_dir).stdout.strip()
    assert first != second


def test_create_for_unknown_user_is_refused(config_dir: Path, db_url: str) -> None:
    """A user missing from users.toml gets no token: exit 1 with the reason."""
    result = run("tokens", "create", "mallory", "--config", config_dir)
    assert result.exit_code == 1
    assert "mallory" in result.stderr
    assert stored_tokens(db_url) == []


def test_list_never_shows_the_token(config_dir: Path) -> None:
    """`tokens list --json` shows id, user and the first characters, not the token."""
    token = run("tokens", "create", "bob", "--config", config_dir).stdout.strip()
    result = run("tokens", "list", "--json", "--config", config_dir)
    [listed] = json.loads(result.stdout)
    assert (listed["user"], listed["prefix"], listed["revoked_at"]) == ("bob", token[:12], None)
    assert token not in result.stdout


def test_revoke_stops_the_token(config_dir: Path, db_url: str) -> None:
    """A revoked token no longer authenticates; revoking it again is refused."""
    token = run("tokens", "create", "bob", "--config", config_dir).stdout.strip()
    [row] = stored_tokens(db_url)
    assert run("tokens", "revoke", str(row.id), "--config", config_dir).exit_code == 0
    assert user_of(config_dir, db_url, token) is None
    again = run("tokens", "revoke", str(row.id), "--config", config_dir)
    assert again.exit_code == 1 and "no active token" in again.stderr


def test_lookalike_tokens_do_not_authenticate(config_dir: Path, db_url: str) -> None:
    """A token with one character changed, or without its prefix, authenticates nobody."""
    token = run("tokens", "create", "alice", "--config", config_dir).stdout.strip()
    changed = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert user_of(config_dir, db_url, changed) is None
    assert user_of(config_dir, db_url, token.removeprefix("mgt_")) is None


def test_api_tokens_table_matches_the_model(db_url: str) -> None:
    """The migrated api_tokens table is exactly what the model declares (autogenerate finds no
    difference), on SQLite and PostgreSQL."""

    def differences(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection)
        return [
            diff for diff in compare_metadata(context, Base.metadata) if "api_tokens" in repr(diff)
        ]

    async def compare() -> list[Any]:
        engine = create_engine(db_url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(differences)
        finally:
            await engine.dispose()

    assert asyncio.run(compare()) == []
