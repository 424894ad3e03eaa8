"""Inbound worker processes: `serve` starts `[worker] processes` of them beside SMTP intake, wakes
them when mail is committed, reloads and stops them with itself, and restarts one that dies."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import time
from pathlib import Path
from typing import BinaryIO

from mailgateway import logs, metrics
from mailgateway.config import Config, DatabaseConfig, load_config
from mailgateway.domain import QueueState
from mailgateway.errors import ConfigError
from mailgateway.inbound.worker import InboundWorker, Outcome
from mailgateway.logs import get_logger
from mailgateway.store import inline_sqlite
from mailgateway.store.db import create_engine
from mailgateway.store.repo import ClaimedItem, Store

log = get_logger(__name__)

RESTART_DELAY = 1.0
PR_SET_PDEATHSIG = 1


class WorkerProcesses:
    """The daemon's inbound worker processes (`mailgateway worker --child`), one per slot. Each
    reads a byte on its standard input as "mail was committed" and end of input as "the daemon
    is gone"."""

    def __init__(self, directory: Path, count: int) -> None:
        self.directory = directory
        self.count = count
        self.children: dict[int, asyncio.subprocess.Process] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.stopping = False
        self.wake_pending = False

    def start(self) -> None:
        """Start every slot's process (and keep it running)."""
        self.tasks = [asyncio.create_task(self._keep(slot)) for slot in range(self.count)]

    async def _keep(self, slot: int) -> None:
        """Run the slot's process; start it again when it exits unasked."""
        loop = asyncio.get_running_loop()
        while not self.stopping:
            read_end, write_end = os.pipe()
            try:
                child = await self._spawn(write_end)
            finally:
                os.close(write_end)
            reports, _ = await loop.connect_read_pipe(MetricsPipe, os.fdopen(read_end, "rb", 0))
            self.children[slot] = child
            log.info("worker.process_started", slot=slot, pid=child.pid)
            code = await child.wait()
            reports.close()
            del self.children[slot]
            if self.stopping:
                return
            log.error("worker.process_exited", slot=slot, pid=child.pid, code=code)
            await asyncio.sleep(RESTART_DELAY)

    async def _spawn(self, report_fd: int) -> asyncio.subprocess.Process:
        """One worker process, logging as this one does, reporting its metrics on `report_fd`."""
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mailgateway",
            "worker",
            "--config",
            str(self.directory),
            "--log-level",
            logs.configured_level,
            "--log-format",
            logs.configured_format,
            "--child",
            "--report-fd",
            str(report_fd),
            stdin=asyncio.subprocess.PIPE,
            pass_fds=(report_fd,),
        )

    def wake(self) -> None:
        """Mail was committed: tell every worker process (once per turn of the event loop)."""
        if self.wake_pending:
            return
        self.wake_pending = True
        asyncio.get_running_loop().call_soon(self._send_wake)

    def _send_wake(self) -> None:
        """Write one byte to each worker's standard input."""
        self.wake_pending = False
        for child in self.children.values():
            if child.stdin is not None and not child.stdin.is_closing():
                child.stdin.write(b".")

    def reload(self) -> None:
        """Pass SIGHUP on: each worker loads the configuration again."""
        for child in self.children.values():
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGHUP)

    async def stop(self, grace: float) -> None:
        """SIGTERM (finish the message in hand, give back the rest); SIGKILL after `grace`."""
        self.stopping = True
        for child in self.children.values():
            with contextlib.suppress(ProcessLookupError):
                child.terminate()
        try:
            async with asyncio.timeout(grace):
                await asyncio.gather(*self.tasks, return_exceptions=True)
        except TimeoutError:
            for child in self.children.values():
                with contextlib.suppress(ProcessLookupError):
                    child.kill()
            await asyncio.gather(*self.tasks, return_exceptions=True)


def worker_database_url(database: DatabaseConfig) -> str:
    """The URL a worker process uses: SQLite statements run inline there (nothing else runs in
    that process to keep waiting), PostgreSQL through asyncpg as everywhere."""
    if database.is_sqlite:
        return database.async_url.replace("sqlite+aiosqlite://", f"{inline_sqlite.SCHEME}://", 1)
    return database.async_url


