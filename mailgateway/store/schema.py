"""SQLAlchemy 2 typed models: the inbound queue, raw messages, contacts, conversations, messages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Store aware values converted to UTC; naive values are taken to be UTC already."""
        if value is not None and value.tzinfo is not None:
            return value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Read values back as aware UTC datetimes."""
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets BIGINT identities.
Id = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base with a naming convention Alembic can rely on."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class RawMessage(Base):
    """The bytes of one received message, stored once, verbatim, before any parsing."""

    __tablename__ = "raw_messages"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    size: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class InboundItem(Base):
    """One message waiting for (or done with) processing for one inbox: the inbound queue."""

    __tablename__ = "inbound_queue"
    __table_args__ = (
        UniqueConstraint("inbox", "raw_id", name="uq_inbound_queue_inbox_raw"),
        Index("ix_inbound_queue_state_next", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    raw_id: Mapped[int] = mapped_column(ForeignKey("raw_messages.id"))
    inbox: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(16), default="smtp")
    mail_from: Mapped[str] = mapped_column(Text, default="")
    rcpt_to: Mapped[str] = mapped_column(Text)
    peer: Mapped[str] = mapped_column(Text, default="")
    helo: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    claimed_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    # IMAP channels: the team address a row came in on (None: the fallback email), and
    # backfilled old mail (`import imap|mbox`) that must not notify or auto-assign.
    channel: Mapped[str | None] = mapped_column(String(320), nullable=True)
    archive: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class Contact(Base):
    """A person who writes to the team, keyed by e-mail address."""

    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(Text, default="")
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class Conversation(Base):
    """A thread of messages in one inbox with one contact."""

    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_inbox_status", "inbox", "status"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    inbox: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="open")
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"), nullable=True)
    assignee: Mapped[str | None] = mapped_column(String(64), nullable=True)
    channel: Mapped[str] = mapped_column(String(320), default="fallback_email")
    reply_token: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    # threading (0002): the subject without reply/forward prefixes, for the subject rule
    subject_key: Mapped[str | None] = mapped_column(String(255), nullable=True)


class Message(Base):
    """One message of a conversation, with its parsed fields; the raw bytes stay in raw_messages."""

    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_inbox_message_id", "inbox", "message_id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"), index=True)
    inbox: Mapped[str] = mapped_column(String(64))
    queue_id: Mapped[int | None] = mapped_column(
        ForeignKey("inbound_queue.id"), unique=True, nullable=True
    )
    raw_id: Mapped[int | None] = mapped_column(ForeignKey("raw_messages.id"), nullable=True)
    direction: Mapped[str] = mapped_column(String(16), default="inbound")
    message_id: Mapped[str] = mapped_column(Text)
    message_id_generated: Mapped[bool] = mapped_column(Boolean, default=False)
    in_reply_to: Mapped[list[Any]] = mapped_column(JSON, default=list)
    references: Mapped[list[Any]] = mapped_column(JSON, default=list)
    subject: Mapped[str] = mapped_column(Text, default="")
    from_email: Mapped[str] = mapped_column(Text, default="")
    from_name: Mapped[str] = mapped_column(Text, default="")
    to: Mapped[list[Any]] = mapped_column(JSON, default=list)
    cc: Mapped[list[Any]] = mapped_column(JSON, default=list)
    date: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    text: Mapped[str | None] = mapped_column(Text, nullable=True)
    html: Mapped[str | None] = mapped_column(Text, nullable=True)
    attachments: Mapped[list[Any]] = mapped_column(JSON, default=list)
    forwarded_by: Mapped[str | None] = mapped_column(Text, nullable=True)
    attribution: Mapped[str] = mapped_column(String(32), default="sender")
    thread_reason: Mapped[str] = mapped_column(String(32), default="new")
    auto_submitted: Mapped[bool] = mapped_column(Boolean, default=False)
    defects: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    # Why the message is attributed as it is (origin step): rule, header, forward, authentication.
    evidence: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # threading, loops, bounces, duplicates (0002)
    content_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    thread_detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    auto_reasons: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    bounce: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    delivery_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    delivery_error: Mapped[str | None] = mapped_column(Text, nullable=True)


# -- threading, loops, bounces, duplicates (0002) ---------------------------------------------

Index(
    "ix_conversations_subject",
    Conversation.inbox,
    Conversation.contact_id,
    Conversation.subject_key,
)
Index("uq_messages_inbox_content_hash", Message.inbox, Message.content_hash, unique=True)


class OutboundItem(Base):
    """One message waiting to be (or already) sent: the outbound queue. The bytes, unsigned, are
    in raw_messages; a reply also has its messages row on the conversation."""

    __tablename__ = "outbound_queue"
    __table_args__ = (Index("ix_outbound_queue_state_next", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    raw_id: Mapped[int] = mapped_column(ForeignKey("raw_messages.id"))
    kind: Mapped[str] = mapped_column(String(16), default="reply")
    inbox: Mapped[str] = mapped_column(String(64), default="")
    conversation_id: Mapped[int | None] = mapped_column(
        ForeignKey("conversations.id"), nullable=True, index=True
    )
    message_row_id: Mapped[int | None] = mapped_column(
        ForeignKey("messages.id"), unique=True, nullable=True
    )
    author: Mapped[str | None] = mapped_column(String(64), nullable=True)
    transport: Mapped[str] = mapped_column(String(320), default="smarthost")
    mail_from: Mapped[str] = mapped_column(Text, default="")
    rcpt_to: Mapped[list[Any]] = mapped_column(JSON, default=list)
    sensitive: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    queued_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    claimed_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class FromAddress(Base):
    """A custom from address: its pending one-time code (hashed) and when it was verified."""

    __tablename__ = "from_addresses"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)
    code_hash: Mapped[str | None] = mapped_column(String(256), nullable=True)
    code_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    code_attempts: Mapped[int] = mapped_column(Integer, default=0)
    verified_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


# -- routing: availability, round-robin cursors, tickets, contact activity, notifications -------


class UserAvailability(Base):
    """A user's availability (online or away); a user without a row is online."""

    __tablename__ = "user_availability"

    user_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="online")
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class AssignmentCursor(Base):
    """Where an inbox's round robin stands: the user it assigned last (locked while advanced)."""

    __tablename__ = "assignment_cursors"

    inbox: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_user: Mapped[str | None] = mapped_column(String(64), nullable=True)
    assigned: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class Ticket(Base):
    """The support ticket of a conversation; its owner follows the assignee unless fixed."""

    __tablename__ = "tickets"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"), unique=True)
    pipeline: Mapped[str] = mapped_column(Text)
    stage: Mapped[str] = mapped_column(Text)
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    owner_follows_assignee: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class ContactActivity(Base):
    """One entry of a contact's activity: a message logged on the contact."""

    __tablename__ = "contact_activity"
    __table_args__ = (Index("ix_contact_activity_contact", "contact_id", "id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"))
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), unique=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"))
    inbox: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32), default="email_received")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class NotificationEvent(Base):
    """A chat notification waiting to be (or already) posted to the webhook: the outbox."""

    __tablename__ = "notification_outbox"
    __table_args__ = (Index("ix_notification_outbox_state_next", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))
    conversation_id: Mapped[int | None] = mapped_column(
        ForeignKey("conversations.id"), nullable=True
    )
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    claimed_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


