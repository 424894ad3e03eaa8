"""Every Prometheus metric the daemon exports, defined once in its own registry."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

# -- SMTP intake ---------------------------------------------------------------------------------

SMTP_ACCEPTED = Counter(
    "mailgateway_smtp_accepted",
    "Messages committed to the inbound queue and answered 250.",
    registry=REGISTRY,
)
SMTP_REJECTED = Counter(
    "mailgateway_smtp_rejected",
    "4xx and 5xx replies sent by SMTP intake, by reply code and enhanced status code.",
    ["code"],
    registry=REGISTRY,
)

# -- inbound processing --------------------------------------------------------------------------

QUEUE_DEPTH = Gauge(
    "mailgateway_queue_depth",
    "Rows in a queue by state, read from the database at scrape time.",
    ["queue", "state"],
    registry=REGISTRY,
)
INBOUND_STORED = Counter(
    "mailgateway_inbound_stored",
    "Inbound messages parsed and stored in a conversation.",
    registry=REGISTRY,
)
INBOUND_FAILED = Counter(
    "mailgateway_inbound_failed",
    "Failed processing attempts of inbound messages, by the state the row went to.",
    ["state"],
    registry=REGISTRY,
)
PROCESSING_SECONDS = Histogram(
    "mailgateway_inbound_processing_seconds",
    "Seconds from a worker claiming a queued message to the message stored.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
    registry=REGISTRY,
)

# -- outbound (replies): incremented by the outbound worker --------------------------------------

OUTBOUND_SENT = Counter(
    "mailgateway_outbound_sent",
    "Outbound messages the smarthost or team SMTP server accepted.",
    registry=REGISTRY,
)
OUTBOUND_DEFERRED = Counter(
    "mailgateway_outbound_deferred",
    "Outbound delivery attempts answered 4xx (or unreachable), to be retried.",
    registry=REGISTRY,
)
OUTBOUND_FAILED = Counter(
    "mailgateway_outbound_failed",
    "Outbound messages given up on (5xx, or retries exhausted).",
    registry=REGISTRY,
)
OUTBOUND_HELD = Counter(
    "mailgateway_outbound_held",
    "Outbound messages held for a human (signing, routing or envelope faults).",
    registry=REGISTRY,
)
OUTBOUND_OUTCOMES = {
    "sent": OUTBOUND_SENT,
    "deferred": OUTBOUND_DEFERRED,
    "failed": OUTBOUND_FAILED,
    "held": OUTBOUND_HELD,
}

# -- IMAP channels: set by the IMAP poller -------------------------------------------------------

IMAP_CHANNEL_UP = Gauge(
    "mailgateway_imap_channel_up",
    "1 while an IMAP channel is connected and fetching, 0 while it is failing.",
    ["inbox", "channel"],
    registry=REGISTRY,
)
IMAP_FETCHED = Counter(
    "mailgateway_imap_fetched",
    "Messages fetched from IMAP channels and committed to the inbound queue.",
    ["inbox", "channel"],
    registry=REGISTRY,
)
IMAP_ERRORS = Counter(
    "mailgateway_imap_errors",
    "IMAP connection or protocol errors, by channel.",
    ["inbox", "channel"],
    registry=REGISTRY,
)

# -- HTTP API ------------------------------------------------------------------------------------

HTTP_REQUESTS = Counter(
    "mailgateway_http_requests",
    "HTTP requests answered, by route and status.",
    ["route", "status"],
    registry=REGISTRY,
)


def reply_code(reply: str) -> str:
    """The label of an SMTP reply: its code and enhanced status ("550 5.1.1"), or the code."""
    parts = reply.split(" ", 2)
    if len(parts) >= 2 and parts[1][:1].isdigit() and parts[1].count(".") == 2:
        return f"{parts[0]} {parts[1]}"
    return parts[0][:3]


def count_reply(reply: str) -> None:
    """Count a 4xx or 5xx reply sent to an SMTP client."""
    if reply[:1] in {"4", "5"}:
        SMTP_REJECTED.labels(code=reply_code(reply)).inc()


def count_outbound(state: str) -> None:
    """Count what became of one outbound delivery attempt (sent, deferred, failed, held)."""
    counter = OUTBOUND_OUTCOMES.get(state)
    if counter is not None:
        counter.inc()


def set_queue_depths(queue: str, counts: Mapping[str, int], states: tuple[str, ...]) -> None:
    """Record a queue's depth per state (states without rows read 0)."""
    for state in states:
        QUEUE_DEPTH.labels(queue=queue, state=state).set(counts.get(state, 0))


def exposition() -> bytes:
    """The registry in Prometheus' text format."""
    return generate_latest(REGISTRY)
