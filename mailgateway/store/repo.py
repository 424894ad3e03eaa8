"""Every query the gateway runs, in one place, over SQLAlchemy Core with bound parameters only."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Insert, Row, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.schema import Table

from mailgateway.domain import ConversationStatus, QueueState
from mailgateway.store.claims import gone_claimers
from mailgateway.store.db import READ_ONLY
from mailgateway.store.schema import (
    Contact,
    Conversation,
    InboundItem,
    Message,
    RawMessage,
    Ticket,
    utcnow,
)
from mailgateway.store.sqlite_writer import SqliteWriter

raw_messages: Table = RawMessage.__table__  # type: ignore[assignment]
inbound_queue: Table = InboundItem.__table__  # type: ignore[assignment]
contacts: Table = Contact.__table__  # type: ignore[assignment]
conversations: Table = Conversation.__table__  # type: ignore[assignment]
messages: Table = Message.__table__  # type: ignore[assignment]
tickets: Table = Ticket.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One accepted recipient of an SMTP transaction: the inbox and the address it was sent to."""

    inbox: str
    rcpt_to: str


@dataclass(frozen=True, slots=True)
class Envelope:
    """The SMTP envelope and session facts stored beside the raw bytes."""

    mail_from: str
    peer: str = ""
    helo: str = ""
    source: str = "smtp"
    channel: str | None = None  # the IMAP channel's address; None for the fallback email
    archive: bool = False  # backfilled old mail: no notifications, no auto-assignment


@dataclass(frozen=True, slots=True)
class Submission:
    """One message to enqueue: its bytes, envelope and the inboxes it goes to."""

    data: bytes
    envelope: Envelope
    deliveries: tuple[Delivery, ...]


@dataclass(frozen=True, slots=True)
class ClaimedItem:
    """A queue row a worker has claimed, with the raw bytes to process."""

    id: int
    raw_id: int
    inbox: str
    rcpt_to: str
    mail_from: str
    attempts: int
    data: bytes
    source: str = "smtp"
    channel: str | None = None
    archive: bool = False


def digest_of(data: bytes) -> str:
    """The content key under which raw bytes are stored once."""
    return hashlib.sha256(data).hexdigest()


def _insert(connection: AsyncConnection | Connection, table: Table) -> Any:
    """A dialect-specific INSERT that supports ON CONFLICT DO NOTHING."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _queue_values(
    submission: Submission, delivery: Delivery, raw_id: int, now: datetime
) -> dict[str, Any]:
    """A new inbound queue row for one inbox."""
    envelope = submission.envelope
    return {
        "raw_id": raw_id,
        "inbox": delivery.inbox,
        "source": envelope.source,
        "mail_from": envelope.mail_from,
        "rcpt_to": delivery.rcpt_to,
        "peer": envelope.peer,
        "helo": envelope.helo,
        "channel": envelope.channel,
        "archive": envelope.archive,
        "state": QueueState.QUEUED,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "updated_at": now,
    }


def _inserted_id(statement: Insert) -> Any:
    """An INSERT that returns the new row's id."""
    return statement.returning(statement.table.c.id)


def _sqlite_writer(engine: AsyncEngine) -> SqliteWriter | None:
    """A writer thread for a SQLite file reached through aiosqlite (not for an in-memory
    database, nor for PostgreSQL or SQLite statements that run inline)."""
    database = engine.url.database
    if engine.dialect.driver != "aiosqlite" or not database or database == ":memory:":
        return None
    return SqliteWriter(engine.url)


class WriterTurns:
    """Turn-taking for SQLite's single writer inside one process: a waiting urgent writer goes
    before every background writer that has not started yet."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.urgent_waiting = 0
        self.no_urgent = asyncio.Event()
        self.no_urgent.set()

    @contextlib.asynccontextmanager
    async def turn(self, *, urgent: bool) -> AsyncIterator[None]:
        """Hold the writer's turn for the duration of the block."""
        if urgent:
            await self._acquire_urgent()
        else:
            await self._acquire_background()
        try:
            yield
        finally:
            self.lock.release()

    async def _acquire_urgent(self) -> None:
        self.urgent_waiting += 1
        self.no_urgent.clear()
        try:
            await self.lock.acquire()
        finally:
            self.urgent_waiting -= 1
            if not self.urgent_waiting:
                self.no_urgent.set()

    async def _acquire_background(self) -> None:
        while True:
            await self.no_urgent.wait()
            await self.lock.acquire()
            if not self.urgent_waiting:
                return
            self.lock.release()


