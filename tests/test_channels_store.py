"""The IMAP channels' queries on both databases: checkpoint and message in one transaction,
UIDVALIDITY restarts, de-duplication, pending flags, health."""

from __future__ import annotations

from typing import Any

import pytest

from mailgateway.domain import ChannelState, ImapOutcome
from mailgateway.store.channels import ChannelStore, Fetched, Mailbox
from mailgateway.store.repo import Envelope, Store
from tests.support import make_message

MAILBOX = Mailbox("help@acme.example", "INBOX", "support")
ENVELOPE = Envelope(mail_from="", source="imap", channel="help@acme.example")


def fetched(uid: int, data: bytes, message_id: str = "") -> Fetched:
    """A fetched message as the poller hands it over."""
    return Fetched(uid, data, message_id, ENVELOPE)


async def test_message_and_checkpoint_commit_together(store: Store) -> None:
    """The queue row, the UID record and the checkpoint move in one commit; the same UID
    offered again is recognised as handled and stores nothing."""
    channels = ChannelStore(store)
    await channels.begin_checkpoint(MAILBOX, 7, boundary_uid=0)
    outcome = await channels.enqueue_with_checkpoint(
        MAILBOX, 7, fetched(3, make_message()), dedupe=False
    )
    assert outcome is ImapOutcome.QUEUED
    again = await channels.enqueue_with_checkpoint(
        MAILBOX, 7, fetched(3, make_message()), dedupe=False
    )
    assert again is None
    checkpoint = await channels.checkpoint(MAILBOX)
    assert checkpoint is not None and checkpoint.last_uid == 3
    [row] = await store.queue_rows()
    assert (row.source, row.channel, row.inbox, row.rcpt_to) == (
        "imap",
        "help@acme.example",
        "support",
        "help@acme.example",
    )
    assert await channels.pending_acks(MAILBOX, 7) == [3]


async def test_failure_inside_the_transaction_moves_nothing(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If storing the message fails, neither the UID record nor the checkpoint moves: the
    message will be fetched again, never skipped."""
    channels = ChannelStore(store)
    await channels.begin_checkpoint(MAILBOX, 7, boundary_uid=0)
    original = store.enqueue_in

    async def enqueue_then_fail(*args: Any, **kwargs: Any) -> list[int]:
        await original(*args, **kwargs)
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(store, "enqueue_in", enqueue_then_fail)
    with pytest.raises(RuntimeError):
        await channels.enqueue_with_checkpoint(MAILBOX, 7, fetched(1, make_message()), dedupe=False)
    checkpoint = await channels.checkpoint(MAILBOX)
    assert checkpoint is not None and checkpoint.last_uid == 0
    assert await store.queue_rows() == []
    assert await channels.known_uids(MAILBOX, 7) == set()


async def test_uidvalidity_change_starts_over_and_keeps_the_start_time(store: Store) -> None:
    """A new UIDVALIDITY resets the checkpoint (nothing fetched, a new boundary), keeps the
    time the channel was first connected, and forgets flags pending under the old one."""
    channels = ChannelStore(store)
    first = await channels.begin_checkpoint(MAILBOX, 7, boundary_uid=4)
    same = await channels.begin_checkpoint(MAILBOX, 7, boundary_uid=99)
    assert same == first
    await channels.enqueue_with_checkpoint(MAILBOX, 7, fetched(5, make_message()), dedupe=False)
    changed = await channels.begin_checkpoint(MAILBOX, 8, boundary_uid=12)
    assert (changed.uidvalidity, changed.last_uid, changed.boundary_uid) == (8, 0, 12)
    assert changed.since == first.since
    assert await channels.checkpoint(MAILBOX) == changed
    assert await channels.pending_acks(MAILBOX, 7) == []


async def test_dedupe_by_message_id_or_content(store: Store) -> None:
    """With de-duplication on, a message stored before under the same Message-ID (other
    bytes) or with the same bytes (no Message-ID) is a duplicate; without it, a new UID with
    a reused Message-ID is queued."""
    channels = ChannelStore(store)
    await channels.begin_checkpoint(MAILBOX, 7, boundary_uid=0)
    original = make_message(subject="a", message_id="<a@x.test>")
    anonymous = make_message(subject="b").replace(b"Message-ID:", b"X-Old:")
    await channels.enqueue_with_checkpoint(
        MAILBOX, 7, fetched(1, original, "<a@x.test>"), dedupe=False
    )
    await channels.enqueue_with_checkpoint(MAILBOX, 7, fetched(2, anonymous), dedupe=False)
    await channels.begin_checkpoint(MAILBOX, 8, boundary_uid=3)
    rewritten = b"X-Moved: yes\r\n" + original
    outcomes = [
        await channels.enqueue_with_checkpoint(
            MAILBOX, 8, fetched(1, rewritten, "<a@x.test>"), dedupe=True
        ),
        await channels.enqueue_with_checkpoint(MAILBOX, 8, fetched(2, anonymous), dedupe=True),
        await channels.enqueue_with_checkpoint(
            MAILBOX, 8, fetched(3, make_message(subject="c")), dedupe=True
        ),
        await channels.enqueue_with_checkpoint(
            MAILBOX, 8, fetched(4, rewritten, "<a@x.test>"), dedupe=False
        ),
    ]
    assert outcomes == [
        ImapOutcome.DUPLICATE,
        ImapOutcome.DUPLICATE,
        ImapOutcome.QUEUED,
        ImapOutcome.QUEUED,
    ]
    assert len(await store.queue_rows()) == 4
    assert await channels.pending_acks(MAILBOX, 8) == [1, 2, 3, 4]


async def test_acks_are_recorded(store: Store) -> None:
    """Once the server has set the flags, the UIDs are no longer pending."""
    channels = ChannelStore(store)
    await channels.begin_checkpoint(MAILBOX, 7, boundary_uid=0)
    for uid in (1, 2, 3):
        await channels.enqueue_with_checkpoint(
            MAILBOX, 7, fetched(uid, make_message()), dedupe=False
        )
    await channels.mark_acked(MAILBOX, 7, [1, 3])
    assert await channels.pending_acks(MAILBOX, 7) == [2]


async def test_backfill_skips_known_uids_and_needs_no_flags(store: Store) -> None:
    """An imported UID is recorded without pending flags; the same UID again stores nothing;
    an oversized one is recorded too."""
    channels = ChannelStore(store)
    archive = Envelope(mail_from="", source="imap", channel="help@acme.example", archive=True)
    message = Fetched(1, make_message(), "", archive)
    assert await channels.import_message(MAILBOX, 7, message) is ImapOutcome.QUEUED
    assert await channels.import_message(MAILBOX, 7, message) is None
    await channels.record_too_large(MAILBOX, 7, 2, advance=False)
    assert await channels.known_uids(MAILBOX, 7) == {1, 2}
    assert await channels.pending_acks(MAILBOX, 7) == []
    [row] = await store.queue_rows()
    assert row.archive is True


async def test_health_keeps_the_last_error_and_success(store: Store) -> None:
    """Health records the state, the latest error and the latest success, per channel."""
    channels = ChannelStore(store)
    assert await channels.health() == {}
    await channels.set_health("help@acme.example", ChannelState.RETRYING, error="x" * 900)
    await channels.set_health("help@acme.example", ChannelState.OK, success=True)
    health = (await channels.health())["help@acme.example"]
    assert health.state is ChannelState.OK
    assert health.last_error == "x" * 500
    assert health.last_error_at is not None and health.last_success_at is not None
    assert health.last_success_at >= health.last_error_at
