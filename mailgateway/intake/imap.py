"""IMAP channel pollers: each team mailbox fetched exactly once, by IDLE or polling."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from mailgateway import metrics
from mailgateway.config import ChannelConfig, ChannelStatus, Config, ImapConfig
from mailgateway.domain import ChannelState, ImapOutcome
from mailgateway.intake.imapclient import (
    AuthenticationFailed,
    ImapError,
    ImapSession,
    open_session,
)
from mailgateway.intake.imapwire import MessageMeta, header_facts, search_date
from mailgateway.logs import get_logger
from mailgateway.store.channels import ChannelStore, Checkpoint, Fetched, Health, Mailbox
from mailgateway.store.db import create_engine
from mailgateway.store.repo import Envelope, Store

log = get_logger(__name__)

BATCH = 50
LITERAL_SLACK = 64 * 1024
HEALTH_READ_TIMEOUT = 5.0


def backoff_delay(failures: int, settings: ImapConfig, rand: float | None = None) -> float:
    """Seconds to wait after `failures` failures in a row: doubling from reconnect_min up to
    reconnect_max, then cut by up to half at random so that channels do not retry in step."""
    doubled = settings.reconnect_min * 2.0 ** max(failures - 1, 0)
    base = min(settings.reconnect_max, doubled)
    return base * (1 - 0.5 * (random.random() if rand is None else rand))


def describe(error: BaseException) -> str:
    """An error as one line for logs and health; database errors by class only (their text can
    hold statements and values)."""
    if isinstance(error, SQLAlchemyError | OSError) and not isinstance(error, ImapError):
        return f"database or system error ({type(error).__name__})"
    return f"{type(error).__name__}: {error}"


def batches(uids: Sequence[int], size: int = BATCH) -> Iterator[Sequence[int]]:
    """The UIDs in consecutive slices of at most `size`."""
    for start in range(0, len(uids), size):
        yield uids[start : start + size]


def channel_key(channel: ChannelConfig) -> str:
    """How a channel is named in the database: its address, lower-cased."""
    return channel.address.lower()


@dataclass(frozen=True, slots=True)
class PollerSpec:
    """Everything a poller runs on; a change in any of it restarts the poller."""

    inbox: str
    channel: ChannelConfig
    settings: ImapConfig
    max_message_size: int


class ChannelPoller:
    """Watches one channel's folder and queues its new mail."""

    def __init__(
        self, store: Store, spec: PollerSpec, on_commit: Callable[[], None] = lambda: None
    ) -> None:
        self.channels = ChannelStore(store)
        self.spec = spec
        self.channel = spec.channel
        self.settings = spec.settings
        self.mailbox = Mailbox(channel_key(spec.channel), spec.channel.folder, spec.inbox)
        self.on_commit = on_commit
        self.connections = 0  # sessions opened so far
        self.passes = 0  # completed passes over the folder

    # -- the outer loop --------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, fetch and watch until cancelled; after a failure wait (backoff) and
        reconnect, resuming from the checkpoint."""
        failures = 0
        await self.health(ChannelState.CONNECTING)
        try:
            while True:
                try:
                    async with self.session() as session:
                        await self.watch(session)
                except AuthenticationFailed as error:
                    failures = await self.failed(ChannelState.AUTH_FAILED, error, failures)
                except (ImapError, SQLAlchemyError, OSError) as error:
                    failures = await self.failed(ChannelState.RETRYING, error, failures)
                except Exception as error:  # a bug must not stop the channel for good
                    log.exception("imap.poller_error", channel=self.mailbox.channel)
                    failures = await self.failed(ChannelState.RETRYING, error, failures)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self.health(ChannelState.STOPPED)
            raise

    def session(self) -> contextlib.AbstractAsyncContextManager[ImapSession]:
        """A new session to the channel's IMAP server."""
        return open_session(
            self.channel.imap,
            timeout=self.settings.timeout,
            max_literal=self.spec.max_message_size + LITERAL_SLACK,
        )

    async def failed(self, state: ChannelState, error: Exception, failures: int) -> int:
        """Log and record a failure, wait out the backoff; the new failure count."""
        failures += 1
        delay = backoff_delay(failures, self.settings)
        text = describe(error)
        log.warning(
            "imap.retrying",
            channel=self.mailbox.channel,
            state=state,
            error=text,
            failures=failures,
            delay=round(delay, 2),
        )
        metrics.IMAP_ERRORS.labels(self.mailbox.inbox, self.mailbox.channel).inc()
        await self.health(state, error=text)
        await asyncio.sleep(delay)
        return failures

    async def health(
        self, state: ChannelState, *, error: str | None = None, success: bool = False
    ) -> None:
        """Record the channel's health (and its metric); a database fault here is only logged."""
        labels = metrics.IMAP_CHANNEL_UP.labels(self.mailbox.inbox, self.mailbox.channel)
        labels.set(1 if state is ChannelState.OK else 0)
        try:
            await self.channels.set_health(
                self.mailbox.channel, state, error=error, success=success
            )
        except (SQLAlchemyError, OSError) as fault:
            log.warning(
                "imap.health_not_saved", channel=self.mailbox.channel, error=describe(fault)
            )

    # -- one connection ------------------------------------------------------------------------

    async def watch(self, session: ImapSession) -> None:
        """Fetch what is new, then wait for news (IDLE, renewed, or polling), forever."""
        idle = self.channel.idle and session.has_capability("IDLE")
        self.connections += 1
        log.info("imap.connected", channel=self.mailbox.channel, idle=idle)
        while True:
            await self.sync(session)
            await self.health(ChannelState.OK, success=True)
            self.passes += 1
            if idle:
                await session.wait_for_news(self.settings.idle_renew)
            else:
                await session.pause(self.channel.poll_interval)
                await session.noop()

    async def sync(self, session: ImapSession) -> int:
        """One pass: re-check UIDVALIDITY, finish pending flags, fetch every candidate UID
        past the checkpoint in order. Returns how many messages were queued."""
        checkpoint = await self.checkpoint(session)
        await self.ack(session, checkpoint.uidvalidity, await self.pending(checkpoint))
        old, floor = await self.old_candidates(session, checkpoint)
        queued = await self.fetch(session, checkpoint, old, old_mail=True)
        if floor > checkpoint.last_uid:
            await self.channels.advance(self.mailbox, checkpoint.uidvalidity, floor)
        new = [uid for uid in await session.uid_search("UID", f"{floor + 1}:*") if uid > floor]
        return queued + await self.fetch(session, checkpoint, new, old_mail=False)

    async def pending(self, checkpoint: Checkpoint) -> list[int]:
        """UIDs committed earlier whose flags were never set (a crash between the two)."""
        return await self.channels.pending_acks(self.mailbox, checkpoint.uidvalidity)

    async def checkpoint(self, session: ImapSession) -> Checkpoint:
        """The folder's checkpoint; started on first contact and after a UIDVALIDITY change."""
        status = await session.select(self.mailbox.folder)
        checkpoint = await self.channels.checkpoint(self.mailbox)
        if checkpoint is not None and checkpoint.uidvalidity == status.uidvalidity:
            return checkpoint
        boundary = await session.highest_uid(status)
        if checkpoint is not None:
            log.warning(
                "imap.uidvalidity_changed",
                channel=self.mailbox.channel,
                folder=self.mailbox.folder,
                old=checkpoint.uidvalidity,
                new=status.uidvalidity,
            )
        return await self.channels.begin_checkpoint(self.mailbox, status.uidvalidity, boundary)

    async def old_candidates(
        self, session: ImapSession, checkpoint: Checkpoint
    ) -> tuple[list[int], int]:
        """UIDs up to the boundary still to look at (unseen, or received since the channel
        started), and the UID from which all mail is new."""
        low, boundary = checkpoint.last_uid, checkpoint.boundary_uid
        if low >= boundary:
            return [], low
        span = f"{low + 1}:{boundary}"
        day_before = search_date(checkpoint.since.date() - timedelta(days=1))
        unseen = await session.uid_search("UID", span, "UNSEEN")
        recent = await session.uid_search("UID", span, "SINCE", day_before)
        return sorted({uid for uid in (*unseen, *recent) if low < uid <= boundary}), boundary

    # -- messages --------------------------------------------------------------------------------

    async def fetch(
        self, session: ImapSession, checkpoint: Checkpoint, uids: Sequence[int], *, old_mail: bool
    ) -> int:
        """Fetch and commit these UIDs in order, setting their flags after each batch."""
        queued = 0
        for batch in batches(uids):
            done: list[int] = []
            for meta in await session.fetch_meta(batch):
                outcome = await self.take(session, checkpoint, meta, old_mail=old_mail)
                if outcome in {ImapOutcome.QUEUED, ImapOutcome.DUPLICATE}:
                    done.append(meta.uid)
                queued += outcome is ImapOutcome.QUEUED
            await self.ack(session, checkpoint.uidvalidity, done)
        return queued

    async def take(
        self, session: ImapSession, checkpoint: Checkpoint, meta: MessageMeta, *, old_mail: bool
    ) -> ImapOutcome | None:
        """Commit one message with the checkpoint, or pass it over (old and read, too large,
        gone); None when nothing was stored for it."""
        uidvalidity = checkpoint.uidvalidity
        if old_mail and meta.seen and not _arrived_since(meta, checkpoint):
            await self.channels.advance(self.mailbox, uidvalidity, meta.uid)
            return None
        data = None
        if meta.size <= self.spec.max_message_size:
            data = await session.fetch_body(meta.uid)
        if data is None or len(data) > self.spec.max_message_size:
            await self.too_large_or_gone(checkpoint, meta, data)
            return None
        facts = header_facts(data)
        fetched = Fetched(meta.uid, data, facts.message_id, self.envelope(facts.return_path))
        outcome = await self.channels.enqueue_with_checkpoint(
            self.mailbox, uidvalidity, fetched, dedupe=old_mail
        )
        log.info(
            "imap.message_fetched",
            channel=self.mailbox.channel,
            uid=meta.uid,
            outcome=outcome or "already",
            size=len(data),
        )
        if outcome is ImapOutcome.QUEUED:
            metrics.IMAP_FETCHED.labels(self.mailbox.inbox, self.mailbox.channel).inc()
            self.on_commit()
        return outcome

    async def too_large_or_gone(
        self, checkpoint: Checkpoint, meta: MessageMeta, data: bytes | None
    ) -> None:
        """Pass over a message that vanished, or that is over the size limit (left unread on
        the server, recorded, shown as the channel's last error)."""
        if data is None and meta.size <= self.spec.max_message_size:
            await self.channels.advance(self.mailbox, checkpoint.uidvalidity, meta.uid)
            return
        size = meta.size if data is None else len(data)
        error = f"UID {meta.uid} is {size} bytes, over max_message_size; left on the server"
        log.warning("imap.message_too_large", channel=self.mailbox.channel, uid=meta.uid, size=size)
        await self.channels.record_too_large(
            self.mailbox, checkpoint.uidvalidity, meta.uid, advance=True
        )
        await self.health(ChannelState.OK, error=error)

    def envelope(self, return_path: str) -> Envelope:
        """The queue row's envelope for mail of this channel."""
        server = self.channel.imap
        return Envelope(
            mail_from=return_path,
            peer=f"imap:{server.host}:{server.port}",
            source="imap",
            channel=self.mailbox.channel,
        )

    async def ack(self, session: ImapSession, uidvalidity: int, uids: Sequence[int]) -> None:
        """Tell the server these committed UIDs are taken: \\Seen, or moved away."""
        if not uids:
            return
        if self.channel.move_to:
            await session.move(uids, self.channel.move_to)
        else:
            await session.mark_seen(uids)
        await self.channels.mark_acked(self.mailbox, uidvalidity, uids)


