"""The fault campaign: MTAs send while the database is made unavailable (cut, refused, stalled,
read-only, full disk); every reply in the fault window must be 4xx, and every letter retried
must be stored exactly once after recovery."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import asyncpg
from sqlalchemy import event
from sqlalchemy.engine import make_url

from mailgateway.app import Gateway
from tests.campaigns.crash import Letters
from tests.campaigns.databases import migrate
from tests.campaigns.mta import Ledger, Reply, Sessions
from tests.campaigns.verify import Verdict, verify
from tests.conftest import PG_ADMIN
from tests.e2e.test_db_outage import TcpProxy
from tests.support import port_of, running_gateway, write_config

MiB = 1024 * 1024


class Fault(Protocol):
    """Something that makes the database unavailable and then restores it."""

    name: str

    async def inject(self) -> None:
        """Break it."""

    async def lift(self) -> None:
        """Restore it."""


@dataclass
class Window:
    """One fault window's timing."""

    injected: float
    lifted: float

    def inside(self, reply: Reply) -> bool:
        """The transaction began after the fault was in place and was answered before it
        ended. A connection that broke without an answer counts only if it was opened inside
        the window too (one opened before may have died with the fault's onset: a crash)."""
        began = reply.started if reply.code else reply.connected
        return self.injected <= began and reply.ended <= self.lifted

    def overlaps(self, reply: Reply) -> bool:
        """The transaction straddles a boundary of the window."""
        return (
            reply.started < self.lifted and reply.ended > self.injected and not self.inside(reply)
        )


@dataclass
class FaultReport:
    """Replies inside and around the fault windows, and what the database says afterwards."""

    name: str
    windows: int = 0
    inside: Counter[str] = field(default_factory=Counter)
    straddling: Counter[str] = field(default_factory=Counter)
    outside: Counter[str] = field(default_factory=Counter)
    verdict: Verdict = field(default_factory=Verdict)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    room: bool = False  # a full disk may still take writes that fit the file's free pages
    odd: list[str] = field(default_factory=list)  # answers in a window that are no deferral

    @property
    def inside_4xx_share(self) -> float:
        """The share of deferrals (4xx, or connection refused while no daemon runs) among the
        answers inside the windows."""
        total = sum(self.inside.values())
        fours = sum(count for reply, count in self.inside.items() if deferring(reply))
        return fours / total if total else 0.0

    @property
    def ok(self) -> bool:
        """Some answers in the windows, all of them deferrals (on a full disk, also 250s for
        what still fitted: the verdict checks they are stored); no 5xx anywhere; every
        acknowledged letter stored exactly once and processed; nothing stuck; integrity intact."""
        every = self.inside + self.straddling + self.outside
        accepted = sum(count for reply, count in self.inside.items() if reply.startswith("2"))
        return (
            sum(self.inside.values()) > 0
            and self.inside_4xx_share + (accepted * self.room) / sum(self.inside.values()) == 1.0
            and not any(reply.startswith("5") for reply in every)
            and self.verdict.ok
        )

    def figures(self) -> dict[str, Any]:
        """The report as JSON-ready figures."""
        return {
            "fault": self.name,
            "windows": self.windows,
            "replies_in_window": dict(self.inside),
            "replies_straddling": dict(self.straddling),
            "replies_outside": dict(self.outside),
            "in_window_4xx_share": round(self.inside_4xx_share, 4),
            "in_window_250_allowed": self.room,
            **self.verdict.figures(),
            "odd_answers_in_window": self.odd[:10],
            "notes": self.notes,
            "seconds": round(self.seconds, 1),
            "ok": self.ok,
        }


def reply_class(reply: Reply) -> str:
    """A reply by code, enhanced status and command ('452 4.3.1 at mail'), or how the
    connection failed."""
    if not reply.code:
        return reply.kind
    status = reply.text.split(" ", 1)[0]
    code = f"{reply.code} {status}" if status[:1].isdigit() else str(reply.code)
    return f"{code} at {reply.stage}"


