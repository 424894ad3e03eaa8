"""The inbound worker over a real database: contacts, conversations, messages, holds, retries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mailgateway.config import WorkerConfig, load_config
from mailgateway.inbound.worker import InboundWorker
from mailgateway.store.repo import Delivery, Envelope, Store
from mailgateway.views import conversation_detail
from tests.support import make_message

ENVELOPE = Envelope(mail_from="john.doe@customer.test")
SETTINGS = WorkerConfig(batch_size=10, max_attempts=3, poll_interval=0.1, retry_delay=0.0)


def worker_for(store: Store) -> InboundWorker:
    """A worker on the store with test settings."""
    return InboundWorker(store, SETTINGS, id_domain="mx.test")


async def deliver(store: Store, raw: bytes, *inboxes: str) -> list[int]:
    """Queue raw bytes for inboxes as intake would."""
    targets = inboxes or ("support",)
    return await store.enqueue(raw, ENVELOPE, [Delivery(i, f"{i}@x.test") for i in targets])


async def details(store: Store) -> list[dict[str, Any]]:
    """Every conversation with its messages, oldest conversation first."""
    rows = sorted(await store.conversation_rows(), key=lambda row: row.id)
    return [conversation_detail(row, await store.message_rows(row.id)) for row in rows]


async def test_message_becomes_conversation(store: Store) -> None:
    """A queued message becomes a contact, an open conversation and a message; the row is done."""
    await deliver(store, make_message())
    assert await worker_for(store).run_once() == 1
    [conversation] = await details(store)
    assert conversation["inbox"] == "support"
    assert conversation["status"] == "open"
    assert conversation["subject"] == "Printer on fire"
    assert conversation["contact"] == {"email": "john.doe@customer.test", "name": "John Doe"}
    [message] = conversation["messages"]
    assert message["direction"] == "inbound"
    assert message["thread_reason"] == "new"
    assert message["attribution"] == "sender"
    assert "printer is on fire" in message["text"]
    assert [row.state for row in await store.queue_rows()] == ["done"]


async def test_reply_joins_by_in_reply_to_and_references(store: Store) -> None:
    """A reply naming a stored Message-ID joins that conversation, with the rule recorded."""
    await deliver(store, make_message(message_id="<first@customer.test>"))
    await deliver(
        store,
        make_message(
            subject="Re: Printer",
            message_id="<second@customer.test>",
            In_Reply_To="<first@customer.test>",
        ),
    )
    await deliver(
        store,
        make_message(
            subject="Re: Re: Printer",
            message_id="<third@c.test>",
            References="<unknown@x.test> <second@customer.test>",
        ),
    )
    await worker_for(store).run_once()
    [conversation] = await details(store)
    reasons = [m["thread_reason"] for m in conversation["messages"]]
    assert reasons == ["new", "in_reply_to", "references"]


async def test_unrelated_message_starts_new_conversation(store: Store) -> None:
    """A message with no known references starts its own conversation."""
    await deliver(store, make_message(subject="one"))
    await deliver(store, make_message(subject="two", In_Reply_To="<nowhere@x.test>"))
    await worker_for(store).run_once()
    assert [c["subject"] for c in await details(store)] == ["one", "two"]


async def test_one_message_two_inboxes_two_conversations(store: Store) -> None:
    """One message to two inboxes makes one conversation in each."""
    await deliver(store, make_message(), "support", "sales")
    await worker_for(store).run_once()
    assert sorted(c["inbox"] for c in await details(store)) == ["sales", "support"]


async def test_threading_stays_within_inbox(store: Store) -> None:
    """A reply in another inbox does not join a conversation of the first inbox."""
    await deliver(store, make_message(message_id="<first@customer.test>"), "support")
    await deliver(store, make_message(subject="Re", In_Reply_To="<first@customer.test>"), "sales")
    await worker_for(store).run_once()
    assert len(await details(store)) == 2


async def test_same_message_id_other_content_flagged(store: Store) -> None:
    """Row 30: a reused Message-ID with different bytes is stored separately and flagged."""
    await deliver(store, make_message(body="one\n", message_id="<same@customer.test>"))
    await deliver(store, make_message(body="two\n", message_id="<same@customer.test>"))
    await worker_for(store).run_once()
    messages = [m for c in await details(store) for m in c["messages"]]
    assert len(messages) == 2
    assert "message-id:reused-with-other-content" in messages[1]["defects"]


class FailingWorker(InboundWorker):
    """A worker whose parse stage fails, as a bug would."""

    def analyse_all(self, batch: list[Any]) -> list[Any]:
        raise RuntimeError("parser bug")


async def test_failing_row_held_after_three_attempts(store: Store) -> None:
    """A row that fails three times is held with its reason, visible, never dropped."""
    [queue_id] = await deliver(store, make_message())
    worker = FailingWorker(store, SETTINGS, id_domain="mx.test")
    for _ in range(3):
        assert await worker.run_once() == 1
    assert await worker.run_once() == 0
    [row] = await store.queue_rows(["held"])
    assert row.id == queue_id
    assert row.attempts == 3
    assert row.reason == "RuntimeError: parser bug"


async def test_held_row_retried_and_processed(store: Store) -> None:
    """`queue retry` on a held row lets a healthy worker store it."""
    [queue_id] = await deliver(store, make_message())
    failing = FailingWorker(store, SETTINGS, id_domain="mx.test")
    for _ in range(3):
        await failing.run_once()
    assert await store.retry(queue_id)
    assert await worker_for(store).run_once() == 1
    assert len(await details(store)) == 1


HOSTILE: dict[str, bytes] = {
    "nul-bytes": b"From: a@x.test\r\nSubject: a\x00b\r\n\r\nbody \x00 nul\r\n",
    "latin1-header": b"From: a@x.test\r\nSubject: caf\xe9\r\n\r\nbody\r\n",
    "surrogate-bait": b"From: a@x.test\r\nSubject: =?utf-8?b?7aCA?=\r\n\r\n\xed\xa0\x80\r\n",
    "encoded-crlf": b"From: a@x.test\r\nSubject: =?utf-8?q?hi=0D=0ABcc:_evil@x.t?=\r\n"
    b"Message-ID: =?utf-8?q?<a=0D=0Ab@x>?=\r\n\r\nbody\r\n",
    "crasher-to": b'From: a@x.test\r\nTo: "\r\nSubject: s\r\n\r\nbody\r\n',
    "crasher-ct": b"From: a@x.test\r\nContent-Type: text/plain; name*\r\n\r\nbody\r\n",
    "bogus-charset": b"From: a@x.test\r\nContent-Type: text/plain; charset=x-bogus-42\r\n"
    b"\r\n\xff\r\n",
    "bad-base64": b"From: a@x.test\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!notbase64===\r\n",
    "sql": b"From: x'); DROP TABLE messages;--@x.test\r\nSubject: x'); DROP TABLE messages;--\r\n"
    b"Message-ID: <x'); DROP TABLE messages;--@x>\r\n\r\nbody\r\n",
    "no-headers": b"\r\njust a body\r\n",
    "empty": b"",
    "deep-mime": b"From: a@x.test\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n"
    + b"".join(
        b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (n, n + 1)
        for n in range(2000)
    ),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
async def test_hostile_input_stored_not_held(store: Store, name: str) -> None:
    """Rows 37–48: hostile content is parsed and stored on both databases, never held."""
    await deliver(store, HOSTILE[name])
    assert await worker_for(store).run_once() == 1
    assert [row.state for row in await store.queue_rows()] == ["done"]
    [conversation] = await details(store)
    [message] = conversation["messages"]
    for value in (conversation["subject"], message["subject"], message["message_id"]):
        assert "\x00" not in value and "\r" not in value and "\n" not in value
    assert "\x00" not in (message["text"] or "")


async def test_sql_in_headers_stored_verbatim(store: Store) -> None:
    """Row 48: SQL in headers is data: stored as written, tables intact."""
    await deliver(store, HOSTILE["sql"])
    await worker_for(store).run_once()
    [conversation] = await details(store)
    assert conversation["subject"] == "x'); DROP TABLE messages;--"
    assert len(conversation["messages"]) == 1


def zip_bomb_message() -> bytes:
    """A message carrying 64 MiB of zeros compressed into a small zip attachment."""
    import io
    import zipfile
    from email.message import EmailMessage

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bomb:
        bomb.writestr("zeros.bin", bytes(64 * 1024 * 1024))
    message = EmailMessage()
    message["From"] = "a@x.test"
    message["Subject"] = "invoice"
    message.set_content("see attachment")
    message.add_attachment(
        archive.getvalue(), maintype="application", subtype="zip", filename="invoice.zip"
    )
    return message.as_bytes()


async def test_zip_bomb_stored_opaque(store: Store) -> None:
    """Row 47: a zip bomb is stored as an opaque attachment of its compressed size, never
    extracted."""
    raw = zip_bomb_message()
    await deliver(store, raw)
    assert await worker_for(store).run_once() == 1
    [conversation] = await details(store)
    [attachment] = conversation["messages"][0]["attachments"]
    assert attachment["filename"] == "invoice.zip"
    assert attachment["content_type"] == "application/zip"
    assert attachment["size"] < 1024 * 1024  # the compressed bytes, not the 64 MiB inside


def test_directory_counts_team_mailboxes_as_ours(tmp_path: Path) -> None:
    """Loop detection and the participant rule know team mailbox addresses as our own."""
    from mailgateway.inbound.worker import Directory
    from tests.support import write_config

    folder = write_config(tmp_path / "c", f"sqlite:///{tmp_path / 'x.db'}")
    secret = folder / "secret"
    secret.write_text("pw")
    with (folder / "inboxes" / "sales.toml").open("a") as handle:
        handle.write(
            '\n[[channels]]\ntype = "imap"\naddress = "Help@Acme.example"\n'
            'imap = { host = "127.0.0.1", port = 1143, tls = "none", user = "help", '
            'password_file = "secret" }\n'
            'smtp = { host = "127.0.0.1", port = 1587, tls = "none", user = "help", '
            'password_file = "secret" }\n'
        )
    directory = Directory.from_config(load_config(folder))
    assert "help@acme.example" in directory.own_addresses
    assert "support@acme.inbox.example.net" in directory.own_addresses
