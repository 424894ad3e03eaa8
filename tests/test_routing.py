"""Routing through the worker on both databases: fair round robin, availability, contact owner,
tickets, contact activity, disabled channels and the notification outbox."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from mailgateway.config import Config
from mailgateway.domain import Availability
from mailgateway.inbound import worker as worker_module
from mailgateway.store import outbox, routing
from mailgateway.store.db import create_engine
from mailgateway.store.repo import Store, upsert_contact
from mailgateway.views import conversation_view
from tests.routing_support import (
    SETTINGS,
    assignees,
    deliver,
    enqueue_many,
    loaded,
    process_all,
    worker_for,
    write_routing_config,
)

WEBHOOK = "http://127.0.0.1:9/hook"


@pytest.fixture
def config_path(tmp_path: Path, db_url: str) -> Path:
    """The routing team's configuration folder on the test database."""
    return write_routing_config(tmp_path / "config", db_url)


@pytest.fixture
def config(config_path: Path) -> Config:
    """The routing team's configuration."""
    return loaded(config_path)


async def set_away(store: Store, *users: str, status: Availability = Availability.AWAY) -> None:
    """Store users' availability as `users set-availability` does."""
    async with store.engine.begin() as connection:
        for user in users:
            await routing.set_availability(connection, user, status)


async def set_owner(store: Store, email: str, owner: str) -> None:
    """Give a contact an owner as `contacts set-owner` does."""
    async with store.engine.begin() as connection:
        await upsert_contact(connection, email, "")
        await routing.set_contact_owner(connection, email, owner)


async def views_of(store: Store) -> list[dict[str, Any]]:
    """Every conversation as `conversations list --json` shows it, oldest first."""
    rows = sorted(await store.conversation_rows(), key=lambda row: row.id)
    return [conversation_view(row) for row in rows]


async def test_1000_conversations_fair_through_the_worker(store: Store, config: Config) -> None:
    """1000 new conversations over 3 eligible users (plus a free seat) differ by at most 1."""
    await enqueue_many(store, 1000)
    assert await process_all(worker_for(store, config)) == 1000
    counts = await assignees(store)
    assert set(counts) == {"alice", "bob", "carol"}
    assert sum(counts.values()) == 1000
    assert max(counts.values()) - min(counts.values()) <= 1


async def test_away_and_free_seat_users_never_auto_assigned(store: Store, config: Config) -> None:
    """An away user and a free-seat user get nothing; back online, the user is in turn again."""
    await set_away(store, "bob")
    for number in range(6):
        await deliver(store, subject=f"m{number}")
    await process_all(worker_for(store, config))
    assert await assignees(store) == {"alice": 3, "carol": 3}
    await set_away(store, "bob", status=Availability.ONLINE)
    await deliver(store, subject="back 1")
    await deliver(store, subject="back 2")
    await process_all(worker_for(store, config))
    assert [c["assignee"] for c in await views_of(store)][-2:] == ["alice", "bob"]
    assert (await assignees(store))["dave"] == 0


async def test_round_robin_survives_a_restart(store: Store, config: Config, db_url: str) -> None:
    """The cursor is in the database: a new process continues where the last one stopped."""
    await deliver(store, subject="one")
    await deliver(store, subject="two")
    await process_all(worker_for(store, config))
    restarted = Store(create_engine(db_url))
    try:
        await deliver(restarted, subject="three")
        await process_all(worker_for(restarted, config))
    finally:
        await restarted.close()
    assert [c["assignee"] for c in await views_of(store)] == ["alice", "bob", "carol"]


async def test_two_workers_keep_the_round_robin_fair(
    store: Store, config: Config, db_url: str
) -> None:
    """Two workers on separate connection pools (as two processes) share one fair round robin:
    every row processed once, counts differ by at most 1."""
    await enqueue_many(store, 240)
    second = Store(create_engine(db_url))
    settings = SETTINGS.model_copy(update={"batch_size": 4})
    workers = [
        worker_module.InboundWorker(s, settings, id_domain="mx.test", config=config)
        for s in (store, second)
    ]
    workers[1].name += "-second"
    try:
        handled = await asyncio.gather(*(process_all(w) for w in workers))
    finally:
        await second.close()
    assert sum(handled) == 240 and min(handled) > 0
    counts = await assignees(store)
    assert sum(counts.values()) == 240
    assert max(counts.values()) - min(counts.values()) <= 1
    assert {row.state for row in await store.queue_rows()} == {"done"}