def deferring(reply_text: str) -> bool:
    """A reply class an MTA retries later: 4xx, or no daemon to connect to."""
    return reply_text.startswith("4") or reply_text == "connection refused"


@dataclass
class Timing:
    """How long to run before, during and after each fault, and how often."""

    windows: int = 1
    before: float = 0.5
    window: float = 1.5
    after: float = 0.5
    sessions: int = 5
    commit_timeout: float = 1.0
    drain_timeout: float = 60.0


async def under_fault(gateway: Gateway, fault: Fault, timing: Timing, seed: int = 0) -> FaultReport:
    """Send through the gateway while the fault comes and goes; then check the ledger."""
    started = time.monotonic()
    gateway.handler.commit_timeout = timing.commit_timeout
    report = FaultReport(fault.name, windows=timing.windows)
    ledger = Ledger()
    sessions = Sessions(
        port_of(gateway),
        ledger,
        Letters(f"{fault.name}{seed}", random.Random(seed)),
        sessions=timing.sessions,
        retry_delay=0.2,
    )
    windows: list[Window] = []
    sessions.start()
    try:
        for _ in range(timing.windows):
            await asyncio.sleep(timing.before)
            await fault.inject()
            injected = time.monotonic()
            await asyncio.sleep(timing.window)
            lifted = time.monotonic()
            await fault.lift()
            windows.append(Window(injected, lifted))
        await asyncio.sleep(timing.after)
        await sessions.stop()
    finally:
        sessions.stopping.set()
        for task in sessions.tasks:
            task.cancel()
    await gateway.handler.drain()
    await drain_worker(gateway, timing.drain_timeout)
    sort_replies(report, ledger, windows)
    report.verdict = await verify(gateway.store.engine, ledger)
    report.seconds = time.monotonic() - started
    return report


def sort_replies(report: FaultReport, ledger: Ledger, windows: list[Window]) -> None:
    """Count each answer as inside a window, straddling one, or outside them."""
    for reply in ledger.replies:
        bucket = report.outside
        inside = [window for window in windows if window.inside(reply)]
        if inside:
            bucket = report.inside
            if not deferring(reply_class(reply)):
                began, ended = (t - inside[0].injected for t in (reply.started, reply.ended))
                report.odd.append(
                    f"{reply_class(reply)} ({reply.stage}: {reply.text[:60]}) "
                    f"{began:.3f}-{ended:.3f} s into the window"
                )
        elif any(window.overlaps(reply) for window in windows):
            bucket = report.straddling
        bucket[reply_class(reply)] += 1


async def drain_worker(gateway: Gateway, timeout: float) -> None:
    """Wait until the worker has no queued or active row left (or the timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        gateway.worker.wake()
        counts = await gateway.store.queue_counts()
        if not counts.get("queued") and not counts.get("active"):
            return
        await asyncio.sleep(0.2)


# -- PostgreSQL ---------------------------------------------------------------------------------


class FreezableProxy(TcpProxy):
    """The outage test's TCP relay to PostgreSQL, which can also freeze: connections stay open
    but no byte passes (a stalled server or a black-holed network)."""

    def __init__(self, target_port: int) -> None:
        super().__init__(target_port)
        self.flowing = asyncio.Event()
        self.flowing.set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Relay one direction, holding every chunk while frozen."""
        try:
            while data := await reader.read(65536):
                await self.flowing.wait()
                writer.write(data)
                await writer.drain()
        finally:
            self.writers.discard(writer)
            writer.transport.abort()


@dataclass
class ProxyCut:
    """PostgreSQL unreachable: the relay resets every connection and refuses new ones."""

    proxy: FreezableProxy
    name: str = "pg-connection-cut"

    async def inject(self) -> None:
        await self.proxy.down()

    async def lift(self) -> None:
        await self.proxy.up()


@dataclass
class ProxyStall:
    """PostgreSQL stalled: connections stay open, nothing comes back until it thaws."""

    proxy: FreezableProxy
    name: str = "pg-stalled"

    async def inject(self) -> None:
        self.proxy.flowing.clear()

    async def lift(self) -> None:
        self.proxy.flowing.set()


