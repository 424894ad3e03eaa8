"""Which conversation a message belongs to (pure): references, reply token, subject, in order."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from mailgateway.domain import ConversationFacts, ConversationStatus, Parsed, ThreadReason

SUBJECT_WINDOW = timedelta(days=14)
_TOKEN = re.compile(r"[a-z0-9_-]{1,64}")


@dataclass(frozen=True, slots=True)
class Sender:
    """Who a message is from and whom it names as recipients (To and Cc), lower-cased."""

    email: str | None
    contact_id: int | None
    recipients: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Lookups:
    """What the worker found in the store for one message, within its inbox."""

    now: datetime
    references: Mapping[str, ConversationFacts] = field(default_factory=dict)
    token: ConversationFacts | None = None
    subject: ConversationFacts | None = None
    bounced: ConversationFacts | None = None
    agents: frozenset[str] = frozenset()
    own_addresses: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ThreadRef:
    """The conversation to join (None: start a new one), the rule that decided, and why."""

    conversation_id: int | None
    reason: ThreadReason
    detail: str = ""
    status: ConversationStatus | None = None
    bounce: bool = False


def reply_token(address: str) -> str | None:
    """The reply token of `<local>+<token>@domain` (lower-cased), or None."""
    local, at, _ = address.strip().rpartition("@")
    _, plus, token = local.partition("+")
    token = token.lower()
    return token if at and plus and _TOKEN.fullmatch(token) else None


def header_tokens(parsed: Parsed, inbox_address: str) -> list[str]:
    """Reply tokens in To/Cc addresses of the inbox's own forwarding address."""
    base_local, _, domain = inbox_address.lower().rpartition("@")
    found: list[str] = []
    for address in (*parsed.to, *parsed.cc):
        local, _, their_domain = address.email.rpartition("@")
        token = reply_token(address.email)
        if token and their_domain == domain and local.partition("+")[0] == base_local:
            found.append(token)
    return found


def referenced_ids(parsed: Parsed) -> Iterator[tuple[str, ThreadReason]]:
    """Message-IDs in the order they are tried: In-Reply-To, then References right-most first."""
    seen: set[str] = set()
    for message_id in parsed.in_reply_to:
        if message_id not in seen:
            seen.add(message_id)
            yield message_id, ThreadReason.IN_REPLY_TO
    for message_id in reversed(parsed.references):
        if message_id not in seen:
            seen.add(message_id)
            yield message_id, ThreadReason.REFERENCES


def may_join(facts: ConversationFacts, sender: Sender, lookups: Lookups) -> bool:
    """The participant rule for reference matches: the sender took part in the conversation
    (or is an agent), or the conversation's contact or an agent is among the recipients.
    A leaked Message-ID alone never merges a stranger's mail into someone's conversation."""
    people = (facts.participants | lookups.agents) - lookups.own_addresses
    if sender.email is not None and sender.email in people:
        return True
    named = {facts.contact_email, *lookups.agents} - {None} - lookups.own_addresses
    return bool(named & sender.recipients)


def subject_applies(facts: ConversationFacts, sender: Sender, now: datetime) -> bool:
    """The subject rule: same contact, open conversation, active within the last 14 days."""
    return (
        sender.contact_id is not None
        and facts.contact_id == sender.contact_id
        and facts.status is ConversationStatus.OPEN
        and now - facts.last_activity <= SUBJECT_WINDOW
    )


def thread(
    parsed: Parsed, sender: Sender, lookups: Lookups, bounced_to: frozenset[str] = frozenset()
) -> ThreadRef:
    """Decide the conversation: the conversation of the message a bounce reports (when the
    failed recipient took part in it), then In-Reply-To/References (participant rule), then
    the reply token, then the subject; otherwise a new one."""
    facts = lookups.bounced
    if facts is not None and bounced_to & facts.participants:
        detail = "bounce of a stored message"
        return ThreadRef(facts.id, ThreadReason.REFERENCES, detail, facts.status, bounce=True)
    refused: list[str] = []
    for message_id, reason in referenced_ids(parsed):
        facts = lookups.references.get(message_id)
        if facts is None:
            continue
        if may_join(facts, sender, lookups):
            return ThreadRef(facts.id, reason, f"{reason.value} {message_id}", facts.status)
        refused.append(f"{message_id} (conversation {facts.id})")
    if lookups.token is not None:
        return ThreadRef(
            lookups.token.id,
            ThreadReason.REPLY_TOKEN,
            "reply token in recipient",
            lookups.token.status,
        )
    if lookups.subject is not None and subject_applies(lookups.subject, sender, lookups.now):
        facts = lookups.subject
        return ThreadRef(facts.id, ThreadReason.SUBJECT, "same subject and contact", facts.status)
    return ThreadRef(None, ThreadReason.NEW, _refusal(refused))


def _refusal(refused: Iterable[str]) -> str:
    """Why known references were not followed, for the record."""
    names = ", ".join(refused)
    if not names:
        return ""
    why = "the sender took no part and neither its contact nor an agent is a recipient"
    return f"references not followed: {names}: {why}"


def reopens(status: ConversationStatus | None, auto_submitted: bool) -> bool:
    """A person's reply reopens a closed conversation; an auto-reply or bounce never does."""
    return status is ConversationStatus.CLOSED and not auto_submitted
