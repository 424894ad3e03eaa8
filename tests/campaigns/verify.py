"""After a campaign: the ledger against the database (lost, duplicated, stuck) and its integrity."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from mailgateway.store.db import create_engine
from mailgateway.store.repo import inbound_queue, messages, raw_messages
from tests.campaigns.mta import Ledger, Letter

CHUNK = 500


def reader(url: str) -> AsyncEngine:
    """An engine for the campaign's own reads while a daemon runs. The gateway's SQLite engine
    begins every transaction IMMEDIATE (taking the write lock), so a reader made with it can
    be starved for longer than the busy timeout by a busy daemon; a plain deferred reader never
    blocks under WAL."""
    if make_url(url).get_backend_name() == "sqlite":
        return create_async_engine(url, connect_args={"timeout": 60})
    return create_engine(url)


@dataclass
class Verdict:
    """What the database says about the ledger's letters."""

    acknowledged: int = 0
    lost: list[str] = field(default_factory=list)
    unprocessed: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    altered: list[str] = field(default_factory=list)
    unacknowledged_stored: int = 0
    phantom: int = 0
    states: dict[str, int] = field(default_factory=dict)
    held: list[str] = field(default_factory=list)
    integrity: list[str] = field(default_factory=list)

    @property
    def stuck(self) -> int:
        """Queue rows neither done nor held (after the final drain: active or queued)."""
        return sum(count for state, count in self.states.items() if state not in {"done", "held"})

    @property
    def ok(self) -> bool:
        """Nothing lost, duplicated, altered, stuck or held, and the database is intact."""
        problems = (
            self.lost,
            self.unprocessed,
            self.duplicated,
            self.altered,
            self.held,
            self.integrity,
        )
        return not any(problems) and self.stuck == 0 and self.phantom == 0

    def figures(self) -> dict[str, Any]:
        """The verdict as JSON-ready figures."""
        return {
            "acknowledged": self.acknowledged,
            "lost": len(self.lost),
            "unprocessed": len(self.unprocessed),
            "duplicated": len(self.duplicated),
            "altered": len(self.altered),
            "unacknowledged_stored": self.unacknowledged_stored,
            "phantom": self.phantom,
            "queue_states": self.states,
            "held": len(self.held),
            "integrity": self.integrity or "ok",
            "examples": (self.lost + self.unprocessed + self.duplicated + self.altered + self.held)[
                :5
            ],
        }


async def verify(engine: AsyncEngine, ledger: Ledger, *, processed: bool = True) -> Verdict:
    """Check every acknowledged letter: its bytes stored once and unaltered, one queue row per
    inbox named by every 250 it got, and (`processed`) one stored message per inbox."""
    verdict = Verdict(acknowledged=len(ledger.acks))
    async with engine.connect() as connection:
        raws = await _raw_ids(connection)
        queue = await _queue(connection)
        stored = await _stored(connection)
        verdict.states = await _states(connection)
        verdict.held = [
            f"queue {row.id}: {row.reason}" for row in (await connection.execute(_held())).all()
        ]
        for letter in ledger.acknowledged:
            _check(verdict, letter, ledger.acks[letter.key], raws, queue, stored, processed)
        await _check_bytes(connection, verdict, ledger.acknowledged, raws)
        known = {letter.digest for letter in ledger.letters.values()}
        verdict.unacknowledged_stored = sum(
            1 for letter in ledger.unacknowledged if letter.digest in raws
        )
        verdict.phantom = sum(1 for digest in raws if digest not in known)
        verdict.integrity = await integrity_problems(connection)
    return verdict


def _check(
    verdict: Verdict,
    letter: Letter,
    acks: list[str],
    raws: dict[str, int],
    queue: dict[tuple[str, int], list[int]],
    stored: Counter[tuple[str, int]],
    processed: bool,
) -> None:
    """One acknowledged letter against the rows."""
    raw_id = raws.get(letter.digest)
    if raw_id is None:
        verdict.lost.append(f"{letter.key}: raw bytes missing")
        return
    ids = [queue.get((inbox, raw_id), []) for inbox in letter.inboxes]
    if any(len(found) != 1 for found in ids):
        problem = verdict.lost if any(not found for found in ids) else verdict.duplicated
        problem.append(f"{letter.key}: queue rows {ids}")
        return
    named = " ".join(str(found[0]) for found in ids)
    if any(ack != named for ack in acks):
        verdict.duplicated.append(f"{letter.key}: 250s named {acks}, stored {named}")
    if not processed:
        return
    counts = [stored[(inbox, raw_id)] for inbox in letter.inboxes]
    if any(count == 0 for count in counts):
        verdict.unprocessed.append(f"{letter.key}: queued, never stored as a message")
    elif any(count > 1 for count in counts):
        verdict.duplicated.append(f"{letter.key}: stored {counts} times")


