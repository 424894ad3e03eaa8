"""Queries of threading, auto-replies, bounces and duplicates, run in the worker's transaction.

`record_bounce` is also the outbound side's entry point: it marks one of our sent messages
failed (or delayed) for a recipient, with the remote diagnostic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, FromClause, Select, bindparam, select, union, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailgateway.domain import (
    ConversationFacts,
    ConversationStatus,
    DeliveryStatus,
    Direction,
    OutboundState,
)
from mailgateway.store.outbound import outbound_queue
from mailgateway.store.repo import _insert, _inserted_id, contacts, conversations, messages
from mailgateway.store.schema import utcnow

PARTICIPANT_ROWS = 1000
COPY_ROWS = 50
DELIVERY_ERROR_LIMIT = 4000


async def conversations_by_message_ids(
    connection: AsyncConnection, inbox: str, message_ids: Sequence[str]
) -> dict[str, ConversationFacts]:
    """The conversations of the inbox holding these (normalised) Message-IDs, inbound or
    ours, with their participants; when an id is stored twice, the conversation that stored
    it first."""
    if not message_ids:
        return {}
    source = conversations.join(messages, messages.c.conversation_id == conversations.c.id)
    result = await connection.execute(
        _facts_select(source, messages.c.message_id)
        .where(messages.c.inbox == inbox, messages.c.message_id.in_(list(message_ids)))
        .order_by(messages.c.id.desc())
    )
    rows = {row.message_id: row for row in result.all()}
    people = await _participants(connection, {int(row.id) for row in rows.values()})
    return {message_id: _facts(row, people) for message_id, row in rows.items()}


async def conversation_by_token(
    connection: AsyncConnection, inbox: str, token: str
) -> ConversationFacts | None:
    """The inbox's conversation with this reply token, or None."""
    result = await connection.execute(BY_TOKEN, {"token": token.lower(), "inbox": inbox})
    row = result.first()
    return None if row is None else _facts(row)


async def conversation_by_subject(
    connection: AsyncConnection, inbox: str, contact_id: int, subject_key: str
) -> ConversationFacts | None:
    """The inbox's most recently active open conversation with this contact and subject key."""
    parameters = {"inbox": inbox, "contact_id": contact_id, "subject_key": subject_key}
    row = (await connection.execute(BY_SUBJECT, parameters)).first()
    return None if row is None else _facts(row)


async def conversation_of_message(
    connection: AsyncConnection, inbox: str, message_id: str
) -> ConversationFacts | None:
    """The conversation of the inbox's first stored message with this Message-ID (inbound or
    ours), with its participants: where a bounce of that message belongs."""
    source = conversations.join(messages, messages.c.conversation_id == conversations.c.id)
    result = await connection.execute(
        _facts_select(source)
        .where(messages.c.inbox == inbox, messages.c.message_id == message_id)
        .order_by(messages.c.id)
        .limit(1)
    )
    row = result.first()
    if row is None:
        return None
    return _facts(row, await _participants(connection, {int(row.id)}))


def _facts_select(source: FromClause, *extra: ColumnElement[Any]) -> Select[Any]:
    """Status, contact and last activity of the conversations in `source`."""
    joined = source.outerjoin(contacts, contacts.c.id == conversations.c.contact_id)
    columns = (
        conversations.c.id,
        conversations.c.status,
        conversations.c.contact_id,
        conversations.c.updated_at,
        contacts.c.email.label("contact_email"),
    )
    return select(*columns, *extra).select_from(joined)


# Built once (statement construction costs more than these lookups); run with parameters.
BY_TOKEN = _facts_select(conversations).where(
    conversations.c.reply_token == bindparam("token"), conversations.c.inbox == bindparam("inbox")
)
BY_SUBJECT = (
    _facts_select(conversations)
    .where(
        conversations.c.inbox == bindparam("inbox"),
        conversations.c.contact_id == bindparam("contact_id"),
        conversations.c.subject_key == bindparam("subject_key"),
        conversations.c.status == ConversationStatus.OPEN,
    )
    .order_by(conversations.c.updated_at.desc(), conversations.c.id.desc())
    .limit(1)
)


