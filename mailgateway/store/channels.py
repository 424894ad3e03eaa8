"""Queries of the IMAP channels: UID checkpoints, fetched messages, pending flags, health."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.schema import Table

from mailgateway.domain import ChannelState, ImapOutcome
from mailgateway.store.repo import (
    Delivery,
    Envelope,
    Store,
    _insert,
    digest_of,
    inbound_queue,
    raw_messages,
)
from mailgateway.store.schema import ChannelHealth, ImapCheckpoint, ImapMessage, utcnow

imap_checkpoints: Table = ImapCheckpoint.__table__  # type: ignore[assignment]
imap_messages: Table = ImapMessage.__table__  # type: ignore[assignment]
channel_health: Table = ChannelHealth.__table__  # type: ignore[assignment]

MAX_ERROR = 500


@dataclass(frozen=True, slots=True)
class Mailbox:
    """One watched folder of a channel, and the inbox its mail goes to."""

    channel: str
    folder: str
    inbox: str


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """How far a folder has been fetched (see schema.ImapCheckpoint)."""

    uidvalidity: int
    last_uid: int
    boundary_uid: int
    since: datetime


@dataclass(frozen=True, slots=True)
class Fetched:
    """One message fetched from a folder, ready to be committed."""

    uid: int
    data: bytes
    message_id: str
    envelope: Envelope


@dataclass(frozen=True, slots=True)
class Health:
    """A channel's last known health."""

    state: ChannelState
    last_error: str | None
    last_error_at: datetime | None
    last_success_at: datetime | None


