"""Test helpers for routing: a team with paid, free, away and view-only users; worker runs."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from mailgateway.config import Config, WorkerConfig, load_config
from mailgateway.inbound.worker import InboundWorker
from mailgateway.store.repo import (
    Delivery,
    Envelope,
    Store,
    digest_of,
    inbound_queue,
    raw_messages,
)
from tests.support import make_message, toml_section, write_config

SETTINGS = WorkerConfig(batch_size=50, max_attempts=3, poll_interval=0.05, retry_delay=0.0)
ENVELOPE = Envelope(mail_from="john.doe@customer.test")

USERS = [
    # id, seat, role, teams
    ("alice", "paid", "member", ["support"]),
    ("bob", "paid", "member", ["support"]),
    ("carol", "paid", "member", ["support"]),
    ("dave", "free", "member", ["support"]),
    ("erin", "paid", "member", ["sales"]),
    ("root", "paid", "super_admin", []),
    ("auditor", "paid", "account_access", []),
]


def users_toml() -> str:
    """users.toml for the routing team."""
    blocks = [
        toml_section(
            "[users]",
            {
                "id": user,
                "email": f"{user}@acme.example",
                "first_name": user.title(),
                "last_name": "Test",
                "seat": seat,
                "role": role,
                "teams": teams,
            },
        )
        for user, seat, role, teams in USERS
    ]
    teams = [
        toml_section("[teams]", {"id": "support", "name": "Support"}),
        toml_section("[teams]", {"id": "sales", "name": "Sales"}),
    ]
    return "\n".join(blocks + teams)


def inbox_toml(name: str, sections: dict[str, dict[str, Any]], default: bool = False) -> str:
    """An inbox file with the given sections."""
    head = f'name = "{name}"\n' + ("default = true\n" if default else "") + "\n"
    return head + "\n".join(toml_section(key, values) for key, values in sections.items())


SUPPORT_ACCESS = {"mode": "specific", "teams": ["support"]}


def write_routing_config(
    directory: Path,
    db_url: str,
    *,
    webhook_url: str = "",
    support: dict[str, dict[str, Any]] | None = None,
    sales: dict[str, dict[str, Any]] | None = None,
    **smtp: Any,
) -> Path:
    """The standard test folder with the routing team; support round-robins over the support
    team with tickets by default, sales (everyone's) routes by contact owner."""
    write_config(directory, db_url, **smtp)
    (directory / "users.toml").write_text(users_toml())
    support_sections = support or {
        "access": SUPPORT_ACCESS,
        "automation": {"auto_assign": True, "assign_to": "specific", "teams": ["support"]},
        "tickets": {"enabled": True, "pipeline": "Support Pipeline", "stage": "New"},
    }
    sales_sections = sales or {
        "automation": {"auto_assign": True, "assign_to": "contact_owner"},
    }
    inboxes = directory / "inboxes"
    (inboxes / "support.toml").write_text(inbox_toml("Support", support_sections, default=True))
    (inboxes / "sales.toml").write_text(inbox_toml("Sales", sales_sections))
    if webhook_url:
        notifications = {"webhook_url": webhook_url, "retry_delay": 0.05, "timeout": 5.0}
        with (directory / "mailgateway.toml").open("a") as handle:
            handle.write(toml_section("notifications", notifications))
    return directory


def worker_for(store: Store, config: Config) -> InboundWorker:
    """A worker that routes with this configuration."""
    return InboundWorker(store, SETTINGS, id_domain="mx.test", config=config)


async def deliver(store: Store, inbox: str = "support", **message: Any) -> int:
    """Queue one message for an inbox as intake would; returns its queue id."""
    [queue_id] = await store.enqueue(make_message(**message), ENVELOPE, [Delivery(inbox, "x@y")])
    return queue_id


async def process_all(worker: InboundWorker) -> int:
    """Run the worker until the queue is empty; returns how many rows it handled."""
    total = 0
    while handled := await worker.run_once():
        total += handled
    return total


async def assignees(store: Store, inbox: str | None = None) -> Counter[str | None]:
    """How many conversations each user (None: nobody) has."""
    return Counter(row.assignee for row in await store.conversation_rows(inbox=inbox))


def loaded(directory: Path) -> Config:
    """The configuration in the folder."""
    return load_config(directory)


async def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    """Poll an async predicate until it holds."""
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.05)


async def enqueue_many(store: Store, count: int, inbox: str = "support") -> None:
    """Queue `count` distinct new messages in one transaction (fast set-up for big runs)."""
    async with store.engine.begin() as connection:
        for number in range(count):
            raw = make_message(subject=f"bulk {number}")
            stored = insert(raw_messages).values(digest=digest_of(raw), size=len(raw), data=raw)
            raw_id = (await connection.execute(stored.returning(raw_messages.c.id))).scalar_one()
            await connection.execute(
                insert(inbound_queue).values(
                    raw_id=raw_id, inbox=inbox, mail_from=ENVELOPE.mail_from, rcpt_to="x@y"
                )
            )
