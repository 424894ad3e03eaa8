"""Bulk rows for size tests and benchmarks: stored conversations made by SQL, not by the worker.

Each stored message has its raw bytes, a done queue row, a contact (four messages each), a
conversation (two messages each) in one of two inboxes, and a contact activity entry: the shape
the worker leaves behind, made in a few INSERT ... SELECT statements (a million rows in about a
minute) instead of through SMTP.
"""

from __future__ import annotations

import asyncio
import sqlite3

from sqlalchemy.ext.asyncio import AsyncEngine

TABLES = ("contacts", "conversations", "raw_messages", "inbound_queue", "messages")

SQLITE = """
WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < {count})
{insert} FROM seq
"""
POSTGRES = "{insert_pg} FROM generate_series(1, {count}) AS seq(n)"

# (table, columns, SQLite select list, PostgreSQL select list, row count divisor)
ROWS: list[tuple[str, str, str, str, int]] = [
    (
        "contacts",
        "id, email, name, created_at",
        "n, 'c' || n || '@bulk.test', 'Bulk ' || n, {old}",
        "n, 'c' || n || '@bulk.test', 'Bulk ' || n, {old}",
        4,
    ),
    (
        "conversations",
        "id, inbox, subject, status, contact_id, channel, reply_token, created_at, updated_at,"
        " subject_key",
        "n, {inbox}, 'Bulk ' || n, 'closed', (n + 1) / 2, 'fallback_email',"
        " printf('%032x', n), {old}, {old}, 'bulk ' || n",
        "n, {inbox}, 'Bulk ' || n, 'closed', (n + 1) / 2, 'fallback_email',"
        " lpad(to_hex(n), 32, '0'), {old}, {old}, 'bulk ' || n",
        2,
    ),
    (
        "raw_messages",
        "id, digest, size, data, received_at",
        "n, printf('%064x', n), 16, x'42756c6b206d6573736167650d0a0d0a', {old}",
        "n, lpad(to_hex(n), 64, '0'), 16, '\\x42756c6b206d6573736167650d0a0d0a'::bytea, {old}",
        1,
    ),
    (
        "inbound_queue",
        "id, raw_id, inbox, source, mail_from, rcpt_to, peer, helo, state, attempts,"
        " next_attempt_at, created_at, updated_at",
        "n, n, {inbox_of_message}, 'smtp', 'c' || ((n + 3) / 4) || '@bulk.test', 'bulk@x', '',"
        " '', 'done', 1, {old}, {old}, {old}",
        "n, n, {inbox_of_message}, 'smtp', 'c' || ((n + 3) / 4) || '@bulk.test', 'bulk@x', '',"
        " '', 'done', 1, {old}, {old}, {old}",
        1,
    ),
    (
        "messages",
        "id, conversation_id, inbox, queue_id, raw_id, direction, message_id,"
        ' message_id_generated, in_reply_to, "references", subject, from_email, from_name,'
        ' "to", cc, text, attachments, attribution, thread_reason, auto_submitted, defects,'
        " created_at, content_hash",
        "n, (n + 1) / 2, {inbox_of_message}, n, n, 'inbound', '<bulk-' || n || '@bulk.test>',"
        " 0, '[]', '[]', 'Bulk', 'c' || ((n + 3) / 4) || '@bulk.test', '', '[]', '[]', 'bulk',"
        " '[]', 'sender', 'new', 0, '[]', {old}, printf('%064x', n)",
        "n, (n + 1) / 2, {inbox_of_message}, n, n, 'inbound', '<bulk-' || n || '@bulk.test>',"
        " false, '[]', '[]', 'Bulk', 'c' || ((n + 3) / 4) || '@bulk.test', '', '[]', '[]',"
        " 'bulk', '[]', 'sender', 'new', false, '[]', {old}, lpad(to_hex(n), 64, '0')",
        1,
    ),
]

SQLITE_OLD = "strftime('%Y-%m-%d %H:%M:%S.000000', 'now', '-30 days')"
POSTGRES_OLD = "now() - interval '30 days'"


async def fill(engine: AsyncEngine, count: int) -> None:
    """Add `count` stored messages (and their conversations, contacts, raw bytes and queue
    rows) to an empty, migrated database."""
    postgres = engine.dialect.name == "postgresql"
    async with engine.begin() as connection:
        for table, columns, sqlite_select, postgres_select, divisor in ROWS:
            rows = max(1, count // divisor)
            chosen = postgres_select if postgres else sqlite_select
            select_list = chosen.format(
                old=POSTGRES_OLD if postgres else SQLITE_OLD,
                inbox="CASE WHEN n % 2 = 0 THEN 'sales' ELSE 'support' END",
                inbox_of_message="CASE WHEN ((n + 1) / 2) % 2 = 0 THEN 'sales' ELSE 'support' END",
            )
            insert = f"INSERT INTO {table} ({columns}) SELECT {select_list}"
            if postgres:
                await connection.exec_driver_sql(POSTGRES.format(insert_pg=insert, count=rows))
            else:
                await connection.exec_driver_sql(SQLITE.format(insert=insert, count=rows))
        if postgres:
            for table in TABLES:
                await connection.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                    f" (SELECT max(id) FROM {table}))"
                )
    if postgres:  # as autovacuum would; the gateway never runs ANALYZE on SQLite
        async with engine.connect() as connection:
            await connection.exec_driver_sql("ANALYZE")
            await connection.commit()
    else:  # the rows into the database file, as SQLite's checkpoints would have put them
        await asyncio.to_thread(checkpoint, str(engine.url.database))


def checkpoint(path: str) -> None:
    """Move a SQLite database's write-ahead log into the file and empty the log."""
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()
