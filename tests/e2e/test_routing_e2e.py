"""Routing in the running daemon: SMTP in, assigned conversations and webhook posts out; two
`mailgateway serve` processes sharing PostgreSQL keep one fair round robin."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import smtplib
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from mailgateway.store.repo import Store
from tests.cli_support import with_store
from tests.conftest import pg_url
from tests.routing_support import assignees, enqueue_many, write_routing_config
from tests.support import SUPPORT, make_message, port_of, running_gateway
from tests.webhook import recording_webhook


def smtp_send(port: int, raw: bytes) -> int:
    """One message to the support inbox over SMTP; the reply code to the final dot."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("client.test")
        client.mail("john.doe@customer.test")
        client.rcpt(SUPPORT)
        return int(client.data(raw)[0])


async def test_daemon_assigns_and_notifies_once_per_conversation(
    tmp_path: Path, db_url: str
) -> None:
    """Four messages over SMTP (three new, one reply): three assigned conversations, and the
    webhook receives exactly three posts from the daemon's notifier."""
    async with recording_webhook() as hook:
        folder = write_routing_config(tmp_path / "config", db_url, webhook_url=hook.url)
        async with running_gateway(folder) as gateway:
            port = port_of(gateway)
            raws = [
                make_message(subject=f"case {n}", message_id=f"<c{n}@x.test>") for n in range(3)
            ]
            raws.append(make_message(subject="Re: case 0", In_Reply_To="<c0@x.test>"))
            for raw in raws:
                assert await asyncio.to_thread(smtp_send, port, raw) == 250
            await hook.wait_for(3)
            await asyncio.sleep(0.5)  # time for a duplicate to show up, if there were one
            counts = await assignees(gateway.store)
        assert len(hook.received) == 3
        assert counts == Counter({"alice": 1, "bob": 1, "carol": 1})


async def test_reload_applies_new_automation(tmp_path: Path, db_url: str) -> None:
    """After SIGHUP's reload, the worker routes with the new [automation]."""
    manual = {"access": {"mode": "specific", "teams": ["support"]}}
    folder = write_routing_config(tmp_path / "config", db_url, support=manual)
    async with running_gateway(folder) as gateway:
        port = port_of(gateway)
        assert await asyncio.to_thread(smtp_send, port, make_message(subject="before")) == 250
        await wait_for_conversations(gateway.store, 1)
        write_routing_config(folder, db_url)
        assert gateway.reload(folder)
        assert await asyncio.to_thread(smtp_send, port, make_message(subject="after")) == 250
        await wait_for_conversations(gateway.store, 2)
        assert await assignees(gateway.store) == Counter({None: 1, "alice": 1})


async def wait_for_conversations(store: Store, count: int) -> None:
    """Wait until the store holds `count` conversations."""
    async with asyncio.timeout(15):
        while len(await store.conversation_rows()) < count:
            await asyncio.sleep(0.05)


def start_daemon(folder: Path, log: Path) -> subprocess.Popen[bytes]:
    """`mailgateway serve` in a child process, logging JSON (stdout) to a file."""
    return subprocess.Popen(
        [sys.executable, "-m", "mailgateway", "serve", "--config", str(folder)],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if k != "MAILGATEWAY_DATABASE_URL"},
    )


def events(log: Path, name: str) -> list[dict[str, Any]]:
    """The daemon's log events of one name."""
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    found = [json.loads(line) for line in lines if line.startswith("{")]
    return [event for event in found if event.get("event") == name]


def test_two_daemons_sharing_postgresql_keep_round_robin_fair(
    tmp_path: Path, pg_database: str
) -> None:
    """Two serve processes drain 300 queued messages from one PostgreSQL database together:
    both take part, every message is stored once, and the three users differ by at most 1."""
    url = pg_url(pg_database)
    with_store(url, lambda store: enqueue_many(store, 300))
    folders = [write_routing_config(tmp_path / f"config{n}", url) for n in (1, 2)]
    logs = [tmp_path / f"daemon{n}.log" for n in (1, 2)]
    daemons = [start_daemon(folder, log) for folder, log in zip(folders, logs, strict=True)]
    try:
        deadline = time.monotonic() + 90
        while sum(len(events(log, "message.stored")) for log in logs) < 300:
            assert time.monotonic() < deadline, "not all messages were processed in time"
            assert all(d.poll() is None for d in daemons), [log.read_text() for log in logs]
            time.sleep(0.2)
    finally:
        for daemon in daemons:
            daemon.send_signal(signal.SIGTERM)
        codes = [daemon.wait(timeout=30) for daemon in daemons]
    assert codes == [0, 0]
    per_daemon = [len(events(log, "message.stored")) for log in logs]
    assert sum(per_daemon) == 300 and min(per_daemon) > 0, per_daemon
    counts = with_store(url, assignees)
    assert set(counts) == {"alice", "bob", "carol"}
    assert sum(counts.values()) == 300
    assert max(counts.values()) - min(counts.values()) <= 1, counts
