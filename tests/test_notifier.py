"""The notifier against a real local webhook: one post per event, retries with backoff, failures
kept visible; and the Slack message's content."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from datetime import timedelta
from functools import partial
from pathlib import Path

import pytest

from mailgateway.config import Config, NotificationsConfig
from mailgateway.domain import NotificationKind
from mailgateway.notifications import escape, slack_message
from mailgateway.notifier import Notifier, backoff
from mailgateway.store import outbox
from mailgateway.store.claims import claimer_alive
from mailgateway.store.repo import Store
from tests.routing_support import deliver, loaded, process_all, worker_for, write_routing_config
from tests.support import exited_pid
from tests.webhook import RecordingWebhook, recording_webhook

HOST = socket.gethostname()


@pytest.fixture
async def hook() -> AsyncIterator[RecordingWebhook]:
    """A recording webhook on 127.0.0.1."""
    async with recording_webhook() as running:
        yield running


def config_for(tmp_path: Path, db_url: str, url: str) -> Config:
    """The routing team with notifications to `url`."""
    return loaded(write_routing_config(tmp_path / "config", db_url, webhook_url=url))


@pytest.fixture
def notifications(tmp_path: Path, db_url: str, hook: RecordingWebhook) -> Config:
    """The routing team notifying the recording webhook."""
    return config_for(tmp_path, db_url, hook.url)


async def states(store: Store) -> list[str]:
    """The state of every outbox row, oldest first."""
    return [row.state for row in await outbox.event_rows(store.engine)]


async def run_notifier(store: Store, settings: NotificationsConfig, until: object) -> None:
    """Run the notifier task until the outbox rows reach the wanted states, then stop it."""
    notifier = Notifier(store, settings, name="test", poll_interval=0.02)
    task = asyncio.create_task(notifier.run())
    try:
        async with asyncio.timeout(15):
            while await states(store) != until:
                await asyncio.sleep(0.02)
    finally:
        notifier.stop()
        await task


async def test_webhook_gets_exactly_one_event_per_new_conversation(
    store: Store, notifications: Config, hook: RecordingWebhook
) -> None:
    """Five new conversations and two replies: the webhook receives exactly five posts, one per
    conversation, and nothing more after a second pass."""
    for number in range(5):
        await deliver(store, subject=f"case {number}", message_id=f"<c{number}@customer.test>")
    await deliver(store, subject="Re: case 0", In_Reply_To="<c0@customer.test>")
    await deliver(store, subject="Re: case 1", In_Reply_To="<c1@customer.test>")
    await process_all(worker_for(store, notifications))
    settings = notifications.gateway.notifications
    await run_notifier(store, settings, ["sent"] * 5)
    await run_notifier(store, settings, ["sent"] * 5)
    assert len(hook.received) == 5
    texts = [body["text"] for body in hook.received]
    for number in range(5):
        assert sum(f"\u201ccase {number}\u201d" in text for text in texts) == 1
    assert all(text.startswith("New conversation #") for text in texts)
    assert "assigned to Alice Test" in texts[0]


async def test_server_errors_retried_with_backoff_then_sent(
    store: Store, notifications: Config, hook: RecordingWebhook
) -> None:
    """500 and 503 are retried; the event is sent once the webhook answers 200."""
    hook.statuses = [500, 503]
    await deliver(store)
    await process_all(worker_for(store, notifications))
    await run_notifier(store, notifications.gateway.notifications, ["sent"])
    [row] = await outbox.event_rows(store.engine)
    assert (row.attempts, row.last_error) == (3, None)
    assert len(hook.received) == 3
    assert hook.received[0] == hook.received[2]


async def test_refused_event_fails_without_retry(
    store: Store, notifications: Config, hook: RecordingWebhook
) -> None:
    """A 4xx answer (revoked webhook, bad payload) fails the event at once, with the reason."""
    hook.statuses = [404]
    await deliver(store)
    await process_all(worker_for(store, notifications))
    await run_notifier(store, notifications.gateway.notifications, ["failed"])
    [row] = await outbox.event_rows(store.engine)
    assert (row.attempts, row.last_error) == (1, "HTTP 404")
    assert len(hook.received) == 1


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_unreachable_webhook_fails_after_max_attempts(
    store: Store, tmp_path: Path, db_url: str
) -> None:
    """A webhook that refuses connections is retried up to max_attempts, then the event fails."""
    config = config_for(tmp_path, db_url, f"http://127.0.0.1:{closed_port()}/hook")
    await deliver(store)
    await process_all(worker_for(store, config))
    settings = config.gateway.notifications.model_copy(update={"max_attempts": 3})
    await run_notifier(store, settings, ["failed"])
    [row] = await outbox.event_rows(store.engine)
    assert row.attempts == 3
    assert "after 3 attempts" in row.last_error


async def test_claims_released_on_shutdown(store: Store, notifications: Config) -> None:
    """Events claimed but not posted go back to the queue, their attempt uncounted."""
    await deliver(store)
    await process_all(worker_for(store, notifications))
    [claimed] = await outbox.claim_events(store.engine, "gone", 10)
    assert claimed.attempts == 1 and await states(store) == ["sending"]
    assert await outbox.release_claims(store.engine, "gone") == 1
    [row] = await outbox.event_rows(store.engine)
    assert (row.state, row.attempts) == ("queued", 0)


async def test_events_of_a_gone_notifier_come_back(store: Store, notifications: Config) -> None:
    """A notifier of this host that died mid-post has its events queued again at start (the
    attempt kept); another host's are claimed again once the lease runs out."""
    for number in range(2):
        await deliver(store, subject=f"case {number}", message_id=f"<g{number}@customer.test>")
    await process_all(worker_for(store, notifications))
    [gone] = await outbox.claim_events(store.engine, f"{HOST}:{exited_pid()}:notifier", 1)
    [other] = await outbox.claim_events(store.engine, "elsewhere.test:1:notifier", 1)
    own = partial(claimer_alive, own=f"{HOST}:{os.getpid()}:notifier")
    assert await outbox.requeue_abandoned(store.engine, own) == 1
    assert await states(store) == ["queued", "sending"]
    [again] = await outbox.claim_events(store.engine, "w2", 5)
    assert (again.id, again.attempts) == (gone.id, 2)
    late = await outbox.claim_events(store.engine, "w3", 5, lease=timedelta(seconds=-1))
    assert {event.id: event.attempts for event in late} == {other.id: 2, gone.id: 3}


