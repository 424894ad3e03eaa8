"""Back-pressure's verdict: full above the limit, until the queue drains below the low water."""

from __future__ import annotations

import asyncio
import sqlite3

from mailgateway.intake.backpressure import LOW_WATER, Backpressure
from mailgateway.store.db import create_engine
from mailgateway.store.repo import Store


class Depths:
    """A queue whose depth the test sets, counting how often it is looked up."""

    def __init__(self) -> None:
        self.depth = 0
        self.lookups = 0

    async def __call__(self, cap: int) -> int:
        self.lookups += 1
        return min(self.depth, cap)


async def test_refuses_above_the_limit_until_drained_below_low_water() -> None:
    """Over the limit the verdict is full; it stays full until the depth is under 90%."""
    depths = Depths()
    gate = Backpressure(depths, lambda: 100, refresh=0)
    verdicts = []
    for depth in (100, 101, 95, 90, 89, 100):
        depths.depth = depth
        verdicts.append(await gate.full())
    assert verdicts == [False, True, True, True, False, False]
    assert LOW_WATER == 0.9


async def test_depth_is_looked_up_at_most_once_per_refresh() -> None:
    """Between refreshes the last verdict is reused: no count query per message."""
    depths = Depths()
    now = [0.0]
    gate = Backpressure(depths, lambda: 10, refresh=1.0, clock=lambda: now[0])
    for _ in range(5):
        await gate.full()
    now[0] = 1.5
    await gate.full()
    assert depths.lookups == 2


async def test_slow_lookup_does_not_hold_mail() -> None:
    """A lookup the database does not answer (a stall) holds MAIL only `patience` seconds: the
    last verdict stands meanwhile, and sessions arriving during the lookup do not wait at all."""
    answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def stalled(cap: int) -> int:
        return await answer

    gate = Backpressure(stalled, lambda: 10, refresh=0, patience=0.05)
    assert await asyncio.wait_for(gate.full(), timeout=1.0) is False
    assert await asyncio.wait_for(gate.full(), timeout=0.01) is False
    answer.set_result(11)
    await asyncio.sleep(0)
    assert await gate.full() is True


async def test_failed_lookup_keeps_the_verdict() -> None:
    """A database fault while counting neither refuses nor admits mail by itself."""

    async def broken(cap: int) -> int:
        raise ConnectionError("database down")

    gate = Backpressure(broken, lambda: 10, refresh=0)
    assert await gate.full() is False


async def test_depth_lookup_takes_no_write_lock(sqlite_url: str) -> None:
    """The depth is counted while another connection holds SQLite's write lock (a reader never
    waits for a writer in WAL mode), so MAIL is not held up by a long write."""
    store = Store(create_engine(sqlite_url))
    locker = sqlite3.connect(sqlite_url.split(":///", 1)[1], isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")
        assert await asyncio.wait_for(store.queue_depth(10), timeout=2.0) == 0
    finally:
        locker.execute("ROLLBACK")
        locker.close()
        await store.close()
