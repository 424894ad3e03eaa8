"""The threading stage over .eml fixtures: rule order, the participant rule, the reply token,
the subject rule's contact, status and 14-day window, and normalised Message-IDs."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailgateway.domain import ConversationFacts, ConversationStatus, Parsed, ThreadReason
from mailgateway.inbound.parse import parse
from mailgateway.inbound.subjects import subject_key
from mailgateway.inbound.threads import (
    Lookups,
    Sender,
    header_tokens,
    referenced_ids,
    reopens,
    reply_token,
    thread,
)

RULES = Path(__file__).parent / "fixtures" / "threading" / "rules"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
JOHN = "john.doe@customer.test"
SUPPORT = "support@acme.inbox.example.net"
TOKEN = "0123456789abcdef0123456789abcdef"
AGENTS = frozenset({"alice@acme.example", "bob@acme.example"})
JOHNS = ConversationFacts(
    id=7,
    status=ConversationStatus.OPEN,
    contact_id=1,
    contact_email=JOHN,
    last_activity=NOW - timedelta(days=1),
    participants=frozenset({JOHN, SUPPORT}),
)
OTHER = ConversationFacts(9, ConversationStatus.OPEN, 3, "x@y.test", NOW, frozenset({"x@y.test"}))


def fixture(name: str) -> Parsed:
    """A rules fixture, parsed."""
    return parse((RULES / f"{name}.eml").read_bytes())


def sender_of(parsed: Parsed, contact_id: int | None) -> Sender:
    """The Sender the worker would build for a parsed message."""
    assert parsed.from_ is not None
    recipients = frozenset(a.email for a in (*parsed.to, *parsed.cc))
    return Sender(parsed.from_.email, contact_id, recipients)


def lookups(**found: object) -> Lookups:
    """Lookups with the stored Message-ID of John's first message, plus what a case adds."""
    base: dict[str, object] = {
        "now": NOW,
        "references": {"<original@customer.test>": JOHNS},
        "agents": AGENTS,
        "own_addresses": frozenset({SUPPORT}),
    }
    return Lookups(**(base | found))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "contact_id", "reason", "conversation"),
    [
        ("reply-in-reply-to", 1, ThreadReason.IN_REPLY_TO, 7),
        ("reply-references-not-last", 1, ThreadReason.REFERENCES, 7),
        ("reply-uppercase-domain", 1, ThreadReason.IN_REPLY_TO, 7),
        ("reply-colleague-cc", 2, ThreadReason.IN_REPLY_TO, 7),
        ("reply-from-agent", 4, ThreadReason.IN_REPLY_TO, 7),
        ("reply-leaked-reference", 5, ThreadReason.NEW, None),
        ("reply-odp-same-contact", 1, ThreadReason.SUBJECT, 7),
        ("reply-odp-other-contact", 6, ThreadReason.NEW, None),
        ("original", 1, ThreadReason.SUBJECT, 7),
        ("no-message-id", 1, ThreadReason.NEW, None),
    ],
)
def test_rules_over_fixtures(
    name: str, contact_id: int, reason: ThreadReason, conversation: int | None
) -> None:
    """Each rule fixture lands where SPEC §4 says, with the rule recorded (John's conversation 7
    is open, and the store finds it by subject when the subject keys match)."""
    parsed = fixture(name)
    same_subject = subject_key(parsed.subject) == "printer on fire"  # as the store would find
    found = lookups(subject=JOHNS if same_subject else None)
    ref = thread(parsed, sender_of(parsed, contact_id), found)
    assert (ref.reason, ref.conversation_id) == (reason, conversation)


def test_references_right_most_first_after_in_reply_to() -> None:
    """In-Reply-To is tried first, then References from the right-most entry."""
    parsed = fixture("reply-references-not-last")
    assert [mid for mid, _ in referenced_ids(parsed)] == [
        "<never-stored@customer.test>",
        "<original@customer.test>",
        "<root@old-thread.test>",
    ]


def test_right_most_known_reference_wins() -> None:
    """When two References are stored, the more recent (right-most) one decides."""
    parsed = fixture("reply-references-not-last")
    found = lookups(references={"<root@old-thread.test>": OTHER, "<original@customer.test>": JOHNS})
    ref = thread(parsed, sender_of(parsed, 1), found)
    assert (ref.conversation_id, ref.detail) == (7, "references <original@customer.test>")


def test_message_ids_compared_normalised() -> None:
    """`<original@CUSTOMER.TEST> (comment)` is the stored `<original@customer.test>`."""
    assert fixture("reply-uppercase-domain").in_reply_to == ("<original@customer.test>",)


