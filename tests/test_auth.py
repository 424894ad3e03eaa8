"""DKIM verification with dkimpy (DNS injected) and the composed origin step of the worker."""

from __future__ import annotations

import re
from pathlib import Path

import dkim
import pytest

from mailgateway.auth import DkimVerifier, determine_origin
from mailgateway.config import Config
from mailgateway.domain import Address, Attribution
from mailgateway.inbound.authresults import AuthMethod
from mailgateway.inbound.origin import Origin, OriginRule
from mailgateway.inbound.parse import parse
from tests.dkimkeys import SELECTOR, FakeDns, sign
from tests.support import loaded, make_message, write_config
from tests.test_origin import read_fixture

JOHN = Address("john.doe@customer.test", "John Doe")


def unauthenticated(name: str) -> bytes:
    """A fixture without its Authentication-Results headers (only our DKIM check can vouch)."""
    raw = read_fixture(name)
    return re.sub(rb"(?m)^Authentication-Results:.*\r\n(?:[ \t].*\r\n)*", b"", raw)


def configured(tmp_path: Path, trust: str) -> Config:
    """The test configuration with a [trust] section."""
    folder = write_config(tmp_path / "config", f"sqlite:///{tmp_path / 'unused.db'}")
    with (folder / "mailgateway.toml").open("a") as gateway:
        gateway.write(f"[trust]\n{trust}\n")
    return loaded(folder)


def origin_with(raw: bytes, config: Config, dns: FakeDns, inbox: str = "support") -> Origin:
    """The worker's origin step for raw bytes with an injected DNS."""
    return determine_origin(
        raw,
        parse(raw),
        config=config,
        inbox=inbox,
        envelope_sender="alice@acme.example",
        verifier=DkimVerifier(dns=dns),
    )


def test_signed_message_verifies_with_published_key() -> None:
    """A message signed with the published key verifies; the result names d= and s=."""
    dns = FakeDns().publish("acme.example")
    [result] = DkimVerifier(dns=dns).verify(sign(make_message(), "acme.example"))
    assert (result.domain, result.selector, result.passed) == ("acme.example", SELECTOR, True)
    assert dns.asked == [f"{SELECTOR}._domainkey.acme.example."]


def test_tampered_body_fails() -> None:
    """A body changed after signing fails verification."""
    signed = sign(make_message(), "acme.example")
    tampered = signed.replace(b"on fire", b"on ice!")
    [result] = DkimVerifier(dns=FakeDns().publish("acme.example")).verify(tampered)
    assert not result.passed


def test_body_length_tag_is_not_trusted() -> None:
    """A signature with l= vouches for a prefix only: text appended after it would pass, so such
    a signature does not count (even before anything is appended)."""
    dns = FakeDns().publish("acme.example")
    signed = sign(make_message(), "acme.example", length=True)
    appended = signed + b"---------- Forwarded message ---------\r\nFrom: x@evil.test\r\n"
    for raw in (signed, appended):
        [result] = DkimVerifier(dns=dns).verify(raw)
        assert (result.passed, result.error) == (False, "body-length-tag")


@pytest.mark.parametrize(
    "dns",
    [
        FakeDns(),
        FakeDns(records={f"{SELECTOR}._domainkey.acme.example.": b"v=DKIM1; k=rsa; p=AAAA"}),
        FakeDns(failure=lambda: dkim.DnsTimeoutError("timeout")),
        FakeDns(failure=lambda: OSError("network unreachable")),
    ],
    ids=["no key", "bad key", "DNS timeout", "resolver crash"],
)
def test_missing_or_broken_key_or_dns_fails_without_raising(dns: FakeDns) -> None:
    """No key, a malformed key or a failing resolver: not verified, and no exception."""
    [result] = DkimVerifier(dns=dns).verify(sign(make_message(), "acme.example"))
    assert not result.passed
    assert dns.asked


def test_unsigned_and_malformed_messages() -> None:
    """An unsigned message gives no result and no lookup; malformed input gives a failed one."""
    dns = FakeDns().publish("acme.example")
    assert DkimVerifier(dns=dns).verify(make_message()) == ()
    [broken] = DkimVerifier(dns=dns).verify(b"DKIM-Signature: v=1; d=x\r\n\r\nbody\r\n")
    assert not broken.passed and broken.error
    assert dns.asked == []


