"""SMTP intake: recipient policy, limits, one durable write of the raw bytes, then 250/4xx/5xx."""

from __future__ import annotations

import asyncio
import os
import re
import ssl
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP, Envelope, Session

from mailgateway import metrics
from mailgateway.config import Config, SmtpConfig
from mailgateway.intake.backpressure import QUEUE_FULL, Backpressure
from mailgateway.intake.batch import GroupCommit
from mailgateway.logs import get_logger
from mailgateway.store.repo import Delivery, Store, Submission
from mailgateway.store.repo import Envelope as StoredEnvelope

log = get_logger(__name__)

TEMPORARY_FAILURE = "451 4.3.0 Temporary failure, please try again later"
INSUFFICIENT_STORAGE = "452 4.3.1 Insufficient system storage"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
TOO_MANY_CONNECTIONS = b"421 4.7.0 Too many connections, try again later\r\n"
RELAY_DENIED = "550 5.7.1 Relay access denied"
UNKNOWN_RECIPIENT = "550 5.1.1 Recipient address rejected: no such inbox"
CHANNEL_DISABLED = "550 5.2.1 Recipient address rejected: channel disabled"
PATH_TOO_LONG = "553 5.1.3 Address too long"
HEADER_TOO_BIG = "552 5.3.4 Message header exceeds fixed maximum size"
BARE_NEWLINE = "550 5.5.2 Message header contains bare CR or LF"
MAIL_LOOP = "554 5.4.6 Too many Received headers: mail forwarding loop"
TOO_BIG = "552 5.3.4 Message size exceeds fixed maximum message size"
MAX_PATH = 256
# The usual envelope path: <dot-atom@domain> in ASCII, then nothing or ESMTP parameters without
# comments, quotes or escapes. aiosmtpd parses every path with the email package's RFC 5322
# header parser (and defines a class per call), about 38 us a path; this form has exactly one
# reading, so it is taken apart here, and anything else still goes to aiosmtpd's parser.
ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
SIMPLE_PATH = re.compile(
    rf"<({ATOM}(?:\.{ATOM})*)@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>"
    r"(?: +([!#-'*-\[\]-~][ !#-'*-\[\]-~]*))?"
)

# aiosmtpd's own replies, given the enhanced status codes (RFC 3463) operators grep for.
ENHANCED_REPLIES = {
    "552 Error: message size exceeds fixed maximum message size": TOO_BIG,
    "552 Error: Too much mail data": TOO_BIG,
    "500 Line too long (see RFC5321 4.5.3.1.6)": "500 5.5.2 Line too long (RFC 5321 4.5.3.1.6)",
    "500 Command line too long": "500 5.5.2 Command line too long",
    "503 Error: need RCPT command": "503 5.5.1 Error: need RCPT command",
    "503 Error: need MAIL command": "503 5.5.1 Error: need MAIL command",
    "503 Error: nested MAIL command": "503 5.5.1 Error: nested MAIL command",
}


class ConnectionLimiter:
    """Counts open SMTP sessions, in all and per client address (Postfix's connection caps)."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self.open: Counter[str] = Counter()

    def acquire(self, client: str) -> bool:
        """Take a slot for the client; False when a cap is reached."""
        if sum(self.open.values()) >= self.total or self.open[client] >= self.per_client:
            return False
        self.open[client] += 1
        return True

    def release(self, client: str) -> None:
        """Give the client's slot back."""
        self.open[client] -= 1
        if self.open[client] <= 0:
            del self.open[client]


class GatewayEnvelope(Envelope):
    """aiosmtpd's envelope plus the inbox each accepted recipient resolved to."""

    def __init__(self) -> None:
        super().__init__()
        self.deliveries: list[Delivery] = []


def header_section(raw: bytes, limit: int) -> bytes | None:
    """The header section (up to the blank line), or None when it is longer than `limit`."""
    if raw.startswith(b"\r\n"):
        return b""
    end = raw.find(b"\r\n\r\n", 0, limit + 4)
    if end < 0:
        return raw if len(raw) <= limit else None
    return raw[:end]


