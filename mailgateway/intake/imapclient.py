"""An IMAP session over aioimaplib: TLS modes, every wait bounded, a cap on literal sizes."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import aioimaplib

from mailgateway.config import MailServerConfig, TlsMode
from mailgateway.errors import PermanentError, TemporaryError
from mailgateway.inbound.parse import clean_text
from mailgateway.intake.imapwire import (
    MailboxStatus,
    MessageMeta,
    literal_size,
    parse_body,
    parse_meta,
    parse_search,
    parse_select,
    quote,
    uid_set,
)

T = TypeVar("T")

LOGOUT_TIMEOUT = 2.0
META_ITEMS = "(UID FLAGS INTERNALDATE RFC822.SIZE)"


class ImapError(TemporaryError):
    """The server refused a command, did not answer in time, or the connection broke."""


class ImapTimeout(ImapError):
    """The server did not answer within the time allowed."""


class ConnectionLost(ImapError):
    """The connection closed (the server said BYE, restarted, or the network broke)."""


class FolderMissing(ImapError):
    """The folder does not exist and can be created ([TRYCREATE])."""


class AuthenticationFailed(PermanentError):
    """The server refused the channel's user name and password."""


class _LiteralTooLarge(Exception):
    """The server announced a literal over the cap (RELIABILITY row 60)."""


