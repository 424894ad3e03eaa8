"""systemd's notify protocol: READY, RELOADING, STOPPING, WATCHDOG datagrams on $NOTIFY_SOCKET."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Mapping

from mailgateway.logs import get_logger

log = get_logger(__name__)


def socket_address(value: str) -> str | None:
    """The AF_UNIX address named by $NOTIFY_SOCKET ('@' is the abstract namespace), or None."""
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between keep-alive pings: half of $WATCHDOG_USEC, when it is meant for us."""
    usec = environ.get("WATCHDOG_USEC", "")
    owner = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (owner and owner != str(pid)):
        return None
    return int(usec) / 1_000_000 / 2


class SystemdNotifier:
    """Tells the service manager how the daemon is doing; does nothing outside systemd."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = socket_address(env.get("NOTIFY_SOCKET", ""))
        self.interval = watchdog_interval(env, os.getpid())

    def send(self, *fields: str) -> bool:
        """Send one datagram of KEY=VALUE lines; False when there is no socket or it failed."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as error:
            log.warning("systemd.notify_failed", error=type(error).__name__)
            return False
        return True

    def ready(self, status: str) -> bool:
        """Start-up or reload is complete."""
        return self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> bool:
        """A configuration reload begins (READY follows when it is done)."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading")

    def stopping(self) -> bool:
        """Shutdown begins."""
        return self.send("STOPPING=1", "STATUS=stopping")

    async def keep_alive(self) -> None:
        """Ping the watchdog at half its interval while the event loop runs (no-op without one)."""
        if self.interval is None or self.address is None:
            return
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(self.interval)