def check_content(raw: bytes, limits: SmtpConfig) -> str | None:
    """The SMTP reply that refuses this message at end of data, or None to accept it."""
    header = header_section(raw, limits.max_header_size)
    if header is None:
        return HEADER_TOO_BIG
    lines = header.split(b"\r\n")
    if len(lines) > limits.max_header_lines:
        return HEADER_TOO_BIG
    if b"\r" in header.replace(b"\r\n", b"") or b"\n" in header.replace(b"\r\n", b""):
        return BARE_NEWLINE
    received = sum(1 for line in lines if line[:9].lower() == b"received:")
    if received > limits.max_received_headers:
        return MAIL_LOOP
    return None


def normalise_address(address: str) -> str:
    """The mailbox of an envelope address, with an RFC 5321 source route dropped."""
    if address.startswith("@") and ":" in address:
        address = address.split(":", 1)[1]
    return address.strip()


class IntakeHandler:
    """aiosmtpd hooks: who may receive, what may be accepted, and the durable write."""

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        free_space: Callable[[], int | None] = lambda: None,
        on_commit: Callable[[], None] = lambda: None,
        commit_timeout: float = 60.0,
    ) -> None:
        self.config = config
        self.store = store
        self.free_space = free_space
        self.on_commit = on_commit
        self.commit_timeout = commit_timeout
        self.pending: set[asyncio.Future[list[int]]] = set()
        self.group = GroupCommit(lambda batch: self.store.enqueue_many(batch))
        self.backpressure = Backpressure(
            store.queue_depth, lambda: self.config.gateway.smtp.max_queue_depth
        )

    def __dir__(self) -> list[str]:
        """The hooks and AUTH mechanisms only: aiosmtpd walks the handler's attributes with
        dir() and inspect.getmembers() on every new connection (see GatewaySMTP.__dir__)."""
        return list(_introspected(type(self), ("handle_", "auth_")))

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        """Refuse new mail while storage is short (Postfix's queue-space check) or while the
        inbound queue is deeper than `max_queue_depth` (back-pressure, until it drains)."""
        if len(address) > MAX_PATH:
            return PATH_TOO_LONG
        free = self.free_space()
        if free is not None and free < 1.5 * self.config.gateway.smtp.max_message_size:
            log.warning("intake.storage_low", free_bytes=free)
            return INSUFFICIENT_STORAGE
        if await self.backpressure.full():
            return QUEUE_FULL
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: GatewayEnvelope,
        address: str,
        options: list[str],
    ) -> str:
        """Accept only forwarding addresses of enabled inboxes (and their reply-token forms)."""
        if len(address) > MAX_PATH:
            return PATH_TOO_LONG
        if len(envelope.rcpt_tos) >= self.config.gateway.smtp.max_recipients:
            return TOO_MANY_RECIPIENTS
        mailbox = normalise_address(address)
        verdict = self.recipient_verdict(mailbox)
        if isinstance(verdict, str):
            log.info("intake.recipient_refused", rcpt=mailbox, reply=verdict[:9])
            return verdict
        envelope.rcpt_tos.append(mailbox)
        envelope.rcpt_options.extend(options)
        if all(delivery.inbox != verdict.inbox for delivery in envelope.deliveries):
            envelope.deliveries.append(verdict)
        return "250 2.1.5 Ok"

    def recipient_verdict(self, mailbox: str) -> Delivery | str:
        """The delivery for an envelope recipient, or the SMTP reply refusing it."""
        found = self.config.inbox_by_address(mailbox)
        if found is None:
            domain = mailbox.rpartition("@")[2].lower()
            return UNKNOWN_RECIPIENT if domain in self.config.local_domains() else RELAY_DENIED
        inbox, _token = found
        if inbox.fallback_email.status != "enabled":
            return CHANNEL_DISABLED
        return Delivery(inbox=inbox.slug, rcpt_to=mailbox.lower())

    async def handle_DATA(self, server: SMTP, session: Session, envelope: GatewayEnvelope) -> str:
        """Check the content limits, commit the raw bytes, and only then answer 250."""
        raw: bytes = envelope.original_content or b""
        refusal = check_content(raw, self.config.gateway.smtp)
        if refusal is not None:
            log.info("intake.message_refused", reply=refusal[:9], size=len(raw))
            return refusal
        stored = StoredEnvelope(
            mail_from=envelope.mail_from or "",
            peer=_peer_text(session.peer),
            helo=session.host_name or "",
        )
        return await self.commit(raw, stored, envelope.deliveries)

    async def commit(
        self, raw: bytes, envelope: StoredEnvelope, deliveries: Sequence[Delivery]
    ) -> str:
        """The durable write, shielded from the client going away: once started it completes (or
        rolls back) whatever happens to the session."""
        future = self.group.submit(Submission(raw, envelope, tuple(deliveries)))
        self.pending.add(future)
        future.add_done_callback(self._committed)
        try:
            async with asyncio.timeout(self.commit_timeout):
                ids = await asyncio.shield(future)
        except Exception as error:  # every internal fault is a 4xx: the sender retries
            log.error("intake.commit_failed", error=type(error).__name__)
            return TEMPORARY_FAILURE
        self.on_commit()
        metrics.SMTP_ACCEPTED.inc()
        queued = " ".join(str(queue_id) for queue_id in ids)
        log.info(
            "message.accepted",
            queue_ids=queued,
            inboxes=",".join(delivery.inbox for delivery in deliveries),
            size=len(raw),
            mail_from=envelope.mail_from,
        )
        return f"250 2.0.0 Ok: queued as {queued}"

    def _committed(self, future: asyncio.Future[list[int]]) -> None:
        """Forget a finished commit and make sure its exception is retrieved."""
        self.pending.discard(future)
        if not future.cancelled():
            future.exception()

    async def handle_exception(self, error: Exception) -> str:
        """Any fault inside the session: a retryable 451 with no internal detail."""
        log.error("intake.session_error", error=type(error).__name__)
        return TEMPORARY_FAILURE

    async def drain(self) -> None:
        """Wait for every commit in flight (orderly shutdown)."""
        while self.pending:
            await asyncio.gather(*list(self.pending), return_exceptions=True)


