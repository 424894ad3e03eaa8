"""MIME mechanics for the parse stage: header fields, parameters, encoded words, parts, payloads."""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from encodings import normalize_encoding
from encodings.aliases import aliases
from urllib.parse import unquote_to_bytes

MAX_DEPTH = 50
MAX_PARTS = 1000
PART_MAX_FIELDS = 100
PART_MAX_BYTES = 256 * 1024
VALUE_LIMIT = 100 * 1024
_MAX_PARAMS = 100
_MAX_SEGMENTS = 100

Field = tuple[str, str]

_FIELD_NAME = re.compile(rb"([!-9;-~]+)[ \t]*:")
_FIELD_END = re.compile(rb"\n(?![ \t])")
_BLANK_LINE = re.compile(rb"\n\r?\n")
_ENCODED_WORD = re.compile(r"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([bBqQ])\?([^?\s]*)\?=")
_PARAM = re.compile(r'(?:"(?:\\.|[^"\\])*"?|[^;"])+')
_PARAM_NAME = re.compile(r"([^*\s]+)(?:\*(\d{1,4}))?(\*)?")
_MIME_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")
_COMMENT = re.compile(r"\([^()]*\)")
_QUOTED_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"?')
_QUOTED_PAIR = re.compile(r'\\([\\"])')  # as email.utils.unquote: keep Windows paths
_CHARSET_CHARS = re.compile(r"[^a-z0-9._:+-]")
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_JUNK = bytes(c for c in range(256) if c not in _B64_ALPHABET + b"=")
_IDENTITY_ENCODINGS = frozenset({"", "7bit", "8bit", "binary"})
_UNSAFE_CODECS = frozenset(
    {"idna", "punycode", "unicode_escape", "raw_unicode_escape", "undefined"}
)
_EXTRA_CODECS = frozenset(
    {
        "cp720",
        "cp737",
        "cp856",
        "cp874",
        "cp875",
        "cp1006",
        "iso8859_1",
        "koi8_t",
        "koi8_u",
        "mac_arabic",
        "mac_croatian",
        "mac_farsi",
        "mac_romanian",
        "palmos",
        "utf_8_sig",
    }
)
_KNOWN_CODECS = (frozenset(aliases) | frozenset(aliases.values()) | _EXTRA_CODECS) - _UNSAFE_CODECS


@dataclass(frozen=True, slots=True)
class Entity:
    """One MIME entity: type, parameters, nesting depth (top level 0) and where its body lies
    in the message (offsets, so nested parts are never copied while walking)."""

    content_type: str
    params: Mapping[str, str]
    disposition: str
    filename: str | None
    encoding: str
    source: bytes
    start: int
    end: int
    depth: int

    @property
    def body(self) -> bytes:
        """The raw (still transfer-encoded) body bytes."""
        return self.source[self.start : self.end]


def decode_8bit(data: bytes) -> str:
    """Raw header bytes as text: UTF-8 when valid, else Latin-1 (which never fails)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def header_end(data: bytes) -> int:
    """Offset just past the header section's last line (before the blank line), bytes-level."""
    if data.startswith((b"\n", b"\r\n")):
        return 0
    blank = _BLANK_LINE.search(data)
    return blank.start() + 1 if blank else len(data)


def split_head(
    data: bytes, start: int, end: int, *, max_fields: int, max_bytes: int, defects: list[str]
) -> tuple[list[Field], int]:
    """Header fields of data[start:end] (unfolded, decoded, capped) and the offset where the
    body starts; lines are split on LF only, so a bare CR never starts a field."""
    fields: list[Field] = []
    pos = start
    while True:
        if data.startswith((b"\n", b"\r\n"), pos, end):
            return fields, data.index(b"\n", pos, end) + 1
        if pos >= end:
            return fields, end
        if len(fields) >= max_fields or pos - start >= max_bytes:
            defects.append("headers:truncated")
            return fields, _after_blank_line(data, max(pos - 1, start), end)
        name = _FIELD_NAME.match(data, pos, end)
        if name is None:
            defects.append("header:malformed-line")
            return fields, pos
        stop = _FIELD_END.search(data, name.end(), end)
        fields.append(_field(data, name, stop.start() if stop else end, defects))
        pos = stop.end() if stop else end


def _after_blank_line(data: bytes, pos: int, end: int) -> int:
    blank = _BLANK_LINE.search(data, pos, end)
    return blank.end() if blank else end


def _field(data: bytes, name: re.Match[bytes], end: int, defects: list[str]) -> Field:
    key = name.group(1)[:998].decode("ascii")
    start = name.end()
    if end - start > VALUE_LIMIT:
        defects.append(f"header:{key[:64].lower()}:truncated")
        end = start + VALUE_LIMIT
    lines = data[start:end].split(b"\n")
    value = b"".join(line[:-1] if line.endswith(b"\r") else line for line in lines)
    if b"\r" in value:
        defects.append("header:bare-cr")
        value = value.replace(b"\r", b" ")
    return key, decode_8bit(value).strip()