class ChannelStore:
    """The IMAP channels' part of the database, over the gateway's store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- checkpoints ---------------------------------------------------------------------------

    async def checkpoint(self, mailbox: Mailbox) -> Checkpoint | None:
        """The folder's checkpoint, or None before its first connection."""
        async with self.store.engine.connect() as connection:
            row = (await connection.execute(_checkpoint_query(mailbox))).first()
        return None if row is None else Checkpoint(*row)

    async def begin_checkpoint(
        self, mailbox: Mailbox, uidvalidity: int, boundary_uid: int
    ) -> Checkpoint:
        """Start fetching a folder (first connection) or start over after its UIDVALIDITY
        changed: nothing fetched yet in this UIDVALIDITY, mail up to `boundary_uid` is old.
        The time the channel was first connected is kept."""
        now = utcnow()
        async with self.store.transaction() as connection:
            row = (await connection.execute(_checkpoint_query(mailbox, lock=True))).first()
            if row is not None and row.uidvalidity == uidvalidity:
                return Checkpoint(*row)
            since = now if row is None else row.since
            values = {"uidvalidity": uidvalidity, "last_uid": 0, "boundary_uid": boundary_uid}
            if row is None:
                await connection.execute(
                    imap_checkpoints.insert().values(
                        channel=mailbox.channel,
                        folder=mailbox.folder,
                        since=since,
                        updated_at=now,
                        **values,
                    )
                )
            else:
                await connection.execute(
                    update(imap_checkpoints)
                    .where(*_mailbox_filter(imap_checkpoints, mailbox))
                    .values(updated_at=now, **values)
                )
                await connection.execute(  # UIDs of the old UIDVALIDITY mean nothing any more
                    update(imap_messages)
                    .where(*_mailbox_filter(imap_messages, mailbox), ~imap_messages.c.acked)
                    .values(acked=True)
                )
        return Checkpoint(uidvalidity, 0, boundary_uid, since)

    async def advance(self, mailbox: Mailbox, uidvalidity: int, uid: int) -> None:
        """Every UID up to `uid` is handled (mail passed over as old, or too large)."""
        async with self.store.transaction() as connection:
            await _advance(connection, mailbox, uidvalidity, uid)

    # -- fetched messages ----------------------------------------------------------------------

    async def enqueue_with_checkpoint(
        self, mailbox: Mailbox, uidvalidity: int, fetched: Fetched, *, dedupe: bool
    ) -> ImapOutcome | None:
        """In one transaction: the raw bytes and their queue row (unless `dedupe` finds the
        message stored already, by Message-ID or content), the record of the UID, and the
        checkpoint moved past it. None when the UID was handled already (another process, or
        a checkpoint that moved on)."""
        async with self.store.transaction() as connection:
            row = (await connection.execute(_checkpoint_query(mailbox, lock=True))).first()
            if row is None or row.uidvalidity != uidvalidity or row.last_uid >= fetched.uid:
                return None
            outcome = await self._record(connection, mailbox, uidvalidity, fetched, dedupe=dedupe)
            await _advance(connection, mailbox, uidvalidity, fetched.uid)
            return outcome

    async def import_message(
        self, mailbox: Mailbox, uidvalidity: int, fetched: Fetched
    ) -> ImapOutcome | None:
        """Backfill: the message stored and its UID recorded (no checkpoint, no flags to set),
        unless this UID or this message (Message-ID or content) is stored already (None)."""
        async with self.store.transaction() as connection:
            if await _uid_known(connection, mailbox, uidvalidity, fetched.uid):
                return None
            return await self._record(
                connection, mailbox, uidvalidity, fetched, dedupe=True, acked=True
            )

    async def record_too_large(
        self, mailbox: Mailbox, uidvalidity: int, uid: int, *, advance: bool
    ) -> None:
        """A message over the size limit, left on the server: recorded, passed over."""
        async with self.store.transaction() as connection:
            await _insert_message(
                connection, mailbox, uidvalidity, uid, ImapOutcome.TOO_LARGE, acked=True
            )
            if advance:
                await _advance(connection, mailbox, uidvalidity, uid)

    async def _record(
        self,
        connection: AsyncConnection,
        mailbox: Mailbox,
        uidvalidity: int,
        fetched: Fetched,
        *,
        dedupe: bool,
        acked: bool = False,
    ) -> ImapOutcome:
        """Store the message (or find it stored) and record its UID."""
        digest = digest_of(fetched.data)
        if dedupe and await _known_message(connection, mailbox, fetched.message_id, digest):
            outcome, queue_id = ImapOutcome.DUPLICATE, None
        else:
            delivery = Delivery(mailbox.inbox, mailbox.channel)
            [queue_id] = await self.store.enqueue_in(
                connection, fetched.data, fetched.envelope, [delivery]
            )
            outcome = ImapOutcome.QUEUED
        await _insert_message(
            connection,
            mailbox,
            uidvalidity,
            fetched.uid,
            outcome,
            acked=acked,
            message_id=fetched.message_id,
            digest=digest,
            queue_id=queue_id,
        )
        return outcome

    async def known_uids(self, mailbox: Mailbox, uidvalidity: int) -> set[int]:
        """The UIDs of this folder and UIDVALIDITY handled already."""
        async with self.store.engine.connect() as connection:
            result = await connection.execute(
                select(imap_messages.c.uid).where(
                    *_mailbox_filter(imap_messages, mailbox),
                    imap_messages.c.uidvalidity == uidvalidity,
                )
            )
            return {int(uid) for uid in result.scalars()}

    # -- flags on the server -------------------------------------------------------------------

    async def pending_acks(self, mailbox: Mailbox, uidvalidity: int) -> list[int]:
        """UIDs committed but not yet marked seen (or moved) on the server."""
        async with self.store.engine.connect() as connection:
            result = await connection.execute(
                select(imap_messages.c.uid)
                .where(
                    *_mailbox_filter(imap_messages, mailbox),
                    imap_messages.c.uidvalidity == uidvalidity,
                    ~imap_messages.c.acked,
                )
                .order_by(imap_messages.c.uid)
            )
            return [int(uid) for uid in result.scalars()]

    async def mark_acked(self, mailbox: Mailbox, uidvalidity: int, uids: Sequence[int]) -> None:
        """The server has marked these UIDs seen (or moved them)."""
        if not uids:
            return
        async with self.store.transaction() as connection:
            await connection.execute(
                update(imap_messages)
                .where(
                    *_mailbox_filter(imap_messages, mailbox),
                    imap_messages.c.uidvalidity == uidvalidity,
                    imap_messages.c.uid.in_(list(uids)),
                )
                .values(acked=True)
            )

    # -- health --------------------------------------------------------------------------------

    async def set_health(
        self, channel: str, state: ChannelState, *, error: str | None = None, success: bool = False
    ) -> None:
        """Record a channel's state, and its latest error or success."""
        now = utcnow()
        changes: dict[str, Any] = {"state": state, "updated_at": now}
        if error is not None:
            changes |= {"last_error": error[:MAX_ERROR], "last_error_at": now}
        if success:
            changes["last_success_at"] = now
        async with self.store.transaction() as connection:
            statement = _insert(connection, channel_health).values(channel=channel, **changes)
            await connection.execute(
                statement.on_conflict_do_update(index_elements=["channel"], set_=changes)
            )

    async def health(self) -> dict[str, Health]:
        """Every channel's last known health, by channel address."""
        async with self.store.engine.connect() as connection:
            result = await connection.execute(select(channel_health))
            return {
                row.channel: Health(
                    ChannelState(row.state), row.last_error, row.last_error_at, row.last_success_at
                )
                for row in result.all()
            }

    async def queued_for(self, inbox: str, data: bytes) -> bool:
        """Whether these bytes are queued for the inbox already (a resumed backfill)."""
        async with self.store.engine.connect() as connection:
            found = await connection.scalar(
                select(func.count())
                .select_from(inbound_queue.join(raw_messages))
                .where(inbound_queue.c.inbox == inbox, raw_messages.c.digest == digest_of(data))
            )
            return bool(found)


