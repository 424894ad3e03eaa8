"""The origin stage (pure): the trust policy for forwards, table-driven over .eml fixtures."""

from __future__ import annotations

import time
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailgateway.config import Config
from mailgateway.domain import Address, Attribution, Parsed
from mailgateway.inbound.authresults import Authentication, AuthMethod, authenticate
from mailgateway.inbound.forwards import Forward, ForwardRule
from mailgateway.inbound.origin import (
    Evidence,
    Origin,
    OriginFacts,
    OriginRule,
    find_forward,
    header_origin,
    needs_authentication,
    origin_facts,
    resolve_origin,
)
from mailgateway.inbound.parse import parse
from tests.support import loaded, make_message, write_config

FIXTURES = Path(__file__).parent / "fixtures" / "origin"
TRUSTED = ("mx.acme.example",)
PASSED = Authentication(True, AuthMethod.RESULTS_DKIM, "Authentication-Results: mx; dkim=pass")
FAILED = Authentication(False)
JOHN = Address("john.doe@customer.test", "John Doe")


def read_fixture(name: str) -> bytes:
    """A fixture .eml with CRLF line ends, as it arrives over SMTP."""
    return (FIXTURES / name).read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """The test configuration: users alice and bob, inboxes support, sales and archive."""
    folder = tmp_path_factory.mktemp("origin") / "config"
    return loaded(write_config(folder, f"sqlite:///{folder.parent / 'unused.db'}"))


def origin_of(raw: bytes, config: Config, *, toggle: bool = True, envelope: str = "") -> Origin:
    """The origin of raw bytes with the test facts and trusted host mx.acme.example."""
    parsed = parse(raw)
    forward = find_forward(parsed, raw)
    domain = parsed.from_.email.rpartition("@")[2] if parsed.from_ else ""
    auth = authenticate(parsed.headers, domain, [], TRUSTED)
    facts = origin_facts(config)
    return resolve_origin(
        parsed, forward, facts, auth, original_sender_of_forwards=toggle, envelope_sender=envelope
    )


# (fixture, contact e-mail, contact name, attribution, rule, forward kind)
TABLE = [
    ("gmail_en_qp.eml", "john.doe@customer.test", "John Doe", "forward_original_sender",
     "trusted_forward", "separator"),
    ("outlook365_de_base64.eml", "juergen.mueller@kunde.test", "Jürgen Müller",
     "forward_original_sender", "trusted_forward", "original_message"),
    ("apple_mail_fr_qp.eml", "emilie.durand@client.test", "Émilie Durand",
     "forward_original_sender", "trusted_forward", "separator"),
    ("thunderbird_es_8bit.eml", "carlos.perez@cliente.test", "Carlos Pérez Gómez",
     "forward_original_sender", "trusted_forward", "separator"),
    ("new_outlook_pl_html_only.eml", "zofia.wisniewska@klient.test", "Zofia Wiśniewska",
     "forward_original_sender", "trusted_forward", "header_block"),
    ("attached_rfc822_ja.eml", "hanako.yamada@kokyaku.test", "山田 花子",
     "forward_original_sender", "trusted_forward", "attachment"),
    ("gmail_nested_chain.eml", "karin.berg@reseller.test", "Karin Berg",
     "forward_original_sender", "trusted_forward", "separator"),
    ("yahoo_it_glued.eml", "giulia.bianchi@cliente.test", "Giulia Bianchi",
     "forward_original_sender", "trusted_forward", "separator"),
    ("spoof_outsider_fake_forward.eml", "mallory@evil.test", "Mallory", "sender",
     "sender_not_a_user", "separator"),
    ("spoof_agent_unauthenticated.eml", "alice@acme.example", "Alice Nowak", "sender",
     "not_authenticated", "separator"),
    ("spoof_untrusted_authentication_results.eml", "alice@acme.example", "Alice Nowak",
     "sender", "not_authenticated", "separator"),
    ("spoof_forged_trusted_header_below.eml", "alice@acme.example", "Alice Nowak", "sender",
     "not_authenticated", "separator"),
    ("spoof_misaligned_dkim.eml", "alice@acme.example", "Alice Nowak", "sender",
     "not_authenticated", "separator"),
    ("forward_quoting_own_user.eml", "alice@acme.example", "Alice Nowak", "forwarder",
     "quoted_sender_is_ours", "separator"),
    ("forward_quoting_inbox.eml", "alice@acme.example", "Alice Nowak", "forwarder",
     "quoted_sender_is_ours", "separator"),
    ("mta_forward_srs_resent.eml", "john.doe@customer.test", "John Doe", "sender",
     "mta_forward", None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "email", "display", "attribution", "rule", "forward"), TABLE, ids=[r[0] for r in TABLE]
)
def test_fixture_origin(
    config: Config,
    name: str,
    email: str,
    display: str,
    attribution: str,
    rule: str,
    forward: str | None,
) -> None:
    """Each fixture lands on its contact with its attribution, and the evidence names the rule."""
    origin = origin_of(read_fixture(name), config)
    assert origin.contact == Address(email, display)
    assert origin.sender == origin.contact
    assert (origin.attribution, origin.evidence.rule) == (attribution, rule)
    assert origin.evidence.forward == forward
    expected_by = None if attribution == "sender" else "alice@acme.example"
    assert origin.forwarded_by == expected_by