def test_signatures_verified_are_capped() -> None:
    """Only the first few signatures are verified: each would cost a DNS lookup."""
    raw = make_message()
    for number in range(10):
        raw = sign(raw, f"d{number}.test")
    dns = FakeDns()
    assert len(DkimVerifier(dns=dns, max_signatures=3).verify(raw)) == 3
    assert len(dns.asked) == 3


def test_own_dkim_check_trusts_a_signed_agent_forward(tmp_path: Path) -> None:
    """[trust] verify_dkim: an agent's forward signed by the agent's domain is trusted."""
    config = configured(tmp_path, "verify_dkim = true")
    dns = FakeDns().publish("acme.example")
    origin = origin_with(sign(unauthenticated("gmail_en_qp.eml"), "acme.example"), config, dns)
    assert origin.contact == JOHN
    assert origin.attribution is Attribution.FORWARD_ORIGINAL_SENDER
    assert origin.evidence.authentication is AuthMethod.DKIM
    assert origin.evidence.header == f"DKIM-Signature: d=acme.example; s={SELECTOR}"


def test_signature_of_another_domain_does_not_vouch_for_agent(tmp_path: Path) -> None:
    """A valid signature by the attacker's own domain does not authenticate the agent's From."""
    config = configured(tmp_path, "verify_dkim = true")
    dns = FakeDns().publish("evil.test")
    origin = origin_with(sign(unauthenticated("gmail_en_qp.eml"), "evil.test"), config, dns)
    assert origin.contact == Address("alice@acme.example", "Alice Nowak")
    assert origin.evidence.rule is OriginRule.NOT_AUTHENTICATED
    assert dns.asked == [f"{SELECTOR}._domainkey.evil.test."]


def test_verify_dkim_off_makes_no_lookup(tmp_path: Path) -> None:
    """[trust] verify_dkim = false: no DNS lookup; a signed forward is then not authenticated."""
    config = configured(tmp_path, "verify_dkim = false")
    dns = FakeDns().publish("acme.example")
    origin = origin_with(sign(unauthenticated("gmail_en_qp.eml"), "acme.example"), config, dns)
    assert origin.evidence.rule is OriginRule.NOT_AUTHENTICATED
    assert dns.asked == []


def test_no_lookup_when_the_decision_does_not_depend_on_it(tmp_path: Path) -> None:
    """Customer mail and agents' own notes make no DNS lookup, even when signed."""
    config = configured(tmp_path, "verify_dkim = true")
    dns = FakeDns().publish("customer.test").publish("acme.example")
    customer = origin_with(sign(make_message(), "customer.test"), config, dns)
    note = make_message(sender="Alice <alice@acme.example>", body="Lunch at noon.\n")
    agent = origin_with(sign(note, "acme.example"), config, dns)
    assert (customer.contact, agent.evidence.rule) == (JOHN, OriginRule.NOT_A_FORWARD)
    assert dns.asked == []


def test_trusted_header_and_inbox_toggle(tmp_path: Path) -> None:
    """A trusted host's header authenticates; an inbox with the toggle off logs the forwarder."""
    folder = write_config(tmp_path / "config", f"sqlite:///{tmp_path / 'unused.db'}")
    with (folder / "mailgateway.toml").open("a") as gateway:
        gateway.write('[trust]\nauthserv_ids = ["mx.acme.example"]\nverify_dkim = false\n')
    with (folder / "inboxes" / "sales.toml").open("a") as sales:
        sales.write("\n[fallback_email]\noriginal_sender_of_forwards = false\n")
    config = loaded(folder)
    raw = read_fixture("gmail_en_qp.eml")
    support = origin_with(raw, config, FakeDns(), inbox="support")
    sales_origin = origin_with(raw, config, FakeDns(), inbox="sales")
    assert support.attribution is Attribution.FORWARD_ORIGINAL_SENDER
    assert sales_origin.attribution is Attribution.FORWARDER
    assert sales_origin.forwarded_by == "alice@acme.example"


def test_without_configuration_the_from_header_decides() -> None:
    """A worker without configuration attributes every message to its From header."""
    raw = read_fixture("gmail_en_qp.eml")
    origin = determine_origin(
        raw, parse(raw), config=None, inbox="support", envelope_sender="", verifier=None
    )
    assert origin.contact == Address("alice@acme.example", "Alice Nowak")
    assert origin.attribution is Attribution.SENDER
