"""The inbound worker: claims queued rows, runs the pure stages, persists, holds what fails."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from types import MappingProxyType
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from mailgateway import metrics
from mailgateway.assignment import NewConversation, route_new_conversation
from mailgateway.auth import DkimVerifier, determine_origin
from mailgateway.config import Config, WorkerConfig
from mailgateway.domain import (
    Address,
    Attribution,
    ConversationFacts,
    ConversationStatus,
    Direction,
    Parsed,
    QueueState,
    ThreadReason,
)
from mailgateway.inbound.analysis import Analysis, analyse
from mailgateway.inbound.bounces import Bounce
from mailgateway.inbound.channel import IncomingChannel, incoming_channel
from mailgateway.inbound.loops import AutoVerdict, classify
from mailgateway.inbound.origin import Origin, header_origin
from mailgateway.inbound.parse import clean_text
from mailgateway.inbound.subjects import subject_key
from mailgateway.inbound.threads import (
    Lookups,
    Sender,
    ThreadRef,
    header_tokens,
    reopens,
    reply_token,
    thread,
)
from mailgateway.logs import get_logger
from mailgateway.polling import PollingLoop
from mailgateway.store import recovery, repo, routing
from mailgateway.store import threads as threads_store
from mailgateway.store.claims import claimer_alive
from mailgateway.store.faults import database_unavailable
from mailgateway.store.repo import ClaimedItem, Store
from mailgateway.store.schema import utcnow
from mailgateway.store.threads import StoredCopy

log = get_logger(__name__)

T = TypeVar("T")

# Messages stored per transaction: first attempts up to TRANSACTION_SIZE together (one statement
# per step for all of them, one commit); rows tried before (in hand when a worker died, say) up
# to RETRY_TRANSACTION_SIZE, so that a message that crashes the process soon holds few others.
TRANSACTION_SIZE = 20
RETRY_TRANSACTION_SIZE = 4


def chunk_length(attempts: Sequence[int]) -> int:
    """How many of a worker's claimed rows (their attempt counts, in id order) it stores in
    its next transaction: first attempts together, up to TRANSACTION_SIZE; from a row tried
    before, up to RETRY_TRANSACTION_SIZE rows. Recovery uses it to tell which rows of a dead
    worker were in its hands."""
    if attempts and attempts[0] > 1:
        return min(len(attempts), RETRY_TRANSACTION_SIZE)
    length = 0
    for count in attempts[:TRANSACTION_SIZE]:
        if count > 1:
            break
        length += 1
    return length


@dataclass(frozen=True, slots=True)
class Outcome:
    """What processing one queue row produced. Assignment and notifications skip outcomes
    that are `auto_submitted` (auto-replies, bounces, bulk and looping mail) or `duplicate`
    (the message was stored before: nothing new was stored)."""

    queue_id: int
    conversation_id: int
    message_id: int
    thread_reason: ThreadReason
    assignee: str | None = None
    auto_submitted: bool = False
    duplicate: bool = False
    reopened: bool = False


@dataclass(frozen=True, slots=True)
class Directory:
    """What the worker needs from the configuration: the agents' addresses, each inbox's
    forwarding address and the team mailboxes' addresses."""

    agents: frozenset[str] = frozenset()
    inbox_addresses: Mapping[str, str] = field(default_factory=dict)
    channel_addresses: frozenset[str] = frozenset()

    @classmethod
    def from_config(cls, config: Config) -> Directory:
        """Agents are the users of users.toml; addresses come from the inboxes' files."""
        return cls(
            agents=frozenset(user.email.lower() for user in config.users.values()),
            inbox_addresses=MappingProxyType(
                {
                    slug: inbox.fallback_email.forwarding_address.lower()
                    for slug, inbox in config.inboxes.items()
                }
            ),
            channel_addresses=frozenset(
                channel.address.lower()
                for inbox in config.inboxes.values()
                for channel in inbox.channels
            ),
        )

    @property
    def own_addresses(self) -> frozenset[str]:
        """Every address of ours: forwarding addresses and team mailboxes."""
        return frozenset(self.inbox_addresses.values()) | self.channel_addresses


