"""Replies end to end: queued, DKIM-signed, sent into a recording aiosmtpd sink; retries,
failures, holds, the daemon's outbound worker, and a customer's answer threading back."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import smtplib
import socket
import subprocess
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import dkim
import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from mailgateway import replies, verification
from mailgateway.cli import main
from mailgateway.config import load_config
from mailgateway.domain import OutboundKind, OutboundState
from mailgateway.errors import ConfigError, RefusedError
from mailgateway.outbound import sign
from mailgateway.store import repo
from mailgateway.store.outbound import OutboundStore, Outgoing, from_addresses, outbound_queue
from mailgateway.store.repo import Store
from tests.outbound_support import (
    CUSTOMER,
    SELECTOR,
    conversation,
    dkim_record,
    drain,
    outbound_worker,
    sending_config,
    smtp_sink,
)
from tests.support import make_message, port_of, running_gateway
from tests.system import require_system

VERIFIER = Path(__file__).resolve().parents[1] / "tools" / "dkim_verify.pl"


def cli(*args: str | Path) -> Any:
    """Run a command in-process (call through asyncio.to_thread from async tests)."""
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


def parsed(data: bytes) -> EmailMessage:
    """A received message, parsed."""
    message = message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def bodies(message: EmailMessage) -> tuple[str, str]:
    """The text and HTML alternatives of a reply."""
    text = message.get_body(("plain",))
    markup = message.get_body(("html",))
    assert text is not None and markup is not None
    return content(text), content(markup)


def content(part: EmailMessage) -> str:
    """A decoded text part with plain newlines."""
    return str(part.get_content()).replace("\r\n", "\n")


def signed_headers(data: bytes) -> list[str]:
    """The h= list of the message's DKIM-Signature."""
    signature = str(parsed(data)["DKIM-Signature"])
    tags = dict(
        part.strip().split("=", 1) for part in re.sub(r"\s+", " ", signature).split(";") if part
    )
    assert "l" not in tags
    return [name.strip() for name in tags["h"].split(":")]


async def reply(config_dir: Path, store: Store, conversation_id: int, text: str = "Hello") -> Any:
    """Queue a reply by alice through the service the `reply` command uses."""
    request = replies.ReplyRequest(conversation_id, "alice", text)
    return await replies.queue_reply(load_config(config_dir), store, request)


async def conversation_json(config_dir: Path, conversation_id: int) -> dict[str, Any]:
    """`conversations show ID --json`."""
    result = await asyncio.to_thread(
        cli, "conversations", "show", str(conversation_id), "--json", "--config", config_dir
    )
    assert result.exit_code == 0, result.output
    shown: dict[str, Any] = json.loads(result.stdout)
    return shown


async def test_reply_reaches_smarthost_with_identity_signature_and_threading(
    tmp_path: Path, db_url: str, store: Store
) -> None:
    """A reply arrives once with the team's from name and address, the filled signature in
    both alternatives, In-Reply-To/References per RFC 5322, Reply-To with the reply token, our
    Message-ID, no Auto-Submitted, and a DKIM signature dkimpy verifies."""
    async with smtp_sink() as sink:
        config_dir = sending_config(tmp_path / "config", db_url, sink.port)
        raw = make_message(
            sender=f"John Doe <{CUSTOMER}>",
            message_id="<q2@customer.test>",
            References="<q0@customer.test> <q1@customer.test>",
            In_Reply_To="<q1@customer.test>",
        )
        conversation_id = await conversation(store, raw)
        queued = await reply(config_dir, store, conversation_id, "Hello John,\n\nIt is out.")
        await drain(outbound_worker(store, config_dir))
        [received] = sink.messages
    token = (await store.conversation_rows(ids=[conversation_id]))[0].reply_token
    reply_to = f"support+{token}@acme.inbox.example.net"
    message = parsed(received.data)
    [sender] = message["From"].addresses
    assert (sender.display_name, sender.addr_spec) == (
        "Alice Nowak from Acme Support",
        "alice@acme.inbox.example.net",
    )
    assert message["To"] == f"John Doe <{CUSTOMER}>"
    assert message["Subject"] == "Re: Printer on fire"
    assert message["In-Reply-To"] == "<q2@customer.test>"
    assert message["References"] == "<q0@customer.test> <q1@customer.test> <q2@customer.test>"
    assert message["Reply-To"] == reply_to
    assert message["Message-ID"] == queued.message_id
    assert queued.message_id.endswith("@acme.inbox.example.net>")
    assert message["Date"] is not None and message["Auto-Submitted"] is None
    text, markup = bodies(message)
    assert text.startswith("Hello John,\n\nIt is out.\n")
    assert "\n-- \nAlice Nowak\nAcme & Co Support" in text
    assert '<div class="signature"><p>Alice Nowak<br>Acme &amp; Co Support</p></div>' in markup
    assert (received.mail_from, received.rcpt_tos) == (reply_to, [CUSTOMER])
    record = dkim_record(load_config(config_dir))
    assert dkim.verify(received.data, dnsfunc=lambda name, timeout=5: record)
    assert not dkim.verify(
        received.data.replace(b"It is out", b"It is in!"), dnsfunc=lambda n, timeout=5: record
    )
    shown = await conversation_json(config_dir, conversation_id)
    outbound = shown["messages"][-1]
    assert outbound["direction"] == "outbound"
    assert outbound["message_id"] == queued.message_id
    assert outbound["delivery"]["state"] == "sent"
    assert outbound["delivery"]["author"] == "alice"


