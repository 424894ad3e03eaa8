"""Find the forwarded message in a mail: its sender, recipients, subject, date, body and note."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.message import Message
from email.utils import getaddresses
from html.parser import HTMLParser

from mailgateway.domain import Address
from mailgateway.inbound.forward_labels import (
    COLONS,
    FORWARD_PHRASES,
    FORWARD_SUBJECT_PREFIXES,
    LABEL_SIZES,
    LABELS,
    MAX_GLUED_LABEL,
    MAX_LABEL_CHARS,
    ORIGINAL_PHRASES,
    REPLY_SUBJECT_PREFIXES,
    WHITESPACE,
    WROTE_CONNECTORS,
    Field,
    label_key,
)

__all__ = [
    "Forward",
    "ForwardRule",
    "html_to_text",
    "parse_addresses",
    "parse_attached_forward",
    "parse_forward",
]

MAX_TEXT_CHARS = 1 << 20  # text read from a body (1 MiB of characters)
MAX_HTML_CHARS = 1 << 20  # HTML read when there is no text part
MAX_TAG_CHARS = 4000  # a tag's attributes are no longer than this
MAX_SCAN_LINES = 2000  # lines searched for the start of a forwarded block
MAX_HEADER_LINES = 30  # lines a header block may span
MAX_BLANKS_AFTER_MARKER = 8  # blank lines allowed between a separator and its headers
MAX_MARKER_CHARS = 160  # a separator's phrase lies within the first characters of its line
MAX_GLUED_CHARS = 4000  # characters scanned for labels glued on one line (Yahoo), per message
MAX_WROTE_CHARS = 400  # an "On <date>, <name> <address> wrote:" line is no longer than this
MAX_VALUE_CHARS = 16384  # characters of one header value read for addresses
MAX_ADDRESS_CHARS = 256  # an address (in brackets or bare) is no longer than this
MAX_QUOTED_CHARS = 256  # a quoted display name is no longer than this
QUOTE_CHARS = {'"': '"', "'": "'", "«": "»", "„": "”“", "“": "”", "‘": "’"}  # opening: closings

_DATE_TOKEN = re.compile(r"\d{1,4}(?:[./:-]\d{1,4}){1,2}(?: ?[AaPp]\.?[Mm]\.?)?")
_EMAIL = re.compile(r"[^\s@<>()\[\],;:\"']+@[^\s@<>()\[\],;:\"']+")
_HTML_SPACE = re.compile(r"[ \t\r\n\f]+")
_QUOTE_PREFIX = re.compile(r"[ \t>]*")
_ADDRESS_SPECIAL = re.compile("[<,;" + re.escape("".join(QUOTE_CHARS)) + "]")
# A tag or declaration as it follows a '<' (the markup is split at each '<').
_TAG = re.compile(rf"(/?)([A-Za-z][A-Za-z0-9:_-]{{0,63}})(?:[\s/][^>]{{0,{MAX_TAG_CHARS}}})?>")
_DECLARATION = re.compile(rf"[!?][^>]{{0,{MAX_TAG_CHARS}}}>")
_TAG_STARTS = frozenset("/!?abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class ForwardRule(enum.StrEnum):
    """Which kind of marker introduced the forwarded message."""

    #: "---------- Forwarded message ---------", "Begin forwarded message:" and the like
    SEPARATOR = "separator"
    #: "-----Original Message-----" or a rule line, then headers; not under a reply subject
    ORIGINAL_MESSAGE = "original_message"
    #: a bare From/Date/To/Subject block (Outlook 2013, new Outlook); not under a reply subject
    HEADER_BLOCK = "header_block"
    #: "On <date>, <name> <address> wrote:" and quoted text, only under a forward subject (Outlook)
    QUOTE_HEADER = "quote_header"
    #: a message/rfc822 attachment
    ATTACHMENT = "attachment"


@dataclass(frozen=True, slots=True)
class Forward:
    """The directly forwarded message. Text fields are '' when absent; addresses are
    lower-cased (an Address with email '' has a name only)."""

    from_: Address
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    subject: str
    date: str
    body: str
    note: str
    rule: ForwardRule


class _SubjectKind(enum.Enum):
    """What the forwarding mail's own subject says it is."""

    FORWARD = "forward"
    REPLY = "reply"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class _Block:
    """A forwarded block in the lines: its rule, raw header values and where its body starts."""

    rule: ForwardRule
    fields: dict[Field, str]
    body_start: int
    depth: int
    sender: Address | None = None