async def test_away_owner_falls_back_to_inbox_users(
    store: Store, config_path: Path, db_url: str
) -> None:
    """contact_owner: the owner gets the conversation while online; when away, it falls back to
    the inbox's users and teams."""
    sales = {"automation": {"auto_assign": True, "assign_to": "contact_owner", "users": ["bob"]}}
    config = loaded(write_routing_config(config_path, db_url, sales=sales))
    await set_owner(store, "john.doe@customer.test", "erin")
    await deliver(store, "sales", subject="owner online")
    await process_all(worker_for(store, config))
    await set_away(store, "erin")
    await deliver(store, "sales", subject="owner away")
    await process_all(worker_for(store, config))
    assert [(c["subject"], c["assignee"]) for c in await views_of(store)] == [
        ("owner online", "erin"),
        ("owner away", "bob"),
    ]


async def test_away_owner_without_inbox_users_stays_unassigned(
    store: Store, config: Config
) -> None:
    """contact_owner with no users or teams on the inbox: an away owner leaves it unassigned."""
    await set_owner(store, "john.doe@customer.test", "erin")
    await set_away(store, "erin")
    await deliver(store, "sales")
    await process_all(worker_for(store, config))
    assert await assignees(store) == {None: 1}


async def test_reply_keeps_assignee_and_turn(store: Store, config: Config) -> None:
    """A reply joins its conversation without reassigning it or using a turn."""
    await deliver(store, subject="first", message_id="<first@customer.test>")
    await process_all(worker_for(store, config))
    await deliver(store, subject="Re: first", In_Reply_To="<first@customer.test>")
    await deliver(store, subject="second")
    await process_all(worker_for(store, config))
    assert [(c["subject"], c["assignee"]) for c in await views_of(store)] == [
        ("first", "alice"),
        ("second", "bob"),
    ]


