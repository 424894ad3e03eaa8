"""Authentication of the From domain: our DKIM results and trusted Authentication-Results only."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgateway.inbound.authresults import (
    AuthMethod,
    DkimResult,
    aligned,
    authenticate,
    authserv_id,
)

TRUSTED = ["mx.acme.example"]


def results(*values: str) -> list[tuple[str, str]]:
    """Authentication-Results headers with these values, top first."""
    return [("Authentication-Results", value) for value in values]


@pytest.mark.parametrize(
    ("value", "method"),
    [
        ("mx.acme.example; dkim=pass header.d=acme.example header.s=s1", AuthMethod.RESULTS_DKIM),
        ("mx.acme.example; dkim=pass header.i=@mail.acme.example", AuthMethod.RESULTS_DKIM),
        ("mx.acme.example; spf=pass smtp.mailfrom=alice@acme.example", AuthMethod.RESULTS_SPF),
        ("mx.acme.example; spf=pass smtp.mailfrom=bounce.acme.example", AuthMethod.RESULTS_SPF),
        ("mx.acme.example; dmarc=pass (p=reject) header.from=acme.example",
         AuthMethod.RESULTS_DMARC),
        ("MX.Acme.Example 1; dkim=fail header.d=acme.example; spf=pass smtp.mailfrom=acme.example",
         AuthMethod.RESULTS_SPF),
    ],
)  # fmt: skip
def test_trusted_aligned_pass_authenticates(value: str, method: AuthMethod) -> None:
    """A trusted host's pass aligned with the From domain authenticates, naming the method."""
    found = authenticate(results(value), "acme.example", [], TRUSTED)
    assert found.passed
    assert found.method is method
    assert found.header.startswith("Authentication-Results: mx.acme.example; ")
    assert "=pass" in found.header


def test_evidence_header_is_the_deciding_result() -> None:
    """The evidence names the host and the one result that decided, not the whole header."""
    value = "mx.acme.example;\n\tspf=fail smtp.mailfrom=x.test;\n\tdkim=pass header.d=acme.example"
    found = authenticate(results(value), "acme.example", [], TRUSTED)
    expected = "Authentication-Results: mx.acme.example; dkim=pass header.d=acme.example"
    assert found.header == expected


@pytest.mark.parametrize(
    "value",
    [
        "mx.acme.example; dkim=fail header.d=acme.example",
        "mx.acme.example; spf=softfail smtp.mailfrom=alice@acme.example",
        "mx.acme.example; dkim=pass header.d=evil.test",
        "mx.acme.example; spf=pass smtp.mailfrom=bounce@evil.test",
        "mx.acme.example; spf=pass smtp.helo=acme.example",
        "mx.acme.example; dkim=pass header.d=example",
        "mx.acme.example; auth=pass smtp.auth=alice@acme.example",
        "mx.acme.example; none",
        "mx.acme.example; dkim=pass header.d=acme.example.evil.test",
    ],
)
def test_failures_and_misaligned_passes_do_not_authenticate(value: str) -> None:
    """Fails, passes for another domain or a bare TLD, and unrelated methods do not count."""
    assert not authenticate(results(value), "acme.example", [], TRUSTED).passed


def test_headers_of_untrusted_hosts_are_ignored_and_named() -> None:
    """Anyone can write an Authentication-Results header: other hosts' are ignored, and named."""
    value = "smtp.evil.test; dkim=pass header.d=acme.example; spf=pass smtp.mailfrom=acme.example"
    found = authenticate(results(value, value), "acme.example", [], TRUSTED)
    assert not found.passed
    assert found.ignored == ("smtp.evil.test",)


def test_forged_header_below_the_trusted_hosts_own_is_ignored() -> None:
    """Only the topmost header of a trusted authserv-id counts: a forged one below it does not."""
    headers = results(
        "mx.acme.example; spf=fail smtp.mailfrom=acme.example; dkim=none",
        "mx.acme.example; dkim=pass header.d=acme.example",
    )
    assert not authenticate(headers, "acme.example", [], TRUSTED).passed