class _Protocol(aioimaplib.IMAP4ClientProtocol):  # type: ignore[misc]
    """aioimaplib's protocol, dropping the connection when a literal would exceed the cap."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        conn_lost_cb: Callable[[Exception | None], None],
        max_literal: int,
    ) -> None:
        super().__init__(loop, conn_lost_cb)
        self.max_literal = max_literal
        self.oversized = False

    def _handle_line(self, line: bytes, current_cmd: Any) -> Any:
        """Refuse a literal announcement over the cap before any of it is buffered."""
        size = literal_size(line)
        if size is not None and size > self.max_literal:
            raise _LiteralTooLarge
        return super()._handle_line(line, current_cmd)

    def data_received(self, d: bytes) -> None:
        """Hand data to aioimaplib; abort the connection on an oversized literal."""
        try:
            super().data_received(d)
        except _LiteralTooLarge:
            self.oversized = True
            self.transport.abort()


class _Client(aioimaplib.IMAP4):  # type: ignore[misc]
    """aioimaplib's client with our protocol."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float,
        ssl_context: ssl.SSLContext | None,
        max_literal: int,
        on_lost: Callable[[Exception | None], None],
    ) -> None:
        self.max_literal = max_literal
        super().__init__(
            host=host, port=port, timeout=timeout, conn_lost_cb=on_lost, ssl_context=ssl_context
        )

    def create_client(
        self,
        host: str,
        port: int,
        loop: asyncio.AbstractEventLoop | None,
        conn_lost_cb: Callable[[Exception | None], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """Connect with _Protocol instead of aioimaplib's own."""
        running = loop or asyncio.get_running_loop()
        self.protocol = _Protocol(running, conn_lost_cb or (lambda _exc: None), self.max_literal)
        connect = running.create_connection(lambda: self.protocol, host, port, ssl=ssl_context)
        self._client_task = running.create_task(connect)


def tls_context(server: MailServerConfig) -> ssl.SSLContext:
    """Certificate-checking TLS (1.2 or newer), trusting the channel's CA file when it has one."""
    context = ssl.create_default_context(cafile=server.ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def server_text(lines: Sequence[Any]) -> str:
    """The server's last response line as safe, short text (for errors and health)."""
    last = next((bytes(line) for line in reversed(lines) if isinstance(line, bytes)), b"")
    return clean_text(last.decode("utf-8", "replace"), limit=200)


class ImapSession:
    """A logged-in IMAP connection; every command fails fast when the connection drops and
    raises ImapTimeout when the server is silent for longer than the timeout."""

    def __init__(self, client: _Client, lost: asyncio.Event, timeout: float) -> None:
        self.client = client
        self.lost = lost
        self.timeout = timeout

    @property
    def protocol(self) -> _Protocol:
        """The connection's protocol object."""
        protocol: _Protocol = self.client.protocol
        return protocol

    def has_capability(self, name: str) -> bool:
        """Whether the server announced the capability (after login)."""
        return name.upper() in {str(cap).upper() for cap in self.protocol.capabilities}

    async def bounded(self, awaitable: Awaitable[T], timeout: float | None = None) -> T:
        """Await an aioimaplib call, racing the connection's loss and a deadline; its
        faults become ImapError."""
        if self.lost.is_set():
            if asyncio.iscoroutine(awaitable):
                awaitable.close()  # never to be awaited: say so, rather than leave it dangling
            raise ConnectionLost(self._lost_reason())
        command = asyncio.ensure_future(awaitable)
        lost = asyncio.ensure_future(self.lost.wait())
        try:
            done, _ = await asyncio.wait(
                {command, lost},
                timeout=timeout or self.timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            lost.cancel()
            if not command.done():
                command.cancel()
        if command in done and not command.cancelled():
            try:
                return command.result()
            except (aioimaplib.AioImapException, TimeoutError, OSError, ValueError) as error:
                raise ImapError(f"{type(error).__name__}: {error}") from error
        if self.lost.is_set():
            raise ConnectionLost(self._lost_reason())
        raise ImapTimeout(f"no answer within {timeout or self.timeout:g} s")

    def _lost_reason(self) -> str:
        """Why the connection is gone."""
        if self.protocol.oversized:
            return "connection dropped: the server announced a literal over the size limit"
        return "connection lost"

    async def ok(self, awaitable: Awaitable[Any], what: str) -> Any:
        """A command's response; ImapError unless the server answered OK."""
        response = await self.bounded(awaitable)
        if response.result != "OK":
            raise ImapError(f"{what} refused: {server_text(response.lines)}")
        return response

    # -- connection ----------------------------------------------------------------------------

    async def _starttls(self, server: MailServerConfig) -> None:
        """Upgrade the plain connection to TLS before anything secret is sent."""
        protocol = self.protocol
        if not self.has_capability("STARTTLS"):
            raise ImapError("the server does not offer STARTTLS")
        command = aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)
        await self.ok(protocol.execute(command), "STARTTLS")
        protocol.incomplete_line = b""  # nothing sent before the handshake is believed
        loop = asyncio.get_running_loop()
        upgrade = loop.start_tls(
            protocol.transport, protocol, tls_context(server), server_hostname=server.host
        )
        protocol.transport = await self.bounded(upgrade)
        protocol.capabilities = set()
        await self.bounded(protocol.capability())

    async def _login(self, server: MailServerConfig) -> None:
        """Log in with the password read from its file now; refresh the capabilities."""
        try:
            password = server.read_password()
        except OSError as error:
            raise AuthenticationFailed(f"cannot read password_file ({error.strerror})") from None
        response = await self.bounded(self.client.login(server.user, password))
        if response.result != "OK":
            text = server_text(response.lines)
            raise AuthenticationFailed(f"login as {server.user!r} refused: {text}")
        await self.bounded(self.protocol.capability())

    async def close(self) -> None:
        """Log out politely if the connection still stands, then drop it."""
        if not self.lost.is_set() and self.client.get_state() in {"AUTH", "SELECTED"}:
            with contextlib.suppress(ImapError):
                if self.client.has_pending_idle():
                    self.client.idle_done()
                await self.bounded(self.client.logout(), timeout=LOGOUT_TIMEOUT)
        transport = self.protocol.transport
        if transport is not None:
            transport.abort()
        for task in [*self.client.tasks, *self.protocol.tasks, self.client._client_task]:
            task.cancel()

    # -- commands ------------------------------------------------------------------------------

    async def select(self, folder: str) -> MailboxStatus:
        """Open a folder; its UIDVALIDITY and UIDNEXT."""
        response = await self.ok(self.client.select(quote(folder)), f"SELECT {folder}")
        try:
            return parse_select(response.lines)
        except ValueError as error:
            raise ImapError(f"SELECT {folder}: {error}") from None

    async def uid_search(self, *criteria: str) -> list[int]:
        """The UIDs matching the criteria, ascending."""
        response = await self.ok(self.client.uid_search(*criteria, charset=None), "UID SEARCH")
        return parse_search(response.lines)

    async def highest_uid(self, status: MailboxStatus) -> int:
        """The highest UID the folder has handed out so far (0 when none)."""
        if status.uidnext is not None:
            return max(status.uidnext - 1, 0)
        return max(await self.uid_search("ALL"), default=0)

    async def fetch_meta(self, uids: Sequence[int]) -> list[MessageMeta]:
        """Flags, internal date and size of these UIDs (those still there)."""
        response = await self.ok(self.client.uid("fetch", uid_set(uids), META_ITEMS), "UID FETCH")
        return parse_meta(response.lines, uids)

    async def fetch_body(self, uid: int) -> bytes | None:
        """The message's bytes, without setting \\Seen; None when it is gone."""
        response = await self.ok(self.client.uid("fetch", str(uid), "(UID BODY.PEEK[])"), "FETCH")
        return parse_body(response.lines, uid)

    async def mark_seen(self, uids: Sequence[int]) -> None:
        """Set \\Seen on these UIDs."""
        await self.ok(
            self.client.uid("store", uid_set(uids), "+FLAGS.SILENT", "(\\Seen)"), "UID STORE"
        )

    async def move(self, uids: Sequence[int], folder: str) -> None:
        """Move these UIDs to another folder (MOVE, or COPY then delete where MOVE is missing)."""
        if self.has_capability("MOVE"):
            await self.ok(self.client.uid("move", uid_set(uids), quote(folder)), "UID MOVE")
            return
        await self.ok(self.client.uid("copy", uid_set(uids), quote(folder)), "UID COPY")
        await self.ok(
            self.client.uid("store", uid_set(uids), "+FLAGS.SILENT", "(\\Seen \\Deleted)"),
            "UID STORE",
        )
        if self.has_capability("UIDPLUS"):
            await self.ok(self.client.uid("expunge", uid_set(uids)), "UID EXPUNGE")

    async def append(self, folder: str, data: bytes, flags: str | None = None) -> None:
        """Add a message to a folder (a Sent folder, or test mail); FolderMissing when the
        server answers that the folder must be created first ([TRYCREATE])."""
        response = await self.bounded(self.client.append(data, mailbox=quote(folder), flags=flags))
        if response.result != "OK":
            text = server_text(response.lines)
            refused = FolderMissing if "[TRYCREATE]" in text.upper() else ImapError
            raise refused(f"APPEND refused: {text}")

    async def create(self, folder: str) -> None:
        """Create a folder."""
        await self.ok(self.client.create(quote(folder)), f"CREATE {folder}")

    async def noop(self) -> None:
        """Ask the server for news (and prove the connection alive)."""
        await self.ok(self.client.noop(), "NOOP")

    async def pause(self, seconds: float) -> None:
        """Wait between polls; ConnectionLost as soon as the connection drops."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.lost.wait()
        if self.lost.is_set():
            raise ConnectionLost(self._lost_reason())

    async def wait_for_news(self, renew: float) -> bool:
        """IDLE until the server announces new mail (True) or `renew` seconds pass (False);
        ConnectionLost at once when the server says BYE or the connection drops."""
        idle = await self.bounded(self.client.idle_start(timeout=renew + 2 * self.timeout))
        news = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + renew
        while not news and (remaining := deadline - loop.time()) > 0:
            try:
                push = self.client.wait_server_push(timeout=remaining + self.timeout)
                lines = await self.bounded(push, timeout=remaining)
            except ImapTimeout:
                break
            if lines == aioimaplib.STOP_WAIT_SERVER_PUSH:
                break
            if any(bytes(line).upper().startswith(b"BYE") for line in lines):
                raise ConnectionLost("the server said BYE")
            news = any(bytes(line).upper().endswith((b"EXISTS", b"RECENT")) for line in lines)
        if not idle.done():
            self.client.idle_done()
        await self.bounded(idle)
        return news


@contextlib.asynccontextmanager
async def open_session(
    server: MailServerConfig, *, timeout: float, max_literal: int
) -> AsyncIterator[ImapSession]:
    """A logged-in session to the server (TLS as configured), closed on exit."""
    lost = asyncio.Event()
    context = tls_context(server) if server.tls is TlsMode.IMPLICIT else None
    client = _Client(
        server.host,
        server.port,
        timeout=timeout,
        ssl_context=context,
        max_literal=max_literal,
        on_lost=lambda _exc: lost.set(),
    )
    session = ImapSession(client, lost, timeout)
    try:
        await session.bounded(client.wait_hello_from_server())
        if server.tls is TlsMode.STARTTLS:
            await session._starttls(server)
        await session._login(server)
        yield session
    finally:
        await session.close()
