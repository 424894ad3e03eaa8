"""The outbound queue's store (store/outbound.py) and its migration, on both databases."""

from __future__ import annotations

import asyncio
import os
import socket
from datetime import timedelta
from functools import partial
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect

from mailgateway.domain import OutboundKind, OutboundState
from mailgateway.store.claims import claimer_alive
from mailgateway.store.db import _alembic_config
from mailgateway.store.outbound import OutboundStore, Outgoing
from mailgateway.store.repo import Store
from mailgateway.store.schema import Base
from tests.support import exited_pid, make_message

HOST = socket.gethostname()
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


async def test_release_gives_claims_back_uncounted(store: Store) -> None:
    """An orderly shutdown gives claims back queued, their attempt uncounted."""
    queue = OutboundStore(store.engine)
    await queue.queue(outgoing(1))
    await queue.claim("w1", 5)
    assert await queue.release_claims("w1") == 1
    [row] = await queue.rows()
    assert (row.state, row.attempts) == (OutboundState.QUEUED, 0)


async def test_claims_of_a_gone_local_process_come_back_at_once(store: Store) -> None:
    """At start, rows a dead process of this host claimed come back deferred at once, their
    attempt kept; rows of a claimer that may be alive stay claimed."""
    queue = OutboundStore(store.engine)
    await queue.queue(outgoing(1))
    await queue.queue(outgoing(2))
    [gone] = await queue.claim(f"{HOST}:{exited_pid()}/outbound", 1)
    [alive] = await queue.claim("elsewhere.test:1/outbound", 1)
    own = f"{HOST}:{os.getpid()}/outbound"
    assert await queue.requeue_abandoned(partial(claimer_alive, own=own)) == 1
    states = {row.id: (row.state, row.attempts) for row in await queue.rows()}
    assert states == {gone.id: (OutboundState.DEFERRED, 1), alive.id: (OutboundState.ACTIVE, 1)}
    [again] = await queue.claim("w2", 5)
    assert (again.id, again.attempts) == (gone.id, 2)


async def test_claims_past_their_lease_are_claimed_again(store: Store) -> None:
    """A row another host claimed longer than the lease ago is claimed again, with an attempt
    counted; within the lease it is left alone."""
    queue = OutboundStore(store.engine)
    await queue.queue(outgoing(1))
    [first] = await queue.claim("elsewhere.test:1/outbound", 5)
    assert await queue.claim("w2", 5) == []
    [again] = await queue.claim("w2", 5, lease=timedelta(seconds=-1))
    assert (again.id, again.attempts) == (first.id, 2)


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
