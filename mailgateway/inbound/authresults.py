"""Whether a message is authenticated as from its From domain: our DKIM results, trusted headers."""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

import authres

from mailgateway.inbound.parse import clean_text

AUTHENTICATION_RESULTS = "authentication-results"
MAX_HEADERS = 20  # Authentication-Results headers read per message
MAX_HEADER_CHARS = 4096  # characters of one such header handed to the parser
MAX_EVIDENCE_CHARS = 300  # characters of a header kept as evidence


class AuthMethod(enum.StrEnum):
    """What showed that the message came from its From domain."""

    #: our own DKIM verification of a signature aligned with the From domain
    DKIM = "dkim"
    #: a trusted host's Authentication-Results: dkim=pass, header.d aligned
    RESULTS_DKIM = "authentication_results_dkim"
    #: a trusted host's Authentication-Results: spf=pass, smtp.mailfrom aligned
    RESULTS_SPF = "authentication_results_spf"
    #: a trusted host's Authentication-Results: dmarc=pass, header.from aligned
    RESULTS_DMARC = "authentication_results_dmarc"


_RESULT_METHODS = {
    "dkim": (AuthMethod.RESULTS_DKIM, ("header.d", "header.i")),
    "spf": (AuthMethod.RESULTS_SPF, ("smtp.mailfrom",)),
    "dmarc": (AuthMethod.RESULTS_DMARC, ("header.from",)),
}


@dataclass(frozen=True, slots=True)
class DkimResult:
    """One DKIM signature as our own verification found it."""

    domain: str
    selector: str
    passed: bool
    error: str = ""


@dataclass(frozen=True, slots=True)
class Authentication:
    """Whether the From domain is authenticated, by what, shown by which header; and the
    authserv-ids of the Authentication-Results headers that were not believed."""

    passed: bool
    method: AuthMethod | None = None
    header: str = ""
    ignored: tuple[str, ...] = ()


def authenticate(
    headers: Sequence[tuple[str, str]],
    from_domain: str,
    dkim: Sequence[DkimResult],
    trusted_ids: Collection[str],
) -> Authentication:
    """Our own aligned DKIM pass first, then the topmost Authentication-Results header of each
    trusted authserv-id (lower ones with the same id may be forged); other hosts' are ignored."""
    ignored = tuple(_untrusted_ids(headers, trusted_ids))
    for result in dkim:
        if result.passed and aligned(result.domain, from_domain):
            evidence = f"DKIM-Signature: d={result.domain}; s={result.selector}"
            return Authentication(True, AuthMethod.DKIM, evidence[:MAX_EVIDENCE_CHARS], ignored)
    for value in _trusted_values(headers, trusted_ids):
        found = _aligned_pass(value, from_domain)
        if found is not None:
            method, text = found
            header = clean_text(f"Authentication-Results: {authserv_id(value)}; {text}")
            return Authentication(True, method, header[:MAX_EVIDENCE_CHARS], ignored)
    return Authentication(False, ignored=ignored)


def aligned(domain: str, from_domain: str) -> bool:
    """Relaxed alignment: the same domain, or one a subdomain of the other (never a bare TLD)."""
    domain, from_domain = domain.strip().rstrip(".").lower(), from_domain.strip().lower()
    if "." not in domain or not from_domain:
        return False
    return (
        domain == from_domain
        or from_domain.endswith("." + domain)
        or domain.endswith("." + from_domain)
    )


def authserv_id(value: str) -> str:
    """The authserv-id of an Authentication-Results value, lower-cased ('' when unreadable)."""
    head = value.split(";", 1)[0].split("(", 1)[0].split()
    return head[0].lower() if head else ""


def _results_headers(headers: Sequence[tuple[str, str]]) -> Iterable[str]:
    """The values of the first Authentication-Results headers, top first."""
    found = (value for name, value in headers if name.lower() == AUTHENTICATION_RESULTS)
    for count, value in enumerate(found):
        if count >= MAX_HEADERS:
            return
        yield value[:MAX_HEADER_CHARS]


def _trusted_values(
    headers: Sequence[tuple[str, str]], trusted_ids: Collection[str]
) -> Iterable[str]:
    """The topmost header of each trusted authserv-id."""
    trusted = {item.lower() for item in trusted_ids}
    seen: set[str] = set()
    for value in _results_headers(headers):
        host = authserv_id(value)
        if host in trusted and host not in seen:
            seen.add(host)
            yield value


def _untrusted_ids(
    headers: Sequence[tuple[str, str]], trusted_ids: Collection[str]
) -> Iterable[str]:
    """The authserv-ids of headers whose host is not trusted, once each."""
    trusted = {item.lower() for item in trusted_ids}
    hosts = (authserv_id(value) for value in _results_headers(headers))
    return dict.fromkeys(clean_text(h, limit=255) for h in hosts if h not in trusted)


def _aligned_pass(value: str, from_domain: str) -> tuple[AuthMethod, str] | None:
    """The first pass result of a header whose domain is aligned with From: its method and
    its text ('dkim=pass header.d=example.com')."""
    try:
        parsed = authres.AuthenticationResultsHeader.parse_value(value)
    except Exception:  # authres raises its own errors and others on malformed input
        return None
    for result in parsed.results:
        known = _RESULT_METHODS.get(str(result.method).lower())
        if known is None or str(result.result).lower() != "pass":
            continue
        method, properties = known
        domains = [_domain(prop.value) for prop in result.properties if _key(prop) in properties]
        if any(aligned(domain, from_domain) for domain in domains):
            return method, _result_text(result)
    return None


def _result_text(result: authres.AuthenticationResult) -> str:
    """A result as evidence, 'dkim=pass header.d=example.com header.s=s1': written here, as
    authres's own str() raises AttributeError on an empty property value ('header.b=')."""
    version = f"/{result.version}" if result.version else ""
    words = [f"{result.method}{version}={result.result}"]
    words += [f"{_key(prop)}={prop.value or ''}" for prop in result.properties]
    return " ".join(words)


def _key(prop: authres.AuthenticationResultProperty) -> str:
    """'header.d', 'smtp.mailfrom': a result property's type and name, lower-cased."""
    return f"{prop.type}.{prop.name}".lower()


def _domain(value: object) -> str:
    """The domain of an address ('a@x' -> 'x', '@x' -> 'x') or of a bare domain."""
    return str(value).rpartition("@")[2].strip().strip("<>").lower()