def test_trusted_forward_evidence_names_the_authenticating_header(config: Config) -> None:
    """A trusted forward's evidence names the trusted header, the quoted address and the method."""
    evidence = origin_of(read_fixture("gmail_en_qp.eml"), config).evidence
    assert evidence.as_json() == {
        "rule": "trusted_forward",
        "warning": None,
        "header": "Authentication-Results: mx.acme.example; dkim=pass header.d=acme.example "
        "header.s=google header.b=Xk3q9ZtA",
        "forward": "separator",
        "quoted": "john.doe@customer.test",
        "authentication": "authentication_results_dkim",
        "ignored_authserv_ids": [],
    }


def test_untrusted_header_named_in_evidence(config: Config) -> None:
    """The evidence of a refused forward names the From header and the ignored host."""
    evidence = origin_of(read_fixture("spoof_untrusted_authentication_results.eml"), config)
    assert evidence.evidence.header == "From: alice@acme.example"
    assert evidence.evidence.ignored == ("smtp.evil.test",)
    assert evidence.evidence.quoted == "ceo@bigcustomer.test"
    assert evidence.evidence.warning == (
        "forward quoting ceo@bigcustomer.test not trusted: not authenticated"
    )


def test_inbox_toggle_off_logs_to_forwarder(config: Config) -> None:
    """original_sender_of_forwards = false: an authenticated forward is logged to the forwarder."""
    origin = origin_of(read_fixture("gmail_en_qp.eml"), config, toggle=False)
    assert origin.contact == Address("alice@acme.example", "Alice Nowak")
    assert origin.attribution is Attribution.FORWARDER
    assert origin.forwarded_by == "alice@acme.example"
    assert origin.evidence.rule is OriginRule.FORWARDS_TO_FORWARDER


def test_inbox_toggle_off_does_not_trust_unauthenticated(config: Config) -> None:
    """With the toggle off, an unauthenticated 'forward' is still only its sender's mail."""
    origin = origin_of(read_fixture("spoof_agent_unauthenticated.eml"), config, toggle=False)
    assert (origin.attribution, origin.forwarded_by) == (Attribution.SENDER, None)


def test_second_from_header_is_not_trusted(config: Config) -> None:
    """A trusted forward with a second From header is its first From's: which From the
    authentication vouched for is ambiguous."""
    raw = read_fixture("gmail_en_qp.eml").replace(
        b"\r\nFrom: Alice", b"\r\nFrom: Mallory <mallory@evil.test>\r\nFrom: Alice", 1
    )
    origin = origin_of(raw, config)
    assert origin.contact == Address("mallory@evil.test", "Mallory")
    assert origin.attribution is Attribution.SENDER
    swapped = read_fixture("gmail_en_qp.eml").replace(
        b"\r\nFrom: Alice Nowak <alice@acme.example>",
        b"\r\nFrom: Alice Nowak <alice@acme.example>\r\nFrom: Mallory <mallory@evil.test>",
        1,
    )
    origin = origin_of(swapped, config)
    assert origin.contact == Address("alice@acme.example", "Alice Nowak")
    assert (origin.attribution, origin.evidence.rule) == ("sender", "ambiguous_from_header")


