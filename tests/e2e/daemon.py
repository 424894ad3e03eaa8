"""`mailgateway serve` as a child process for tests: its JSON log (stdout) and its SMTP port."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import smtplib
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mailgateway.store.db import create_engine
from mailgateway.store.repo import Store
from tests.support import SUPPORT

DAEMON_START = 30.0
INHERITED_NOT = {"MAILGATEWAY_DATABASE_URL", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"}


class Daemon:
    """`mailgateway serve` in a child process: its JSON log (stdout) in a file, stderr beside it."""

    def __init__(
        self, config_dir: Path, log: Path, environ: Mapping[str, str] | None = None
    ) -> None:
        self.log = log
        self.handle = log.open("ab")
        self.errors = log.with_suffix(".stderr").open("ab")
        env = {k: v for k, v in os.environ.items() if k not in INHERITED_NOT}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mailgateway", "serve", "--config", str(config_dir)],
            stdout=self.handle,
            stderr=self.errors,
            env={**env, **(environ or {})},
        )
        try:
            started = self._wait_started()
        except AssertionError:
            self.__exit__()
            raise
        self.port = int(started["listen"].split(",")[0].rsplit(":", 1)[1])
        self.http = f"http://{started['http']}"

    def __enter__(self) -> Daemon:
        """Use as a context: the process never outlives the test."""
        return self

    def __exit__(self, *_exc: object) -> None:
        """Kill the daemon if the test did not stop it (a failed assertion, say)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self.handle.close()
        self.errors.close()

    def events(self) -> list[dict[str, Any]]:
        """The log's JSON events so far."""
        lines = self.log.read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def _wait_started(self) -> dict[str, Any]:
        """The gateway.started event, once the daemon logs that it listens."""
        deadline = time.monotonic() + DAEMON_START
        while time.monotonic() < deadline:
            for event in self.events():
                if event.get("event") == "gateway.started":
                    return event
            if self.process.poll() is not None:
                stderr = self.log.with_suffix(".stderr").read_text()
                raise AssertionError(f"daemon exited: {self.log.read_text()} {stderr}")
            time.sleep(0.05)
        raise AssertionError("daemon did not start")

    def wait_event(self, name: str, count: int = 1) -> None:
        """Wait until the log holds `count` events of that name."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if sum(event["event"] == name for event in self.events()) >= count:
                return
            time.sleep(0.05)
        raise AssertionError(f"no {name} event in {self.log.read_text()}")

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Send a signal and wait for the exit status."""
        self.process.send_signal(signum)
        code = self.process.wait(timeout=30)
        self.handle.close()
        self.errors.close()
        return code


def send(port: int, raw: bytes, rcpt: str = SUPPORT) -> tuple[int, str]:
    """One message over SMTP; the reply to the final dot (or to RCPT when refused there)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("client.test")
        client.mail("john@customer.test")
        code, text = client.rcpt(rcpt)
        if code != 250:
            return code, text.decode()
        code, text = client.data(raw)
        return code, text.decode()


def rows(db_url: str) -> list[Any]:
    """Every inbound queue row in the database."""

    async def read() -> list[Any]:
        store = Store(create_engine(db_url))
        try:
            return await store.queue_rows()
        finally:
            await store.close()

    return asyncio.run(read())


def wait_processed(db_url: str, count: int) -> None:
    """Wait until `count` rows are done."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if sum(row.state == "done" for row in rows(db_url)) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"not processed: {[row.state for row in rows(db_url)]}")
