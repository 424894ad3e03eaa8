"""`make demo`: migrate a fresh SQLite db, start the daemon, send sample mail, show the result."""

from __future__ import annotations

import argparse
import json
import os
import signal
import smtplib
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAIL = ROOT / "demo" / "mail"


def mailgateway(*args: str, env: dict[str, str]) -> str:
    """Run one mailgateway command and return its stdout (exit on failure)."""
    done = subprocess.run(
        [sys.executable, "-m", "mailgateway", *args], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.exit(f"demo: `mailgateway {' '.join(args)}` failed: {done.stderr.strip()}")
    return done.stdout


def wait_for_port(host: str, port: int, daemon: subprocess.Popen[bytes]) -> None:
    """Wait until the daemon answers SMTP, or give up after 20 s."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            sys.exit("demo: the daemon exited early; see its log above")
        try:
            with smtplib.SMTP(host, port, timeout=2) as client:
                client.noop()
                return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"demo: nothing answered on {host}:{port}")


def send_samples(host: str, port: int) -> None:
    """Send every sample message through SMTP, as an MTA forward would."""
    with smtplib.SMTP(host, port, timeout=10) as client:
        for path in sorted(MAIL.glob("*.eml")):
            raw = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            to = (
                "sales@acme.inbox.example.net"
                if b"To: sales@" in raw
                else "support@acme.inbox.example.net"
            )
            response = client.sendmail("sender@customer.example", [to], raw)
            print(f"sent {path.name} -> {to}: {response or 'ok'}")


def wait_until_processed(env: dict[str, str]) -> None:
    """Wait until the inbound queue is empty (the worker stored everything)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pending = json.loads(
            mailgateway("queue", "list", "--json", "--config", env["CONFIG"], env=env)
        )
        if not pending:
            return
        time.sleep(0.2)
    sys.exit("demo: the worker did not process the queue in time")


def main() -> None:
    """Run the whole demo and exit 0."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--database", required=True)
    args = parser.parse_args()
    database = Path(args.database).resolve()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    env = {**os.environ, "MAILGATEWAY_DATABASE_URL": f"sqlite:///{database}", "CONFIG": args.config}
    print(mailgateway("check-config", "--config", args.config, env=env).strip())
    print(mailgateway("db", "upgrade", "--config", args.config, env=env).strip())
    print(mailgateway("inboxes", "list", "--config", args.config, env=env))
    daemon = subprocess.Popen(
        [sys.executable, "-m", "mailgateway", "serve", "--config", args.config], env=env
    )
    try:
        wait_for_port("127.0.0.1", 2525, daemon)
        send_samples("127.0.0.1", 2525)
        wait_until_processed(env)
        print(mailgateway("conversations", "list", "--config", args.config, env=env))
        print(mailgateway("conversations", "show", "1", "--config", args.config, env=env))
        with urllib.request.urlopen("http://127.0.0.1:8025/healthz", timeout=10) as health:
            print(f"GET /healthz: {health.status} {health.read().decode()}")
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=30)
    if code != 0:
        sys.exit(f"demo: the daemon exited with {code}")
    print("demo: done (daemon stopped cleanly)")


if __name__ == "__main__":
    main()
