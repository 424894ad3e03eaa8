"""`[worker] processes`: serve runs its inbound worker in child processes that it wakes on new
mail, reloads on SIGHUP, stops on SIGTERM and restarts when one dies; on both databases."""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.daemon import Daemon, send, wait_processed
from tests.support import make_message, write_config

SLOW_POLL = 30.0


@pytest.fixture
def daemon(tmp_path: Path, db_url: str) -> Iterator[Daemon]:
    """`mailgateway serve` with one worker process that polls only every 30 s."""
    config = write_config(
        tmp_path / "config", db_url, worker={"processes": 1, "poll_interval": SLOW_POLL}
    )
    with Daemon(config, tmp_path / "daemon.log") as running:
        yield running


def worker_pids(daemon: Daemon) -> list[int]:
    """The pids of the worker processes the daemon started, in order."""
    return [int(e["pid"]) for e in daemon.events() if e["event"] == "worker.started"]


def alive(pid: int) -> bool:
    """Whether a process exists (a zombie of ours counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "zombie" not in status


def test_mail_is_stored_by_a_woken_worker_process(daemon: Daemon, db_url: str) -> None:
    """A committed message is stored by the worker process, woken at once (not at its 30 s poll)."""
    daemon.wait_event("worker.started")
    started = time.monotonic()
    assert send(daemon.port, make_message(subject="to the worker process"))[0] == 250
    wait_processed(db_url, 1)
    assert time.monotonic() - started < SLOW_POLL / 3
    [pid] = worker_pids(daemon)
    assert pid != daemon.process.pid
    assert daemon.stop() == 0


def test_worker_process_counts_show_in_the_daemons_metrics(daemon: Daemon, db_url: str) -> None:
    """Messages stored by the worker process are counted in serve's /metrics."""
    daemon.wait_event("worker.started")
    for n in range(2):
        assert send(daemon.port, make_message(subject=f"counted {n}"))[0] == 250
    wait_processed(db_url, 2)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        text = urllib.request.urlopen(daemon.http + "/metrics", timeout=5).read().decode()
        samples = dict(line.split(" ", 1) for line in text.splitlines() if line[:1] not in "#")
        if float(samples.get("mailgateway_inbound_stored_total", 0)) >= 2:
            break
        time.sleep(0.1)
    assert float(samples["mailgateway_inbound_stored_total"]) == 2
    assert float(samples["mailgateway_inbound_processing_seconds_count"]) == 2
    assert daemon.stop() == 0


def test_sighup_reaches_the_worker_process(daemon: Daemon) -> None:
    """SIGHUP to serve reloads the worker process's configuration too."""
    daemon.wait_event("worker.started")
    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_event("worker.reloaded")
    assert daemon.stop() == 0


def test_sigterm_stops_the_worker_process(daemon: Daemon) -> None:
    """SIGTERM to serve stops its worker process cleanly before serve exits 0."""
    daemon.wait_event("worker.started")
    [pid] = worker_pids(daemon)
    assert daemon.stop() == 0
    assert "worker.stopped" in [event["event"] for event in daemon.events()]
    assert not alive(pid)


def test_dead_worker_process_is_restarted(daemon: Daemon, db_url: str) -> None:
    """A worker process that dies is started again, and mail is stored by the new one."""
    daemon.wait_event("worker.started")
    [first] = worker_pids(daemon)
    os.kill(first, signal.SIGKILL)
    daemon.wait_event("worker.started", count=2)
    assert send(daemon.port, make_message(subject="after the restart"))[0] == 250
    wait_processed(db_url, 1)
    assert len(set(worker_pids(daemon))) == 2
    assert daemon.stop() == 0


def test_worker_process_dies_with_serve(daemon: Daemon) -> None:
    """When serve is killed outright, its worker process does not live on."""
    daemon.wait_event("worker.started")
    [pid] = worker_pids(daemon)
    daemon.stop(signal.SIGKILL)
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid)