async def test_signature_oversigns_headers_and_has_no_length_tag(
    tmp_path: Path, db_url: str, store: Store
) -> None:
    """The DKIM signature covers From, To, Cc, Subject, Date, Message-ID, In-Reply-To,
    References and Reply-To twice (oversigned) and has no l= tag."""
    async with smtp_sink() as sink:
        config_dir = sending_config(tmp_path / "config", db_url, sink.port)
        await reply(config_dir, store, await conversation(store))
        await drain(outbound_worker(store, config_dir))
        [received] = sink.messages
    names = signed_headers(received.data)
    for header in (
        "from",
        "to",
        "cc",
        "subject",
        "date",
        "message-id",
        "in-reply-to",
        "references",
        "reply-to",
    ):
        assert names.count(header) == 2, header
    assert str(parsed(received.data)["DKIM-Signature"]).replace(" ", "").count("a=rsa-sha256") == 1


async def test_signature_verified_by_perl_mail_dkim(
    tmp_path: Path, db_url: str, store: Store
) -> None:
    """Perl's Mail::DKIM, an independent implementation, verifies the delivered reply with the
    public key answered locally for mg1._domainkey.<from domain>, and rejects a tampered copy."""
    if (
        shutil.which("perl") is None
        or subprocess.run(
            ["perl", "-MMail::DKIM::Verifier", "-e", "1"], capture_output=True, check=False
        ).returncode
    ):
        require_system("perl with Mail::DKIM (Debian package libmail-dkim-perl)")
    async with smtp_sink() as sink:
        config_dir = sending_config(tmp_path / "config", db_url, sink.port)
        await reply(config_dir, store, await conversation(store), "Grüße from Acme.")
        await drain(outbound_worker(store, config_dir))
        [received] = sink.messages
    name = f"{SELECTOR}._domainkey.acme.inbox.example.net"
    record = dkim_record(load_config(config_dir)).decode()

    def verify(data: bytes) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["perl", str(VERIFIER), name, record], input=data, capture_output=True, check=False
        )

    good = verify(received.data)
    assert good.returncode == 0 and good.stdout.startswith(b"pass"), good
    bad = verify(received.data.replace(b"Subject: Re:", b"Subject: Fw:"))
    assert bad.returncode == 1 and bad.stdout.startswith(b"fail"), bad


async def test_ed25519_key_signs_verifiably(tmp_path: Path, db_url: str, store: Store) -> None:
    """With an Ed25519 key the reply carries an ed25519-sha256 signature dkimpy verifies."""
    async with smtp_sink() as sink:
        config_dir = sending_config(tmp_path / "config", db_url, sink.port, dkim=False)
        pem, key = sign.generate_key(sign.Algorithm.ED25519)
        sign.write_key_file(config_dir / "ed.key", pem)
        text = (config_dir / "mailgateway.toml").read_text()
        (config_dir / "mailgateway.toml").write_text(
            text + 'dkim_selector = "ed1"\ndkim_key = "ed.key"\n'
        )
        await reply(config_dir, store, await conversation(store))
        await drain(outbound_worker(store, config_dir))
        [received] = sink.messages
    record = sign.txt_value(key).encode()
    assert b"a=ed25519-sha256" in received.data
    assert dkim.verify(received.data, dnsfunc=lambda name, timeout=5: record)