@dataclass
class DatabaseRefused:
    """The server refuses our database: `ALLOW_CONNECTIONS false` and every session of it
    terminated, as when an administrator takes it offline (the server itself stays up for the
    other tests sharing it)."""

    database: str
    name: str = "pg-database-refused"

    async def _admin(self, *statements: str) -> None:
        """Run statements as the server's administrator."""
        connection = await asyncpg.connect(PG_ADMIN, timeout=5)
        try:
            for statement in statements:
                await connection.execute(statement)
        finally:
            await connection.close()

    async def inject(self) -> None:
        await self._admin(
            f'ALTER DATABASE "{self.database}" WITH ALLOW_CONNECTIONS false',
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{self.database}' AND pid <> pg_backend_pid()",
        )

    async def lift(self) -> None:
        await self._admin(f'ALTER DATABASE "{self.database}" WITH ALLOW_CONNECTIONS true')


# -- SQLite -----------------------------------------------------------------------------------


def gateway_pools(gateway: Gateway) -> list[Any]:
    """Every connection pool the gateway writes through: the async engine's and, on SQLite,
    the intake writer thread's own connection."""
    pools = [gateway.store.engine.sync_engine.pool]
    writer = gateway.store._sqlite_writer
    if writer is not None:
        pools.append(writer.engine.pool)
    return pools


