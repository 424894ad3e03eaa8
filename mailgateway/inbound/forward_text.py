"""Lines of a forwarding mail's text: normalised, quote markers read and removed, joined."""

from __future__ import annotations

import re

from mailgateway.inbound.forward_labels import WHITESPACE

MAX_TEXT_CHARS = 1 << 20  # text read from a body (1 MiB of characters)
MAX_BLANKS_AFTER_MARKER = 8  # blank lines allowed between a separator and its headers

_QUOTE_PREFIX = re.compile(r"[ \t>]*")


def normalise(text: str) -> str:
    """Cap the text, unify line ends and drop byte-order marks."""
    text = text[:MAX_TEXT_CHARS]
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\ufeff", "")


def unquote(line: str) -> tuple[int, str]:
    """Quote depth of a line ('>' markers) and its content without markers and outer spaces."""
    prefix = _QUOTE_PREFIX.match(line)
    end = prefix.end() if prefix else 0
    return line.count(">", 0, end), line[end:].strip(WHITESPACE)


def strip_quotes(line: str, levels: int) -> str:
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


def body_text(lines: list[str], depth: int) -> str:
    """The forwarded message's text: quote markers of its block removed, common indentation
    removed, trimmed."""
    levels = depth if depth > 0 else _common_depth(lines)
    if levels:
        lines = [strip_quotes(line, levels) for line in lines]
    return join_lines(_dedent([line.rstrip(WHITESPACE) for line in lines]))


def _common_depth(lines: list[str]) -> int:
    """The smallest quote depth of the non-blank lines (0 as soon as one is unquoted)."""
    smallest = -1
    for line in lines:
        if not line.strip(WHITESPACE):
            continue
        depth = unquote(line)[0]
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


def join_lines(lines: list[str]) -> str:
    """Lines joined, each without trailing spaces, the whole trimmed."""
    return "\n".join(line.rstrip(WHITESPACE) for line in lines).strip(WHITESPACE)
