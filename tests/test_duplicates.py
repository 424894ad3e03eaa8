"""Content hashes: one message keeps its hash across transports, any content change alters it."""

from __future__ import annotations

from pathlib import Path

from mailgateway.inbound.duplicates import content_hash
from mailgateway.inbound.parse import parse

ORIGINAL = Path(__file__).parent / "fixtures" / "threading" / "rules" / "original.eml"
TRACE = (
    b"Return-Path: <john.doe@customer.test>\r\n"
    b"Delivered-To: help@acme.example\r\n"
    b"Received: from mx.customer.test by imap.acme.example; Thu, 26 Nov 2026 11:00:02 +0000\r\n"
    b"Authentication-Results: mx.acme.example; dkim=pass header.d=customer.test\r\n"
    b"X-Spam-Score: 0.1\r\n"
)


def hash_of(raw: bytes) -> str:
    """The content hash of raw bytes, as the worker computes it."""
    return content_hash(raw, parse(raw))


def test_trace_headers_and_line_endings_do_not_change_the_hash() -> None:
    """The IMAP copy of an SMTP-delivered message (trace headers added, LF line endings,
    refolded header) hashes as the original."""
    raw = ORIGINAL.read_bytes()
    imap_copy = (TRACE + raw).replace(b"\r\n", b"\n")
    imap_copy = imap_copy.replace(b"Subject: Printer on fire", b"Subject: Printer on\n fire")
    assert hash_of(imap_copy) == hash_of(raw)


def test_mbox_envelope_line_is_ignored() -> None:
    """An mbox `From ` line (imports) is not content."""
    raw = ORIGINAL.read_bytes()
    assert hash_of(b"From john@customer.test Thu Nov 26 11:00:00 2026\n" + raw) == hash_of(raw)


def test_content_changes_change_the_hash() -> None:
    """A different body, subject, sender or Message-ID is another message."""
    raw = ORIGINAL.read_bytes()
    variants = [
        raw.replace(b"on fire.", b"on fire!"),
        raw.replace(b"Subject: Printer on fire", b"Subject: Printer is fine"),
        raw.replace(b"From: John Doe", b"From: Jane Doe"),
        raw.replace(b"<original@customer.test>", b"<other@customer.test>"),
    ]
    hashes = {hash_of(raw), *(hash_of(variant) for variant in variants)}
    assert len(hashes) == 5


def test_generated_message_ids_do_not_split_copies() -> None:
    """Copies of a message without Message-ID (whose generated ids differ) hash alike."""
    raw = ORIGINAL.read_bytes().replace(b"Message-ID: <original@customer.test>\r\n", b"")
    copy = TRACE + raw
    assert parse(raw).message_id != parse(copy).message_id
    assert hash_of(copy) == hash_of(raw)