def _arrived_since(meta: MessageMeta, checkpoint: Checkpoint) -> bool:
    """Whether the server received the message after the channel was first connected (to the
    second: INTERNALDATE has no finer grain)."""
    since = checkpoint.since.replace(microsecond=0)
    return meta.internal_date is not None and meta.internal_date >= since


# -- every channel ----------------------------------------------------------------------------


def poller_specs(config: Config) -> dict[str, PollerSpec]:
    """What to run for each enabled channel, by channel address."""
    gateway = config.gateway
    return {
        channel_key(channel): PollerSpec(
            inbox.slug, channel, gateway.imap, gateway.smtp.max_message_size
        )
        for inbox in config.inboxes.values()
        for channel in inbox.channels
        if channel.status is ChannelStatus.ENABLED
    }


class ChannelPollers:
    """One poller task per enabled channel, started, restarted and stopped with the
    configuration; disabled channels are not polled."""

    def __init__(self, store: Store, on_commit: Callable[[], None] = lambda: None) -> None:
        self.store = store
        self.on_commit = on_commit
        self.running: dict[str, tuple[PollerSpec, asyncio.Task[None]]] = {}

    def apply(self, config: Config) -> None:
        """Start pollers of new channels, restart changed ones, stop removed or disabled."""
        wanted = poller_specs(config)
        for address, (spec, task) in list(self.running.items()):
            if wanted.get(address) != spec:
                task.cancel()
                del self.running[address]
        for address, spec in wanted.items():
            if address not in self.running:
                poller = ChannelPoller(self.store, spec, self.on_commit)
                task = asyncio.create_task(poller.run(), name=f"imap:{address}")
                self.running[address] = (spec, task)
        log.info("imap.channels", polled=len(self.running))

    async def stop(self) -> None:
        """Stop every poller (a commit in flight either completes or rolls back whole)."""
        tasks = [task for _spec, task in self.running.values()]
        self.running.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def read_health(config: Config) -> dict[str, Health]:
    """The channels' health as the daemon last recorded it; empty when the configuration has
    no channel or the database cannot be read (then health shows as unknown)."""
    if not any(inbox.channels for inbox in config.inboxes.values()):
        return {}
    database = config.gateway.database
    url = make_url(database.async_url)
    if database.is_sqlite and not Path(url.database or "").is_file():
        return {}
    store = Store(create_engine(database.async_url))
    try:
        async with asyncio.timeout(HEALTH_READ_TIMEOUT):
            return await ChannelStore(store).health()
    except (SQLAlchemyError, OSError, TimeoutError, ValueError):
        return {}
    finally:
        await store.close()
