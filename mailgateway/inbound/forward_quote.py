"""The "On <date>, <name> <address> wrote:" line that Outlook puts above a forwarded message."""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailgateway.domain import Address
from mailgateway.inbound.forward_addresses import EMAIL, QUOTE_CHARS, clean_name
from mailgateway.inbound.forward_labels import COLONS, WHITESPACE, WROTE_CONNECTORS, label_key
from mailgateway.inbound.forward_text import MAX_BLANKS_AFTER_MARKER, unquote

MAX_WROTE_CHARS = 400  # an "On <date>, <name> <address> wrote:" line is no longer than this

_DATE_TOKEN = re.compile(r"\d{1,4}(?:[./:-]\d{1,4}){1,2}(?: ?[AaPp]\.?[Mm]\.?)?")


@dataclass(frozen=True, slots=True)
class QuoteHeader:
    """The sender and date a quote header names, and the line where the quoted text starts."""

    sender: Address
    date: str
    body_start: int


def quote_header(lines: list[str], index: int, depth: int, content: str) -> QuoteHeader | None:
    """A quote header line (possibly wrapped onto a short second line) followed by quoted or
    indented text: the sender and date it names."""
    if len(content) > MAX_WROTE_CHARS or "@" not in content:
        return None
    header, body_start = content, index + 1
    if not content.endswith(tuple(COLONS)):
        if body_start >= len(lines):
            return None
        tail = unquote(lines[body_start])[1]
        if not tail.endswith(tuple(COLONS)) or len(tail) > 40 or "@" in tail:
            return None
        header, body_start = f"{content} {tail}", body_start + 1
    if not _indented_after(lines, body_start, depth):
        return None
    parsed = _parse_quote_header(header[:-1])
    if parsed is None:
        return None
    sender, date = parsed
    return QuoteHeader(sender, date, body_start)


def _indented_after(lines: list[str], start: int, depth: int) -> bool:
    """Whether the first non-blank line from `start` is quoted deeper or indented."""
    for line in lines[start : start + MAX_BLANKS_AFTER_MARKER]:
        line_depth, content = unquote(line)
        if content:
            return line_depth > depth or line[:1] in (" ", "\t")
    return False


def _parse_quote_header(header: str) -> tuple[Address, str] | None:
    """Sender and date in a quote header; None without an address or a date."""
    located = _locate_email(header)
    if located is None:
        return None
    email, start, end = located
    before, after = header[:start].rstrip(WHITESPACE + ","), header[end:]
    date = _date_span(before) or _date_span(after)
    if not date:
        return None
    name = _quoted_tail(before)
    if name is None:
        name = _name_after_date(before)
    return Address(email, clean_name(name, email)), date


def _locate_email(text: str) -> tuple[str, int, int] | None:
    """The first address in a text and the span of it with its brackets ('<a@x>', '(<a@x>)')."""
    match = EMAIL.search(text)
    if match is None:
        return None
    start, end = match.span()
    while start > 0 and text[start - 1] in "<([":
        start -= 1
    while end < len(text) and text[end] in ">)]":
        end += 1
    return match.group().lower().strip("."), start, end


def _date_span(text: str) -> str:
    """From the first to the last date or time token of a text ('28/10/2021, 12:46')."""
    first = last = None
    for match in _DATE_TOKEN.finditer(text):
        first = match.start() if first is None else first
        last = match.end()
    if first is None or last is None:
        return ""
    return text[first:last].strip(WHITESPACE + ",")


def _quoted_tail(text: str) -> str | None:
    """The quoted string that ends a text ('... "John Doe"', '« John Doe »'), if any."""
    if not text:
        return None
    closing = text[-1]
    for opening, closings in QUOTE_CHARS.items():
        if closing in closings:
            start = text.rfind(opening, 0, len(text) - 1)
            if start != -1:
                return text[start + 1 : -1]
    return None


def _name_after_date(text: str) -> str:
    """The name in 'On <date>, <connector> John Doe': the words after the last date token."""
    last_end = 0
    for match in _DATE_TOKEN.finditer(text):
        last_end = match.end()
    words = text[last_end:].replace(",", " ").split()
    while words and label_key(words[0]) in WROTE_CONNECTORS:
        words.pop(0)
    return " ".join(words)
