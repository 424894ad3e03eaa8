"""Queries of routing: availability, round-robin cursors, assignees, tickets, contacts' owners
and activity; each runs on the caller's connection, inside the caller's transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.schema import Table

from mailgateway.domain import ActivityKind, Availability
from mailgateway.store.repo import _insert, contacts, conversations, messages, tickets
from mailgateway.store.schema import (
    AssignmentCursor,
    ContactActivity,
    UserAvailability,
    utcnow,
)

user_availability: Table = UserAvailability.__table__  # type: ignore[assignment]
assignment_cursors: Table = AssignmentCursor.__table__  # type: ignore[assignment]
contact_activity: Table = ContactActivity.__table__  # type: ignore[assignment]


# -- availability --------------------------------------------------------------------------------


async def availability(connection: AsyncConnection) -> dict[str, Availability]:
    """Every stored availability by user id (users without a row are online)."""
    result = await connection.execute(
        select(user_availability.c.user_id, user_availability.c.status)
    )
    return {user: Availability(status) for user, status in result.all()}


async def set_availability(connection: AsyncConnection, user_id: str, status: Availability) -> None:
    """Store a user's availability."""
    values = {"user_id": user_id, "status": status, "updated_at": utcnow()}
    statement = _insert(connection, user_availability).values(**values)
    await connection.execute(
        statement.on_conflict_do_update(
            index_elements=["user_id"], set_={"status": status, "updated_at": values["updated_at"]}
        )
    )


# -- the round robin's cursor --------------------------------------------------------------------


async def lock_cursor(connection: AsyncConnection, inbox: str) -> str | None:
    """The user the inbox's round robin assigned last, with its row locked until the transaction
    ends (FOR UPDATE on PostgreSQL; SQLite transactions already hold the write lock)."""
    statement = _insert(connection, assignment_cursors).values(
        inbox=inbox, last_user=None, assigned=0, updated_at=utcnow()
    )
    await connection.execute(statement.on_conflict_do_nothing(index_elements=["inbox"]))
    found = await connection.scalar(
        select(assignment_cursors.c.last_user)
        .where(assignment_cursors.c.inbox == inbox)
        .with_for_update()
    )
    return None if found is None else str(found)


async def advance_cursor(connection: AsyncConnection, inbox: str, user_id: str) -> None:
    """Record the user the round robin just handed a conversation to."""
    await connection.execute(
        update(assignment_cursors)
        .where(assignment_cursors.c.inbox == inbox)
        .values(last_user=user_id, assigned=assignment_cursors.c.assigned + 1, updated_at=utcnow())
    )


# -- assignees and tickets -----------------------------------------------------------------------


async def lock_conversation(connection: AsyncConnection, conversation_id: int) -> Row[Any] | None:
    """A conversation's inbox, subject, assignee and contact, its row locked until the
    transaction ends; None when there is no such conversation."""
    columns: list[Any] = [
        conversations.c.id,
        conversations.c.inbox,
        conversations.c.subject,
        conversations.c.assignee,
        contacts.c.email.label("contact_email"),
        contacts.c.name.label("contact_name"),
    ]
    result = await connection.execute(
        select(*columns)
        .outerjoin(contacts, contacts.c.id == conversations.c.contact_id)
        .where(conversations.c.id == conversation_id)
        .with_for_update(of=conversations)
    )
    return result.one_or_none()


async def set_assignee(
    connection: AsyncConnection, conversation_id: int, assignee: str | None
) -> None:
    """Assign a conversation; a ticket whose owner follows the assignee follows it."""
    now = utcnow()
    await connection.execute(
        update(conversations)
        .where(conversations.c.id == conversation_id)
        .values(assignee=assignee, updated_at=now)
    )
    await connection.execute(
        update(tickets)
        .where(tickets.c.conversation_id == conversation_id, tickets.c.owner_follows_assignee)
        .values(owner=assignee, updated_at=now)
    )