@dataclass(slots=True)
class _Budget:
    """Characters left for the glued-label scan of this message."""

    glued: int = MAX_GLUED_CHARS


# ---------------------------------------------------------------------------------------------
# Public entry points


def parse_forward(text: str | None, html: str | None = None, subject: str = "") -> Forward | None:
    """The directly forwarded (outermost) message in a mail body, or None when it is no forward.
    `text` may be None for HTML-only mail; `subject` is the forwarding mail's own Subject."""
    source = text[:MAX_TEXT_CHARS] if text is not None else None
    if (source is None or not source.strip(WHITESPACE)) and html:
        source = html_to_text(html)
    if not source:
        return None
    lines = _normalise(source).split("\n")
    kind = _subject_kind(subject)
    budget = _Budget()
    for index in range(min(len(lines), MAX_SCAN_LINES)):
        block = _block_at(lines, index, kind, budget)
        if block is not None:
            return _build(lines, index, block, subject)
    return None


def parse_attached_forward(part: Message, note: str = "") -> Forward | None:
    """The Forward carried by an attached message/rfc822 part (or by the attached message
    itself): headers from the attached message, body from its text part. None without From."""
    inner = _attached_message(part)
    if inner is None or inner.get("From") is None:
        return None
    senders = _header_addresses(inner, "From")
    return Forward(
        from_=senders[0] if senders else Address(""),
        to=tuple(_header_addresses(inner, "To")),
        cc=tuple(_header_addresses(inner, "Cc")),
        subject=_header_text(inner, "Subject"),
        date=_header_text(inner, "Date"),
        body=_message_text(inner),
        note=note.strip(WHITESPACE),
        rule=ForwardRule.ATTACHMENT,
    )


def html_to_text(html: str) -> str:
    """Plain text of an HTML body, one line per block or <br>, as a reader sees it."""
    extractor = _TextExtractor()
    extractor.feed(_plain_markup(html[:MAX_HTML_CHARS]))
    extractor.close()
    return extractor.text()


# ---------------------------------------------------------------------------------------------
# Finding the block


def _normalise(text: str) -> str:
    """Cap the text, unify line ends and drop byte-order marks."""
    text = text[:MAX_TEXT_CHARS]
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\ufeff", "")


def _block_at(lines: list[str], index: int, kind: _SubjectKind, budget: _Budget) -> _Block | None:
    """The forwarded block that starts at this line, if one does and the subject allows it."""
    depth, content = _unquote(lines[index])
    if not content:
        return None
    marker = _marker(content)
    if marker is not None:
        rule, rest = marker
        if rule is ForwardRule.ORIGINAL_MESSAGE and kind is _SubjectKind.REPLY:
            return None
        return _block_after_marker(lines, index, depth, rule, rest, budget)
    label = _split_label(content)
    if label is not None:
        if label[0] is not Field.FROM or kind is _SubjectKind.REPLY:
            return None
        fields, end, block_depth = _header_block(lines, index)
        if not _enough(fields, 2):
            return None
        return _Block(ForwardRule.HEADER_BLOCK, fields, end, block_depth)
    if kind is _SubjectKind.FORWARD:
        return _quote_header(lines, index, depth, content)
    return None


def _block_after_marker(
    lines: list[str], index: int, depth: int, rule: ForwardRule, rest: str, budget: _Budget
) -> _Block | None:
    """The headers that follow a separator: glued on its own line (Yahoo) or on the next lines."""
    if rest:
        fields = _glued_fields(rest, budget)
        if fields:
            return _Block(rule, fields, index + 1, depth) if _enough(fields, 1) else None
    start = index + 1
    limit = min(len(lines), start + MAX_BLANKS_AFTER_MARKER)
    while start < limit and not _unquote(lines[start])[1]:
        start += 1
    fields, end, block_depth = _header_block(lines, start)
    return _Block(rule, fields, end, block_depth) if _enough(fields, 1) else None


def _enough(fields: dict[Field, str], others: int) -> bool:
    """A From value and at least `others` of Date, Subject, To and Cc."""
    if not fields.get(Field.FROM):
        return False
    found = sum(1 for key in (Field.DATE, Field.SUBJECT, Field.TO, Field.CC) if key in fields)
    return found >= others


def _unquote(line: str) -> tuple[int, str]:
    """Quote depth of a line ('>' markers) and its content without markers and outer spaces."""
    prefix = _QUOTE_PREFIX.match(line)
    end = prefix.end() if prefix else 0
    return line.count(">", 0, end), line[end:].strip(WHITESPACE)


