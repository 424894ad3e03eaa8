"""The origin step's I/O: DKIM verification with dkimpy (DNS lookups, injectable) in a thread."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import dkim

from mailgateway.config import Config
from mailgateway.domain import Parsed
from mailgateway.inbound.authresults import DkimResult, authenticate
from mailgateway.inbound.origin import (
    Origin,
    find_forward,
    header_origin,
    needs_authentication,
    origin_facts,
    resolve_origin,
)
from mailgateway.logs import get_logger

log = get_logger(__name__)

#: dkimpy's TXT lookup: (name such as b"sel._domainkey.example.com.", timeout=...) -> record
DnsLookup = Callable[..., bytes | None]

MAX_SIGNATURES = 3  # DKIM-Signature headers verified per message (each costs a DNS lookup)
DNS_TIMEOUT = 5  # seconds per lookup
MIN_KEY_BITS = 1024

_QUIET = logging.getLogger("mailgateway.dkimpy")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


@dataclass(frozen=True)
class DkimVerifier:
    """Verifies a message's DKIM signatures; `dns` replaces dkimpy's resolver (tests inject one)."""

    dns: DnsLookup | None = None
    timeout: int = DNS_TIMEOUT
    max_signatures: int = MAX_SIGNATURES

    def verify(self, raw: bytes) -> tuple[DkimResult, ...]:
        """One result per DKIM-Signature header (at most max_signatures); never raises."""
        try:
            checker = dkim.DKIM(raw, logger=_QUIET, minkey=MIN_KEY_BITS, timeout=self.timeout)
            count = sum(1 for name, _ in checker.headers if name.lower() == b"dkim-signature")
        except Exception as error:  # dkimpy rejects some malformed messages outright
            return (DkimResult("", "", False, type(error).__name__),)
        return tuple(self._one(checker, index) for index in range(min(count, self.max_signatures)))

    def _one(self, checker: dkim.DKIM, index: int) -> DkimResult:
        """The result of one signature: its d= and s= and whether it verified."""
        checker.domain = checker.selector = None
        error = ""
        try:
            passed = bool(checker.verify(idx=index, dnsfunc=self._lookup))
        except Exception as error_:  # malformed signature or key, DNS failure
            passed, error = False, type(error_).__name__
        if passed and b"l" in (checker.signature_fields or {}):
            passed, error = False, "body-length-tag"  # text may be appended after what is signed
        return DkimResult(_text(checker.domain), _text(checker.selector), passed, error)

    def _lookup(self, name: bytes, timeout: int = DNS_TIMEOUT) -> bytes | None:
        """The TXT record of a key name, from the injected function or dkimpy's resolver."""
        if self.dns is not None:
            return self.dns(name, timeout=timeout)
        answer: bytes | None = dkim.dnsplug.get_txt(name, timeout=timeout)
        return answer


def _text(value: object) -> str:
    """A dkimpy tag value (bytes or None) as text."""
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return "" if value is None else str(value)


def determine_origin(
    raw: bytes,
    parsed: Parsed,
    *,
    config: Config | None,
    inbox: str,
    envelope_sender: str,
    verifier: DkimVerifier | None,
) -> Origin:
    """Compose the origin stages for one message: find the forward, authenticate the forwarder
    (our DKIM check only for a user's forward, and only when [trust] verify_dkim), resolve."""
    if config is None:
        return header_origin(parsed, envelope_sender)
    facts = origin_facts(config)
    forward = find_forward(parsed, raw)
    trust = config.gateway.trust
    results: tuple[DkimResult, ...] = ()
    if needs_authentication(parsed, forward, facts) and trust.verify_dkim and verifier is not None:
        results = verifier.verify(raw)
    from_domain = parsed.from_.email.rpartition("@")[2] if parsed.from_ is not None else ""
    auth = authenticate(parsed.headers, from_domain, results, trust.authserv_ids)
    inbox_config = config.inboxes.get(inbox)
    toggle = inbox_config is None or inbox_config.fallback_email.original_sender_of_forwards
    origin = resolve_origin(
        parsed,
        forward,
        facts,
        auth,
        original_sender_of_forwards=toggle,
        envelope_sender=envelope_sender,
    )
    log.info(
        "message.origin",
        inbox=inbox,
        rule=origin.evidence.rule,
        attribution=origin.attribution,
        dkim_signatures=len(results),
    )
    return origin
