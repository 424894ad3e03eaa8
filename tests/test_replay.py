"""Catalogue row 54, DKIM replay: expired signatures fail, length-limited ones never vouch, and a
signed message replayed later is stored once per inbox (or flagged when its content changed)."""

from __future__ import annotations

import time
from typing import Any

import dkim
import pytest

from mailgateway.auth import DkimVerifier
from mailgateway.store.repo import Store
from tests.dkimkeys import FakeDns, sign
from tests.support import make_message
from tests.test_worker import deliver, details, worker_for

DAY = 86400


def sign_expiring(raw: bytes, expires: int, signed_at: int, monkeypatch: Any) -> bytes:
    """The message signed with an x= (expiry) tag: dkimpy's signer has no option for it, so its
    header generation is given one more tag; the signature over it is genuine."""
    original = dkim.DKIM.gen_header

    def with_expiry(self: Any, fields: list[Any], *args: Any, **kwargs: Any) -> Any:
        fields.insert(len(fields) - 3, (b"x", str(expires).encode()))
        return original(self, fields, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(dkim.DKIM, "gen_header", with_expiry)
        patch.setattr(dkim.time, "time", lambda: float(signed_at))
        return sign(raw, "acme.example")


def test_expired_signature_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """Row 54: a signature whose x= lies in the past does not verify; the same signature with
    x= a week ahead does."""
    now = int(time.time())
    dns = FakeDns().publish("acme.example")
    expired = sign_expiring(make_message(), now - 2 * DAY, now - 3 * DAY, monkeypatch)
    valid = sign_expiring(make_message(), now + 7 * DAY, now, monkeypatch)
    assert b"x=" in expired.split(b"\r\nFrom:")[0]
    [old] = DkimVerifier(dns=dns).verify(expired)
    [fresh] = DkimVerifier(dns=dns).verify(valid)
    assert (old.passed, old.error) == (False, "ValidationError")
    assert fresh.passed


async def test_replayed_signed_message_is_stored_once_per_inbox(store: Store) -> None:
    """Row 54: a signed message replayed days later through other hosts (other Received,
    Delivered-To and Authentication-Results) is recognised: one message in the inbox; replayed
    to a second inbox it is that inbox's own copy (one conversation per inbox)."""
    signed = sign(make_message(message_id="<signed@acme.example>"), "acme.example")
    first = b"Received: from mx1.acme.example by gw; Thu, 26 Nov 2026\r\n" + signed
    replay = (
        b"Received: from relay.evil.test by gw; Sun, 29 Nov 2026\r\n"
        b"Delivered-To: support@acme.inbox.example.net\r\n"
        b"Authentication-Results: mx.acme.example; dkim=pass header.d=acme.example\r\n" + signed
    )
    await deliver(store, first)
    await worker_for(store).run_once()
    await deliver(store, replay, "support", "sales")
    await worker_for(store).run_once()
    conversations = await details(store)
    assert sorted(c["inbox"] for c in conversations) == ["sales", "support"]
    assert all(len(c["messages"]) == 1 for c in conversations)
    assert {row.state for row in await store.queue_rows()} == {"done"}


async def test_replay_with_changed_content_is_flagged(store: Store) -> None:
    """Row 54: a replay whose content was changed (an unsigned Cc added to reach more people)
    under the same Message-ID is kept, and flagged for agents, never merged as a duplicate."""
    signed = sign(make_message(message_id="<signed@acme.example>"), "acme.example")
    await deliver(store, signed)
    await deliver(store, b"Cc: everyone@victims.test\r\n" + signed)
    await worker_for(store).run_once()
    [conversation] = await details(store)
    first, replay = conversation["messages"]
    assert "message-id:reused-with-other-content" not in first["defects"]
    assert "message-id:reused-with-other-content" in replay["defects"]
