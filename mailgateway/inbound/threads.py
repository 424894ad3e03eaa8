"""Which conversation a message belongs to (pure): for now by In-Reply-To and References."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mailgateway.domain import Parsed, ThreadReason


@dataclass(frozen=True, slots=True)
class ThreadRef:
    """The conversation to join (None: start a new one) and the rule that decided."""

    conversation_id: int | None
    reason: ThreadReason


def thread_by_references(parsed: Parsed, known: Mapping[str, int]) -> ThreadRef:
    """Join the conversation of the message replied to: In-Reply-To first, then References from
    the most recent (right-most) entry; `known` maps stored Message-IDs to conversations."""
    for message_id in parsed.in_reply_to:
        if message_id in known:
            return ThreadRef(known[message_id], ThreadReason.IN_REPLY_TO)
    for message_id in reversed(parsed.references):
        if message_id in known:
            return ThreadRef(known[message_id], ThreadReason.REFERENCES)
    return ThreadRef(None, ThreadReason.NEW)
