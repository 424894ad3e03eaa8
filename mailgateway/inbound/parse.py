"""The parse stage: raw message bytes -> Parsed, for any input, failures recorded as defects."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy, utils
from email.headerregistry import Address as HeaderAddress
from itertools import chain
from typing import TypeVar

from mailgateway.domain import Address, AttachmentInfo, Parsed
from mailgateway.inbound import mime

HEADER_MAX_FIELDS = 1000
HEADER_MAX_BYTES = 1024 * 1024
ADDRESS_LIMIT = 1000
REFERENCES_LIMIT = 100
BODY_LIMIT = 2 * 1024 * 1024
FILENAME_LIMIT = 255
DEFECT_LIMIT = 100
SINGLETONS = frozenset(
    {
        "date",
        "from",
        "sender",
        "reply-to",
        "to",
        "cc",
        "bcc",
        "message-id",
        "in-reply-to",
        "references",
        "subject",
    }
)
# CPython's address parsers cost 1-20 µs a character (more on quotes and nesting): only short,
# unusual pieces go through them, within a per-message budget; common forms use a regex.
_STRUCTURED_PIECE_LIMIT = 1024
_STRUCTURED_BUDGET = 8 * 1024
_FALLBACK_PIECE_LIMIT = 8 * 1024
_FALLBACK_BUDGET = 64 * 1024
_EMAIL_LIMIT = 254
_DATE_LIMIT = 256

_LINE_BREAKS = (0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x85, 0x2028, 0x2029)
_CONTROLS = (*range(0x01, 0x20), *range(0x7F, 0xA0))
_TEXT_TABLE: dict[int, str | None] = {
    **{code: None for code in _CONTROLS if code != 0x09},
    **{code: " " for code in _LINE_BREAKS},
    0x00: "\ufffd",
}
_SURROGATES = re.compile("[\ud800-\udfff]")
_FILENAME_DROP = re.compile(
    "[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]"
)
_WHITESPACE = re.compile(r"\s+")
_ID_TEXT = "[^\\s<>\x00-\x1f\x7f-\x9f\ud800-\udfff"
_MESSAGE_ID = re.compile(f"({_ID_TEXT}]+)@({_ID_TEXT}@]+)")
_BRACKETED = re.compile(r"<[^<>]*>")
_ADDRESS_SPECIALS = re.compile(r'[\\"(),<>]')
_ADDR = r'[^<>\s"(),:;@\\]+@[^<>\s"(),:;@\\]+'
_SIMPLE_ADDRESS = re.compile(
    rf'(?:(?P<name>"(?:[^"\\]|\\.)*"\s*|[^<>"(),:;@\\]*)<(?P<angle>{_ADDR})>|(?P<bare>{_ADDR}))'
)
_QUOTED_PAIR = re.compile(r"\\(.)")
_BAD_DOMAIN = re.compile(r"[\s<>]")
_RECEIVED = re.compile(rb"\nreceived[ \t]*:")
_BODY_TYPES = frozenset({"text/plain", "text/html"})

T = TypeVar("T")


def parse(raw: bytes, *, id_domain: str = "mailgateway.invalid") -> Parsed:
    """Derive a Parsed from any bytes; never raises (a failed field becomes empty + defect)."""
    try:
        return _parse(raw, id_domain)
    except Exception as exc:  # the stage boundary: no input may escape as an exception
        return _unparsed(raw, id_domain, f"parse:{type(exc).__name__}")


def clean_text(value: str, *, limit: int | None = None) -> str:
    """Header-safe text: NUL -> U+FFFD, line breaks -> space, other controls dropped (TAB
    kept), lone surrogates -> U+FFFD; cut to `limit` characters when given."""
    if not value.isprintable():
        value = _SURROGATES.sub("\ufffd", value.translate(_TEXT_TABLE))
    return value if limit is None else value[:limit]


def normalize_message_id(value: str) -> str | None:
    """`<local@domain>` with comments and whitespace removed and the domain lower-cased;
    None when the value is not a plausible message id."""
    text = _WHITESPACE.sub("", _strip_comments(value))
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    match = _MESSAGE_ID.fullmatch(text)
    if match is None or len(text) > 996:
        return None
    return f"<{match.group(1)}@{match.group(2).lower()}>"


def received_count(raw: bytes) -> int:
    """Number of Received: fields in the header section, counted on bytes without parsing."""
    head = b"\n" + raw[: mime.header_end(raw)].lower()
    return len(_RECEIVED.findall(head))


def _parse(raw: bytes, id_domain: str) -> Parsed:
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
    defects.extend(_duplicates(fields))
    first = mime.first_values(fields)
    reader = _AddressReader(defects)
    message_id = _guarded(
        "header:message-id", defects, None, lambda: _message_id(first.get("message-id"), defects)
    )
    text, html, attachments = _contents(first, (raw, body_start, len(raw)), defects)
    return Parsed(
        message_id=message_id or _generated_id(raw, id_domain),
        message_id_generated=message_id is None,
        in_reply_to=_guarded(
            "header:in-reply-to",
            defects,
            (),
            lambda: _id_list(first.get("in-reply-to"), "in-reply-to", defects),
        ),
        references=_guarded(
            "header:references",
            defects,
            (),
            lambda: _id_list(first.get("references"), "references", defects),
        ),
        subject=_guarded("header:subject", defects, "", lambda: _subject(first, defects)),
        from_=_guarded("header:from", defects, None, lambda: _from(first, reader)),
        to=_guarded("header:to", defects, (), lambda: reader.read(first, "to")),
        cc=_guarded("header:cc", defects, (), lambda: reader.read(first, "cc")),
        reply_to=_guarded("header:reply-to", defects, (), lambda: reader.read(first, "reply-to")),
        date=_guarded("header:date", defects, None, lambda: _date(first.get("date"), defects)),
        text=text,
        html=html,
        attachments=attachments,
        headers=tuple((clean_text(name), clean_text(value)) for name, value in fields),
        defects=tuple(dict.fromkeys(defects))[:DEFECT_LIMIT],
    )


def _unparsed(raw: bytes, id_domain: str, defect: str) -> Parsed:
    return Parsed(
        message_id=_generated_id(raw, id_domain),
        message_id_generated=True,
        in_reply_to=(),
        references=(),
        subject="",
        from_=None,
        to=(),
        cc=(),
        reply_to=(),
        date=None,
        text=None,
        html=None,
        attachments=(),
        headers=(),
        defects=(defect,),
    )


def _guarded(label: str, defects: list[str], default: T, compute: Callable[[], T]) -> T:
    try:
        return compute()
    except Exception as exc:  # one field's failure must not lose the others
        defects.append(f"{label}:{type(exc).__name__}")
        return default


def _duplicates(fields: list[mime.Field]) -> list[str]:
    seen: set[str] = set()
    found: list[str] = []
    for name, _ in fields:
        key = name.lower()
        if key in seen and key in SINGLETONS:
            found.append(f"duplicate:{key}")
        seen.add(key)
    return found


def _generated_id(raw: bytes, id_domain: str) -> str:
    domain = _WHITESPACE.sub("", clean_text(id_domain)).lower() or "mailgateway.invalid"
    return f"<{hashlib.sha256(raw).hexdigest()[:32]}@{domain}>"


def _strip_comments(value: str) -> str:
    if "(" not in value:
        return value
    kept: list[str] = []
    depth = 0
    escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\" and depth:
            escaped = True
        elif char in "()":
            depth = depth + 1 if char == "(" else max(depth - 1, 0)
        elif not depth:
            kept.append(char)
    return "".join(kept)


def _message_ids(value: str) -> list[str]:
    text = _strip_comments(value)
    tokens = _BRACKETED.findall(text) or text.replace(",", " ").split()
    return [found for token in tokens if (found := normalize_message_id(token)) is not None]


def _message_id(value: str | None, defects: list[str]) -> str | None:
    found = _message_ids(value) if value is not None else []
    if not found:
        defects.append("message-id:missing" if value is None else "message-id:invalid")
    return found[0] if found else None


def _id_list(value: str | None, name: str, defects: list[str]) -> tuple[str, ...]:
    found = _message_ids(value or "")
    if len(found) > REFERENCES_LIMIT:
        defects.append(f"{name}:truncated")
    return tuple(found[-REFERENCES_LIMIT:])


def _subject(first: Mapping[str, str], defects: list[str]) -> str:
    return clean_text(mime.decode_words(first.get("subject", ""), defects)).strip()


def _date(value: str | None, defects: list[str]) -> datetime | None:
    if value is None:
        return None
    try:
        when = utils.parsedate_to_datetime(value[:_DATE_LIMIT])
    except (TypeError, ValueError, IndexError, OverflowError):
        defects.append("header:date:invalid")
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _from(first: Mapping[str, str], reader: _AddressReader) -> Address | None:
    if "from" not in first:
        reader.defects.append("header:from:missing")
        return None
    found = reader.read(first, "from")
    if not found:
        reader.defects.append("header:from:invalid")
    return found[0] if found else None


@dataclass(slots=True)
class _AddressReader:
    """Reads one message's address fields: common forms by regex, unusual short pieces by
    CPython's parser within a budget, the rest by the compat32 parser."""

    defects: list[str]
    structured_budget: int = _STRUCTURED_BUDGET
    fallback_budget: int = _FALLBACK_BUDGET

    def read(self, first: Mapping[str, str], field: str) -> tuple[Address, ...]:
        pieces, cut = _address_pieces(first.get(field, ""), ADDRESS_LIMIT)
        if cut:
            self.defects.append(f"address:{field}:truncated")
        found: list[Address] = []
        for piece in pieces:
            for name, email in self._pairs(piece.strip(), field):
                address = _address(name, email)
                if address is None:
                    self.defects.append(f"address:{field}:invalid")
                else:
                    found.append(address)
        return tuple(found)

    def _pairs(self, piece: str, field: str) -> list[tuple[str, str]]:
        simple = _SIMPLE_ADDRESS.fullmatch(piece)
        if simple is not None:
            name = (simple["name"] or "").strip()
            if name.startswith('"'):
                name = _QUOTED_PAIR.sub(r"\1", name[1:-1])
            return [(mime.decode_words(name, self.defects), simple["angle"] or simple["bare"])]
        structured = self._structured(piece, field)
        return self._fallback(piece) if structured is None else structured

    def _structured(self, piece: str, field: str) -> list[tuple[str, str]] | None:
        if len(piece) > min(_STRUCTURED_PIECE_LIMIT, self.structured_budget):
            return None
        self.structured_budget -= len(piece)
        try:
            found: tuple[HeaderAddress, ...] = policy.default.header_factory(field, piece).addresses
            return [(item.display_name, item.addr_spec) for item in found]
        except Exception as exc:  # CPython's header parser has crashers (gh-148518, gh-151857)
            self.defects.append(f"header:{field}:{type(exc).__name__}")
            return None

    def _fallback(self, piece: str) -> list[tuple[str, str]]:
        if len(piece) > min(_FALLBACK_PIECE_LIMIT, self.fallback_budget):
            return [("", "")]
        self.fallback_budget -= len(piece)
        try:
            name, email = utils.parseaddr(piece)
        except Exception:  # the compat32 parser is the last resort; give up on this piece
            return [("", "")]
        return [(mime.decode_words(name, self.defects), email)]


