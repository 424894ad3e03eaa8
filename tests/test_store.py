"""The store's queue and conversation queries, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import func, select, text

from mailgateway.domain import ConversationStatus
from mailgateway.store.db import MIGRATIONS, current_revision, head_revision
from mailgateway.store.repo import Delivery, Envelope, Store, inbound_queue, raw_messages
from mailgateway.store.schema import utcnow
from tests.support import make_message

ENVELOPE = Envelope(mail_from="john.doe@customer.test", peer="127.0.0.1:5000", helo="client")


async def count(store: Store, table: object) -> int:
    """Rows in a table."""
    async with store.engine.connect() as connection:
        return int(await connection.scalar(select(func.count()).select_from(table)))  # type: ignore[arg-type]


async def test_migrated_to_head(store: Store) -> None:
    """`db upgrade` leaves the database at the newest revision."""
    assert await current_revision(store.engine) == head_revision()
    assert head_revision() == sorted(p.name for p in MIGRATIONS.glob("versions/0*.py"))[-1][:4]


async def test_sqlite_durability_pragmas(store: Store, db_url: str) -> None:
    """SQLite runs in WAL mode with synchronous=FULL (2); PostgreSQL commits synchronously."""
    async with store.engine.connect() as connection:
        if db_url.startswith("sqlite"):
            assert (await connection.scalar(text("PRAGMA journal_mode"))) == "wal"
            assert (await connection.scalar(text("PRAGMA synchronous"))) == 2
        else:
            assert (await connection.scalar(text("SHOW synchronous_commit"))) == "on"


async def test_enqueue_stores_raw_bytes_verbatim(store: Store) -> None:
    """The raw bytes come back byte for byte, NUL and 8-bit included."""
    raw = make_message() + b"tail \x00 \xff\xfe bytes\r\n"
    [queue_id] = await store.enqueue(raw, ENVELOPE, [Delivery("support", "support@x.test")])
    [item] = await store.claim("w", 10, 3)
    assert item.id == queue_id
    assert item.data == raw


async def test_same_message_twice_same_inbox_stored_once(store: Store) -> None:
    """A retried delivery of identical bytes to the same inbox returns the first row."""
    raw = make_message()
    first = await store.enqueue(raw, ENVELOPE, [Delivery("support", "support@x.test")])
    second = await store.enqueue(raw, ENVELOPE, [Delivery("support", "support@x.test")])
    assert first == second
    assert await count(store, inbound_queue) == 1
    assert await count(store, raw_messages) == 1


async def test_one_message_two_inboxes_one_raw_two_rows(store: Store) -> None:
    """One message for two inboxes keeps one copy of the bytes and queues it for each."""
    deliveries = [Delivery("support", "support@x.test"), Delivery("sales", "sales@x.test")]
    ids = await store.enqueue(make_message(), ENVELOPE, deliveries)
    assert len(set(ids)) == 2
    assert await count(store, raw_messages) == 1


async def test_concurrent_identical_enqueues_store_once(store: Store) -> None:
    """Ten identical deliveries racing each other store one row."""
    raw = make_message()
    results = await asyncio.gather(
        *(store.enqueue(raw, ENVELOPE, [Delivery("support", "s@x.test")]) for _ in range(10))
    )
    assert len({tuple(r) for r in results}) == 1
    assert await count(store, inbound_queue) == 1


async def test_claim_counts_attempts_and_holds_after_max(store: Store) -> None:
    """Each claim counts an attempt; a row already tried max times is held, not claimed."""
    [queue_id] = await store.enqueue(make_message(), ENVELOPE, [Delivery("support", "s@x.test")])
    for attempt in (1, 2):
        [item] = await store.claim("w", 10, 2)
        assert item.attempts == attempt
        await store.fail(queue_id, "boom", hold=False, retry_at=utcnow())
    assert await store.claim("w", 10, 2) == []
    [row] = await store.queue_rows(["held"])
    assert row.id == queue_id


async def test_failed_row_waits_until_retry_time(store: Store) -> None:
    """A failed row is not claimed again before its next attempt time."""
    [queue_id] = await store.enqueue(make_message(), ENVELOPE, [Delivery("support", "s@x.test")])
    await store.claim("w", 10, 3)
    await store.fail(queue_id, "boom", hold=False, retry_at=utcnow() + timedelta(hours=1))
    assert await store.claim("w", 10, 3) == []
    [row] = await store.queue_rows(["queued"])
    assert row.reason == "boom"


async def test_retry_resets_held_row(store: Store) -> None:
    """`queue retry` puts a held row back with a fresh attempt count."""
    [queue_id] = await store.enqueue(make_message(), ENVELOPE, [Delivery("support", "s@x.test")])
    await store.claim("w", 10, 3)
    await store.fail(queue_id, "boom", hold=True, retry_at=utcnow())
    assert await store.retry(queue_id) is True
    [item] = await store.claim("w", 10, 3)
    assert item.attempts == 1


async def test_retry_refuses_unknown_row(store: Store) -> None:
    """Retrying a row that does not exist reports False."""
    assert await store.retry(9999) is False


async def test_claims_do_not_overlap(store: Store) -> None:
    """Two workers claiming at once never get the same row."""
    for n in range(20):
        await store.enqueue(make_message(subject=f"n{n}"), ENVELOPE, [Delivery("support", "s@x")])
    first, second = await asyncio.gather(store.claim("a", 15, 3), store.claim("b", 15, 3))
    ids_a = {item.id for item in first}
    ids_b = {item.id for item in second}
    assert not ids_a & ids_b
    assert len(ids_a | ids_b) == 20


async def test_release_and_requeue_stale_claims(store: Store) -> None:
    """Rows claimed by a stopped or vanished worker go back to the queue."""
    await store.enqueue(make_message(subject="a"), ENVELOPE, [Delivery("support", "s@x")])
    await store.enqueue(make_message(subject="b"), ENVELOPE, [Delivery("support", "s@x")])
    await store.claim("gone", 1, 3)
    await store.claim("stopping", 1, 3)
    assert await store.release_claims("stopping") == 1
    assert await store.requeue_stale(timedelta(seconds=-1)) == 1
    assert {row.state for row in await store.queue_rows()} == {"queued"}


async def test_set_status_of_unknown_conversation(store: Store) -> None:
    """Closing a conversation that does not exist reports False."""
    assert await store.set_status(12345, ConversationStatus.CLOSED) is False


async def test_requeue_abandoned_claims_of_gone_workers(store: Store) -> None:
    """Rows claimed by a worker known to be gone go back at once; a live one keeps its rows."""
    await store.enqueue(make_message(subject="a"), ENVELOPE, [Delivery("support", "s@x")])
    await store.enqueue(make_message(subject="b"), ENVELOPE, [Delivery("support", "s@x")])
    await store.claim("host:111", 1, 3)
    await store.claim("host:222", 1, 3)
    assert await store.requeue_abandoned(lambda name: name != "host:111") == 1
    states = {row.claimed_by: row.state for row in await store.queue_rows()}
    assert states == {None: "queued", "host:222": "active"}
