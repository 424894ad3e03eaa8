"""The daemon fetching a team mailbox, killed with SIGKILL mid-batch and restarted: no message
lost, none twice, every one marked seen."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from email import message_from_bytes
from pathlib import Path

from sqlalchemy import func, select

from mailgateway.store.channels import imap_messages
from mailgateway.store.db import create_engine
from mailgateway.store.repo import Store, inbound_queue, raw_messages
from mailgateway.store.repo import conversations as conversations_table
from tests.dovecot import Account, Dovecot
from tests.e2e.imap_support import ADDRESS, write_channel_config
from tests.e2e.test_daemon import Daemon
from tests.support import make_message

FIRST_BATCH = 150
LATER = 10
KILL_AT = (10, 60, 110)


def snapshot(db_url: str, worker: str = "") -> dict[str, object]:
    """Counts and subjects of what the daemon has stored so far; `busy` counts the rows the
    named worker still has to process (queued, or claimed by it)."""

    async def read() -> dict[str, object]:
        store = Store(create_engine(db_url))
        try:
            async with store.engine.connect() as connection:
                subjects = [
                    str(message_from_bytes(data)["Subject"])
                    for data in (
                        await connection.execute(
                            select(raw_messages.c.data)
                            .join(inbound_queue, inbound_queue.c.raw_id == raw_messages.c.id)
                            .where(inbound_queue.c.source == "imap")
                        )
                    ).scalars()
                ]
                states = dict(
                    (
                        await connection.execute(
                            select(inbound_queue.c.state, func.count()).group_by(
                                inbound_queue.c.state
                            )
                        )
                    ).all()
                )
                conversations = await connection.scalar(
                    select(func.count())
                    .select_from(conversations_table)
                    .where(conversations_table.c.channel == ADDRESS)
                )
                pending = await connection.scalar(
                    select(func.count()).select_from(imap_messages).where(~imap_messages.c.acked)
                )
                channels = await connection.execute(select(inbound_queue.c.channel).distinct())
                busy = await connection.scalar(
                    select(func.count())
                    .select_from(inbound_queue)
                    .where(
                        (inbound_queue.c.state == "queued")
                        | (
                            (inbound_queue.c.state == "active")
                            & (inbound_queue.c.claimed_by == worker)
                        )
                    )
                )
            return {
                "subjects": subjects,
                "states": states,
                "conversations": conversations,
                "pending": pending,
                "channels": set(channels.scalars()),
                "busy": busy,
            }
        finally:
            await store.close()

    return asyncio.run(read())


def stored(db_url: str) -> int:
    """How many IMAP messages are queued."""
    return len(snapshot(db_url)["subjects"])  # type: ignore[arg-type]


def wait_stored(db_url: str, count: int, timeout: float = 60.0) -> int:
    """Wait until at least `count` messages are queued; how many there are then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = stored(db_url)
        if found >= count:
            return found
        time.sleep(0.02)
    raise AssertionError(f"only {stored(db_url)} of {count} stored")


def test_sigkill_mid_batch_loses_and_duplicates_nothing(
    db_url: str, tmp_path: Path, dovecot: Dovecot, mail_account: Account
) -> None:
    """The daemon is killed (SIGKILL) three times while it works through a mailbox of 150
    unread messages, with new mail arriving between restarts; in the end every message is
    queued exactly once and seen, and processed into a conversation on the channel (but for
    rows a killed worker had claimed: those wait for the stale-claim timeout)."""
    directory = write_channel_config(tmp_path / "channel", db_url, dovecot, mail_account)
    expected = {f"m{n}" for n in range(FIRST_BATCH)}
    dovecot.append(mail_account, *(make_message(subject=subject) for subject in sorted(expected)))
    counts_at_kill = []
    for round_number, kill_at in enumerate(KILL_AT):
        daemon = Daemon(directory, tmp_path / f"daemon{round_number}.log")
        found = wait_stored(db_url, kill_at)
        daemon.process.send_signal(signal.SIGKILL)
        counts_at_kill.append((found, len(expected)))
        daemon.process.wait(timeout=10)
        daemon.handle.close()
        later = {f"later{round_number}.{n}" for n in range(LATER)}
        dovecot.append(mail_account, *(make_message(subject=subject) for subject in later))
        expected |= later

    daemon = Daemon(directory, tmp_path / "daemon-last.log")
    wait_stored(db_url, len(expected))
    worker = f"{socket.gethostname()}:{daemon.process.pid}"
    deadline = time.monotonic() + 60
    while snapshot(db_url, worker)["busy"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert daemon.stop() == 0

    final = snapshot(db_url)
    subjects = final["subjects"]
    assert isinstance(subjects, list)
    assert len(subjects) == len(expected)  # nothing twice
    assert set(subjects) == expected  # nothing lost
    states = final["states"]
    assert isinstance(states, dict) and set(states) <= {"done", "active"}
    assert final["conversations"] == states["done"] >= len(expected) - 3 * 20
    assert final["pending"] == 0
    assert final["channels"] == {ADDRESS}
    # at least one kill must land mid-mailbox (a fast round may finish before its kill)
    assert any(0 < found < there for found, there in counts_at_kill), counts_at_kill
    flags = dovecot.flags(mail_account)
    assert len(flags) == len(expected) and all("\\Seen" in found for found in flags.values())
