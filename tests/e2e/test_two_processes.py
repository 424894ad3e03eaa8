"""Two `mailgateway serve` processes on one PostgreSQL database: every message stored once,
deduplication across processes, fair assignment, and a killed process's claims taken over."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from mailgateway.store.db import create_engine
from mailgateway.store.repo import (
    Delivery,
    Envelope,
    Store,
    Submission,
    conversations,
    inbound_queue,
    messages,
)
from mailgateway.store.schema import utcnow
from tests.conftest import _pg_execute, pg_url
from tests.e2e.daemon import Daemon
from tests.support import SALES, SUPPORT, RawSMTP, make_message, write_config

SPLIT_MESSAGES = 2000
SESSIONS_PER_PROCESS = 5
SAME_MESSAGES = 50
LEASE = 3.0
SETTLE = 180.0

pytestmark = pytest.mark.timeout(300)

ROUND_ROBIN = """name = "Support"
default = true

[access]
mode = "everyone"

[automation]
auto_assign = true
assign_to = "specific"
users = ["alice", "bob"]
"""


def shared_config(directory: Path, database: str, **worker: Any) -> Path:
    """A configuration both daemons use: support assigns round robin to alice and bob; each
    daemon runs its inbound worker in a worker process of its own (the default)."""
    config = write_config(
        directory,
        pg_url(database, "postgresql"),
        worker={"poll_interval": 0.2, "processes": 1, **worker},
        max_connections_per_ip=50,
    )
    (config / "inboxes" / "support.toml").write_text(ROUND_ROBIN)
    return config


async def send_all(port: int, rcpt: str, blobs: list[bytes], sessions: int) -> list[str]:
    """Deliver the messages over concurrent sessions; the replies to each final dot."""
    replies: list[str] = []

    async def session(share: list[bytes]) -> None:
        client = await RawSMTP.connect(port)
        for raw in share:
            replies.append(await client.transaction("sender@customer.test", [rcpt], raw))
        await client.close()

    await asyncio.gather(*(session(blobs[n::sessions]) for n in range(sessions)))
    return replies


async def wait_done(url: str, expected: int, timeout: float = SETTLE) -> dict[str, int]:
    """Poll until `expected` queue rows are done (or time runs out); the rows by state."""
    store = Store(create_engine(url))
    try:
        deadline = time.monotonic() + timeout
        while True:
            counts = await store.queue_counts()
            if counts.get("done", 0) >= expected or time.monotonic() > deadline:
                return counts
            await asyncio.sleep(0.2)
    finally:
        await store.close()


async def fetch(url: str, statement: Any) -> list[Any]:
    """The rows a query returns."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return list((await connection.execute(statement)).all())
    finally:
        await engine.dispose()


def stored_count(daemon: Daemon) -> int:
    """How many messages a process logged as stored."""
    return sum(event["event"] == "message.stored" for event in daemon.events())


@dataclass
class SharedRun:
    """What the two processes did with the split messages and the doubly delivered ones."""

    replies: list[str]
    queue: dict[str, int]
    stored_by: list[int]
    support: list[Any]
    sales: list[Any]
    sales_rows: list[Any]
    assignees: Counter[str | None]
    event_loops: list[str]


