"""JSON-ready views of stored rows, in the shapes SPEC §3 fixes (pure functions)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row


def iso(value: datetime | None) -> str | None:
    """An ISO 8601 timestamp, or None."""
    return None if value is None else value.isoformat()


def conversation_view(row: Row[Any]) -> dict[str, Any]:
    """A conversation without its messages (`conversations list --json`)."""
    contact = None
    if row.contact_email is not None:
        contact = {"email": row.contact_email, "name": row.contact_name or None}
    return {
        "id": row.id,
        "inbox": row.inbox,
        "subject": row.subject,
        "status": row.status,
        "contact": contact,
        "assignee": row.assignee,
        "channel": row.channel,
        "ticket": None,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
    }


def message_view(row: Row[Any]) -> dict[str, Any]:
    """One message of a conversation (`conversations show --json`)."""
    return {
        "id": row.id,
        "direction": row.direction,
        "message_id": row.message_id,
        "date": iso(row.date),
        "from": {"email": row.from_email or None, "name": row.from_name or None},
        "to": row.to,
        "cc": row.cc,
        "forwarded_by": row.forwarded_by,
        "attribution": row.attribution,
        "thread_reason": row.thread_reason,
        "auto_submitted": row.auto_submitted,
        "subject": row.subject,
        "text": row.text,
        "html": row.html,
        "attachments": row.attachments,
        "defects": row.defects,
        "queue_id": row.queue_id,
    }


def conversation_detail(row: Row[Any], messages: Sequence[Row[Any]]) -> dict[str, Any]:
    """A conversation with its messages, oldest first."""
    return {**conversation_view(row), "messages": [message_view(m) for m in messages]}


def queue_view(row: Row[Any]) -> dict[str, Any]:
    """One inbound queue row, without the raw bytes."""
    return {
        "id": row.id,
        "queue": "inbound",
        "state": row.state,
        "inbox": row.inbox,
        "source": row.source,
        "channel": row.channel,
        "archive": row.archive,
        "mail_from": row.mail_from,
        "rcpt_to": row.rcpt_to,
        "size": row.size,
        "attempts": row.attempts,
        "reason": row.reason,
        "next_attempt_at": iso(row.next_attempt_at),
        "created_at": iso(row.created_at),
    }