def _strip_quotes(line: str, levels: int) -> str:
    """The line without its first `levels` quote markers (and one space after each)."""
    position = 0
    length = len(line)
    for _ in range(levels):
        probe = position
        while probe < length and line[probe] in " \t":
            probe += 1
        if probe >= length or line[probe] != ">":
            break
        position = probe + 1
        if position < length and line[position] == " ":
            position += 1
    return line[position:]


# ---------------------------------------------------------------------------------------------
# Separators and header labels


def _marker(content: str) -> tuple[ForwardRule, str] | None:
    """A separator line: its rule and any header text glued after it on the same line."""
    line = content.strip(WHITESPACE + "*")
    if not line:
        return None
    if line[0] in "-_" and len(line) >= 10 and not line.strip(line[0]):
        return ForwardRule.ORIGINAL_MESSAGE, ""
    if line.startswith("--"):
        return _dashed_marker(line)
    if line[-1] in COLONS and len(line) <= MAX_MARKER_CHARS:
        rule = _phrase_rule(line[:-1])
        return (rule, "") if rule is not None else None
    return None


def _dashed_marker(line: str) -> tuple[ForwardRule, str] | None:
    """'----- <phrase> -----[glued headers]': the rule of the longest known phrase."""
    inner = line.lstrip("-")
    offset = len(line) - len(inner)
    head = inner[:MAX_MARKER_CHARS]
    best: tuple[ForwardRule, int] | None = None
    position = head.find("--")
    while position != -1:
        end = position
        while end < len(head) and head[end] == "-":
            end += 1
        rule = _phrase_rule(head[:position])
        if rule is not None:
            best = (rule, end)
        position = head.find("--", end)
    if best is None:
        rule = _phrase_rule(inner) if len(inner) <= MAX_MARKER_CHARS else None
        return (rule, "") if rule is not None else None
    return best[0], line[offset + best[1] :].strip(WHITESPACE)


def _phrase_rule(phrase: str) -> ForwardRule | None:
    """SEPARATOR for a forwarded-message phrase, ORIGINAL_MESSAGE for an original-message one."""
    key = label_key(phrase.strip(WHITESPACE + "*-" + COLONS))
    parts = [key, *(part.strip(" -") for part in key.replace("/", "--").split("--"))]
    if any(part in FORWARD_PHRASES for part in parts):
        return ForwardRule.SEPARATOR
    if any(part in ORIGINAL_PHRASES for part in parts):
        return ForwardRule.ORIGINAL_MESSAGE
    return None


def _split_label(content: str) -> tuple[Field, str] | None:
    """'Label: value' at the start of a line, for a known label: its field and value."""
    line = content.lstrip(WHITESPACE + "*")
    window = line[: MAX_LABEL_CHARS + 1]
    colon = min((i for i in (window.find(c) for c in COLONS) if i >= 0), default=-1)
    if colon <= 0:
        return None
    found = LABELS.get(label_key(line[:colon].strip(WHITESPACE + "*")))
    if found is None:
        return None
    return found, line[colon + 1 :].lstrip("*").strip(WHITESPACE)


def _header_block(lines: list[str], start: int) -> tuple[dict[Field, str], int, int]:
    """Consecutive label lines from `start`: their values, the first line after, their depth."""
    fields: dict[Field, str] = {}
    depth = -1
    last: Field | None = None
    index = start
    end = min(len(lines), start + MAX_HEADER_LINES)
    while index < end:
        line_depth, content = _unquote(lines[index])
        label = _split_label(content)
        if label is None:
            if last is None or not _continues(fields[last], last, content):
                break
            fields[last] += " " + content
        else:
            key, value = label
            if key in fields and key is not Field.IGNORED:
                break
            fields[key] = value
            last = key
            depth = line_depth if depth < 0 else depth
        index += 1
    return fields, index, max(depth, 0)


def _continues(value: str, key: Field, content: str) -> bool:
    """Whether a line continues a To or Cc list whose value so far ends with a separator."""
    return key in (Field.TO, Field.CC) and bool(content) and value.endswith((",", ";"))


