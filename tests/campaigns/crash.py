"""The crash campaign: MTAs send while the daemon is SIGKILLed at random moments and inside its
commits, then restarted; afterwards every acknowledged letter must be stored exactly once."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from mailgateway.store.db import create_engine
from mailgateway.store.repo import Store, inbound_queue
from tests.campaigns.daemon import KillPoint
from tests.campaigns.mta import Ledger, Letter, Sessions, make_letter
from tests.campaigns.verify import Verdict, reader, verify
from tests.support import write_config

ROOT = Path(__file__).resolve().parents[2]
QUARANTINE = "requeued: worker "  # the reason recovery gives the rows a dead worker had in hand
START_TIMEOUT = 30.0


@dataclass
class CrashSettings:
    """How hard to push: kills, concurrent sessions, how long a daemon may live before the
    timer kills it, and how many incarnations carry a commit-point plan instead."""

    kills: int = 200
    sessions: int = 10
    seed: int = 0
    max_uptime: float = 2.5
    planned_share: float = 0.5
    plan_deadline: float = 6.0
    drain_timeout: float = 600.0
    pause: float = 1.2  # seconds (at most) each session waits between letters: the worker,
    # restarted again and again, must be able to keep up, or the final drain takes hours
    cycle: bool = False  # go through every kill point in turn (smoke runs) instead of at random


@dataclass
class CrashReport:
    """What happened and what the database says afterwards."""

    database: str
    kills: Counter[str] = field(default_factory=Counter)
    unexpected_exits: list[int] = field(default_factory=list)
    letters: int = 0
    replies: Counter[str] = field(default_factory=Counter)
    retried_after_broken_data: int = 0
    quarantined: int = 0
    final_exit: int | None = None
    verdict: Verdict = field(default_factory=Verdict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Nothing lost or duplicated, nothing stuck, integrity intact, no 5xx, clean exits."""
        return (
            self.verdict.ok
            and not self.unexpected_exits
            and self.final_exit == 0
            and self.replies["5xx"] == 0
        )

    def figures(self) -> dict[str, Any]:
        """The report as JSON-ready figures."""
        return {
            "database": self.database,
            "kills": sum(self.kills.values()),
            "kills_by_point": dict(self.kills),
            "unexpected_exits": self.unexpected_exits,
            "letters": self.letters,
            "replies": dict(self.replies),
            "retried_after_broken_data": self.retried_after_broken_data,
            "quarantined_after_crashes_then_retried": self.quarantined,
            "final_exit": self.final_exit,
            **self.verdict.figures(),
            "seconds": round(self.seconds, 1),
            "ok": self.ok,
        }


class DaemonProcess:
    """One incarnation of `mailgateway serve` under a kill plan, its log appended to a file."""

    def __init__(self, config_dir: Path, workdir: Path, point: KillPoint, nth: int) -> None:
        self.record = workdir / "self-kills.txt"
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        env.pop("MAILGATEWAY_DATABASE_URL", None)
        with (workdir / "daemon.log").open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.campaigns.daemon",
                    point.value,
                    str(nth),
                    str(self.record),
                    "--",
                    "serve",
                    "--config",
                    str(config_dir),
                    "--log-level",
                    "warning",
                ],
                stdout=log,
                stderr=log,
                env=env,
                cwd=ROOT,
            )

    @property
    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.process.poll() is None

    def self_kills(self) -> list[str]:
        """The points at which incarnations killed themselves, so far."""
        if not self.record.exists():
            return []
        return self.record.read_text().split()

    def kill(self) -> int:
        """SIGKILL (if still alive) and reap; the exit status."""
        if self.alive:
            self.process.kill()
        return self.process.wait(timeout=30)

    def terminate(self) -> int:
        """SIGTERM and wait for an orderly exit; the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def listening(port: int, daemon: DaemonProcess, timeout: float = START_TIMEOUT) -> bool:
    """Wait until the daemon greets on its port; False if it died first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and daemon.alive:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.02)
            continue
        greeting = await reader.readline()
        writer.close()
        if greeting.startswith(b"220"):
            return True
        await asyncio.sleep(0.02)
    return False


def campaign_config(workdir: Path, db_url: str, port: int) -> Path:
    """The daemon's configuration: the test inboxes on a fixed port, room for the sessions."""
    return write_config(
        workdir / "config",
        db_url,
        listen=[f"127.0.0.1:{port}"],
        max_connections=100,
        max_connections_per_ip=100,
        idle_timeout=30.0,
    )


