"""The loop the inbound worker, the outbound worker and the notifier share: poll for work until
stopped, sleeping between empty polls, woken early when work is queued."""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod


class PollingLoop(ABC):
    """Polls until stopped. The wake-up is cleared before each poll, not before the sleep: one
    that arrives while a poll runs (its claim may already have found nothing) makes the loop poll
    again at once instead of sleeping through to the next interval."""

    def __init__(self) -> None:
        self.wakeup = asyncio.Event()
        self.stopping = asyncio.Event()

    def wake(self) -> None:
        """Work was queued: poll now rather than at the next interval."""
        self.wakeup.set()

    def stop(self) -> None:
        """Finish the item in hand, give back the rest of the batch, and return."""
        self.stopping.set()
        self.wakeup.set()

    @abstractmethod
    def poll_interval(self) -> float:
        """Seconds between polls when nothing wakes the loop."""

    @abstractmethod
    async def poll(self) -> int:
        """One round: claim and handle a batch; how many items it took. Faults are handled
        (logged) here: the loop itself never stops on one."""

    async def poll_until_stopped(self) -> None:
        """Poll until stopped, sleeping after a round that found nothing."""
        while not self.stopping.is_set():
            self.wakeup.clear()
            if await self.poll() == 0 and not self.stopping.is_set():
                await self.idle()

    async def idle(self) -> None:
        """Wait for a wake-up, a stop, or the next interval."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.poll_interval()):
                await self.wakeup.wait()
