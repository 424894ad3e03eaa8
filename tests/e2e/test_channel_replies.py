"""Replies through a team email channel, end to end: a question fetched from the team mailbox
(a real Dovecot), answered through the channel's SMTP server (a recording aiosmtpd sink with
STARTTLS and AUTH), the customer's answer threading back from the mailbox; copies of sent
replies in the channel's Sent folder; channel health and queue rows as the commands show them."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from sqlalchemy import update

from mailgateway import replies
from mailgateway.cli import main
from mailgateway.config import load_config
from mailgateway.store import repo
from mailgateway.store.channels import ChannelStore
from mailgateway.store.repo import Store
from tests.dovecot import Account, Dovecot, free_port
from tests.e2e.imap_support import ADDRESS, FAST_IMAP, wait_for
from tests.outbound_support import (
    CUSTOMER,
    conversation,
    drain,
    outbound_worker,
    sending_config,
    smtp_sink,
)
from tests.support import make_message, running_gateway, toml_section, toml_value

QUESTION_ID = "<q1@customer.test>"


def channel_config(
    directory: Path,
    db_url: str,
    server: Dovecot,
    account: Account,
    *,
    smtp_port: int,
    smarthost_port: int,
    smtp_tls: str = "starttls",
    imap_port: int | None = None,
    trust_ca: bool = True,
    fallback: str = "",
    **options: object,
) -> Path:
    """A sending configuration whose support inbox has one team channel: IMAP on the test
    Dovecot (or another port), SMTP on a sink (STARTTLS with the test CA by default), the
    account's password in a file; `fallback` adds keys to [fallback_email]."""
    secret = directory / "secrets" / "help"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text(account.password + "\n")
    login = f'user = "{account.user}", password_file = "{secret}"'
    imap_port = imap_port or server.port
    ca = f', ca_file = "{server.ca_file}"' if trust_ca and smtp_tls != "none" else ""
    lines = [
        "",
        "[[channels]]",
        'type = "imap"',
        f'address = "{ADDRESS}"',
        f'imap = {{ host = "127.0.0.1", port = {imap_port}, tls = "none", {login} }}',
        f'smtp = {{ host = "127.0.0.1", port = {smtp_port}, tls = "{smtp_tls}", {login}{ca} }}',
        *(f"{key} = {toml_value(value)}" for key, value in options.items()),
    ]
    sending_config(directory, db_url, smarthost_port, support=fallback + "\n".join(lines) + "\n")
    with (directory / "mailgateway.toml").open("a") as gateway:
        gateway.write(toml_section("imap", FAST_IMAP))
    return directory


def sink_tls(server: Dovecot) -> ssl.SSLContext:
    """A server context with a certificate for 127.0.0.1 from the test CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


def parsed(data: bytes) -> EmailMessage:
    """A message, parsed."""
    message = message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def cli_json(*args: str | Path) -> Any:
    """Run a command with --json in-process; its parsed output (call via asyncio.to_thread)."""
    result = CliRunner().invoke(main, [*map(str, args), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def team_channel(inboxes: list[dict[str, Any]]) -> dict[str, Any]:
    """The team channel's entry in `inboxes list --json`."""
    support = next(inbox for inbox in inboxes if inbox["slug"] == "support")
    found: dict[str, Any] = next(c for c in support["channels"] if c["type"] == "imap")
    return found


def folder_messages(server: Dovecot, account: Account, folder: str) -> list[tuple[bytes, str]]:
    """Every message of a folder with its flags, read by the stdlib client; [] when the
    folder does not exist."""
    with server.client(account) as imap:
        status, _ = imap.select(folder, readonly=True)
        if status != "OK":
            return []
        status, data = imap.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[])")
    assert status == "OK", data
    found = []
    for item in data:
        if isinstance(item, tuple):
            flags = re.search(rb"FLAGS \(([^)]*)\)", item[0])
            found.append((item[1], (flags.group(1) if flags else b"").decode()))
    return found


async def conversation_with(store: Store, messages: int) -> int:
    """The id of the only conversation, once it holds `messages` messages."""
    found: list[int] = []

    async def check() -> bool:
        rows = await store.conversation_rows()
        if len(rows) == 1 and len(await store.message_rows(rows[0].id)) >= messages:
            found.append(int(rows[0].id))
            return True
        return False

    await wait_for(check, timeout=20, what=f"a conversation of {messages} messages")
    return found[-1]


