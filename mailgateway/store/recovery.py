"""Queries that put inbound rows back in the queue when the database, not the message, failed."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update

from mailgateway.domain import QueueState
from mailgateway.store.repo import Store, inbound_queue
from mailgateway.store.schema import utcnow


async def defer(store: Store, queue_id: int, reason: str, retry_at: datetime) -> None:
    """Back to the queue after a failure of the database, not of the message: retried at
    `retry_at`, the attempt its claim counted given back (it never counts towards holding)."""
    async with store.transaction() as connection:
        await connection.execute(
            update(inbound_queue)
            .where(inbound_queue.c.id == queue_id, inbound_queue.c.state == QueueState.ACTIVE)
            .values(
                state=QueueState.QUEUED,
                attempts=inbound_queue.c.attempts - 1,
                reason=reason,
                next_attempt_at=retry_at,
                claimed_by=None,
                updated_at=utcnow(),
            )
        )
