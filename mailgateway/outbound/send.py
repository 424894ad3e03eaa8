"""Hands signed bytes to the smarthost or a team SMTP server with aiosmtplib; its errors become
the project's TemporaryError (retry later) or PermanentError (failed, or held) here."""

from __future__ import annotations

import re
import ssl
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field

import aiosmtplib

from mailgateway.config import MailServerConfig, OutboundConfig, TlsMode, is_loopback
from mailgateway.errors import PermanentError, TemporaryError

_UNSAFE = re.compile(r"[\r\n\x00<>\s]")
REPLY_LIMIT = 300


class DeliveryDeferred(TemporaryError):
    """The server or the network said "not now" (4xx, refused connection, timeout)."""


class DeliveryFailed(PermanentError):
    """The server refused the message for good (5xx): it is marked failed."""


class RouteRefused(PermanentError):
    """The route itself is wrong (authentication refused, TLS not offered, unsafe envelope):
    the message is held until an operator fixes it and retries."""


@dataclass(frozen=True, slots=True)
class Route:
    """Where and how to hand a message over."""

    host: str
    port: int
    tls: TlsMode
    helo: str
    timeout: float
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str = ""  # a PEM bundle to trust instead of the system's CAs


def smarthost_route(settings: OutboundConfig, helo: str) -> Route:
    """The smarthost: plain SMTP on loopback, STARTTLS (required, certificate checked) beyond."""
    host, port = settings.smarthost_endpoint
    tls = TlsMode.NONE if is_loopback(host) else TlsMode.STARTTLS
    return Route(host, port, tls, helo, settings.timeout)


def channel_route(server: MailServerConfig, helo: str, timeout: float) -> Route:
    """A team email channel's submission server, with its TLS mode, AUTH and CA file."""
    return Route(
        server.host,
        server.port,
        server.tls,
        helo,
        timeout,
        username=server.user,
        password=server.read_password(),
        ca_file=server.ca_file,
    )


def check_envelope(sender: str, recipients: Sequence[str]) -> None:
    """Refuse, before any byte is written, an envelope with CR, LF, NUL, spaces or brackets
    (SMTP command injection) or without recipients."""
    if not recipients:
        msg = "no recipients"
        raise RouteRefused(msg)
    for address in (sender, *recipients):
        if _UNSAFE.search(address) or not address.isascii():
            msg = f"unsafe envelope address {address!r}"
            raise RouteRefused(msg)


def _reply(code: int, text: str) -> str:
    """A server reply as one short line."""
    return f"{code} {' '.join(text.split())}"[:REPLY_LIMIT]


def _by_code(code: int, text: str) -> Exception:
    """4xx: try again later; 5xx: refused for good."""
    reply = _reply(code, text)
    return DeliveryFailed(reply) if code >= 500 else DeliveryDeferred(reply)


def translate(error: Exception) -> Exception:
    """The project's error for an aiosmtplib (or socket, or TLS) failure."""
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        codes = [(r.code, r.message) for r in error.recipients] or [(450, "recipients refused")]
        temporary = [c for c in codes if c[0] < 500]
        return _by_code(*(temporary[0] if temporary else codes[0]))
    if isinstance(error, aiosmtplib.SMTPAuthenticationError) and error.code >= 500:
        return RouteRefused(f"authentication refused: {_reply(error.code, error.message)}")
    if isinstance(error, aiosmtplib.SMTPResponseException):
        return _by_code(error.code, error.message)
    if isinstance(error, aiosmtplib.SMTPNotSupported):
        return RouteRefused(f"server lacks what the route needs: {error.message}")
    if isinstance(error, ssl.SSLCertVerificationError):
        return RouteRefused(f"TLS certificate not trusted: {error.verify_message}")
    if isinstance(error, aiosmtplib.SMTPException | OSError | TimeoutError):
        return DeliveryDeferred(f"{type(error).__name__}: {error}"[:REPLY_LIMIT])
    return error


async def log_in(client: aiosmtplib.SMTP, route: Route) -> None:
    """AUTH as the route's user (after STARTTLS); a server that offers no AUTH is a wrong
    route (held), not a server to try again for days."""
    if route.username is None:
        return
    if client.last_ehlo_response is None:  # STARTTLS forgets what was offered before it
        await client.ehlo()
    if not client.supports_extension("auth"):
        msg = "the server offers no AUTH (check the channel's smtp port and tls)"
        raise RouteRefused(msg)
    await client.login(route.username, route.password or "")


async def deliver(route: Route, sender: str, recipients: Sequence[str], data: bytes) -> str:
    """Send one message (line endings normalised, dots stuffed by aiosmtplib); returns the
    server's reply to the data. Raises DeliveryDeferred, DeliveryFailed or RouteRefused."""
    check_envelope(sender, recipients)
    client = aiosmtplib.SMTP(
        hostname=route.host,
        port=route.port,
        local_hostname=route.helo,
        use_tls=route.tls is TlsMode.IMPLICIT,
        start_tls=route.tls is TlsMode.STARTTLS,
        timeout=route.timeout,
        cert_bundle=route.ca_file or None,
    )
    try:  # sendmail, not aiosmtplib.send: that refuses the null sender <>
        await client.connect()
        await log_in(client, route)
        refused, reply = await client.sendmail(sender, list(recipients), data)
    except Exception as error:
        client.close()
        raise translate(error) from error
    with suppress(Exception):  # accepted is accepted: a failed QUIT must not cause a resend
        await client.quit()
    client.close()
    if refused:
        partly = ", ".join(f"{rcpt}: {_reply(r.code, r.message)}" for rcpt, r in refused.items())
        return f"{' '.join(reply.split())} (refused: {partly})"[:REPLY_LIMIT]
    return " ".join(reply.split())[:REPLY_LIMIT]
