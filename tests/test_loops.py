"""Auto-reply and loop detection over .eml fixtures: RFC 3834 headers, Precedence, vendor
headers, list mail, system senders, null reverse-path, out-of-office subjects and our own mail."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgateway.inbound.loops import classify
from mailgateway.inbound.parse import parse

LOOPS = Path(__file__).parent / "fixtures" / "threading" / "loops"
OWN = frozenset({"support@acme.inbox.example.net", "sales@acme.inbox.example.net"})
CUSTOMER = "john.doe@customer.test"

EXPECTED = {
    "auto-submitted-auto-replied": ["auto-submitted:auto-replied"],
    "auto-submitted-auto-generated": ["auto-submitted:auto-generated"],
    "precedence-bulk": ["precedence:bulk"],
    "precedence-junk": ["precedence:junk"],
    "precedence-list": ["precedence:list"],
    "x-autoreply": ["header:x-autoreply"],
    "x-autorespond": ["header:x-autorespond"],
    "x-auto-response-suppress": ["header:x-auto-response-suppress"],
    "list-id": ["list:list-id"],
    "list-unsubscribe": ["list:list-unsubscribe"],
    "sender-mailer-daemon": ["sender:mailer-daemon"],
    "sender-postmaster": ["sender:postmaster"],
    "sender-noreply": ["sender:no-reply"],
    "loop-x-loop": ["loop:x-loop"],
    "ooo-exchange": [
        "auto-submitted:auto-generated",
        "header:x-auto-response-suppress",
        "subject:out-of-office",
    ],
    "ooo-gmail": ["auto-submitted:auto-replied"],
    "ooo-zimbra": ["auto-submitted:auto-replied", "precedence:bulk", "subject:out-of-office"],
    "auto-submitted-no": [],
    "person": [],
}
OOO_SUBJECTS = sorted(path.stem for path in LOOPS.glob("ooo-subject-*.eml"))


@pytest.mark.parametrize(("name", "reasons"), sorted(EXPECTED.items()))
def test_signs_found(name: str, reasons: list[str]) -> None:
    """Each fixture is flagged with exactly the signs it carries (none for a person's mail)."""
    parsed = parse((LOOPS / f"{name}.eml").read_bytes())
    verdict = classify(parsed, CUSTOMER, own_addresses=OWN)
    assert list(verdict.reasons) == reasons
    assert verdict.auto_submitted is bool(reasons)


@pytest.mark.parametrize("name", OOO_SUBJECTS)
def test_out_of_office_subjects(name: str) -> None:
    """Out-of-office subjects of Exchange, Gmail, Zimbra and Notes, in many languages, are
    recognised even when a relay stripped every auto-reply header."""
    parsed = parse((LOOPS / f"{name}.eml").read_bytes())
    assert classify(parsed, CUSTOMER).reasons == ("subject:out-of-office",)


@pytest.mark.parametrize("mail_from", ["", "<>", "  "])
def test_null_reverse_path(mail_from: str) -> None:
    """A null envelope sender (bounces, RFC 3834 responders) is flagged."""
    parsed = parse((LOOPS / "person.eml").read_bytes())
    assert classify(parsed, mail_from).reasons == ("null-sender",)


@pytest.mark.parametrize(
    "mail_from",
    ["MAILER-DAEMON@mx.test", "owner-customers@lists.test", "customers-request@lists.test"],
)
def test_system_envelope_senders(mail_from: str) -> None:
    """MAILER-DAEMON, owner-* and *-request envelope senders (RFC 3834 §2) are flagged."""
    parsed = parse((LOOPS / "person.eml").read_bytes())
    assert classify(parsed, mail_from).auto_submitted


def test_own_message_and_delivered_to_loop() -> None:
    """Our own Message-ID coming back, or Delivered-To one of our addresses, is a loop."""
    raw = (LOOPS / "person.eml").read_bytes()
    looped = b"Delivered-To: support+abc@acme.inbox.example.net\r\n" + raw
    assert classify(parse(looped), CUSTOMER, own_addresses=OWN).reasons == ("loop:delivered-to",)
    back = classify(parse(raw), CUSTOMER, own_addresses=OWN, own_message=True)
    assert back.reasons == ("loop:own-message",)


def test_bounce_format_is_a_reason() -> None:
    """A message the bounce stage read as a report is flagged with its format."""
    parsed = parse((LOOPS / "person.eml").read_bytes())
    assert classify(parsed, CUSTOMER, bounce_format="qmail").reasons == ("bounce:qmail",)