async def test_team_mailbox_question_is_answered_through_the_channel_and_threads_back(
    tmp_path: Path, db_url: str, dovecot: Dovecot, mail_account: Account
) -> None:
    """In an inbox that takes mail only from its team mailbox (fallback email disabled), the
    daemon fetches a question, `reply` answers it from the team address through the channel's
    SMTP server (STARTTLS checked against the channel's ca_file, AUTH as the channel's user),
    with In-Reply-To/References and no Reply-To to the forwarding address; the customer's
    answer, delivered to the team mailbox, joins the same conversation. `queue list` and
    `inboxes list` show the channel's rows and health."""
    question = make_message(
        sender=f"John Doe <{CUSTOMER}>",
        to=ADDRESS,
        message_id=QUESTION_ID,
        subject="Jammed",
        Return_Path=f"<{CUSTOMER}>",  # as the delivering MTA writes it
    )
    dovecot.append(mail_account, question)
    credentials = (mail_account.user, mail_account.password)
    async with (
        smtp_sink() as smarthost,
        smtp_sink(credentials=credentials, tls_context=sink_tls(dovecot)) as server,
    ):
        directory = channel_config(
            tmp_path / "config",
            db_url,
            dovecot,
            mail_account,
            smtp_port=server.port,
            smarthost_port=smarthost.port,
            fallback='status = "disabled"\n',
        )
        async with running_gateway(directory) as gateway:
            store = gateway.store
            conversation_id = await conversation_with(store, 1)
            command = ["reply", str(conversation_id), "--as", "alice", "--text", "On it."]
            result = await asyncio.to_thread(
                CliRunner().invoke, main, [*command, "--config", str(directory)]
            )
            assert result.exit_code == 0, result.output
            [received] = await server.wait_for(1)
            ours = parsed(received.data)
            answer = make_message(
                subject="Re: Jammed",
                sender=f"John Doe <{CUSTOMER}>",
                to=ADDRESS,
                body="Thanks!\n",
                In_Reply_To=str(ours["Message-ID"]),
                References=f"{QUESTION_ID} {ours['Message-ID']}",
                Return_Path=f"<{CUSTOMER}>",
            )
            await asyncio.to_thread(dovecot.append, mail_account, answer)
            assert await conversation_with(store, 3) == conversation_id
            rows = await store.message_rows(conversation_id)
            [conversation_row] = await store.conversation_rows()
            queue = await asyncio.to_thread(
                cli_json, "queue", "list", "--all", "--config", directory
            )
            inboxes = await asyncio.to_thread(cli_json, "inboxes", "list", "--config", directory)
    assert smarthost.connections == 0
    assert (received.login, received.tls) == (mail_account.user, True)
    assert (received.mail_from, received.rcpt_tos) == (ADDRESS, [CUSTOMER])
    sender = ours["From"].addresses[0]
    assert (sender.addr_spec, sender.display_name) == (ADDRESS, "Alice Nowak from Acme Support")
    assert ours["In-Reply-To"] == ours["References"] == QUESTION_ID
    assert ours["Reply-To"] is None
    assert "d=acme.example" in re.sub(r"\s+", "", str(ours["DKIM-Signature"]))
    assert [r.direction for r in rows] == ["inbound", "outbound", "inbound"]
    assert [r.auto_submitted for r in rows] == [False, False, False]
    assert rows[1].from_email == ADDRESS
    assert rows[2].thread_reason == "in_reply_to"
    assert conversation_row.channel == ADDRESS
    [outgoing] = [r for r in queue if r["queue"] == "outbound"]
    assert (outgoing["state"], outgoing["transport"], outgoing["mail_from"]) == (
        "sent",
        ADDRESS,
        ADDRESS,
    )
    assert (outgoing["channel"], outgoing["conversation_id"]) == (ADDRESS, conversation_id)
    incoming = [r for r in queue if r["queue"] == "inbound"]
    assert [(r["source"], r["channel"], r["state"]) for r in incoming] == [
        ("imap", ADDRESS, "done"),
        ("imap", ADDRESS, "done"),
    ]
    channel = team_channel(inboxes)
    assert channel["health"] == "ok" and channel["last_error"] is None
    assert channel["sending"]["last_sent_at"] is not None
    assert (channel["sending"]["waiting"], channel["sending"]["held"]) == (0, 0)
    assert channel["sending"]["last_error"] is None


async def test_sent_reply_is_saved_in_the_channel_sent_folder(
    tmp_path: Path, db_url: str, store: Store, dovecot: Dovecot, mail_account: Account
) -> None:
    """With sent_folder = "Sent" (not there yet: the server asks for it to be created), each
    reply sent through the channel is appended there, marked \\Seen, byte for byte as sent
    (DKIM signature included); the watched INBOX gets nothing."""
    credentials = (mail_account.user, mail_account.password)
    async with smtp_sink() as smarthost, smtp_sink(credentials=credentials) as server:
        directory = channel_config(
            tmp_path / "config",
            db_url,
            dovecot,
            mail_account,
            smtp_port=server.port,
            smarthost_port=smarthost.port,
            smtp_tls="none",
            sent_folder="Sent",
        )
        conversation_id = await channel_conversation(store)
        worker = outbound_worker(store, directory)
        for text in ("First answer.", "Second answer."):
            await reply_as_alice(directory, store, conversation_id, text)
            await drain(worker)
        await worker.copies.drain(20)
    copies = folder_messages(dovecot, mail_account, "Sent")
    assert len(server.messages) == 2
    assert [data for data, _flags in copies] == [m.data for m in server.messages]
    assert all("\\Seen" in flags for _data, flags in copies)
    assert all(b"DKIM-Signature:" in data for data, _flags in copies)
    assert folder_messages(dovecot, mail_account, "INBOX") == []


