"""Test helpers: configuration folders, sample messages, a running gateway, a raw SMTP client."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailgateway.config import Config, load_config
from mailgateway.store.schema import utcnow

if TYPE_CHECKING:
    from mailgateway.app import Gateway

SUPPORT = "support@acme.inbox.example.net"
JOHN = "john.doe@customer.test"
OURS = "<reply-1@mx.test>"  # the Message-ID of a reply we sent
SALES = "sales@acme.inbox.example.net"
DISABLED = "archive@acme.inbox.example.net"

SMTP_DEFAULTS: dict[str, Any] = {
    "listen": ["127.0.0.1:0"],
    "hostname": "mx.test",
    "max_message_size": "1MiB",
    "max_recipients": 5,
    "max_connections": 20,
    "max_connections_per_ip": 10,
    "idle_timeout": 5.0,
}


def toml_value(value: Any) -> str:
    """A TOML literal for a str, bool, number or list of those."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def toml_section(name: str, values: dict[str, Any]) -> str:
    """One [section] of key = value lines."""
    lines = [f"[{name}]"] + [f"{key} = {toml_value(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def write_config(
    directory: Path, db_url: str, worker: dict[str, Any] | None = None, **smtp: Any
) -> Path:
    """A configuration folder: inboxes support (default), sales and archive (disabled)."""
    (directory / "inboxes").mkdir(parents=True, exist_ok=True)
    gateway = "".join(
        [
            toml_section(
                "account",
                {
                    "subdomain": "acme",
                    "company_name": "Acme Inc.",
                    "forwarding_domain": "inbox.example.net",
                },
            ),
            toml_section("smtp", {**SMTP_DEFAULTS, **smtp}),
            toml_section("database", {"url": db_url}),
            toml_section(
                "worker",
                {"poll_interval": 0.1, "retry_delay": 0.1, "processes": 0, **(worker or {})},
            ),
            toml_section("http", {"listen": "127.0.0.1:0"}),
        ]
    )
    (directory / "mailgateway.toml").write_text(gateway)
    (directory / "users.toml").write_text(
        '[[users]]\nid = "alice"\nemail = "alice@acme.example"\nfirst_name = "Alice"\n'
        'last_name = "Nowak"\nteams = ["support"]\n\n'
        '[[users]]\nid = "bob"\nemail = "bob@acme.example"\nfirst_name = "Bob"\n'
        'last_name = "Stone"\n\n'
        '[[teams]]\nid = "support"\nname = "Support"\n'
    )
    (directory / "inboxes" / "support.toml").write_text(
        'name = "Support"\ndefault = true\n\n[access]\nmode = "specific"\nteams = ["support"]\n'
    )
    (directory / "inboxes" / "sales.toml").write_text('name = "Sales"\n')
    (directory / "inboxes" / "archive.toml").write_text(
        'name = "Archive"\n\n[fallback_email]\nstatus = "disabled"\n'
    )
    return directory


def make_message(
    subject: str = "Printer on fire",
    sender: str = "John Doe <john.doe@customer.test>",
    to: str = SUPPORT,
    body: str = "Hello, the printer is on fire.\n",
    **headers: str,
) -> bytes:
    """A plain-text message as bytes with CRLF line endings."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime(2026, 11, 26, 10, 0, tzinfo=UTC))
    message["Message-ID"] = headers.pop("message_id", make_msgid(domain="customer.test"))
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(body)
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


@contextlib.asynccontextmanager
async def running_gateway(config_dir: Path) -> AsyncIterator[Gateway]:
    """The daemon's parts, started on this loop on a free port, shut down afterwards."""
    from mailgateway.app import start

    gateway = await start(load_config(config_dir))
    try:
        yield gateway
    finally:
        await gateway.shutdown()


def port_of(gateway: Gateway) -> int:
    """The port the gateway's first listener is bound to."""
    return int(gateway.sockets[0].rsplit(":", 1)[1])


class RawSMTP:
    """A line-level SMTP client over a real socket, for protocol abuse the polite clients refuse."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, *, greet: bool = True) -> RawSMTP:
        """Connect and (by default) read the greeting and say EHLO."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        if greet:
            await client.reply()
            await client.command("EHLO client.test")
        return client

    async def reply(self, timeout: float = 10.0) -> str:
        """One (possibly multi-line) reply, as text; '' when the server closed."""
        lines = []
        async with asyncio.timeout(timeout):
            while True:
                line = await self.reader.readline()
                if not line:
                    break
                lines.append(line.decode("utf-8", "replace").rstrip("\r\n"))
                if len(line) < 4 or line[3:4] != b"-":
                    break
        return "\n".join(lines)

    async def send(self, data: bytes) -> None:
        """Write bytes as they are."""
        self.writer.write(data)
        await self.writer.drain()

    async def command(self, line: str | bytes) -> str:
        """Send one command line and return the reply."""
        data = line if isinstance(line, bytes) else line.encode()
        await self.send(data + b"\r\n")
        return await self.reply()

    async def transaction(self, mail_from: str, rcpts: list[str], data: bytes) -> str:
        """EHLO-less MAIL/RCPT/DATA with dot-stuffing; returns the reply to the final dot."""
        await self.command(f"MAIL FROM:<{mail_from}>")
        for rcpt in rcpts:
            await self.command(f"RCPT TO:<{rcpt}>")
        await self.command("DATA")
        stuffed = b"\r\n".join(
            b"." + line if line.startswith(b".") else line for line in data.split(b"\r\n")
        )
        if not stuffed.endswith(b"\r\n"):
            stuffed += b"\r\n"
        await self.send(stuffed + b".\r\n")
        return await self.reply()

    async def closed(self, timeout: float = 10.0) -> bool:
        """Whether the server closes the connection within the timeout."""
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(4096):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        return True

    async def close(self) -> None:
        """Close our side."""
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def loaded(config_dir: Path) -> Config:
    """The configuration in the folder."""
    return load_config(config_dir)


def exited_pid() -> int:
    """The pid of a process that has run and exited (a claimer known to be gone)."""
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(child.stdout)


def our_reply(conversation_id: int) -> dict[str, Any]:
    """The messages row of a reply we sent to John (Message-ID `OURS`) on a conversation."""
    return {
        "conversation_id": conversation_id,
        "inbox": "support",
        "direction": "outbound",
        "message_id": OURS,
        "subject": "Re: Printer on fire",
        "from_email": SUPPORT,
        "to": [{"email": JOHN, "name": "John Doe"}],
        "created_at": utcnow(),
    }