async def create_ticket(
    connection: AsyncConnection,
    conversation_id: int,
    *,
    pipeline: str,
    stage: str,
    owner: str | None,
    follows_assignee: bool,
) -> int:
    """The ticket of a conversation (one per conversation)."""
    now = utcnow()
    statement = _insert(connection, tickets).values(
        conversation_id=conversation_id,
        pipeline=pipeline,
        stage=stage,
        owner=owner,
        owner_follows_assignee=follows_assignee,
        created_at=now,
        updated_at=now,
    )
    return int((await connection.execute(statement.returning(tickets.c.id))).scalar_one())


# -- contacts ------------------------------------------------------------------------------------


async def contact_owner(connection: AsyncConnection, contact_id: int | None) -> str | None:
    """The owner of a contact, if it has one."""
    if contact_id is None:
        return None
    found = await connection.scalar(select(contacts.c.owner).where(contacts.c.id == contact_id))
    return None if found is None else str(found)


async def set_contact_owner(connection: AsyncConnection, email: str, owner: str | None) -> bool:
    """Give a contact an owner (None: no owner); False when there is no such contact."""
    result = await connection.execute(
        update(contacts).where(contacts.c.email == email).values(owner=owner)
    )
    return bool(result.rowcount)


async def log_activity(
    connection: AsyncConnection,
    *,
    contact_id: int,
    message_id: int,
    conversation_id: int,
    inbox: str,
    kind: ActivityKind = ActivityKind.EMAIL_RECEIVED,
) -> None:
    """Log a message on its contact's activity (once per message)."""
    values = {
        "contact_id": contact_id,
        "message_id": message_id,
        "conversation_id": conversation_id,
        "inbox": inbox,
        "kind": kind,
        "created_at": utcnow(),
    }
    await connection.execute(_activity_insert(connection), values)


_ACTIVITY: dict[str, Any] = {}


def _activity_insert(connection: AsyncConnection) -> Any:
    """The activity INSERT (once per message), built once per dialect; values are parameters."""
    statement = _ACTIVITY.get(connection.dialect.name)
    if statement is None:
        statement = _insert(connection, contact_activity).on_conflict_do_nothing(
            index_elements=["message_id"]
        )
        _ACTIVITY[connection.dialect.name] = statement
    return statement


async def contact_rows(connection: AsyncConnection, email: str | None = None) -> list[Row[Any]]:
    """Contacts (or the one with this address) with how many conversations and messages are
    logged on them, by address."""
    activity = (
        select(
            contact_activity.c.contact_id,
            func.count().label("messages"),
            func.count(func.distinct(contact_activity.c.conversation_id)).label("conversations"),
            func.max(contact_activity.c.created_at).label("last_activity_at"),
        )
        .group_by(contact_activity.c.contact_id)
        .subquery()
    )
    statement = (
        select(
            contacts,
            func.coalesce(activity.c.messages, 0).label("messages"),
            func.coalesce(activity.c.conversations, 0).label("conversations"),
            activity.c.last_activity_at,
        )
        .outerjoin(activity, activity.c.contact_id == contacts.c.id)
        .order_by(contacts.c.email)
    )
    if email is not None:
        statement = statement.where(contacts.c.email == email)
    return list((await connection.execute(statement)).all())


async def activity_rows(connection: AsyncConnection, contact_id: int) -> list[Row[Any]]:
    """A contact's activity, oldest first: each logged message with its conversation."""
    columns: list[Any] = [
        contact_activity.c.kind,
        contact_activity.c.inbox,
        contact_activity.c.conversation_id,
        contact_activity.c.created_at,
        messages.c.id.label("message"),
        messages.c.message_id,
        messages.c.direction,
        messages.c.subject,
        messages.c.date,
        messages.c.from_email,
    ]
    result = await connection.execute(
        select(*columns)
        .join(messages, messages.c.id == contact_activity.c.message_id)
        .where(contact_activity.c.contact_id == contact_id)
        .order_by(contact_activity.c.id)
    )
    return list(result.all())


async def log_activities(connection: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """`log_activity` (email received) for several messages in one statement; each row holds
    contact_id, message_id, conversation_id and inbox."""
    if not rows:
        return
    now = utcnow()
    await connection.execute(
        _activity_insert(connection),
        [row | {"kind": ActivityKind.EMAIL_RECEIVED, "created_at": now} for row in rows],
    )
