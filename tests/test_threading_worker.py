"""Threading, auto-replies, bounces and duplicates through the worker and a real database (both
SQLite and PostgreSQL): the store's lookups feed the pure stages, decisions are recorded."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from mailgateway.config import WorkerConfig
from mailgateway.domain import ConversationStatus, DeliveryStatus
from mailgateway.inbound.worker import InboundWorker, Outcome
from mailgateway.store import repo
from mailgateway.store import threads as threads_store
from mailgateway.store.repo import Delivery, Envelope, Store
from mailgateway.store.schema import utcnow
from tests.support import JOHN, OURS, SUPPORT, loaded, our_reply

FIXTURES = Path(__file__).parent / "fixtures" / "threading"
SETTINGS = WorkerConfig(batch_size=10, max_attempts=3, poll_interval=0.1, retry_delay=0.0)
TOKEN = "0123456789abcdef0123456789abcdef"


def fixture(path: str) -> bytes:
    """The bytes of a threading fixture, e.g. 'rules/original'."""
    return (FIXTURES / f"{path}.eml").read_bytes()


async def deliver(
    store: Store,
    raw: bytes,
    *,
    inbox: str = "support",
    rcpt: str = SUPPORT,
    mail_from: str = JOHN,
    source: str = "smtp",
) -> None:
    """Queue raw bytes as intake (or a later IMAP poller) would."""
    await store.enqueue(raw, Envelope(mail_from=mail_from, source=source), [Delivery(inbox, rcpt)])


async def process(store: Store, config_dir: Path) -> list[Outcome]:
    """Claim every due row and process it with a configured worker; the outcomes, in order."""
    worker = InboundWorker(store, SETTINGS, id_domain="mx.test", config=loaded(config_dir))
    outcomes = [await worker.process(item) for item in await store.claim("t", 100, 3)]
    assert all(outcome is not None for outcome in outcomes)
    return [outcome for outcome in outcomes if outcome is not None]


async def messages(store: Store) -> list[Any]:
    """Every stored message, oldest first."""
    rows = await store.conversation_rows()
    found = [m for row in rows for m in await store.message_rows(row.id)]
    return sorted(found, key=lambda m: m.id)


async def conversation(store: Store, conversation_id: int) -> Any:
    """One conversation row."""
    [row] = await store.conversation_rows(ids=[conversation_id])
    return row


async def start(store: Store, config_dir: Path) -> Outcome:
    """John's first message, processed: conversation of 'Printer on fire'."""
    await deliver(store, fixture("rules/original"))
    [outcome] = await process(store, config_dir)
    return outcome


async def send_ours(store: Store, conversation_id: int) -> None:
    """Store one of our outbound replies to John (as the outbound queue will)."""
    async with store.engine.begin() as connection:
        await repo.insert_message(connection, our_reply(conversation_id))


async def test_leaked_reference_starts_new_conversation(store: Store, config_dir: Path) -> None:
    """A stranger quoting a stored Message-ID gets a new conversation, with the reason; John's
    colleague who copies John joins."""
    first = await start(store, config_dir)
    await deliver(store, fixture("rules/reply-leaked-reference"), mail_from="mallory@evil.test")
    await deliver(store, fixture("rules/reply-colleague-cc"), mail_from="mary@customer.test")
    leaked, colleague = await process(store, config_dir)
    assert leaked.conversation_id != first.conversation_id
    assert (colleague.conversation_id, colleague.thread_reason) == (
        first.conversation_id,
        "in_reply_to",
    )
    stored = await messages(store)
    assert "references not followed: <original@customer.test>" in stored[1].thread_detail
    assert stored[2].thread_detail == "in_reply_to <original@customer.test>"


async def test_subject_rule_contact(store: Store, config_dir: Path) -> None:
    """'Odp:' with stripped headers joins John's open conversation; from another contact it
    starts a new one."""
    first = await start(store, config_dir)
    await deliver(store, fixture("rules/reply-odp-same-contact"))
    await deliver(store, fixture("rules/reply-odp-other-contact"), mail_from="eve@other.test")
    same, other = await process(store, config_dir)
    assert (same.conversation_id, same.thread_reason) == (first.conversation_id, "subject")
    assert other.thread_reason == "new"