def _glued_fields(text: str, budget: _Budget) -> dict[Field, str]:
    """Labels run together on one line ('From: a <a@x>To: b <b@x>Sent: ...Subject: s')."""
    text = text[: max(budget.glued, 0)]
    budget.glued -= len(text)
    starts: list[tuple[int, int, Field]] = []
    position = 0
    while position < len(text):
        found = _glued_label_at(text, position, starts)
        if found is None:
            position += 1
            continue
        starts.append(found)
        position = found[1]
    if not starts or starts[0][0] != 0:
        return {}
    fields: dict[Field, str] = {}
    for number, (_, value_start, key) in enumerate(starts):
        value_end = starts[number + 1][0] if number + 1 < len(starts) else len(text)
        fields.setdefault(key, text[value_start:value_end].strip(WHITESPACE))
    return fields


def _glued_label_at(
    text: str, position: int, seen: list[tuple[int, int, Field]]
) -> tuple[int, int, Field] | None:
    """A label starting at `position` of a glued line: (start, value start, field), or None."""
    if not _word_start(text, position):
        return None
    window = text[position : position + MAX_GLUED_LABEL]
    folded = window.casefold()
    exact = len(folded) == len(window)  # else case folding changed lengths: normalise per size
    sizes = LABEL_SIZES if exact else range(len(window), 0, -1)
    for size in sizes:
        if size > len(window):
            continue
        key_field = LABELS.get(folded[:size] if exact else label_key(window[:size]))
        if key_field is None or any(entry[2] is key_field for entry in seen):
            continue
        value_start = _label_end(text, position, size)
        if value_start is not None:
            return position, value_start, key_field
    return None


def _word_start(text: str, position: int) -> bool:
    """Whether a label may start here: after a non-letter, or an upper-case letter glued to
    an upper-case run (a time zone such as 'CET' before 'Subject')."""
    if position == 0:
        return True
    before, here = text[position - 1], text[position]
    if not here.isalpha():
        return False
    return not before.isalpha() or (before.isupper() and here.isupper())


def _label_end(text: str, position: int, size: int) -> int | None:
    """Where the value starts after a label of `size` characters: after its colon, or after
    one space when the label is glued to the previous value without a colon (Yahoo's 'Dw')."""
    end = position + size
    probe = end
    while probe < len(text) and text[probe] in " \t\xa0":
        probe += 1
    if probe < len(text) and text[probe] in COLONS:
        return probe + 1
    glued = position > 0 and not text[position - 1].isspace()
    if glued and size >= 2 and end < len(text) and text[end] == " ":
        return end + 1
    return None


# ---------------------------------------------------------------------------------------------
# "On <date>, <name> <address> wrote:" (Outlook 2019 forwards)


def _quote_header(lines: list[str], index: int, depth: int, content: str) -> _Block | None:
    """A quote header line (possibly wrapped onto a short second line) followed by quoted or
    indented text: the sender and date it names."""
    if len(content) > MAX_WROTE_CHARS or "@" not in content:
        return None
    header, body_start = content, index + 1
    if not content.endswith(tuple(COLONS)):
        if body_start >= len(lines):
            return None
        tail = _unquote(lines[body_start])[1]
        if not tail.endswith(tuple(COLONS)) or len(tail) > 40 or "@" in tail:
            return None
        header, body_start = f"{content} {tail}", body_start + 1
    if not _indented_after(lines, body_start, depth):
        return None
    parsed = _parse_quote_header(header[:-1])
    if parsed is None:
        return None
    sender, date = parsed
    return _Block(ForwardRule.QUOTE_HEADER, {Field.DATE: date}, body_start, depth, sender)


def _indented_after(lines: list[str], start: int, depth: int) -> bool:
    """Whether the first non-blank line from `start` is quoted deeper or indented."""
    for line in lines[start : start + MAX_BLANKS_AFTER_MARKER]:
        line_depth, content = _unquote(line)
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
    return Address(email, _clean_name(name, email)), date


def _locate_email(text: str) -> tuple[str, int, int] | None:
    """The first address in a text and the span of it with its brackets ('<a@x>', '(<a@x>)')."""
    match = _EMAIL.search(text)
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


# ---------------------------------------------------------------------------------------------
# Addresses


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
            if _EMAIL.fullmatch(inside):
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
        if _EMAIL.fullmatch(word):
            return word.lower(), " ".join(words[:number] + words[number + 1 :])
    return None


def _bare_entry(text: str) -> Address:
    """An entry without angle brackets: a bare address with an optional name, or a name only."""
    found = _bare_address(text)
    if found is None:
        return Address("", _clean_name(text, ""))
    email, name = found
    return Address(email, _clean_name(name, email))


def _address(name: str, email: str) -> Address:
    """An address from the text before '<' and the text inside the brackets."""
    email = email.strip(WHITESPACE).lower()
    return Address(email, _clean_name(name, email))


