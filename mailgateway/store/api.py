"""Queries of the HTTP API: API tokens (stored as digests) and contacts seen in given inboxes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, Select, func, select, text, update
from sqlalchemy.sql.schema import Table

from mailgateway.store.outbound import outbound_queue
from mailgateway.store.repo import Store, contacts, conversations
from mailgateway.store.schema import ApiToken, utcnow

api_tokens: Table = ApiToken.__table__  # type: ignore[assignment]


async def ping(store: Store) -> None:
    """One round trip to the database (raises when it cannot be reached)."""
    async with store.engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


async def outbound_counts(store: Store) -> dict[str, int]:
    """How many outbound queue rows are in each state."""
    async with store.engine.connect() as connection:
        result = await connection.execute(
            select(outbound_queue.c.state, func.count()).group_by(outbound_queue.c.state)
        )
        return {state: int(count) for state, count in result.all()}


async def add_token(store: Store, user_id: str, digest: str, prefix: str) -> int:
    """Store a new token's digest for the user; its id."""
    async with store.transaction() as connection:
        statement = api_tokens.insert().values(
            user_id=user_id, digest=digest, prefix=prefix, created_at=utcnow()
        )
        result = await connection.execute(statement.returning(api_tokens.c.id))
        return int(result.scalar_one())


async def token_user(store: Store, digest: str) -> str | None:
    """The user whose unrevoked token has this digest, or None."""
    async with store.engine.connect() as connection:
        found = await connection.scalar(
            select(api_tokens.c.user_id).where(
                api_tokens.c.digest == digest, api_tokens.c.revoked_at.is_(None)
            )
        )
    return None if found is None else str(found)


async def token_rows(store: Store, user_id: str | None = None) -> list[Row[Any]]:
    """Tokens (without digests), oldest first, optionally of one user."""
    statement: Select[Any] = select(
        api_tokens.c.id,
        api_tokens.c.user_id,
        api_tokens.c.prefix,
        api_tokens.c.created_at,
        api_tokens.c.revoked_at,
    ).order_by(api_tokens.c.id)
    if user_id is not None:
        statement = statement.where(api_tokens.c.user_id == user_id)
    async with store.engine.connect() as connection:
        return list((await connection.execute(statement)).all())


async def revoke_token(store: Store, token_id: int) -> bool:
    """Revoke a token; False when there is no such unrevoked token."""
    async with store.transaction() as connection:
        result = await connection.execute(
            update(api_tokens)
            .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        return bool(result.rowcount)


def _contacts_in(inboxes: Sequence[str] | None) -> Any:
    """Contacts with their conversation count, in the inboxes (all when None)."""
    joined = conversations.c.contact_id == contacts.c.id
    if inboxes is not None:
        joined = joined & conversations.c.inbox.in_(list(inboxes))
    statement = (
        select(
            contacts.c.id,
            contacts.c.email,
            contacts.c.name,
            contacts.c.owner,
            contacts.c.created_at,
            func.count(conversations.c.id).label("conversations"),
            func.max(conversations.c.updated_at).label("last_activity_at"),
        )
        .outerjoin(conversations, joined)
        .group_by(contacts.c.id)
    )
    if inboxes is not None:
        statement = statement.having(func.count(conversations.c.id) > 0)
    return statement


async def contact_rows(
    store: Store, inboxes: Sequence[str] | None, email: str | None = None, limit: int | None = None
) -> list[Row[Any]]:
    """Contacts that have a conversation in one of the inboxes (every contact when None), the
    most recently active first; or the one with this e-mail address."""
    statement = _contacts_in(inboxes).order_by(
        func.max(conversations.c.updated_at).desc().nulls_last(), contacts.c.id.desc()
    )
    if email is not None:
        statement = statement.where(contacts.c.email == email.strip().lower())
    if limit is not None:
        statement = statement.limit(limit)
    async with store.engine.connect() as connection:
        return list((await connection.execute(statement)).all())


async def contact_conversation_ids(
    store: Store, contact_id: int, inboxes: Sequence[str] | None
) -> list[int]:
    """The ids of the contact's conversations in the inboxes (all when None)."""
    statement = select(conversations.c.id).where(conversations.c.contact_id == contact_id)
    if inboxes is not None:
        statement = statement.where(conversations.c.inbox.in_(list(inboxes)))
    async with store.engine.connect() as connection:
        return [int(found) for found in (await connection.scalars(statement)).all()]
