"""The first message attached as message/rfc822 in raw mail, found and read under caps."""

from __future__ import annotations

import email
from email import policy
from email.message import Message

from mailgateway.domain import AttachmentInfo
from mailgateway.inbound import mime
from mailgateway.inbound.parse import HEADER_MAX_BYTES, HEADER_MAX_FIELDS

MESSAGE_TYPES = frozenset({"message/rfc822"})
MAX_MESSAGE_BYTES = 1 << 20  # bytes of an attached message handed to the stdlib parser


def has_attached_message(attachments: tuple[AttachmentInfo, ...]) -> bool:
    """Whether the parse stage saw an attached message (so the raw bytes are worth a look)."""
    return any(item.content_type in MESSAGE_TYPES for item in attachments)


def first_attached_message(raw: bytes) -> Message | None:
    """The first message/rfc822 part, parsed by the stdlib (compat32) from at most
    MAX_MESSAGE_BYTES of its decoded body; None when there is none or it cannot be read."""
    try:
        data = _first_attached_bytes(raw)
        return None if data is None else email.message_from_bytes(data, policy=policy.compat32)
    except Exception:  # hostile nesting or encodings: no attached forward, never a failure
        return None


def _first_attached_bytes(raw: bytes) -> bytes | None:
    """The decoded body of the first message/rfc822 leaf, walked as the parse stage walks."""
    defects: list[str] = []
    start = raw.find(b"\n") + 1 if raw.startswith(b"From ") else 0  # an mbox envelope line
    fields, body_start = mime.split_head(
        raw,
        start,
        len(raw),
        max_fields=HEADER_MAX_FIELDS,
        max_bytes=HEADER_MAX_BYTES,
        defects=defects,
    )
    top = mime.entity(mime.first_values(fields), (raw, body_start, len(raw)), 0, "text/plain", [])
    for part in mime.walk(top, defects):
        if part.depth > 0 and part.content_type in MESSAGE_TYPES:
            return mime.payload(part, defects)[:MAX_MESSAGE_BYTES]
    return None