class Store:
    """The gateway's database: queue, conversations and their messages."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._writers = WriterTurns() if engine.dialect.name == "sqlite" else None
        self._sqlite_writer = _sqlite_writer(engine)

    @contextlib.asynccontextmanager
    async def transaction(self, *, urgent: bool = False) -> AsyncIterator[AsyncConnection]:
        """A write transaction. On SQLite the process's writers take turns in-process (urgent
        ones, SMTP commits that a client is waiting for, first) rather than in SQLite's busy
        handler, which sleeps in growing steps."""
        if self._writers is None:
            async with self.engine.begin() as connection:
                yield connection
            return
        async with self._writers.turn(urgent=urgent), self.engine.begin() as connection:
            yield connection

    async def close(self) -> None:
        """Release the connection pool (and the SQLite writer's connection)."""
        if self._sqlite_writer is not None:
            await asyncio.to_thread(self._sqlite_writer.close)
        await self.engine.dispose()

    # -- intake ------------------------------------------------------------------------------

    async def enqueue(
        self, data: bytes, envelope: Envelope, deliveries: Sequence[Delivery]
    ) -> list[int]:
        """Commit the raw bytes once and one queue row per inbox; a retried identical delivery
        returns the rows stored the first time instead of storing again."""
        [ids] = await self.enqueue_many([Submission(data, envelope, tuple(deliveries))])
        return ids

    async def enqueue_many(self, submissions: Sequence[Submission]) -> list[list[int]]:
        """Enqueue several messages in one transaction (group commit) with one statement per
        step for the whole batch; the queue ids of each message, in order. On SQLite the
        transaction runs whole on the writer thread (one hop instead of one per statement)."""
        if self._sqlite_writer is not None:
            assert self._writers is not None
            async with self._writers.turn(urgent=True):
                return await self._sqlite_writer.run(enqueue_rows, submissions)
        async with self.transaction(urgent=True) as connection:
            return await self.enqueue_batch_in(connection, submissions)

    async def enqueue_in(
        self,
        connection: AsyncConnection,
        data: bytes,
        envelope: Envelope,
        deliveries: Sequence[Delivery],
    ) -> list[int]:
        """`enqueue` inside a transaction the caller owns (to commit more with it)."""
        submission = Submission(data, envelope, tuple(deliveries))
        [ids] = await self.enqueue_batch_in(connection, [submission])
        return ids

    async def enqueue_batch_in(
        self, connection: AsyncConnection, submissions: Sequence[Submission]
    ) -> list[list[int]]:
        """Store the bytes and queue rows of several messages with one statement per step for
        the whole batch, inside the caller's transaction; the queue ids of each message."""
        return await connection.run_sync(enqueue_rows, submissions)

    # -- the inbound queue ---------------------------------------------------------------------

    async def claim(
        self,
        worker: str,
        limit: int,
        max_attempts: int,
        lease: timedelta = timedelta(minutes=10),
    ) -> list[ClaimedItem]:
        """Claim up to `limit` due rows (row locks, SKIP LOCKED on PostgreSQL), counting an
        attempt for each; rows already tried `max_attempts` times are held instead. Rows another
        worker claimed longer than `lease` ago are due too: that worker died mid-batch."""
        now = utcnow()
        async with self.transaction() as connection:
            queue = inbound_queue.c
            stale = await _claimable(
                connection, limit, QueueState.ACTIVE, queue.claimed_at, now - lease
            )
            waiting = await _claimable(
                connection, limit - len(stale), QueueState.QUEUED, queue.next_attempt_at, now
            )
            rows = stale + waiting
            exhausted = [row.id for row in rows if row.attempts >= max_attempts]
            due = [row.id for row in rows if row.attempts < max_attempts]
            if exhausted:
                await connection.execute(
                    update(inbound_queue)
                    .where(inbound_queue.c.id.in_(exhausted))
                    .values(state=QueueState.HELD, updated_at=now)
                )
            if not due:
                return []
            await connection.execute(
                update(inbound_queue)
                .where(inbound_queue.c.id.in_(due))
                .values(
                    state=QueueState.ACTIVE,
                    attempts=inbound_queue.c.attempts + 1,
                    claimed_by=worker,
                    claimed_at=now,
                    updated_at=now,
                )
            )
            result = await connection.execute(
                select(
                    inbound_queue.c.id,
                    inbound_queue.c.raw_id,
                    inbound_queue.c.inbox,
                    inbound_queue.c.rcpt_to,
                    inbound_queue.c.mail_from,
                    inbound_queue.c.attempts,
                    raw_messages.c.data,
                    inbound_queue.c.source,
                    inbound_queue.c.channel,
                    inbound_queue.c.archive,
                )
                .join(raw_messages, raw_messages.c.id == inbound_queue.c.raw_id)
                .where(inbound_queue.c.id.in_(due))
                .order_by(inbound_queue.c.id)
            )
            return [ClaimedItem(**row._mapping) for row in result.all()]

    async def requeue_stale(self, older_than: timedelta) -> int:
        """Put rows back whose worker vanished mid-processing (claimed longer ago than
        `older_than`); returns how many."""
        cutoff = utcnow() - older_than
        async with self.transaction() as connection:
            result = await connection.execute(
                update(inbound_queue)
                .where(
                    inbound_queue.c.state == QueueState.ACTIVE,
                    inbound_queue.c.claimed_at < cutoff,
                )
                .values(state=QueueState.QUEUED, claimed_by=None, updated_at=utcnow())
            )
            return int(result.rowcount)

    async def requeue_abandoned(
        self,
        alive: Callable[[str], bool],
        in_process: Callable[[Sequence[int]], int] | None = None,
    ) -> int:
        """Put back at once the rows of claimers known to be gone (`alive` says False: e.g. a
        process of this host that no longer exists), without waiting for the lease. A worker
        takes its claimed rows in id order, a chunk at a time, and finished rows leave the
        active set: so only the first chunk of a gone claimer's rows can have been in its hands
        (`in_process` says how many rows that is, from their attempt counts in id order). They
        keep the attempt their claim counted (a message that kills the process each time is
        still held after max_attempts) and say why; the others were never begun and get the
        attempt back. Without `in_process` every row keeps its attempt."""
        async with self.transaction() as connection:
            gone = await gone_claimers(connection, inbound_queue, QueueState.ACTIVE, alive)
            requeued = 0
            for name in gone:
                found = await connection.execute(
                    select(inbound_queue.c.id, inbound_queue.c.attempts)
                    .where(
                        inbound_queue.c.state == QueueState.ACTIVE,
                        inbound_queue.c.claimed_by == name,
                    )
                    .order_by(inbound_queue.c.id)
                )
                rows = found.all()
                ids = [row.id for row in rows]
                split = len(ids) if in_process is None else in_process([r.attempts for r in rows])
                reason = f"requeued: worker {name} stopped while processing this message"
                for chunk, values in (
                    (ids[:split], {"reason": reason}),
                    (ids[split:], {"attempts": inbound_queue.c.attempts - 1}),
                ):
                    if chunk:
                        await connection.execute(
                            update(inbound_queue)
                            .where(inbound_queue.c.id.in_(chunk))
                            .values(
                                state=QueueState.QUEUED,
                                claimed_by=None,
                                updated_at=utcnow(),
                                **values,
                            )
                        )
                requeued += len(ids)
            return requeued

    async def release_claims(self, worker: str) -> int:
        """Put back every row this worker claimed and did not finish (orderly shutdown)."""
        async with self.transaction() as connection:
            result = await connection.execute(
                update(inbound_queue)
                .where(
                    inbound_queue.c.state == QueueState.ACTIVE,
                    inbound_queue.c.claimed_by == worker,
                )
                .values(
                    state=QueueState.QUEUED,
                    claimed_by=None,
                    attempts=inbound_queue.c.attempts - 1,
                    updated_at=utcnow(),
                )
            )
            return int(result.rowcount)

    async def fail(self, queue_id: int, reason: str, *, hold: bool, retry_at: datetime) -> None:
        """Record a failed attempt: back to the queue for a later retry, or held for a human."""
        state = QueueState.HELD if hold else QueueState.QUEUED
        async with self.transaction() as connection:
            await connection.execute(
                update(inbound_queue)
                .where(inbound_queue.c.id == queue_id)
                .values(
                    state=state,
                    reason=reason,
                    next_attempt_at=retry_at,
                    claimed_by=None,
                    updated_at=utcnow(),
                )
            )

    async def retry(self, queue_id: int) -> bool:
        """Queue a held (or deferred) row again with a fresh attempt count; False if unknown or
        already done."""
        async with self.transaction() as connection:
            result = await connection.execute(
                update(inbound_queue)
                .where(
                    inbound_queue.c.id == queue_id,
                    inbound_queue.c.state.in_([QueueState.HELD, QueueState.QUEUED]),
                )
                .values(
                    state=QueueState.QUEUED,
                    attempts=0,
                    next_attempt_at=utcnow(),
                    updated_at=utcnow(),
                )
            )
            return bool(result.rowcount)

    async def queue_rows(self, states: Iterable[str] | None = None) -> list[Row[Any]]:
        """Queue rows (without the raw bytes), oldest first, optionally of some states."""
        statement = (
            select(inbound_queue, raw_messages.c.size)
            .join(raw_messages, raw_messages.c.id == inbound_queue.c.raw_id)
            .order_by(inbound_queue.c.id)
        )
        if states is not None:
            statement = statement.where(inbound_queue.c.state.in_(list(states)))
        async with self.engine.connect() as connection:
            return list((await connection.execute(statement)).all())

    async def queue_depth(self, cap: int) -> int:
        """How many rows wait for or are in processing (queued or active), counted up to `cap`
        (an index range scan that stops there, however deep the queue)."""
        waiting = (
            select(inbound_queue.c.id)
            .where(inbound_queue.c.state.in_([QueueState.QUEUED, QueueState.ACTIVE]))
            .limit(cap)
            .subquery()
        )
        async with self.engine.connect() as connection:
            await connection.execution_options(**{READ_ONLY: True})
            return int(await connection.scalar(select(func.count()).select_from(waiting)) or 0)

    async def queue_counts(self) -> dict[str, int]:
        """How many queue rows are in each state."""
        async with self.engine.connect() as connection:
            result = await connection.execute(
                select(inbound_queue.c.state, func.count()).group_by(inbound_queue.c.state)
            )
            return {state: int(count) for state, count in result.all()}

    # -- conversations ------------------------------------------------------------------------

    async def conversation_rows(
        self,
        *,
        inbox: str | None = None,
        status: str | None = None,
        assignee: str | None = None,
        limit: int | None = None,
        ids: Sequence[int] | None = None,
        inboxes: Sequence[str] | None = None,
    ) -> list[Row[Any]]:
        """Conversations with their contact, newest activity first, filtered as asked."""
        statement = (
            select(
                conversations,
                contacts.c.email.label("contact_email"),
                contacts.c.name.label("contact_name"),
                tickets.c.id.label("ticket_id"),
                tickets.c.pipeline.label("ticket_pipeline"),
                tickets.c.stage.label("ticket_stage"),
                tickets.c.owner.label("ticket_owner"),
            )
            .outerjoin(contacts, contacts.c.id == conversations.c.contact_id)
            .outerjoin(tickets, tickets.c.conversation_id == conversations.c.id)
            .order_by(conversations.c.updated_at.desc(), conversations.c.id.desc())
        )
        filters = {"inbox": inbox, "status": status, "assignee": assignee}
        for column, value in filters.items():
            if value is not None:
                statement = statement.where(conversations.c[column] == value)
        if ids is not None:
            statement = statement.where(conversations.c.id.in_(list(ids)))
        if inboxes is not None:
            statement = statement.where(conversations.c.inbox.in_(list(inboxes)))
        if limit is not None:
            statement = statement.limit(limit)
        async with self.engine.connect() as connection:
            return list((await connection.execute(statement)).all())

    async def message_rows(self, conversation_id: int) -> list[Row[Any]]:
        """The messages of a conversation, oldest first."""
        async with self.engine.connect() as connection:
            result = await connection.execute(
                select(messages)
                .where(messages.c.conversation_id == conversation_id)
                .order_by(messages.c.id)
            )
            return list(result.all())

    async def set_status(self, conversation_id: int, status: ConversationStatus) -> bool:
        """Close or reopen a conversation; False when there is no such conversation."""
        async with self.transaction() as connection:
            result = await connection.execute(
                update(conversations)
                .where(conversations.c.id == conversation_id)
                .values(status=status, updated_at=utcnow())
            )
            return bool(result.rowcount)


async def _claimable(
    connection: AsyncConnection, limit: int, state: QueueState, since: Any, bound: datetime
) -> list[Any]:
    """Up to `limit` rows in a state whose `since` column is at most `bound`, oldest first in
    the order of the (state, time) index, so a deep queue costs no sort; locked rows are
    skipped (another worker holds them)."""
    if limit <= 0:
        return []
    result = await connection.execute(
        select(inbound_queue.c.id, inbound_queue.c.attempts)
        .where(inbound_queue.c.state == state, since <= bound)
        .order_by(since, inbound_queue.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(result.all())


# -- intake's group commit (synchronous: on the SQLite writer thread, or via run_sync) --------


_UPSERTS: dict[tuple[str, str], Any] = {}


def _upsert_returning(connection: Connection, table: Table, key: tuple[str, ...]) -> Any:
    """INSERT ... ON CONFLICT (key) DO UPDATE SET key = key RETURNING key..., id: every row's id,
    new or stored before. Built once per dialect and table (building it costs more than
    running it); the rows are parameters."""
    cache = (connection.dialect.name, table.name)
    if cache not in _UPSERTS:
        insert = _insert(connection, table)
        statement = insert.on_conflict_do_update(
            index_elements=list(key), set_={key[0]: insert.excluded[key[0]]}
        )
        _UPSERTS[cache] = statement.returning(*(table.c[name] for name in key), table.c.id)
    return _UPSERTS[cache]


def enqueue_rows(connection: Connection, submissions: Sequence[Submission]) -> list[list[int]]:
    """Store a batch of messages with one statement per step; the queue ids of each message,
    in order. Bytes stored before, and deliveries queued before, are found, not stored again."""
    raw_ids = _raw_ids(connection, [s.data for s in submissions])
    keys = [
        (delivery.inbox, raw_ids[digest_of(submission.data)])
        for submission in submissions
        for delivery in submission.deliveries
    ]
    queue_ids = _queue_rows(connection, submissions, raw_ids)
    ids = iter(queue_ids[key] for key in keys)
    return [[next(ids) for _ in submission.deliveries] for submission in submissions]


def _raw_ids(connection: Connection, blobs: Sequence[bytes]) -> dict[str, int]:
    """The ids of the stored copies of these bytes by digest, storing the new ones: one
    INSERT ... ON CONFLICT that returns the id of every row, new or already stored (a no-op
    update of the key makes the stored ones return theirs)."""
    now = utcnow()
    unique = {digest_of(data): data for data in blobs}
    rows = [
        {"digest": digest, "size": len(data), "data": data, "received_at": now}
        for digest, data in unique.items()
    ]
    found = connection.execute(_upsert_returning(connection, raw_messages, ("digest",)), rows)
    return {digest: int(raw_id) for digest, raw_id in found.all()}


def _queue_rows(
    connection: Connection, submissions: Sequence[Submission], raw_ids: dict[str, int]
) -> dict[tuple[str, int], int]:
    """The queue rows of each (inbox, raw message), created when new; one statement that
    returns new and existing rows alike (a retried delivery finds the row it made before)."""
    now = utcnow()
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for submission in submissions:
        raw_id = raw_ids[digest_of(submission.data)]
        for delivery in submission.deliveries:
            rows.setdefault(
                (delivery.inbox, raw_id), _queue_values(submission, delivery, raw_id, now)
            )
    statement = _upsert_returning(connection, inbound_queue, ("inbox", "raw_id"))
    found = connection.execute(statement, list(rows.values()))
    return {(inbox, int(raw_id)): int(queue_id) for inbox, raw_id, queue_id in found.all()}


# -- writes inside the worker's transaction --------------------------------------------------


CONTACT_BY_EMAIL = select(contacts.c.id, contacts.c.name).where(
    contacts.c.email == bindparam("email")
)
MESSAGE_OF_QUEUE_ROW = select(messages.c.id).where(messages.c.queue_id == bindparam("queue_id"))
FINISH = (
    update(inbound_queue)
    .where(inbound_queue.c.id == bindparam("queue_id"))
    .values(state=QueueState.DONE, reason=None, claimed_by=None)
)
# Dialect-specific statements (INSERT ... ON CONFLICT, RETURNING), built once per dialect.
_BUILT: dict[tuple[str, str], Any] = {}


def _built(connection: AsyncConnection, name: str, build: Callable[[], Any]) -> Any:
    """A statement built once per dialect and kept; its values are passed as parameters."""
    key = (connection.dialect.name, name)
    if key not in _BUILT:
        _BUILT[key] = build()
    return _BUILT[key]


async def upsert_contact(connection: AsyncConnection, email: str, name: str) -> int:
    """The contact with this address, created (with its display name) when new."""
    insert = _built(
        connection,
        "contact",
        lambda: _insert(connection, contacts).on_conflict_do_nothing(index_elements=["email"]),
    )
    await connection.execute(insert, {"email": email, "name": name, "created_at": utcnow()})
    row = (await connection.execute(CONTACT_BY_EMAIL, {"email": email})).one()
    if name and not row.name:
        await connection.execute(update(contacts).where(contacts.c.id == row.id).values(name=name))
    return int(row.id)


async def conversation_by_message_ids(
    connection: AsyncConnection, inbox: str, message_ids: Sequence[str]
) -> dict[str, int]:
    """Which of these Message-IDs are stored in the inbox, and in which conversation."""
    if not message_ids:
        return {}
    result = await connection.execute(
        select(messages.c.message_id, messages.c.conversation_id).where(
            messages.c.inbox == inbox, messages.c.message_id.in_(list(message_ids))
        )
    )
    return {message_id: int(conversation_id) for message_id, conversation_id in result.all()}


async def message_for_queue_row(connection: AsyncConnection, queue_id: int) -> int | None:
    """The message already stored for a queue row, if a previous attempt got that far."""
    found = await connection.scalar(MESSAGE_OF_QUEUE_ROW, {"queue_id": queue_id})
    return None if found is None else int(found)


async def create_conversation(
    connection: AsyncConnection,
    inbox: str,
    subject: str,
    contact_id: int | None,
    when: datetime,
    *,
    subject_key: str | None = None,
    channel: str = "fallback_email",
) -> int:
    """A new open conversation with its own unguessable reply token (128 random bits, lower
    case: intake lower-cases recipient addresses), the key of its subject, and the channel it
    came in on ("fallback_email" or a team address)."""
    statement = _built(
        connection, "conversation", lambda: _inserted_id(_insert(connection, conversations))
    )
    values = conversation_values(
        inbox, subject, contact_id, when, subject_key=subject_key, channel=channel
    )
    return int((await connection.execute(statement, values)).scalar_one())


async def touch_conversation(
    connection: AsyncConnection, conversation_id: int, when: datetime
) -> None:
    """Mark new activity on a conversation."""
    await connection.execute(
        update(conversations).where(conversations.c.id == conversation_id).values(updated_at=when)
    )


async def insert_message(connection: AsyncConnection, values: dict[str, Any]) -> int:
    """Store one message row; returns its id."""
    statement = _insert(connection, messages).values(**values)
    return int((await connection.execute(_inserted_id(statement))).scalar_one())


async def finish(connection: AsyncConnection, queue_id: int) -> None:
    """Mark a queue row done, in the same transaction as the rows it produced."""
    await connection.execute(FINISH, {"queue_id": queue_id, "updated_at": utcnow()})


# -- the same writes for a whole batch of messages, one statement per step ---------------------


async def messages_for_queue_rows(
    connection: AsyncConnection, queue_ids: Sequence[int]
) -> dict[int, int]:
    """The messages already stored for these queue rows (by queue id), where an earlier
    attempt got that far."""
    if not queue_ids:
        return {}
    result = await connection.execute(
        select(messages.c.queue_id, messages.c.id).where(messages.c.queue_id.in_(queue_ids))
    )
    return {int(queue_id): int(message_id) for queue_id, message_id in result.all()}


async def upsert_contacts(
    connection: AsyncConnection, people: Sequence[tuple[str, str]]
) -> dict[str, int]:
    """`upsert_contact` for each (email, name) in turn, in three statements: the contacts by
    address, created when new; a contact without a name takes the first name given for it."""
    if not people:
        return {}
    created: dict[str, str] = {}  # each address once, in order, with its first name
    names: dict[str, str] = {}  # each address's first non-empty name
    for email, name in people:
        created.setdefault(email, name)
        if not names.get(email):
            names[email] = name
    insert = _built(
        connection,
        "contact",
        lambda: _insert(connection, contacts).on_conflict_do_nothing(index_elements=["email"]),
    )
    now = utcnow()
    await connection.execute(
        insert,
        [{"email": email, "name": name, "created_at": now} for email, name in created.items()],
    )
    rows = (
        await connection.execute(
            select(contacts.c.id, contacts.c.email, contacts.c.name).where(
                contacts.c.email.in_(list(created))
            )
        )
    ).all()
    named = [
        {"contact": row.id, "new_name": names[row.email]}
        for row in rows
        if names[row.email] and not row.name
    ]
    if named:
        await connection.execute(
            update(contacts)
            .where(contacts.c.id == bindparam("contact"))
            .values(name=bindparam("new_name")),
            named,
        )
    return {str(row.email): int(row.id) for row in rows}


def conversation_values(
    inbox: str,
    subject: str,
    contact_id: int | None,
    when: datetime,
    *,
    subject_key: str | None = None,
    channel: str = "fallback_email",
) -> dict[str, Any]:
    """A new open conversation's row (see `create_conversation`)."""
    return {
        "inbox": inbox,
        "subject": subject,
        "subject_key": subject_key,
        "status": ConversationStatus.OPEN,
        "contact_id": contact_id,
        "channel": channel,
        "reply_token": secrets.token_hex(16),
        "created_at": when,
        "updated_at": when,
    }


async def create_conversations(
    connection: AsyncConnection, rows: Sequence[dict[str, Any]]
) -> list[int]:
    """Insert several `conversation_values` rows in one statement; their ids, in order."""
    if not rows:
        return []
    statement = _built(
        connection,
        "conversations",
        lambda: _insert(connection, conversations).returning(
            conversations.c.id, sort_by_parameter_order=True
        ),
    )
    result = await connection.execute(statement, list(rows))
    return [int(found) for found in result.scalars().all()]


async def finish_many(connection: AsyncConnection, queue_ids: Sequence[int]) -> None:
    """`finish` for several queue rows in one statement."""
    if queue_ids:
        await connection.execute(
            update(inbound_queue)
            .where(inbound_queue.c.id.in_(list(queue_ids)))
            .values(state=QueueState.DONE, reason=None, claimed_by=None, updated_at=utcnow())
        )
