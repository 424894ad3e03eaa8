"""Bounce parsing over .eml fixtures: RFC 3464 reports (Postfix, Gmail, Exchange, delays) and
the non-standard formats (qmail, Yahoo, Exim, inline fields, X-Failed-Recipients)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mailgateway.domain import DeliveryStatus
from mailgateway.inbound.bounces import Bounce, parse_bounce
from mailgateway.inbound.htmltext import html_to_text
from mailgateway.inbound.parse import parse

BOUNCES = Path(__file__).parent / "fixtures" / "threading" / "bounces"
LOOPS = Path(__file__).parent / "fixtures" / "threading" / "loops"
JOHN = "john.doe@customer.test"
ORIGINAL = "<reply-1@mx.test>"
FAILED = DeliveryStatus.FAILED


def bounce_of(raw: bytes, mail_from: str = "") -> Bounce | None:
    """What the bounce stage reads in raw bytes (text derived as the worker does)."""
    parsed = parse(raw)
    text = parsed.text if parsed.text is not None else html_to_text(parsed.html or "")
    return parse_bounce(raw, parsed, mail_from, text)


@pytest.mark.parametrize(
    ("name", "kind", "action", "status", "diagnostic"),
    [
        ("dsn-postfix", "dsn", FAILED, "5.1.1", "550 5.1.1 <john.doe@customer.test>: Recipient"),
        ("dsn-gmail", "dsn", FAILED, "5.1.1", "The email account that you tried to reach"),
        ("dsn-exchange", "dsn", FAILED, "5.1.10", "550 5.1.10 RESOLVER.ADR.RecipientNotFound"),
        ("dsn-delayed", "dsn", DeliveryStatus.DELAYED, "4.4.1", "connect to mail.customer.test"),
        ("bounce-qmail", "qmail", FAILED, "5.1.1", "Sorry, no mailbox here by that name."),
        ("bounce-yahoo", "qmail", FAILED, "", "554: delivery error: dd This user doesn't"),
        ("bounce-exim", "exim", FAILED, "5.1.1", "host mail.customer.test [192.0.2.25] SMTP"),
        ("bounce-inline-dsn", "inline-dsn", FAILED, "5.0.0", "User john.doe (john.doe@customer"),
        ("bounce-x-failed-recipients", "x-failed-recipients", FAILED, "5.2.1", "550 5.2.1 Mailbox"),
    ],
)
def test_bounce_formats(
    name: str, kind: str, action: DeliveryStatus, status: str, diagnostic: str
) -> None:
    """Each format yields the failed recipient, its status and diagnostic, and the original
    Message-ID (from the attached message, its headers, or the quoted copy)."""
    bounce = bounce_of((BOUNCES / f"{name}.eml").read_bytes())
    assert bounce is not None
    assert (bounce.format, bounce.original_message_id) == (kind, ORIGINAL)
    [recipient] = bounce.recipients
    assert (recipient.recipient, recipient.action, recipient.status) == (JOHN, action, status)
    assert recipient.diagnostic.startswith(diagnostic)
    assert "\n" not in recipient.diagnostic


def test_record_is_json_ready() -> None:
    """The stored record names the format, the original and each recipient's outcome."""
    bounce = bounce_of((BOUNCES / "dsn-postfix.eml").read_bytes())
    assert bounce is not None
    record = bounce.as_record()
    assert record["original_message_id"] == ORIGINAL
    assert record["recipients"] == [
        {
            "recipient": JOHN,
            "action": "failed",
            "status": "5.1.1",
            "diagnostic": bounce.recipients[0].diagnostic,
        }
    ]


@pytest.mark.parametrize("name", ["person", "auto-submitted-auto-replied", "ooo-exchange"])
def test_ordinary_and_auto_replies_are_not_bounces(name: str) -> None:
    """A person's mail or an out-of-office reply is not read as a bounce."""
    assert bounce_of((LOOPS / f"{name}.eml").read_bytes(), "john.doe@customer.test") is None


def test_malformed_report_is_no_bounce_and_no_error() -> None:
    """A report without boundary or fields yields None, never an exception."""
    assert bounce_of((BOUNCES / "bounce-malformed.eml").read_bytes()) is None


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"Content-Type: multipart/report; boundary=b\r\n\r\n--b\r\n"
        b"Content-Type: message/delivery-status\r\n\r\n"
        + b"Final-Recipient: rfc822; \r\n"
        * 50_000,
        b"From: MAILER-DAEMON@x.test\r\n\r\n" + b"<a@b.test>:\n" * 200_000,
        b"From: MAILER-DAEMON@x.test\r\n\r\nfollowing addresses failed:\n" + b"  a@b\n" * 200_000,
        b"From: MAILER-DAEMON@x.test\r\n\r\n" + b"Message-ID: <" * 200_000,
    ],
    ids=["empty", "huge-report", "qmail-flood", "exim-flood", "id-flood"],
)
def test_hostile_bounces_are_bounded(raw: bytes) -> None:
    """Hostile pseudo-bounces are read in well under a second and give at most 100 recipients."""
    started = time.perf_counter()
    bounce = bounce_of(raw)
    assert time.perf_counter() - started < 2.0
    assert bounce is None or len(bounce.recipients) <= 100
