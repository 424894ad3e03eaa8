"""Headers and text of a message attached as message/rfc822 (read with the stdlib parser)."""

from __future__ import annotations

from email.header import decode_header, make_header
from email.message import Message
from email.utils import getaddresses

from mailgateway.domain import Address
from mailgateway.inbound.forward_html import html_to_text
from mailgateway.inbound.forward_text import join_lines, normalise


def attached_message(part: Message) -> Message | None:
    """The message inside a message/rfc822 part, or the part itself when it is a message."""
    if part.get_content_type() != "message/rfc822":
        return part
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        inner: Message = payload[0]
        return inner
    return None


def header_text(message: Message, name: str) -> str:
    """A header's decoded value on one line, '' when absent."""
    raw = message.get(name)
    if raw is None:
        return ""
    try:
        text = str(make_header(decode_header(str(raw))))
    except (LookupError, ValueError, UnicodeError):
        text = str(raw)
    return " ".join(text.split())


def header_addresses(message: Message, name: str) -> list[Address]:
    """The mailboxes of an address header (all its occurrences), lower-cased."""
    values = [_header_text_value(value) for value in message.get_all(name, [])]
    return [
        Address(email.lower(), " ".join(display.split()))
        for display, email in getaddresses(values)
        if email or display
    ]


def _header_text_value(value: object) -> str:
    """One header occurrence decoded to text."""
    try:
        return str(make_header(decode_header(str(value))))
    except (LookupError, ValueError, UnicodeError):
        return str(value)


def message_text(message: Message) -> str:
    """The attached message's body: its first text/plain part, else its first HTML part."""
    html: str | None = None
    for part in message.walk():
        if part.get_content_maintype() != "text" or part.get_content_disposition() == "attachment":
            continue
        content = _part_text(part)
        if part.get_content_subtype() == "plain":
            return join_lines(normalise(content).split("\n"))
        if html is None and part.get_content_subtype() == "html":
            html = content
    return join_lines(normalise(html_to_text(html)).split("\n")) if html is not None else ""


def _part_text(part: Message) -> str:
    """A leaf part's content decoded with its charset (UTF-8 when unknown or unusable)."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return str(part.get_payload())
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("utf-8", errors="replace")
