"""Postfix in front of the gateway, for real: relay by transport_maps, a team address forwarded
by a virtual alias, and deferral while the gateway is down, delivered once after a flush."""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailgateway.store.repo import Store
from tests.e2e.postfix import Postfix, free_port
from tests.support import SUPPORT, make_message, running_gateway, write_config

TEAM_ADDRESS = "help@acme.example"
VERIFY_RECIPIENTS = (
    "smtpd_recipient_restrictions = reject_unverified_recipient\n"
    "unverified_recipient_reject_code = 550\n"
)


@pytest.fixture
def gateway_port() -> int:
    """The port the gateway will listen on (known before it runs, for Postfix's transport)."""
    return free_port()


@contextlib.contextmanager
def running_postfix(gateway_port: int, extra: str = "") -> Iterator[Postfix]:
    """A private Postfix relaying the forwarding domain to the gateway's port, the team
    address aliased to the support inbox, plus extra main.cf lines."""
    instance = Postfix(gateway_port, {TEAM_ADDRESS: SUPPORT}, extra)
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()


@pytest.fixture
def postfix(gateway_port: int) -> Iterator[Postfix]:
    """A running private Postfix in front of the gateway's port."""
    with running_postfix(gateway_port) as instance:
        yield instance


@pytest.fixture
def config_dir(tmp_path: Path, db_url: str, gateway_port: int) -> Path:
    """The test configuration with the gateway on the port Postfix relays to."""
    return write_config(tmp_path / "config", db_url, listen=[f"127.0.0.1:{gateway_port}"])


def submit(postfix: Postfix, rcpt: str, subject: str) -> None:
    """Hand a customer's message to Postfix's smtpd (as the Internet would)."""
    raw = make_message(subject=subject, to=rcpt)
    with smtplib.SMTP("127.0.0.1", postfix.port, timeout=10) as client:
        refused = client.sendmail("john.doe@customer.test", [rcpt], raw)
    assert refused == {}


async def wait_until(check: Any, what: str, timeout: float = 30.0) -> None:
    """Poll an async check until it is true."""
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def postfix_queue(postfix: Postfix) -> list[dict[str, Any]]:
    """Postfix's queue, read without blocking the gateway on this loop."""
    return await asyncio.to_thread(postfix.queue)


async def stored(store: Store) -> list[Any]:
    """The gateway's inbound queue rows."""
    return await store.queue_rows()


async def test_relay_and_virtual_alias_reach_the_inbox(postfix: Postfix, config_dir: Path) -> None:
    """Mail to the team address (virtual alias) and to the forwarding address itself, both
    submitted to Postfix, arrive as conversations of the support inbox."""
    async with running_gateway(config_dir) as gateway:
        await asyncio.to_thread(submit, postfix, TEAM_ADDRESS, "to the team address")
        await asyncio.to_thread(submit, postfix, SUPPORT, "to the forwarding address")

        async def both_stored() -> bool:
            counts = await gateway.store.queue_counts()
            return counts.get("done", 0) == 2

        await wait_until(both_stored, "two conversations")
        conversations = await gateway.store.conversation_rows()
        rows = await gateway.store.queue_rows()
        assert await postfix_queue(postfix) == []
    assert sorted(c.subject for c in conversations) == [
        "to the forwarding address",
        "to the team address",
    ]
    assert {c.inbox for c in conversations} == {"support"}
    assert {row.rcpt_to for row in rows} == {SUPPORT}
    assert {row.mail_from for row in rows} == {"john.doe@customer.test"}
    assert "orig_to=<help@acme.example>" in postfix.log()


async def test_deferred_while_down_then_delivered_once_after_flush(
    postfix: Postfix, config_dir: Path
) -> None:
    """While the gateway is down Postfix accepts and defers; once it is back, nothing arrives
    until `postfix flush`, and then the message arrives exactly once."""
    await asyncio.to_thread(submit, postfix, TEAM_ADDRESS, "sent while down")

    async def deferred() -> bool:
        queue = await postfix_queue(postfix)
        return bool(queue) and queue[0]["queue_name"] == "deferred"

    await wait_until(deferred, "Postfix to defer the message")
    [entry] = await postfix_queue(postfix)
    assert "Connection refused" in entry["recipients"][0]["delay_reason"]
    async with running_gateway(config_dir) as gateway:
        await asyncio.sleep(1.0)
        assert await stored(gateway.store) == []  # retries wait for the flush
        await asyncio.to_thread(postfix.flush)

        async def delivered() -> bool:
            return not await postfix_queue(postfix) and bool(
                (await gateway.store.queue_counts()).get("done")
            )

        await wait_until(delivered, "the flushed message to be stored")
        await asyncio.to_thread(postfix.flush)
        await asyncio.sleep(1.0)
        rows = await stored(gateway.store)
        conversations = await gateway.store.conversation_rows()
        messages = await gateway.store.message_rows(conversations[0].id)
    assert len(rows) == 1 and rows[0].state == "done"
    assert [c.subject for c in conversations] == ["sent while down"]
    assert len(messages) == 1
    assert "status=sent" in postfix.log()


async def test_address_verification_refuses_unknown_inboxes_at_postfix(
    gateway_port: int, config_dir: Path
) -> None:
    """With reject_unverified_recipient, Postfix asks the gateway at RCPT time: an address that
    is no inbox is refused by Postfix itself (no bounce to send later), an inbox is accepted."""

    def rcpt(postfix: Postfix, address: str) -> int:
        with smtplib.SMTP("127.0.0.1", postfix.port, timeout=30) as client:
            client.ehlo("client.test")
            client.mail("john.doe@customer.test")
            return int(client.rcpt(address)[0])

    with running_postfix(gateway_port, VERIFY_RECIPIENTS) as postfix:
        async with running_gateway(config_dir):
            unknown = await asyncio.to_thread(rcpt, postfix, "nobody@acme.inbox.example.net")
            known = await asyncio.to_thread(rcpt, postfix, SUPPORT)
        log = postfix.log()
    assert (unknown, known) == (550, 250)
    assert "said: 550 5.1.1" in log