class ConcurrentDuplicate(Exception):
    """Another worker stored the same message (same inbox and content hash) first."""


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


async def gather_lookups(
    connection: AsyncConnection,
    item: ClaimedItem,
    analysis: Analysis,
    contact_id: int | None,
    directory: Directory,
) -> Lookups:
    """Everything the threading rules consult, looked up within the message's inbox."""
    parsed, bounce = analysis.parsed, analysis.bounce
    ids = [*parsed.in_reply_to, *parsed.references]
    tokens = [reply_token(item.rcpt_to)]
    inbox_address = directory.inbox_addresses.get(item.inbox)
    if inbox_address:
        tokens.extend(header_tokens(parsed, inbox_address))
    key = subject_key(parsed.subject)
    return Lookups(
        now=utcnow(),
        references=await threads_store.conversations_by_message_ids(connection, item.inbox, ids),
        token=await _first_token(connection, item.inbox, tokens),
        subject=None
        if key is None or contact_id is None
        else await threads_store.conversation_by_subject(connection, item.inbox, contact_id, key),
        bounced=None
        if bounce is None or bounce.original_message_id is None
        else await threads_store.conversation_of_message(
            connection, item.inbox, bounce.original_message_id
        ),
        agents=directory.agents,
        own_addresses=directory.own_addresses,
    )


async def _first_token(
    connection: AsyncConnection, inbox: str, tokens: list[str | None]
) -> ConversationFacts | None:
    """The conversation of the first reply token that names one in the inbox."""
    for token in dict.fromkeys(t for t in tokens if t):
        found = await threads_store.conversation_by_token(connection, inbox, token)
        if found is not None:
            return found
    return None


async def store_message(
    connection: AsyncConnection,
    item: ClaimedItem,
    analysis: Analysis,
    directory: Directory | None = None,
    config: Config | None = None,
    origin: Origin | None = None,
) -> Outcome:
    """Persist one analysed message: contact (from the origin step; default the From header),
    conversation (joined, reopened or new), message, the contact's activity, bounce bookkeeping,
    and (with a configuration) a new conversation's assignment, ticket and notification; then
    mark the queue row done. A message stored before is not stored again."""
    directory = directory or Directory()
    existing = await repo.message_for_queue_row(connection, item.id)
    if existing is not None:  # an earlier attempt committed; only the bookkeeping was lost
        await repo.finish(connection, item.id)
        return Outcome(item.id, 0, existing, ThreadReason.NEW)
    parsed = analysis.parsed
    copies = await threads_store.stored_copies(
        connection, item.inbox, parsed.message_id, analysis.content_hash
    )
    stored = next((c for c in copies if c.content_hash == analysis.content_hash), None)
    if stored is not None:  # the same message arrived again (another path, another copy)
        await repo.finish(connection, item.id)
        reason = ThreadReason(stored.thread_reason)
        return Outcome(item.id, stored.conversation_id, stored.id, reason, duplicate=True)
    same_id = [c for c in copies if c.message_id == parsed.message_id]
    origin = origin or header_origin(parsed, item.mail_from)
    sender = origin.contact
    contact_id = (
        None if sender is None else await repo.upsert_contact(connection, sender.email, sender.name)
    )
    author = Sender(
        None if sender is None else sender.email,
        contact_id,
        frozenset(address.email for address in (*parsed.to, *parsed.cc)),
    )
    own_message = any(c.direction == Direction.OUTBOUND for c in same_id)
    ref, verdict = await _decide(connection, item, analysis, author, directory, own_message)
    conversation_id, reopened = await _place(connection, item, parsed, ref, verdict, contact_id)
    values = stored_values(
        item, analysis, conversation_id, ref, verdict, origin, reused_id=bool(same_id)
    )
    message_id = await threads_store.insert_message_once(connection, values)
    if message_id is None:
        raise ConcurrentDuplicate(item.inbox)
    if contact_id is not None:
        await routing.log_activity(
            connection,
            contact_id=contact_id,
            message_id=message_id,
            conversation_id=conversation_id,
            inbox=item.inbox,
        )
    assignee = await _settle(
        connection, config, item, analysis, conversation_id, ref, verdict, contact_id, sender
    )
    await repo.finish(connection, item.id)
    return Outcome(
        item.id,
        conversation_id,
        message_id,
        ref.reason,
        assignee=assignee,
        auto_submitted=verdict.auto_submitted,
        reopened=reopened,
    )


