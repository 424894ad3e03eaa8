"""Regressions for what the fuzz and fault campaigns found, each reduced to its smallest case."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mailgateway.inbound.analysis import analyse
from mailgateway.intake.imapclient import ConnectionLost, ImapSession
from mailgateway.store.repo import Delivery, Envelope, Store
from tests.campaigns.boundary import check
from tests.test_origin import read_fixture
from tests.test_threading_worker import (
    JOHN,
    deliver,
    fixture,
    messages,
    process,
    send_ours,
    start,
)
from tests.test_worker_origin import EXPECTED, shown, worker_for

CONTROL_RECIPIENT = b"john.do\x17\x00\x00e@customer.test"


def bounce_with_control_characters() -> bytes:
    """Postfix's delivery report for our reply, with a second recipient block whose address
    holds a control character and NUL bytes (atheris found one like it)."""
    raw = fixture("bounces/dsn-postfix")
    block = (
        b"Final-Recipient: rfc822; " + CONTROL_RECIPIENT + b"\n"
        b"Action: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 no\x00such user\n\n"
    )
    return raw.replace(b"Final-Recipient:", block + b"Final-Recipient:", 1)


def test_bounce_recipients_never_hold_control_characters() -> None:
    """A reported recipient address holding control characters or NUL is not taken with them:
    no bounce field carries CR, LF, NUL or another control character."""
    analysis = analyse(bounce_with_control_characters(), "", id_domain="mx.test")
    assert analysis.bounce is not None
    for item in analysis.bounce.recipients:
        assert item.recipient.isprintable() and item.diagnostic.isprintable()
    assert JOHN in analysis.bounce.addresses
    check(bounce_with_control_characters())


async def test_bounce_with_control_characters_is_stored(store: Store, config_dir: Path) -> None:
    """Such a bounce of our reply is attached and marks our message failed on both databases
    (PostgreSQL refuses NUL in text: it used to fail the row until it was held)."""
    first = await start(store, config_dir)
    await send_ours(store, first.conversation_id)
    await deliver(store, bounce_with_control_characters(), mail_from="")
    [outcome] = await process(store, config_dir)
    assert outcome.conversation_id == first.conversation_id
    ours = [m for m in await messages(store) if m.direction == "outbound"]
    assert ours[0].delivery_status == "failed"
    assert "\x00" not in ours[0].delivery_error


async def test_imap_command_after_connection_loss_is_closed_not_left_dangling() -> None:
    """A command attempted after the IMAP connection was lost raises ConnectionLost, and its
    coroutine is closed rather than never awaited (found by the fault campaign: a
    RuntimeWarning per command while the connection flapped)."""
    lost = asyncio.Event()
    lost.set()
    client: Any = SimpleNamespace(protocol=SimpleNamespace(oversized=False))
    session = ImapSession(client, lost, timeout=1.0)

    async def command() -> str:
        return "OK"

    pending = command()
    with pytest.raises(ConnectionLost):
        await session.bounded(pending)
    assert inspect.getcoroutinestate(pending) == inspect.CORO_CLOSED


def exim_bounce_ending_unterminated() -> bytes:
    """Exim's bounce of our reply, its text cut before the copy of the message and ending on
    an indented line of 4 000 '@' with no line end (as a text part ends at a MIME boundary)."""
    raw = fixture("bounces/bounce-exim")
    return raw[: raw.index(b"------ This is a copy")] + b"  " + b"@" * 4000


def test_exim_bounce_ending_on_an_unterminated_line_keeps_the_limits() -> None:
    """Such a bounce passes the boundary's limits (the Exim pattern was cubic on it: seconds for
    4 000 characters, hours for 60 000) and still reports the recipient of the real block."""
    check(exim_bounce_ending_unterminated())
    bounce = analyse(exim_bounce_ending_unterminated(), "", id_domain="mx.test").bounce
    assert bounce is not None and bounce.format == "exim"
    assert bounce.addresses == {JOHN}


def qmail_bounce_with_a_run_of_at() -> bytes:
    """qmail's bounce of our reply with a line of '<' and 40 000 '@' after its recipient."""
    raw = fixture("bounces/bounce-qmail")
    return raw.replace(b"--- Below", b"<" + b"@" * 40_000 + b"\n\n--- Below", 1)


