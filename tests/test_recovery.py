"""Rows a worker claimed and could not finish (the database gone mid-batch, its process killed)
go back to the queue without waiting for the stale-claim window, and are never held for it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from mailgateway.inbound.worker import (
    RETRY_TRANSACTION_SIZE,
    TRANSACTION_SIZE,
    InboundWorker,
    chunk_length,
)
from mailgateway.store.repo import ClaimedItem, Store
from tests.support import make_message
from tests.test_worker import SETTINGS, deliver


class FlakyStore(Store):
    """A store whose database goes away right after the first claim, until `down` is cleared."""

    def __init__(self, engine: Any) -> None:
        super().__init__(engine)
        self.down = False
        self.outages = 1

    async def claim(self, *args: Any, **kwargs: Any) -> list[ClaimedItem]:
        rows = await super().claim(*args, **kwargs)
        if rows and self.outages:
            self.outages -= 1
            self.down = True
        return rows

    @contextlib.asynccontextmanager
    async def transaction(self, *, urgent: bool = False) -> AsyncIterator[AsyncConnection]:
        if self.down:
            raise ConnectionRefusedError("database down")
        async with super().transaction(urgent=urgent) as connection:
            yield connection


async def test_rows_left_active_by_a_database_outage_are_given_back(store: Store) -> None:
    """When the database fails while a worker processes a batch (so even the failure cannot be
    recorded), the running worker gives its rows back once the database answers again, the
    attempt not counted, and processes them: nothing stays active."""
    flaky = FlakyStore(store.engine)
    for number in range(3):
        await deliver(flaky, make_message(subject=f"outage {number}"))
    worker = InboundWorker(flaky, SETTINGS, id_domain="mx.test")
    task = asyncio.create_task(worker.run())
    async with asyncio.timeout(10):
        while not flaky.down:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        assert {row.state for row in await store.queue_rows()} == {"active"}
        flaky.down = False
        while {row.state for row in await store.queue_rows()} != {"done"}:
            await asyncio.sleep(0.05)
    worker.stop()
    await task
    assert [row.attempts for row in await store.queue_rows()] == [1, 1, 1]


def disk_full() -> OperationalError:
    """The error SQLite raises on a full disk, as SQLAlchemy wraps it (SQLITE_FULL = 13)."""
    error = sqlite3.OperationalError("database or disk is full")
    error.sqlite_errorcode = 13  # type: ignore[attr-defined]
    return OperationalError("INSERT INTO messages ...", {}, error)


class DiskFullWorker(InboundWorker):
    """A worker whose store step meets a full disk the first `failures` times."""

    failures = 4

    async def process_together(self, batch: list[ClaimedItem]) -> bool:
        return False

    async def _store(self, item: ClaimedItem, analysis: Any, origin: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise disk_full()
        return await super()._store(item, analysis, origin)


async def test_database_failures_never_hold_a_message(store: Store) -> None:
    """A message whose storing fails on a full disk more often than max_attempts goes back to
    the queue each time without an attempt counted, and is stored once there is room: it is
    never held for the database's fault."""
    await deliver(store, make_message(subject="disk full"))
    worker = DiskFullWorker(store, SETTINGS, id_domain="mx.test")
    states = []
    for _ in range(6):
        await worker.run_once()
        [row] = await store.queue_rows()
        states.append(row.state)
    assert states == ["queued"] * 4 + ["done"] * 2
    assert row.attempts == 1


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


async def test_only_the_rows_in_process_keep_the_attempt(store: Store) -> None:
    """Of a killed worker's rows, only the first chunk by id (those it can have been
    processing) keep the attempt their claim counted, and say why; the rest of its batch was
    never begun and gets the attempt back, so crashes in a row do not hold innocent mail."""
    dead = f"{socket.gethostname()}:{dead_pid()}"
    for number in range(TRANSACTION_SIZE + 2):
        await deliver(store, make_message(subject=f"batch {number}"))
    assert len(await store.claim(dead, TRANSACTION_SIZE + 2, 3)) == TRANSACTION_SIZE + 2
    await InboundWorker(store, SETTINGS, id_domain="mx.test").recover()
    rows = await store.queue_rows()
    assert [(row.state, row.attempts) for row in rows] == [("queued", 1)] * TRANSACTION_SIZE + [
        ("queued", 0)
    ] * 2
    assert all(dead in row.reason for row in rows[:TRANSACTION_SIZE])
    assert [row.reason for row in rows[TRANSACTION_SIZE:]] == [None, None]


async def test_rows_tried_before_are_in_hand_a_few_at_a_time(store: Store) -> None:
    """Rows a killed worker's claim counted a second attempt for are stored a few at a time
    (RETRY_TRANSACTION_SIZE): after a second crash only those few keep the attempt, so a
    message that crashes the process holds few innocent ones with it."""
    dead = f"{socket.gethostname()}:{dead_pid()}"
    for number in range(TRANSACTION_SIZE):
        await deliver(store, make_message(subject=f"batch {number}"))
    worker = InboundWorker(store, SETTINGS, id_domain="mx.test")
    assert len(await store.claim(dead, TRANSACTION_SIZE, 3)) == TRANSACTION_SIZE
    await worker.recover()  # the first crash: the whole first-attempt chunk was in hand
    assert [row.attempts for row in await store.queue_rows()] == [1] * TRANSACTION_SIZE
    claimed = await store.claim(dead, TRANSACTION_SIZE, 3)
    assert chunk_length([item.attempts for item in claimed]) == RETRY_TRANSACTION_SIZE
    await worker.recover()  # the second crash: only the first retry chunk was in hand
    rows = await store.queue_rows()
    assert [row.attempts for row in rows] == [2] * RETRY_TRANSACTION_SIZE + [1] * (
        TRANSACTION_SIZE - RETRY_TRANSACTION_SIZE
    )
