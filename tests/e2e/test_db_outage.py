"""The database made unavailable under load: 451 (never 250, never 5xx) while it is down, and
every message the senders retry is stored exactly once afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

from mailgateway.app import Gateway
from tests.conftest import pg_url
from tests.support import SUPPORT, RawSMTP, make_message, port_of, running_gateway, write_config

SENDERS = 5


class TcpProxy:
    """A loopback TCP relay to PostgreSQL that can be cut (connections reset, new ones refused)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def up(self) -> None:
        """Listen (again, on the same port once chosen)."""
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        """Refuse new connections and reset the open ones."""
        assert self.server is not None
        self.server.close()
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port
            )
        except OSError:
            writer.transport.abort()
            return
        self.writers.update({writer, upstream_writer})
        await asyncio.gather(
            self._pipe(reader, upstream_writer),
            self._pipe(upstream_reader, writer),
            return_exceptions=True,
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            self.writers.discard(writer)
            writer.transport.abort()


async def sender(port: int, name: int, replies: list[str], stop: asyncio.Event) -> int:
    """Send distinct messages like an MTA until stopped: on 4xx retry the same bytes until 250.
    Returns how many messages were accepted."""
    n = 0
    while not stop.is_set():
        raw = make_message(subject=f"sender {name} message {n}")
        n += 1
        while True:
            client = await RawSMTP.connect(port)
            try:
                reply = await client.transaction("mta@customer.test", [SUPPORT], raw)
            finally:
                await client.close()
            replies.append(reply)
            if reply.startswith("250"):
                break
            assert reply.startswith("4"), reply
            await asyncio.sleep(0.2)
    return n


async def load_with_outage(
    gateway: Gateway, outage: contextlib.AbstractAsyncContextManager[None]
) -> tuple[list[str], int]:
    """Run the senders; cut the database for a while in the middle of the load. Returns the
    replies and how many distinct messages were accepted."""
    replies: list[str] = []
    stop = asyncio.Event()
    port = port_of(gateway)
    senders = [asyncio.create_task(sender(port, n, replies, stop)) for n in range(SENDERS)]
    await asyncio.sleep(0.5)
    async with outage:
        await asyncio.sleep(1.5)
    await asyncio.sleep(0.5)
    stop.set()
    accepted = sum(await asyncio.wait_for(asyncio.gather(*senders), timeout=90))
    await gateway.handler.drain()
    return replies, accepted


async def assert_stored_once(gateway: Gateway, replies: list[str], accepted: int) -> None:
    """Some 451s, no 5xx, and exactly one queue row per distinct accepted message."""
    assert any(reply.startswith("451 4.3.0") for reply in replies)
    assert not [reply for reply in replies if reply.startswith("5")]
    rows = await gateway.store.queue_rows()
    assert len(rows) == accepted
    assert len({row.raw_id for row in rows}) == accepted


async def test_postgresql_outage_under_load(tmp_path: Path, pg_database: str) -> None:
    """PostgreSQL cut mid-load: 451 while down, every message stored exactly once after."""
    proxy = TcpProxy(5432)
    await proxy.up()
    url = pg_url(pg_database).replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    async with running_gateway(
        write_config(tmp_path / "c", url, max_connections_per_ip=50)
    ) as gateway:
        gateway.handler.commit_timeout = 2.0

        @contextlib.asynccontextmanager
        async def outage() -> AsyncIterator[None]:
            await proxy.down()
            yield
            await proxy.up()

        replies, accepted = await load_with_outage(gateway, outage())
        await assert_stored_once(gateway, replies, accepted)
    await proxy.down()


def hold_lock(path: str, locked: threading.Event, release: threading.Event) -> None:
    """In a thread of its own, hold SQLite's write lock until told to release it."""
    locker = sqlite3.connect(path, isolation_level=None, timeout=30)
    locker.execute("BEGIN EXCLUSIVE")
    locked.set()
    release.wait()
    locker.execute("ROLLBACK")
    locker.close()


async def test_sqlite_locked_under_load(tmp_path: Path, sqlite_url: str) -> None:
    """SQLite held locked by another connection mid-load: 451 while locked (the commit that timed
    out still completes later), every message stored exactly once after."""
    db_url = sqlite_url
    async with running_gateway(
        write_config(tmp_path / "c", db_url, max_connections_per_ip=50)
    ) as gateway:
        gateway.handler.commit_timeout = 0.5
        path = db_url.split(":///", 1)[1]

        @contextlib.asynccontextmanager
        async def outage() -> AsyncIterator[None]:
            locked, release = threading.Event(), threading.Event()
            holder = threading.Thread(target=hold_lock, args=(path, locked, release))
            holder.start()
            await asyncio.to_thread(locked.wait)
            try:
                yield
            finally:
                release.set()
                await asyncio.to_thread(holder.join)

        replies, accepted = await load_with_outage(gateway, outage())
        await assert_stored_once(gateway, replies, accepted)
