"""Test helpers for sending: a recording SMTP sink, a configuration that sends, conversations."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from mailgateway.config import Config, WorkerConfig, load_config
from mailgateway.inbound.worker import InboundWorker
from mailgateway.outbound import sign
from mailgateway.outbound.worker import OutboundWorker
from mailgateway.store.repo import Delivery, Envelope, Store
from tests.support import SUPPORT, make_message, toml_section, write_config

CUSTOMER = "john.doe@customer.test"
SELECTOR = "mg1"
SIGNATURE = "<p>{{ full_name }}<br>Acme &amp; Co Support</p>"
USERS_EXTRA = (
    '\n[[users]]\nid = "carol"\nemail = "carol@acme.example"\nfirst_name = "Carol"\n'
    'last_name = "Admin"\nrole = "super_admin"\n'
    '\n[[users]]\nid = "dave"\nemail = "dave@acme.example"\nfirst_name = "Dave"\n'
    'last_name = "Viewer"\nrole = "account_access"\n'
    '\n[[users]]\nid = "erin"\nemail = "erin@acme.example"\nfirst_name = "Erin"\n'
    'last_name = "<O\'Brien & Co>"\nteams = ["support"]\n'
)


@dataclass
class Received:
    """One message the sink accepted."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    login: str | None
    tls: bool = False


@dataclass
class SmtpSink:
    """A recording aiosmtpd server on 127.0.0.1: answers DATA from a script (then 250),
    optionally refuses every RCPT, optionally checks AUTH PLAIN/LOGIN credentials, optionally
    requires STARTTLS (and then AUTH only over TLS)."""

    data_replies: list[str] = field(default_factory=list)
    rcpt_reply: str | None = None
    credentials: tuple[str, str] | None = None
    tls_context: ssl.SSLContext | None = None
    messages: list[Received] = field(default_factory=list)
    data_attempts: int = 0
    connections: int = 0
    port: int = 0

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        """Accept the recipient, or refuse it as scripted."""
        if self.rcpt_reply is not None:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Answer from the script; record the message when the answer is 250."""
        self.data_attempts += 1
        reply = self.data_replies.pop(0) if self.data_replies else "250 2.0.0 Ok: queued"
        if reply.startswith("250"):
            login = session.auth_data.login.decode() if session.authenticated else None
            tls = session.ssl is not None
            self.messages.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.content, login, tls)
            )
        return reply

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        """Accept only the configured user and password."""
        ok = isinstance(data, LoginPassword) and self.credentials == (
            data.login.decode(),
            data.password.decode(),
        )
        return AuthResult(success=ok, auth_data=data if ok else None)

    def protocol(self) -> SMTP:
        """One server protocol per connection, counted."""
        self.connections += 1
        options: dict[str, Any] = {"hostname": "sink.test", "timeout": 10}
        if self.credentials is not None:
            options |= {"authenticator": self.authenticate, "auth_require_tls": False}
        if self.tls_context is not None:
            options |= {
                "tls_context": self.tls_context,
                "require_starttls": True,
                "auth_require_tls": True,
            }
        return SMTP(self, **options)

    async def wait_for(self, count: int, timeout: float = 15.0) -> list[Received]:
        """The accepted messages, once there are `count` of them."""
        async with asyncio.timeout(timeout):
            while len(self.messages) < count:
                await asyncio.sleep(0.02)
        return self.messages


@contextlib.asynccontextmanager
async def smtp_sink(**options: Any) -> AsyncIterator[SmtpSink]:
    """A running sink on a free port of 127.0.0.1, closed afterwards."""
    sink = SmtpSink(**options)
    server = await asyncio.get_running_loop().create_server(sink.protocol, "127.0.0.1", 0)
    sink.port = server.sockets[0].getsockname()[1]
    try:
        yield sink
    finally:
        server.close()
        await server.wait_closed()


def make_key(directory: Path, algorithm: sign.Algorithm = sign.Algorithm.RSA) -> sign.DkimKey:
    """A new DKIM key written to DIR/dkim/mg1.key."""
    pem, key = sign.generate_key(algorithm)
    sign.write_key_file(directory / "dkim" / f"{SELECTOR}.key", pem)
    return key


def sending_config(
    directory: Path,
    db_url: str,
    smarthost_port: int,
    *,
    dkim: bool = True,
    support: str = "",
    **outbound: Any,
) -> Path:
    """The test configuration with the support inbox sending (HTML signature), more users
    (carol super_admin, dave account_access, erin with markup in her name), the smarthost on
    the given port, fast retries, and (by default) a DKIM key."""
    write_config(directory, db_url)
    settings: dict[str, Any] = {
        "smarthost": f"127.0.0.1:{smarthost_port}",
        "timeout": 10.0,
        "retry_delay": 0.05,
        "max_retry_delay": 0.2,
        **outbound,
    }
    if dkim:
        make_key(directory)
        settings |= {"dkim_selector": SELECTOR, "dkim_key": f"dkim/{SELECTOR}.key"}
    with (directory / "mailgateway.toml").open("a") as handle:
        handle.write(toml_section("outbound", settings))
    with (directory / "users.toml").open("a") as handle:
        handle.write(USERS_EXTRA)
    (directory / "inboxes" / "support.toml").write_text(
        'name = "Support"\ndefault = true\n\n[access]\nmode = "specific"\nteams = ["support"]\n\n'
        '[fallback_email]\nsend_enabled = true\nfrom_company = "Acme Support"\n'
        f'signature_format = "html"\nsignature = "{SIGNATURE}"\n{support}'
    )
    return directory


def dkim_record(config: Config) -> bytes:
    """The TXT record value of the configured key."""
    key = sign.parse_key(Path(config.gateway.outbound.dkim_key).read_bytes())
    return sign.txt_value(key).encode()


async def conversation(store: Store, raw: bytes | None = None, inbox: str = "support") -> int:
    """A conversation made by processing one inbound message; its id."""
    message = raw or make_message(sender=f"John Doe <{CUSTOMER}>", message_id="<q1@customer.test>")
    await store.enqueue(message, Envelope(mail_from=CUSTOMER), [Delivery(inbox, SUPPORT)])
    settings = WorkerConfig(batch_size=10, max_attempts=3, poll_interval=0.1, retry_delay=0.0)
    await InboundWorker(store, settings, id_domain="mx.test").run_once()
    rows = await store.conversation_rows(inbox=inbox)
    return int(rows[0].id)


def outbound_worker(store: Store, config_dir: Path, **kwargs: Any) -> OutboundWorker:
    """An outbound worker on the configuration in the folder, with its key."""
    config = load_config(config_dir)
    return OutboundWorker(store, config, sign.load_signer(config.gateway.outbound), **kwargs)


async def drain(worker: OutboundWorker, rounds: int = 50, pause: float = 0.05) -> None:
    """Run the worker until a round finds nothing due twice in a row (backoff included)."""
    idle = 0
    for _ in range(rounds):
        idle = 0 if await worker.run_once() else idle + 1
        if idle >= 2 and not await worker.queue.rows(["queued", "deferred", "active"]):
            return
        await asyncio.sleep(pause)
