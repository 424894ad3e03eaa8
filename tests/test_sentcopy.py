"""Copies of channel replies in the Sent folder: the retry rule, giving up, stopping; the
sent_folder key; which replies carry a Reply-To."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest

from mailgateway.config import ChannelConfig, ImapConfig, load_config
from mailgateway.errors import ConfigError
from mailgateway.intake.imapclient import AuthenticationFailed, ImapError
from mailgateway.outbound.identity import SMARTHOST, Sender, Signature
from mailgateway.outbound.sentcopy import ATTEMPTS, SentCopies, SentCopy
from mailgateway.replies import reply_address
from tests.support import write_config

FAST = ImapConfig(timeout=1.0, reconnect_min=0.001, reconnect_max=0.002)
CHANNEL = ChannelConfig.model_construct(address="Help@Acme.example", sent_folder="Sent")


class FakeServer:
    """An APPEND that fails with the scripted errors, in order, then succeeds."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.saved: list[bytes] = []

    async def append(self, channel: ChannelConfig, settings: ImapConfig, data: bytes) -> None:
        """One APPEND attempt."""
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        self.saved.append(data)


class Notes:
    """Records the failures the copier notes."""

    def __init__(self) -> None:
        self.notes: list[tuple[int, str, str]] = []

    async def note(self, queue_id: int, channel: str, error: str) -> None:
        """Remember one note."""
        self.notes.append((queue_id, channel, error))


async def save_one(server: FakeServer, notes: Notes) -> None:
    """Save one copy and wait for it to finish."""
    copies = SentCopies(notes.note, append=server.append)
    copies.save(SentCopy(7, CHANNEL, FAST, b"message"))
    await copies.drain(5.0)


async def test_passing_faults_are_retried_until_the_copy_is_saved() -> None:
    """A connection fault and a refused APPEND are tried again; the third try saves it and
    nothing is noted."""
    server, notes = FakeServer(ImapError("connection lost"), OSError("refused")), Notes()
    await save_one(server, notes)
    assert (server.calls, server.saved, notes.notes) == (3, [b"message"], [])


async def test_copy_is_given_up_after_the_last_attempt_and_noted_once() -> None:
    """A server that keeps failing gets ATTEMPTS tries; the last error is noted once, on the
    row's id and the lower-cased channel address."""
    server = FakeServer(*(ImapError(f"try {n}") for n in range(ATTEMPTS + 2)))
    notes = Notes()
    await save_one(server, notes)
    assert server.calls == ATTEMPTS and server.saved == []
    assert notes.notes == [(7, "help@acme.example", f"ImapError: try {ATTEMPTS - 1}")]


async def test_refused_login_is_not_tried_again() -> None:
    """A refused login will not heal by itself: one try, then noted."""
    server, notes = FakeServer(AuthenticationFailed("login as 'help' refused")), Notes()
    await save_one(server, notes)
    assert server.calls == 1
    assert [error for _id, _channel, error in notes.notes] == [
        "AuthenticationFailed: login as 'help' refused"
    ]


async def test_copies_still_running_when_the_worker_stops_are_given_up() -> None:
    """drain() waits for the grace period only, then cancels a copy that hangs (not noted:
    the reply itself is sent and stays sent)."""
    started = asyncio.Event()

    async def hangs(channel: ChannelConfig, settings: ImapConfig, data: bytes) -> None:
        started.set()
        await asyncio.sleep(60)

    notes = Notes()
    copies = SentCopies(notes.note, append=hangs)
    copies.save(SentCopy(1, CHANNEL, FAST, b"message"))
    await started.wait()
    loop = asyncio.get_running_loop()
    begun = loop.time()
    await copies.drain(0.2)
    assert loop.time() - begun < 2.0
    assert copies.tasks == set() and notes.notes == []


def channel_inbox(secret: Path, **keys: str) -> str:
    """An inbox file with one team channel and extra channel keys."""
    server = (
        f'{{ host = "127.0.0.1", port = 1, tls = "none", user = "u", password_file = "{secret}" }}'
    )
    extra = "".join(f'{key} = "{value}"\n' for key, value in keys.items())
    return (
        textwrap.dedent(f"""\
        name = "Support"
        default = true
        [[channels]]
        address = "help@acme.example"
        imap = {server}
        smtp = {server}
        """)
        + extra
    )


def test_sent_folder_is_off_by_default_and_set_per_channel(tmp_path: Path) -> None:
    """sent_folder defaults to empty (no copies) and takes a folder name."""
    secret = tmp_path / "secret"
    secret.write_text("pw\n")
    folder = write_config(tmp_path / "c", "sqlite:////tmp/unused.db")
    support = folder / "inboxes" / "support.toml"
    support.write_text(channel_inbox(secret))
    assert load_config(folder).inboxes["support"].channels[0].sent_folder == ""
    support.write_text(channel_inbox(secret, sent_folder="Sent Items"))
    assert load_config(folder).inboxes["support"].channels[0].sent_folder == "Sent Items"


def test_sent_folder_must_not_be_the_watched_folder(tmp_path: Path) -> None:
    """Copies in the folder the poller watches would come back in as new mail: refused,
    naming the file and key."""
    secret = tmp_path / "secret"
    secret.write_text("pw\n")
    folder = write_config(tmp_path / "c", "sqlite:////tmp/unused.db")
    (folder / "inboxes" / "support.toml").write_text(channel_inbox(secret, sent_folder="INBOX"))
    with pytest.raises(ConfigError) as raised:
        load_config(folder)
    assert (raised.value.file, raised.value.key) == (
        "inboxes/support.toml",
        "channels[0].sent_folder",
    )
    assert "must differ from folder" in raised.value.problem


def test_only_fallback_email_replies_carry_a_reply_to(tmp_path: Path) -> None:
    """A reply from the fallback email carries Reply-To <local>+<token>@<forwarding domain>;
    one from a team mailbox has none, so answers go to that mailbox."""
    folder = write_config(tmp_path / "c", "sqlite:////tmp/unused.db")
    inbox = load_config(folder).inboxes["support"]
    signature = Signature("", "")
    fallback = Sender("Acme", "alice@acme.inbox.example.net", SMARTHOST, False, signature)
    team = Sender("Acme", "help@acme.example", "help@acme.example", False, signature)
    assert reply_address(inbox, "tok123", fallback) == "support+tok123@acme.inbox.example.net"
    assert reply_address(inbox, "tok123", team) is None
