"""Who may act in an inbox (pure): members act; others, even admins, may only view."""

from __future__ import annotations

from mailgateway.config import Config, InboxConfig
from mailgateway.errors import RefusedError


def is_member(config: Config, inbox: InboxConfig, user_id: str) -> bool:
    """Whether the user may act (reply, assign, close) in the inbox."""
    user = config.users.get(user_id)
    if user is None:
        return False
    if inbox.access.mode == "everyone":
        return True
    return user_id in inbox.access.users or bool(set(user.teams) & set(inbox.access.teams))


def require_member(config: Config, inbox_slug: str, user_id: str) -> None:
    """Refuse, with a one-line reason, a user who may not act in the inbox."""
    if user_id not in config.users:
        msg = f"unknown user {user_id!r}"
        raise RefusedError(msg)
    inbox = config.inboxes.get(inbox_slug)
    if inbox is None or not is_member(config, inbox, user_id):
        msg = f"user {user_id!r} is not a member of inbox {inbox_slug!r}"
        raise RefusedError(msg)