def _peer_text(peer: Any) -> str:
    """The client address as 'host:port' text."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer or "")


class GatewaySMTP(SMTP):
    """aiosmtpd's protocol with connection caps, a minimum DATA rate, and enhanced status codes."""

    local_part_limit = 64

    def __dir__(self) -> list[str]:
        """The attributes aiosmtpd looks for when it builds each session: its command methods
        and AUTH mechanisms. aiosmtpd finds them with dir() and inspect.getmembers() on every
        new connection; over all ~250 attributes of the protocol that walk cost more CPU than
        the rest of a session (about 0.1 ms per connection), so the class lists them once."""
        return list(_introspected(type(self), ("smtp_", "auth_")))

    def __init__(
        self,
        handler: IntakeHandler,
        *,
        limiter: ConnectionLimiter,
        min_data_rate: int,
        **options: Any,
    ) -> None:
        super().__init__(handler, **options)
        self.limiter = limiter
        self.min_data_rate = min_data_rate
        self.client: str | None = None
        self.refused = False
        self.data_started: float | None = None
        self.data_bytes = 0

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's path parser, with a fast way for the usual form (see SIMPLE_PATH): the
        same address and parameters, the same refusal of a local part over the limit. A path
        that makes aiosmtpd's parser raise (the email package fails on some broken domain
        literals, e.g. `<a@[b>`) is malformed: 553 5.1.3, not a 451 the client would retry."""
        simple = SIMPLE_PATH.fullmatch(arg)
        if simple is None:
            try:
                parsed: tuple[str | None, str | None] = super()._getaddr(arg)
            except Exception:  # the client's bytes broke the parser: a malformed path
                return None, None
            return parsed
        local, domain, rest = simple.groups()
        if self.local_part_limit and len(local) > self.local_part_limit:
            return None, None
        return f"{local}@{domain}", rest or ""

    def _create_envelope(self) -> GatewayEnvelope:
        return GatewayEnvelope()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Refuse with 421 beyond the connection caps; STARTTLS re-entry is not counted."""
        if self.transport is None and self.client is None:
            peer = transport.get_extra_info("peername")
            client = str(peer[0]) if isinstance(peer, tuple) else str(peer)
            if not self.limiter.acquire(client):
                self.refused = True
                log.warning("intake.connection_refused", client=client)
                metrics.count_reply(TOO_MANY_CONNECTIONS.decode())
                transport.write(TOO_MANY_CONNECTIONS)  # type: ignore[attr-defined]
                transport.close()
                return
            self.client = client
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        """Release the connection slot."""
        if self.refused:
            return
        if self.client is not None:
            self.limiter.release(self.client)
            self.client = None
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        """Nothing to do for a refused connection."""
        if self.refused:
            return False
        result: bool | None = super().eof_received()
        return result

    def data_received(self, data: bytes) -> None:
        """During DATA, keep the session alive while the client sustains the minimum rate."""
        super().data_received(data)
        if self.data_started is not None:
            self.data_bytes += len(data)
            elapsed = self.loop.time() - self.data_started
            if self.data_bytes >= self.min_data_rate * elapsed:
                self._reset_timeout()

    async def smtp_DATA(self, arg: str) -> None:
        """Track the DATA phase for the minimum-rate rule."""
        self.data_started = self.loop.time()
        self.data_bytes = 0
        try:
            await super().smtp_DATA(arg)
        finally:
            self.data_started = None

    async def push(self, status: AnyStr) -> None:
        """Send a reply, with enhanced status codes on aiosmtpd's own replies."""
        reply = ENHANCED_REPLIES.get(status, status) if isinstance(status, str) else status
        metrics.count_reply(reply if isinstance(reply, str) else reply.decode("ascii", "replace"))
        await super().push(reply)


