"""Find the forwarded message in a mail: its sender, recipients, subject, date, body and note."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from email.message import Message

from mailgateway.domain import Address
from mailgateway.inbound.forward_addresses import parse_addresses
from mailgateway.inbound.forward_attached import (
    attached_message,
    header_addresses,
    header_text,
    message_text,
)
from mailgateway.inbound.forward_glued import GluedBudget, glued_fields
from mailgateway.inbound.forward_html import html_to_text
from mailgateway.inbound.forward_labels import (
    COLONS,
    FORWARD_PHRASES,
    FORWARD_SUBJECT_PREFIXES,
    LABELS,
    MAX_LABEL_CHARS,
    ORIGINAL_PHRASES,
    REPLY_SUBJECT_PREFIXES,
    WHITESPACE,
    Field,
    label_key,
)
from mailgateway.inbound.forward_quote import quote_header
from mailgateway.inbound.forward_text import (
    MAX_BLANKS_AFTER_MARKER,
    MAX_TEXT_CHARS,
    body_text,
    join_lines,
    normalise,
    unquote,
)

__all__ = [
    "Forward",
    "ForwardRule",
    "html_to_text",
    "parse_addresses",
    "parse_attached_forward",
    "parse_forward",
]

MAX_SCAN_LINES = 2000  # lines searched for the start of a forwarded block
MAX_HEADER_LINES = 30  # lines a header block may span
MAX_MARKER_CHARS = 160  # a separator's phrase lies within the first characters of its line


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
    lines = normalise(source).split("\n")
    kind = _subject_kind(subject)
    budget = GluedBudget()
    for index in range(min(len(lines), MAX_SCAN_LINES)):
        block = _block_at(lines, index, kind, budget)
        if block is not None:
            return _build(lines, index, block, subject)
    return None


def parse_attached_forward(part: Message, note: str = "") -> Forward | None:
    """The Forward carried by an attached message/rfc822 part (or by the attached message
    itself): headers from the attached message, body from its text part. None without From."""
    inner = attached_message(part)
    if inner is None or inner.get("From") is None:
        return None
    senders = header_addresses(inner, "From")
    return Forward(
        from_=senders[0] if senders else Address(""),
        to=tuple(header_addresses(inner, "To")),
        cc=tuple(header_addresses(inner, "Cc")),
        subject=header_text(inner, "Subject"),
        date=header_text(inner, "Date"),
        body=message_text(inner),
        note=note.strip(WHITESPACE),
        rule=ForwardRule.ATTACHMENT,
    )


# ---------------------------------------------------------------------------------------------
# Finding the block


def _block_at(
    lines: list[str], index: int, kind: _SubjectKind, budget: GluedBudget
) -> _Block | None:
    """The forwarded block that starts at this line, if one does and the subject allows it."""
    depth, content = unquote(lines[index])
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
        found = quote_header(lines, index, depth, content)
        if found is not None:
            fields = {Field.DATE: found.date}
            return _Block(ForwardRule.QUOTE_HEADER, fields, found.body_start, depth, found.sender)
    return None


def _block_after_marker(
    lines: list[str], index: int, depth: int, rule: ForwardRule, rest: str, budget: GluedBudget
) -> _Block | None:
    """The headers that follow a separator: glued on its own line (Yahoo) or on the next lines."""
    if rest:
        fields = glued_fields(rest, budget)
        if fields:
            return _Block(rule, fields, index + 1, depth) if _enough(fields, 1) else None
    start = index + 1
    limit = min(len(lines), start + MAX_BLANKS_AFTER_MARKER)
    while start < limit and not unquote(lines[start])[1]:
        start += 1
    fields, end, block_depth = _header_block(lines, start)
    return _Block(rule, fields, end, block_depth) if _enough(fields, 1) else None


def _enough(fields: dict[Field, str], others: int) -> bool:
    """A From value and at least `others` of Date, Subject, To and Cc."""
    if not fields.get(Field.FROM):
        return False
    found = sum(1 for key in (Field.DATE, Field.SUBJECT, Field.TO, Field.CC) if key in fields)
    return found >= others


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
        line_depth, content = unquote(lines[index])
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
        body=body_text(lines[block.body_start :], block.depth),
        note=join_lines(lines[:index]),
        rule=block.rule,
    )


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