async def test_451_then_250_gives_exactly_one_delivery(
    tmp_path: Path, db_url: str, store: Store
) -> None:
    """A smarthost answering 451 defers the reply (with the reply as reason and a later
    attempt time); the retry's 250 delivers it, and the customer gets exactly one copy."""
    async with smtp_sink(data_replies=["451 4.3.0 Try again later"]) as sink:
        config_dir = sending_config(tmp_path / "config", db_url, sink.port)
        queued = await reply(config_dir, store, await conversation(store))
        worker = outbound_worker(store, config_dir)
        assert await worker.run_once() == 1
        [row] = await worker.queue.rows()
        assert (row.state, row.reason, row.attempts) == ("deferred", "451 4.3.0 Try again later", 1)
        assert row.next_attempt_at > row.updated_at
        await drain(worker)
        assert (len(sink.messages), sink.data_attempts) == (1, 2)
    [row] = await OutboundStore(store.engine).rows()
    assert (row.id, row.state, row.attempts) == (queued.queue_id, "sent", 2)


@pytest.mark.parametrize("where", ["data", "rcpt"])
async def test_550_marks_the_reply_failed_on_the_conversation(
    tmp_path: Path, db_url: str, store: Store, where: str
) -> None:
    """A 550 (at RCPT or after DATA) fails the reply at once, and `conversations show --json`
    shows it failed with the server's answer."""
    refusal = "550 5.1.1 No such user"
    options = {"data_replies": [refusal]} if where == "data" else {"rcpt_reply": refusal}
    async with smtp_sink(**options) as sink:
        config_dir = sending_config(tmp_path / "config", db_url, sink.port)
        conversation_id = await conversation(store)
        await reply(config_dir, store, conversation_id)
        await drain(outbound_worker(store, config_dir))
        assert sink.messages == []
    delivery = (await conversation_json(config_dir, conversation_id))["messages"][-1]["delivery"]
    assert delivery["state"] == "failed"
    assert delivery["reason"] == refusal
    assert delivery["attempts"] == 1