def test_qmail_bounce_with_a_run_of_at_keeps_the_limits() -> None:
    """Such a bounce passes the boundary's limits (qmail's pattern retried every split of the
    run: 6 s for this one) and reports the recipient and the original as before."""
    check(qmail_bounce_with_a_run_of_at())
    bounce = analyse(qmail_bounce_with_a_run_of_at(), "", id_domain="mx.test").bounce
    assert bounce is not None and bounce.format == "qmail"
    assert (bounce.addresses, bounce.original_message_id) == ({JOHN}, "<reply-1@mx.test>")


LONG_RUN = b"a" * 60_000


@pytest.mark.parametrize(
    ("name", "field", "kind"),
    [
        ("bounce-x-failed-recipients", b"X-Failed-Recipients: ", "x-failed-recipients"),
        ("dsn-postfix", b"Final-Recipient: rfc822; ", "dsn"),
    ],
    ids=["x-failed-recipients", "final-recipient"],
)
def test_recipient_field_with_a_long_run_keeps_the_limits(
    name: str, field: bytes, kind: str
) -> None:
    """A recipient field holding a run of 60 000 address characters without '@' before the
    address passes the boundary's limits (the address search started again at each of them:
    5 s) and still yields the address."""
    raw = fixture(f"bounces/{name}").replace(field, field + LONG_RUN + b" ", 1)
    check(raw)
    bounce = analyse(raw, "", id_domain="mx.test").bounce
    assert bounce is not None and bounce.format == kind
    assert bounce.addresses == {JOHN}


def qmail_bounce_with_a_dash_line() -> bytes:
    """qmail's bounce of our reply with a line of 20 000 dashes before its copy marker."""
    raw = fixture("bounces/bounce-qmail")
    return raw.replace(b"--- Below", b"-" * 20_000 + b"\n\n--- Below", 1)


def test_bounce_with_a_line_of_dashes_keeps_the_limits() -> None:
    """Such a bounce passes the boundary's limits (the copy marker's pattern split the dashes
    every way: 4 s) and its text is still cut at the marker: the recipient is read from the
    report, the original from the copy."""
    check(qmail_bounce_with_a_dash_line())
    bounce = analyse(qmail_bounce_with_a_dash_line(), "", id_domain="mx.test").bounce
    assert bounce is not None and bounce.format == "qmail"
    assert (bounce.addresses, bounce.original_message_id) == ({JOHN}, "<reply-1@mx.test>")


FORWARDED = "Fwd: Printer on fire"


def forward_with_an_empty_result_property() -> bytes:
    """Alice's Gmail forward, trusted through mx.acme.example's Authentication-Results, whose
    DKIM pass ends on an empty property, `header.b=` (atheris found one like it)."""
    return read_fixture("gmail_en_qp.eml").replace(b"header.b=Xk3q9ZtA", b"header.b=", 1)


def test_empty_result_property_is_read_as_evidence() -> None:
    """Such a forward passes the boundary and is trusted as before; the evidence shows the empty
    property (authres's own str() raised AttributeError on it, failing the origin step)."""
    values = check(forward_with_an_empty_result_property())
    assert (values["attribution"], values["from_email"]) == (
        "forward_original_sender",
        "john.doe@customer.test",
    )
    assert values["evidence"]["header"] == (
        "Authentication-Results: mx.acme.example; dkim=pass header.d=acme.example "
        "header.s=google header.b="
    )


async def test_forward_with_an_empty_result_property_is_stored(
    store: Store, config_dir: Path
) -> None:
    """Such a forward is stored as the customer's on both databases, its queue row done (the
    worker failed on it at every attempt until the row was held)."""
    envelope = Envelope(mail_from="alice@acme.example")
    raw = forward_with_an_empty_result_property()
    [queue_id] = await store.enqueue(raw, envelope, [Delivery("support", "s@x")])
    assert await worker_for(store, config_dir).run_once() == 1
    assert await shown(store) == {FORWARDED: EXPECTED[FORWARDED]}
    [row] = [row for row in await store.queue_rows() if row.id == queue_id]
    assert row.state == "done"
