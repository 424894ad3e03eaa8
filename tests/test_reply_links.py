"""Where replies meet the other steps: contact activity, normalised Message-IDs, and bounces
that fail the reply's outbound queue row — on both databases."""

from __future__ import annotations

from pathlib import Path

from mailgateway import replies
from mailgateway.config import WorkerConfig, load_config
from mailgateway.inbound.worker import InboundWorker
from mailgateway.store import routing
from mailgateway.store.outbound import OutboundStore
from mailgateway.store.repo import Delivery, Envelope, Store
from tests.outbound_support import CUSTOMER, conversation, sending_config
from tests.support import SUPPORT

SETTINGS = WorkerConfig(batch_size=10, max_attempts=3, poll_interval=0.1, retry_delay=0.0)


async def queue_reply(tmp_path: Path, db_url: str, store: Store) -> replies.QueuedReply:
    """A reply by alice on a fresh conversation, queued (not sent)."""
    config_dir = sending_config(tmp_path / "config", db_url, 1, dkim=False)
    conversation_id = await conversation(store)
    request = replies.ReplyRequest(conversation_id, "alice", "We are on it.")
    return await replies.queue_reply(load_config(config_dir), store, request)


async def test_reply_logged_on_contact_activity(tmp_path: Path, db_url: str, store: Store) -> None:
    """A reply appears on the contact's activity as email_sent after the received mail."""
    queued = await queue_reply(tmp_path, db_url, store)
    async with store.engine.connect() as connection:
        [contact] = await routing.contact_rows(connection, CUSTOMER)
        activity = await routing.activity_rows(connection, contact.id)
    assert [(row.kind, row.message) for row in activity][-1] == (
        "email_sent",
        queued.message_row_id,
    )
    assert [row.kind for row in activity] == ["email_received", "email_sent"]


async def test_reply_message_id_stored_normalised(
    tmp_path: Path, db_url: str, store: Store
) -> None:
    """The reply's stored Message-ID is in the normalised form replies are matched against."""
    queued = await queue_reply(tmp_path, db_url, store)
    [stored] = [
        m for m in await store.message_rows(queued.conversation_id) if m.id == queued.message_row_id
    ]
    local, _, domain = stored.message_id.strip("<>").partition("@")
    assert stored.message_id == f"<{local}@{domain.lower()}>"


def dsn_for(message_id: str) -> bytes:
    """A standard delivery status notification for one of our messages."""
    return (
        "From: MAILER-DAEMON@mx.customer.test\r\nTo: support@acme.inbox.example.net\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\nAuto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.customer.test\r\n"
        f"\r\nFinal-Recipient: rfc822; {CUSTOMER}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 User unknown\r\n"
        f"--b\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {message_id}\r\n"
        f"To: {CUSTOMER}\r\n--b--\r\n"
    ).encode()


async def test_bounce_fails_the_reply_queue_row(tmp_path: Path, db_url: str, store: Store) -> None:
    """A DSN for our reply marks the reply failed on the conversation and fails its outbound
    queue row with the diagnostic, so nothing retries it."""
    queued = await queue_reply(tmp_path, db_url, store)
    config = load_config(tmp_path / "config")
    await store.enqueue(
        dsn_for(queued.message_id), Envelope(mail_from=""), [Delivery("support", SUPPORT)]
    )
    await InboundWorker(store, SETTINGS, id_domain="mx.test", config=config).run_once()
    [reply] = [
        m for m in await store.message_rows(queued.conversation_id) if m.id == queued.message_row_id
    ]
    assert reply.delivery_status == "failed"
    [row] = await OutboundStore(store.engine).rows(["failed"])
    assert row.id == queued.queue_id
    assert "550 5.1.1 User unknown" in row.reason