def die_with_parent() -> None:
    """Ask Linux to kill this process when the daemon that started it dies, as a crash of the
    daemon takes its workers along: their claimed rows are then taken over after the lease."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def main(directory: Path, *, child: bool, report_fd: int | None = None) -> int:
    """`mailgateway worker`: one inbound worker on the configured event loop."""
    from mailgateway.app import loop_factory

    if child:
        die_with_parent()
    config = load_config(directory)
    report = None if report_fd is None else os.fdopen(report_fd, "wb", 0)
    with asyncio.Runner(loop_factory=loop_factory(config.gateway.server)) as runner:
        return runner.run(run_worker(config, child=child, report=report))


async def run_worker(config: Config, *, child: bool, report: BinaryIO | None = None) -> int:
    """Run one inbound worker until SIGTERM; a child of `serve` also follows its standard input
    (a byte: new mail; end of input: the daemon is gone)."""
    from mailgateway.app import require_schema

    store = Store(create_engine(worker_database_url(config.gateway.database)))
    await require_schema(store)
    settings = config.gateway
    worker = ReportingWorker(
        store, settings.worker, id_domain=settings.smtp.hostname, config=config, inline=True
    )
    worker.report = report
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, worker.stop)
    loop.add_signal_handler(signal.SIGHUP, reload_worker, worker, config.directory)
    if child:
        await loop.connect_read_pipe(lambda: WakePipe(worker), sys.stdin)
    log.info("worker.started", pid=os.getpid(), name=worker.name)
    try:
        await worker.run()
    finally:
        await store.close()
    log.info("worker.stopped", pid=os.getpid())
    return 0


def reload_worker(worker: InboundWorker, directory: Path) -> None:
    """SIGHUP: take up the configuration again; an invalid one is refused, the old one stays."""
    try:
        config = load_config(directory)
    except ConfigError as error:
        log.error("config.reload_refused", error=str(error))
        return
    worker.reconfigure(config)
    log.info("worker.reloaded", inboxes=len(config.inboxes))


class WakePipe(asyncio.Protocol):
    """The daemon's side of a worker process: bytes wake the worker, end of input stops it."""

    def __init__(self, worker: InboundWorker) -> None:
        self.worker = worker

    def data_received(self, data: bytes) -> None:
        """Mail was committed."""
        self.worker.wake()

    def connection_lost(self, exc: Exception | None) -> None:
        """The daemon is gone: finish the message in hand and stop."""
        self.worker.stop()


class ReportingWorker(InboundWorker):
    """An inbound worker that also reports each stored and failed message to the daemon that
    started it, whose /metrics counts them (a worker process serves no metrics of its own)."""

    report: BinaryIO | None = None

    def log_stored(self, item: ClaimedItem, outcome: Outcome) -> None:
        """One event per stored message, and a report of it."""
        super().log_stored(item, outcome)
        self._send(f"stored {time.monotonic() - self.claimed_at:.6f}")

    async def record_failure(self, item: ClaimedItem, error: Exception) -> None:
        """Record the failed attempt, and report it."""
        hold = item.attempts >= self.settings.max_attempts
        self._send(f"failed {QueueState.HELD if hold else QueueState.QUEUED}")
        await super().record_failure(item, error)

    def _send(self, line: str) -> None:
        """One report line (dropped if the daemon is gone)."""
        if self.report is not None:
            with contextlib.suppress(OSError):
                self.report.write(line.encode() + b"\n")


class MetricsPipe(asyncio.Protocol):
    """The daemon's end of a worker process's reports: each line updates its metrics."""

    def __init__(self) -> None:
        self.pending = b""

    def data_received(self, data: bytes) -> None:
        """Count every complete report line."""
        *lines, self.pending = (self.pending + data).split(b"\n")
        for line in lines:
            kind, _, value = line.decode("ascii", "replace").partition(" ")
            if kind == "stored":
                metrics.INBOUND_STORED.inc()
                metrics.PROCESSING_SECONDS.observe(float(value))
            elif kind == "failed":
                metrics.INBOUND_FAILED.labels(state=value).inc()
