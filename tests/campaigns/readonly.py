"""The SQLite directory made read-only for real: the daemon crashes, the file system holding the
database is remounted read-only, the daemon is started on it, and later on a writable one again."""

from __future__ import annotations

import asyncio
import random
import subprocess
import time
from pathlib import Path

from tests.campaigns.crash import (
    DaemonProcess,
    Letters,
    campaign_config,
    drained,
    free_port,
    listening,
)
from tests.campaigns.daemon import KillPoint
from tests.campaigns.databases import migrate
from tests.campaigns.faults import FaultReport, MiB, Timing, Window, sort_replies, sqlite_on_tmpfs
from tests.campaigns.mta import Ledger, Sessions
from tests.campaigns.verify import reader, verify


def remount(folder: Path, mode: str) -> None:
    """Remount the tmpfs read-only ('ro') or writable ('rw')."""
    subprocess.run(["mount", "-o", f"remount,{mode}", str(folder)], check=True, capture_output=True)


async def sqlite_read_only_restart(workdir: Path, _url: str, timing: Timing) -> FaultReport | None:
    """Crash, read-only remount, restart on it: while it is read-only nothing may be answered
    250 (the daemon refuses to start, or answers 4xx); after the writable restart every letter
    is stored once. None when no tmpfs can be mounted here."""
    async with sqlite_on_tmpfs(workdir, 64 * MiB) as folder:
        if folder is None:
            return None
        url = f"sqlite+aiosqlite:///{folder / 'mailgateway.db'}"
        await migrate(url)
        return await _run(workdir, folder, url, timing)


async def _run(workdir: Path, folder: Path, url: str, timing: Timing) -> FaultReport:
    """The campaign on a migrated database in the tmpfs folder."""
    started = time.monotonic()
    report = FaultReport("sqlite-read-only-remount", windows=timing.windows)
    port = free_port()
    config_dir = campaign_config(workdir, url, port)
    daemon = DaemonProcess(config_dir, workdir, KillPoint.TIMER, 0)
    assert await listening(port, daemon)
    ledger = Ledger()
    letters = Letters("readonly", random.Random(3))
    sessions = Sessions(port, ledger, letters, sessions=timing.sessions)
    windows: list[Window] = []
    sessions.start()
    try:
        for _ in range(timing.windows):
            await asyncio.sleep(timing.before)
            daemon.kill()
            remount(folder, "ro")
            injected = time.monotonic()
            daemon = DaemonProcess(config_dir, workdir, KillPoint.TIMER, 0)
            await asyncio.sleep(timing.window)
            lifted = time.monotonic()
            status = daemon.kill()
            report.notes.append(
                "daemon on the read-only folder: "
                + ("kept running" if status == -9 else f"exited with status {status}")
            )
            remount(folder, "rw")
            windows.append(Window(injected, lifted))
            daemon = DaemonProcess(config_dir, workdir, KillPoint.TIMER, 0)
            assert await listening(port, daemon)
        await asyncio.sleep(timing.after)
        await sessions.stop()
        await drained(url, timing.drain_timeout)
        report.notes.append(f"final exit status {daemon.terminate()}")
    finally:
        sessions.stopping.set()
        for task in sessions.tasks:
            task.cancel()
        daemon.kill()
    sort_replies(report, ledger, windows)
    engine = reader(url)
    try:
        report.verdict = await verify(engine, ledger)
    finally:
        await engine.dispose()
    report.seconds = time.monotonic() - started
    return report