def _clean_name(name: str, email: str) -> str:
    """A display name without separators, quotes and Gmail's bold stars ('*Jane*'); '' when
    it only repeats the address."""
    name = name.strip(WHITESPACE + ",;")
    while len(name) >= 2 and (
        (name[0] in QUOTE_CHARS and name[-1] in QUOTE_CHARS[name[0]]) or name[0] == name[-1] == "*"
    ):
        name = name[1:-1].strip(WHITESPACE)
    name = " ".join(name.split())
    return "" if name.lower() == email else name


# ---------------------------------------------------------------------------------------------
# Building the result


def _build(lines: list[str], index: int, block: _Block, subject: str) -> Forward:
    """The Forward for a block found at line `index`."""
    fields = block.fields
    senders = parse_addresses(fields.get(Field.FROM, ""))
    sender = block.sender or (senders[0] if senders else Address(""))
    own_subject = fields.get(Field.SUBJECT)
    return Forward(
        from_=sender,
        to=tuple(parse_addresses(fields.get(Field.TO, ""))),
        cc=tuple(parse_addresses(fields.get(Field.CC, ""))),
        subject=own_subject if own_subject is not None else _strip_forward_prefix(subject),
        date=fields.get(Field.DATE, ""),
        body=_body(lines[block.body_start :], block.depth),
        note=_join(lines[:index]),
        rule=block.rule,
    )


def _body(lines: list[str], depth: int) -> str:
    """The forwarded message's text: quote markers of its block removed, common indentation
    removed, trimmed."""
    levels = depth if depth > 0 else _common_depth(lines)
    if levels:
        lines = [_strip_quotes(line, levels) for line in lines]
    return _join(_dedent([line.rstrip(WHITESPACE) for line in lines]))


def _common_depth(lines: list[str]) -> int:
    """The smallest quote depth of the non-blank lines (0 as soon as one is unquoted)."""
    smallest = -1
    for line in lines:
        if not line.strip(WHITESPACE):
            continue
        depth = _unquote(line)[0]
        if depth == 0:
            return 0
        smallest = depth if smallest < 0 else min(smallest, depth)
    return max(smallest, 0)


def _dedent(lines: list[str]) -> list[str]:
    """Lines without the leading spaces and tabs that all non-blank lines share."""
    prefix: str | None = None
    for line in lines:
        if not line:
            continue
        lead = line[: len(line) - len(line.lstrip(" \t"))]
        if prefix is None:
            prefix = lead
        else:
            size = 0
            while size < min(len(prefix), len(lead)) and prefix[size] == lead[size]:
                size += 1
            prefix = prefix[:size]
        if not prefix:
            return lines
    if not prefix:
        return lines
    return [line[len(prefix) :] for line in lines]


def _join(lines: list[str]) -> str:
    """Lines joined, each without trailing spaces, the whole trimmed."""
    return "\n".join(line.rstrip(WHITESPACE) for line in lines).strip(WHITESPACE)


def _subject_prefix(subject: str) -> tuple[str, int]:
    """The normalised prefix before a subject's first colon ('fw' in 'FW: x') and the index
    after the colon; ('', 0) when there is none."""
    text = subject.lstrip(WHITESPACE)
    skipped = len(subject) - len(text)
    if text.startswith("[") and 0 < text.find("]") < 40:
        close = text.find("]") + 1
        skipped += close + len(text[close:]) - len(text[close:].lstrip(WHITESPACE))
        text = text[close:].lstrip(WHITESPACE)
    colon = min((i for i in (text.find(c) for c in COLONS) if 0 < i <= 20), default=-1)
    if colon < 0:
        return "", 0
    prefix = text[:colon].strip(WHITESPACE)
    if prefix.endswith(("]", ")")) and ("[" in prefix or "(" in prefix):
        prefix = prefix[: max(prefix.rfind("["), prefix.rfind("("))].strip(WHITESPACE)
    return label_key(prefix), skipped + colon + 1


def _subject_kind(subject: str) -> _SubjectKind:
    """Whether a subject starts with a forward prefix, a reply prefix, or neither."""
    prefix, _ = _subject_prefix(subject)
    if prefix in FORWARD_SUBJECT_PREFIXES:
        return _SubjectKind.FORWARD
    if prefix in REPLY_SUBJECT_PREFIXES:
        return _SubjectKind.REPLY
    return _SubjectKind.OTHER