async def test_unreachable_smarthost_defers_then_gives_up(
    tmp_path: Path, db_url: str, store: Store
) -> None:
    """Connection refused is temporary: deferred with growing delays, and failed with a
    "gave up" reason once the configured lifetime is over."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config_dir = sending_config(tmp_path / "config", db_url, port, give_up_after=0.5)
    await reply(config_dir, store, await conversation(store))
    worker = outbound_worker(store, config_dir)
    await worker.run_once()
    [row] = await worker.queue.rows()
    assert row.state == "deferred" and row.reason
    await drain(worker, rounds=100)
    [row] = await worker.queue.rows()
    assert row.state == "failed"
    assert row.reason.startswith("gave up after") and row.attempts >= 2


async def test_signing_failure_holds_and_never_sends_unsigned(
    tmp_path: Path, db_url: str, store: Store
) -> None:
    """A key dkimpy cannot sign with holds the reply (no connection to the smarthost); after
    `queue retry` a worker with a good key sends it, signed, once."""
    async with smtp_sink() as sink:
        config_dir = sending_config(tmp_path / "config", db_url, sink.port)
        queued = await reply(config_dir, store, await conversation(store))
        broken = sign.Signer(sign.DkimKey(sign.Algorithm.RSA, b"not a key", b""), SELECTOR)
        worker = outbound_worker(store, config_dir)
        worker.signer = broken
        await drain(worker)
        [row] = await worker.queue.rows()
        assert row.state == "held" and "DKIM signing failed" in row.reason
        assert (sink.connections, sink.messages) == (0, [])
        result = await asyncio.to_thread(
            cli, "queue", "retry", str(queued.queue_id), "--config", config_dir
        )
        assert result.exit_code == 0, result.output
        await drain(outbound_worker(store, config_dir))
        [received] = sink.messages
    assert received.data.startswith(b"DKIM-Signature:")


async def test_envelope_with_line_break_is_held_before_any_byte(
    tmp_path: Path, db_url: str, store: Store
) -> None:
    """An outbound row whose envelope address holds CR/LF (SMTP command injection) is held
    without the smarthost ever being contacted."""
    async with smtp_sink() as sink:
        config_dir = sending_config(tmp_path / "config", db_url, sink.port)
        queue = OutboundStore(store.engine)
        evil = "a@acme.example>\r\nRCPT TO:<victim@other.test"
        await queue.queue(Outgoing(make_message(), OutboundKind.REPLY, evil, (CUSTOMER,)))
        await queue.queue(Outgoing(make_message(), OutboundKind.REPLY, "", ("x@y.test\n",)))
        await drain(outbound_worker(store, config_dir))
        assert sink.connections == 0
    rows = await OutboundStore(store.engine).rows()
    assert [(r.state, "unsafe envelope" in r.reason) for r in rows] == [("held", True)] * 2


async def test_bare_lf_dot_line_in_reply_is_one_message_downstream(
    tmp_path: Path, db_url: str, store: Store
) -> None:
    """A reply text holding "\\n.\\n" and SMTP commands stays one message: the smarthost gets
    one transaction whose body still holds the text."""
    async with smtp_sink() as sink:
        config_dir = sending_config(tmp_path / "config", db_url, sink.port)
        text = "first\n.\nMAIL FROM:<ceo@bank.test>\r\n.\r\nlast"
        await reply(config_dir, store, await conversation(store), text)
        await drain(outbound_worker(store, config_dir))
        [received] = sink.messages
    assert sink.data_attempts == 1
    plain, _ = bodies(parsed(received.data))
    assert "first\n.\nMAIL FROM:<ceo@bank.test>\n.\nlast" in plain


async def test_team_channel_reply_goes_through_its_smtp_server_with_auth(
    tmp_path: Path, db_url: str, store: Store
) -> None:
    """A conversation that came in on a team mailbox is answered from that address through the
    channel's own SMTP server, logged in with the channel's user and password file."""
    async with smtp_sink() as smarthost, smtp_sink(credentials=("help", "s3cret")) as server:
        secret = tmp_path / "secret"
        secret.write_text("s3cret\n")
        channel = (
            '\n[[channels]]\naddress = "help@acme.example"\n'
            f'imap = {{ host = "127.0.0.1", port = 1, tls = "none", user = "help", '
            f'password_file = "{secret}" }}\n'
            f'smtp = {{ host = "127.0.0.1", port = {server.port}, tls = "none", user = "help", '
            f'password_file = "{secret}" }}\n'
        )
        config_dir = sending_config(tmp_path / "config", db_url, smarthost.port, support=channel)
        conversation_id = await conversation(store)
        async with store.engine.begin() as connection:
            await connection.execute(update(repo.conversations).values(channel="help@acme.example"))
        await reply(config_dir, store, conversation_id)
        await drain(outbound_worker(store, config_dir))
        [received] = server.messages
        assert smarthost.connections == 0
    assert (received.login, received.mail_from) == ("help", "help@acme.example")
    assert parsed(received.data)["From"].addresses[0].addr_spec == "help@acme.example"


async def test_daemon_sends_replies_and_the_customer_answer_threads_back(
    tmp_path: Path, db_url: str
) -> None:
    """`serve`'s outbound worker sends a `reply`; the customer's answer to its Reply-To address,
    with In-Reply-To our Message-ID, joins the same conversation."""
    async with smtp_sink() as sink:
        config_dir = sending_config(tmp_path / "config", db_url, sink.port)
        async with running_gateway(config_dir) as gateway:
            assert gateway.outbound is not None
            port = port_of(gateway)
            first = make_message(sender=f"John Doe <{CUSTOMER}>")
            await asyncio.to_thread(smtp_send, port, "support@acme.inbox.example.net", first)
            conversation_id = await wait_for_messages(gateway.store, 1)
            result = await asyncio.to_thread(
                cli,
                "reply",
                str(conversation_id),
                "--as",
                "alice",
                "--text",
                "On it.",
                "--config",
                config_dir,
            )
            assert result.exit_code == 0, result.output
            [received] = await sink.wait_for(1)
            ours = parsed(received.data)
            answer = make_message(
                subject="Re: Printer on fire",
                sender=f"John Doe <{CUSTOMER}>",
                to=str(ours["Reply-To"]),
                body="Thanks!\n",
                In_Reply_To=str(ours["Message-ID"]),
            )
            await asyncio.to_thread(smtp_send, port, str(ours["Reply-To"]), answer)
            assert await wait_for_messages(gateway.store, 3) == conversation_id
            rows = await gateway.store.message_rows(conversation_id)
    assert [r.direction for r in rows] == ["inbound", "outbound", "inbound"]
    assert rows[-1].thread_reason == "in_reply_to"


def smtp_send(port: int, rcpt: str, data: bytes) -> None:
    """Deliver one message to the gateway's intake."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail(CUSTOMER, [rcpt], data)


