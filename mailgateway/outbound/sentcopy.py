"""Copies of replies sent through a team channel, saved to its Sent folder by IMAP APPEND."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from mailgateway.config import ChannelConfig, ImapConfig
from mailgateway.intake.imap import LITERAL_SLACK, backoff_delay, describe
from mailgateway.intake.imapclient import AuthenticationFailed, FolderMissing, open_session
from mailgateway.logs import get_logger

log = get_logger(__name__)

ATTEMPTS = 3
SEEN = "(\\Seen)"
Append = Callable[[ChannelConfig, ImapConfig, bytes], Awaitable[None]]
NoteFailure = Callable[[int, str, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class SentCopy:
    """One sent reply to file: its outbound row, the channel, and the bytes as sent (signed)."""

    queue_id: int
    channel: ChannelConfig
    settings: ImapConfig
    data: bytes = field(repr=False)


async def append_copy(channel: ChannelConfig, settings: ImapConfig, data: bytes) -> None:
    """Log in to the channel's IMAP server and APPEND the message, \\Seen, to sent_folder; a
    folder the server says is missing ([TRYCREATE]) is created first."""
    async with open_session(
        channel.imap, timeout=settings.timeout, max_literal=len(data) + LITERAL_SLACK
    ) as session:
        try:
            await session.append(channel.sent_folder, data, SEEN)
        except FolderMissing:
            await session.create(channel.sent_folder)
            await session.append(channel.sent_folder, data, SEEN)


class SentCopies:
    """Saves copies in the background, so that sending never waits on an IMAP server. A copy
    is tried up to ATTEMPTS times, [imap] reconnect_min apart (doubling); a refused login is not
    tried again. A copy that cannot be saved is logged and noted; the reply is never sent again
    for it. Copies not saved when the worker stops are given up (logged)."""

    def __init__(self, note_failure: NoteFailure, append: Append = append_copy) -> None:
        self.note_failure = note_failure
        self.append = append
        self.tasks: set[asyncio.Task[None]] = set()

    def save(self, copy: SentCopy) -> None:
        """Start saving one copy."""
        task = asyncio.create_task(self._save(copy), name=f"sent-copy:{copy.queue_id}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _save(self, copy: SentCopy) -> None:
        """Try, wait, try again; on the last failure log and note it."""
        channel = copy.channel.address.lower()
        error = await self._attempts(copy)
        if error is None:
            log.info("outbound.sent_copy_saved", queue_id=copy.queue_id, channel=channel)
            return
        text = describe(error)
        log.warning(
            "outbound.sent_copy_failed", queue_id=copy.queue_id, channel=channel, error=text
        )
        try:
            await self.note_failure(copy.queue_id, channel, text)
        except Exception as fault:
            log.warning(
                "outbound.sent_copy_not_noted", queue_id=copy.queue_id, error=describe(fault)
            )

    async def _attempts(self, copy: SentCopy) -> Exception | None:
        """APPEND until it works or the attempts are used up; the last error, or None."""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                await self.append(copy.channel, copy.settings, copy.data)
            except AuthenticationFailed as refused:
                return refused
            except Exception as error:  # a copy is best effort: nothing may escape
                if attempt == ATTEMPTS:
                    return error
                await asyncio.sleep(backoff_delay(attempt, copy.settings))
            else:
                return None
        return None

    async def drain(self, grace: float) -> None:
        """Let copies in progress finish for up to `grace` seconds, then give the rest up."""
        pending = set(self.tasks)
        if not pending:
            return
        _done, late = await asyncio.wait(pending, timeout=grace)
        for task in late:
            task.cancel()
            log.warning("outbound.sent_copy_abandoned", task=task.get_name())
        await asyncio.gather(*late, return_exceptions=True)
