"""Queries of sending through team email channels: their send health, failed Sent copies."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from mailgateway.config import Config
from mailgateway.domain import ChannelState, OutboundState
from mailgateway.store.channels import MAX_ERROR, channel_health
from mailgateway.store.db import create_engine
from mailgateway.store.outbound import outbound_queue
from mailgateway.store.repo import Store, _insert
from mailgateway.store.schema import utcnow

WAITING = (OutboundState.QUEUED, OutboundState.ACTIVE, OutboundState.DEFERRED)
TROUBLE = (OutboundState.DEFERRED, OutboundState.HELD, OutboundState.FAILED)
READ_TIMEOUT = 5.0
REASON_LIMIT = 500


@dataclass(frozen=True, slots=True)
class Sending:
    """How a channel's outgoing side fares, from its rows in the outbound queue."""

    last_sent_at: datetime | None = None
    waiting: int = 0  # queued, being sent, or deferred
    held: int = 0
    last_error: str | None = None  # reason of the latest deferred, held or failed row
    last_error_at: datetime | None = None


async def sending_health(store: Store, channels: Iterable[str]) -> dict[str, Sending]:
    """Each channel's sending health, by lower-cased address (rows name it as transport)."""
    wanted = {address.lower() for address in channels}
    if not wanted:
        return {}
    transport = func.lower(outbound_queue.c.transport)
    async with store.engine.connect() as connection:
        totals = (
            await connection.execute(
                select(
                    transport.label("channel"),
                    func.max(outbound_queue.c.sent_at).label("last_sent_at"),
                    func.count().filter(outbound_queue.c.state.in_(WAITING)).label("waiting"),
                    func.count().filter(outbound_queue.c.state == OutboundState.HELD).label("held"),
                )
                .where(transport.in_(wanted))
                .group_by(transport)
            )
        ).all()
        found: dict[str, Sending] = {}
        for row in totals:
            error = (
                await connection.execute(
                    select(outbound_queue.c.reason, outbound_queue.c.updated_at)
                    .where(transport == row.channel, outbound_queue.c.state.in_(TROUBLE))
                    .order_by(outbound_queue.c.updated_at.desc(), outbound_queue.c.id.desc())
                    .limit(1)
                )
            ).first()
            found[row.channel] = Sending(
                row.last_sent_at,
                int(row.waiting),
                int(row.held),
                None if error is None else error.reason,
                None if error is None else error.updated_at,
            )
        return found


async def note_copy_failed(store: Store, queue_id: int, channel: str, error: str) -> None:
    """A sent reply whose copy could not be saved in the Sent folder: said on its outbound row
    (after the server's reply) and as the channel's last error; its state stays sent."""
    note = f"not copied to the Sent folder: {error}"
    now = utcnow()
    changes = {"last_error": note[:MAX_ERROR], "last_error_at": now, "updated_at": now}
    async with store.transaction() as connection:
        reason = await connection.scalar(
            select(outbound_queue.c.reason).where(outbound_queue.c.id == queue_id)
        )
        text = f"{reason}; {note}" if reason else note
        await connection.execute(
            update(outbound_queue)
            .where(outbound_queue.c.id == queue_id)
            .values(reason=text[:REASON_LIMIT], updated_at=now)
        )
        statement = _insert(connection, channel_health).values(
            channel=channel.lower(), state=ChannelState.UNKNOWN, **changes
        )
        await connection.execute(
            statement.on_conflict_do_update(index_elements=["channel"], set_=changes)
        )


async def read_sending(config: Config) -> dict[str, Sending]:
    """The channels' sending health for `inboxes list`; empty when there is no channel or the
    database cannot be read (a command run before `db upgrade`, or with the database down)."""
    addresses = [c.address for inbox in config.inboxes.values() for c in inbox.channels]
    if not addresses:
        return {}
    database = config.gateway.database
    if database.is_sqlite and not Path(make_url(database.async_url).database or "").is_file():
        return {}
    store = Store(create_engine(database.async_url))
    try:
        async with asyncio.timeout(READ_TIMEOUT):
            return await sending_health(store, addresses)
    except (SQLAlchemyError, OSError, TimeoutError, ValueError):
        return {}
    finally:
        await store.close()