def _facts(row: Any, people: Mapping[int, set[str]] | None = None) -> ConversationFacts:
    """A conversation's facts from a `_facts_select` row (and its participants, if read)."""
    found = (people or {}).get(int(row.id), set())
    return ConversationFacts(
        id=int(row.id),
        status=ConversationStatus(row.status),
        contact_id=row.contact_id,
        contact_email=row.contact_email,
        last_activity=row.updated_at,
        participants=frozenset(found | ({row.contact_email} - {None})),
    )


async def _participants(connection: AsyncConnection, ids: set[int]) -> dict[int, set[str]]:
    """Every sender and To/Cc recipient of the conversations' newest messages, by conversation."""
    if not ids:
        return {}
    result = await connection.execute(
        select(messages.c.conversation_id, messages.c.from_email, messages.c.to, messages.c.cc)
        .where(messages.c.conversation_id.in_(list(ids)))
        .order_by(messages.c.id.desc())
        .limit(PARTICIPANT_ROWS)
    )
    found: dict[int, set[str]] = {}
    for row in result.all():
        people = found.setdefault(int(row.conversation_id), set())
        people.update(_emails([row.from_email, *(row.to or []), *(row.cc or [])]))
    return found


def _emails(values: Iterable[Any]) -> Iterable[str]:
    """Lower-cased addresses from stored address values ({"email": ...} objects or strings)."""
    for value in values:
        email = value.get("email") if isinstance(value, dict) else value
        if isinstance(email, str) and "@" in email:
            yield email.strip().lower()


@dataclass(frozen=True, slots=True)
class StoredCopy:
    """A stored message that shares a new message's Message-ID or content hash."""

    id: int
    conversation_id: int
    thread_reason: str
    direction: str
    message_id: str
    content_hash: str | None


_COPY_COLUMNS = (
    messages.c.id,
    messages.c.conversation_id,
    messages.c.thread_reason,
    messages.c.direction,
    messages.c.message_id,
    messages.c.content_hash,
)


def _copies_statement() -> Select[Any]:
    """The inbox's messages with a Message-ID or a content hash, those with the content hash
    first: two index lookups (inbox + content hash, inbox + Message-ID), never a walk through
    the inbox. Built once; run with `inbox`, `message_id` and `content_hash`."""
    columns = _COPY_COLUMNS
    inbox = messages.c.inbox == bindparam("inbox")
    same_content = select(*columns).where(inbox, messages.c.content_hash == bindparam("hash"))
    same_id = select(*columns).where(inbox, messages.c.message_id == bindparam("message_id"))
    found = union(
        select(same_content.subquery()), select(same_id.limit(COPY_ROWS).subquery())
    ).subquery()
    return (
        select(found)
        .order_by((found.c.content_hash == bindparam("hash")).desc(), found.c.id)
        .limit(COPY_ROWS)
    )


STORED_COPIES = _copies_statement()


async def stored_copies(
    connection: AsyncConnection, inbox: str, message_id: str, content_hash: str
) -> list[StoredCopy]:
    """The inbox's messages with this Message-ID or this content hash, those with the content
    hash first (at most COPY_ROWS): duplicates, reused ids and our own mail coming back."""
    result = await connection.execute(
        STORED_COPIES, {"inbox": inbox, "message_id": message_id, "hash": content_hash}
    )
    return [StoredCopy(*row) for row in result.all()]


async def join_conversation(
    connection: AsyncConnection, conversation_id: int, when: datetime, *, reopen: bool
) -> None:
    """Record new activity on a conversation, reopening it when asked."""
    values: dict[str, Any] = {"updated_at": when}
    if reopen:
        values["status"] = ConversationStatus.OPEN
    await connection.execute(
        update(conversations).where(conversations.c.id == conversation_id).values(**values)
    )


_INSERT_ONCE: dict[str, Any] = {}


async def insert_message_once(connection: AsyncConnection, values: dict[str, Any]) -> int | None:
    """Store a message unless the inbox already holds one with its content hash; returns the
    new id, or None when a concurrent worker stored the same message first."""
    dialect = connection.dialect.name
    if dialect not in _INSERT_ONCE:  # one statement per dialect; the values are parameters
        statement = _insert(connection, messages).on_conflict_do_nothing(
            index_elements=["inbox", "content_hash"]
        )
        _INSERT_ONCE[dialect] = _inserted_id(statement)
    found = (await connection.execute(_INSERT_ONCE[dialect], values)).scalar_one_or_none()
    return None if found is None else int(found)


