"""Threading, auto-replies, bounces and duplicates end to end: mail sent over a real SMTP socket
to the running daemon, processed by its worker, read back as `conversations show` shows it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from mailgateway.app import Gateway
from mailgateway.domain import ConversationStatus
from mailgateway.store import repo
from mailgateway.views import conversation_detail
from tests.support import JOHN, OURS, SUPPORT, RawSMTP, our_reply, port_of

FIXTURES = Path(__file__).parents[1] / "fixtures" / "threading"


def fixture(path: str) -> bytes:
    """The bytes of a threading fixture, e.g. 'rules/original'."""
    return (FIXTURES / f"{path}.eml").read_bytes()


async def deliver(
    gateway: Gateway, raw: bytes, *, mail_from: str = JOHN, rcpt: str = SUPPORT
) -> None:
    """One SMTP transaction over a real socket, then wait until the worker is done with it."""
    client = await RawSMTP.connect(port_of(gateway))
    try:
        reply = await client.transaction(mail_from, [rcpt], raw)
    finally:
        await client.close()
    assert reply.startswith("250"), reply
    async with asyncio.timeout(20):
        while {row.state for row in await gateway.store.queue_rows()} != {"done"}:
            await asyncio.sleep(0.05)


async def shown(gateway: Gateway) -> list[dict[str, Any]]:
    """Every conversation as `conversations show --json` prints it, oldest first."""
    rows = sorted(await gateway.store.conversation_rows(), key=lambda row: row.id)
    return [conversation_detail(row, await gateway.store.message_rows(row.id)) for row in rows]


async def first_conversation(gateway: Gateway) -> dict[str, Any]:
    """John's 'Printer on fire', delivered and processed."""
    await deliver(gateway, fixture("rules/original"))
    [conversation] = await shown(gateway)
    return conversation


async def test_reply_with_only_in_reply_to(gateway: Gateway) -> None:
    """A reply carrying only In-Reply-To joins the conversation it answers."""
    await first_conversation(gateway)
    await deliver(gateway, fixture("rules/reply-in-reply-to"))
    [conversation] = await shown(gateway)
    assert [m["thread_reason"] for m in conversation["messages"]] == ["new", "in_reply_to"]


async def test_references_chain_match_not_last(gateway: Gateway) -> None:
    """A References chain whose right-most id is unknown joins by the stored id before it."""
    await first_conversation(gateway)
    await deliver(gateway, fixture("rules/reply-references-not-last"))
    [conversation] = await shown(gateway)
    reply = conversation["messages"][-1]
    assert reply["thread_reason"] == "references"
    assert reply["thread_detail"] == "references <original@customer.test>"


async def test_odp_subject_same_contact_joins_other_contact_new(gateway: Gateway) -> None:
    """With headers stripped, 'Odp: Printer on fire' from John joins his conversation; the same
    subject from another contact starts a new conversation."""
    await first_conversation(gateway)
    await deliver(gateway, fixture("rules/reply-odp-same-contact"))
    await deliver(gateway, fixture("rules/reply-odp-other-contact"), mail_from="eve@other.test")
    johns, eves = await shown(gateway)
    assert [m["thread_reason"] for m in johns["messages"]] == ["new", "subject"]
    assert eves["contact"]["email"] == "eve@other.test"
    assert [m["thread_reason"] for m in eves["messages"]] == ["new"]


async def test_reply_to_reply_token_address(gateway: Gateway) -> None:
    """Mail to `support+<token>@...` joins the conversation the token belongs to, whatever its
    subject and headers."""
    await first_conversation(gateway)
    [row] = await gateway.store.conversation_rows()
    raw = fixture("rules/reply-token").replace(
        b"support+0123456789abcdef0123456789abcdef", b"support+" + row.reply_token.encode()
    )
    await deliver(gateway, raw, rcpt=f"support+{row.reply_token}@acme.inbox.example.net")
    [conversation] = await shown(gateway)
    assert [m["thread_reason"] for m in conversation["messages"]] == ["new", "reply_token"]


async def test_out_of_office_flagged_and_closed_stays_closed(gateway: Gateway) -> None:
    """An Exchange out-of-office to a closed conversation is stored there, flagged
    auto_submitted with its reasons, and does not reopen it."""
    conversation = await first_conversation(gateway)
    await store_ours(gateway, conversation["id"])
    await gateway.store.set_status(conversation["id"], ConversationStatus.CLOSED)
    raw = fixture("loops/ooo-exchange")  # In-Reply-To: our reply
    await deliver(gateway, raw)
    [closed] = await shown(gateway)
    assert closed["status"] == "closed"
    ooo = closed["messages"][-1]
    assert ooo["auto_submitted"] is True
    assert "subject:out-of-office" in ooo["auto_reasons"]


async def store_ours(gateway: Gateway, conversation_id: int) -> None:
    """One of our replies to John, stored as the outbound queue stores what it sends."""
    async with gateway.store.engine.begin() as connection:
        await repo.insert_message(connection, our_reply(conversation_id))


async def test_dsn_for_our_message(gateway: Gateway) -> None:
    """A Postfix DSN for our reply, sent with a null reverse-path, is attached to the
    conversation of that reply, flagged, and our reply is shown failed with the diagnostic."""
    conversation = await first_conversation(gateway)
    await store_ours(gateway, conversation["id"])
    await deliver(gateway, fixture("bounces/dsn-postfix"), mail_from="")
    [shown_conversation] = await shown(gateway)
    ours, bounce = shown_conversation["messages"][1:]
    assert ours["delivery_status"] == "failed"
    assert "550 5.1.1" in ours["delivery_error"]
    assert bounce["auto_submitted"] is True
    assert bounce["bounce"]["original_message_id"] == OURS
    assert bounce["thread_reason"] == "references"


async def test_same_message_delivered_twice(gateway: Gateway) -> None:
    """The same message delivered twice (identical, then relayed by a second MX that added a
    Received header) is stored once."""
    raw = fixture("rules/original")
    await deliver(gateway, raw)
    await deliver(gateway, raw)
    relayed = b"Received: from mx2.customer.test by mx.test; Thu, 26 Nov 2026 11:00:09 +0000\r\n"
    await deliver(gateway, relayed + raw)
    [conversation] = await shown(gateway)
    assert len(conversation["messages"]) == 1
    assert len(await gateway.store.queue_rows()) == 2
