"""The daemon under a service manager: sd_notify READY/RELOADING/STOPPING/WATCHDOG over a real
socket, and SIGHUP reloads that rename inboxes without dropping SMTP sessions."""

from __future__ import annotations

import json
import signal
import smtplib
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.daemon import Daemon, send
from tests.support import SALES, SUPPORT, make_message

BILLING = "billing@acme.inbox.example.net"


class NotifyListener:
    """A datagram socket in the abstract namespace standing in for systemd's notify socket."""

    def __init__(self) -> None:
        self.name = f"@mailgateway-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name[1:])
        self.received: list[dict[str, str]] = []

    def wait_for(self, key: str, count: int = 1, timeout: float = 15.0) -> list[dict[str, str]]:
        """Read datagrams until `count` of them carry the key; every datagram read so far."""
        deadline = time.monotonic() + timeout
        while sum(key in message for message in self.received) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {key} in {self.received}")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            fields = (line.partition("=") for line in data.decode().splitlines())
            self.received.append({k: v for k, _, v in fields})
        return self.received

    def close(self) -> None:
        """Release the socket."""
        self.sock.close()


@pytest.fixture
def notify() -> Iterator[NotifyListener]:
    """A notify socket for one test."""
    listener = NotifyListener()
    yield listener
    listener.close()


def kinds(messages: list[dict[str, str]]) -> list[str]:
    """The state each datagram announced, in order (watchdog pings left out)."""
    states = ("READY", "RELOADING", "STOPPING")
    return [next(s for s in states if s in m) for m in messages if any(s in m for s in states)]


def cli(config_dir: Path, *args: str) -> str:
    """Run a mailgateway command and return its stdout (it must succeed)."""
    done = subprocess.run(
        [sys.executable, "-m", "mailgateway", *args, "--config", str(config_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def api_get(daemon: Daemon, path: str, token: str) -> Any:
    """GET an API path from the daemon and decode the JSON."""
    request = urllib.request.Request(
        daemon.http + path, headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_notify_ready_reloading_stopping(
    config_dir: Path, tmp_path: Path, notify: NotifyListener
) -> None:
    """The daemon says READY once listening, RELOADING then READY around each SIGHUP (a
    refused configuration too), and STOPPING on SIGTERM."""
    with Daemon(config_dir, tmp_path / "daemon.log", {"NOTIFY_SOCKET": notify.name}) as daemon:
        notify.wait_for("READY")
        assert send(daemon.port, make_message())[0] == 250
        daemon.process.send_signal(signal.SIGHUP)
        notify.wait_for("READY", 2)
        (config_dir / "inboxes" / "broken.toml").write_text('nmae = "typo"\n')
        daemon.process.send_signal(signal.SIGHUP)
        messages = notify.wait_for("READY", 3)
        assert daemon.stop() == 0
        messages = notify.wait_for("STOPPING")
        assert kinds(messages) == ["READY", "RELOADING", "READY", "RELOADING", "READY", "STOPPING"]
        reloading = [m for m in messages if "RELOADING" in m]
        assert all(m["MONOTONIC_USEC"].isdigit() for m in reloading)
        assert "config.reload_refused" in [event["event"] for event in daemon.events()]


def test_watchdog_pinged_at_half_the_interval(
    config_dir: Path, tmp_path: Path, notify: NotifyListener
) -> None:
    """With WATCHDOG_USEC set, WATCHDOG=1 arrives about every half interval while running."""
    with Daemon(
        config_dir,
        tmp_path / "daemon.log",
        {"NOTIFY_SOCKET": notify.name, "WATCHDOG_USEC": "400000"},
    ) as daemon:
        notify.wait_for("READY")
        started = time.monotonic()
        messages = notify.wait_for("WATCHDOG", 8)
        elapsed = time.monotonic() - started
        assert daemon.stop() == 0
        assert sum("WATCHDOG" in m for m in messages) >= 8
        assert 0.8 < elapsed < 4.0


def test_no_watchdog_pings_meant_for_another_process(
    config_dir: Path, tmp_path: Path, notify: NotifyListener
) -> None:
    """WATCHDOG_PID naming another process means the watchdog is not ours: no pings."""
    with Daemon(
        config_dir,
        tmp_path / "daemon.log",
        {"NOTIFY_SOCKET": notify.name, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"},
    ) as daemon:
        notify.wait_for("READY")
        time.sleep(1.0)
        assert daemon.stop() == 0
        messages = notify.wait_for("STOPPING")
        assert not any("WATCHDOG" in m for m in messages)


def test_sighup_renames_an_inbox(config_dir: Path, tmp_path: Path) -> None:
    """`inboxes rename` and SIGHUP: the API shows the new name, and mail to the unchanged
    address keeps landing in the same inbox."""
    with Daemon(config_dir, tmp_path / "daemon.log") as daemon:
        token = cli(config_dir, "tokens", "create", "alice").strip()
        names = {i["slug"]: i["name"] for i in api_get(daemon, "/api/v1/inboxes", token)["inboxes"]}
        assert names["sales"] == "Sales"
        assert send(daemon.port, make_message(subject="before rename"), SALES)[0] == 250
        cli(config_dir, "inboxes", "rename", "sales", "Sales Team")
        daemon.process.send_signal(signal.SIGHUP)
        daemon.wait_event("config.reloaded")
        names = {i["slug"]: i["name"] for i in api_get(daemon, "/api/v1/inboxes", token)["inboxes"]}
        assert names["sales"] == "Sales Team"
        assert send(daemon.port, make_message(subject="after rename"), SALES)[0] == 250
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = api_get(daemon, "/api/v1/conversations?inbox=sales", token)["conversations"]
            if len(found) == 2:
                break
            time.sleep(0.1)
        assert daemon.stop() == 0
        assert sorted(c["subject"] for c in found) == ["after rename", "before rename"]


def test_sighup_keeps_sessions_in_progress(config_dir: Path, tmp_path: Path) -> None:
    """A session open across a reload (mid-transaction) finishes with 250, and its next
    transaction already sees the inbox the reload added."""
    with Daemon(config_dir, tmp_path / "daemon.log") as daemon:
        with smtplib.SMTP("127.0.0.1", daemon.port, timeout=10) as client:
            client.ehlo("client.test")
            client.mail("john@customer.test")
            assert client.rcpt(SUPPORT)[0] == 250
            (config_dir / "inboxes" / "billing.toml").write_text('name = "Billing"\n')
            daemon.process.send_signal(signal.SIGHUP)
            daemon.wait_event("config.reloaded")
            assert client.data(make_message(subject="across the reload"))[0] == 250
            client.mail("john@customer.test")
            assert client.rcpt(BILLING)[0] == 250
            assert client.data(make_message(subject="new inbox", to=BILLING))[0] == 250
        assert daemon.stop() == 0
        accepted = [e for e in daemon.events() if e["event"] == "message.accepted"]
        assert [e["inboxes"] for e in accepted] == ["support", "billing"]