def test_srs_envelope_marks_mta_forward(config: Config) -> None:
    """An SRS-rewritten envelope sender with the customer's From is an MTA forward: From wins."""
    raw = make_message()
    origin = origin_of(raw, config, envelope="SRS0=h4sh=T4=customer.test=john.doe@relay.test")
    assert origin.contact == JOHN
    assert origin.attribution is Attribution.SENDER
    assert origin.evidence.rule is OriginRule.MTA_FORWARD
    assert origin.evidence.header.startswith("MAIL FROM: SRS0=")


def test_plain_customer_mail_is_its_senders(config: Config) -> None:
    """A customer's own mail is attributed to its From header, rule not_a_forward."""
    origin = origin_of(make_message(), config, envelope="john.doe@customer.test")
    assert (origin.contact, origin.attribution) == (JOHN, Attribution.SENDER)
    assert origin.evidence == Evidence(OriginRule.NOT_A_FORWARD, "From: john.doe@customer.test")


def test_users_own_mail_without_forward_is_theirs(config: Config) -> None:
    """An agent's mail without a forwarded block is the agent's."""
    raw = make_message(sender="Alice <alice@acme.example>", body="Note to the team.\n")
    origin = origin_of(raw, config)
    assert origin.evidence.rule is OriginRule.NOT_A_FORWARD
    assert origin.contact == Address("alice@acme.example", "Alice")


def test_missing_from_uses_envelope_sender(config: Config) -> None:
    """Without a From header the contact is the envelope sender; the message has no sender."""
    origin = origin_of(b"Subject: x\r\n\r\nbody\r\n", config, envelope="Bounce@Relay.test")
    assert origin.contact == Address("bounce@relay.test")
    assert origin.sender is None
    assert origin.evidence.rule is OriginRule.NO_FROM
    nobody = origin_of(b"Subject: x\r\n\r\nbody\r\n", config, envelope="")
    assert (nobody.contact, nobody.evidence.header) == (None, "MAIL FROM")


def forward_from(sender: Address) -> Forward:
    """A forward whose quoted sender is `sender`."""
    return Forward(sender, (), (), "s", "d", "b", "", ForwardRule.SEPARATOR)


def alice_parsed() -> Parsed:
    """A parsed mail from alice@acme.example."""
    return parse(make_message(sender="Alice <alice@acme.example>"))


FACTS = OriginFacts(
    users=frozenset({"alice@acme.example", "bob@acme.example"}),
    addresses=frozenset({"support@acme.inbox.example.net", "help@acme.example"}),
    domains=frozenset({"acme.inbox.example.net"}),
)


@pytest.mark.parametrize(
    ("quoted", "rule"),
    [
        (Address("bob@acme.example", "Bob"), OriginRule.QUOTED_IS_OURS),
        (Address("alice@acme.example"), OriginRule.QUOTED_IS_OURS),
        (Address("help@acme.example"), OriginRule.QUOTED_IS_OURS),
        (Address("anyone@acme.inbox.example.net"), OriginRule.QUOTED_IS_OURS),
        (Address("x@sub.acme.inbox.example.net"), OriginRule.QUOTED_IS_OURS),
        (Address("", "John Doe"), OriginRule.QUOTED_WITHOUT_ADDRESS),
        (Address("john\r\n.doe"), OriginRule.QUOTED_WITHOUT_ADDRESS),
    ],
)
def test_quoted_address_of_ours_or_none_stays_with_forwarder(
    quoted: Address, rule: OriginRule
) -> None:
    """A forward quoting a user, an inbox, our domain or no address is logged to the forwarder."""
    origin = resolve_origin(alice_parsed(), forward_from(quoted), FACTS, PASSED)
    assert origin.contact == Address("alice@acme.example", "Alice")
    assert (origin.attribution, origin.evidence.rule) == (Attribution.FORWARDER, rule)


def test_quoted_sender_made_safe() -> None:
    """The quoted name and address are stored header-safe and bounded."""
    quoted = Address("John@Customer.test", "John\x00 \u2028Doe" + "x" * 500)
    origin = resolve_origin(alice_parsed(), forward_from(quoted), FACTS, PASSED)
    assert origin.contact is not None
    assert origin.contact.email == "john@customer.test"
    assert "\x00" not in origin.contact.name and "\u2028" not in origin.contact.name
    assert len(origin.contact.name) <= 200