async def _settle(
    connection: AsyncConnection,
    config: Config | None,
    item: ClaimedItem,
    analysis: Analysis,
    conversation_id: int,
    ref: ThreadRef,
    verdict: AutoVerdict,
    contact_id: int | None,
    sender: Address | None,
) -> str | None:
    """After a message is stored: a new conversation is assigned by the inbox's rules (replies
    keep their assignee), a bounce is recorded against our message; the assignee, if any."""
    assignee = None
    if config is not None and ref.conversation_id is None:
        new = NewConversation(
            conversation_id,
            item.inbox,
            analysis.parsed.subject,
            contact_id,
            sender,
            auto_submitted=verdict.auto_submitted,
            archive=item.archive,
        )
        assignment = await route_new_conversation(connection, config, new)
        assignee = None if assignment is None else assignment.assignee
    if analysis.bounce is not None and ref.bounce:
        await _record_bounce(connection, item.inbox, analysis.bounce)
    return assignee


async def _decide(
    connection: AsyncConnection,
    item: ClaimedItem,
    analysis: Analysis,
    author: Sender,
    directory: Directory,
    own_message: bool,
) -> tuple[ThreadRef, AutoVerdict]:
    """Run the threading and auto-reply stages on what the store knows."""
    lookups = await gather_lookups(connection, item, analysis, author.contact_id, directory)
    return _conclude(item, analysis, author, lookups, directory, own_message)


def _conclude(
    item: ClaimedItem,
    analysis: Analysis,
    author: Sender,
    lookups: Lookups,
    directory: Directory,
    own_message: bool,
) -> tuple[ThreadRef, AutoVerdict]:
    """The threading and auto-reply stages, on the lookups gathered for the message."""
    parsed, bounce = analysis.parsed, analysis.bounce
    verdict = classify(
        parsed,
        item.mail_from,
        own_addresses=directory.own_addresses,
        own_message=own_message,
        bounce_format=None if bounce is None else bounce.format,
    )
    bounced_to = frozenset() if bounce is None else bounce.addresses
    return thread(parsed, author, lookups, bounced_to), verdict


async def _place(
    connection: AsyncConnection,
    item: ClaimedItem,
    parsed: Parsed,
    ref: ThreadRef,
    verdict: AutoVerdict,
    contact_id: int | None,
) -> tuple[int, bool]:
    """The conversation the message goes to (created when new) and whether it was reopened.
    Closed conversations stay closed, and untouched, for auto-replies and bounces."""
    now = utcnow()
    if ref.conversation_id is None:
        conversation_id = await repo.create_conversation(
            connection,
            item.inbox,
            parsed.subject,
            contact_id,
            now,
            subject_key=subject_key(parsed.subject),
            channel=item.channel or "fallback_email",
        )
        return conversation_id, False
    reopen = reopens(ref.status, verdict.auto_submitted)
    if reopen or ref.status is ConversationStatus.OPEN:
        await threads_store.join_conversation(connection, ref.conversation_id, now, reopen=reopen)
    return ref.conversation_id, reopen


