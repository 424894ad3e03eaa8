"""Backfill of old mail (`import imap`, `import mbox`): archive mode, resumable, with progress."""

from __future__ import annotations

import asyncio
import mailbox
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Protocol

from mailgateway.config import ChannelConfig, ChannelStatus, Config, InboxConfig
from mailgateway.domain import ImapOutcome
from mailgateway.errors import RefusedError
from mailgateway.inbound.parse import clean_text
from mailgateway.intake.imap import LITERAL_SLACK, batches, channel_key
from mailgateway.intake.imapclient import ImapSession, open_session
from mailgateway.intake.imapwire import MessageMeta, header_facts, search_date
from mailgateway.store.channels import ChannelStore, Fetched, Mailbox
from mailgateway.store.repo import Delivery, Envelope, Store


class Progress(Protocol):
    """Where a backfill reports how far it got (a progress bar, or nothing)."""

    def start(self, total: int) -> None:
        """The number of messages to look at."""

    def advance(self) -> None:
        """One more message looked at."""


class NoProgress:
    """A Progress that shows nothing."""

    def start(self, total: int) -> None:
        """Ignore the total."""

    def advance(self) -> None:
        """Ignore the step."""


@dataclass(slots=True)
class ImportReport:
    """What a backfill did: messages queued, found stored already, or over the size limit."""

    found: int = 0
    queued: int = 0
    duplicates: int = 0
    already: int = 0
    too_large: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counts by name."""
        return asdict(self)


def find_channel(config: Config, address: str) -> tuple[InboxConfig, ChannelConfig]:
    """The inbox and channel of a team address; refused when unknown or disabled."""
    for inbox in config.inboxes.values():
        for channel in inbox.channels:
            if channel_key(channel) == address.strip().lower():
                if channel.status is ChannelStatus.DISABLED:
                    raise RefusedError(f"channel {channel.address} is disabled")
                return inbox, channel
    raise RefusedError(f"no channel {address!r} in any inbox")


# -- IMAP ---------------------------------------------------------------------------------------


async def import_imap(
    config: Config,
    store: Store,
    address: str,
    *,
    folder: str | None = None,
    since: date | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Queue a folder's existing mail (archive mode) without touching its flags. Resumable:
    UIDs done before are skipped, and mail stored already (same Message-ID or bytes) is not
    stored again. In the folder the daemon watches, only mail older than the daemon's first
    connection is taken (newer mail is the daemon's)."""
    inbox, channel = find_channel(config, address)
    mailbox_ref = Mailbox(channel_key(channel), folder or channel.folder, inbox.slug)
    max_size = config.gateway.smtp.max_message_size
    report = ImportReport()
    session_cm = open_session(
        channel.imap, timeout=config.gateway.imap.timeout, max_literal=max_size + LITERAL_SLACK
    )
    async with session_cm as session:
        backfill = _ImapBackfill(ChannelStore(store), session, mailbox_ref, channel, max_size)
        uids = await backfill.candidates(since)
        report.found = len(uids)
        todo = [uid for uid in uids if uid not in backfill.known]
        report.already = len(uids) - len(todo)
        (progress or NoProgress()).start(len(todo))
        await backfill.run(todo, report, progress or NoProgress())
    return report


class _ImapBackfill:
    """One `import imap` run over an open session."""

    def __init__(
        self,
        channels: ChannelStore,
        session: ImapSession,
        mailbox_ref: Mailbox,
        channel: ChannelConfig,
        max_size: int,
    ) -> None:
        self.channels = channels
        self.session = session
        self.mailbox = mailbox_ref
        self.channel = channel
        self.max_size = max_size
        self.uidvalidity = 0
        self.known: set[int] = set()

    async def candidates(self, since: date | None) -> list[int]:
        """The folder's UIDs to import (since the date, when given)."""
        status = await self.session.select(self.mailbox.folder)
        self.uidvalidity = status.uidvalidity
        self.known = await self.channels.known_uids(self.mailbox, status.uidvalidity)
        limit: int | None = None
        checkpoint = await self.channels.checkpoint(self.mailbox)
        if checkpoint is not None and checkpoint.uidvalidity == status.uidvalidity:
            limit = checkpoint.boundary_uid  # the daemon fetches what came after
            if limit == 0:
                return []
        criteria = ["UID", f"1:{'*' if limit is None else limit}"]
        if since is not None:
            criteria += ["SINCE", search_date(since)]
        uids = await self.session.uid_search(*criteria)
        return [uid for uid in uids if limit is None or uid <= limit]

    async def run(self, uids: list[int], report: ImportReport, progress: Progress) -> None:
        """Fetch and store the UIDs in order, one transaction each."""
        for batch in batches(uids):
            for meta in await self.session.fetch_meta(batch):
                outcome = await self.take(meta)
                if outcome is ImapOutcome.QUEUED:
                    report.queued += 1
                elif outcome is ImapOutcome.DUPLICATE:
                    report.duplicates += 1
                elif outcome is ImapOutcome.TOO_LARGE:
                    report.too_large += 1
                else:
                    report.already += 1
                progress.advance()

    async def take(self, meta: MessageMeta) -> ImapOutcome | None:
        """Store one message in archive mode; None when it was taken already or is gone."""
        data = None
        if meta.size <= self.max_size:
            data = await self.session.fetch_body(meta.uid)
        if meta.size > self.max_size or (data is not None and len(data) > self.max_size):
            await self.channels.record_too_large(
                self.mailbox, self.uidvalidity, meta.uid, advance=False
            )
            return ImapOutcome.TOO_LARGE
        if data is None:
            return None
        facts = header_facts(data)
        envelope = Envelope(
            mail_from=facts.return_path,
            peer=f"imap:{self.channel.imap.host}:{self.channel.imap.port}",
            source="imap",
            channel=self.mailbox.channel,
            archive=True,
        )
        fetched = Fetched(meta.uid, data, facts.message_id, envelope)
        return await self.channels.import_message(self.mailbox, self.uidvalidity, fetched)


# -- mbox ---------------------------------------------------------------------------------------


async def import_mbox(
    config: Config, store: Store, path: Path, slug: str, *, progress: Progress | None = None
) -> ImportReport:
    """Queue every message of an mbox file for an inbox (archive mode). Resumable: a message
    stored already for the inbox (same bytes) is not stored again."""
    inbox = config.inboxes.get(slug)
    if inbox is None:
        raise RefusedError(f"no inbox {slug!r}")
    if not path.is_file():
        raise RefusedError(f"no mbox file at {path}")
    box = mailbox.mbox(path, create=False)
    keys = await asyncio.to_thread(box.keys)
    report = ImportReport(found=len(keys))
    steps = progress or NoProgress()
    steps.start(len(keys))
    channels = ChannelStore(store)
    delivery = Delivery(slug, inbox.fallback_email.forwarding_address)
    for key in keys:
        envelope_line, data = _split_from_line(box.get_bytes(key, from_=True))
        if len(data) > config.gateway.smtp.max_message_size:
            report.too_large += 1
        elif await channels.queued_for(slug, data):
            report.already += 1
        else:
            envelope = Envelope(mail_from=envelope_line, source="mbox", archive=True)
            await store.enqueue(data, envelope, [delivery])
            report.queued += 1
        steps.advance()
    box.close()
    return report


def _split_from_line(data: bytes) -> tuple[str, bytes]:
    """The envelope sender of an mbox "From " line, and the message after it."""
    first, _, rest = data.partition(b"\n")
    if not first.startswith(b"From "):
        return "", data
    sender = first[5:].split(b" ", 1)[0].decode("utf-8", "replace")
    return clean_text(sender, limit=320), rest