def test_user_lookup_is_by_address_not_name() -> None:
    """A display name that copies an agent's does not make its sender a user."""
    parsed = parse(make_message(sender='"Alice Nowak" <alice@acme.example.evil.test>'))
    origin = resolve_origin(parsed, forward_from(JOHN), FACTS, PASSED)
    assert origin.evidence.rule is OriginRule.SENDER_NOT_A_USER
    assert origin.contact == Address("alice@acme.example.evil.test", "Alice Nowak")


def test_needs_authentication_only_for_a_users_forward() -> None:
    """Authentication (and so DNS) is needed only when a user's mail holds a forward."""
    customer = parse(make_message())
    assert needs_authentication(alice_parsed(), forward_from(JOHN), FACTS)
    assert not needs_authentication(alice_parsed(), None, FACTS)
    assert not needs_authentication(customer, forward_from(JOHN), FACTS)


def test_header_origin_without_facts() -> None:
    """Without configuration, every message is its From header's."""
    origin = header_origin(alice_parsed(), "x@y.test")
    assert origin.contact == Address("alice@acme.example", "Alice")
    assert origin.attribution is Attribution.SENDER
    assert origin.forwarded_by is None


def test_origin_facts_from_configuration(config: Config) -> None:
    """The facts hold the users, every inbox's forwarding address, and the account's domains."""
    facts = origin_facts(config)
    assert facts.users == {"alice@acme.example", "bob@acme.example"}
    assert "sales@acme.inbox.example.net" in facts.addresses
    assert "acme.inbox.example.net" in facts.domains
    assert not facts.is_ours("john.doe@customer.test")


# ---------------------------------------------------------------------------------------------
# Finding the forward: inline, attached, hostile


def attached_mail(inner: bytes, note: str = "See the attached mail.") -> bytes:
    """An agent's mail with a note and `inner` attached as message/rfc822."""
    outer = EmailMessage()
    outer["From"] = "Alice <alice@acme.example>"
    outer["Subject"] = "Fwd: x"
    outer.set_content(note)
    outer.add_attachment(inner, maintype="message", subtype="rfc822", filename="fwd.eml")
    return outer.as_bytes()


def test_inline_forward_wins_over_attachment() -> None:
    """A mail with an inline forwarded block and an attached message: the inline block wins."""
    inline = "FYI\n\n---------- Forwarded message ---------\nFrom: Jane <jane@x.test>\nDate: d\n"
    raw = attached_mail(make_message(), note=inline)
    forward = find_forward(parse(raw), raw)
    assert forward is not None
    assert (forward.from_.email, forward.rule) == ("jane@x.test", ForwardRule.SEPARATOR)


def test_attached_message_is_the_forward_with_note() -> None:
    """An attached message/rfc822 is the forward; the mail's own text is the note."""
    raw = attached_mail(make_message(subject="Printer on fire"))
    forward = find_forward(parse(raw), raw)
    assert forward is not None
    assert (forward.from_, forward.rule) == (JOHN, ForwardRule.ATTACHMENT)
    assert (forward.subject, forward.note) == ("Printer on fire", "See the attached mail.")


def test_attached_message_without_from_is_no_forward() -> None:
    """An attached message without a From header forwards nobody."""
    raw = attached_mail(b"Subject: no sender\r\n\r\nbody\r\n")
    assert find_forward(parse(raw), raw) is None


@pytest.mark.parametrize(
    "inner",
    [
        b"From: a@b.test\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n"
        + b"".join(
            b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (n, n + 1)
            for n in range(3000)
        ),
        b"From: a@b.test\r\n" + b"X-Filler: " + b"a" * 900_000 + b"\r\n\r\nbody\r\n",
        b"From: " + b"<" * 200_000 + b"\r\n\r\n",
        b"\xff\xfe" * 100_000,
    ],
    ids=["3000 nested multiparts", "900 kB header", "brackets", "binary"],
)
def test_hostile_attached_message_is_handled_quickly(inner: bytes) -> None:
    """A hostile attached message never raises and is read in well under 2 s."""
    raw = attached_mail(inner)
    start = time.perf_counter()
    forward = find_forward(parse(raw), raw)
    assert time.perf_counter() - start < 2.0
    assert forward is None or forward.rule is ForwardRule.ATTACHMENT
