"""Every query intake and the inbound worker run is an index lookup: EXPLAIN shows no scan of a
table that grows with the mail, on SQLite and on PostgreSQL (planned over 5,000 stored
messages with statistics, sequential scans switched off so that any left mean no index fits)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event

from mailgateway.config import load_config
from mailgateway.inbound.worker import InboundWorker
from mailgateway.store.repo import Delivery, Envelope, Store, Submission
from tests.bulk import fill
from tests.support import SUPPORT, make_message, write_config

STORED = 5000
GROWING = "messages|conversations|contacts|raw_messages|inbound_queue|contact_activity|tickets"
# A full scan, or an index used only for its `inbox` prefix (a walk through a whole inbox).
SQLITE_SCAN = re.compile(rf"\bSCAN ({GROWING})\b|INDEX \w+ \(inbox=\?\)")
POSTGRES_SCAN = re.compile(
    rf"Seq Scan on ({GROWING})\b|Index Cond: \(\(inbox\)::text = '[^']*'::text\)\s*$"
)


def record(engine: Engine, seen: dict[str, Any]) -> None:
    """Keep every single-row SELECT and UPDATE the engine runs, with its parameters."""

    def keep(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "UPDATE", "WITH")):
            seen.setdefault(statement, parameters)

    event.listen(engine, "before_cursor_execute", keep)


async def workload(store: Store, config_dir: Path) -> None:
    """What the gateway does with mail: enqueue, claim, thread by each rule, deduplicate, bounce,
    assign; then the queue's housekeeping."""
    config = load_config(config_dir)
    worker = InboundWorker(store, config.gateway.worker, id_domain="mx.test", config=config)
    first = make_message(subject="Printer on fire", message_id="<first@customer.test>")
    second = make_message(
        subject="Re: Printer on fire",
        message_id="<second@customer.test>",
        In_Reply_To="<first@customer.test>",
    )
    again = b"Received: from mx2.relay.test\r\n" + second
    by_subject = make_message(subject="RE: Printer on fire", message_id="<third@customer.test>")
    bounce = (Path(__file__).parent / "fixtures/threading/bounces/bounce-exim.eml").read_bytes()
    envelope = Envelope(mail_from="john.doe@customer.test")
    for raw in (first, second, again, by_subject, bounce):
        await store.enqueue_many([Submission(raw, envelope, (Delivery("support", SUPPORT),))])
        await worker.run_once()
    token = SUPPORT.replace("@", "+0123456789abcdef0123456789abcdef@")
    await store.enqueue_many([Submission(make_message(), envelope, (Delivery("support", token),))])
    await worker.run_once()
    await store.queue_depth(1000)
    await store.requeue_stale(timedelta(minutes=10))
    await store.release_claims(worker.name)


async def plans(store: Store, statements: dict[str, Any]) -> dict[str, str]:
    """The query plan of each statement, as one line of text."""
    postgres = store.engine.dialect.name == "postgresql"
    found = {}
    async with store.engine.connect() as connection:
        if postgres:
            await connection.exec_driver_sql("SET enable_seqscan = off")
        for statement, parameters in statements.items():
            explain = "EXPLAIN " if postgres else "EXPLAIN QUERY PLAN "
            rows = (await connection.exec_driver_sql(explain + statement, parameters)).all()
            found[statement] = "\n".join(str(row[-1]).strip() for row in rows)
        await connection.rollback()
    return found


async def test_intake_and_worker_queries_use_indexes(
    store: Store, db_url: str, tmp_path: Path
) -> None:
    """No query of intake, claims, threading lookups or deduplication scans a growing table."""
    await fill(store.engine, STORED)
    statements: dict[str, Any] = {}
    record(store.engine.sync_engine, statements)
    if store._sqlite_writer is not None:
        record(store._sqlite_writer.engine, statements)
    await workload(store, write_config(tmp_path / "config", db_url))
    scan = POSTGRES_SCAN if store.engine.dialect.name == "postgresql" else SQLITE_SCAN
    found = await plans(store, statements)
    assert len(found) >= 15
    scans = {
        " ".join(statement.split())[:150]: plan
        for statement, plan in found.items()
        if any(scan.search(line) for line in plan.splitlines())
    }
    assert scans == {}, "\n".join(f"{k}\n   {v!r}" for k, v in scans.items())