def _address_pieces(value: str, limit: int) -> tuple[list[str], bool]:
    """Non-blank pieces between top-level commas, at most `limit`; True when some were left."""
    pieces: list[str] = []
    start = 0
    for end in chain(_top_level_commas(value), [len(value)]):
        piece, start = value[start:end], end + 1
        if not piece.strip():
            continue
        if len(pieces) == limit:
            return pieces, True
        pieces.append(piece)
    return pieces, False


def _top_level_commas(value: str) -> Iterator[int]:
    """Offsets of the commas outside quoted strings, comments and angle brackets."""
    skip = -1
    quoted = angle = False
    comment = 0
    for match in _ADDRESS_SPECIALS.finditer(value):
        pos, char = match.start(), match.group()
        if pos == skip:
            continue
        if char == "\\":
            skip = pos + 1
        elif quoted:
            quoted = char != '"'
        elif comment:
            comment += 1 if char == "(" else -1 if char == ")" else 0
        elif char == '"':
            quoted = True
        elif char == "(":
            comment = 1
        elif char in "<>":
            angle = char == "<"
        elif char == "," and not angle:
            yield pos


def _address(name: str, email: str) -> Address | None:
    email = clean_text(email).strip().lower()
    local, at, domain = email.rpartition("@")
    if not (at and local and domain) or _BAD_DOMAIN.search(domain) or len(email) > _EMAIL_LIMIT:
        return None
    return Address(email=email, name=clean_text(name).strip())


