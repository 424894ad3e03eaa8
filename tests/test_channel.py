"""Which channel a queued message came in on, and whether it is enabled (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgateway.config import InboxConfig
from mailgateway.inbound.channel import incoming_channel
from tests.routing_support import loaded, write_routing_config


@pytest.fixture
def inbox(tmp_path: Path) -> InboxConfig:
    """Support with an enabled fallback email and a disabled IMAP team mailbox."""
    folder = write_routing_config(tmp_path / "c", "sqlite:////tmp/unused.db")
    (folder / "secret").write_text("pw\n")
    server = (
        '{ host = "127.0.0.1", port = 1143, tls = "none", user = "u", password_file = "secret" }'
    )
    with (folder / "inboxes" / "support.toml").open("a") as handle:
        handle.write(
            f'\n[[channels]]\ntype = "imap"\naddress = "help@acme.example"\nstatus = "disabled"\n'
            f"imap = {server}\nsmtp = {server}\n"
        )
    return loaded(folder).inboxes["support"]


def test_smtp_mail_comes_in_on_the_fallback_email(inbox: InboxConfig) -> None:
    """Mail from SMTP intake belongs to the fallback email, whatever the recipient."""
    channel = incoming_channel(inbox, "smtp", "help@acme.example")
    assert (channel.kind, channel.address, channel.enabled) == (
        "fallback_email",
        "support@acme.inbox.example.net",
        True,
    )


def test_imap_mail_comes_in_on_its_channel(inbox: InboxConfig) -> None:
    """Mail fetched by IMAP belongs to the channel of its address, here disabled."""
    channel = incoming_channel(inbox, "imap", "Help@Acme.example")
    assert (channel.kind, channel.address, channel.enabled) == ("imap", "help@acme.example", False)


def test_disabled_fallback_email_is_not_enabled(tmp_path: Path) -> None:
    """The archive inbox's disabled fallback email is reported disabled."""
    config = loaded(write_routing_config(tmp_path / "c", "sqlite:////tmp/unused.db"))
    archive = config.inboxes["archive"]
    assert not incoming_channel(archive, "smtp", "archive@acme.inbox.example.net").enabled
