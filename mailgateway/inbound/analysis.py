"""The stages that need only the raw bytes, composed (pure): parse, text, content hash, bounce."""

from __future__ import annotations

from dataclasses import dataclass

from mailgateway.domain import Parsed
from mailgateway.inbound.bounces import Bounce, parse_bounce
from mailgateway.inbound.duplicates import content_hash
from mailgateway.inbound.htmltext import html_to_text
from mailgateway.inbound.parse import parse


@dataclass(frozen=True, slots=True)
class Analysis:
    """What the raw bytes alone say: the parsed message, its text (derived from the HTML when
    it has no text part), its content hash and the bounce report it carries, if any."""

    parsed: Parsed
    text: str | None
    content_hash: str
    bounce: Bounce | None


def analyse(raw: bytes, mail_from: str, *, id_domain: str) -> Analysis:
    """Run the byte-level stages (CPU work: the worker calls this off the event loop)."""
    parsed = parse(raw, id_domain=id_domain)
    text = parsed.text
    if text is None and parsed.html:
        text = html_to_text(parsed.html)
    return Analysis(
        parsed=parsed,
        text=text,
        content_hash=content_hash(raw, parsed),
        bounce=parse_bounce(raw, parsed, mail_from, text),
    )