@dataclass
class QueryOnly:
    """SQLite made read-only for the gateway (a test hook, not a file-system change): every
    connection the gateway's pool hands out gets `PRAGMA query_only`, and SQLite refuses
    writes with SQLITE_READONLY as it does for a read-only file."""

    gateway: Gateway
    name: str = "sqlite-read-only"
    on: bool = False

    def __post_init__(self) -> None:
        for pool in gateway_pools(self.gateway):
            event.listen(pool, "checkout", self._apply)

    def _apply(self, dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        """Pool checkout: the connection refuses writes while the fault is on."""
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA query_only={'ON' if self.on else 'OFF'}")
        cursor.close()

    async def inject(self) -> None:
        self.on = True

    async def lift(self) -> None:
        self.on = False


@dataclass
class PageLimit:
    """Disk full simulated where no tmpfs can be mounted (a test hook): every connection the
    gateway's pool hands out gets `PRAGMA max_page_count` at the database's current size, so
    SQLite answers SQLITE_FULL as on a full disk. The free-space check at MAIL sees the real
    disk, so only DATA is refused."""

    gateway: Gateway
    name: str = "sqlite-disk-full (max_page_count)"
    on: bool = False

    def __post_init__(self) -> None:
        for pool in gateway_pools(self.gateway):
            event.listen(pool, "checkout", self._apply)

    def _apply(self, dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        """Pool checkout: the database may not grow while the fault is on."""
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA max_page_count={1 if self.on else 1_073_741_823}")
        cursor.close()

    async def inject(self) -> None:
        self.on = True

    async def lift(self) -> None:
        self.on = False


def mount_tmpfs(folder: Path, size: int) -> bool:
    """Mount a small tmpfs on the folder; False when this machine does not let us."""
    folder.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        return False
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    return result.returncode == 0


def unmount(folder: Path) -> None:
    """Unmount it (lazily: a straggling file handle must not keep the tmpfs mounted)."""
    subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)


@dataclass
class DiskFull:
    """The SQLite database's file system filled up for real: a small tmpfs holding the database
    and a filler file written until ENOSPC (removed to recover)."""

    folder: Path
    name: str = "sqlite-disk-full"

    @property
    def filler(self) -> Path:
        """The file that takes the free space."""
        return self.folder / "filler"

    async def inject(self) -> None:
        await asyncio.to_thread(self._fill)

    def _fill(self) -> None:
        """Write zeros until the file system is full."""
        chunk = b"\0" * 65536
        with contextlib.suppress(OSError), self.filler.open("ab") as handle:
            while True:
                handle.write(chunk)
                handle.flush()

    async def lift(self) -> None:
        self.filler.unlink(missing_ok=True)


@contextlib.asynccontextmanager
async def sqlite_on_tmpfs(workdir: Path, size: int = 8 * MiB) -> AsyncIterator[Path | None]:
    """A folder on a small tmpfs (None when mounting is not possible here)."""
    folder = workdir / "tmpfs"
    if os.geteuid() != 0 or not mount_tmpfs(folder, size):
        yield None
        return
    try:
        yield folder
    finally:
        unmount(folder)


# -- scenarios ---------------------------------------------------------------------------------

Scenario = Callable[[Path, str, Timing], Awaitable[FaultReport | None]]


def through(proxy: FreezableProxy, url: str) -> str:
    """The database URL with the relay's port instead of the server's."""
    return make_url(url).set(port=proxy.port).render_as_string(hide_password=False)


async def pg_cut(workdir: Path, url: str, timing: Timing) -> FaultReport:
    """PostgreSQL connections reset and refused through the relay."""
    proxy = FreezableProxy(make_url(url).port or 5432)
    await proxy.up()
    try:
        config = write_config(workdir / "cut", through(proxy, url), max_connections_per_ip=50)
        async with running_gateway(config) as gateway:
            return await under_fault(gateway, ProxyCut(proxy), timing)
    finally:
        await proxy.down()


async def pg_stall(workdir: Path, url: str, timing: Timing) -> FaultReport:
    """PostgreSQL connections frozen: commits hang past the commit timeout, then complete."""
    proxy = FreezableProxy(make_url(url).port or 5432)
    await proxy.up()
    try:
        config = write_config(workdir / "stall", through(proxy, url), max_connections_per_ip=50)
        async with running_gateway(config) as gateway:
            return await under_fault(gateway, ProxyStall(proxy), timing)
    finally:
        proxy.flowing.set()
        await proxy.down()


async def pg_refused(workdir: Path, url: str, timing: Timing) -> FaultReport:
    """Our PostgreSQL database taken offline by the server."""
    config = write_config(workdir / "refused", url, max_connections_per_ip=50)
    fault = DatabaseRefused(str(make_url(url).database))
    try:
        async with running_gateway(config) as gateway:
            return await under_fault(gateway, fault, timing)
    finally:
        await fault.lift()


async def sqlite_read_only(workdir: Path, url: str, timing: Timing) -> FaultReport:
    """SQLite refusing writes (PRAGMA query_only on the gateway's connections)."""
    config = write_config(workdir / "readonly", url, max_connections_per_ip=50)
    async with running_gateway(config) as gateway:
        return await under_fault(gateway, QueryOnly(gateway), timing)


async def sqlite_disk_full(workdir: Path, url: str, timing: Timing) -> FaultReport:
    """SQLite on a tmpfs filled to the last byte: 452 4.3.1 at MAIL from the free-space check,
    4xx at DATA for transactions already past MAIL. Where no tmpfs can be mounted, on the given
    database with SQLite's page limit instead (said in the report's notes)."""
    async with sqlite_on_tmpfs(workdir, 64 * MiB) as folder:
        if folder is None:
            config = write_config(workdir / "full", url, max_connections_per_ip=50)
            async with running_gateway(config) as gateway:
                report = await under_fault(gateway, PageLimit(gateway), timing)
            report.room = True
            report.notes.append("no tmpfs could be mounted: SQLite max_page_count simulation")
            return report
        url = f"sqlite+aiosqlite:///{folder / 'mailgateway.db'}"
        await migrate(url)
        config = write_config(
            workdir / "full", url, max_connections_per_ip=50, max_message_size="256KiB"
        )
        async with running_gateway(config) as gateway:
            report = await under_fault(gateway, DiskFull(folder), timing)
        report.room = True
        report.notes.append("real: a 64 MiB tmpfs filled to ENOSPC")
        return report


POSTGRESQL: dict[str, Scenario] = {
    "pg-connection-cut": pg_cut,
    "pg-stalled": pg_stall,
    "pg-database-refused": pg_refused,
}
SQLITE: dict[str, Scenario] = {
    "sqlite-read-only": sqlite_read_only,
    "sqlite-disk-full": sqlite_disk_full,
}
