"""Backfill: `import imap` from a real Dovecot and `import mbox`, in archive mode, resumable,
and never duplicating what the channel's poller takes."""

from __future__ import annotations

import asyncio
import json
import mailbox
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from click.testing import CliRunner, Result

from mailgateway.cli import main
from mailgateway.intake import backfill
from mailgateway.store.db import create_engine
from mailgateway.store.repo import Store
from tests.dovecot import Account, Dovecot
from tests.e2e.imap_support import (
    ADDRESS,
    imap_subjects,
    loaded,
    poller_for,
    running,
    synced,
    wait_for,
    write_channel_config,
)
from tests.support import make_message

T = TypeVar("T")
SEEN = "\\Seen"
OLD = datetime(2021, 5, 6, 7, 8, 9, tzinfo=UTC)


def cli(*args: str | Path) -> Result:
    """Invoke the CLI in-process."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def on_store(db_url: str, action: Callable[[Store], Awaitable[T]]) -> T:
    """Run an action on the test database outside any event loop."""

    async def run() -> T:
        store = Store(create_engine(db_url))
        try:
            return await action(store)
        finally:
            await store.close()

    return asyncio.run(run())


def report(result: Result) -> dict[str, Any]:
    """The --json report of an import (asserting success)."""
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    return data


def test_import_imap_is_archive_mode_and_resumable(
    tmp_path: Path, db_url: str, dovecot: Dovecot, mail_account: Account
) -> None:
    """`import imap` queues the mailbox's read and unread mail as archive rows without
    touching flags; run again it imports nothing; the poller started afterwards recognises
    the unread mail as imported (no second copy) and only marks it seen."""
    dovecot.append(mail_account, *(make_message(subject=f"read {n}") for n in range(3)), flags=SEEN)
    dovecot.append(mail_account, *(make_message(subject=f"unread {n}") for n in range(2)))
    directory = write_channel_config(tmp_path / "c", db_url, dovecot, mail_account)

    first = report(cli("import", "imap", ADDRESS, "--json", "--config", directory))
    assert (first["found"], first["queued"], first["already"]) == (5, 5, 0)
    unread = [uid for uid, flags in dovecot.flags(mail_account).items() if SEEN not in flags]
    assert len(unread) == 2  # flags untouched
    again = report(cli("import", "imap", ADDRESS, "--json", "--config", directory))
    assert (again["queued"], again["already"]) == (0, 5)

    async def poll_once(store: Store) -> list[Any]:
        poller = poller_for(loaded(directory), store)
        async with running(poller):
            await wait_for(synced(poller), what="first pass")
        return await store.queue_rows()

    rows = on_store(db_url, poll_once)
    assert len(rows) == 5
    assert {(row.source, row.archive, row.channel) for row in rows} == {("imap", True, ADDRESS)}
    assert all(SEEN in flags for flags in dovecot.flags(mail_account).values())


def test_import_imap_since_and_folder(
    tmp_path: Path, db_url: str, dovecot: Dovecot, mail_account: Account
) -> None:
    """--since keeps to mail received since the date; --folder reads another folder."""
    dovecot.create_folder(mail_account, "Archive")
    dovecot.append(mail_account, make_message(subject="2021"), folder="Archive", when=OLD)
    dovecot.append(mail_account, make_message(subject="recent"), folder="Archive")
    dovecot.append(mail_account, make_message(subject="in inbox"))
    directory = write_channel_config(tmp_path / "c", db_url, dovecot, mail_account)
    args = ("import", "imap", ADDRESS, "--folder", "Archive", "--json", "--config", directory)
    done = report(cli(*args, "--since", "2025-01-01"))
    assert (done["found"], done["queued"]) == (1, 1)
    done = report(cli(*args))
    assert (done["found"], done["queued"], done["already"]) == (2, 1, 1)
    subjects = on_store(db_url, imap_subjects)
    assert sorted(subjects) == ["2021", "recent"]


def test_import_imap_leaves_new_mail_to_the_poller(
    tmp_path: Path, db_url: str, dovecot: Dovecot, mail_account: Account
) -> None:
    """Once the poller has connected, `import imap` of its folder takes only mail older than
    that first connection: newer mail is the poller's (queued once, not in archive mode)."""
    dovecot.append(mail_account, make_message(subject="old read"), flags=SEEN, when=OLD)
    directory = write_channel_config(tmp_path / "c", db_url, dovecot, mail_account)

    async def poll_once(store: Store) -> None:
        poller = poller_for(loaded(directory), store)
        async with running(poller):
            await wait_for(synced(poller), what="a pass")

    on_store(db_url, poll_once)  # first contact: the old read mail is not the poller's
    dovecot.append(mail_account, make_message(subject="new"))
    done = report(cli("import", "imap", ADDRESS, "--json", "--config", directory))
    assert (done["found"], done["queued"]) == (1, 1)
    on_store(db_url, poll_once)
    rows = on_store(db_url, lambda store: store.queue_rows())
    archived = dict(
        zip(on_store(db_url, imap_subjects), [row.archive for row in rows], strict=True)
    )
    assert archived == {"old read": True, "new": False}