async def wait_for_messages(store: Store, count: int, timeout: float = 15.0) -> int:
    """The id of the only conversation once it holds `count` messages."""
    async with asyncio.timeout(timeout):
        while True:
            rows = await store.conversation_rows()
            if len(rows) == 1 and len(await store.message_rows(rows[0].id)) >= count:
                return int(rows[0].id)
            await asyncio.sleep(0.05)


async def test_custom_from_address_verified_by_mailed_code(
    tmp_path: Path, db_url: str, store: Store
) -> None:
    """A custom from address is refused until verified; the code goes out through the queue
    (null sender, Auto-Submitted, signed), is stored only hashed, its bytes are wiped once
    sent; a wrong code is refused, the right one verifies once, then replies go out from it."""
    async with smtp_sink() as sink:
        custom = 'from_address = "help@acme.example"\n'
        config_dir = sending_config(tmp_path / "config", db_url, sink.port, support=custom)
        config = load_config(config_dir)
        conversation_id = await conversation(store)
        with pytest.raises(RefusedError, match="not verified"):
            await reply(config_dir, store, conversation_id)
        queue_id = await verification.request_code(config, store, "help@acme.example")
        await drain(outbound_worker(store, config_dir))
        [mail] = sink.messages
        message = parsed(mail.data)
        assert (mail.mail_from, mail.rcpt_tos) == ("<>", ["help@acme.example"])
        assert message["Auto-Submitted"] == "auto-generated"
        assert dkim.verify(mail.data, dnsfunc=lambda name, timeout=5: dkim_record(config))
        match = re.search(r"Verification code: (\d{6})", str(message.get_content()))
        assert match is not None
        code = match.group(1)
        async with store.engine.connect() as connection:
            stored = await connection.scalar(select(from_addresses.c.code_hash))
            raw = await connection.scalar(
                select(repo.raw_messages.c.data)
                .join(outbound_queue, outbound_queue.c.raw_id == repo.raw_messages.c.id)
                .where(outbound_queue.c.id == queue_id)
            )
        assert stored is not None and code not in stored and raw == b""
        wrong = "000000" if code != "000000" else "111111"
        with pytest.raises(RefusedError, match="wrong code"):
            await verification.confirm_code(config, store, "help@acme.example", wrong)
        await verification.confirm_code(config, store, "help@acme.example", code)
        with pytest.raises(RefusedError, match="no code is pending"):
            await verification.confirm_code(config, store, "help@acme.example", code)
        await reply(config_dir, store, conversation_id)
        await drain(outbound_worker(store, config_dir))
        assert len(sink.messages) == 2
    sent = parsed(sink.messages[1].data)
    assert sent["From"].addresses[0].addr_spec == "help@acme.example"
    states = [r.state for r in await OutboundStore(store.engine).rows()]
    assert states == [OutboundState.SENT, OutboundState.SENT]


async def test_unusable_key_refuses_start_and_reload_keeps_the_old_key(
    tmp_path: Path, db_url: str
) -> None:
    """The daemon does not start with a key it cannot parse (ConfigError naming the key); a
    reload picks up a new key, and a reload with an unusable key keeps the working one."""
    async with smtp_sink() as sink:
        config_dir = sending_config(tmp_path / "config", db_url, sink.port)
        key_file = config_dir / "dkim" / f"{SELECTOR}.key"
        good = key_file.read_bytes()
        key_file.write_bytes(b"not a key")
        with pytest.raises(ConfigError, match=r"outbound\.dkim_key"):
            async with running_gateway(config_dir):
                pass
        key_file.write_bytes(good)
        async with running_gateway(config_dir) as gateway:
            assert gateway.outbound is not None and gateway.outbound.signer is not None
            first = gateway.outbound.signer.key
            key_file.unlink()
            pem, second = sign.generate_key(sign.Algorithm.ED25519)
            sign.write_key_file(key_file, pem)
            assert gateway.reload(config_dir)
            assert gateway.outbound.signer.key == second != first
            key_file.write_bytes(b"broken")
            gateway.reload(config_dir)
            assert gateway.outbound.signer.key == second