# -- IMAP channels ------------------------------------------------------------------------------


class ImapCheckpoint(Base):
    """How far a channel's folder has been fetched: every UID up to `last_uid` of `uidvalidity`
    is handled. UIDs up to `boundary_uid` predate the channel (or a UIDVALIDITY change): of
    those only mail unseen or received since `since` is taken, de-duplicated first."""

    __tablename__ = "imap_checkpoints"

    channel: Mapped[str] = mapped_column(String(320), primary_key=True)
    folder: Mapped[str] = mapped_column(String(255), primary_key=True)
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    boundary_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    since: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class ImapMessage(Base):
    """One message fetched from a channel's folder: what became of it, and whether the server
    has been told (\\Seen or moved) yet."""

    __tablename__ = "imap_messages"
    __table_args__ = (
        UniqueConstraint(
            "channel", "folder", "uidvalidity", "uid", name="uq_imap_messages_channel_uid"
        ),
        Index("ix_imap_messages_channel_message_id", "channel", "message_id"),
        Index("ix_imap_messages_channel_digest", "channel", "digest"),
        Index("ix_imap_messages_pending", "channel", "folder", "acked"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(320))
    folder: Mapped[str] = mapped_column(String(255))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uid: Mapped[int] = mapped_column(BigInteger)
    message_id: Mapped[str] = mapped_column(Text, default="")
    digest: Mapped[str] = mapped_column(String(64), default="")
    outcome: Mapped[str] = mapped_column(String(16))
    queue_id: Mapped[int | None] = mapped_column(ForeignKey("inbound_queue.id"), nullable=True)
    acked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class ChannelHealth(Base):
    """The last known state of a channel's poller, for `inboxes list`."""

    __tablename__ = "channel_health"

    channel: Mapped[str] = mapped_column(String(320), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_error_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    last_success_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class ApiToken(Base):
    """A user's HTTP API token; only its SHA-256 digest is stored, never the token."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(64), index=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
