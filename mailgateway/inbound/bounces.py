"""Bounces (pure): failed recipients and the original Message-ID, from RFC 3464 delivery status
notifications and the common non-standard formats (qmail, Exim, X-Failed-Recipients, inline)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice

from mailgateway.domain import DeliveryStatus, Parsed
from mailgateway.inbound import mime
from mailgateway.inbound.parse import clean_text, normalize_message_id

SCAN_LIMIT = 256 * 1024
DIAGNOSTIC_LIMIT = 500
MAX_RECIPIENTS = 100
STATUS_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
ORIGINAL_TYPES = frozenset(
    {
        "message/rfc822",
        "message/global",
        "text/rfc822-headers",
        "message/rfc822-headers",
        "message/global-headers",
    }
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered mail|delivery status notification|mail delivery fail"
    r"|delivery failure|failure notice|returned mail|non remis|unzustellbar|onbestelbaar"
    r"|non recapitabile|no se puede entregar|olevererbar|niedostarczalne|nedoručitelné"
    r"|kézbesíthetetlen|не доставлено|warning: message .* delayed|delivery (?:has )?delayed",
    re.IGNORECASE,
)
_DELAY_SUBJECT = re.compile(r"\bdelay|\bwarning:|verzögert|retardé|retrasad", re.IGNORECASE)
_SYSTEM_LOCAL = re.compile(r"mailer-daemon|mailer_daemon|postmaster", re.IGNORECASE)
# "--.*", not "-{2,}.*": further dashes fall to ".*" anyway, and splitting a long run of them
# between the two was quadratic.
_COPY_MARKER = re.compile(
    r"^[ \t]*--.*(?:copy of the message|original message|original headers|message follows)",
    re.IGNORECASE | re.MULTILINE,
)
# The address is atomic: every split at an '@' ends where the same run ends, so when '>:'
# does not follow, no other split can match (retrying them all was quadratic on "<@@@@…").
_QMAIL = re.compile(
    r"^<((?>[^<>\s]+@[^<>\s]+))>:[ \t]*\n((?:[ \t]*\S[^\n]*(?:\n|\Z)){0,20})", re.MULTILINE
)
# The lookahead asks for the line end first: without it, an unterminated last line such as
# "  @@@@…" was tried at every split of the address and every length of the rest (cubic).
_EXIM = re.compile(
    r"^ {2}(?=[^\n]*\n)(\S+@[^\s:]+)[^\n]*\n((?: {4,}\S[^\n]*(?:\n|\Z)){0,20})", re.MULTILINE
)
_EXIM_INTRO = re.compile(r"following address(?:\(es\)|es)? failed", re.IGNORECASE)
_MESSAGE_ID_LINE = re.compile(r"^message-id:[ \t]*(\S[^\n]{0,996})", re.IGNORECASE | re.MULTILINE)
_ENHANCED_STATUS = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")
_SMTP_REPLY = re.compile(r"\b[45]\d\d[ -][245]\.\d{1,3}\.\d{1,3}\b[^\n]{0,400}")
_BLOCK_BREAK = re.compile(rb"\n[ \t]*\n")
# Runs of the characters an address may hold (no controls, no NUL): see `_addresses`.
_ADDRESS_RUN = re.compile(r"[^\s<>;:,\"\x00-\x1f\x7f]+")


@dataclass(frozen=True, slots=True)
class FailedRecipient:
    """One recipient a bounce reports: failed for good, or delayed (still being retried)."""

    recipient: str
    action: DeliveryStatus
    status: str = ""
    diagnostic: str = ""


@dataclass(frozen=True, slots=True)
class Bounce:
    """What a bounce says: its format, the bounced message's Message-ID, and the recipients."""

    format: str
    original_message_id: str | None
    recipients: tuple[FailedRecipient, ...]

    @property
    def addresses(self) -> frozenset[str]:
        """Every reported recipient address."""
        return frozenset(item.recipient for item in self.recipients)

    def as_record(self) -> dict[str, object]:
        """A JSON-ready record of the bounce, stored on the bounce message."""
        return {
            "format": self.format,
            "original_message_id": self.original_message_id,
            "recipients": [
                {
                    "recipient": r.recipient,
                    "action": r.action.value,
                    "status": r.status,
                    "diagnostic": r.diagnostic,
                }
                for r in self.recipients
            ],
        }


def parse_bounce(raw: bytes, parsed: Parsed, mail_from: str, text: str | None) -> Bounce | None:
    """The bounce a message carries, or None when it is not one; never raises."""
    try:
        return _parse_bounce(raw, parsed, mail_from, text or "")
    except Exception:  # the stage boundary: a malformed report is simply not a bounce
        return None


def looks_like_bounce(parsed: Parsed, mail_from: str) -> bool:
    """Signs of a non-standard bounce: null or system sender, X-Failed-Recipients, a subject."""
    sender = parsed.from_.email if parsed.from_ is not None else ""
    local = sender.rpartition("@")[0]
    return (
        not mail_from.strip().strip("<>").strip()
        or _SYSTEM_LOCAL.fullmatch(local) is not None
        or parsed.header("x-failed-recipients") is not None
        or _BOUNCE_SUBJECT.search(parsed.subject) is not None
    )


def _parse_bounce(raw: bytes, parsed: Parsed, mail_from: str, text: str) -> Bounce | None:
    parts = _parts(raw)
    reports = [part for part in parts if part.content_type in STATUS_TYPES]
    if reports:
        data = mime.payload(reports[0], [])[:SCAN_LIMIT]
        found, kind = list(_dsn_recipients(data)), "dsn"
    elif looks_like_bounce(parsed, mail_from):
        found, kind = _text_recipients(parsed, text[:SCAN_LIMIT])
    else:
        return None
    if not found and parsed.header("x-failed-recipients") is not None:
        found, kind = list(_header_recipients(parsed, text)), "x-failed-recipients"
    original = _original_id(parts, text[:SCAN_LIMIT])
    if not found and original is None:
        return None
    unique = {item.recipient: item for item in reversed(found[:MAX_RECIPIENTS])}
    return Bounce(kind, original, tuple(reversed(unique.values())))