async def test_auto_submitted_never_assigned_nor_notified(
    store: Store, config_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message the worker flags auto_submitted opens a ticket but is neither assigned nor
    announced, and uses no turn."""
    config = loaded(write_routing_config(config_path, db_url, webhook_url=WEBHOOK))
    computed = worker_module.message_values

    def flagged(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return {**computed(*args, **kwargs), "auto_submitted": True}

    monkeypatch.setattr(worker_module, "message_values", flagged)
    await deliver(store, subject="Out of office")
    await process_all(worker_for(store, config))
    monkeypatch.undo()
    await deliver(store, subject="a person")
    await process_all(worker_for(store, config))
    auto, person = await views_of(store)
    assert auto["assignee"] is None and auto["ticket"] is not None
    assert person["assignee"] == "alice"
    events = await outbox.event_rows(store.engine)
    assert [e.payload["subject"] for e in events] == ["a person"]


async def test_ticket_follows_the_assignee(store: Store, config: Config) -> None:
    """A new conversation gets a ticket with the configured pipeline and stage; its owner is the
    assignee and follows a hand assignment."""
    from mailgateway.assignment import assign_by_hand

    await deliver(store)
    await process_all(worker_for(store, config))
    [conversation] = await views_of(store)
    ticket = conversation["ticket"]
    assert ticket["pipeline"] == "Support Pipeline" and ticket["stage"] == "New"
    assert ticket["owner"] == "alice" == conversation["assignee"]
    async with store.engine.begin() as connection:
        await assign_by_hand(connection, config, conversation["id"], "dave", "carol")
    [reassigned] = await views_of(store)
    assert reassigned["assignee"] == "dave" and reassigned["ticket"]["owner"] == "dave"


async def test_configured_ticket_owner_stays(store: Store, config_path: Path, db_url: str) -> None:
    """A ticket owner configured as a user id is the owner whoever is assigned."""
    support = {
        "access": {"mode": "specific", "teams": ["support"]},
        "automation": {"auto_assign": True, "teams": ["support"]},
        "tickets": {"enabled": True, "pipeline": "Escalations", "stage": "Triage", "owner": "bob"},
    }
    config = loaded(write_routing_config(config_path, db_url, support=support))
    await deliver(store)
    await deliver(store, "sales")
    await process_all(worker_for(store, config))
    support_view, sales_view = await views_of(store)
    assert support_view["assignee"] == "alice"
    assert support_view["ticket"]["owner"] == "bob"
    assert support_view["ticket"]["pipeline"] == "Escalations"
    assert sales_view["ticket"] is None


async def test_every_message_logged_on_its_contact(store: Store, config: Config) -> None:
    """Each stored message is on its contact's activity: new conversations and replies."""
    await deliver(store, subject="first", message_id="<first@customer.test>")
    await deliver(store, subject="Re: first", In_Reply_To="<first@customer.test>")
    await deliver(store, "sales", subject="other")
    await process_all(worker_for(store, config))
    async with store.engine.connect() as connection:
        [contact] = await routing.contact_rows(connection)
        activity = await routing.activity_rows(connection, contact.id)
    assert (contact.messages, contact.conversations) == (3, 2)
    assert [(a.inbox, a.subject) for a in activity] == [
        ("support", "first"),
        ("support", "Re: first"),
        ("sales", "other"),
    ]


async def test_disabled_channel_neither_shown_nor_logged(store: Store, config_path: Path) -> None:
    """Mail of a disabled channel is held (bytes kept), not shown, not logged; once the channel
    is enabled, `queue retry` brings it in."""
    config = loaded(config_path)
    queue_id = await deliver(store, "archive")
    await process_all(worker_for(store, config))
    [held] = await store.queue_rows(["held"])
    assert held.id == queue_id
    assert held.reason.startswith("channel disabled: fallback_email archive@")
    assert await store.conversation_rows() == []
    async with store.engine.connect() as connection:
        assert await routing.contact_rows(connection) == []
    (config_path / "inboxes" / "archive.toml").write_text('name = "Archive"\n')
    assert await store.retry(queue_id)
    await process_all(worker_for(store, loaded(config_path)))
    assert [c["inbox"] for c in await views_of(store)] == ["archive"]


async def test_outbox_one_event_per_new_conversation_and_assignment(
    store: Store, config_path: Path, db_url: str
) -> None:
    """With a webhook, each new conversation queues one event and each hand assignment one
    more; replies and re-assigning the same user queue none."""
    from mailgateway.assignment import assign_by_hand

    config = loaded(write_routing_config(config_path, db_url, webhook_url=WEBHOOK))
    await deliver(store, subject="one", message_id="<one@customer.test>")
    await deliver(store, subject="two")
    await deliver(store, subject="Re: one", In_Reply_To="<one@customer.test>")
    await process_all(worker_for(store, config))
    first = (await views_of(store))[0]["id"]
    async with store.engine.begin() as connection:
        await assign_by_hand(connection, config, first, "carol", "alice")
    async with store.engine.begin() as connection:
        await assign_by_hand(connection, config, first, "carol", "alice")
    events = await outbox.event_rows(store.engine)
    assert [(e.kind, e.payload["subject"], e.payload["assignee"]) for e in events] == [
        ("conversation.new", "one", "alice"),
        ("conversation.new", "two", "bob"),
        ("conversation.assigned", "one", "carol"),
    ]
    assert {e.state for e in events} == {"queued"}


async def test_no_webhook_no_outbox(store: Store, config: Config) -> None:
    """Without a webhook URL, nothing is queued for notification."""
    await deliver(store)
    await process_all(worker_for(store, config))
    assert len(await store.conversation_rows()) == 1
    assert await outbox.event_rows(store.engine) == []