def test_backoff_doubles_caps_and_honours_retry_after() -> None:
    """Delays double per attempt from retry_delay, stop at an hour, and wait for Retry-After."""
    settings = NotificationsConfig(retry_delay=5.0)
    assert [backoff(settings, n, None) for n in (1, 2, 3, 4)] == [5.0, 10.0, 20.0, 40.0]
    assert backoff(settings, 30, None) == 3600.0
    assert backoff(settings, 1, 120.0) == 120.0


def test_slack_message_escapes_mail_text() -> None:
    """Subject and sender cannot inject Slack mentions or links: <, > and & are escaped."""
    payload = {
        "conversation_id": 7,
        "inbox_name": "Support",
        "subject": "<!channel> urgent & <http://evil.test|click>",
        "contact": {"email": "x@evil.test", "name": "<@U123>"},
        "assignee": "bob",
        "assignee_name": "Bob Test",
        "assigned_by": "alice",
        "assigned_by_name": "Alice Test",
    }
    text = slack_message(NotificationKind.ASSIGNED, payload)["text"]
    assert "<" not in text and ">" not in text
    assert escape("<!channel> & x") == "&lt;!channel&gt; &amp; x"
    assert text.startswith("Conversation #7 in *Support* assigned to Bob Test by Alice Test")
