"""The inbound worker: claims queued rows, runs the pure stages, persists, holds what fails."""

from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from mailgateway.config import WorkerConfig
from mailgateway.domain import Address, Attribution, Parsed, QueueState, ThreadReason
from mailgateway.inbound.parse import clean_text, parse
from mailgateway.inbound.threads import ThreadRef, thread_by_references
from mailgateway.logs import get_logger
from mailgateway.store import repo
from mailgateway.store.repo import ClaimedItem, Store
from mailgateway.store.schema import utcnow

log = get_logger(__name__)

STALE_CLAIM = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What processing one queue row produced."""

    queue_id: int
    conversation_id: int
    message_id: int
    thread_reason: ThreadReason


def worker_name() -> str:
    """A name unique to this process, recorded on the rows it claims."""
    return f"{socket.gethostname()}:{os.getpid()}"


def contact_address(parsed: Parsed, mail_from: str) -> Address | None:
    """Whom the message is from: the From header, else the envelope sender, else nobody."""
    if parsed.from_ is not None and parsed.from_.email:
        return parsed.from_
    sender = clean_text(mail_from, limit=320).lower()
    return Address(email=sender) if "@" in sender else None


def message_values(
    item: ClaimedItem,
    parsed: Parsed,
    conversation_id: int,
    thread: ThreadRef,
    defects: list[str],
) -> dict[str, Any]:
    """The messages row for a parsed inbound message."""
    sender = parsed.from_ or Address(email="")
    return {
        "conversation_id": conversation_id,
        "inbox": item.inbox,
        "queue_id": item.id,
        "raw_id": item.raw_id,
        "direction": "inbound",
        "message_id": parsed.message_id,
        "message_id_generated": parsed.message_id_generated,
        "in_reply_to": list(parsed.in_reply_to),
        "references": list(parsed.references),
        "subject": parsed.subject,
        "from_email": sender.email,
        "from_name": sender.name,
        "to": [{"email": a.email, "name": a.name} for a in parsed.to],
        "cc": [{"email": a.email, "name": a.name} for a in parsed.cc],
        "date": parsed.date,
        "text": parsed.text,
        "html": parsed.html,
        "attachments": [
            {"filename": a.filename, "content_type": a.content_type, "size": a.size}
            for a in parsed.attachments
        ],
        "forwarded_by": None,
        "attribution": Attribution.SENDER,
        "thread_reason": thread.reason,
        "auto_submitted": False,
        "defects": defects,
        "created_at": utcnow(),
    }


async def store_message(connection: AsyncConnection, item: ClaimedItem, parsed: Parsed) -> Outcome:
    """Persist one parsed message: contact, conversation (joined or new), message, queue done."""
    existing = await repo.message_for_queue_row(connection, item.id)
    if existing is not None:  # an earlier attempt committed; only the bookkeeping was lost
        await repo.finish(connection, item.id)
        return Outcome(item.id, 0, existing, ThreadReason.NEW)
    sender = contact_address(parsed, item.mail_from)
    contact_id = (
        None if sender is None else await repo.upsert_contact(connection, sender.email, sender.name)
    )
    known = await repo.conversation_by_message_ids(
        connection, item.inbox, [*parsed.in_reply_to, *parsed.references]
    )
    thread = thread_by_references(parsed, known)
    now = utcnow()
    if thread.conversation_id is None:
        channel = item.channel or "fallback_email"
        conversation_id = await repo.create_conversation(
            connection, item.inbox, parsed.subject, contact_id, now, channel
        )
    else:
        conversation_id = thread.conversation_id
        await repo.touch_conversation(connection, conversation_id, now)
    defects = list(parsed.defects)
    if await repo.same_message_id_other_content(
        connection, item.inbox, parsed.message_id, item.raw_id
    ):
        defects.append("message-id:reused-with-other-content")
    message_id = await repo.insert_message(
        connection, message_values(item, parsed, conversation_id, thread, defects)
    )
    await repo.finish(connection, item.id)
    return Outcome(item.id, conversation_id, message_id, thread.reason)


class InboundWorker:
    """Claims batches from the inbound queue and processes them until stopped."""

    def __init__(self, store: Store, settings: WorkerConfig, *, id_domain: str) -> None:
        self.store = store
        self.settings = settings
        self.id_domain = id_domain
        self.name = worker_name()
        self.wakeup = asyncio.Event()
        self.stopping = asyncio.Event()

    def wake(self) -> None:
        """New mail is queued: look now rather than at the next poll."""
        self.wakeup.set()

    def stop(self) -> None:
        """Finish the row in hand, give back the rest of the batch, and return."""
        self.stopping.set()
        self.wakeup.set()

    async def run(self) -> None:
        """Process until stopped, sleeping between empty polls."""
        await self.store.requeue_stale(STALE_CLAIM)
        while not self.stopping.is_set():
            try:
                done = await self.run_once()
            except Exception as error:  # the database may be down: keep polling, never crash
                log.error("worker.poll_failed", error=type(error).__name__)
                done = 0
            if done == 0 and not self.stopping.is_set():
                await self._sleep()
        await self.store.release_claims(self.name)

    async def _sleep(self) -> None:
        """Wait for new mail or the next poll."""
        self.wakeup.clear()
        try:
            async with asyncio.timeout(self.settings.poll_interval):
                await self.wakeup.wait()
        except TimeoutError:
            pass

    async def run_once(self) -> int:
        """Claim one batch and process it; returns how many rows were handled."""
        batch = await self.store.claim(
            self.name, self.settings.batch_size, self.settings.max_attempts
        )
        handled = 0
        for item in batch:
            if self.stopping.is_set():
                break
            await self.process(item)
            handled += 1
        return handled

    async def process(self, item: ClaimedItem) -> Outcome | None:
        """Process one row; a failure is recorded, retried later, and held after the last try."""
        try:
            parsed = await asyncio.to_thread(parse, item.data, id_domain=self.id_domain)
            async with self.store.engine.begin() as connection:
                outcome = await store_message(connection, item, parsed)
        except Exception as error:
            await self.record_failure(item, error)
            return None
        log.info(
            "message.stored",
            queue_id=item.id,
            inbox=item.inbox,
            conversation_id=outcome.conversation_id,
            thread_reason=outcome.thread_reason,
        )
        return outcome

    async def record_failure(self, item: ClaimedItem, error: Exception) -> None:
        """Back to the queue with a delay, or held with the reason after the last attempt."""
        hold = item.attempts >= self.settings.max_attempts
        reason = clean_text(f"{type(error).__name__}: {error}", limit=500)
        retry_at = utcnow() + timedelta(seconds=self.settings.retry_delay * item.attempts)
        log.warning(
            "message.failed",
            queue_id=item.id,
            inbox=item.inbox,
            attempt=item.attempts,
            state=QueueState.HELD if hold else QueueState.QUEUED,
            error=type(error).__name__,
        )
        await self.store.fail(item.id, reason, hold=hold, retry_at=retry_at)