def _parts(raw: bytes) -> list[mime.Entity]:
    """The leaf MIME parts of the message (bounded by the mime module's caps)."""
    defects: list[str] = []
    fields, body_start = mime.split_head(
        raw, 0, len(raw), max_fields=1000, max_bytes=1024 * 1024, defects=defects
    )
    top = mime.entity(
        mime.first_values(fields), (raw, body_start, len(raw)), 0, "text/plain", defects
    )
    return list(mime.walk(top, defects))


def _dsn_recipients(data: bytes) -> Iterator[FailedRecipient]:
    """Per-recipient blocks of a message/delivery-status body (RFC 3464 §2.3)."""
    text = data.replace(b"\r\n", b"\n")
    for block in _BLOCK_BREAK.split(text):
        chunk = block.strip(b"\n") + b"\n"
        fields, _ = mime.split_head(
            chunk, 0, len(chunk), max_fields=100, max_bytes=64 * 1024, defects=[]
        )
        first = mime.first_values(fields)
        recipient = _address(first.get("final-recipient") or first.get("original-recipient"))
        if recipient is None:
            continue
        action = _action(first.get("action", ""), first.get("status", ""))
        if action is not None:
            yield FailedRecipient(
                recipient,
                action,
                _status(first.get("status", "")),
                _diagnostic(
                    first.get("diagnostic-code", "").partition(";")[2]
                    or first.get("diagnostic-code", "")
                ),
            )


def _text_recipients(parsed: Parsed, text: str) -> tuple[list[FailedRecipient], str]:
    """Recipients of a plain-text bounce: inline DSN fields, qmail/Yahoo, Exim."""
    head = text[: marker.start()] if (marker := _COPY_MARKER.search(text)) else text
    action = DeliveryStatus.DELAYED if _DELAY_SUBJECT.search(parsed.subject) else None
    inline = list(_dsn_recipients(head.encode("utf-8", "replace")))
    if inline:
        return inline, "inline-dsn"
    qmail = [_recipient(match.group(1), match.group(2), action) for match in _QMAIL.finditer(head)]
    if qmail:
        return qmail, "qmail"
    intro = _EXIM_INTRO.search(head)
    if intro is not None:
        exim = [
            _recipient(match.group(1), match.group(2), action)
            for match in _EXIM.finditer(head, intro.end())
        ]
        if exim:
            return exim, "exim"
    return [], "text"


def _header_recipients(parsed: Parsed, text: str) -> Iterator[FailedRecipient]:
    """X-Failed-Recipients (Exim, Gmail), with the first SMTP error in the text."""
    value = parsed.header("x-failed-recipients") or ""
    reply = _SMTP_REPLY.search(text[:SCAN_LIMIT])
    diagnostic = reply.group(0) if reply else ""
    for address in islice(_addresses(value), MAX_RECIPIENTS):
        yield _recipient(address, diagnostic, None)


def _recipient(address: str, diagnostic: str, action: DeliveryStatus | None) -> FailedRecipient:
    """A recipient of a text bounce; failed unless the bounce says it is only delayed."""
    text = _diagnostic(diagnostic)
    return FailedRecipient(
        address.strip("<>").lower(), action or DeliveryStatus.FAILED, _status(text), text
    )


def _original_id(parts: list[mime.Entity], text: str) -> str | None:
    """The bounced message's Message-ID: from an attached original or its headers, else from
    a Message-ID line of the quoted copy in the text."""
    for part in parts:
        if part.content_type in ORIGINAL_TYPES:
            data = mime.payload(part, [])[:SCAN_LIMIT]
            fields, _ = mime.split_head(
                data, 0, len(data), max_fields=1000, max_bytes=SCAN_LIMIT, defects=[]
            )
            value = mime.first_values(fields).get("message-id")
            if value is not None and (found := normalize_message_id(value)) is not None:
                return found
    for match in _MESSAGE_ID_LINE.finditer(text):
        found = normalize_message_id(match.group(1))
        if found is not None:
            return found
    return None


def _address(value: str | None) -> str | None:
    """The address of a `rfc822; user@example.com` recipient field, lower-cased."""
    if not value:
        return None
    found = next(_addresses(value.partition(";")[2] or value), None)
    return found.lower()[:320] if found else None


def _addresses(text: str) -> Iterator[str]:
    """The addresses in a text: its runs of address characters with an '@' inside, which is
    what searching `x+@x+` finds, in one pass (that search started again at every character of
    a long run without an '@': quadratic)."""
    for match in _ADDRESS_RUN.finditer(text):
        run = match.group(0)
        if "@" in run[1:-1]:
            yield run


def _action(action: str, status: str) -> DeliveryStatus | None:
    """failed / delayed from the Action field (or the Status class when it is missing)."""
    word = action.strip().lower()
    if word == "failed" or (not word and status.strip().startswith("5")):
        return DeliveryStatus.FAILED
    if word == "delayed" or (not word and status.strip().startswith("4")):
        return DeliveryStatus.DELAYED
    return None


def _status(text: str) -> str:
    """The first enhanced status code (RFC 3463) in a text, or ''."""
    match = _ENHANCED_STATUS.search(text)
    return match.group(1) if match else ""


def _diagnostic(text: str) -> str:
    """A diagnostic on one line, cleaned and bounded."""
    return " ".join(clean_text(text).split())[:DIAGNOSTIC_LIMIT]
