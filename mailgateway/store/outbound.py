"""Queries of the outbound side: the outbound queue, replies on conversations, from addresses."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.schema import Table

from mailgateway.domain import ActivityKind, OutboundKind, OutboundState, QueueState
from mailgateway.store import repo, routing
from mailgateway.store.claims import gone_claimers
from mailgateway.store.schema import FromAddress, OutboundItem, utcnow

outbound_queue: Table = OutboundItem.__table__  # type: ignore[assignment]
from_addresses: Table = FromAddress.__table__  # type: ignore[assignment]

RETRYABLE = (OutboundState.HELD, OutboundState.DEFERRED, OutboundState.FAILED, OutboundState.QUEUED)
DUE = (OutboundState.QUEUED, OutboundState.DEFERRED)
STALE_CLAIM = timedelta(minutes=10)  # a claim this old is of a worker that vanished


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to queue: its unsigned bytes and envelope, and how it is to leave."""

    data: bytes
    kind: OutboundKind
    mail_from: str
    rcpt_to: tuple[str, ...]
    transport: str = "smarthost"
    inbox: str = ""
    author: str | None = None
    sensitive: bool = False


@dataclass(frozen=True, slots=True)
class ClaimedOutbound:
    """An outbound row a worker has claimed, with the bytes to sign and send."""

    id: int
    kind: str
    transport: str
    mail_from: str
    rcpt_to: tuple[str, ...]
    attempts: int
    queued_at: datetime
    sensitive: bool
    data: bytes


@dataclass(frozen=True, slots=True)
class ReplyContext:
    """What a reply needs from the store: the conversation, its contact, the latest message."""

    conversation: Row[Any]
    contact_email: str | None
    contact_name: str
    parent: Row[Any] | None


@dataclass(frozen=True, slots=True)
class PendingCode:
    """The hashed one-time code waiting for confirmation for one address."""

    code_hash: str
    expires_at: datetime
    attempts: int


def _insert(connection: AsyncConnection, table: Table) -> Any:
    """A dialect-specific INSERT that supports ON CONFLICT DO NOTHING."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


async def store_raw(connection: AsyncConnection, data: bytes) -> int:
    """The id of the stored copy of these bytes, storing them when new (as intake does)."""
    digest = repo.digest_of(data)
    statement = _insert(connection, repo.raw_messages).values(
        digest=digest, size=len(data), data=data, received_at=utcnow()
    )
    await connection.execute(statement.on_conflict_do_nothing(index_elements=["digest"]))
    found = await connection.scalar(
        select(repo.raw_messages.c.id).where(repo.raw_messages.c.digest == digest)
    )
    assert found is not None
    return int(found)


async def _queue(connection: AsyncConnection, outgoing: Outgoing, **links: Any) -> int:
    """Store the bytes and one outbound row, inside the caller's transaction."""
    raw_id = links.pop("raw_id", None) or await store_raw(connection, outgoing.data)
    now = utcnow()
    statement = _insert(connection, outbound_queue).values(
        raw_id=raw_id,
        kind=outgoing.kind,
        inbox=outgoing.inbox,
        author=outgoing.author,
        transport=outgoing.transport,
        mail_from=outgoing.mail_from,
        rcpt_to=list(outgoing.rcpt_to),
        sensitive=outgoing.sensitive,
        state=OutboundState.QUEUED,
        attempts=0,
        next_attempt_at=now,
        queued_at=now,
        created_at=now,
        updated_at=now,
        **links,
    )
    return int((await connection.execute(statement.returning(outbound_queue.c.id))).scalar_one())


async def _log_sent(
    connection: AsyncConnection, conversation_id: int, message_row: int, inbox: str
) -> None:
    """Log a reply on the activity of the conversation's contact."""
    contact_id = await connection.scalar(
        select(repo.conversations.c.contact_id).where(repo.conversations.c.id == conversation_id)
    )
    if contact_id is not None:
        await routing.log_activity(
            connection,
            contact_id=int(contact_id),
            message_id=message_row,
            conversation_id=conversation_id,
            inbox=inbox,
            kind=ActivityKind.EMAIL_SENT,
        )


