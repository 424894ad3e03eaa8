"""The notification outbox: events written with the change they announce, claimed and posted
by the notifier with retries (row locks, SKIP LOCKED on PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.schema import Table

from mailgateway.domain import NotificationKind, OutboxState
from mailgateway.store.claims import gone_claimers
from mailgateway.store.repo import _insert
from mailgateway.store.schema import NotificationEvent, utcnow

notification_outbox: Table = NotificationEvent.__table__  # type: ignore[assignment]
STALE_CLAIM = timedelta(minutes=10)  # a claim this old is of a worker that vanished


@dataclass(frozen=True, slots=True)
class ClaimedEvent:
    """An outbox row the notifier has claimed for one attempt."""

    id: int
    kind: NotificationKind
    payload: dict[str, Any]
    attempts: int


async def add_event(
    connection: AsyncConnection,
    kind: NotificationKind,
    conversation_id: int | None,
    payload: dict[str, Any],
) -> int:
    """Queue one notification, in the caller's transaction."""
    now = utcnow()
    statement = _insert(connection, notification_outbox).values(
        kind=kind,
        conversation_id=conversation_id,
        payload=payload,
        state=OutboxState.QUEUED,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    returning = statement.returning(notification_outbox.c.id)
    return int((await connection.execute(returning)).scalar_one())


async def claim_events(
    engine: AsyncEngine, worker: str, limit: int, lease: timedelta = STALE_CLAIM
) -> list[ClaimedEvent]:
    """Claim up to `limit` due events, counting an attempt for each; events another notifier
    claimed longer than `lease` ago are due too (it vanished mid-post)."""
    now = utcnow()
    table = notification_outbox
    columns = (table.c.id, table.c.kind, table.c.payload, table.c.attempts)
    async with engine.begin() as connection:
        rows = list(
            await connection.execute(
                select(*columns)
                .where(table.c.state == OutboxState.SENDING, table.c.claimed_at < now - lease)
                .order_by(table.c.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )
        if len(rows) < limit:
            rows += await connection.execute(
                select(*columns)
                .where(table.c.state == OutboxState.QUEUED, table.c.next_attempt_at <= now)
                .order_by(table.c.id)
                .limit(limit - len(rows))
                .with_for_update(skip_locked=True)
            )
        if not rows:
            return []
        await connection.execute(
            update(table)
            .where(table.c.id.in_([row.id for row in rows]))
            .values(
                state=OutboxState.SENDING,
                attempts=table.c.attempts + 1,
                claimed_by=worker,
                claimed_at=now,
            )
        )
    return [
        ClaimedEvent(row.id, NotificationKind(row.kind), dict(row.payload), row.attempts + 1)
        for row in rows
    ]


async def _finish(engine: AsyncEngine, event_id: int, **values: Any) -> None:
    """Update one claimed event."""
    async with engine.begin() as connection:
        await connection.execute(
            update(notification_outbox)
            .where(notification_outbox.c.id == event_id)
            .values(claimed_by=None, **values)
        )


async def mark_sent(engine: AsyncEngine, event_id: int) -> None:
    """The webhook accepted the event."""
    await _finish(engine, event_id, state=OutboxState.SENT, sent_at=utcnow(), last_error=None)


async def mark_retry(engine: AsyncEngine, event_id: int, error: str, retry_at: datetime) -> None:
    """The attempt failed for now: queue the event again for a later attempt."""
    await _finish(
        engine, event_id, state=OutboxState.QUEUED, last_error=error, next_attempt_at=retry_at
    )


async def mark_failed(engine: AsyncEngine, event_id: int, error: str) -> None:
    """The event will not be sent: refused by the webhook or out of attempts."""
    await _finish(engine, event_id, state=OutboxState.FAILED, last_error=error)


async def requeue_abandoned(engine: AsyncEngine, alive: Callable[[str], bool]) -> int:
    """Queue again at once the events of notifiers known to be gone (`alive` says False: a
    process of this host that no longer exists); their claim keeps its attempt."""
    async with engine.begin() as connection:
        gone = await gone_claimers(connection, notification_outbox, OutboxState.SENDING, alive)
        if not gone:
            return 0
        result = await connection.execute(
            update(notification_outbox)
            .where(
                notification_outbox.c.state == OutboxState.SENDING,
                notification_outbox.c.claimed_by.in_(gone),
            )
            .values(state=OutboxState.QUEUED, claimed_by=None)
        )
        return int(result.rowcount)


async def release_claims(engine: AsyncEngine, worker: str) -> int:
    """Queue again, uncounted, the events this notifier claimed and did not post (shutdown)."""
    async with engine.begin() as connection:
        result = await connection.execute(
            update(notification_outbox)
            .where(
                notification_outbox.c.state == OutboxState.SENDING,
                notification_outbox.c.claimed_by == worker,
            )
            .values(
                state=OutboxState.QUEUED,
                claimed_by=None,
                attempts=notification_outbox.c.attempts - 1,
            )
        )
        return int(result.rowcount)


async def event_rows(engine: AsyncEngine, states: Iterable[str] | None = None) -> list[Row[Any]]:
    """Outbox rows, oldest first, optionally of some states."""
    statement = select(notification_outbox).order_by(notification_outbox.c.id)
    if states is not None:
        statement = statement.where(notification_outbox.c.state.in_(list(states)))
    async with engine.connect() as connection:
        return list((await connection.execute(statement)).all())