def test_leaked_reference_explains_refusal() -> None:
    """A stranger quoting a leaked Message-ID starts a new conversation, and the record says why."""
    parsed = fixture("reply-leaked-reference")
    ref = thread(parsed, sender_of(parsed, 5), lookups())
    assert ref.conversation_id is None
    assert "<original@customer.test> (conversation 7)" in ref.detail
    assert "took no part" in ref.detail


def test_our_forwarding_address_is_no_participant() -> None:
    """Mail that spoofs our own forwarding address as sender is not a participant by it."""
    parsed = fixture("reply-leaked-reference")
    ref = thread(parsed, Sender(SUPPORT, 5, frozenset({SUPPORT})), lookups())
    assert ref.reason is ThreadReason.NEW


def test_stranger_who_received_the_conversation_may_join() -> None:
    """Someone our reply was sent to (a recipient, hence a participant) joins by reference."""
    parsed = fixture("reply-leaked-reference")
    widened = replace(JOHNS, participants=JOHNS.participants | {"mallory@evil.test"})
    found = lookups(references={"<original@customer.test>": widened})
    assert thread(parsed, sender_of(parsed, 5), found).reason is ThreadReason.IN_REPLY_TO


def test_reply_token_from_envelope_and_header() -> None:
    """The token is read from `<local>+<token>@` in the envelope or the To header."""
    parsed = fixture("reply-token")
    assert reply_token(f"support+{TOKEN}@acme.inbox.example.net") == TOKEN
    assert reply_token("support+ABC@acme.inbox.example.net") == "abc"
    assert reply_token(SUPPORT) is None
    assert reply_token("support+bad token@x.test") is None
    assert header_tokens(parsed, SUPPORT) == [TOKEN]
    assert header_tokens(parsed, "sales@acme.inbox.example.net") == []


def test_reply_token_rule_joins() -> None:
    """A message naming a conversation's reply token joins it (no references needed)."""
    parsed = fixture("reply-token")
    ref = thread(parsed, sender_of(parsed, 1), lookups(token=JOHNS))
    assert (ref.reason, ref.conversation_id) == (ThreadReason.REPLY_TOKEN, 7)


def test_references_come_before_the_token() -> None:
    """A reference match decides before a reply token that names another conversation."""
    parsed = fixture("reply-in-reply-to")
    ref = thread(parsed, sender_of(parsed, 1), lookups(token=OTHER))
    assert (ref.reason, ref.conversation_id) == (ThreadReason.IN_REPLY_TO, 7)


@pytest.mark.parametrize(
    ("status", "age", "joins"),
    [
        (ConversationStatus.OPEN, timedelta(days=13, hours=23), True),
        (ConversationStatus.OPEN, timedelta(days=14), True),
        (ConversationStatus.OPEN, timedelta(days=14, seconds=1), False),
        (ConversationStatus.CLOSED, timedelta(days=1), False),
    ],
)
def test_subject_rule_window_and_status(
    status: ConversationStatus, age: timedelta, joins: bool
) -> None:
    """The subject rule needs an open conversation active within the last 14 days."""
    parsed = fixture("reply-odp-same-contact")
    candidate = ConversationFacts(7, status, 1, JOHN, NOW - age)
    ref = thread(parsed, sender_of(parsed, 1), lookups(references={}, subject=candidate))
    assert (ref.reason is ThreadReason.SUBJECT) is joins


def test_subject_rule_needs_a_contact() -> None:
    """A message without a known contact never joins by subject."""
    parsed = fixture("reply-odp-same-contact")
    ref = thread(parsed, Sender(None, None), lookups(subject=JOHNS))
    assert ref.reason is ThreadReason.NEW


def test_bounce_attaches_when_failed_recipient_took_part() -> None:
    """A bounce joins the conversation of the bounced message when it reports a participant."""
    parsed = fixture("original")
    found = lookups(references={}, bounced=JOHNS)
    assert thread(parsed, Sender(None, None), found, frozenset({JOHN})).conversation_id == 7
    stranger = thread(parsed, Sender(None, None), found, frozenset({"x@evil.test"}))
    assert stranger.conversation_id is None


@pytest.mark.parametrize(
    ("status", "auto", "expected"),
    [
        (ConversationStatus.CLOSED, False, True),
        (ConversationStatus.CLOSED, True, False),
        (ConversationStatus.OPEN, False, False),
        (None, False, False),
    ],
)
def test_reopen_rule(status: ConversationStatus | None, auto: bool, expected: bool) -> None:
    """A person's reply reopens a closed conversation; an auto-reply never does."""
    assert reopens(status, auto) is expected
