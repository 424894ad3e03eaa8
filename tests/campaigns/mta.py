"""An MTA-like sender for the campaigns: unique letters, a ledger of every reply, retries to 250."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import aiosmtplib

from tests.support import SALES, SUPPORT

MTA_SENDER = "mta@customer.test"
INBOX_OF = {SUPPORT: "support", SALES: "sales"}


@dataclass(frozen=True)
class Letter:
    """One unique message and where it goes."""

    key: str
    raw: bytes
    rcpts: tuple[str, ...]

    @property
    def digest(self) -> str:
        """The key the gateway stores the bytes under."""
        return hashlib.sha256(self.raw).hexdigest()

    @property
    def inboxes(self) -> tuple[str, ...]:
        """The inboxes its recipients are."""
        return tuple(INBOX_OF[rcpt] for rcpt in self.rcpts)

    @property
    def message_id(self) -> str:
        """Its Message-ID, as the parser normalises it."""
        return f"<{self.key}@customer.test>"


def make_letter(tag: str, number: int, rng: random.Random) -> Letter:
    """A unique letter: mostly small, some tens of KB, a few over 60 KB; one in ten goes to two
    inboxes."""
    key = f"{tag}-{number}"
    roll = rng.random()
    lines = 3 if roll < 0.88 else rng.randint(100, 400) if roll < 0.98 else rng.randint(800, 1500)
    body = "".join(
        f"{key} line {n}: {rng.getrandbits(64):016x} lorem ipsum\r\n" for n in range(lines)
    )
    person = number % 40
    raw = (
        f"From: Customer {person} <c{person}@customer.test>\r\n"
        f"To: {SUPPORT}\r\n"
        f"Subject: {key} about order {rng.randint(1, 10**6)}\r\n"
        "Date: Thu, 26 Nov 2026 10:00:00 +0000\r\n"
        f"Message-ID: <{key}@customer.test>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        f"{body}"
    ).encode()
    rcpts = (SUPPORT, SALES) if rng.random() < 0.1 else (SUPPORT,)
    return Letter(key, raw, rcpts)


@dataclass(frozen=True)
class Reply:
    """One answer the sender got (code 0: the connection broke before an answer)."""

    key: str
    stage: str
    code: int
    text: str
    started: float
    ended: float
    connected: float = 0.0  # when the session's connection was opened

    @property
    def kind(self) -> str:
        """2xx, 4xx, 5xx, 'connection refused' or 'no reply' (broken mid-transaction)."""
        if self.code:
            return f"{self.code // 100}xx"
        return "connection refused" if self.stage == "connect" else "no reply"


@dataclass
class Ledger:
    """What was sent and what the gateway said about it."""

    letters: dict[str, Letter] = field(default_factory=dict)
    acks: dict[str, list[str]] = field(default_factory=dict)
    replies: list[Reply] = field(default_factory=list)

    def classes(self) -> Counter[str]:
        """How many replies of each class."""
        return Counter(reply.kind for reply in self.replies)

    @property
    def acknowledged(self) -> list[Letter]:
        """The letters that got a 250."""
        return [self.letters[key] for key in self.acks]

    @property
    def unacknowledged(self) -> list[Letter]:
        """Letters sent at least once without a 250 yet."""
        return [letter for key, letter in self.letters.items() if key not in self.acks]


class Sessions:
    """Concurrent SMTP sessions that each send unique letters one after the other and, like an
    MTA, retry a letter (same bytes) after any 4xx or broken connection until it gets a 250."""

    def __init__(
        self,
        port: int,
        ledger: Ledger,
        letters: Callable[[], Letter],
        *,
        sessions: int = 10,
        pause: float = 0.01,
        retry_delay: float = 0.05,
        timeout: float = 30.0,
    ) -> None:
        self.port = port
        self.ledger = ledger
        self.letters = letters
        self.count = sessions
        self.pause = pause
        self.retry_delay = retry_delay
        self.timeout = timeout
        self.stopping = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Open the sessions."""
        self.tasks = [asyncio.create_task(self._session()) for _ in range(self.count)]

    async def stop(self, deadline: float = 120.0) -> None:
        """Stop taking new letters; wait until every session's letter in hand has its 250."""
        self.stopping.set()
        async with asyncio.timeout(deadline):
            await asyncio.gather(*self.tasks)

    async def _session(self) -> None:
        """Send until stopped, then finish the letter in hand."""
        pending: Letter | None = None
        while pending is not None or not self.stopping.is_set():
            if pending is None:
                pending = self.letters()
                self.ledger.letters[pending.key] = pending
            client = aiosmtplib.SMTP(
                hostname="127.0.0.1", port=self.port, timeout=self.timeout, start_tls=False
            )
            started = time.monotonic()
            try:
                await client.connect()
            except (OSError, aiosmtplib.SMTPException) as error:
                self._record(pending, "connect", 0, type(error).__name__, started)
                await asyncio.sleep(self.retry_delay)
                continue
            connected = time.monotonic()
            try:
                while pending is not None and await self._deliver(client, pending, connected):
                    pending = None
                    if not self.stopping.is_set():
                        await asyncio.sleep(random.uniform(0, self.pause))
                        pending = self.letters()
                        self.ledger.letters[pending.key] = pending
            finally:
                client.close()
            if pending is not None:
                await asyncio.sleep(self.retry_delay)

    async def _deliver(self, client: aiosmtplib.SMTP, letter: Letter, connected: float) -> bool:
        """One transaction; True on 250. Every answer (or broken connection) is recorded."""
        started, stage = time.monotonic(), "mail"
        try:
            await client.mail(MTA_SENDER)
            stage = "rcpt"
            for rcpt in letter.rcpts:
                await client.rcpt(rcpt)
            stage = "data"
            response = await client.data(letter.raw)
        except aiosmtplib.SMTPResponseException as error:
            self._record(letter, stage, error.code, error.message, started, connected)
            return False
        except (aiosmtplib.SMTPException, OSError) as error:
            self._record(letter, stage, 0, type(error).__name__, started, connected)
            return False
        self._record(letter, stage, response.code, response.message, started, connected)
        if response.code != 250:
            return False
        self.ledger.acks.setdefault(letter.key, []).append(response.message.rsplit(" as ", 1)[-1])
        return True

    def _record(
        self,
        letter: Letter,
        stage: str,
        code: int,
        text: str,
        started: float,
        connected: float | None = None,
    ) -> None:
        """Note one answer in the ledger."""
        opened = started if connected is None else connected
        self.ledger.replies.append(
            Reply(letter.key, stage, code, text, started, time.monotonic(), opened)
        )