@pytest.mark.parametrize(
    "change",
    [{"updated_at": utcnow() - timedelta(days=15)}, {"status": ConversationStatus.CLOSED}],
    ids=["idle-15-days", "closed"],
)
async def test_subject_rule_needs_open_recent_conversation(
    store: Store, config_dir: Path, change: dict[str, Any]
) -> None:
    """The subject rule does not join a conversation idle for over 14 days, or a closed one."""
    first = await start(store, config_dir)
    async with store.engine.begin() as connection:
        await connection.execute(
            update(repo.conversations)
            .where(repo.conversations.c.id == first.conversation_id)
            .values(**change)
        )
    await deliver(store, fixture("rules/reply-odp-same-contact"))
    [late] = await process(store, config_dir)
    assert late.thread_reason == "new"
    assert late.conversation_id != first.conversation_id


async def test_reply_token_in_envelope_or_header(store: Store, config_dir: Path) -> None:
    """A reply to the reply-token address joins its conversation, whether the token is in the
    envelope recipient or only in the To header; a token of another inbox does not."""
    first = await start(store, config_dir)
    async with store.engine.begin() as connection:
        await connection.execute(
            update(repo.conversations)
            .where(repo.conversations.c.id == first.conversation_id)
            .values(reply_token=TOKEN)
        )
    raw = fixture("rules/reply-token")
    await deliver(store, raw, rcpt=f"support+{TOKEN}@acme.inbox.example.net")
    await deliver(store, raw.replace(b"Replying", b"Again replying"))
    await deliver(store, raw, inbox="sales", rcpt=f"sales+{TOKEN}@acme.inbox.example.net")
    envelope, header, sales = await process(store, config_dir)
    assert (envelope.conversation_id, envelope.thread_reason) == (
        first.conversation_id,
        "reply_token",
    )
    assert (header.conversation_id, header.thread_reason) == (first.conversation_id, "reply_token")
    assert sales.thread_reason == "new"


async def test_new_tokens_are_lower_case_and_unique(store: Store, config_dir: Path) -> None:
    """Conversations get distinct 32-character lower-case tokens (intake lower-cases addresses)."""
    await deliver(store, fixture("rules/original"))
    await deliver(store, fixture("rules/reply-odp-other-contact"), mail_from="eve@other.test")
    await process(store, config_dir)
    tokens = [row.reply_token for row in await store.conversation_rows()]
    assert len(set(tokens)) == 2
    assert all(len(t) == 32 and t == t.lower() for t in tokens)


async def test_auto_reply_never_reopens_person_does(store: Store, config_dir: Path) -> None:
    """An out-of-office to a closed conversation is stored there, flagged, and leaves it closed
    and untouched; John's own reply reopens it."""
    first = await start(store, config_dir)
    await send_ours(store, first.conversation_id)
    await store.set_status(first.conversation_id, ConversationStatus.CLOSED)
    before = await conversation(store, first.conversation_id)
    await deliver(store, fixture("loops/ooo-gmail"))
    [ooo] = await process(store, config_dir)
    assert (ooo.conversation_id, ooo.auto_submitted, ooo.reopened) == (
        first.conversation_id,
        True,
        False,
    )
    after = await conversation(store, first.conversation_id)
    assert (after.status, after.updated_at) == ("closed", before.updated_at)
    await deliver(store, fixture("rules/reply-in-reply-to"))
    [person] = await process(store, config_dir)
    assert (person.auto_submitted, person.reopened) == (False, True)
    assert (await conversation(store, first.conversation_id)).status == "open"
    stored = await messages(store)
    assert stored[-2].auto_reasons == ["auto-submitted:auto-replied"]
    assert stored[-1].auto_reasons == []


async def test_our_message_coming_back_is_a_loop(store: Store, config_dir: Path) -> None:
    """A message bearing one of our outbound Message-IDs is flagged as a loop."""
    first = await start(store, config_dir)
    await send_ours(store, first.conversation_id)
    raw = fixture("rules/reply-in-reply-to").replace(b"<reply-irt@customer.test>", OURS.encode())
    await deliver(store, raw)
    [outcome] = await process(store, config_dir)
    assert outcome.auto_submitted
    assert "loop:own-message" in (await messages(store))[-1].auto_reasons


