"""The outbound queue's store (store/outbound.py) and its migration, on both databases."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect

from mailgateway.domain import OutboundKind, OutboundState
from mailgateway.store.db import _alembic_config
from mailgateway.store.outbound import OutboundStore, Outgoing
from mailgateway.store.repo import Store
from mailgateway.store.schema import Base
from tests.support import make_message

OUR_TABLES = {"outbound_queue", "from_addresses"}


def outgoing(n: int) -> Outgoing:
    """A distinct message to queue."""
    return Outgoing(make_message(subject=f"m{n}"), OutboundKind.REPLY, "a@acme.test", ("c@x.test",))


def differences(connection: Connection) -> list[Any]:
    """Differences between the models and the migrated schema that concern our tables."""
    found = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    return [d for d in found if OUR_TABLES & set(map(str, _names(d)))]


def _names(diff: Any) -> list[Any]:
    """Table names mentioned by one autogenerate difference."""
    items = diff if isinstance(diff, list) else [diff]
    names = []
    for item in items:
        for part in item:
            names.append(getattr(part, "name", part))
            table = getattr(part, "table", None)
            if table is not None:
                names.append(table.name)
    return names


async def test_migration_matches_the_models(store: Store) -> None:
    """Migration 0004 creates exactly the outbound tables the models describe."""
    async with store.engine.connect() as connection:
        tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert tables >= OUR_TABLES
        assert await connection.run_sync(differences) == []


async def test_migration_downgrades_and_upgrades(store: Store) -> None:
    """0004 can be rolled back to 0001 (tables gone) and applied again."""

    def migrate(connection: Connection, target: str, down: bool) -> set[str]:
        config = _alembic_config(connection)
        (command.downgrade if down else command.upgrade)(config, target)
        return set(inspect(connection).get_table_names())

    async with store.engine.begin() as connection:
        assert not OUR_TABLES & await connection.run_sync(migrate, "0001", True)
    async with store.engine.begin() as connection:
        assert await connection.run_sync(migrate, "head", False) >= OUR_TABLES


async def test_concurrent_claims_do_not_overlap(store: Store) -> None:
    """Two workers claiming at once never get the same row, and together get every row."""
    queue = OutboundStore(store.engine)
    ids = [await queue.queue(outgoing(n)) for n in range(6)]
    first, second = await asyncio.gather(queue.claim("w1", 6), queue.claim("w2", 6))
    got = [item.id for item in first] + [item.id for item in second]
    assert sorted(got) == ids
    assert all(item.attempts == 1 for item in [*first, *second])


async def test_release_and_requeue_stale_claims(store: Store) -> None:
    """An orderly shutdown gives claims back uncounted; a vanished worker's claims come back
    deferred after the stale period."""
    queue = OutboundStore(store.engine)
    await queue.queue(outgoing(1))
    [item] = await queue.claim("w1", 5)
    assert await queue.release_claims("w1") == 1
    [row] = await queue.rows()
    assert (row.state, row.attempts) == (OutboundState.QUEUED, 0)
    await queue.claim("w2", 5)
    assert await queue.requeue_stale(timedelta(minutes=10)) == 0
    assert await queue.requeue_stale(timedelta(seconds=-1)) == 1
    [row] = await queue.rows()
    assert (row.id, row.state) == (item.id, OutboundState.DEFERRED)


async def test_deferred_row_waits_for_its_time(store: Store) -> None:
    """A deferred row is not claimed before next_attempt_at, and is claimed after it."""
    queue = OutboundStore(store.engine)
    queue_id = await queue.queue(outgoing(1))
    await queue.claim("w", 5)
    later = (await queue.rows())[0].updated_at + timedelta(seconds=0.3)
    await queue.record(queue_id, OutboundState.DEFERRED, "451 later", next_attempt_at=later)
    assert await queue.claim("w", 5) == []
    await asyncio.sleep(0.4)
    [item] = await queue.claim("w", 5)
    assert (item.id, item.attempts) == (queue_id, 2)


async def test_retry_gives_a_fresh_lifetime(store: Store) -> None:
    """`queue retry` of a failed row resets attempts and the queued time the give-up counts
    from."""
    queue = OutboundStore(store.engine)
    queue_id = await queue.queue(outgoing(1))
    [before] = await queue.rows()
    await queue.claim("w", 5)
    await queue.record(queue_id, OutboundState.FAILED, "gave up")
    await asyncio.sleep(0.01)
    assert await queue.retry(queue_id)
    [after] = await queue.rows()
    assert (after.state, after.attempts) == (OutboundState.QUEUED, 0)
    assert after.queued_at > before.queued_at
    assert not await queue.retry(queue_id + 1)
