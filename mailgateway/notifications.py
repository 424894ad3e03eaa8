"""Chat notifications (pure): the facts of an event, and its Slack incoming-webhook message."""

from __future__ import annotations

from typing import Any

from mailgateway.config import Config
from mailgateway.domain import NotificationKind

SUBJECT_LIMIT = 150
NAME_LIMIT = 100


def event_payload(
    config: Config,
    *,
    conversation_id: int,
    inbox: str,
    subject: str,
    contact_email: str | None,
    contact_name: str | None,
    assignee: str | None,
    assigned_by: str | None = None,
) -> dict[str, Any]:
    """The facts an event carries, stored in the outbox (names resolved now, JSON-ready)."""
    inbox_config = config.inboxes.get(inbox)
    return {
        "conversation_id": conversation_id,
        "inbox": inbox,
        "inbox_name": inbox_config.name if inbox_config is not None else inbox,
        "subject": subject[:SUBJECT_LIMIT],
        "contact": {"email": contact_email, "name": (contact_name or "")[:NAME_LIMIT] or None},
        "assignee": assignee,
        "assignee_name": _full_name(config, assignee),
        "assigned_by": assigned_by,
        "assigned_by_name": _full_name(config, assigned_by),
    }


def _full_name(config: Config, user_id: str | None) -> str | None:
    """A user's full name, or None."""
    user = config.users.get(user_id) if user_id is not None else None
    return None if user is None else user.full_name


def escape(text: str) -> str:
    """Slack's three control characters escaped, so mail text cannot inject mentions or links."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _contact(payload: dict[str, Any]) -> str:
    """The contact as "Name (email)", or "an unknown sender"."""
    contact = payload.get("contact") or {}
    email, name = contact.get("email"), contact.get("name")
    if email and name:
        return f"{escape(name)} ({escape(email)})"
    return escape(email or name or "an unknown sender")


def _subject(payload: dict[str, Any]) -> str:
    """The subject, quoted, or "(no subject)"."""
    subject = str(payload.get("subject") or "").strip()
    return f"\u201c{escape(subject)}\u201d" if subject else "(no subject)"


def slack_message(kind: NotificationKind, payload: dict[str, Any]) -> dict[str, Any]:
    """The JSON body for a Slack incoming webhook (its `text` field, mrkdwn)."""
    number = payload.get("conversation_id")
    inbox = escape(str(payload.get("inbox_name") or payload.get("inbox") or ""))
    assignee = payload.get("assignee_name") or payload.get("assignee")
    if kind is NotificationKind.ASSIGNED:
        by = payload.get("assigned_by_name") or payload.get("assigned_by")
        text = (
            f"Conversation #{number} in *{inbox}* assigned to {escape(str(assignee))}"
            + (f" by {escape(str(by))}" if by else "")
            + f": {_subject(payload)} from {_contact(payload)}"
        )
    else:
        text = f"New conversation #{number} in *{inbox}* from {_contact(payload)}"
        text += f": {_subject(payload)}"
        text += f" \u2014 assigned to {escape(str(assignee))}" if assignee else " \u2014 unassigned"
    return {"text": text}