@dataclass(slots=True)
class _Planned:
    """A message of a batch on its way to the store: what it will be stored with."""

    index: int  # its place in the batch
    item: ClaimedItem
    analysis: Analysis
    origin: Origin
    contact_id: int | None
    reused_id: bool  # its Message-ID is stored (or comes earlier in the batch) with other content
    ref: ThreadRef | None = None
    verdict: AutoVerdict | None = None


async def store_messages(
    connection: AsyncConnection,
    items: Sequence[ClaimedItem],
    analyses: Sequence[Analysis],
    origins: Sequence[Origin],
    directory: Directory | None = None,
    config: Config | None = None,
) -> list[Outcome]:
    """`store_message` for each message of a batch in turn, with one statement per step for
    as many messages at a time as do not depend on each other: the same rows and outcomes as
    storing them one by one, in far fewer round trips. A message that depends on an earlier
    one of the batch (a reply to it, a second message of its contact with a subject, another
    message joining a conversation it joined) is decided after that one is written."""
    directory = directory or Directory()
    outcomes: list[Outcome | None] = [None] * len(items)
    stored = await repo.messages_for_queue_rows(connection, [item.id for item in items])
    for index, item in enumerate(items):
        if item.id in stored:  # an earlier attempt committed; only the bookkeeping was lost
            outcomes[index] = Outcome(item.id, 0, stored[item.id], ThreadReason.NEW)
    fresh = [index for index, outcome in enumerate(outcomes) if outcome is None]
    copies, stored_ids = await _stored_copies_of(connection, items, analyses, fresh)
    first_of: dict[tuple[str, str], int] = {}  # (inbox, content hash) -> the batch's first copy
    planned: list[_Planned] = []
    seen_ids: set[tuple[str, str]] = set()
    for index in fresh:
        item, analysis = items[index], analyses[index]
        key = (item.inbox, analysis.content_hash)
        copy = copies.get(key)
        if copy is not None:  # the same message arrived again (another path, another copy)
            reason = ThreadReason(copy.thread_reason)
            outcomes[index] = Outcome(
                item.id, copy.conversation_id, copy.id, reason, duplicate=True
            )
            continue
        if key in first_of:  # a copy of an earlier message of this batch: answered below
            continue
        first_of[key] = index
        id_key = (item.inbox, analysis.parsed.message_id)
        reused = id_key in stored_ids or id_key in seen_ids
        seen_ids.add(id_key)
        planned.append(_Planned(index, item, analysis, origins[index], None, reused))
    senders = [one.origin.contact for one in planned]
    contact_ids = await repo.upsert_contacts(
        connection, [(sender.email, sender.name) for sender in senders if sender is not None]
    )
    for one, sender in zip(planned, senders, strict=True):
        one.contact_id = None if sender is None else contact_ids[sender.email]
    start = 0
    while start < len(planned):
        run = await _decide_run(connection, planned[start:], stored_ids, directory)
        for one, outcome in zip(run, await _write_run(connection, run, config), strict=True):
            outcomes[one.index] = outcome
        start += len(run)
    for index in fresh:  # copies of an earlier message of the batch
        if outcomes[index] is None:
            item = items[index]
            first = outcomes[first_of[(item.inbox, analyses[index].content_hash)]]
            assert first is not None
            outcomes[index] = Outcome(
                item.id,
                first.conversation_id,
                first.message_id,
                first.thread_reason,
                duplicate=True,
            )
    await repo.finish_many(connection, [item.id for item in items])
    done = [outcome for outcome in outcomes if outcome is not None]
    assert len(done) == len(items)
    return done


