"""The worker's batch path (several messages stored with one statement per step) on both
databases: it stores exactly what storing the messages one by one stores, also when messages of
one batch depend on each other (a reply to a message of the same batch, two messages of one new
contact, copies, reused Message-IDs, replies joining or reopening one conversation, bounces)."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from mailgateway.config import Config
from mailgateway.inbound.worker import InboundWorker, store_message, store_messages
from mailgateway.store import repo, routing
from mailgateway.store.db import create_engine
from mailgateway.store.outbound import outbound_queue
from mailgateway.store.outbox import notification_outbox
from mailgateway.store.repo import ClaimedItem, Delivery, Envelope, Store
from tests.conftest import _migrate, _pg_execute, pg_url
from tests.routing_support import SETTINGS, loaded, write_routing_config
from tests.support import JOHN, OURS, SUPPORT, make_message, our_reply

RULES = Path(__file__).parent / "fixtures" / "threading"
SALES = "sales@acme.inbox.example.net"
TABLES = {
    "contacts": repo.contacts,
    "conversations": repo.conversations,
    "messages": repo.messages,
    "contact_activity": routing.contact_activity,
    "tickets": repo.tickets,
    "assignment_cursors": routing.assignment_cursors,
    "notification_outbox": notification_outbox,
    "inbound_queue": repo.inbound_queue,
    "outbound_queue": outbound_queue,
}
# Columns that differ between two runs whatever was decided: clocks and random tokens.
VARYING = {"reply_token", "claimed_by"}


@pytest.fixture
def twin_urls(db_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """Two empty, migrated databases of the test's kind."""
    if db_url.startswith("sqlite"):
        other = f"sqlite+aiosqlite:///{tmp_path / 'twin' / 'mailgateway.db'}"
        asyncio.run(_migrate(other))
        yield [db_url, other]
        return
    name = f"mg_test_{uuid.uuid4().hex[:12]}"
    template = request.getfixturevalue("pg_template")
    asyncio.run(_pg_execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    yield [db_url, pg_url(name)]
    asyncio.run(_pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def config(tmp_path: Path, db_url: str) -> Config:
    """Support round-robins with tickets, sales goes by contact owner; webhook events on."""
    return loaded(write_routing_config(tmp_path / "config", db_url, webhook_url="http://x/hook"))


def rule(name: str) -> bytes:
    """A threading fixture's bytes."""
    return (RULES / f"{name}.eml").read_bytes()


def mail(sender: str, subject: str, message_id: str, body: str = "Hi.\n", **more: str) -> bytes:
    """A message with the given author fields (extra headers as keywords: In_Reply_To=...)."""
    return make_message(subject=subject, sender=sender, message_id=message_id, body=body, **more)


NEWBIE = "newbie@customer.test"
KATE = "kate@customer.test"
FIRST = mail(NEWBIE, "Hello there", "<n1@customer.test>")
# (inbox, bytes, envelope sender): every way a message of a batch can depend on an earlier one.
BATCH: list[tuple[str, bytes, str]] = [
    ("support", FIRST, NEWBIE),  # a new contact without a name
    (  # another contact's reply to it, copying the contact: joins by In-Reply-To
        "support",
        mail(
            "bea@customer.test",
            "Re: Hello",
            "<b1@c.test>",
            In_Reply_To="<n1@customer.test>",
            Cc=NEWBIE,
        ),
        "bea@customer.test",
    ),
    (  # its reply, naming the contact: threads to it by In-Reply-To
        "support",
        mail(
            f"Newbie Name <{NEWBIE}>",
            "Re: Hello there",
            "<n2@c.test>",
            In_Reply_To="<n1@customer.test>",
        ),
        NEWBIE,
    ),
    ("support", mail(NEWBIE, "Hello there", "<n3@customer.test>", "Again.\n"), NEWBIE),  # subject
    ("support", b"Received: from elsewhere\r\n" + FIRST, NEWBIE),  # a copy: same content
    (
        "support",
        mail(NEWBIE, "Other", "<n1@customer.test>", "Not the same.\n"),
        NEWBIE,
    ),  # reused id
    ("support", rule("rules/reply-in-reply-to"), JOHN),  # joins John's conversation
    ("support", rule("rules/reply-colleague-cc"), "mary@customer.test"),  # joins it too
    ("support", rule("rules/reply-odp-same-contact"), JOHN),  # joins it by subject
    ("support", rule("loops/ooo-gmail"), JOHN),  # an auto-reply to our reply in it
    ("support", rule("bounces/dsn-postfix"), ""),  # a bounce of our reply
    ("support", mail(SUPPORT, "Re: Printer on fire", OURS, "Looped.\n"), SUPPORT),  # ours, back
    ("support", mail(KATE, "Re: Old", "<k2@c.test>", In_Reply_To="<old@customer.test>"), KATE),
    ("support", mail(KATE, "Old", "<k3@c.test>", "Still?\n"), KATE),  # reopened: by subject
    (  # a colleague's reply to Kate's, now open again: joins, reopens nothing
        "support",
        mail(
            "lee@customer.test",
            "Re: Old",
            "<l1@c.test>",
            In_Reply_To="<old@customer.test>",
            Cc=KATE,
        ),
        "lee@customer.test",
    ),
    (  # a new participant of John's conversation...
        "support",
        mail(
            "pat@customer.test",
            "Re: Printer",
            "<p1@c.test>",
            In_Reply_To="<original@customer.test>",
            Cc=JOHN,
        ),
        "pat@customer.test",
    ),
    (  # ...whose next reply joins it without copying John
        "support",
        mail(
            "pat@customer.test",
            "Re: Printer",
            "<p2@c.test>",
            "More.\n",
            References="<original@customer.test>",
        ),
        "pat@customer.test",
    ),
    ("support", mail("stranger@else.test", "Printer on fire", "<s1@else.test>"), "s@else.test"),
    ("sales", mail("Sam <sam@customer.test>", "Quote", "<q1@customer.test>"), "sam@c.test"),
    ("sales", FIRST, NEWBIE),  # the same message in another inbox is stored there too
    ("support", mail("", "No sender", "<anon@c.test>"), ""),
    ("support", mail("Ann <ann@else.test>", "One", "<a1@else.test>"), "ann@else.test"),
    ("support", mail("ann@else.test", "Two", "<a2@else.test>"), "ann@else.test"),
]


async def prepare(store: Store, worker: InboundWorker) -> ClaimedItem:
    """What is stored before the batch: John's conversation with our reply in it, Kate's
    closed one, Sam owned by erin, and a message whose queue row comes again (an attempt that
    committed but whose bookkeeping was lost); returns that row."""
    kate = mail(KATE, "Old", "<old@customer.test>")
    for raw, sender in (
        (rule("rules/original"), JOHN),
        (kate, KATE),
        (mail(JOHN, "Done", "<d@c.test>"), JOHN),
    ):
        await store.enqueue(raw, Envelope(mail_from=sender), [Delivery("support", SUPPORT)])
    john, closed, again = await store.claim("setup", 10, 3)
    outcomes = [await worker.process(item) for item in (john, closed, again)]
    john_id, closed_id = (outcome.conversation_id for outcome in outcomes[:2] if outcome)
    async with store.transaction() as connection:
        conversations = repo.conversations
        await connection.execute(
            update(conversations).where(conversations.c.id == closed_id).values(status="closed")
        )
        await repo.insert_message(connection, our_reply(john_id))
        await repo.upsert_contact(connection, "sam@customer.test", "")
        await routing.set_contact_owner(connection, "sam@customer.test", "erin")
    return again


async def run_batch(url: str, config: Config, order: Sequence[int], batched: bool) -> Any:
    """Prepare a database, then store the batch (in `order`, the re-presented row last) in one
    transaction, all at once or one by one; the outcomes and every table afterwards."""
    store = Store(create_engine(url))
    try:
        worker = InboundWorker(store, SETTINGS, id_domain="mx.test", config=config)
        again = await prepare(store, worker)
        for inbox, raw, sender in BATCH:
            rcpt = SUPPORT if inbox == "support" else SALES
            await store.enqueue(raw, Envelope(mail_from=sender), [Delivery(inbox, rcpt)])
        claimed = await store.claim("t", 100, 3)
        items = [claimed[index] for index in order] + [again]
        analyses = worker.analyse_all(items)
        origins = worker.origins_of(items, analyses)
        directory = worker.directory
        async with store.transaction() as connection:
            if batched:
                outcomes = await store_messages(
                    connection, items, analyses, origins, directory, config
                )
            else:
                outcomes = [
                    await store_message(connection, item, analysis, directory, config, origin)
                    for item, analysis, origin in zip(items, analyses, origins, strict=True)
                ]
        return outcomes, await snapshot(store)
    finally:
        await store.close()


async def snapshot(store: Store) -> dict[str, list[dict[str, Any]]]:
    """Every row of the tables the worker writes, without clocks and random tokens."""
    found = {}
    async with store.engine.connect() as connection:
        for name, table in TABLES.items():
            rows = await connection.execute(select(table).order_by(*table.primary_key.columns))
            found[name] = [
                {
                    k: v
                    for k, v in row._mapping.items()
                    if k not in VARYING and not k.endswith("_at")
                }
                for row in rows
            ]
    # PostgreSQL spends a contact id on each upsert that finds the contact: compare by rank.
    rank = {row["id"]: number for number, row in enumerate(found["contacts"])}
    for name, column in (("contacts", "id"), ("conversations", "contact_id"), *CONTACT_OF):
        for row in found[name]:
            row[column] = rank.get(row[column])
    return found


CONTACT_OF = [("contact_activity", "contact_id")]
ORDERS = {
    "as delivered": list(range(len(BATCH))),
    "reversed": list(reversed(range(len(BATCH)))),
    **{
        f"shuffled {seed}": random.Random(seed).sample(range(len(BATCH)), len(BATCH))
        for seed in (1, 2)
    },
}


@pytest.mark.parametrize("order", ORDERS.values(), ids=ORDERS.keys())
async def test_batch_stores_what_one_by_one_stores(
    twin_urls: list[str], config: Config, order: list[int]
) -> None:
    """A batch whose messages depend on each other in every way is stored exactly as storing
    its messages one by one stores it: same outcomes, same rows in every table."""
    one_by_one = await run_batch(twin_urls[0], config, order, batched=False)
    together = await run_batch(twin_urls[1], config, order, batched=True)
    assert together[0] == one_by_one[0]
    for name in TABLES:
        assert together[1][name] == one_by_one[1][name], name
    reasons = {outcome.thread_reason for outcome in together[0]}
    assert {"new", "in_reply_to", "subject", "references"} <= reasons
    assert any(outcome.duplicate for outcome in together[0])


async def batch_of(store: Store, *raws: bytes) -> tuple[InboundWorker, list[ClaimedItem]]:
    """Queue messages for support and claim them all; a worker without configuration."""
    for raw in raws:
        await store.enqueue(raw, Envelope(mail_from=NEWBIE), [Delivery("support", SUPPORT)])
    worker = InboundWorker(store, SETTINGS, id_domain="mx.test")
    return worker, await store.claim("t", 100, 3)


async def stored_messages(store: Store) -> list[Any]:
    """Every stored message, oldest first."""
    async with store.engine.connect() as connection:
        return list(await connection.execute(select(repo.messages).order_by(repo.messages.c.id)))


async def test_reply_in_the_same_batch_joins_its_message(store: Store) -> None:
    """A message and a reply to it, stored in one batch: the reply joins its conversation."""
    reply = mail("bea@customer.test", "Re: Hello", "<b1@c.test>", In_Reply_To="<n1@customer.test>")
    worker, items = await batch_of(store, FIRST, reply.replace(b"bea@", b"newbie@"))
    assert await worker.process_together(items)
    first, second = await stored_messages(store)
    assert second.conversation_id == first.conversation_id
    assert (second.thread_reason, second.thread_detail) == (
        "in_reply_to",
        "in_reply_to <n1@customer.test>",
    )


async def test_two_messages_of_a_new_contact_make_one_contact(store: Store) -> None:
    """Two messages of one new contact in one batch make one contact (named by the first
    message that gives a name), both logged on it."""
    worker, items = await batch_of(
        store,
        mail(NEWBIE, "One", "<o1@c.test>"),
        mail(f"Newbie Name <{NEWBIE}>", "Two", "<o2@c.test>"),
        mail(f"Other Name <{NEWBIE}>", "Three", "<o3@c.test>"),
    )
    assert await worker.process_together(items)
    async with store.engine.connect() as connection:
        [contact] = await routing.contact_rows(connection)
    assert (contact.email, contact.name, contact.messages) == (NEWBIE, "Newbie Name", 3)


async def test_copy_in_the_same_batch_is_stored_once(store: Store) -> None:
    """The same message twice in one batch (another path, other trace fields) is stored once;
    the copy is answered as a duplicate of it, in the same conversation."""
    worker, items = await batch_of(store, FIRST, b"Received: from elsewhere\r\n" + FIRST)
    assert await worker.process_together(items)
    [stored] = await stored_messages(store)
    assert stored.queue_id == items[0].id
    assert {row.state for row in await store.queue_rows()} == {"done"}
