"""Crash campaign, smoke run: the daemon SIGKILLed at every kill point while MTAs send; and the
verification that judges it (`make soak` runs hundreds of kills)."""

from __future__ import annotations

import random
from pathlib import Path

from sqlalchemy import update

from mailgateway.store.repo import Delivery, Envelope, Store, raw_messages
from tests.campaigns.crash import CrashSettings, crash_campaign
from tests.campaigns.daemon import KillPoint
from tests.campaigns.mta import Ledger, make_letter
from tests.campaigns.verify import verify
from tests.test_worker import worker_for


async def test_crash_campaign_smoke(tmp_path: Path, db_url: str) -> None:
    """Five SIGKILLs (timer; before, during and after the intake's commit; before a worker's
    commit) while ten sessions send: every acknowledged letter is stored once and processed,
    nothing is stuck, the integrity check passes, no 5xx, and the last daemon exits 0."""
    settings = CrashSettings(kills=5, cycle=True, seed=11, drain_timeout=60)
    report = await crash_campaign(tmp_path, db_url, settings, "smoke")
    assert report.ok, report.figures()
    assert sum(report.kills.values()) == 5
    assert {point.value for point in KillPoint} <= set(report.kills)
    assert report.verdict.acknowledged > 0
    assert report.verdict.integrity == []


async def test_verify_finds_lost_duplicated_altered_and_unprocessed(store: Store) -> None:
    """The verdict is not vacuous: a letter acknowledged but never stored is lost, one whose 250
    named other queue ids is duplicated, one stored with other bytes is altered, one never
    processed is unprocessed and its row stuck; a clean one passes."""
    rng = random.Random(5)
    clean, lost, doubled, altered, waiting = (make_letter("v", n, rng) for n in range(5))
    ledger = Ledger()
    for letter in (clean, doubled, altered, waiting):
        ids = await store.enqueue(
            letter.raw,
            Envelope(mail_from="mta@customer.test"),
            [Delivery(inbox, inbox + "@x.test") for inbox in letter.inboxes],
        )
        ledger.acks[letter.key] = [" ".join(map(str, ids))]
        if letter is not waiting:
            await worker_for(store).run_once()
    ledger.acks[doubled.key].append("999")
    ledger.acks[lost.key] = ["1000"]
    for letter in (clean, lost, doubled, altered, waiting):
        ledger.letters[letter.key] = letter
    async with store.transaction() as connection:
        await connection.execute(
            update(raw_messages)
            .where(raw_messages.c.digest == altered.digest)
            .values(data=b"tampered")
        )
    verdict = await verify(store.engine, ledger)
    assert [line.split(":")[0] for line in verdict.lost] == [lost.key]
    assert [line.split(":")[0] for line in verdict.duplicated] == [doubled.key]
    assert [line.split(":")[0] for line in verdict.altered] == [altered.key]
    assert [line.split(":")[0] for line in verdict.unprocessed] == [waiting.key]
    assert verdict.stuck == len(waiting.inboxes)
    assert not verdict.ok