async def _stored_copies_of(
    connection: AsyncConnection,
    items: Sequence[ClaimedItem],
    analyses: Sequence[Analysis],
    indexes: Sequence[int],
) -> tuple[dict[tuple[str, str], StoredCopy], set[tuple[str, str]]]:
    """The stored messages with the content hash of one of these messages (by inbox and
    hash), and which of their Message-IDs are stored in their inbox (as inbox, id)."""
    by_inbox: dict[str, list[int]] = {}
    for index in indexes:
        by_inbox.setdefault(items[index].inbox, []).append(index)
    copies: dict[tuple[str, str], StoredCopy] = {}
    stored_ids: set[tuple[str, str]] = set()
    for inbox, members in by_inbox.items():
        hashes = [analyses[index].content_hash for index in members]
        found = await threads_store.copies_by_hash(connection, inbox, hashes)
        copies.update({(inbox, content_hash): copy for content_hash, copy in found.items()})
        ids = [analyses[index].parsed.message_id for index in members]
        known = await threads_store.stored_message_ids(connection, inbox, ids)
        stored_ids.update((inbox, message_id) for message_id in known)
    return copies, stored_ids


async def _decide_run(
    connection: AsyncConnection,
    planned: Sequence[_Planned],
    stored_ids: set[tuple[str, str]],
    directory: Directory,
) -> list[_Planned]:
    """Decide thread and auto-reply verdict for the longest run of messages, from the first,
    whose lookups none of the earlier ones in the run can change once written; the others wait
    for the next run (after this one is written)."""
    run: list[_Planned] = []
    written_ids: set[tuple[str, str]] = set()  # Message-IDs the run stores, with their inbox
    joined: set[int] = set()  # stored conversations the run joins
    contacts_touched: set[tuple[str, int]] = set()  # contacts whose conversations it changes
    for one in planned:
        item, analysis = one.item, one.analysis
        parsed, bounce = analysis.parsed, analysis.bounce
        named = [*parsed.in_reply_to, *parsed.references]
        if bounce is not None and bounce.original_message_id is not None:
            named.append(bounce.original_message_id)
        if run and any((item.inbox, message_id) in written_ids for message_id in named):
            break  # it refers to a message of the run
        by_subject = one.contact_id is not None and subject_key(parsed.subject) is not None
        if run and by_subject and (item.inbox, one.contact_id) in contacts_touched:
            break  # the subject rule could find a conversation the run creates or changes
        own_message = False
        if (item.inbox, parsed.message_id) in stored_ids:
            copies = await threads_store.stored_copies(
                connection, item.inbox, parsed.message_id, analysis.content_hash
            )
            own_message = any(c.direction == Direction.OUTBOUND for c in copies)
        sender = one.origin.contact
        author = Sender(
            None if sender is None else sender.email,
            one.contact_id,
            frozenset(address.email for address in (*parsed.to, *parsed.cc)),
        )
        lookups = await gather_lookups(connection, item, analysis, one.contact_id, directory)
        found = _found(lookups)
        if run and joined & found.keys():
            break  # it would see a conversation of the run before the run's message is in it
        one.ref, one.verdict = _conclude(item, analysis, author, lookups, directory, own_message)
        if one.ref.conversation_id is None:
            if one.contact_id is not None:
                contacts_touched.add((item.inbox, one.contact_id))
        else:
            joined.add(one.ref.conversation_id)
            facts = found[one.ref.conversation_id]
            if facts.contact_id is not None:
                contacts_touched.add((item.inbox, facts.contact_id))
        written_ids.add((item.inbox, parsed.message_id))
        run.append(one)
    return run


def _found(lookups: Lookups) -> dict[int, ConversationFacts]:
    """Every conversation the lookups found, by id."""
    found = [*lookups.references.values(), lookups.token, lookups.subject, lookups.bounced]
    return {facts.id: facts for facts in found if facts is not None}