def first_values(fields: list[Field]) -> dict[str, str]:
    """The first value of each field name, keyed by lower-cased name."""
    first: dict[str, str] = {}
    for name, value in fields:
        first.setdefault(name.lower(), value)
    return first


def decode_words(value: str, defects: list[str]) -> str:
    """RFC 2047 decoding in one linear pass; undecodable words become U+FFFD."""
    if "=?" not in value:
        return value
    out: list[str] = []
    pending: list[bytes] = []
    charset = ""
    last = 0
    for match in _ENCODED_WORD.finditer(value):
        gap = value[last : match.start()]
        if not pending or gap.strip():
            _flush(out, pending, charset, defects)
            out.append(gap)
        word = _word_bytes(match.group(2), match.group(3))
        if word is None:
            _flush(out, pending, charset, defects)
            out.append("\ufffd")
            defects.append("header:bad-encoded-word")
        else:
            if match.group(1).lower() != charset:
                _flush(out, pending, charset, defects)
            charset = match.group(1).lower()
            pending.append(word)
        last = match.end()
    _flush(out, pending, charset, defects)
    out.append(value[last:])
    return "".join(out)


def _flush(out: list[str], pending: list[bytes], charset: str, defects: list[str]) -> None:
    if pending:
        out.append(decode_bytes(b"".join(pending), charset, defects))
        pending.clear()


def _word_bytes(kind: str, text: str) -> bytes | None:
    data = text.encode("utf-8", "replace")
    if kind in "qQ":
        return binascii.a2b_qp(data, header=True)
    data = data.rstrip(b"=")
    if len(data) % 4 == 1:
        return None
    try:
        return binascii.a2b_base64(data + b"=" * (-len(data) % 4), strict_mode=True)
    except binascii.Error:
        return None


def decode_bytes(data: bytes, charset: str | None, defects: list[str]) -> str:
    """Bytes in a declared charset; none/ASCII -> UTF-8 else Latin-1; unknown -> UTF-8 replace."""
    name = (charset or "").strip().strip('"').lower()
    if name in ("", "us-ascii", "ascii"):
        return decode_8bit(data)
    if normalize_encoding(name) not in _KNOWN_CODECS:
        defects.append(f"charset:{_CHARSET_CHARS.sub('?', name[:40])}")
        return data.decode("utf-8", "replace")
    try:
        return data.decode(name, "replace")
    except (LookupError, ValueError, TypeError):
        defects.append(f"charset:{_CHARSET_CHARS.sub('?', name[:40])}")
        return data.decode("utf-8", "replace")


def parse_params(value: str) -> tuple[str, dict[str, str]]:
    """`type/subtype; a=b; c*=utf-8''x` -> lower-cased first token and decoded parameters."""
    head, _, rest = value.partition(";")
    segments: dict[str, dict[int, tuple[bool, str]]] = {}
    for count, match in enumerate(_PARAM.finditer(rest)):
        if count >= _MAX_PARAMS:
            break
        _add_param(match.group(0), segments)
    params = {name: _join_segments(parts) for name, parts in segments.items()}
    return _COMMENT.sub("", head).strip().lower(), params


def _add_param(piece: str, segments: dict[str, dict[int, tuple[bool, str]]]) -> None:
    name, sep, raw = piece.partition("=")
    match = _PARAM_NAME.fullmatch(name.strip().lower())
    if not sep or match is None:
        return
    parts = segments.setdefault(match.group(1), {})
    parts.setdefault(int(match.group(2) or 0), (match.group(3) is not None, _unquote(raw)))


def _unquote(raw: str) -> str:
    raw = raw.strip()
    if not raw.startswith('"'):
        return _COMMENT.sub("", raw).strip()
    quoted = _QUOTED_STRING.match(raw)
    return _QUOTED_PAIR.sub(r"\1", quoted.group(1) if quoted else raw[1:])


def _join_segments(parts: dict[int, tuple[bool, str]]) -> str:
    ordered = [parts[index] for index in sorted(parts)][:_MAX_SEGMENTS]
    if len(ordered) == 1 and not ordered[0][0]:
        return ordered[0][1]
    charset = ""
    chunks: list[bytes] = []
    for position, (encoded, text) in enumerate(ordered):
        if encoded and position == 0 and text.count("'") >= 2:
            charset, _, text = text.split("'", 2)
        chunks.append(unquote_to_bytes(text) if encoded else text.encode("utf-8", "replace"))
    return decode_bytes(b"".join(chunks), charset, [])


