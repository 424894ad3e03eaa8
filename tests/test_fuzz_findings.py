"""Regressions for what the fuzz campaign found, each minimised from its crash artifact."""

from __future__ import annotations

from pathlib import Path

from mailgateway.inbound.analysis import analyse
from mailgateway.store.repo import Store
from tests.campaigns.boundary import check
from tests.test_threading_worker import (
    JOHN,
    deliver,
    fixture,
    messages,
    process,
    send_ours,
    start,
)

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