_INTROSPECTED: dict[tuple[type, tuple[str, ...]], tuple[str, ...]] = {}


def _introspected(cls: type, prefixes: tuple[str, ...]) -> tuple[str, ...]:
    """The attributes of a class that aiosmtpd looks up by prefix for each session (a
    protocol's `smtp_*` commands and `auth_*` mechanisms, a handler's `handle_*` hooks and
    `auth_*` mechanisms), found once per class."""
    key = (cls, prefixes)
    if key not in _INTROSPECTED:
        _INTROSPECTED[key] = tuple(name for name in dir(cls) if name.startswith(prefixes))
    return _INTROSPECTED[key]


# STARTTLS contexts by (certificate, key) file, with the files' modification times when loaded.
_TLS_CONTEXTS: dict[tuple[str, str], tuple[tuple[int, int], ssl.SSLContext]] = {}


def tls_context(smtp: SmtpConfig) -> ssl.SSLContext | None:
    """The STARTTLS context when both certificate and key are configured. Building one costs
    about 2 ms of CPU (the system's CA store is read, the key parsed), so it is kept and shared
    by the connections, and built again when either file has changed (a renewed certificate
    applies from the next connection, as before)."""
    if not (smtp.tls_cert and smtp.tls_key):
        return None
    files = (smtp.tls_cert, smtp.tls_key)
    try:
        stamp = (os.stat(files[0]).st_mtime_ns, os.stat(files[1]).st_mtime_ns)
    except OSError:
        stamp = None
    kept = _TLS_CONTEXTS.get(files)
    if stamp is not None and kept is not None and kept[0] == stamp:
        return kept[1]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*files)
    if stamp is not None:
        _TLS_CONTEXTS[files] = (stamp, context)
    return context


def protocol_factory(
    handler: IntakeHandler, limiter: ConnectionLimiter
) -> Callable[[], GatewaySMTP]:
    """Build one protocol per connection from the current SMTP settings."""

    def build() -> GatewaySMTP:
        smtp = handler.config.gateway.smtp
        junk = smtp.max_junk_commands
        return GatewaySMTP(
            handler,
            limiter=limiter,
            min_data_rate=smtp.min_data_rate,
            data_size_limit=smtp.max_message_size,
            hostname=smtp.hostname,
            ident="mailgateway",
            tls_context=tls_context(smtp),
            timeout=smtp.idle_timeout,
            command_call_limit={
                "NOOP": junk,
                "RSET": junk,
                "VRFY": junk,
                "HELP": junk,
                "EXPN": junk,
                "*": 1_000_000,
            },
        )

    return build


async def start_servers(
    handler: IntakeHandler, limiter: ConnectionLimiter, endpoints: Sequence[tuple[str, int]]
) -> list[asyncio.Server]:
    """Listen on every configured endpoint on the running loop."""
    loop = asyncio.get_running_loop()
    factory = protocol_factory(handler, limiter)
    servers = []
    for host, port in endpoints:
        servers.append(await loop.create_server(factory, host=host, port=port))
    return servers