async def _write_run(
    connection: AsyncConnection, run: Sequence[_Planned], config: Config | None
) -> list[Outcome]:
    """Write a decided run: new conversations, joins, messages and activity with one statement
    each; then, message by message, assignment, ticket and notification of new conversations
    and bounce bookkeeping. A message a concurrent worker stored first fails the batch."""
    now = utcnow()
    new = [one for one in run if _ref(one).conversation_id is None]
    created = await repo.create_conversations(
        connection,
        [
            repo.conversation_values(
                one.item.inbox,
                one.analysis.parsed.subject,
                one.contact_id,
                now,
                subject_key=subject_key(one.analysis.parsed.subject),
                channel=one.item.channel or "fallback_email",
            )
            for one in new
        ],
    )
    conversation_of = {id(one): cid for one, cid in zip(new, created, strict=True)}
    joins: list[tuple[int, bool]] = []
    reopened: dict[int, bool] = {}
    for one in run:
        ref, verdict = _ref(one), _verdict(one)
        if ref.conversation_id is None:
            continue
        reopen = reopens(ref.status, verdict.auto_submitted)
        reopened[id(one)] = reopen
        conversation_of[id(one)] = ref.conversation_id
        if reopen or ref.status is ConversationStatus.OPEN:
            joins.append((ref.conversation_id, reopen))
    await threads_store.join_conversations(connection, joins, now)
    rows = [_message_row(one, conversation_of[id(one)]) for one in run]
    message_ids = await threads_store.insert_messages_once(connection, rows)
    if len(message_ids) < len(run):
        raise ConcurrentDuplicate(run[0].item.inbox)
    await routing.log_activities(
        connection,
        [
            {
                "contact_id": one.contact_id,
                "message_id": message_ids[one.item.id],
                "conversation_id": conversation_of[id(one)],
                "inbox": one.item.inbox,
            }
            for one in run
            if one.contact_id is not None
        ],
    )
    outcomes = []
    for one in run:
        item, ref, verdict = one.item, _ref(one), _verdict(one)
        conversation_id = conversation_of[id(one)]
        assignee = await _settle(
            connection,
            config,
            item,
            one.analysis,
            conversation_id,
            ref,
            verdict,
            one.contact_id,
            one.origin.contact,
        )
        outcomes.append(
            Outcome(
                item.id,
                conversation_id,
                message_ids[item.id],
                ref.reason,
                assignee=assignee,
                auto_submitted=verdict.auto_submitted,
                reopened=reopened.get(id(one), False),
            )
        )
    return outcomes


def _ref(one: _Planned) -> ThreadRef:
    """A decided message's thread."""
    assert one.ref is not None
    return one.ref


def _verdict(one: _Planned) -> AutoVerdict:
    """A decided message's auto-reply verdict."""
    assert one.verdict is not None
    return one.verdict


def _message_row(one: _Planned, conversation_id: int) -> dict[str, Any]:
    """The messages row of a decided message (as `store_message` writes it)."""
    return stored_values(
        one.item,
        one.analysis,
        conversation_id,
        _ref(one),
        _verdict(one),
        one.origin,
        reused_id=one.reused_id,
    )


def stored_values(
    item: ClaimedItem,
    analysis: Analysis,
    conversation_id: int,
    ref: ThreadRef,
    verdict: AutoVerdict,
    origin: Origin,
    *,
    reused_id: bool,
) -> dict[str, Any]:
    """The messages row of an analysed and placed message; a Message-ID stored before with
    other content (reused or replayed) is kept and flagged among the defects."""
    parsed = analysis.parsed
    defects = list(parsed.defects)
    if reused_id:
        defects.append("message-id:reused-with-other-content")
    values = message_values(item, parsed, conversation_id, ref, defects) | {
        "text": analysis.text,
        "auto_submitted": verdict.auto_submitted,
        "auto_reasons": list(verdict.reasons),
        "content_hash": analysis.content_hash,
        "thread_detail": ref.detail or None,
        "bounce": None if analysis.bounce is None else analysis.bounce.as_record(),
    }
    return values | origin_values(origin)


async def _record_bounce(connection: AsyncConnection, inbox: str, bounce: Bounce) -> None:
    """Mark our bounced message failed (or delayed) for each reported recipient."""
    if bounce.original_message_id is None:
        return
    for failed in bounce.recipients:
        await threads_store.record_bounce(
            connection,
            inbox,
            bounce.original_message_id,
            failed.recipient,
            failed.diagnostic or failed.status,
            status=failed.action,
        )


