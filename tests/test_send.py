"""Sending (outbound/send.py) and the retry schedule: aiosmtplib errors become the project's
temporary or permanent errors; unsafe envelopes are refused before connecting."""

from __future__ import annotations

import socket
from datetime import timedelta

import aiosmtplib
import pytest

from mailgateway.config import OutboundConfig, TlsMode
from mailgateway.outbound import send
from mailgateway.outbound.worker import backoff
from tests.outbound_support import smtp_sink
from tests.support import make_message


@pytest.mark.parametrize(
    ("error", "expected", "text"),
    [
        (aiosmtplib.SMTPResponseException(451, "4.3.0 later"), send.DeliveryDeferred, "451"),
        (aiosmtplib.SMTPDataError(552, "5.3.4 too big"), send.DeliveryFailed, "552"),
        (aiosmtplib.SMTPSenderRefused(550, "no", "a@b"), send.DeliveryFailed, "550"),
        (aiosmtplib.SMTPConnectResponseError(421, "busy"), send.DeliveryDeferred, "421"),
        (
            aiosmtplib.SMTPRecipientsRefused(
                [
                    aiosmtplib.SMTPRecipientRefused(550, "no", "a@b"),
                    aiosmtplib.SMTPRecipientRefused(450, "greylisted", "c@d"),
                ]
            ),
            send.DeliveryDeferred,
            "450",
        ),
        (
            aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(550, "no", "a@b")]),
            send.DeliveryFailed,
            "550",
        ),
        (aiosmtplib.SMTPAuthenticationError(535, "bad credentials"), send.RouteRefused, "535"),
        (aiosmtplib.SMTPAuthenticationError(454, "try later"), send.DeliveryDeferred, "454"),
        (aiosmtplib.SMTPNotSupported("STARTTLS"), send.RouteRefused, "STARTTLS"),
        (aiosmtplib.SMTPServerDisconnected("gone"), send.DeliveryDeferred, "gone"),
        (aiosmtplib.SMTPConnectTimeoutError("slow"), send.DeliveryDeferred, "slow"),
        (ConnectionRefusedError(111, "refused"), send.DeliveryDeferred, "refused"),
    ],
)
def test_errors_are_translated(error: Exception, expected: type[Exception], text: str) -> None:
    """4xx, connection and timeout errors are temporary; 5xx permanent; a refused login or a
    missing capability is a route problem (held)."""
    translated = send.translate(error)
    assert type(translated) is expected
    assert text in str(translated)


@pytest.mark.parametrize(
    ("sender", "recipients"),
    [
        ("a@b.test\r\nRSET", ["c@d.test"]),
        ("a@b.test", ["c@d.test\n"]),
        ("a@b.test", ["c@d.test\x00"]),
        ("a@b.test", ["c@d.test> NOTIFY=NEVER"]),
        ("jörg@b.test", ["c@d.test"]),
        ("a@b.test", []),
    ],
)
async def test_unsafe_envelopes_refused_before_connecting(
    sender: str, recipients: list[str]
) -> None:
    """CR, LF, NUL, brackets, spaces, non-ASCII or no recipient: refused with nothing sent."""
    async with smtp_sink() as sink:
        route = send.Route("127.0.0.1", sink.port, TlsMode.NONE, "mx.test", 5.0)
        with pytest.raises(send.RouteRefused, match=r"envelope|recipients"):
            await send.deliver(route, sender, recipients, make_message())
        assert sink.connections == 0


async def test_null_sender_is_allowed() -> None:
    """The null sender <> (for automatic mail) goes out as MAIL FROM:<>."""
    async with smtp_sink() as sink:
        route = send.Route("127.0.0.1", sink.port, TlsMode.NONE, "mx.test", 5.0)
        reply = await send.deliver(route, "", ["c@d.test"], make_message())
        [received] = sink.messages
    assert received.mail_from == "<>" and "queued" in reply


async def test_closed_port_is_temporary() -> None:
    """Nobody listening is a temporary failure (the message is deferred)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    route = send.Route("127.0.0.1", port, TlsMode.NONE, "mx.test", 5.0)
    with pytest.raises(send.DeliveryDeferred):
        await send.deliver(route, "a@b.test", ["c@d.test"], make_message())


def test_smarthost_route_tls_policy() -> None:
    """Loopback smarthosts are spoken to in plain SMTP; any other requires STARTTLS."""
    local = send.smarthost_route(OutboundConfig(smarthost="127.0.0.1:2525"), "mx.test")
    remote = send.smarthost_route(OutboundConfig(smarthost="relay.example.net"), "mx.test")
    assert (local.host, local.port, local.tls) == ("127.0.0.1", 2525, TlsMode.NONE)
    assert (remote.port, remote.tls) == (25, TlsMode.STARTTLS)


def test_backoff_doubles_up_to_the_cap() -> None:
    """Retry delays double from retry_delay and stop growing at max_retry_delay."""
    delays = [backoff(300.0, 3600.0, attempt) for attempt in range(1, 7)]
    assert delays == [timedelta(seconds=s) for s in (300, 600, 1200, 2400, 3600, 3600)]
    assert backoff(300.0, 3600.0, 10_000) == timedelta(seconds=3600)
