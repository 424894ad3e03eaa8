"""Frozen value types passed between the pipeline's stages."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class QueueState(enum.StrEnum):
    """Where an inbound queue row is in its life (Postfix's incoming/active/hold)."""

    QUEUED = "queued"
    ACTIVE = "active"
    DONE = "done"
    HELD = "held"


class OutboundState(enum.StrEnum):
    """Where an outbound queue row is (Postfix's active/deferred/hold queues, then the outcome)."""

    QUEUED = "queued"
    ACTIVE = "active"
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"
    HELD = "held"


class OutboundKind(enum.StrEnum):
    """What an outbound message is: an agent's reply or a from-address verification code."""

    REPLY = "reply"
    VERIFICATION = "verification"


class ConversationStatus(enum.StrEnum):
    """Whether agents still have to act on a conversation."""

    OPEN = "open"
    CLOSED = "closed"


class Direction(enum.StrEnum):
    """Which way a message travelled."""

    INBOUND = "inbound"
    OUTBOUND = "outbound"


class Attribution(enum.StrEnum):
    """Whom a message is logged to (SPEC §3)."""

    SENDER = "sender"
    FORWARD_ORIGINAL_SENDER = "forward_original_sender"
    FORWARDER = "forwarder"


class ThreadReason(enum.StrEnum):
    """Which threading rule put a message in its conversation (SPEC §3)."""

    NEW = "new"
    REFERENCES = "references"
    IN_REPLY_TO = "in_reply_to"
    REPLY_TOKEN = "reply_token"
    SUBJECT = "subject"


@dataclass(frozen=True, slots=True)
class Address:
    """A mailbox: lower-cased address and a display name ('' when none)."""

    email: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class AttachmentInfo:
    """Metadata of one attachment; the bytes stay in the raw message."""

    filename: str
    content_type: str
    size: int


@dataclass(frozen=True, slots=True)
class Parsed:
    """What the parse stage derives from raw bytes. Every text field is free of CR, LF and NUL
    except `text` and `html`, which are free of NUL only."""

    message_id: str
    message_id_generated: bool
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    subject: str
    from_: Address | None
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    date: datetime | None
    text: str | None
    html: str | None
    attachments: tuple[AttachmentInfo, ...]
    headers: tuple[tuple[str, str], ...]
    defects: tuple[str, ...] = field(default=())

    def header(self, name: str) -> str | None:
        """The first header of that name (case-insensitive), or None."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)


class Availability(enum.StrEnum):
    """Whether a user takes new conversations now; away users are never auto-assigned."""

    ONLINE = "online"
    AWAY = "away"


class ActivityKind(enum.StrEnum):
    """What was logged on a contact's activity."""

    EMAIL_RECEIVED = "email_received"
    EMAIL_SENT = "email_sent"


class NotificationKind(enum.StrEnum):
    """Which event a chat notification announces."""

    NEW_CONVERSATION = "conversation.new"
    ASSIGNED = "conversation.assigned"


class OutboxState(enum.StrEnum):
    """Where a notification is in its life: queued → sending → sent, or failed after retries."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"


class DeliveryStatus(enum.StrEnum):
    """What a delivery status notification reported about one of our outbound messages."""

    FAILED = "failed"
    DELAYED = "delayed"


@dataclass(frozen=True, slots=True)
class ConversationFacts:
    """What the threading rules need to know about a stored conversation: its status, its
    contact, when it last saw activity and every address that sent or received its mail."""

    id: int
    status: ConversationStatus
    contact_id: int | None
    contact_email: str | None
    last_activity: datetime
    participants: frozenset[str] = frozenset()


class ImapOutcome(enum.StrEnum):
    """What became of one message fetched from an IMAP channel."""

    QUEUED = "queued"
    DUPLICATE = "duplicate"
    TOO_LARGE = "too_large"


class ChannelState(enum.StrEnum):
    """The health of an IMAP channel's poller, as `inboxes list` shows it."""

    CONNECTING = "connecting"
    OK = "ok"
    RETRYING = "retrying"
    AUTH_FAILED = "auth_failed"
    STOPPED = "stopped"
    DISABLED = "disabled"
    UNKNOWN = "unknown"
