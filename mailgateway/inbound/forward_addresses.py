"""Mailboxes in forwarded header values as mail clients print them (names, brackets, mailto)."""

from __future__ import annotations

import re

from mailgateway.domain import Address
from mailgateway.inbound.forward_labels import WHITESPACE

MAX_VALUE_CHARS = 16384  # characters of one header value read for addresses
MAX_ADDRESS_CHARS = 256  # an address (in brackets or bare) is no longer than this
MAX_QUOTED_CHARS = 256  # a quoted display name is no longer than this
QUOTE_CHARS = {'"': '"', "'": "'", "«": "»", "„": "”“", "“": "”", "‘": "’"}  # opening: closings

EMAIL = re.compile(r"[^\s@<>()\[\],;:\"']+@[^\s@<>()\[\],;:\"']+")
_ADDRESS_SPECIAL = re.compile("[<,;" + re.escape("".join(QUOTE_CHARS)) + "]")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def parse_addresses(value: str) -> list[Address]:
    """The mailboxes in a header value as clients print them: quoted names, names with commas,
    '<a@x>', bare addresses, '[mailto:a@x]', 'a@x<mailto:a@x>', names without addresses."""
    text = _clean_mailto(value[:MAX_VALUE_CHARS])
    addresses: list[Address] = []
    start = position = 0  # start of the mailbox being read, and of the scan
    while (special := _ADDRESS_SPECIAL.search(text, position)) is not None:
        position = special.start()
        char = text[position]
        if char in QUOTE_CHARS:
            position = _quoted_end(text, position) or position + 1
        elif char == "<":
            close = text.find(">", position + 1, position + 2 + MAX_ADDRESS_CHARS)
            inside = text[position + 1 : close].strip(WHITESPACE) if close != -1 else ""
            if EMAIL.fullmatch(inside):
                addresses.append(_address(text[start:position], inside))
                start = close + 1
            position = max(position + 1, start)
        else:
            window = text[max(start, position - MAX_ADDRESS_CHARS) : position]
            if _bare_address(window) is not None:
                addresses.append(_bare_entry(text[start:position]))
                start = position + 1
            position += 1
    rest = text[start:].strip(WHITESPACE + ",;")
    if rest:
        addresses.append(_bare_entry(rest))
    return addresses


def _clean_mailto(value: str) -> str:
    """'[mailto:a@x]' becomes '<a@x>'; a '<mailto:a@x>' glued to a word is dropped (Outlook
    pastes it after names and addresses); a free-standing one becomes '<a@x>'."""
    lowered = value.translate(_ASCII_LOWER)  # same length as value, unlike str.lower()
    if "mailto:" not in lowered:
        return value
    pieces: list[str] = []
    position = 0
    while True:
        start = lowered.find("mailto:", position)
        if start <= 0 or lowered[start - 1] not in "<[":
            if start == -1:
                break
            pieces.append(value[position : start + 7])
            position = start + 7
            continue
        opening = value[start - 1]
        close = value.find(">" if opening == "<" else "]", start)
        if close == -1:
            break
        pieces.append(value[position : start - 1])
        address = value[start + 7 : close]
        glued = opening == "<" and start >= 2 and not value[start - 2].isspace()
        pieces.append("" if glued else f" <{address}>")
        position = close + 1
    pieces.append(value[position:])
    return "".join(pieces)


def _quoted_end(text: str, position: int) -> int | None:
    """End (exclusive) of a quoted string opening at `position`, or None if none opens there."""
    char = text[position]
    closings = QUOTE_CHARS.get(char)
    if closings is None:
        return None
    if char == "'" and position > 0 and text[position - 1] not in " \t,;":
        return None
    limit = position + 1 + MAX_QUOTED_CHARS
    ends = [found for found in (text.find(c, position + 1, limit) for c in closings) if found >= 0]
    return min(ends) + 1 if ends else None


def _bare_address(text: str) -> tuple[str, str] | None:
    """The last bare address in a text and the text without it."""
    if "@" not in text:
        return None
    words = text.split()
    for number in range(len(words) - 1, -1, -1):
        if "@" not in words[number]:
            continue
        word = words[number].strip("()<>[]'\"“”«».,;:")
        if EMAIL.fullmatch(word):
            return word.lower(), " ".join(words[:number] + words[number + 1 :])
    return None


def _bare_entry(text: str) -> Address:
    """An entry without angle brackets: a bare address with an optional name, or a name only."""
    found = _bare_address(text)
    if found is None:
        return Address("", clean_name(text, ""))
    email, name = found
    return Address(email, clean_name(name, email))


def _address(name: str, email: str) -> Address:
    """An address from the text before '<' and the text inside the brackets."""
    email = email.strip(WHITESPACE).lower()
    return Address(email, clean_name(name, email))


def clean_name(name: str, email: str) -> str:
    """A display name without separators, quotes and Gmail's bold stars ('*Jane*'); '' when
    it only repeats the address."""
    name = name.strip(WHITESPACE + ",;")
    while len(name) >= 2 and (
        (name[0] in QUOTE_CHARS and name[-1] in QUOTE_CHARS[name[0]]) or name[0] == name[-1] == "*"
    ):
        name = name[1:-1].strip(WHITESPACE)
    name = " ".join(name.split())
    return "" if name.lower() == email else name