def _contents(
    first: Mapping[str, str], span: tuple[bytes, int, int], defects: list[str]
) -> tuple[str | None, str | None, tuple[AttachmentInfo, ...]]:
    bodies: dict[str, str] = {}
    attachments: list[AttachmentInfo] = []
    try:
        for part in mime.walk(mime.entity(first, span, 0, "text/plain", defects), defects):
            if _is_attachment(part):
                attachments.append(_attachment(part, defects))
            elif part.content_type in _BODY_TYPES and part.content_type not in bodies:
                bodies[part.content_type] = _body_text(part, defects)
    except Exception as exc:  # keep what was collected before the failure
        defects.append(f"mime:{type(exc).__name__}")
    return bodies.get("text/plain"), bodies.get("text/html"), tuple(attachments)


def _is_attachment(part: mime.Entity) -> bool:
    return (
        part.disposition == "attachment"
        or part.filename is not None
        or part.content_type in ("message/rfc822", "message/global")
    )


def _attachment(part: mime.Entity, defects: list[str]) -> AttachmentInfo:
    size = len(mime.payload(part, defects))
    return AttachmentInfo(_filename(part.filename), part.content_type, size)


def _body_text(part: mime.Entity, defects: list[str]) -> str:
    data = mime.payload(part, defects)
    label = part.content_type.removeprefix("text/").replace("plain", "text")
    cut = len(data) > 8 * BODY_LIMIT
    text = mime.decode_bytes(data[: 8 * BODY_LIMIT], part.params.get("charset"), defects)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "\ufffd")
    if cut or len(text) > BODY_LIMIT:
        defects.append(f"{label}:truncated")
    return _SURROGATES.sub("\ufffd", text[:BODY_LIMIT])


def _filename(raw: str | None) -> str:
    name = _SURROGATES.sub("\ufffd", _FILENAME_DROP.sub("", raw or ""))
    name = name[max(name.rfind("/"), name.rfind("\\")) + 1 :].strip()
    if not name.strip("."):
        return "attachment"
    if len(name) <= FILENAME_LIMIT:
        return name
    stem, dot, suffix = name.rpartition(".")
    if dot and stem and len(suffix) <= 16:
        return f"{stem[: FILENAME_LIMIT - len(suffix) - 1]}.{suffix}"
    return name[:FILENAME_LIMIT]
