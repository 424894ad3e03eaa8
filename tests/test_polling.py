"""The polling loop the workers and the notifier share: a wake-up that arrives while a poll runs
is never slept through (the race that left mail queued until the next 30 s poll)."""

from __future__ import annotations

import asyncio

from mailgateway.config import WorkerConfig
from mailgateway.inbound.worker import InboundWorker
from mailgateway.polling import PollingLoop
from mailgateway.store.repo import Delivery, Envelope, Store
from tests.support import make_message

SLOW = 60.0  # a poll interval no test waits for


class Counting(PollingLoop):
    """Polls that find nothing; the first one is woken while it runs, the second stops."""

    def __init__(self) -> None:
        super().__init__()
        self.polls = 0

    def poll_interval(self) -> float:
        """Longer than the test's timeout."""
        return SLOW

    async def poll(self) -> int:
        """Find nothing; wake the loop during the first poll, stop during the second."""
        self.polls += 1
        if self.polls == 1:
            self.wake()
        else:
            self.stop()
        return 0


async def test_wake_during_an_empty_poll_polls_again_at_once() -> None:
    """A wake-up during a poll that found nothing makes the loop poll again, not sleep."""
    loop = Counting()
    async with asyncio.timeout(5):
        await loop.poll_until_stopped()
    assert loop.polls == 2


async def test_stop_ends_an_idle_loop() -> None:
    """stop() during the sleep between polls ends the loop at once."""
    loop = Counting()
    loop.polls = 1  # the next poll neither wakes nor stops: the loop goes to sleep

    async def poll() -> int:
        """Find nothing."""
        loop.polls += 1
        return 0

    loop.poll = poll  # type: ignore[method-assign]
    task = asyncio.create_task(loop.poll_until_stopped())
    await asyncio.sleep(0.05)
    loop.stop()
    async with asyncio.timeout(5):
        await task
    assert loop.polls == 2


class LateMail(InboundWorker):
    """A worker whose first claim finds nothing and before which mail is committed and the
    worker woken, as when intake commits while the worker's claim is on its way back."""

    raced = False

    async def run_once(self) -> int:
        """Claim as usual; after the first, empty, claim: commit a message and wake."""
        claimed = await super().run_once()
        if not self.raced:
            self.raced = True
            envelope = Envelope(mail_from="john.doe@customer.test")
            await self.store.enqueue(
                make_message(), envelope, [Delivery("support", "support@x.test")]
            )
            self.wake()
        return claimed


async def test_mail_committed_during_an_empty_claim_is_stored_at_once(store: Store) -> None:
    """Mail committed while the worker's claim came back empty is stored without a poll wait."""
    settings = WorkerConfig(batch_size=10, max_attempts=3, poll_interval=SLOW, retry_delay=0.0)
    worker = LateMail(store, settings, id_domain="mx.test")
    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(10):
            while [row.state for row in await store.queue_rows()] != ["done"]:
                await asyncio.sleep(0.02)
    finally:
        worker.stop()
        await task
    assert len(await store.conversation_rows()) == 1
