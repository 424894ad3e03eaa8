"""The fault campaign's outbound half: replies queued while the smarthost is down, answering 4xx
or too slow; none may fail or be held, and each must reach the smarthost once it recovers."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from email import message_from_bytes
from pathlib import Path
from typing import Any

import aiosmtplib

from mailgateway import replies
from mailgateway.app import Gateway
from mailgateway.config import load_config
from mailgateway.store.outbound import OutboundStore
from tests.campaigns.crash import free_port
from tests.campaigns.faults import Timing, drain_worker
from tests.campaigns.mta import make_letter
from tests.outbound_support import SmtpSink, sending_config
from tests.support import SUPPORT, port_of, running_gateway

OUTBOUND_TIMEOUT = 1.0


@dataclass
class SmarthostReport:
    """What became of the replies queued around the fault windows."""

    name: str
    windows: int = 0
    queued: int = 0
    in_window_states: Counter[str] = field(default_factory=Counter)
    final_states: Counter[str] = field(default_factory=Counter)
    attempts: Counter[int] = field(default_factory=Counter)
    delivered_once: int = 0
    delivered_twice_or_more: int = 0
    missing: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Nothing failed or held, every reply delivered; duplicates only where the smarthost
        was too slow to answer (it kept the message, the worker timed out and sent it again)."""
        duplicates_allowed = self.name == "smarthost-slow"
        return (
            self.queued > 0
            and set(self.final_states) == {"sent"}
            and not {"failed", "held"} & set(self.in_window_states)
            and self.missing == 0
            and (duplicates_allowed or self.delivered_twice_or_more == 0)
        )

    def figures(self) -> dict[str, Any]:
        """The report as JSON-ready figures."""
        return {
            "fault": self.name,
            "windows": self.windows,
            "replies_queued": self.queued,
            "states_at_window_end": dict(self.in_window_states),
            "final_states": dict(self.final_states),
            "attempts": {str(k): v for k, v in sorted(self.attempts.items())},
            "delivered_once": self.delivered_once,
            "delivered_more_than_once": self.delivered_twice_or_more,
            "missing": self.missing,
            "seconds": round(self.seconds, 1),
            "ok": self.ok,
        }


class SlowSink(SmtpSink):
    """The recording sink, which can be made to keep the message and then wait before its 250
    (longer than the gateway's outbound timeout) or answer 451 to every DATA."""

    delay: float = 0.0
    refuse: bool = False

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """451 when refusing; else keep the message, then wait before answering."""
        if self.refuse:
            self.data_attempts += 1
            return "451 4.3.0 Smarthost busy, try again later"
        reply = await super().handle_DATA(server, session, envelope)
        await asyncio.sleep(self.delay)
        return reply


class Smarthost:
    """The sink on a fixed port that can be taken down (connections refused) and brought back."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sink = SlowSink()
        self.server: asyncio.Server | None = None

    async def up(self) -> None:
        """Listen on the port."""
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self.sink.protocol, "127.0.0.1", self.port)

    async def down(self) -> None:
        """Stop listening: connections are refused."""
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None


@dataclass
class SmarthostFault:
    """One way the smarthost misbehaves."""

    smarthost: Smarthost
    name: str

    async def inject(self) -> None:
        """Misbehave."""
        if self.name == "smarthost-down":
            await self.smarthost.down()
        elif self.name == "smarthost-slow":
            self.smarthost.sink.delay = OUTBOUND_TIMEOUT * 2
        else:
            self.smarthost.sink.refuse = True

    async def lift(self) -> None:
        """Behave again."""
        if self.name == "smarthost-down":
            await self.smarthost.up()
        self.smarthost.sink.delay = 0.0
        self.smarthost.sink.refuse = False


async def conversations(gateway: Gateway, count: int) -> list[int]:
    """Conversations to reply to: customers' letters sent in over SMTP and processed."""
    rng = random.Random(7)
    for number in range(count):
        letter = make_letter("customer", number, rng)
        await aiosmtplib.send(
            letter.raw,
            sender="mta@customer.test",
            recipients=[SUPPORT],
            hostname="127.0.0.1",
            port=port_of(gateway),
            start_tls=False,
        )
    await drain_worker(gateway, 30)
    rows = await gateway.store.conversation_rows(inbox="support")
    return [int(row.id) for row in rows]


def delivered_ids(smarthost: Smarthost) -> Counter[str]:
    """How often each Message-ID reached the smarthost."""
    return Counter(
        str(message_from_bytes(received.data)["Message-ID"]) for received in smarthost.sink.messages
    )


async def smarthost_fault(workdir: Path, url: str, timing: Timing, name: str) -> SmarthostReport:
    """Queue replies steadily while the smarthost misbehaves; then wait until all are sent."""
    started = time.monotonic()
    smarthost = Smarthost(free_port())
    await smarthost.up()
    config_dir = sending_config(
        workdir / name, url, smarthost.port, dkim=False, timeout=OUTBOUND_TIMEOUT
    )
    config = load_config(config_dir)
    report = SmarthostReport(name, windows=timing.windows)
    fault = SmarthostFault(smarthost, name)
    message_ids: list[str] = []
    try:
        async with running_gateway(config_dir) as gateway:
            targets = await conversations(gateway, 5)
            outbound = OutboundStore(gateway.store.engine)

            async def reply_for(seconds: float) -> None:
                """Queue a reply every 0.1 s for that long, as agents would."""
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline:
                    request = replies.ReplyRequest(
                        targets[len(message_ids) % len(targets)], "alice", "We are on it."
                    )
                    queued = await replies.queue_reply(config, gateway.store, request)
                    message_ids.append(queued.message_id)
                    assert gateway.outbound is not None
                    gateway.outbound.wake()
                    await asyncio.sleep(0.1)

            for _ in range(timing.windows):
                await reply_for(timing.before)
                await fault.inject()
                await reply_for(timing.window)
                report.in_window_states += Counter(row.state for row in await outbound.rows())
                await fault.lift()
            await reply_for(timing.after)
            await _sent(outbound, timing.drain_timeout)
            rows = await outbound.rows()
            report.final_states = Counter(row.state for row in rows)
            report.attempts = Counter(int(row.attempts) for row in rows)
    finally:
        await smarthost.down()
    report.queued = len(message_ids)
    counts = delivered_ids(smarthost)
    report.delivered_once = sum(1 for mid in message_ids if counts[mid] == 1)
    report.delivered_twice_or_more = sum(1 for mid in message_ids if counts[mid] > 1)
    report.missing = sum(1 for mid in message_ids if counts[mid] == 0)
    report.seconds = time.monotonic() - started
    return report


async def _sent(outbound: OutboundStore, timeout: float) -> None:
    """Wait until no outbound row is queued, active or deferred."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not await outbound.rows(["queued", "active", "deferred"]):
            return
        await asyncio.sleep(0.2)


SCENARIOS = ("smarthost-down", "smarthost-slow", "smarthost-4xx")
