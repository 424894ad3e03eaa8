"""Claims and their lease: a row claimed by a worker that died is claimed again by another once
the lease has run out, never before; a deep queue is claimed oldest first."""

from __future__ import annotations

from datetime import timedelta

from mailgateway.store.repo import Delivery, Envelope, Store, Submission
from tests.support import make_message

ENVELOPE = Envelope(mail_from="john.doe@customer.test")
LEASE = timedelta(minutes=10)


async def queue(store: Store, count: int) -> list[int]:
    """Queue distinct messages for the support inbox; their queue ids."""
    batch = [
        Submission(make_message(subject=f"m{n}"), ENVELOPE, (Delivery("support", "s@x"),))
        for n in range(count)
    ]
    return [ids[0] for ids in await store.enqueue_many(batch)]


async def test_claimed_row_is_not_claimed_again_within_the_lease(store: Store) -> None:
    """Another worker does not take a row whose claim is younger than the lease."""
    await queue(store, 1)
    assert len(await store.claim("first", 10, 3, LEASE)) == 1
    assert await store.claim("second", 10, 3, LEASE) == []


async def test_expired_claim_is_taken_over_with_an_attempt_counted(store: Store) -> None:
    """Once the lease has run out, the row goes to the next worker that claims, attempt 2."""
    [queue_id] = await queue(store, 1)
    await store.claim("vanished", 10, 3, LEASE)
    [item] = await store.claim("survivor", 10, 3, timedelta(0))
    assert (item.id, item.attempts) == (queue_id, 2)
    [row] = await store.queue_rows()
    assert (row.state, row.claimed_by) == ("active", "survivor")


async def test_expired_claim_of_the_last_attempt_is_held(store: Store) -> None:
    """A message whose every attempt killed its worker is held, not claimed forever."""
    await queue(store, 1)
    await store.claim("first", 10, 1, LEASE)
    assert await store.claim("second", 10, 1, timedelta(0)) == []
    [row] = await store.queue_rows()
    assert row.state == "held"


async def test_expired_claims_come_before_new_rows(store: Store) -> None:
    """Rows left by a dead worker are taken first, then the oldest queued rows, in order."""
    ids = await queue(store, 4)
    await store.claim("vanished", 1, 3, LEASE)
    claimed = await store.claim("survivor", 2, 3, timedelta(0))
    assert [item.id for item in claimed] == ids[:2]