async def test_copy_that_cannot_be_saved_is_noted_and_the_reply_is_not_sent_again(
    tmp_path: Path, db_url: str, store: Store, dovecot: Dovecot, mail_account: Account
) -> None:
    """When the channel's IMAP server cannot be reached, the copy is tried three times and
    given up: the reply was sent once and stays sent, its queue row and the channel's health
    say the copy is missing, and later worker rounds send nothing more."""
    credentials = (mail_account.user, mail_account.password)
    async with smtp_sink() as smarthost, smtp_sink(credentials=credentials) as server:
        directory = channel_config(
            tmp_path / "config",
            db_url,
            dovecot,
            mail_account,
            smtp_port=server.port,
            smarthost_port=smarthost.port,
            smtp_tls="none",
            imap_port=free_port(),
            sent_folder="Sent",
        )
        conversation_id = await channel_conversation(store)
        worker = outbound_worker(store, directory)
        appends = 0
        append = worker.copies.append

        async def counted(*args: Any) -> None:
            nonlocal appends
            appends += 1
            await append(*args)

        worker.copies.append = counted
        await reply_as_alice(directory, store, conversation_id, "Answer.")
        await drain(worker)
        await worker.copies.drain(20)
        await drain(worker)
        [row] = await worker.queue.rows()
        health = (await ChannelStore(store).health())[ADDRESS]
        inboxes = await asyncio.to_thread(cli_json, "inboxes", "list", "--config", directory)
    assert appends == 3
    assert len(server.messages) == 1 and server.data_attempts == 1
    assert row.state == "sent" and row.attempts == 1
    assert row.reason.startswith("2.0.0 Ok: queued; not copied to the Sent folder: ImapError")
    assert health.last_error is not None and "not copied to the Sent folder" in health.last_error
    assert "not copied to the Sent folder" in team_channel(inboxes)["last_error"]


async def test_untrusted_channel_certificate_holds_the_reply_and_shows_in_health(
    tmp_path: Path, db_url: str, store: Store, dovecot: Dovecot, mail_account: Account
) -> None:
    """Without the channel's ca_file the SMTP server's private certificate is not trusted:
    nothing is sent, the reply is held, and `inboxes list` shows the channel's sending
    trouble (held rows, last error) while its IMAP side stays as it was."""
    credentials = (mail_account.user, mail_account.password)
    async with (
        smtp_sink() as smarthost,
        smtp_sink(credentials=credentials, tls_context=sink_tls(dovecot)) as server,
    ):
        directory = channel_config(
            tmp_path / "config",
            db_url,
            dovecot,
            mail_account,
            smtp_port=server.port,
            smarthost_port=smarthost.port,
            trust_ca=False,
        )
        conversation_id = await channel_conversation(store)
        await reply_as_alice(directory, store, conversation_id, "Answer.")
        await drain(outbound_worker(store, directory))
        inboxes = await asyncio.to_thread(cli_json, "inboxes", "list", "--config", directory)
    assert server.messages == []
    sending = team_channel(inboxes)["sending"]
    assert (sending["held"], sending["waiting"], sending["last_sent_at"]) == (1, 0, None)
    assert "certificate" in sending["last_error"].lower()
    assert sending["last_error_at"] is not None


async def test_channel_server_without_auth_holds_the_reply(
    tmp_path: Path, db_url: str, store: Store, dovecot: Dovecot, mail_account: Account
) -> None:
    """A channel SMTP server that offers no AUTH (here: plain text, where servers keep AUTH
    for TLS) is a wrong route: the reply is held at once with that reason, not retried."""
    async with smtp_sink() as smarthost, smtp_sink() as server:
        directory = channel_config(
            tmp_path / "config",
            db_url,
            dovecot,
            mail_account,
            smtp_port=server.port,
            smarthost_port=smarthost.port,
            smtp_tls="none",
        )
        conversation_id = await channel_conversation(store)
        await reply_as_alice(directory, store, conversation_id, "Answer.")
        worker = outbound_worker(store, directory)
        await drain(worker)
        [row] = await worker.queue.rows()
    assert server.data_attempts == 0
    assert (row.state, row.attempts) == ("held", 1)
    assert "offers no AUTH" in row.reason


# -- helpers ------------------------------------------------------------------------------------


async def channel_conversation(store: Store) -> int:
    """A conversation from a customer whose channel is the team address (as the poller and
    the worker record it)."""
    conversation_id = await conversation(store)
    async with store.engine.begin() as connection:
        await connection.execute(
            update(repo.conversations)
            .where(repo.conversations.c.id == conversation_id)
            .values(channel=ADDRESS)
        )
    return conversation_id


async def reply_as_alice(directory: Path, store: Store, conversation_id: int, text: str) -> None:
    """Queue a reply by alice through the service the `reply` command uses."""
    request = replies.ReplyRequest(conversation_id, "alice", text)
    await replies.queue_reply(load_config(directory), store, request)
