"""Helpers for the IMAP channel tests: configuration with a channel, a running poller, waiting."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from email import message_from_bytes
from pathlib import Path
from typing import Any

from sqlalchemy import select

from mailgateway.config import Config, load_config
from mailgateway.intake.imap import ChannelPoller, poller_specs
from mailgateway.store.channels import ChannelStore, Health
from mailgateway.store.repo import Store, inbound_queue, raw_messages
from tests.dovecot import Account, Dovecot, channel_block
from tests.support import toml_section, write_config

ADDRESS = "help@acme.example"
FAST_IMAP = {"timeout": 5.0, "idle_renew": 30.0, "reconnect_min": 0.1, "reconnect_max": 0.5}


def write_channel_config(
    directory: Path,
    db_url: str,
    server: Dovecot,
    account: Account,
    *,
    imap: dict[str, Any] | None = None,
    **channel: Any,
) -> Path:
    """A configuration folder whose support inbox has one IMAP channel on the test server."""
    write_config(directory, db_url)
    secret = directory / "secrets" / "help"
    secret.parent.mkdir(exist_ok=True)
    secret.write_text(account.password + "\n")
    with (directory / "mailgateway.toml").open("a") as gateway:
        gateway.write(toml_section("imap", {**FAST_IMAP, **(imap or {})}))
    with (directory / "inboxes" / "support.toml").open("a") as inbox:
        inbox.write("\n" + channel_block(server, account, secret, address=ADDRESS, **channel))
    return directory


def poller_for(
    config: Config, store: Store, on_commit: Callable[[], None] = lambda: None
) -> ChannelPoller:
    """The poller the daemon would run for the configuration's one channel."""
    [spec] = poller_specs(config).values()
    return ChannelPoller(store, spec, on_commit)


@contextlib.asynccontextmanager
async def running(poller: ChannelPoller) -> AsyncIterator[ChannelPoller]:
    """The poller running on this loop, cancelled afterwards."""
    task = asyncio.create_task(poller.run())
    try:
        yield poller
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_for(
    check: Callable[[], Awaitable[bool]], timeout: float = 15.0, what: str = "condition"
) -> float:
    """Wait until the check holds; the seconds it took. AssertionError at the timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if await check():
            return time.monotonic() - start
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout} s")


async def imap_rows(store: Store) -> list[Any]:
    """Inbound queue rows that came from IMAP."""
    return [row for row in await store.queue_rows() if row.source == "imap"]


def loaded(directory: Path) -> Config:
    """The configuration in the folder."""
    return load_config(directory)


Check = Callable[[], Awaitable[bool]]


def synced(poller: ChannelPoller) -> Check:
    """A check that the poller completed a pass."""

    async def check() -> bool:
        return poller.passes > 0

    return check


def rows_at_least(store: Store, count: int) -> Check:
    """A check that at least `count` IMAP rows are queued."""

    async def check() -> bool:
        return len(await imap_rows(store)) >= count

    return check


async def imap_subjects(store: Store) -> list[str]:
    """The Subject of every queued IMAP message, in queue order (one entry per queue row)."""
    async with store.engine.connect() as connection:
        result = await connection.execute(
            select(raw_messages.c.data)
            .join(inbound_queue, inbound_queue.c.raw_id == raw_messages.c.id)
            .where(inbound_queue.c.source == "imap")
            .order_by(inbound_queue.c.id)
        )
        return [str(message_from_bytes(data)["Subject"]) for data in result.scalars()]


async def health_of(store: Store, address: str = ADDRESS) -> Health:
    """The channel's recorded health."""
    return (await ChannelStore(store).health())[address]


class TcpProxy:
    """A TCP relay to a local port whose connections can be cut (RST) or frozen (kept open,
    nothing relayed any more), to play a broken network."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.server: asyncio.Server | None = None
        self.pipes: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter, asyncio.Event]] = []
        self.frozen: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter, asyncio.Event]] = []

    async def __aenter__(self) -> TcpProxy:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        self._abort(self.frozen)
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Relay one client connection both ways until it is cut or frozen."""
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        frozen = asyncio.Event()
        self.pipes.append((writer, up_writer, frozen))
        await asyncio.gather(
            self._pump(reader, up_writer, frozen),
            self._pump(up_reader, writer, frozen),
            return_exceptions=True,
        )

    @staticmethod
    async def _pump(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, frozen: asyncio.Event
    ) -> None:
        """Copy bytes one way; once frozen, swallow them."""
        while data := await reader.read(65536):
            if not frozen.is_set():
                writer.write(data)
                await writer.drain()

    def cut(self) -> None:
        """Reset every open connection (no BYE, no FIN)."""
        self._abort(self.pipes)

    def freeze(self) -> None:
        """Let every open connection go silent; new connections relay normally."""
        for _client, _upstream, frozen in self.pipes:
            frozen.set()
        self.frozen += self.pipes
        self.pipes = []

    @staticmethod
    def _abort(
        pipes: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter, asyncio.Event]],
    ) -> None:
        """Reset both ends of these connections."""
        for client, upstream, _frozen in pipes:
            for writer in (client, upstream):
                writer.transport.abort()
        pipes.clear()