async def record_bounce(
    connection: AsyncConnection,
    inbox: str,
    original_message_id: str,
    recipient: str,
    diagnostic: str,
    *,
    status: DeliveryStatus = DeliveryStatus.FAILED,
) -> list[int]:
    """Mark the inbox's outbound message with this Message-ID as failed (or delayed) for a
    recipient, keeping every recipient's diagnostic once; returns the ids of the rows marked.
    A delay never overrides a failure already recorded."""
    line = f"{recipient}: {diagnostic}".strip()
    result = await connection.execute(
        select(messages.c.id, messages.c.delivery_status, messages.c.delivery_error).where(
            messages.c.inbox == inbox,
            messages.c.message_id == original_message_id,
            messages.c.direction == Direction.OUTBOUND,
        )
    )
    marked: list[int] = []
    for row in result.all():
        lines = (row.delivery_error or "").splitlines()
        if line not in lines:
            lines.append(line)
        keep_failed = row.delivery_status == DeliveryStatus.FAILED
        await connection.execute(
            update(messages)
            .where(messages.c.id == row.id)
            .values(
                delivery_status=DeliveryStatus.FAILED if keep_failed else status,
                delivery_error="\n".join(lines)[-DELIVERY_ERROR_LIMIT:],
            )
        )
        marked.append(int(row.id))
    if marked and status == DeliveryStatus.FAILED:
        await _fail_queued_copies(connection, marked, line)
    return marked


async def _fail_queued_copies(connection: AsyncConnection, rows: list[int], reason: str) -> None:
    """A bounced reply's outbound queue row is failed too (with the bounce's diagnostic), so
    `queue list` and `conversations show` agree and nothing retries it."""
    await connection.execute(
        update(outbound_queue)
        .where(outbound_queue.c.message_row_id.in_(rows))
        .values(state=OutboundState.FAILED, reason=reason, updated_at=utcnow())
    )


# -- the same lookups and writes for a whole batch of messages ----------------------------------


async def copies_by_hash(
    connection: AsyncConnection, inbox: str, content_hashes: Sequence[str]
) -> dict[str, StoredCopy]:
    """The inbox's stored messages with these content hashes (at most one each: the hash is
    unique within an inbox), by hash."""
    if not content_hashes:
        return {}
    result = await connection.execute(
        select(*_COPY_COLUMNS).where(
            messages.c.inbox == inbox, messages.c.content_hash.in_(list(content_hashes))
        )
    )
    return {str(row.content_hash): StoredCopy(*row) for row in result.all()}


async def stored_message_ids(
    connection: AsyncConnection, inbox: str, message_ids: Sequence[str]
) -> set[str]:
    """Which of these Message-IDs the inbox holds a message with (inbound or ours)."""
    if not message_ids:
        return set()
    result = await connection.scalars(
        select(messages.c.message_id)
        .where(messages.c.inbox == inbox, messages.c.message_id.in_(list(message_ids)))
        .distinct()
    )
    return set(result.all())


async def join_conversations(
    connection: AsyncConnection, joins: Sequence[tuple[int, bool]], when: datetime
) -> None:
    """`join_conversation` for each (conversation id, reopen), one statement for each kind."""
    for reopen in (False, True):
        ids = [{"conversation": cid} for cid, flag in joins if flag is reopen]
        if not ids:
            continue
        values: dict[str, Any] = {"updated_at": when}
        if reopen:
            values["status"] = ConversationStatus.OPEN
        await connection.execute(
            update(conversations)
            .where(conversations.c.id == bindparam("conversation"))
            .values(**values),
            ids,
        )


async def insert_messages_once(
    connection: AsyncConnection, rows: Sequence[dict[str, Any]]
) -> dict[int, int]:
    """`insert_message_once` for several messages in one statement: the new message ids by
    queue id; a message a concurrent worker stored first is missing from the answer."""
    if not rows:
        return {}
    dialect = connection.dialect.name
    key = f"{dialect}:many"
    if key not in _INSERT_ONCE:
        statement = _insert(connection, messages).on_conflict_do_nothing(
            index_elements=["inbox", "content_hash"]
        )
        _INSERT_ONCE[key] = statement.returning(messages.c.queue_id, messages.c.id)
    result = await connection.execute(_INSERT_ONCE[key], list(rows))
    return {int(queue_id): int(message_id) for queue_id, message_id in result.all()}
