"""The inbound worker: claims queued rows, runs the pure stages, persists, holds what fails."""

from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from mailgateway.assignment import NewConversation, route_new_conversation
from mailgateway.auth import DkimVerifier, determine_origin
from mailgateway.config import Config, WorkerConfig
from mailgateway.domain import Address, Attribution, Parsed, QueueState, ThreadReason
from mailgateway.inbound.channel import IncomingChannel, incoming_channel
from mailgateway.inbound.origin import Origin, header_origin
from mailgateway.inbound.parse import clean_text, parse
from mailgateway.inbound.threads import ThreadRef, thread_by_references
from mailgateway.logs import get_logger
from mailgateway.store import repo, routing
from mailgateway.store.repo import ClaimedItem, Store
from mailgateway.store.schema import utcnow

log = get_logger(__name__)

STALE_CLAIM = timedelta(minutes=10)
# Messages stored per transaction: short transactions let SMTP commits (which a client is
# waiting for) in between on SQLite's single writer.
TRANSACTION_SIZE = 4


@dataclass(frozen=True, slots=True)
class Outcome:
    """What processing one queue row produced."""

    queue_id: int
    conversation_id: int
    message_id: int
    thread_reason: ThreadReason
    assignee: str | None = None


def worker_name() -> str:
    """A name unique to this process, recorded on the rows it claims."""
    return f"{socket.gethostname()}:{os.getpid()}"


def origin_values(origin: Origin) -> dict[str, Any]:
    """The messages columns the origin step decides: from, forwarded_by, attribution, evidence."""
    sender = origin.sender or Address(email="")
    return {
        "from_email": sender.email,
        "from_name": sender.name,
        "forwarded_by": origin.forwarded_by,
        "attribution": origin.attribution,
        "evidence": origin.evidence.as_json(),
    }


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


async def store_message(
    connection: AsyncConnection,
    item: ClaimedItem,
    parsed: Parsed,
    config: Config | None = None,
    origin: Origin | None = None,
) -> Outcome:
    """Persist one parsed message: contact, conversation (joined or new), message, the contact's
    activity, and (with a configuration) a new conversation's assignment, ticket and
    notification; then mark the queue row done. The contact and the message's sender come from
    the origin step (default: the From header)."""
    existing = await repo.message_for_queue_row(connection, item.id)
    if existing is not None:  # an earlier attempt committed; only the bookkeeping was lost
        await repo.finish(connection, item.id)
        return Outcome(item.id, 0, existing, ThreadReason.NEW)
    origin = origin or header_origin(parsed, item.mail_from)
    sender = origin.contact
    contact_id = (
        None if sender is None else await repo.upsert_contact(connection, sender.email, sender.name)
    )
    known = await repo.conversation_by_message_ids(
        connection, item.inbox, [*parsed.in_reply_to, *parsed.references]
    )
    thread = thread_by_references(parsed, known)
    now = utcnow()
    if thread.conversation_id is None:
        conversation_id = await repo.create_conversation(
            connection, item.inbox, parsed.subject, contact_id, now
        )
    else:
        conversation_id = thread.conversation_id
        await repo.touch_conversation(connection, conversation_id, now)
    defects = list(parsed.defects)
    if await repo.same_message_id_other_content(
        connection, item.inbox, parsed.message_id, item.raw_id
    ):
        defects.append("message-id:reused-with-other-content")
    values = message_values(item, parsed, conversation_id, thread, defects)
    message_id = await repo.insert_message(connection, {**values, **origin_values(origin)})
    if contact_id is not None:
        await routing.log_activity(
            connection,
            contact_id=contact_id,
            message_id=message_id,
            conversation_id=conversation_id,
            inbox=item.inbox,
        )
    assignee = None
    if config is not None and thread.conversation_id is None:  # replies keep their assignee
        new = NewConversation(
            conversation_id,
            item.inbox,
            parsed.subject,
            contact_id,
            sender,
            auto_submitted=bool(values["auto_submitted"]),
        )
        assignment = await route_new_conversation(connection, config, new)
        assignee = None if assignment is None else assignment.assignee
    await repo.finish(connection, item.id)
    return Outcome(item.id, conversation_id, message_id, thread.reason, assignee)


