"""A hostile IMAP server (RELIABILITY row 60): a literal announced far over the size limit
drops the connection before it is buffered; nothing is stored, the health says why."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from mailgateway.domain import ChannelState
from mailgateway.store.repo import Store
from tests.e2e.imap_support import health_of, imap_rows, loaded, poller_for, running, wait_for
from tests.support import toml_section, write_config

HUGE = 99_999_999_999
CHUNK = b"x" * 65536


class LiteralBomb:
    """A scripted IMAP server that answers the body fetch with a literal of HUGE bytes and
    streams junk until the client hangs up."""

    def __init__(self) -> None:
        self.sent = 0
        self.dropped = asyncio.Event()
        self.port = 0

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[LiteralBomb]:
        """Listen on a free 127.0.0.1 port while in the block."""
        server = await asyncio.start_server(self.session, "127.0.0.1", 0)
        self.port = int(server.sockets[0].getsockname()[1])
        try:
            yield self
        finally:
            server.close()
            await server.wait_closed()

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer one client until it goes away."""
        writer.write(b"* OK [CAPABILITY IMAP4rev1] ready\r\n")
        try:
            while line := await reader.readline():
                tag, _, rest = line.decode().strip().partition(" ")
                writer.write(self.answer(tag, rest.upper()))
                if "BODY.PEEK[]" in rest.upper():
                    await self.flood(writer)
                    return
                await writer.drain()
        except ConnectionError:
            self.dropped.set()
        finally:
            writer.close()

    @staticmethod
    def answer(tag: str, command: str) -> bytes:
        """The scripted reply to one command."""
        if command.startswith(("CAPABILITY", "LOGIN")):
            return f"* CAPABILITY IMAP4rev1\r\n{tag} OK done\r\n".encode()
        if command.startswith("SELECT"):
            return (
                f"* 1 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT 2] ok\r\n"
                f"{tag} OK [READ-WRITE] done\r\n"
            ).encode()
        if command.startswith("UID SEARCH"):
            return f"* SEARCH 1\r\n{tag} OK done\r\n".encode()
        if "RFC822.SIZE" in command:
            return (
                f'* 1 FETCH (UID 1 FLAGS () INTERNALDATE "27-Nov-2026 10:00:00 +0000" '
                f"RFC822.SIZE 120)\r\n{tag} OK done\r\n"
            ).encode()
        if "BODY.PEEK[]" in command:
            return f"* 1 FETCH (UID 1 BODY[] {{{HUGE}}}\r\n".encode()
        return f"{tag} OK done\r\n".encode()

    async def flood(self, writer: asyncio.StreamWriter) -> None:
        """Stream junk as the literal's content until the connection breaks."""
        try:
            while self.sent < 2**30:
                writer.write(CHUNK)
                await writer.drain()
                self.sent += len(CHUNK)
        except ConnectionError:
            self.dropped.set()


async def test_huge_literal_drops_the_connection(tmp_path: Path, db_url: str, store: Store) -> None:
    """Row 60: a server announcing a 93 GB literal is hung up on at once (well under a
    megabyte-scale buffer, not the whole literal); nothing is stored and the channel's last
    error names the oversized literal."""
    directory = write_config(tmp_path / "c", db_url)
    secret = directory / "secret"
    secret.write_text("pw")
    bomb = LiteralBomb()
    async with bomb.serving():
        with (directory / "mailgateway.toml").open("a") as gateway:
            gateway.write(toml_section("imap", {"timeout": 5.0, "reconnect_min": 5.0}))
        server = (
            f'{{ host = "127.0.0.1", port = {bomb.port}, tls = "none", user = "help", '
            f'password_file = "{secret}" }}'
        )
        with (directory / "inboxes" / "support.toml").open("a") as inbox:
            inbox.write(
                f'\n[[channels]]\naddress = "help@acme.example"\nimap = {server}\nsmtp = {server}\n'
            )
        async with running(poller_for(loaded(directory), store)):
            await asyncio.wait_for(bomb.dropped.wait(), timeout=10)
            await wait_for(_retrying(store), what="failure recorded")
    assert bomb.sent < 16 * 2**20  # socket buffers at most, not the 93 GB announced
    assert await imap_rows(store) == []
    health = await health_of(store)
    assert health.last_error is not None and "literal" in health.last_error


def _retrying(store: Store) -> object:
    """A check that the channel's health shows the failure."""

    async def check() -> bool:
        try:
            health = await health_of(store)
        except KeyError:
            return False
        return health.state is ChannelState.RETRYING

    return check
