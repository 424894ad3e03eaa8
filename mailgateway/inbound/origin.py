"""Whom a message is from (pure): the header From, or the original sender of a trusted forward."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from mailgateway.config import Config
from mailgateway.domain import Address, Attribution, Parsed
from mailgateway.inbound.authresults import Authentication, AuthMethod
from mailgateway.inbound.forward_html import html_to_text
from mailgateway.inbound.forwards import (
    Forward,
    ForwardRule,
    parse_attached_forward,
    parse_forward,
)
from mailgateway.inbound.parse import clean_text
from mailgateway.inbound.rfc822 import first_attached_message, has_attached_message

MAX_EMAIL_CHARS = 320
MAX_NAME_CHARS = 200
RESENT_HEADERS = ("Resent-From", "Resent-Sender")
SRS_PREFIXES = ("srs0=", "srs1=")
DUPLICATE_FROM = "duplicate:from"  # the parse stage's defect for a second From header


class OriginRule(enum.StrEnum):
    """Which rule of the trust policy (SPEC §4, Forwards) decided whom a message is from."""

    NO_FROM = "no_from_header"  # no usable From: the envelope sender
    NOT_A_FORWARD = "not_a_forward"  # no forwarded block: the From header
    MTA_FORWARD = "mta_forward"  # forwarded by an MTA (Resent-*, SRS): the From header
    SENDER_NOT_A_USER = "sender_not_a_user"  # a forward from someone not in users.toml
    NOT_AUTHENTICATED = "not_authenticated"  # a user's forward without aligned DKIM/SPF pass
    AMBIGUOUS_FROM = "ambiguous_from_header"  # a user's forward with several From headers
    FORWARDS_TO_FORWARDER = "inbox_logs_forwards_to_forwarder"  # the inbox toggle is off
    QUOTED_IS_OURS = "quoted_sender_is_ours"  # the quoted address is a user, inbox or our domain
    QUOTED_WITHOUT_ADDRESS = "quoted_sender_without_address"  # the block names no address
    TRUSTED_FORWARD = "trusted_forward"  # the original sender of an authenticated user's forward


REFUSED_FORWARD_RULES = frozenset(
    {OriginRule.SENDER_NOT_A_USER, OriginRule.NOT_AUTHENTICATED, OriginRule.AMBIGUOUS_FROM}
)


@dataclass(frozen=True, slots=True)
class OriginFacts:
    """What the trust policy knows of the account: user addresses, inbox addresses, domains."""

    users: frozenset[str] = frozenset()
    addresses: frozenset[str] = frozenset()
    domains: frozenset[str] = frozenset()

    def is_user(self, email: str) -> bool:
        """Whether the address is a user's (users.toml)."""
        return email.lower() in self.users

    def is_ours(self, email: str) -> bool:
        """Whether the address is a user's, an inbox's, or on one of our domains."""
        email = email.lower()
        domain = email.rpartition("@")[2]
        on_ours = any(domain == d or domain.endswith("." + d) for d in self.domains)
        return email in self.users or email in self.addresses or on_ours


@dataclass(frozen=True, slots=True)
class Evidence:
    """Why a message is attributed as it is: the rule, the header it rests on, the forwarded
    block's kind and quoted address, how the forwarder was authenticated, headers ignored."""

    rule: OriginRule
    header: str
    forward: ForwardRule | None = None
    quoted: str = ""
    authentication: AuthMethod | None = None
    ignored: tuple[str, ...] = ()

    @property
    def warning(self) -> str | None:
        """For agents: a forward whose quoted sender was not believed, and why (None otherwise)."""
        if self.rule not in REFUSED_FORWARD_RULES or not self.quoted:
            return None
        return f"forward quoting {self.quoted} not trusted: {self.rule.value.replace('_', ' ')}"

    def as_json(self) -> dict[str, Any]:
        """The evidence as stored on the message and shown by `conversations show`."""
        return {
            "rule": self.rule.value,
            "warning": self.warning,
            "header": self.header,
            "forward": None if self.forward is None else self.forward.value,
            "quoted": self.quoted or None,
            "authentication": None if self.authentication is None else self.authentication.value,
            "ignored_authserv_ids": list(self.ignored),
        }


@dataclass(frozen=True, slots=True)
class Origin:
    """Whom the conversation is with, whom the message shows as its sender, and why."""

    contact: Address | None
    sender: Address | None
    attribution: Attribution
    forwarded_by: str | None
    evidence: Evidence


def origin_facts(config: Config) -> OriginFacts:
    """The facts of a loaded configuration: users, inbox and channel addresses, our domains."""
    account = config.gateway.account
    addresses: set[str] = set()
    for inbox in config.inboxes.values():
        fallback = inbox.fallback_email
        addresses.add(fallback.forwarding_address.lower())
        if fallback.from_address != "default":
            addresses.add(fallback.from_address.lower())
        addresses.update(channel.address.lower() for channel in inbox.channels)
    domains = {account.local_domain.lower(), account.from_domain.lower()}
    return OriginFacts(
        users=frozenset(user.email.lower() for user in config.users.values()),
        addresses=frozenset(addresses),
        domains=config.local_domains() | domains,
    )


def find_forward(parsed: Parsed, raw: bytes) -> Forward | None:
    """The directly forwarded message: an inline block first, else an attached message/rfc822
    (the mail's own text is then the forwarder's note). Never raises."""
    try:
        inline = parse_forward(parsed.text, parsed.html, parsed.subject)
        if inline is not None or not has_attached_message(parsed.attachments):
            return inline
        message = first_attached_message(raw)
        if message is None:
            return None
        return parse_attached_forward(message, note=_note(parsed))
    except Exception:  # the stage boundary: a parser fault means "no forward", not a lost mail
        return None