def test_interrupted_import_resumes_without_duplicates(
    tmp_path: Path, db_url: str, dovecot: Dovecot, mail_account: Account
) -> None:
    """An import cut short (Ctrl-C after three messages) and run again stores every message
    exactly once."""
    dovecot.append(mail_account, *(make_message(subject=f"m{n}") for n in range(8)), flags=SEEN)
    config = loaded(write_channel_config(tmp_path / "c", db_url, dovecot, mail_account))

    class Interrupt:
        """A progress sink that gives up after three messages."""

        def __init__(self) -> None:
            self.steps = 0

        def start(self, total: int) -> None:
            """Nothing to show."""

        def advance(self) -> None:
            """Interrupt after the third message."""
            self.steps += 1
            if self.steps == 3:
                raise KeyboardInterrupt

    async def interrupted(store: Store) -> None:
        with pytest.raises(KeyboardInterrupt):
            await backfill.import_imap(config, store, ADDRESS, progress=Interrupt())

    on_store(db_url, interrupted)
    assert len(on_store(db_url, imap_subjects)) == 3
    resumed = on_store(db_url, lambda store: backfill.import_imap(config, store, ADDRESS))
    assert (resumed.queued, resumed.already) == (5, 3)
    assert sorted(on_store(db_url, imap_subjects)) == [f"m{n}" for n in range(8)]


def test_import_imap_refuses_unknown_and_disabled_channels(
    tmp_path: Path, db_url: str, dovecot: Dovecot, mail_account: Account
) -> None:
    """An unknown or disabled channel is refused with exit 1 and one line on stderr (and
    `inboxes list` shows the disabled channel's health as disabled)."""
    directory = write_channel_config(
        tmp_path / "c", db_url, dovecot, mail_account, status="disabled"
    )
    listed = json.loads(cli("inboxes", "list", "--json", "--config", directory).stdout)
    [channel] = [c for inbox in listed for c in inbox["channels"] if c["type"] == "imap"]
    assert (channel["status"], channel["health"], channel["last_error"]) == (
        "disabled",
        "disabled",
        None,
    )
    for address, reason in (("nobody@acme.example", "no channel"), (ADDRESS, "disabled")):
        result = cli("import", "imap", address, "--config", directory)
        assert result.exit_code == 1
        assert reason in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_import_mbox_archive_and_resumable(config_dir: Path, db_url: str, tmp_path: Path) -> None:
    """`import mbox` queues each message of the file for the inbox in archive mode, with the
    envelope sender of its From_ line; run again it stores nothing twice."""
    path = tmp_path / "old.mbox"
    box = mailbox.mbox(path)
    for n in range(3):
        message = mailbox.mboxMessage(make_message(subject=f"mbox {n}"))
        message.set_from("john.doe@customer.test", time_=(2021, 1, 2, 3, 4, 5, 0, 0, 0))
        box.add(message)
    box.close()
    first = report(
        cli("import", "mbox", path, "--inbox", "sales", "--json", "--config", config_dir)
    )
    assert (first["found"], first["queued"]) == (3, 3)
    again = report(
        cli("import", "mbox", path, "--inbox", "sales", "--json", "--config", config_dir)
    )
    assert (again["queued"], again["already"]) == (0, 3)
    rows = on_store(db_url, lambda store: store.queue_rows())
    assert len(rows) == 3
    assert {(r.inbox, r.source, r.archive, r.channel) for r in rows} == {
        ("sales", "mbox", True, None)
    }
    assert {row.mail_from for row in rows} == {"john.doe@customer.test"}
    text = cli("import", "mbox", path, "--inbox", "sales", "--config", config_dir)
    assert text.exit_code == 0 and "imported 0 of 3 messages" in text.stdout


def test_import_mbox_refuses_unknown_inbox_and_missing_file(
    config_dir: Path, tmp_path: Path
) -> None:
    """An unknown inbox or a missing file is refused with exit 1."""
    path = tmp_path / "old.mbox"
    path.write_text("")
    assert cli("import", "mbox", path, "--inbox", "nosuch", "--config", config_dir).exit_code == 1
    missing = tmp_path / "missing.mbox"
    assert cli("import", "mbox", missing, "--inbox", "sales", "--config", config_dir).exit_code == 1