def test_each_trusted_host_has_its_topmost_header_read() -> None:
    """With two trusted hosts, the topmost header of each is read."""
    headers = results(
        "relay.acme.example; none",
        "mx.acme.example; dkim=pass header.d=acme.example",
    )
    trusted = ["relay.acme.example", "mx.acme.example"]
    assert authenticate(headers, "acme.example", [], trusted).passed


def test_no_trusted_ids_means_no_header_is_believed() -> None:
    """With an empty [trust] authserv_ids, no Authentication-Results header is believed."""
    headers = results("mx.acme.example; dkim=pass header.d=acme.example")
    found = authenticate(headers, "acme.example", [], [])
    assert not found.passed
    assert found.ignored == ("mx.acme.example",)


def test_own_dkim_pass_aligned_authenticates_first() -> None:
    """Our own verified, aligned DKIM signature authenticates, shown by its d= and s=."""
    dkim = [DkimResult("evil.test", "s", True), DkimResult("acme.example", "mg1", True)]
    found = authenticate([], "acme.example", dkim, [])
    assert (found.passed, found.method) == (True, AuthMethod.DKIM)
    assert found.header == "DKIM-Signature: d=acme.example; s=mg1"


def test_own_dkim_failure_or_misalignment_does_not_authenticate() -> None:
    """A failed signature, or a valid one of another domain, does not authenticate."""
    dkim = [
        DkimResult("acme.example", "mg1", False, "ValidationError"),
        DkimResult("x.test", "s", True),
    ]
    assert not authenticate([], "acme.example", dkim, TRUSTED).passed


@pytest.mark.parametrize(
    "value",
    ["", ";;;", "mx.acme.example", "mx.acme.example; dkim", "mx.acme.example; dkim=pass header.d",
     "mx.acme.example; =pass", "(comment only)", "mx.acme.example; dkim=pass (unclosed header.d=a"],
)  # fmt: skip
def test_malformed_headers_are_not_believed(value: str) -> None:
    """A malformed header from a trusted host authenticates nothing and raises nothing."""
    assert not authenticate(results(value), "acme.example", [], TRUSTED).passed


def test_hostile_header_volume_is_capped() -> None:
    """A thousand huge Authentication-Results headers are read within the caps, quickly."""
    value = "mx.acme.example; " + "dkim=fail header.d=x.test; " * 20_000
    start = time.perf_counter()
    found = authenticate(results(*[value] * 1000), "acme.example", [], TRUSTED)
    assert time.perf_counter() - start < 2.0
    assert not found.passed


@pytest.mark.parametrize(
    ("domain", "from_domain", "expected"),
    [
        ("acme.example", "acme.example", True),
        ("ACME.example.", "acme.example", True),
        ("acme.example", "mail.acme.example", True),
        ("mail.acme.example", "acme.example", True),
        ("example", "acme.example", False),
        ("evil.test", "acme.example", False),
        ("notacme.example", "acme.example", False),
        ("", "acme.example", False),
        ("acme.example", "", False),
    ],
)
def test_relaxed_alignment(domain: str, from_domain: str, expected: bool) -> None:
    """Alignment is relaxed (sub- or parent domain) but never a bare top-level domain."""
    assert aligned(domain, from_domain) is expected


def test_authserv_id_is_the_first_token() -> None:
    """The authserv-id is the first token, lower-cased, without a version or comment."""
    assert authserv_id(" MX.Acme.Example 1 (v) ; dkim=pass") == "mx.acme.example"
    assert authserv_id("") == ""


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.text(max_size=200), max_size=5), from_domain=st.text(max_size=30))
def test_never_raises(values: list[str], from_domain: str) -> None:
    """Arbitrary header values and From domains give a verdict, never an exception."""
    found = authenticate(results(*values), from_domain, [], [*TRUSTED, *values[:1]])
    assert isinstance(found.passed, bool)