async def _raw_ids(connection: AsyncConnection) -> dict[str, int]:
    """Every stored raw message's id by digest."""
    result = await connection.execute(select(raw_messages.c.digest, raw_messages.c.id))
    return {digest: int(raw_id) for digest, raw_id in result.all()}


async def _queue(connection: AsyncConnection) -> dict[tuple[str, int], list[int]]:
    """Queue row ids by (inbox, raw id)."""
    result = await connection.execute(
        select(inbound_queue.c.inbox, inbound_queue.c.raw_id, inbound_queue.c.id)
    )
    rows: dict[tuple[str, int], list[int]] = {}
    for inbox, raw_id, queue_id in result.all():
        rows.setdefault((inbox, int(raw_id)), []).append(int(queue_id))
    return rows


async def _stored(connection: AsyncConnection) -> Counter[tuple[str, int]]:
    """How many inbound messages rows each (inbox, raw id) produced."""
    result = await connection.execute(
        select(messages.c.inbox, messages.c.raw_id, func.count())
        .where(messages.c.direction == "inbound")
        .group_by(messages.c.inbox, messages.c.raw_id)
    )
    return Counter({(inbox, int(raw_id)): int(count) for inbox, raw_id, count in result.all()})


async def _states(connection: AsyncConnection) -> dict[str, int]:
    """Queue rows per state."""
    result = await connection.execute(
        select(inbound_queue.c.state, func.count()).group_by(inbound_queue.c.state)
    )
    return {state: int(count) for state, count in result.all()}


def _held() -> Any:
    """The held rows and why."""
    return select(inbound_queue.c.id, inbound_queue.c.reason).where(inbound_queue.c.state == "held")


async def _check_bytes(
    connection: AsyncConnection, verdict: Verdict, letters: list[Letter], raws: dict[str, int]
) -> None:
    """The stored bytes of each acknowledged letter equal the bytes sent."""
    wanted = {raws[letter.digest]: letter for letter in letters if letter.digest in raws}
    ids = sorted(wanted)
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        result = await connection.execute(
            select(raw_messages.c.id, raw_messages.c.data).where(raw_messages.c.id.in_(chunk))
        )
        for raw_id, data in result.all():
            letter = wanted[int(raw_id)]
            if bytes(data) != letter.raw:
                verdict.altered.append(f"{letter.key}: stored bytes differ")


async def integrity_problems(connection: AsyncConnection) -> list[str]:
    """SQLite's integrity and foreign-key checks, or PostgreSQL's amcheck over every table and
    B-tree index of the schema; [] when the database is intact."""
    if connection.dialect.name == "sqlite":
        checked = (await connection.exec_driver_sql("PRAGMA integrity_check")).scalars().all()
        keys = (await connection.exec_driver_sql("PRAGMA foreign_key_check")).all()
        problems = [str(line) for line in checked if line != "ok"]
        return problems + [f"foreign key: {tuple(row)}" for row in keys]
    await connection.execute(text("CREATE EXTENSION IF NOT EXISTS amcheck"))
    await connection.commit()
    heap = await connection.execute(
        text(
            "SELECT c.relname, v.blkno, v.msg FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "CROSS JOIN LATERAL verify_heapam(c.oid) v "
            "WHERE n.nspname = 'public' AND c.relkind = 'r'"
        )
    )
    problems = [f"{name} block {block}: {message}" for name, block, message in heap.all()]
    indexes = await connection.execute(
        text(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_am a ON a.oid = c.relam "
            "WHERE n.nspname = 'public' AND c.relkind = 'i' AND a.amname = 'btree'"
        )
    )
    for (name,) in indexes.all():
        try:
            await connection.execute(
                text("SELECT bt_index_check(CAST(:name AS regclass), true)"), {"name": name}
            )
        except DBAPIError as error:
            problems.append(f"index {name}: {error.orig}")
            await connection.rollback()
    return problems