@pytest.fixture(scope="module")
def shared_run(pg_template: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedRun]:
    """2,000 messages split across two processes, and 50 messages each delivered to both (with
    the trace header of a different MX), all on one PostgreSQL database."""
    database = f"mg_two_{uuid.uuid4().hex[:10]}"
    asyncio.run(_pg_execute(f'CREATE DATABASE "{database}" TEMPLATE "{pg_template}"'))
    tmp = tmp_path_factory.mktemp("two")
    config = shared_config(tmp / "config", database)
    try:
        with Daemon(config, tmp / "a.log") as first, Daemon(config, tmp / "b.log") as second:
            daemons = [first, second]
            yield asyncio.run(_deliver(daemons, pg_url(database)))
            for daemon in daemons:
                daemon.stop()
    finally:
        asyncio.run(_pg_execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


async def _deliver(daemons: list[Daemon], url: str) -> SharedRun:
    """Send everything, wait for the workers, and read back what was stored."""
    split = [
        make_message(subject=f"Order {n}", sender=f"Customer {n} <c{n}@customer.test>")
        for n in range(SPLIT_MESSAGES)
    ]
    same = [make_message(subject=f"Twice {n}") for n in range(SAME_MESSAGES)]
    sends = [
        send_all(daemon.port, SUPPORT, split[n::2], SESSIONS_PER_PROCESS)
        for n, daemon in enumerate(daemons)
    ]
    sends += [
        send_all(daemon.port, SALES, [trace(raw, n) for raw in same], 2)
        for n, daemon in enumerate(daemons)
    ]
    replies = [reply for batch in await asyncio.gather(*sends) for reply in batch]
    queue = await wait_done(url, SPLIT_MESSAGES + 2 * SAME_MESSAGES)
    by_inbox = messages.c.inbox
    return SharedRun(
        replies=replies,
        queue=queue,
        stored_by=[stored_count(daemon) for daemon in daemons],
        support=await fetch(url, select(messages).where(by_inbox == "support")),
        sales=await fetch(url, select(messages).where(by_inbox == "sales")),
        sales_rows=await fetch(url, select(inbound_queue).where(inbound_queue.c.inbox == "sales")),
        assignees=Counter(
            row.assignee
            for row in await fetch(
                url, select(conversations.c.assignee).where(conversations.c.inbox == "support")
            )
        ),
        event_loops=[
            str(event.get("loop"))
            for daemon in daemons
            for event in daemon.events()
            if event["event"] == "gateway.event_loop"
        ],
    )


def trace(raw: bytes, mx: int) -> bytes:
    """The same message as relayed by another MX: a Received header of its own on top."""
    return f"Received: from mx{mx}.relay.test by gateway; {mx}\r\n".encode() + raw


def test_split_messages_are_all_stored_once(shared_run: SharedRun) -> None:
    """2,000 messages delivered half to each process are all accepted and each stored once."""
    assert all(reply.startswith("250 ") for reply in shared_run.replies)
    assert shared_run.queue.get("done") == SPLIT_MESSAGES + 2 * SAME_MESSAGES
    assert len(shared_run.support) == SPLIT_MESSAGES
    ids = Counter(row.message_id for row in shared_run.support)
    assert len(ids) == SPLIT_MESSAGES and max(ids.values()) == 1
    assert len({row.queue_id for row in shared_run.support}) == SPLIT_MESSAGES


def test_both_processes_took_a_share_of_the_work(shared_run: SharedRun) -> None:
    """Both workers claimed and stored part of the queue, and together stored each row once."""
    first, second = shared_run.stored_by
    assert first > 0 and second > 0
    assert first + second == SPLIT_MESSAGES + 2 * SAME_MESSAGES


def test_same_message_through_both_processes_is_stored_once(shared_run: SharedRun) -> None:
    """A message relayed to both processes by two MXes is stored once; the other copy's queue
    row is done as a duplicate, none is held."""
    assert len(shared_run.sales_rows) == 2 * SAME_MESSAGES
    assert {row.state for row in shared_run.sales_rows} == {"done"}
    assert len(shared_run.sales) == SAME_MESSAGES
    assert len({row.content_hash for row in shared_run.sales}) == SAME_MESSAGES


def test_assignment_is_balanced_across_processes(shared_run: SharedRun) -> None:
    """Round robin across two processes gives alice and bob each half, within 5%."""
    assignees = shared_run.assignees
    assert set(assignees) == {"alice", "bob"}
    assert sum(assignees.values()) == SPLIT_MESSAGES
    for user in ("alice", "bob"):
        assert abs(assignees[user] - SPLIT_MESSAGES / 2) <= 0.05 * SPLIT_MESSAGES / 2


def test_processes_run_on_uvloop_by_default(shared_run: SharedRun) -> None:
    """With uvloop installed and no [server] event_loop set, both daemons run on uvloop."""
    pytest.importorskip("uvloop")
    assert shared_run.event_loops == ["uvloop", "uvloop"]


KILL_BATCH = 100
KILL_MESSAGES = 300


def test_killed_process_claims_are_finished_by_the_other_after_the_lease(
    pg_database: str, tmp_path: Path
) -> None:
    """A process SIGKILLed mid-batch leaves claimed rows; the other process, already running
    (so it cannot tell at start-up that their claimer is gone), finishes them once the lease
    has run out, not before, and every message is stored exactly once."""
    url = pg_url(pg_database)
    config = shared_config(tmp_path / "config", pg_database, batch_size=KILL_BATCH, lease=LEASE)
    asyncio.run(enqueue(url, KILL_MESSAGES))
    asyncio.run(due_in(url, timedelta(hours=1)))  # parked until both workers run
    with Daemon(config, tmp_path / "b.log") as second:
        worker_of(second)
        with Daemon(config, tmp_path / "a.log") as first:
            name = worker_of(first)
            asyncio.run(due_in(url, timedelta(0)))
            asyncio.run(mid_batch(url, name))
            first.stop(signal.SIGKILL)  # its worker process dies with it
        orphaned = asyncio.run(fetch(url, claimed_by(name)))
        assert orphaned, "the killed process held no claimed rows"
        counts = asyncio.run(wait_done(url, KILL_MESSAGES))
        assert second.stop() == 0
    assert counts == {"done": KILL_MESSAGES}
    rows = {row.id: row for row in asyncio.run(fetch(url, select(inbound_queue)))}
    for row in orphaned:
        finished = rows[row.id]
        assert finished.state == "done" and finished.attempts == 2
        assert finished.updated_at >= row.claimed_at + timedelta(seconds=LEASE)
    per_row = select(messages.c.queue_id, func.count()).group_by(messages.c.queue_id)
    stored = asyncio.run(fetch(url, per_row))
    assert len(stored) == KILL_MESSAGES and {count for _, count in stored} == {1}


def worker_of(daemon: Daemon, timeout: float = 30.0) -> str:
    """The claim name of the daemon's worker process, once it has started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in daemon.events():
            if event["event"] == "worker.started":
                return str(event["name"])
        time.sleep(0.05)
    raise AssertionError("the worker process did not start")


def claimed_by(worker: str) -> Any:
    """The rows a worker holds claimed, with when it claimed them."""
    return select(inbound_queue.c.id, inbound_queue.c.claimed_at).where(
        inbound_queue.c.state == "active", inbound_queue.c.claimed_by == worker
    )


async def enqueue(url: str, count: int) -> None:
    """Queue distinct messages for the support inbox directly (no process running yet)."""
    store = Store(create_engine(url))
    envelope = Envelope(mail_from="sender@customer.test")
    delivery = (Delivery("support", SUPPORT),)
    try:
        await store.enqueue_many(
            [
                Submission(make_message(subject=f"Kill {n}"), envelope, delivery)
                for n in range(count)
            ]
        )
    finally:
        await store.close()


async def due_in(url: str, delay: timedelta) -> None:
    """Make every queued row due after `delay` from now."""
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                update(inbound_queue)
                .where(inbound_queue.c.state == "queued")
                .values(next_attempt_at=utcnow() + delay)
            )
    finally:
        await engine.dispose()


async def mid_batch(url: str, worker: str, timeout: float = 60.0) -> None:
    """Wait until the worker has stored part of its batch and still holds a good part of it
    claimed (so that the kill lands mid-batch)."""
    deadline = time.monotonic() + timeout
    done = select(func.count()).where(inbound_queue.c.state == "done")
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            while time.monotonic() < deadline:
                held = len((await connection.execute(claimed_by(worker))).all())
                finished = await connection.scalar(done)
                await connection.rollback()
                if finished and held >= KILL_BATCH // 4:
                    return
                await asyncio.sleep(0.005)
    finally:
        await engine.dispose()
    raise AssertionError("the worker never held a partly processed batch")
