"""JSON-ready views of stored rows, in the shapes SPEC §3 fixes (pure functions)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row

from mailgateway.store.channelsend import Sending

SMARTHOST = "smarthost"  # an outbound row's transport when it leaves by the smarthost


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
        "ticket": ticket_view(row),
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
    }


def ticket_view(row: Row[Any]) -> dict[str, Any] | None:
    """A conversation's ticket (from the `ticket_*` columns), or None when it has none."""
    ticket_id = getattr(row, "ticket_id", None)
    if ticket_id is None:
        return None
    return {
        "id": ticket_id,
        "pipeline": row.ticket_pipeline,
        "stage": row.ticket_stage,
        "owner": row.ticket_owner,
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
        "evidence": row.evidence,
        "thread_reason": row.thread_reason,
        "auto_submitted": row.auto_submitted,
        "auto_reasons": row.auto_reasons or [],
        "thread_detail": row.thread_detail,
        "bounce": row.bounce,
        "delivery_status": row.delivery_status,
        "delivery_error": row.delivery_error,
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


def outbound_queue_view(row: Row[Any]) -> dict[str, Any]:
    """One outbound queue row, without the bytes, in the shape of an inbound one."""
    return {
        "id": row.id,
        "queue": "outbound",
        "state": row.state,
        "kind": row.kind,
        "inbox": row.inbox or None,
        "conversation_id": row.conversation_id,
        "author": row.author,
        "transport": row.transport,
        "channel": None if row.transport == SMARTHOST else row.transport,
        "mail_from": row.mail_from,
        "rcpt_to": ", ".join(row.rcpt_to),
        "size": row.size,
        "attempts": row.attempts,
        "reason": row.reason,
        "next_attempt_at": iso(row.next_attempt_at),
        "sent_at": iso(row.sent_at),
        "created_at": iso(row.created_at),
    }


def sending_view(sending: Sending) -> dict[str, Any]:
    """A team channel's sending side, from its outbound rows, for `inboxes list`."""
    return {
        "last_sent_at": iso(sending.last_sent_at),
        "waiting": sending.waiting,
        "held": sending.held,
        "last_error": sending.last_error,
        "last_error_at": iso(sending.last_error_at),
    }


def contact_view(row: Row[Any]) -> dict[str, Any]:
    """A contact with its owner and how much is logged on it (`contacts list --json`)."""
    return {
        "email": row.email,
        "name": row.name or None,
        "owner": row.owner,
        "conversations": int(row.conversations),
        "messages": int(row.messages),
        "last_activity_at": iso(row.last_activity_at),
        "created_at": iso(row.created_at),
    }


def delivery_view(row: Row[Any] | None) -> dict[str, Any] | None:
    """How far a reply got on its way out (None for messages that came in)."""
    if row is None:
        return None
    return {
        "queue_id": row.id,
        "state": row.state,
        "author": row.author,
        "attempts": row.attempts,
        "reason": row.reason,
        "next_attempt_at": iso(row.next_attempt_at),
        "sent_at": iso(row.sent_at),
    }


def with_deliveries(detail: dict[str, Any], deliveries: Mapping[int, Row[Any]]) -> dict[str, Any]:
    """A conversation detail whose messages carry their delivery state."""
    for message in detail["messages"]:
        message["delivery"] = delivery_view(deliveries.get(message["id"]))
    return detail


def activity_view(row: Row[Any]) -> dict[str, Any]:
    """One entry of a contact's activity: a message logged on the contact."""
    return {
        "kind": row.kind,
        "inbox": row.inbox,
        "conversation_id": row.conversation_id,
        "message": row.message,
        "message_id": row.message_id,
        "direction": row.direction,
        "subject": row.subject,
        "from": row.from_email or None,
        "date": iso(row.date),
        "logged_at": iso(row.created_at),
    }


def contact_detail(row: Row[Any], activity: Sequence[Row[Any]]) -> dict[str, Any]:
    """A contact with its activity, oldest first (`contacts show --json`)."""
    return {**contact_view(row), "activity": [activity_view(a) for a in activity]}


def token_view(row: Row[Any]) -> dict[str, Any]:
    """An API token as `tokens list --json` shows it: never the token or its digest."""
    return {
        "id": row.id,
        "user": row.user_id,
        "prefix": row.prefix,
        "created_at": iso(row.created_at),
        "revoked_at": iso(row.revoked_at),
    }
