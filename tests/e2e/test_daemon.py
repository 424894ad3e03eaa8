"""The daemon as a process: SIGKILL right after 250 loses nothing, SIGTERM stops cleanly."""

from __future__ import annotations

import json
import signal
import smtplib
from pathlib import Path

from tests.e2e.daemon import Daemon, rows, send, wait_processed
from tests.support import SUPPORT, make_message


def test_sigkill_right_after_250_keeps_message(
    config_dir: Path, db_url: str, tmp_path: Path
) -> None:
    """A message answered 250 is in the database after SIGKILL, and is processed after restart."""
    with Daemon(config_dir, tmp_path / "daemon.log") as daemon:
        code, text = send(daemon.port, make_message(subject="survives kill -9"))
        daemon.process.kill()
        daemon.process.wait(timeout=10)
    assert code == 250
    queue_id = int(text.rsplit(" ", 1)[1])
    assert [row.id for row in rows(db_url)] == [queue_id]
    with Daemon(config_dir, tmp_path / "daemon2.log") as restarted:
        wait_processed(db_url, 1)
        assert restarted.stop() == 0


def test_sigterm_finishes_and_exits_zero(config_dir: Path, db_url: str, tmp_path: Path) -> None:
    """SIGTERM stops intake, finishes in-flight work and exits 0; every accepted message stays."""
    with Daemon(config_dir, tmp_path / "daemon.log") as daemon:
        accepted = [send(daemon.port, make_message(subject=f"m{n}")) for n in range(10)]
        assert all(code == 250 for code, _ in accepted)
        assert daemon.stop() == 0
        assert len(rows(db_url)) == 10
        assert {row.state for row in rows(db_url)} <= {"queued", "done"}
        assert "gateway.stopped" in [event["event"] for event in daemon.events()]
        try:
            send(daemon.port, make_message())
            raise AssertionError("a stopped daemon accepted mail")
        except OSError:
            pass


def test_log_is_one_json_event_per_line(config_dir: Path, tmp_path: Path) -> None:
    """Row 49: hostile envelope values (ANSI escapes, long strings) stay one escaped JSON line."""
    with Daemon(config_dir, tmp_path / "daemon.log") as daemon:
        with smtplib.SMTP("127.0.0.1", daemon.port, timeout=10) as client:
            client.ehlo("client.test")
            client.mail("\x1b[31mred" + "x" * 150 + "@customer.test")
            client.rcpt(SUPPORT)
            client.data(make_message(subject="=?utf-8?q?a=0D=0AInjected:_yes?="))
        assert daemon.stop() == 0
        text = daemon.log.read_text()
        assert "\x1b" not in text
        for line in text.splitlines():
            event = json.loads(line)
            assert isinstance(event, dict) and "event" in event
        accepted = [e for e in daemon.events() if e["event"] == "message.accepted"]
        assert len(accepted) == 1 and accepted[0]["mail_from"].startswith("\x1b")


def test_sighup_reloads_and_refuses_invalid(config_dir: Path, tmp_path: Path) -> None:
    """SIGHUP picks up a new inbox; an invalid configuration is refused and the old one stays."""
    billing = "billing@acme.inbox.example.net"
    with Daemon(config_dir, tmp_path / "daemon.log") as daemon:
        assert send(daemon.port, make_message(), billing)[0] == 550
        (config_dir / "inboxes" / "billing.toml").write_text('name = "Billing"\n')
        daemon.process.send_signal(signal.SIGHUP)
        daemon.wait_event("config.reloaded")
        assert send(daemon.port, make_message(subject="after reload"), billing)[0] == 250
        (config_dir / "inboxes" / "broken.toml").write_text('nmae = "typo"\n')
        daemon.process.send_signal(signal.SIGHUP)
        daemon.wait_event("config.reload_refused")
        assert send(daemon.port, make_message(subject="old config stays"), billing)[0] == 250
        refused = [e for e in daemon.events() if e["event"] == "config.reload_refused"]
        assert "inboxes/broken.toml" in refused[0]["error"]
        assert daemon.stop() == 0