@pytest.mark.parametrize("name", ["dsn-postfix", "dsn-gmail", "bounce-qmail", "bounce-exim"])
async def test_bounce_attached_and_our_message_failed(
    store: Store, config_dir: Path, name: str
) -> None:
    """A bounce of our reply joins its conversation (flagged, no reopen) and marks our message
    failed with the remote diagnostic."""
    first = await start(store, config_dir)
    await send_ours(store, first.conversation_id)
    await deliver(store, fixture(f"bounces/{name}"), mail_from="")
    [outcome] = await process(store, config_dir)
    assert (outcome.conversation_id, outcome.auto_submitted) == (first.conversation_id, True)
    ours, bounce = [m for m in await messages(store) if m.direction == "outbound" or m.bounce]
    assert ours.delivery_status == "failed"
    assert ours.delivery_error.startswith(f"{JOHN}: ")
    assert bounce.bounce["original_message_id"] == OURS
    assert bounce.thread_detail == "bounce of a stored message"


async def test_bounce_for_a_stranger_is_not_attached(store: Store, config_dir: Path) -> None:
    """A 'bounce' naming our Message-ID but a recipient who never took part is not attached
    and marks nothing (forged reports cannot reach into a conversation)."""
    first = await start(store, config_dir)
    await send_ours(store, first.conversation_id)
    raw = fixture("bounces/bounce-qmail").replace(b"<john.doe@customer.test>:", b"<x@evil.test>:")
    await deliver(store, raw, mail_from="")
    [outcome] = await process(store, config_dir)
    assert outcome.conversation_id != first.conversation_id
    ours = [m for m in await messages(store) if m.direction == "outbound"]
    assert ours[0].delivery_status is None


async def test_record_bounce_keeps_failure_and_lines(store: Store, config_dir: Path) -> None:
    """record_bounce is idempotent per recipient, appends others, and a later delay never
    hides a failure; unknown Message-IDs mark nothing."""
    first = await start(store, config_dir)
    await send_ours(store, first.conversation_id)
    async with store.engine.begin() as connection:
        for recipient in (JOHN, JOHN, "mary@customer.test"):
            marked = await threads_store.record_bounce(
                connection, "support", OURS, recipient, "550 5.1.1 no such user"
            )
            assert len(marked) == 1
        await threads_store.record_bounce(
            connection, "support", OURS, JOHN, "4.4.1 timeout", status=DeliveryStatus.DELAYED
        )
        assert await threads_store.record_bounce(connection, "support", "<x@y>", JOHN, "") == []
        assert await threads_store.record_bounce(connection, "sales", OURS, JOHN, "") == []
    [ours] = [m for m in await messages(store) if m.direction == "outbound"]
    assert ours.delivery_status == "failed"
    assert ours.delivery_error.splitlines() == [
        f"{JOHN}: 550 5.1.1 no such user",
        "mary@customer.test: 550 5.1.1 no such user",
        f"{JOHN}: 4.4.1 timeout",
    ]


async def test_delay_marks_delayed(store: Store, config_dir: Path) -> None:
    """A delay report attaches and marks our message delayed (not failed)."""
    first = await start(store, config_dir)
    await send_ours(store, first.conversation_id)
    await deliver(store, fixture("bounces/dsn-delayed"), mail_from="")
    await process(store, config_dir)
    [ours] = [m for m in await messages(store) if m.direction == "outbound"]
    assert ours.delivery_status == "delayed"


async def test_same_message_by_two_paths_stored_once(store: Store, config_dir: Path) -> None:
    """The same message (same Message-ID and content) by SMTP and again by another path with
    trace headers added is stored once; both queue rows are done."""
    raw = fixture("rules/original")
    await deliver(store, raw)
    imap_copy = b"Received: from mx by imap; Thu, 26 Nov 2026 11:00:02 +0000\r\n" + raw
    await deliver(store, imap_copy.replace(b"\r\n", b"\n"), source="imap")
    first, again = await process(store, config_dir)
    assert (first.duplicate, again.duplicate) == (False, True)
    assert (again.conversation_id, again.message_id) == (first.conversation_id, first.message_id)
    assert len(await messages(store)) == 1
    assert {row.state for row in await store.queue_rows()} == {"done"}


async def test_same_message_in_two_inboxes_stored_in_each(store: Store, config_dir: Path) -> None:
    """Duplicates are per inbox: the same message for two inboxes is stored in both."""
    raw = fixture("rules/original")
    await deliver(store, raw)
    await deliver(store, b"X-Extra: 1\r\n" + raw, inbox="sales")
    outcomes = await process(store, config_dir)
    assert [o.duplicate for o in outcomes] == [False, False]
    assert len(await messages(store)) == 2