def _mailbox_filter(table: Table, mailbox: Mailbox) -> list[Any]:
    """WHERE terms selecting one channel's folder."""
    return [table.c.channel == mailbox.channel, table.c.folder == mailbox.folder]


def _checkpoint_query(mailbox: Mailbox, *, lock: bool = False) -> Any:
    """The checkpoint row of a folder, locked for the transaction when asked."""
    statement = select(
        imap_checkpoints.c.uidvalidity,
        imap_checkpoints.c.last_uid,
        imap_checkpoints.c.boundary_uid,
        imap_checkpoints.c.since,
    ).where(*_mailbox_filter(imap_checkpoints, mailbox))
    return statement.with_for_update() if lock else statement


async def _advance(
    connection: AsyncConnection, mailbox: Mailbox, uidvalidity: int, uid: int
) -> None:
    """Move the checkpoint forward to `uid` (never back)."""
    await connection.execute(
        update(imap_checkpoints)
        .where(
            *_mailbox_filter(imap_checkpoints, mailbox),
            imap_checkpoints.c.uidvalidity == uidvalidity,
            imap_checkpoints.c.last_uid < uid,
        )
        .values(last_uid=uid, updated_at=utcnow())
    )


async def _uid_known(
    connection: AsyncConnection, mailbox: Mailbox, uidvalidity: int, uid: int
) -> bool:
    """Whether this UID of this folder was handled already."""
    found = await connection.scalar(
        select(func.count())
        .select_from(imap_messages)
        .where(
            *_mailbox_filter(imap_messages, mailbox),
            imap_messages.c.uidvalidity == uidvalidity,
            imap_messages.c.uid == uid,
        )
    )
    return bool(found)


async def _known_message(
    connection: AsyncConnection, mailbox: Mailbox, message_id: str, digest: str
) -> bool:
    """Whether the channel has stored this message before: same Message-ID, or same bytes."""
    match = imap_messages.c.digest == digest
    if message_id:
        match = or_(match, imap_messages.c.message_id == message_id)
    found = await connection.scalar(
        select(func.count())
        .select_from(imap_messages)
        .where(
            imap_messages.c.channel == mailbox.channel,
            imap_messages.c.outcome.in_([ImapOutcome.QUEUED, ImapOutcome.DUPLICATE]),
            match,
        )
    )
    return bool(found)


async def _insert_message(
    connection: AsyncConnection,
    mailbox: Mailbox,
    uidvalidity: int,
    uid: int,
    outcome: ImapOutcome,
    *,
    acked: bool,
    message_id: str = "",
    digest: str = "",
    queue_id: int | None = None,
) -> None:
    """Record what became of one UID (once: a second record of the same UID is ignored)."""
    statement = _insert(connection, imap_messages).values(
        channel=mailbox.channel,
        folder=mailbox.folder,
        uidvalidity=uidvalidity,
        uid=uid,
        message_id=message_id,
        digest=digest,
        outcome=outcome,
        queue_id=queue_id,
        acked=acked,
        created_at=utcnow(),
    )
    await connection.execute(
        statement.on_conflict_do_nothing(index_elements=["channel", "folder", "uidvalidity", "uid"])
    )
