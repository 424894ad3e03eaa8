"""Content hashes for duplicate detection (pure): one message, however it travelled."""

from __future__ import annotations

import hashlib
import re

from mailgateway.domain import Parsed
from mailgateway.inbound import mime

# The fields the author wrote; trace fields (Received, Return-Path, Delivered-To,
# Authentication-Results, ARC-*, spam scores) differ between SMTP and IMAP copies.
AUTHOR_FIELDS = (
    "message-id",
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "subject",
    "date",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
)
_WHITESPACE = re.compile(rb"[ \t]+")
_LINE_END = re.compile(rb"[ \t]*\r?\n")


def content_hash(raw: bytes, parsed: Parsed) -> str:
    """SHA-256 over the normalised Message-ID (none when it was generated), the author's header
    fields and the body, with line endings, folding and trailing blanks normalised: equal for
    copies of one message that arrived by different paths, different for any other content."""
    digest = hashlib.sha256()
    digest.update(b"" if parsed.message_id_generated else parsed.message_id.encode())
    digest.update(b"\x00")
    start = raw.find(b"\n") + 1 if raw.startswith(b"From ") else 0  # an mbox envelope line
    fields, body_start = mime.split_head(
        raw, start, len(raw), max_fields=1000, max_bytes=1024 * 1024, defects=[]
    )
    for name, value in fields:
        if name.lower() in AUTHOR_FIELDS:
            line = f"{name.lower()}:{value}".encode("utf-8", "surrogateescape")
            digest.update(_WHITESPACE.sub(b" ", line).strip() + b"\n")
    digest.update(b"\x00")
    digest.update(_LINE_END.sub(b"\n", raw[body_start:]).rstrip(b"\r\n \t"))
    return digest.hexdigest()
