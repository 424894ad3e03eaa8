"""Back-pressure: new mail is refused with a 4xx while the inbound queue is too deep."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from mailgateway.logs import get_logger

log = get_logger(__name__)

QUEUE_FULL = "451 4.3.2 Inbound queue full, try again later"
# Once refusing, accept again only when the queue has drained below this share of the limit,
# so that the gateway does not flap around the limit with every message.
LOW_WATER = 0.9
REFRESH = 0.5
# How long MAIL waits for a depth lookup it started; a slower one (a stalled database) finishes
# in the background while the last verdict stands (the commit answers for the outage).
PATIENCE = 0.2


class Backpressure:
    """Watches the inbound queue's depth (looked up at most every `refresh` seconds, one lookup
    at a time, waited for at most `patience` seconds) and says whether new mail must be refused
    for now. `limit` is read at each lookup, so a reloaded configuration takes effect."""

    def __init__(
        self,
        depth: Callable[[int], Awaitable[int]],
        limit: Callable[[], int],
        *,
        refresh: float = REFRESH,
        patience: float = PATIENCE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.depth = depth
        self.limit = limit
        self.refresh = refresh
        self.patience = patience
        self.clock = clock
        self.refusing = False
        self.checked = float("-inf")
        self.lookup: asyncio.Task[None] | None = None

    async def full(self) -> bool:
        """Whether the queue is (still) too deep to take new mail. The session that starts a
        lookup waits for it (up to `patience`); the others meanwhile go by the last verdict."""
        stale = self.clock() - self.checked >= self.refresh
        if stale and (self.lookup is None or self.lookup.done()):
            self.lookup = asyncio.ensure_future(self._look())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.patience):
                    await asyncio.shield(self.lookup)
        return self.refusing

    async def _look(self) -> None:
        """Count the queue (up to just past the limit) and update the verdict; when the count
        fails the verdict stands (the commit at end of data answers for a database outage)."""
        limit = self.limit()
        try:
            depth = await self.depth(limit + 1)
        except Exception as error:
            log.error("intake.queue_depth_failed", error=type(error).__name__)
            self.checked = self.clock()
            return
        self.checked = self.clock()
        if not self.refusing and depth > limit:
            self.refusing = True
            log.warning("intake.queue_full", depth=depth, limit=limit)
        elif self.refusing and depth < limit * LOW_WATER:
            self.refusing = False
            log.info("intake.queue_drained", depth=depth, limit=limit)
