"""The fault campaign's IMAP half: mail keeps arriving in a team mailbox while the connection to
the IMAP server is reset or goes silent again and again; every message must be stored once."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from email import message_from_bytes
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from mailgateway.store.repo import inbound_queue, messages, raw_messages
from tests.campaigns.faults import Timing, drain_worker
from tests.campaigns.mta import make_letter
from tests.dovecot import Dovecot
from tests.e2e.imap_support import TcpProxy, write_channel_config
from tests.support import running_gateway


@dataclass
class ImapReport:
    """What reached the gateway of the mail delivered into the mailbox."""

    name: str = "imap-connection-dropped"
    windows: int = 0
    drops: Counter[str] = field(default_factory=Counter)
    delivered: int = 0
    stored_once: int = 0
    missing: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    processed: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Every delivered message queued exactly once and processed."""
        return (
            self.delivered > 0
            and not self.missing
            and not self.duplicated
            and self.processed == self.delivered
        )

    def figures(self) -> dict[str, Any]:
        """The report as JSON-ready figures."""
        return {
            "fault": self.name,
            "windows": self.windows,
            "connection_drops": dict(self.drops),
            "delivered_to_mailbox": self.delivered,
            "stored_once": self.stored_once,
            "missing": len(self.missing),
            "duplicated": len(self.duplicated),
            "processed": self.processed,
            "examples": (self.missing + self.duplicated)[:5],
            "seconds": round(self.seconds, 1),
            "ok": self.ok,
        }


async def imap_fault(workdir: Path, url: str, timing: Timing, server: Dovecot) -> ImapReport:
    """Deliver unique messages into a mailbox every 50 ms while, in each window, the relay
    between the gateway's poller and the server resets every connection (no BYE) or lets it go
    silent, every 0.3 s; then wait until everything arrived and count."""
    started = time.monotonic()
    report = ImapReport(windows=timing.windows)
    account = server.account()
    delivered: list[str] = []
    rng = random.Random(9)
    async with TcpProxy(server.port) as proxy:
        config_dir = write_channel_config(
            workdir / "imap",
            url,
            server,
            account,
            port=proxy.port,
            imap={"timeout": 1.0, "idle_renew": 1.0},
        )

        async def deliver(seconds: float) -> None:
            """Put new mail into the mailbox for that long (straight into Dovecot)."""
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                letter = make_letter("imap", len(delivered), rng)
                await asyncio.to_thread(server.append, account, letter.raw)
                delivered.append(letter.message_id)
                await asyncio.sleep(0.05)

        async def break_connections(seconds: float) -> None:
            """Reset or freeze the poller's connections every 0.3 s for that long."""
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                how = rng.choice(("reset", "silence"))
                proxy.cut() if how == "reset" else proxy.freeze()
                report.drops[how] += 1
                await asyncio.sleep(0.3)

        async with running_gateway(config_dir) as gateway:
            for _ in range(timing.windows):
                await deliver(timing.before)
                await asyncio.gather(deliver(timing.window), break_connections(timing.window))
            await deliver(timing.after)
            await _arrived(gateway.store.engine, len(delivered), timing.drain_timeout)
            await drain_worker(gateway, timing.drain_timeout)
            counts, report.processed = await _stored(gateway.store.engine)
    report.delivered = len(delivered)
    report.stored_once = sum(1 for mid in delivered if counts[mid] == 1)
    report.missing = [mid for mid in delivered if counts[mid] == 0]
    report.duplicated = [mid for mid in delivered if counts[mid] > 1]
    report.seconds = time.monotonic() - started
    return report


async def _arrived(engine: Any, count: int, timeout: float) -> None:
    """Wait until that many IMAP rows are queued."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with engine.connect() as connection:
            found = await connection.scalar(
                select(func.count()).where(inbound_queue.c.source == "imap")
            )
        if found >= count:
            return
        await asyncio.sleep(0.2)


async def _stored(engine: Any) -> tuple[Counter[str], int]:
    """Queue rows per Message-ID of the IMAP mail, and how many became stored messages."""
    async with engine.connect() as connection:
        result = await connection.execute(
            select(raw_messages.c.data)
            .join(inbound_queue, inbound_queue.c.raw_id == raw_messages.c.id)
            .where(inbound_queue.c.source == "imap")
        )
        counts = Counter(str(message_from_bytes(data)["Message-ID"]) for data in result.scalars())
        processed = await connection.scalar(
            select(func.count())
            .select_from(messages.join(inbound_queue, inbound_queue.c.id == messages.c.queue_id))
            .where(inbound_queue.c.source == "imap")
        )
    return counts, int(processed or 0)