class InboundWorker:
    """Claims batches from the inbound queue and processes them until stopped."""

    def __init__(
        self,
        store: Store,
        settings: WorkerConfig,
        *,
        id_domain: str,
        config: Config | None = None,
        dkim: DkimVerifier | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.id_domain = id_domain
        self.config = config  # users, inboxes and [trust] for the origin step; None: From header
        self.dkim = dkim or DkimVerifier()
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
        """Claim one batch and process it; returns how many rows were claimed."""
        batch = await self.store.claim(
            self.name, self.settings.batch_size, self.settings.max_attempts
        )
        admitted = [item for item in batch if await self.admit(item)]
        for start in range(0, len(admitted), TRANSACTION_SIZE):
            if self.stopping.is_set():
                break  # the rest is given back by release_claims
            chunk = admitted[start : start + TRANSACTION_SIZE]
            if not await self.process_together(chunk):
                for item in chunk:
                    await self.process(item)
        return len(batch)

    def parse_all(self, batch: list[ClaimedItem]) -> list[Parsed]:
        """Parse a batch (in a worker thread: parsing is CPU work)."""
        return [parse(item.data, id_domain=self.id_domain) for item in batch]

    def origins_of(self, batch: list[ClaimedItem], parsed: list[Parsed]) -> list[Origin]:
        """The origin of each message (in a worker thread: DKIM checks need DNS and CPU)."""
        return [
            determine_origin(
                item.data,
                one,
                config=self.config,
                inbox=item.inbox,
                envelope_sender=item.mail_from,
                verifier=self.dkim,
            )
            for item, one in zip(batch, parsed, strict=True)
        ]

    async def process_together(self, batch: list[ClaimedItem]) -> bool:
        """Store a whole batch in one transaction; False (nothing stored) if any row fails, so
        that the rows are then processed one by one and only the bad one is retried."""
        try:
            parsed = await asyncio.to_thread(self.parse_all, batch)
            origins = await asyncio.to_thread(self.origins_of, batch, parsed)
            async with self.store.transaction() as connection:
                outcomes = [
                    await store_message(connection, item, one, self.config, origin)
                    for item, one, origin in zip(batch, parsed, origins, strict=True)
                ]
        except Exception as error:
            log.warning("worker.batch_failed", size=len(batch), error=type(error).__name__)
            return False
        for item, outcome in zip(batch, outcomes, strict=True):
            self.log_stored(item, outcome)
        return True

    async def process(self, item: ClaimedItem) -> Outcome | None:
        """Process one row; a failure is recorded, retried later, and held after the last try."""
        try:
            [parsed] = await asyncio.to_thread(self.parse_all, [item])
            [origin] = await asyncio.to_thread(self.origins_of, [item], [parsed])
            async with self.store.transaction() as connection:
                outcome = await store_message(connection, item, parsed, self.config, origin)
        except Exception as error:
            await self.record_failure(item, error)
            return None
        self.log_stored(item, outcome)
        return outcome

    def log_stored(self, item: ClaimedItem, outcome: Outcome) -> None:
        """One event per stored message."""
        log.info(
            "message.stored",
            queue_id=item.id,
            inbox=item.inbox,
            conversation_id=outcome.conversation_id,
            thread_reason=outcome.thread_reason,
            assignee=outcome.assignee,
        )

    async def admit(self, item: ClaimedItem) -> bool:
        """Whether to process the row now: mail of a disabled channel is held instead."""
        channel = self.channel_of(item)
        if channel is not None and not channel.enabled:
            await self.hold_disabled(item, channel)
            return False
        return True

    def channel_of(self, item: ClaimedItem) -> IncomingChannel | None:
        """The channel the row came in on (None without a configuration or a known inbox)."""
        inbox = None if self.config is None else self.config.inboxes.get(item.inbox)
        return None if inbox is None else incoming_channel(inbox, item.source, item.rcpt_to)

    async def hold_disabled(self, item: ClaimedItem, channel: IncomingChannel) -> None:
        """Mail of a disabled channel is neither shown nor logged: the row is held, raw bytes
        kept, until the channel is enabled again and `queue retry` brings it in."""
        reason = f"channel disabled: {channel.kind} {channel.address}"
        log.warning("message.channel_disabled", queue_id=item.id, inbox=item.inbox)
        await self.store.fail(item.id, reason, hold=True, retry_at=utcnow())

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