class InboundWorker(PollingLoop):
    """Claims batches from the inbound queue and processes them until stopped."""

    def __init__(
        self,
        store: Store,
        settings: WorkerConfig,
        *,
        id_domain: str,
        config: Config | None = None,
        dkim: DkimVerifier | None = None,
        inline: bool = False,
    ) -> None:
        super().__init__()
        self.store = store
        self.inline = inline  # a worker process: CPU work runs here, no thread to hand it to
        self.settings = settings
        self.id_domain = id_domain
        self.config = config  # users, inboxes and [trust] for the origin step; None: From header
        self.dkim = dkim or DkimVerifier()
        self.directory = Directory() if config is None else Directory.from_config(config)
        self.name = worker_name()
        self.unsettled = False  # a poll failed on the database: our claims are to be given back
        self.claimed_at = time.monotonic()

    def reconfigure(self, config: Config) -> None:
        """Take up a reloaded configuration (users and inbox addresses)."""
        self.config = config
        self.directory = Directory.from_config(config)

    async def recover(self) -> None:
        """At start: rows of claimers that are gone go back to the queue at once (a process of
        this host; another host's rows are taken over by claims once their lease runs out); of
        a dead process's rows, only those it can have been processing keep the attempt."""
        await self.store.requeue_abandoned(partial(claimer_alive, own=self.name), chunk_length)

    async def run(self) -> None:
        """Process until stopped, sleeping between empty polls."""
        try:
            await self.recover()
        except Exception as error:  # the database may be down: process what comes anyway
            log.error("worker.recover_failed", error=type(error).__name__)
        await self.poll_until_stopped()
        await self.store.release_claims(self.name)

    async def give_back(self) -> None:
        """After a poll that failed on the database: the rows of ours it left active (even
        their failure could not be recorded) go back to the queue, the attempt not counted."""
        returned = await self.store.release_claims(self.name)
        if returned:
            log.warning("worker.claims_returned", rows=returned)

    def poll_interval(self) -> float:
        """The configured poll interval."""
        return self.settings.poll_interval

    async def poll(self) -> int:
        """One batch; after a poll that failed on the database, first give our claims back."""
        try:
            if self.unsettled:
                await self.give_back()
                self.unsettled = False
            return await self.run_once()
        except Exception as error:  # the database may be down: keep polling, never crash
            log.error("worker.poll_failed", error=type(error).__name__)
            self.unsettled = True
            return 0

    async def run_once(self) -> int:
        """Claim one batch and process it; returns how many rows were claimed."""
        settings = self.settings
        lease = timedelta(seconds=settings.lease)
        batch = await self.store.claim(self.name, settings.batch_size, settings.max_attempts, lease)
        self.claimed_at = time.monotonic()
        admitted = [item for item in batch if await self.admit(item)]
        start = 0
        while start < len(admitted):
            if self.stopping.is_set():
                break  # the rest is given back by release_claims
            length = chunk_length([item.attempts for item in admitted[start:]])
            chunk = admitted[start : start + length]
            start += length
            if not await self.process_together(chunk):
                for item in chunk:
                    await self.process(item)
        return len(batch)

    async def offload(self, work: Callable[..., T], *args: Any) -> T:
        """CPU work (parsing, DKIM): in a thread beside SMTP intake, inline in a worker process
        where nothing else waits for the event loop."""
        if self.inline:
            return work(*args)
        return await asyncio.to_thread(work, *args)

    def analyse_all(self, batch: list[ClaimedItem]) -> list[Analysis]:
        """Parse and classify a batch (in a worker thread: it is CPU work)."""
        return [analyse(item.data, item.mail_from, id_domain=self.id_domain) for item in batch]

    def origins_of(self, batch: list[ClaimedItem], analyses: list[Analysis]) -> list[Origin]:
        """The origin of each message (in a worker thread: DKIM checks need DNS and CPU)."""
        return [
            determine_origin(
                item.data,
                one.parsed,
                config=self.config,
                inbox=item.inbox,
                envelope_sender=item.mail_from,
                verifier=self.dkim,
            )
            for item, one in zip(batch, analyses, strict=True)
        ]

    async def process_together(self, batch: list[ClaimedItem]) -> bool:
        """Store a whole batch in one transaction; False (nothing stored) if any row fails, so
        that the rows are then processed one by one and only the bad one is retried."""
        try:
            analyses = await self.offload(self.analyse_all, batch)
            origins = await self.offload(self.origins_of, batch, analyses)
            async with self.store.transaction() as connection:
                outcomes = await store_messages(
                    connection, batch, analyses, origins, self.directory, self.config
                )
        except Exception as error:
            log.warning("worker.batch_failed", size=len(batch), error=type(error).__name__)
            return False
        for item, outcome in zip(batch, outcomes, strict=True):
            self.log_stored(item, outcome)
        return True

    async def process(self, item: ClaimedItem) -> Outcome | None:
        """Process one row; a failure is recorded, retried later, and held after the last try."""
        try:
            [analysis] = await self.offload(self.analyse_all, [item])
            [origin] = await self.offload(self.origins_of, [item], [analysis])
            outcome = await self._store(item, analysis, origin)
        except Exception as error:
            await self.record_failure(item, error)
            return None
        self.log_stored(item, outcome)
        return outcome

    def log_stored(self, item: ClaimedItem, outcome: Outcome) -> None:
        """One event (and the metrics) per stored message."""
        metrics.INBOUND_STORED.inc()
        metrics.PROCESSING_SECONDS.observe(time.monotonic() - self.claimed_at)
        log.info(
            "message.stored",
            queue_id=item.id,
            inbox=item.inbox,
            conversation_id=outcome.conversation_id,
            thread_reason=outcome.thread_reason,
            assignee=outcome.assignee,
            auto_submitted=outcome.auto_submitted,
            duplicate=outcome.duplicate,
            reopened=outcome.reopened,
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

    async def _store(self, item: ClaimedItem, analysis: Analysis, origin: Origin) -> Outcome:
        """One transaction; run again once when a concurrent worker stored the same message
        first (the second run then finds it and records a duplicate)."""
        for attempt in range(2):
            try:
                async with self.store.transaction() as connection:
                    return await store_message(
                        connection, item, analysis, self.directory, self.config, origin
                    )
            except ConcurrentDuplicate:
                log.info("message.duplicate_race", queue_id=item.id, inbox=item.inbox)
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def record_failure(self, item: ClaimedItem, error: Exception) -> None:
        """Back to the queue with a delay, or held with the reason after the last attempt. A
        failure of the database (full, read-only, unreachable) is not the message's: it goes
        back to the queue without counting an attempt, and is never held for it."""
        reason = clean_text(f"{type(error).__name__}: {error}", limit=500)
        retry_at = utcnow() + timedelta(seconds=self.settings.retry_delay * item.attempts)
        if database_unavailable(error):
            log.warning(
                "message.deferred", queue_id=item.id, inbox=item.inbox, error=type(error).__name__
            )
            await recovery.defer(self.store, item.id, reason, retry_at)
            return
        hold = item.attempts >= self.settings.max_attempts
        log.warning(
            "message.failed",
            queue_id=item.id,
            inbox=item.inbox,
            attempt=item.attempts,
            state=QueueState.HELD if hold else QueueState.QUEUED,
            error=type(error).__name__,
        )
        metrics.INBOUND_FAILED.labels(state=QueueState.HELD if hold else QueueState.QUEUED).inc()
        await self.store.fail(item.id, reason, hold=hold, retry_at=retry_at)