class Letters:
    """An endless supply of unique letters."""

    def __init__(self, tag: str, rng: random.Random) -> None:
        self.tag = tag
        self.rng = rng
        self.number = 0

    def __call__(self) -> Letter:
        """The next letter."""
        self.number += 1
        return make_letter(self.tag, self.number, self.rng)


def choose_plan(rng: random.Random, settings: CrashSettings, life: int) -> tuple[KillPoint, int]:
    """A commit point and which commit of its kind (or the timer)."""
    points = list(KillPoint)
    if settings.cycle:
        point = points[life % len(points)]
        return point, 0 if point is KillPoint.TIMER else rng.randint(1, 4)
    if rng.random() >= settings.planned_share:
        return KillPoint.TIMER, 0
    return rng.choice(points[1:]), rng.randint(1, 25)


async def one_life(
    config_dir: Path,
    workdir: Path,
    settings: CrashSettings,
    rng: random.Random,
    report: CrashReport,
    life: int,
) -> None:
    """Start an incarnation and SIGKILL it: itself at its planned commit, or by the timer."""
    point, nth = choose_plan(rng, settings, life)
    daemon = DaemonProcess(config_dir, workdir, point, nth)
    before = len(daemon.self_kills())
    lifetime = settings.plan_deadline if nth else rng.uniform(0.0, settings.max_uptime)
    deadline = time.monotonic() + lifetime
    while daemon.alive and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    status = daemon.kill()
    kills = daemon.self_kills()
    if len(kills) > before:
        report.kills[kills[-1]] += 1
    elif point is KillPoint.TIMER:
        report.kills[KillPoint.TIMER.value] += 1
    else:
        report.kills[f"{KillPoint.TIMER.value} ({point.value} not reached)"] += 1
    if status != -signal.SIGKILL:
        report.unexpected_exits.append(status)


async def drained(db_url: str, timeout: float) -> bool:
    """Wait until no queue row is queued or active."""
    engine = reader(db_url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            async with engine.connect() as connection:
                waiting = await connection.scalar(
                    select(func.count()).where(inbound_queue.c.state.in_(["queued", "active"]))
                )
            if not waiting:
                return True
            await asyncio.sleep(0.25)
        return False
    finally:
        await engine.dispose()


async def retry_quarantined(db_url: str) -> int:
    """Rows held because the process died three times while they were in hand (the worker
    cannot tell such a crash loop from a message that crashes it) go back to the queue, as an
    operator's `queue retry` would put them; how many. Rows held for any other reason stay."""
    store = Store(create_engine(db_url))
    try:
        held = await store.queue_rows(["held"])
        crashed = [row.id for row in held if (row.reason or "").startswith(QUARANTINE)]
        for queue_id in crashed:
            for attempt in range(5):  # the daemon is idle by now, but may hold the lock a moment
                try:
                    await store.retry(queue_id)
                    break
                except OperationalError:
                    if attempt == 4:
                        raise
        return len(crashed)
    finally:
        await store.close()


async def crash_campaign(
    workdir: Path, db_url: str, settings: CrashSettings, database: str
) -> CrashReport:
    """Run the campaign on a migrated, empty database and check the outcome."""
    started = time.monotonic()
    rng = random.Random(settings.seed)
    report = CrashReport(database=database)
    port = free_port()
    config_dir = campaign_config(workdir, db_url, port)
    ledger = Ledger()
    letters = Letters(f"crash{settings.seed}", rng)
    sessions = Sessions(port, ledger, letters, sessions=settings.sessions, pause=settings.pause)
    sessions.start()
    try:
        for life in range(settings.kills):
            await one_life(config_dir, workdir, settings, rng, report, life)
        final = DaemonProcess(config_dir, workdir, KillPoint.TIMER, 0)
        assert await listening(port, final), (workdir / "daemon.log").read_text()[-3000:]
        await sessions.stop()
        await drained(db_url, settings.drain_timeout)
        report.quarantined = await retry_quarantined(db_url)
        await drained(db_url, settings.drain_timeout)
        report.final_exit = final.terminate()
    finally:
        sessions.stopping.set()
        for task in sessions.tasks:
            task.cancel()
    report.letters = len(ledger.letters)
    report.replies = ledger.classes()
    report.retried_after_broken_data = len(
        {reply.key for reply in ledger.replies if reply.stage == "data" and reply.code == 0}
        & set(ledger.acks)
    )
    engine = reader(db_url)
    try:
        report.verdict = await verify(engine, ledger)
    finally:
        await engine.dispose()
    report.seconds = time.monotonic() - started
    return report
