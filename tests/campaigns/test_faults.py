"""Fault campaign, smoke run: one short window of each fault (`make soak` runs longer windows,
several times): every answer in the window is a deferral, nothing is lost, doubled or stuck."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mailgateway import logs
from tests.campaigns.faults import POSTGRESQL, SQLITE, Timing
from tests.campaigns.imapfault import imap_fault
from tests.campaigns.readonly import sqlite_read_only_restart
from tests.campaigns.smarthost import SCENARIOS, smarthost_fault
from tests.conftest import pg_url
from tests.dovecot import Dovecot
from tests.system import require_system

SMOKE = Timing(windows=1, before=0.4, window=1.5, after=0.4, commit_timeout=0.5)


@pytest.mark.parametrize("name", sorted(POSTGRESQL))
async def test_postgresql_fault_smoke(tmp_path: Path, pg_database: str, name: str) -> None:
    """PostgreSQL cut, stalled or refusing our database: 4xx in the window (never 250, never
    5xx), and every letter retried after recovery is stored exactly once and processed."""
    report = await POSTGRESQL[name](tmp_path, pg_url(pg_database), SMOKE)
    assert report is not None
    assert report.ok, report.figures()
    assert all(reply.startswith("451 4.3.0") for reply in report.inside)


@pytest.mark.parametrize("name", sorted(SQLITE))
async def test_sqlite_fault_smoke(tmp_path: Path, sqlite_url: str, name: str) -> None:
    """SQLite refusing writes or out of disk: 4xx in the window (452 4.3.1 at MAIL when the
    free-space check sees the full disk; a 250 only for what still fitted, and stored), and
    every letter stored exactly once after recovery, none held."""
    report = await SQLITE[name](tmp_path, sqlite_url, SMOKE)
    assert report is not None
    assert report.ok, report.figures()
    if any("tmpfs filled" in note for note in report.notes):
        assert "452 4.3.1 at mail" in report.inside


async def test_sqlite_read_only_remount_smoke(tmp_path: Path) -> None:
    """The daemon crashes, its database folder is remounted read-only and it is started there:
    nothing is answered 250 until the folder is writable again, then every letter is stored
    once."""
    report = await sqlite_read_only_restart(tmp_path, "", SMOKE)
    if report is None:
        pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)")
    assert report.ok, report.figures()


@pytest.mark.parametrize("name", SCENARIOS)
async def test_smarthost_fault_smoke(tmp_path: Path, db_url: str, name: str) -> None:
    """Smarthost down, answering 4xx or too slow: replies are deferred (never failed or held)
    and each reaches the smarthost after recovery (more than once only when it was too slow to
    answer after keeping the message)."""
    logs.configure("warning")
    report = await smarthost_fault(tmp_path, db_url, SMOKE, name)
    assert report.ok, report.figures()
    assert report.in_window_states["deferred"] + report.in_window_states["active"] > 0


async def test_imap_fault_smoke(tmp_path: Path, db_url: str) -> None:
    """The team mailbox's connection reset or silenced every 0.3 s while mail keeps arriving:
    every message delivered into the mailbox is stored exactly once and processed."""
    if shutil.which("dovecot") is None:
        require_system("dovecot is not installed (Debian: dovecot-core dovecot-imapd)")
    server = Dovecot()
    server.add_users(1)
    try:
        server.start()
        report = await imap_fault(tmp_path, db_url, SMOKE, server)
    finally:
        server.close()
    assert report.ok, report.figures()
    assert sum(report.drops.values()) >= 3
