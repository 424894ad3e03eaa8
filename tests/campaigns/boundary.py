"""The fuzzing boundary: raw bytes → analysis → origin → threading inputs → the stored row, with
the properties every input must keep (no exception, ≤ 1 s, ≤ 64 MiB, header values clean)."""

from __future__ import annotations

import atexit
import functools
import gc
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from mailgateway.auth import DkimVerifier, determine_origin
from mailgateway.config import Config, WorkerConfig
from mailgateway.domain import ConversationFacts, ConversationStatus
from mailgateway.inbound.analysis import Analysis, analyse
from mailgateway.inbound.loops import classify
from mailgateway.inbound.subjects import subject_key
from mailgateway.inbound.threads import Lookups, Sender, header_tokens, reply_token, thread
from mailgateway.inbound.worker import InboundWorker, message_values, origin_values
from mailgateway.store.repo import (
    ClaimedItem,
    Delivery,
    Envelope,
    Store,
    inbound_queue,
    messages,
    raw_messages,
)
from tests.support import SUPPORT, loaded, toml_section, write_config

ID_DOMAIN = "mx.test"
TIME_LIMIT = 1.0
MEMORY_LIMIT = 64 * 1024 * 1024
UNSAFE = frozenset("\r\n\x00")
BODY_FIELDS = frozenset({"text", "html"})
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


class BoundaryFailure(AssertionError):
    """An input broke a property of the boundary."""


@functools.cache
def boundary_config() -> Config:
    """The test configuration (users alice and bob, inboxes support, sales, archive) trusting
    Authentication-Results of mx.acme.example, so that forwards reach the trust policy."""
    folder = Path(tempfile.mkdtemp(prefix="mg-fuzz-")) / "config"
    atexit.register(shutil.rmtree, folder.parent, True)
    write_config(folder, f"sqlite:///{folder.parent / 'unused.db'}")
    with (folder / "mailgateway.toml").open("a") as handle:
        handle.write(toml_section("trust", {"authserv_ids": ["mx.acme.example"]}))
    return loaded(folder)


def no_dns(_name: bytes, timeout: int = 5) -> bytes | None:
    """DKIM key lookups find nothing (the fuzzer never touches the network)."""
    return None


VERIFIER = DkimVerifier(dns=no_dns)


def facts(conversation_id: int, participants: frozenset[str]) -> ConversationFacts:
    """A stored open conversation as the threading rules see it."""
    return ConversationFacts(
        conversation_id,
        ConversationStatus.OPEN,
        1,
        "c1@customer.test",
        NOW,
        participants,
    )


def threading_inputs(analysis: Analysis, author: Sender, rcpt: str) -> tuple[Lookups, bool]:
    """Lookups in which every referenced id is stored (every other one in a conversation the
    sender took part in), the reply tokens and subject match, and a bounce's original is
    stored: so every rule of `thread` runs on the fuzzed values. Also whether a token was
    found."""
    parsed, bounce = analysis.parsed, analysis.bounce
    ids = [*parsed.in_reply_to, *parsed.references]
    sender = frozenset({author.email}) if author.email else frozenset()
    references = {
        message_id: facts(10 + n, sender if n % 2 else frozenset())
        for n, message_id in enumerate(ids[:100])
    }
    tokens = [reply_token(rcpt), *header_tokens(parsed, SUPPORT)]
    bounced = None
    if bounce is not None and bounce.original_message_id is not None:
        bounced = facts(3, bounce.addresses)
    lookups = Lookups(
        now=NOW,
        references=references,
        token=facts(4, sender) if any(tokens) else None,
        subject=facts(5, sender) if subject_key(parsed.subject) is not None else None,
        bounced=bounced,
        agents=frozenset({"alice@acme.example", "bob@acme.example"}),
        own_addresses=frozenset({SUPPORT}),
    )
    return lookups, any(tokens)


def row_values(
    raw: bytes, mail_from: str = "mta@customer.test", rcpt: str = SUPPORT
) -> dict[str, Any]:
    """The messages row the worker would store for these bytes, composed from the stages as
    `worker.store_message` composes it."""
    analysis = analyse(raw, mail_from, id_domain=ID_DOMAIN)
    parsed = analysis.parsed
    origin = determine_origin(
        raw,
        parsed,
        config=boundary_config(),
        inbox="support",
        envelope_sender=mail_from,
        verifier=VERIFIER,
    )
    contact = origin.contact
    author = Sender(
        None if contact is None else contact.email,
        None if contact is None else 1,
        frozenset(address.email for address in (*parsed.to, *parsed.cc)),
    )
    lookups, _ = threading_inputs(analysis, author, rcpt)
    bounce = analysis.bounce
    ref = thread(parsed, author, lookups, frozenset() if bounce is None else bounce.addresses)
    verdict = classify(
        parsed,
        mail_from,
        own_addresses=lookups.own_addresses,
        bounce_format=None if bounce is None else bounce.format,
    )
    item = ClaimedItem(1, 1, "support", rcpt, mail_from, 1, raw)
    values = message_values(item, parsed, ref.conversation_id or 1, ref, list(parsed.defects))
    return (
        values
        | {
            "text": analysis.text,
            "auto_submitted": verdict.auto_submitted,
            "auto_reasons": list(verdict.reasons),
            "content_hash": analysis.content_hash,
            "thread_detail": ref.detail or None,
            "bounce": None if bounce is None else bounce.as_record(),
        }
        | origin_values(origin)
    )


def strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every string inside a row value (lists and dicts walked), with where it is."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings(item, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from strings(item, f"{path}[{index}]")


def check_row(values: dict[str, Any]) -> None:
    """No header value (every field but the bodies) holds CR, LF or NUL; the bodies hold no NUL;
    everything is valid Unicode (no lone surrogates, which neither database stores)."""
    for name, value in values.items():
        for where, text in strings(value, name):
            bad = {"\x00"} if name in BODY_FIELDS else UNSAFE
            if bad & set(text):
                raise BoundaryFailure(f"{where} holds {sorted(bad & set(text))!r}: {text[:80]!r}")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as error:
                raise BoundaryFailure(f"{where} is not valid Unicode: {error}") from error


def resident() -> tuple[int, int]:
    """This process's resident and peak resident memory in bytes (Linux /proc)."""
    found = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) * 1024
    return found["VmRSS"], found["VmHWM"]


def reset_peak() -> None:
    """Start a new peak-memory measurement (Linux ≥ 4.0: clear_refs 5 resets VmHWM)."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def timed(raw: bytes) -> tuple[dict[str, Any], float]:
    """The row of an input and the CPU seconds it took, the garbage collector held off meanwhile:
    a collection of a long fuzzing process's heap (hundreds of MB of corpus) is not the input's
    cost, and once took a 4 ms input over the limit."""
    gc.disable()
    try:
        started = time.process_time()
        values = row_values(raw)
        return values, time.process_time() - started
    finally:
        gc.enable()


def check(raw: bytes) -> dict[str, Any]:
    """Run the boundary on one input with the limits: any exception, more than 1 s of CPU time
    (not wall time: on a shared machine that measures the neighbours), or more than 64 MiB of
    memory above what the process held before, is a failure."""
    reset_peak()
    before, _ = resident()
    values, elapsed = timed(raw)
    _, peak = resident()
    if elapsed > TIME_LIMIT:  # once more after a collection: was it the input or the process?
        gc.collect()
        values, elapsed = timed(raw)
    if elapsed > TIME_LIMIT:
        raise BoundaryFailure(f"{elapsed:.2f} s for {len(raw)} bytes")
    if peak - before > MEMORY_LIMIT:
        raise BoundaryFailure(f"{(peak - before) >> 20} MiB for {len(raw)} bytes")
    check_row(values)
    return values


# -- through a real store ----------------------------------------------------------------------

SETTINGS = WorkerConfig(batch_size=5, max_attempts=1, poll_interval=0.1, retry_delay=0.0)
ENVELOPE = Envelope(mail_from="mta@customer.test", peer="127.0.0.1:1", helo="fuzz.test")


def store_worker(store: Store) -> InboundWorker:
    """The gateway's worker on the store, with the boundary's configuration and no DNS."""
    return InboundWorker(
        store, SETTINGS, id_domain=ID_DOMAIN, config=boundary_config(), dkim=VERIFIER
    )


async def check_stored(store: Store, worker: InboundWorker, raw: bytes) -> None:
    """Through the real store: the stored bytes equal the input, enqueueing the same bytes
    again changes nothing (same ids, one copy), the worker stores a clean row (or recognises a
    stored copy) and is never made to fail, and processing again adds nothing."""
    delivery = [Delivery("support", SUPPORT)]
    ids = await store.enqueue(raw, ENVELOPE, delivery)
    if await store.enqueue(raw, ENVELOPE, delivery) != ids:
        raise BoundaryFailure("replayed transaction got other queue ids")
    [queue_id] = ids
    await worker.run_once()
    async with store.engine.connect() as connection:
        row = (
            await connection.execute(
                select(inbound_queue.c.state, inbound_queue.c.reason, raw_messages.c.data)
                .join(raw_messages, raw_messages.c.id == inbound_queue.c.raw_id)
                .where(inbound_queue.c.id == queue_id)
            )
        ).one()
        if bytes(row.data) != raw:
            raise BoundaryFailure("stored raw bytes differ from the bytes received")
        if row.state != "done":
            raise BoundaryFailure(f"queue row {row.state}: {row.reason}")
        stored = (
            await connection.execute(select(messages).where(messages.c.queue_id == queue_id))
        ).all()
        for message in stored:
            check_row({key: value for key, value in message._mapping.items() if key != "date"})
    await store.enqueue(raw, ENVELOPE, delivery)
    if await worker.run_once():
        raise BoundaryFailure("a replayed transaction was processed again")
    async with store.engine.connect() as connection:
        count = await connection.scalar(
            select(func.count()).select_from(messages).where(messages.c.queue_id == queue_id)
        )
    if count != len(stored) or count > 1:
        raise BoundaryFailure(f"{count} messages for one queue row")