def _note(parsed: Parsed) -> str:
    """The forwarding mail's own text: its text part, else the text of its HTML."""
    if parsed.text and parsed.text.strip():
        return parsed.text
    return html_to_text(parsed.html or "")


def needs_authentication(parsed: Parsed, forward: Forward | None, facts: OriginFacts) -> bool:
    """Whether the decision depends on authentication (a user's forward): only then is DKIM
    worth its DNS lookups."""
    return forward is not None and parsed.from_ is not None and facts.is_user(parsed.from_.email)


def header_origin(parsed: Parsed, envelope_sender: str = "") -> Origin:
    """The origin when nothing is known of the account: the From header, else the envelope."""
    facts, auth = OriginFacts(), Authentication(False)
    return resolve_origin(parsed, None, facts, auth, envelope_sender=envelope_sender)


def resolve_origin(
    parsed: Parsed,
    forward: Forward | None,
    facts: OriginFacts,
    auth: Authentication,
    *,
    original_sender_of_forwards: bool = True,
    envelope_sender: str = "",
) -> Origin:
    """Apply the trust policy: the quoted sender only for an authenticated user's forward whose
    quoted address is not ours; the forwarder when the inbox says so; else the From header."""
    sender = parsed.from_ if parsed.from_ is not None and parsed.from_.email else None
    if sender is None:
        return _no_from(envelope_sender)
    if not facts.is_user(sender.email):
        return _outsider(parsed, forward, sender, envelope_sender)
    if forward is None:
        return _plain(sender, Evidence(OriginRule.NOT_A_FORWARD, f"From: {sender.email}"))
    quoted = _quoted(forward.from_)
    found = _Found(forward.rule, quoted.email, auth)
    if DUPLICATE_FROM in parsed.defects:  # authentication may vouch for another From header
        return _plain(sender, found.evidence(OriginRule.AMBIGUOUS_FROM, f"From: {sender.email}"))
    if not auth.passed:
        return _plain(sender, found.evidence(OriginRule.NOT_AUTHENTICATED, f"From: {sender.email}"))
    if not original_sender_of_forwards:
        return _forwarder(sender, found.evidence(OriginRule.FORWARDS_TO_FORWARDER))
    if not quoted.email:
        return _forwarder(sender, found.evidence(OriginRule.QUOTED_WITHOUT_ADDRESS))
    if facts.is_ours(quoted.email):
        return _forwarder(sender, found.evidence(OriginRule.QUOTED_IS_OURS))
    evidence = found.evidence(OriginRule.TRUSTED_FORWARD)
    return Origin(quoted, quoted, Attribution.FORWARD_ORIGINAL_SENDER, sender.email, evidence)


@dataclass(frozen=True, slots=True)
class _Found:
    """A user's forward as found: what the evidence of every later rule repeats."""

    forward: ForwardRule
    quoted: str
    auth: Authentication

    def evidence(self, rule: OriginRule, header: str = "") -> Evidence:
        """Evidence for a rule; the header defaults to the one that authenticated the forwarder."""
        return Evidence(
            rule,
            header or self.auth.header,
            self.forward,
            self.quoted,
            self.auth.method if self.auth.passed else None,
            self.auth.ignored,
        )


def _no_from(envelope_sender: str) -> Origin:
    """No From header: the contact is the envelope sender, when it is an address."""
    address = clean_text(envelope_sender, limit=MAX_EMAIL_CHARS).strip().lower()
    contact = Address(email=address) if "@" in address else None
    evidence = Evidence(OriginRule.NO_FROM, f"MAIL FROM: {address}" if contact else "MAIL FROM")
    return Origin(contact, None, Attribution.SENDER, None, evidence)


def _outsider(
    parsed: Parsed, forward: Forward | None, sender: Address, envelope_sender: str
) -> Origin:
    """Mail from someone who is not a user: always theirs, whatever its body quotes."""
    marker = _mta_marker(parsed, envelope_sender)
    if marker:
        evidence = Evidence(OriginRule.MTA_FORWARD, marker)
    elif forward is not None:
        quoted = _quoted(forward.from_).email
        evidence = Evidence(
            OriginRule.SENDER_NOT_A_USER, f"From: {sender.email}", forward.rule, quoted
        )
    else:
        evidence = Evidence(OriginRule.NOT_A_FORWARD, f"From: {sender.email}")
    return _plain(sender, evidence)


def _mta_marker(parsed: Parsed, envelope_sender: str) -> str:
    """The header or envelope that shows an MTA forwarded the mail ('' when none does)."""
    for name in RESENT_HEADERS:
        value = parsed.header(name)
        if value is not None:
            return clean_text(f"{name}: {value}", limit=MAX_EMAIL_CHARS)
    envelope = clean_text(envelope_sender, limit=MAX_EMAIL_CHARS).strip()
    if envelope.lower().startswith(SRS_PREFIXES):
        return f"MAIL FROM: {envelope}"
    return ""


def _quoted(address: Address) -> Address:
    """The quoted sender, made safe to store: header-safe text, bounded lengths."""
    email = clean_text(address.email, limit=MAX_EMAIL_CHARS).strip().lower()
    if "@" not in email:
        email = ""
    return Address(email, clean_text(address.name, limit=MAX_NAME_CHARS).strip())


def _plain(sender: Address, evidence: Evidence) -> Origin:
    """The From header's sender, as it is."""
    return Origin(sender, sender, Attribution.SENDER, None, evidence)


def _forwarder(sender: Address, evidence: Evidence) -> Origin:
    """An authenticated user's forward logged to the user who forwarded it."""
    return Origin(sender, sender, Attribution.FORWARDER, sender.email, evidence)
