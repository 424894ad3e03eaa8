"""Header labels run together on one line after a separator (Yahoo's 'From: a To: b Sent: ...')."""

from __future__ import annotations

from dataclasses import dataclass

from mailgateway.inbound.forward_labels import (
    COLONS,
    LABEL_SIZES,
    LABELS,
    MAX_GLUED_LABEL,
    WHITESPACE,
    Field,
    label_key,
)

MAX_GLUED_CHARS = 4000  # characters scanned for labels glued on one line (Yahoo), per message


@dataclass(slots=True)
class GluedBudget:
    """Characters left for the glued-label scan of this message."""

    glued: int = MAX_GLUED_CHARS


def glued_fields(text: str, budget: GluedBudget) -> dict[Field, str]:
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