def entity(
    fields: Mapping[str, str],
    span: tuple[bytes, int, int],
    depth: int,
    default_type: str,
    defects: list[str],
) -> Entity:
    """The MIME entity described by its first header values (content-type, -disposition, -te)."""
    content_type, params = parse_params(fields.get("content-type", ""))
    if _MIME_TYPE.fullmatch(content_type) is None:
        if content_type:
            defects.append("mime:bad-content-type")
        content_type = default_type
    disposition, disposition_params = parse_params(fields.get("content-disposition", ""))
    filename = disposition_params.get("filename") or params.get("name")
    return Entity(
        content_type=content_type,
        params=params,
        disposition=disposition,
        filename=None if filename is None else decode_words(filename, defects),
        encoding=fields.get("content-transfer-encoding", "").strip().lower(),
        source=span[0],
        start=span[1],
        end=span[2],
        depth=depth,
    )


def walk(top: Entity, defects: list[str]) -> Iterator[Entity]:
    """Leaf entities in document order, iteratively; deep or surplus parts are skipped."""
    stack = [top]
    budget = MAX_PARTS
    while stack:
        current = stack.pop()
        if not current.content_type.startswith("multipart/"):
            yield current
        elif current.depth >= MAX_DEPTH:
            defects.append("mime:too-deep")
        elif budget <= 0:
            defects.append("mime:too-many-parts")
        else:
            children = _children(current, budget, defects)
            if children is None:
                yield replace(current, content_type="text/plain")
                continue
            budget -= len(children)
            stack.extend(reversed(children))


def _children(parent: Entity, budget: int, defects: list[str]) -> list[Entity] | None:
    boundary = parent.params.get("boundary", "")
    if not boundary or len(boundary) > 998:
        defects.append("mime:no-boundary")
        return None
    spans = _split(parent, boundary.encode("utf-8", "replace"), budget + 1)
    if spans is None:
        defects.append("mime:boundary-not-found")
        return None
    if len(spans) > budget:
        defects.append("mime:too-many-parts")
        del spans[budget:]
    default = "message/rfc822" if parent.content_type == "multipart/digest" else "text/plain"
    return [_child(parent.source, span, parent.depth + 1, default, defects) for span in spans]


def _child(
    source: bytes, span: tuple[int, int], depth: int, default_type: str, defects: list[str]
) -> Entity:
    fields, body_start = split_head(
        source, *span, max_fields=PART_MAX_FIELDS, max_bytes=PART_MAX_BYTES, defects=defects
    )
    return entity(first_values(fields), (source, body_start, span[1]), depth, default_type, defects)


def _split(parent: Entity, boundary: bytes, limit: int) -> list[tuple[int, int]] | None:
    """Spans of the part bodies between delimiter lines (at most `limit`); None when the
    body holds no delimiter. Searches in place: nothing is copied."""
    source, start, end = parent.source, parent.start, parent.end
    pattern = re.compile(re.escape(b"--" + boundary) + rb"(--)?[ \t]*(?:\r?\n|\r?\Z)")
    marks: list[re.Match[bytes]] = []
    for match in pattern.finditer(source, start, end):
        if match.start() == start or source[match.start() - 1] == 0x0A:
            marks.append(match)
            if match.group(1) or len(marks) > limit:
                break
    if not marks:
        return None
    spans: list[tuple[int, int]] = []
    for mark, following in zip(marks, [*marks[1:], None], strict=True):
        if mark.group(1):
            break
        stop = end if following is None else _before_linebreak(source, following.start())
        spans.append((mark.end(), max(stop, mark.end())))
    return spans[:limit]


def _before_linebreak(source: bytes, pos: int) -> int:
    if source[pos - 2 : pos] == b"\r\n":
        return pos - 2
    return pos - 1 if source[pos - 1 : pos] == b"\n" else pos


def payload(part: Entity, defects: list[str]) -> bytes:
    """The part's body with its Content-Transfer-Encoding undone (best effort, never raises)."""
    if part.encoding == "base64":
        data, valid = decode_base64(part.body)
        if not valid:
            defects.append("mime:bad-base64")
        return data
    if part.encoding == "quoted-printable":
        return binascii.a2b_qp(part.body)
    if part.encoding not in _IDENTITY_ENCODINGS:
        defects.append("mime:unknown-transfer-encoding")
    return part.body


def decode_base64(data: bytes) -> tuple[bytes, bool]:
    """Decoded bytes and whether the input was valid; invalid input is decoded chunk-wise."""
    try:
        return binascii.a2b_base64(data.translate(None, b" \t\r\n"), strict_mode=True), True
    except binascii.Error:
        pass
    chunks = data.translate(None, _B64_JUNK).split(b"=")
    return b"".join(_base64_chunk(chunk) for chunk in chunks if chunk), False


def _base64_chunk(chunk: bytes) -> bytes:
    usable = chunk[: len(chunk) - 1] if len(chunk) % 4 == 1 else chunk
    return binascii.a2b_base64(usable + b"=" * (-len(usable) % 4))