class OutboundStore:
    """The outbound queue and the other tables of sending, on the gateway's database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    # -- queueing ---------------------------------------------------------------------------

    async def queue(self, outgoing: Outgoing) -> int:
        """Queue a message that belongs to no conversation (a verification code)."""
        async with self.engine.begin() as connection:
            return await _queue(connection, outgoing)

    async def queue_reply(
        self, outgoing: Outgoing, conversation_id: int, message: dict[str, Any]
    ) -> tuple[int, int]:
        """Store the reply on its conversation and queue it, in one transaction; returns the
        messages row id and the outbound row id."""
        async with self.engine.begin() as connection:
            raw_id = await store_raw(connection, outgoing.data)
            message_row = await repo.insert_message(
                connection, {**message, "conversation_id": conversation_id, "raw_id": raw_id}
            )
            await repo.touch_conversation(connection, conversation_id, utcnow())
            await _log_sent(connection, conversation_id, message_row, str(message["inbox"]))
            queue_id = await _queue(
                connection,
                outgoing,
                raw_id=raw_id,
                conversation_id=conversation_id,
                message_row_id=message_row,
            )
            return message_row, queue_id

    async def reply_context(self, conversation_id: int) -> ReplyContext | None:
        """The conversation to reply to with its contact and latest message, or None."""
        rows = await repo.Store(self.engine).conversation_rows(ids=[conversation_id])
        if not rows:
            return None
        async with self.engine.connect() as connection:
            parent = (
                await connection.execute(
                    select(repo.messages)
                    .where(repo.messages.c.conversation_id == conversation_id)
                    .order_by(repo.messages.c.id.desc())
                    .limit(1)
                )
            ).first()
        row = rows[0]
        return ReplyContext(row, row.contact_email, row.contact_name or "", parent)

    # -- the worker's side ------------------------------------------------------------------

    async def claim(
        self, worker: str, limit: int, lease: timedelta = STALE_CLAIM
    ) -> list[ClaimedOutbound]:
        """Claim up to `limit` due rows (row locks, SKIP LOCKED on PostgreSQL), counting an
        attempt for each. Rows another worker claimed longer than `lease` ago are due too: that
        worker (of another host, or one whose death went unseen) vanished mid-send."""
        now = utcnow()
        queue = outbound_queue.c
        async with self.engine.begin() as connection:
            ids = list(
                await connection.scalars(
                    select(queue.id)
                    .where(queue.state == OutboundState.ACTIVE, queue.claimed_at < now - lease)
                    .order_by(queue.claimed_at, queue.id)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            )
            if len(ids) < limit:
                ids += await connection.scalars(
                    select(queue.id)
                    .where(queue.state.in_(DUE), queue.next_attempt_at <= now)
                    .order_by(queue.next_attempt_at, queue.id)
                    .limit(limit - len(ids))
                    .with_for_update(skip_locked=True)
                )
            if not ids:
                return []
            await connection.execute(
                update(outbound_queue)
                .where(outbound_queue.c.id.in_(ids))
                .values(
                    state=OutboundState.ACTIVE,
                    attempts=outbound_queue.c.attempts + 1,
                    claimed_by=worker,
                    claimed_at=now,
                    updated_at=now,
                )
            )
            result = await connection.execute(
                select(
                    outbound_queue.c.id,
                    outbound_queue.c.kind,
                    outbound_queue.c.transport,
                    outbound_queue.c.mail_from,
                    outbound_queue.c.rcpt_to,
                    outbound_queue.c.attempts,
                    outbound_queue.c.queued_at,
                    outbound_queue.c.sensitive,
                    repo.raw_messages.c.data,
                )
                .join(repo.raw_messages, repo.raw_messages.c.id == outbound_queue.c.raw_id)
                .where(outbound_queue.c.id.in_(ids))
                .order_by(outbound_queue.c.id)
            )
            return [
                ClaimedOutbound(
                    row.id,
                    row.kind,
                    row.transport,
                    row.mail_from,
                    tuple(row.rcpt_to),
                    row.attempts,
                    row.queued_at,
                    row.sensitive,
                    row.data,
                )
                for row in result.all()
            ]

    async def record(
        self,
        queue_id: int,
        state: OutboundState,
        reason: str | None,
        *,
        next_attempt_at: datetime | None = None,
        scrub: bool = False,
    ) -> None:
        """Record the outcome of an attempt; `scrub` empties the stored bytes (a sent code)."""
        now = utcnow()
        values: dict[str, Any] = {
            "state": state,
            "reason": reason,
            "claimed_by": None,
            "updated_at": now,
        }
        if state is OutboundState.SENT:
            values["sent_at"] = now
        if next_attempt_at is not None:
            values["next_attempt_at"] = next_attempt_at
        async with self.engine.begin() as connection:
            await connection.execute(
                update(outbound_queue).where(outbound_queue.c.id == queue_id).values(**values)
            )
            if scrub:
                raw_id = select(outbound_queue.c.raw_id).where(outbound_queue.c.id == queue_id)
                await connection.execute(
                    update(repo.raw_messages)
                    .where(repo.raw_messages.c.id == raw_id.scalar_subquery())
                    .values(data=b"", size=0)
                )

    async def requeue_abandoned(self, alive: Callable[[str], bool]) -> int:
        """Put back at once, deferred, the rows of claimers known to be gone (`alive` says False:
        a process of this host that no longer exists); their claim keeps its attempt."""
        async with self.engine.begin() as connection:
            gone = await gone_claimers(connection, outbound_queue, OutboundState.ACTIVE, alive)
            if not gone:
                return 0
            result = await connection.execute(
                update(outbound_queue)
                .where(
                    outbound_queue.c.state == OutboundState.ACTIVE,
                    outbound_queue.c.claimed_by.in_(gone),
                )
                .values(state=OutboundState.DEFERRED, claimed_by=None, updated_at=utcnow())
            )
            return int(result.rowcount)

    async def release_claims(self, worker: str) -> int:
        """Put back every row this worker claimed and did not finish (orderly shutdown)."""
        async with self.engine.begin() as connection:
            result = await connection.execute(
                update(outbound_queue)
                .where(
                    outbound_queue.c.state == OutboundState.ACTIVE,
                    outbound_queue.c.claimed_by == worker,
                )
                .values(
                    state=OutboundState.QUEUED,
                    claimed_by=None,
                    attempts=outbound_queue.c.attempts - 1,
                    updated_at=utcnow(),
                )
            )
            return int(result.rowcount)

    # -- operators --------------------------------------------------------------------------

    async def retry(self, queue_id: int) -> bool:
        """Queue a held, deferred or failed row again, due now, with a fresh lifetime; False if
        unknown, sending or sent."""
        now = utcnow()
        async with self.engine.begin() as connection:
            result = await connection.execute(
                update(outbound_queue)
                .where(outbound_queue.c.id == queue_id, outbound_queue.c.state.in_(RETRYABLE))
                .values(
                    state=OutboundState.QUEUED,
                    attempts=0,
                    next_attempt_at=now,
                    queued_at=now,
                    updated_at=now,
                )
            )
            return bool(result.rowcount)

    async def retryable(self, queue_id: int) -> tuple[bool, bool]:
        """Whether the inbound row and the outbound row with this id can be retried."""
        async with self.engine.connect() as connection:
            inbound = await connection.scalar(
                select(func.count())
                .select_from(repo.inbound_queue)
                .where(
                    repo.inbound_queue.c.id == queue_id,
                    repo.inbound_queue.c.state.in_([QueueState.HELD, QueueState.QUEUED]),
                )
            )
            outbound = await connection.scalar(
                select(func.count())
                .select_from(outbound_queue)
                .where(outbound_queue.c.id == queue_id, outbound_queue.c.state.in_(RETRYABLE))
            )
        return bool(inbound), bool(outbound)

    async def rows(self, states: Iterable[str] | None = None) -> list[Row[Any]]:
        """Outbound rows (without the bytes), oldest first, optionally of some states."""
        statement = (
            select(outbound_queue, repo.raw_messages.c.size)
            .join(repo.raw_messages, repo.raw_messages.c.id == outbound_queue.c.raw_id)
            .order_by(outbound_queue.c.id)
        )
        if states is not None:
            statement = statement.where(outbound_queue.c.state.in_(list(states)))
        async with self.engine.connect() as connection:
            return list((await connection.execute(statement)).all())

    async def deliveries(self, conversation_id: int) -> dict[int, Row[Any]]:
        """The outbound rows of a conversation's replies, by messages row id."""
        async with self.engine.connect() as connection:
            result = await connection.execute(
                select(outbound_queue).where(outbound_queue.c.conversation_id == conversation_id)
            )
            return {row.message_row_id: row for row in result.all()}

    # -- custom from addresses --------------------------------------------------------------

    async def is_verified(self, address: str) -> bool:
        """Whether a custom from address was verified."""
        async with self.engine.connect() as connection:
            found = await connection.scalar(
                select(from_addresses.c.verified_at).where(
                    from_addresses.c.address == address.lower()
                )
            )
        return found is not None

    async def set_code(
        self, address: str, code_hash: str, expires_at: datetime, outgoing: Outgoing
    ) -> int:
        """Replace the address's pending code and queue the mail carrying it, together."""
        now = utcnow()
        async with self.engine.begin() as connection:
            statement = _insert(connection, from_addresses).values(
                address=address.lower(), code_attempts=0, updated_at=now
            )
            await connection.execute(statement.on_conflict_do_nothing(index_elements=["address"]))
            await connection.execute(
                update(from_addresses)
                .where(from_addresses.c.address == address.lower())
                .values(
                    code_hash=code_hash, code_expires_at=expires_at, code_attempts=0, updated_at=now
                )
            )
            return await _queue(connection, outgoing)

    async def pending_code(self, address: str) -> PendingCode | None:
        """The address's unused code, or None."""
        async with self.engine.connect() as connection:
            row = (
                await connection.execute(
                    select(from_addresses).where(from_addresses.c.address == address.lower())
                )
            ).first()
        if row is None or row.code_hash is None or row.code_expires_at is None:
            return None
        return PendingCode(row.code_hash, row.code_expires_at, row.code_attempts)

    async def code_failed(self, address: str, *, revoke: bool) -> None:
        """Count a wrong code; `revoke` discards the code (too many wrong tries)."""
        values: dict[str, Any] = {
            "code_attempts": from_addresses.c.code_attempts + 1,
            "updated_at": utcnow(),
        }
        if revoke:
            values |= {"code_hash": None, "code_expires_at": None}
        async with self.engine.begin() as connection:
            await connection.execute(
                update(from_addresses)
                .where(from_addresses.c.address == address.lower())
                .values(**values)
            )

    async def mark_verified(self, address: str, code_hash: str) -> bool:
        """Use the code up and mark the address verified; False if the code was used meanwhile."""
        now = utcnow()
        async with self.engine.begin() as connection:
            result = await connection.execute(
                update(from_addresses)
                .where(
                    from_addresses.c.address == address.lower(),
                    from_addresses.c.code_hash == code_hash,
                )
                .values(code_hash=None, code_expires_at=None, verified_at=now, updated_at=now)
            )
            return bool(result.rowcount)