def _strip_forward_prefix(subject: str) -> str:
    """The subject without one leading forward prefix ('FW: x' -> 'x')."""
    prefix, after = _subject_prefix(subject)
    if prefix in FORWARD_SUBJECT_PREFIXES:
        subject = subject[after:]
    return " ".join(subject.split())


# ---------------------------------------------------------------------------------------------
# HTML and attached messages


def _plain_markup(html: str) -> str:
    """HTML that html.parser reads in linear time: comments, declarations and processing
    instructions dropped, each tag cut to its bare name, every other '<' escaped. (The
    stdlib parser rescans the rest of the input at each unclosed '<', '</', '<!--' or '<?'.)"""
    pieces = _without_comments(html).split("<")
    out = [pieces[0]]
    for piece in pieces[1:]:
        if not piece or piece[0] not in _TAG_STARTS:
            out.append("&lt;")
            out.append(piece)
        elif tag := _TAG.match(piece):
            out.append(f"<{tag[1]}{tag[2].lower()}>")
            out.append(piece[tag.end() :])
        elif declaration := _DECLARATION.match(piece):
            out.append(piece[declaration.end() :])
        else:
            out.append("&lt;")
            out.append(piece)
    return "".join(out)


def _without_comments(html: str) -> str:
    """HTML without its closed '<!-- ... -->' comments."""
    pieces: list[str] = []
    position = 0
    while (opening := html.find("<!--", position)) != -1:
        close = html.find("-->", opening + 4)
        if close == -1:
            break
        pieces.append(html[position:opening])
        position = close + 3
    pieces.append(html[position:])
    return "".join(pieces)


class _TextExtractor(HTMLParser):
    """Text of an HTML document: blocks and <br> become line breaks, scripts and styles vanish."""

    BLOCKS = frozenset(
        {
            "address", "article", "aside", "blockquote", "center", "dd", "div", "dl", "dt",
            "fieldset", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header",
            "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table", "tbody", "thead",
            "tfoot", "tr", "ul",
        }
    )  # fmt: skip
    HIDDEN = frozenset({"script", "style", "template", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._parts: list[str] = []
        self._hidden = 0
        self._pre = 0
        self._line_empty = True

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.HIDDEN:
            self._hidden += 1
        elif tag == "br":
            self._newline()
        elif tag in self.BLOCKS:
            self._soft_break()
        elif tag in ("td", "th"):
            self._parts.append(" ")
        self._pre += tag == "pre"

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self._newline()
        elif tag in self.BLOCKS:
            self._soft_break()

    def handle_endtag(self, tag: str) -> None:
        if tag in self.HIDDEN:
            self._hidden = max(self._hidden - 1, 0)
        elif tag in self.BLOCKS:
            self._soft_break()
        if tag == "pre":
            self._pre = max(self._pre - 1, 0)

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        if not self._pre:
            data = _HTML_SPACE.sub(" ", data)
            if self._line_empty:
                data = data.lstrip(" ")
        if data:
            self._parts.append(data)
            self._line_empty = data.endswith("\n")

    def _newline(self) -> None:
        self._parts.append("\n")
        self._line_empty = True

    def _soft_break(self) -> None:
        if not self._line_empty:
            self._newline()

    def text(self) -> str:
        """The text gathered so far, each line trimmed."""
        return "\n".join(line.strip(" \t") for line in "".join(self._parts).split("\n"))


def _attached_message(part: Message) -> Message | None:
    """The message inside a message/rfc822 part, or the part itself when it is a message."""
    if part.get_content_type() != "message/rfc822":
        return part
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        inner: Message = payload[0]
        return inner
    return None


def _header_text(message: Message, name: str) -> str:
    """A header's decoded value on one line, '' when absent."""
    raw = message.get(name)
    if raw is None:
        return ""
    try:
        text = str(make_header(decode_header(str(raw))))
    except (LookupError, ValueError, UnicodeError):
        text = str(raw)
    return " ".join(text.split())


def _header_addresses(message: Message, name: str) -> list[Address]:
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


def _message_text(message: Message) -> str:
    """The attached message's body: its first text/plain part, else its first HTML part."""
    html: str | None = None
    for part in message.walk():
        if part.get_content_maintype() != "text" or part.get_content_disposition() == "attachment":
            continue
        content = _part_text(part)
        if part.get_content_subtype() == "plain":
            return _join(_normalise(content).split("\n"))
        if html is None and part.get_content_subtype() == "html":
            html = content
    return _join(_normalise(html_to_text(html)).split("\n")) if html is not None else ""


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
