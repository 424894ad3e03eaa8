"""IMAP wire details as pure functions: quoting, UID sets, FETCH and SELECT responses, headers."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from email import policy
from email.parser import BytesHeaderParser
from email.utils import parseaddr

from mailgateway.inbound.parse import clean_text, normalize_message_id

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

_FETCH_START = re.compile(rb"^(\d+) FETCH \(", re.IGNORECASE)
_UID = re.compile(rb"\bUID (\d+)", re.IGNORECASE)
_FLAGS = re.compile(rb"\bFLAGS \(([^)]*)\)", re.IGNORECASE)
_INTERNALDATE = re.compile(rb'\bINTERNALDATE "([^"]+)"', re.IGNORECASE)
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)", re.IGNORECASE)
_LITERAL = re.compile(rb"\{(\d+)\}$")
_CODE = re.compile(rb"\[(UIDVALIDITY|UIDNEXT) (\d+)\]", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class MessageMeta:
    """What a FETCH (UID FLAGS INTERNALDATE RFC822.SIZE) tells about one message."""

    uid: int
    flags: frozenset[str]
    internal_date: datetime | None
    size: int

    @property
    def seen(self) -> bool:
        """Whether the message carries the \\Seen flag."""
        return "\\seen" in {flag.lower() for flag in self.flags}


@dataclass(frozen=True, slots=True)
class MailboxStatus:
    """What SELECT tells about a folder."""

    uidvalidity: int
    uidnext: int | None


def quote(name: str) -> str:
    """A mailbox name as an IMAP quoted string; control characters are refused."""
    if _CONTROL.search(name):
        raise ValueError("control characters are not allowed in a mailbox name")
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def uid_set(uids: Iterable[int]) -> str:
    """A compact UID set: [1, 2, 3, 7, 9, 10] -> "1:3,7,9:10"."""
    ordered = sorted(set(uids))
    if not ordered:
        raise ValueError("an empty UID set")
    ranges: list[list[int]] = []
    for uid in ordered:
        if ranges and uid == ranges[-1][1] + 1:
            ranges[-1][1] = uid
        else:
            ranges.append([uid, uid])
    return ",".join(str(a) if a == b else f"{a}:{b}" for a, b in ranges)


def search_date(day: date) -> str:
    """A date as IMAP SEARCH wants it: 7-Nov-2026 (English month names, whatever the locale)."""
    return f"{day.day}-{MONTHS[day.month - 1]}-{day.year}"


def parse_internal_date(text: str) -> datetime | None:
    """An INTERNALDATE value ("27-Nov-2026 02:58:06 +0000") as an aware datetime, or None."""
    match = re.fullmatch(r"\s*(\d{1,2})-(\w{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-]\d{4})", text)
    if match is None or match.group(2).title() not in MONTHS:
        return None
    day, month, year, hour, minute, second, zone = match.groups()
    stamp = f"{year}-{MONTHS.index(month.title()) + 1:02d}-{int(day):02d}T{hour}:{minute}:{second}"
    try:
        return datetime.fromisoformat(f"{stamp}{zone[:3]}:{zone[3:]}")
    except ValueError:
        return None


def parse_search(lines: Sequence[bytes | bytearray]) -> list[int]:
    """The UIDs of a (UID) SEARCH response, ascending. aioimaplib hands over the untagged
    SEARCH lines without their keyword, then the text of the tagged completion (skipped)."""
    found: set[int] = set()
    for line in lines[:-1]:
        tokens = bytes(line).split()
        if tokens and tokens[0].upper() == b"SEARCH":
            tokens = tokens[1:]
        found.update(int(token) for token in tokens if token.isdigit())
    return sorted(found)


def parse_select(lines: Sequence[bytes | bytearray]) -> MailboxStatus:
    """UIDVALIDITY and UIDNEXT from a SELECT response; ValueError without UIDVALIDITY."""
    codes: dict[str, int] = {}
    for line in lines:
        for name, value in _CODE.findall(bytes(line)):
            codes[name.decode().upper()] = int(value)
    if "UIDVALIDITY" not in codes:
        raise ValueError("the server sent no UIDVALIDITY")
    return MailboxStatus(codes["UIDVALIDITY"], codes.get("UIDNEXT"))


def parse_meta(lines: Sequence[bytes | bytearray], wanted: Iterable[int]) -> list[MessageMeta]:
    """MessageMeta of the wanted UIDs from a UID FETCH response, ascending by UID; unsolicited
    FETCH lines for other messages are ignored, partial ones for the same UID are merged."""
    wanted_set = set(wanted)
    merged: dict[int, dict[str, object]] = {}
    for line in lines:
        text = bytes(line)
        uid_match = _UID.search(text)
        if not _FETCH_START.match(text) or uid_match is None:
            continue
        uid = int(uid_match.group(1))
        if uid in wanted_set:
            merged.setdefault(uid, {}).update(_meta_items(text))
    return [
        MessageMeta(
            uid=uid,
            flags=frozenset(str(item) for item in _as_list(items.get("flags"))),
            internal_date=_as_datetime(items.get("internal_date")),
            size=int(str(items.get("size", 0))),
        )
        for uid, items in sorted(merged.items())
    ]


def _meta_items(text: bytes) -> dict[str, object]:
    """The FLAGS, INTERNALDATE and RFC822.SIZE items present in one FETCH line."""
    items: dict[str, object] = {}
    if flags := _FLAGS.search(text):
        items["flags"] = flags.group(1).decode("ascii", "replace").split()
    if internal := _INTERNALDATE.search(text):
        items["internal_date"] = parse_internal_date(internal.group(1).decode("ascii", "replace"))
    if size := _SIZE.search(text):
        items["size"] = int(size.group(1))
    return items


def _as_list(value: object) -> list[object]:
    """A list value, or an empty list."""
    return list(value) if isinstance(value, list) else []


def _as_datetime(value: object) -> datetime | None:
    """A datetime value, or None."""
    return value if isinstance(value, datetime) else None


def parse_body(lines: Sequence[bytes | bytearray], uid: int) -> bytes | None:
    """The literal (the message bytes) that a UID FETCH (BODY.PEEK[]) returned for this UID."""
    for index, line in enumerate(lines[:-1]):
        if isinstance(line, bytearray) or not _FETCH_START.match(line):
            continue
        uid_match = _UID.search(line)
        literal = lines[index + 1]
        ours = uid_match is None or int(uid_match.group(1)) == uid
        if ours and _LITERAL.search(line) and isinstance(literal, bytearray):
            return bytes(literal)
    return None


def literal_size(line: bytes) -> int | None:
    """The size a server line announces for the literal following it, or None."""
    match = _LITERAL.search(line)
    return int(match.group(1)) if match else None


@dataclass(frozen=True, slots=True)
class HeaderFacts:
    """The few header fields the poller needs before the pipeline parses the message."""

    message_id: str
    return_path: str


def header_facts(data: bytes) -> HeaderFacts:
    """Message-ID (normalized as the parse stage does; '' when none) and the envelope sender of
    raw bytes: the Return-Path address ('' for `<>`, a null sender), or the From address when
    no MTA wrote a Return-Path; free of control characters; never raises."""
    try:
        headers = BytesHeaderParser(policy=policy.compat32).parsebytes(data)
        message_id = str(headers.get("Message-ID", "") or "")
        return_path = str(headers.get("Return-Path", "") or "")
        if not return_path.strip():  # not delivered by an MTA (e.g. APPENDed): not a null sender
            return_path = parseaddr(str(headers.get("From", "") or "")[:1024])[1]
    except Exception:  # compat32 does not raise on bad headers; be certain all the same
        return HeaderFacts("", "")
    address = clean_text(return_path, limit=330).strip().strip("<>").strip()
    return HeaderFacts(normalize_message_id(clean_text(message_id)) or "", address[:320])
