"""Who may act in an inbox (pure): members act; others, even admins, may only view."""

from __future__ import annotations

from mailgateway.config import Config, InboxConfig, Role
from mailgateway.errors import RefusedError

VIEW_EVERY_INBOX = frozenset({Role.SUPER_ADMIN, Role.ACCOUNT_ACCESS})


def is_member(config: Config, inbox: InboxConfig, user_id: str) -> bool:
    """Whether the user may act (reply, assign, close) in the inbox."""
    user = config.users.get(user_id)
    if user is None:
        return False
    if inbox.access.mode == "everyone":
        return True
    return user_id in inbox.access.users or bool(set(user.teams) & set(inbox.access.teams))


def can_view(config: Config, inbox: InboxConfig, user_id: str) -> bool:
    """Whether the user may see the inbox's conversations: its members, super admins and
    users with account access."""
    user = config.users.get(user_id)
    if user is None:
        return False
    return user.role in VIEW_EVERY_INBOX or is_member(config, inbox, user_id)


def require_member(config: Config, inbox_slug: str, user_id: str) -> None:
    """Refuse, with a one-line reason, a user who may not act in the inbox."""
    user = config.users.get(user_id)
    if user is None:
        msg = f"unknown user {user_id!r}"
        raise RefusedError(msg)
    inbox = config.inboxes.get(inbox_slug)
    if inbox is not None and is_member(config, inbox, user_id):
        return
    if inbox is not None and can_view(config, inbox, user_id):
        msg = (
            f"user {user_id!r} ({user.role}) may view inbox {inbox_slug!r} but cannot act "
            "there: not a member"
        )
        raise RefusedError(msg)
    msg = f"user {user_id!r} is not a member of inbox {inbox_slug!r}"
    raise RefusedError(msg)


def require_assignable(config: Config, inbox_slug: str, user_id: str) -> None:
    """Refuse to assign a conversation to a user without access to its inbox (free seats and
    away users may be assigned by hand)."""
    if user_id not in config.users:
        msg = f"cannot assign to unknown user {user_id!r}"
        raise RefusedError(msg)
    inbox = config.inboxes.get(inbox_slug)
    if inbox is None or not is_member(config, inbox, user_id):
        msg = f"cannot assign to {user_id!r}: no access to inbox {inbox_slug!r}"
        raise RefusedError(msg)


def viewable_inboxes(config: Config, user_id: str) -> list[str]:
    """The slugs of the inboxes whose conversations the user may see."""
    return [slug for slug, inbox in config.inboxes.items() if can_view(config, inbox, user_id)]