async def test_concurrent_duplicate_resolved(store: Store, config_dir: Path, db_url: str) -> None:
    """When another worker commits the same message while this one is deciding, the unique
    (inbox, content hash) index makes this one record a duplicate instead of a second copy."""
    if db_url.startswith("sqlite"):
        pytest.skip("SQLite serialises writers (BEGIN IMMEDIATE): this race cannot happen there")
    first = await start(store, config_dir)
    [stored] = await messages(store)
    await deliver(store, b"X-Copy: 2\r\n" + fixture("rules/original"))
    [item] = await store.claim("t", 10, 3)
    worker = InboundWorker(store, SETTINGS, id_domain="mx.test", config=loaded(config_dir))
    table, row = repo.messages, repo.messages.c.id == stored.id
    async with store.engine.begin() as connection:  # committed: the copy is not found by hash
        await connection.execute(update(table).where(row).values(content_hash=None))
    async with store.engine.connect() as other:  # the other worker, not yet committed
        await other.execute(update(table).where(row).values(content_hash=stored.content_hash))
        task = asyncio.create_task(worker.process(item))
        await asyncio.sleep(0.5)
        assert not task.done()  # waiting on the unique index
        await other.commit()
    outcome = await task
    assert outcome is not None and outcome.duplicate
    assert outcome.conversation_id == first.conversation_id
    assert len(await messages(store)) == 1


async def test_html_only_mail_gets_text(store: Store, config_dir: Path) -> None:
    """A message with only an HTML body is stored with text derived from it."""
    raw = (
        b"From: John Doe <john.doe@customer.test>\r\nSubject: html\r\n"
        b"Content-Type: text/html; charset=iso-8859-1\r\n\r\n"
        b"<html><body><p>Gr\xfc\xdfe,</p><p>the printer&nbsp;is <b>on fire</b>.</p></body></html>"
    )
    await deliver(store, raw)
    await process(store, config_dir)
    [message] = await messages(store)
    assert message.text == "Grüße,\n\nthe printer is on fire."
    assert message.html.startswith("<html>")


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        (b"=?koi8-r?B?8NLJztTF0iDHz9LJ1A==?=", "Принтер горит"),
        (b"=?iso-2022-jp?B?GyRCJVclaiVzJT8hPBsoQg==?=", "プリンター"),
        (b"=?windows-1251?Q?=CF=F0=E8=ED=F2=E5=F0?=", "Принтер"),
        (b"=?x-unknown-42?Q?caf=C3=A9?=", "café"),
        (b"caf\xe9 cr\xe8me", "café crème"),
        (b"caf\xc3\xa9", "café"),
        (b"=?utf-8?B?!!!?=", "\ufffd"),
    ],
    ids=["koi8-r", "iso-2022-jp", "windows-1251", "unknown", "latin-1", "raw-utf-8", "broken"],
)
async def test_charsets_never_fail(
    store: Store, config_dir: Path, subject: bytes, expected: str
) -> None:
    """RFC 2047 words in any charset Python knows, unknown charsets and raw 8-bit headers are
    decoded (with a fallback) and stored; nothing is held."""
    await deliver(store, b"From: a@customer.test\r\nSubject: " + subject + b"\r\n\r\nbody\r\n")
    await process(store, config_dir)
    [message] = await messages(store)
    assert message.subject == expected
    assert {row.state for row in await store.queue_rows()} == {"done"}


@pytest.mark.parametrize("name", ["no-message-id", "malformed-message-id"])
async def test_missing_or_malformed_message_id_generated(
    store: Store, config_dir: Path, name: str
) -> None:
    """Without a usable Message-ID, one of ours is generated and marked as such."""
    await deliver(store, fixture(f"rules/{name}"))
    await process(store, config_dir)
    [message] = await messages(store)
    assert message.message_id_generated
    assert message.message_id.endswith("@mx.test>")


async def test_reload_updates_agents_and_addresses(store: Store, config_dir: Path) -> None:
    """A reloaded configuration gives the worker the new users and inbox addresses."""
    worker = InboundWorker(store, SETTINGS, id_domain="mx.test", config=loaded(config_dir))
    assert worker.directory.agents == {"alice@acme.example", "bob@acme.example"}
    assert worker.directory.inbox_addresses["support"] == SUPPORT
    users = config_dir / "users.toml"
    users.write_text(users.read_text().replace("bob@acme.example", "robert@acme.example"))
    worker.reconfigure(loaded(config_dir))
    assert worker.directory.agents == {"alice@acme.example", "robert@acme.example"}
