"""SMTP intake over a real socket: recipient policy, limits, durable 250, and the 4xx discipline
(RELIABILITY.md rows 1–31), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from typing import Any

import aiosmtplib
import pytest
import trustme

from mailgateway.app import Gateway
from mailgateway.store.repo import Store
from tests.e2e.conftest import GatewayFactory
from tests.support import DISABLED, SALES, SUPPORT, RawSMTP, make_message, port_of


async def queued(gateway: Gateway) -> list[Any]:
    """Every inbound queue row."""
    return await gateway.store.queue_rows()


async def send(
    gateway: Gateway, data: bytes, rcpts: list[str], sender: str = "john@customer.test"
) -> str:
    """One transaction over a raw socket; returns the reply to the final dot."""
    client = await RawSMTP.connect(port_of(gateway))
    await client.command("EHLO client.test")
    try:
        return await client.transaction(sender, rcpts, data)
    finally:
        await client.close()


async def test_accepts_forwarding_address_with_250_after_commit(gateway: Gateway) -> None:
    """A message for an inbox gets `250 2.0.0 ... queued as <id>` and the row is in the queue."""
    reply = await send(gateway, make_message(), [SUPPORT])
    assert reply.startswith("250 2.0.0")
    rows = await queued(gateway)
    assert [row.inbox for row in rows] == ["support"]
    assert reply.endswith(f"queued as {rows[0].id}")


async def test_reply_token_address_is_accepted(gateway: Gateway) -> None:
    """The reply-token form `<local>+<token>@domain` reaches the inbox."""
    reply = await send(gateway, make_message(), ["support+AbC123_x@acme.inbox.example.net"])
    assert reply.startswith("250")
    [row] = await queued(gateway)
    assert row.rcpt_to == "support+abc123_x@acme.inbox.example.net"


@pytest.mark.parametrize(
    ("rcpt", "expected"),
    [
        ("victim@other.test", "550 5.7.1"),  # row 1: open relay
        ("@relay.test:victim@other.test", "550 5.7.1"),  # row 2: source route
        ("victim%other.test@acme.inbox.example.net", "550 5.1.1"),  # row 3: %-hack
        ("other.test!victim@acme.inbox.example.net", "550 5.1.1"),  # row 3: bang path
        ("nosuch@acme.inbox.example.net", "550 5.1.1"),  # row 4: unknown local
        (DISABLED, "550 5.2.1"),  # disabled channel
    ],
)
async def test_recipient_policy(gateway: Gateway, rcpt: str, expected: str) -> None:
    """Relaying, unknown local parts and disabled channels are refused at RCPT; nothing stored."""
    client = await RawSMTP.connect(port_of(gateway))
    await client.command("EHLO client.test")
    assert (await client.command("MAIL FROM:<a@customer.test>")).startswith("250")
    assert (await client.command(f"RCPT TO:<{rcpt}>")).startswith(expected)
    assert (await client.command("DATA")).startswith("503")
    await client.close()
    assert await queued(gateway) == []


async def test_out_of_order_commands_get_503(gateway: Gateway) -> None:
    """Row 5: RCPT before MAIL, DATA without RCPT and nested MAIL are answered 503."""
    client = await RawSMTP.connect(port_of(gateway))
    await client.command("EHLO client.test")
    assert (await client.command(f"RCPT TO:<{SUPPORT}>")).startswith("503")
    assert (await client.command("DATA")).startswith("503")
    assert (await client.command("MAIL FROM:<a@customer.test>")).startswith("250")
    assert (await client.command("DATA")).startswith("503")
    assert (await client.command("MAIL FROM:<b@customer.test>")).startswith("503")
    await client.close()


async def test_too_many_recipients_452_keeps_earlier(gateway: Gateway) -> None:
    """Row 6: beyond max_recipients (5 here) RCPT gets 452 4.5.3; earlier ones still deliver."""
    client = await RawSMTP.connect(port_of(gateway))
    await client.command("EHLO client.test")
    await client.command("MAIL FROM:<a@customer.test>")
    replies = [await client.command(f"RCPT TO:<{SUPPORT}>") for _ in range(5)]
    assert all(reply.startswith("250") for reply in replies)
    assert (await client.command(f"RCPT TO:<{SALES}>")).startswith("452 4.5.3")
    await client.command("DATA")
    await client.send(make_message() + b".\r\n")
    assert (await client.reply()).startswith("250")
    await client.close()
    assert [row.inbox for row in await queued(gateway)] == ["support"]


async def test_size_declared_too_big_552_at_mail(gateway: Gateway) -> None:
    """Row 7: MAIL FROM with SIZE over the limit is refused with 552 5.3.4."""
    client = await RawSMTP.connect(port_of(gateway))
    await client.command("EHLO client.test")
    reply = await client.command("MAIL FROM:<a@customer.test> SIZE=99999999")
    assert reply.startswith("552 5.3.4")
    await client.close()


async def test_data_too_big_552_nothing_stored(gateway: Gateway) -> None:
    """Row 8: DATA beyond the limit (1 MiB here) without SIZE is read to the end, then 552 5.3.4."""
    big = make_message(body=("x" * 70 + "\n") * 20000)
    reply = await send(gateway, big, [SUPPORT])
    assert reply.startswith("552 5.3.4")
    assert await queued(gateway) == []


async def test_long_text_line_500_nothing_stored(gateway: Gateway) -> None:
    """Row 9: a 1002-octet line inside DATA is answered 500 5.5.2 after the final dot."""
    reply = await send(gateway, make_message() + b"y" * 1002 + b"\r\n", [SUPPORT])
    assert reply.startswith("500 5.5.2")
    assert await queued(gateway) == []


async def test_long_command_line_500_session_continues(gateway: Gateway) -> None:
    """Row 10: a 600-octet command line gets 500 5.5.2 and the session goes on."""
    client = await RawSMTP.connect(port_of(gateway))
    assert (await client.command("NOOP " + "x" * 600)).startswith("500 5.5.2")
    assert (await client.command("EHLO client.test")).startswith("250")
    await client.close()


async def test_local_part_and_path_limits(gateway: Gateway) -> None:
    """Row 11: a 65-octet local part and a path over 256 octets are refused with 553."""
    client = await RawSMTP.connect(port_of(gateway))
    await client.command("EHLO client.test")
    assert (await client.command(f"MAIL FROM:<{'a' * 65}@customer.test>")).startswith("553")
    assert (await client.command(f"MAIL FROM:<a@{'d' * 250}.test>")).startswith("553")
    await client.command("MAIL FROM:<a@customer.test>")
    long_rcpt = f"support@{'d' * 250}.acme.inbox.example.net"
    assert (await client.command(f"RCPT TO:<{long_rcpt}>")).startswith("553")
    await client.close()


async def test_path_that_breaks_the_parser_is_malformed(gateway: Gateway) -> None:
    """A broken domain literal in MAIL or RCPT gets 553 5.1.3 (not 451), and the session goes on."""
    client = await RawSMTP.connect(port_of(gateway))
    await client.command("EHLO client.test")
    assert (await client.command("MAIL FROM:<bench@[customer.test>")).startswith("553 5.1.3")
    assert (await client.command("MAIL FROM:<a@customer.test>")).startswith("250")
    assert (await client.command("RCPT TO:<support@[acme.test>")).startswith("553 5.1.3")
    await client.close()


async def test_eight_bit_envelope_and_bad_parameters_refused(gateway: Gateway) -> None:
    """Rows 12–13: 8-bit envelope without SMTPUTF8, BODY=BINARYMIME and SMTPUTF8 are 5xx."""
    client = await RawSMTP.connect(port_of(gateway))
    await client.command("EHLO client.test")
    assert (await client.command("MAIL FROM:<jörg@customer.test>".encode())).startswith("5")
    body = await client.command("MAIL FROM:<a@customer.test> BODY=BINARYMIME")
    assert body.startswith("501")
    assert (await client.command("MAIL FROM:<a@customer.test> SMTPUTF8")).startswith("501")
    await client.close()


SMUGGLING_ENDINGS = [
    b"\n.\n",
    b"\r.\r",
    b"\r\n.\r",
    b"\r.\r\n",
    b"\r\n.\n",
    b"\n.\r\n",
    b"\r\n.\x00\r\n",
    b"\r\r\n.\r\r\n",
]


@pytest.mark.parametrize("ending", SMUGGLING_ENDINGS, ids=repr)
async def test_smtp_smuggling_is_one_message(gateway: Gateway, ending: bytes) -> None:
    """Row 14: a fake end-of-data followed by smuggled commands stays body text of one message."""
    client = await RawSMTP.connect(port_of(gateway))
    await client.command("EHLO client.test")
    await client.command("MAIL FROM:<a@customer.test>")
    await client.command(f"RCPT TO:<{SUPPORT}>")
    await client.command("DATA")
    smuggled = (
        b"From: a@customer.test\r\nSubject: one\r\n\r\nbody"
        + ending
        + b"MAIL FROM:<ceo@bank.test>\r\nRCPT TO:<"
        + SALES.encode()
        + b">\r\nDATA\r\n"
        + b"Subject: smuggled\r\n\r\nevil\r\n.\r\n"
    )
    await client.send(smuggled)
    first = await client.reply()
    assert first.startswith(("250", "500"))
    await client.close()
    rows = await queued(gateway)
    assert len(rows) <= 1
    assert all(row.inbox == "support" for row in rows)


@pytest.mark.parametrize("header", [b"Subject: a\nX-Evil: b\r\n", b"Subject: a\rX-Evil: b\r\n"])
async def test_bare_newline_in_header_refused(gateway: Gateway, header: bytes) -> None:
    """Row 15: a bare LF or CR inside the header section is refused (550 5.5.2), nothing stored."""
    data = b"From: a@customer.test\r\n" + header + b"\r\nbody\r\n"
    reply = await send(gateway, data, [SUPPORT])
    assert reply.startswith("550 5.5.2")
    assert await queued(gateway) == []


async def test_starttls_discards_pipelined_plaintext(
    gateway_factory: GatewayFactory, tmp_path: Any
) -> None:
    """Row 16: commands pipelined after STARTTLS in the same segment are not executed."""
    ca = trustme.CA()
    cert = ca.issue_cert("mx.test")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "combined.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    async with gateway_factory(
        tls_cert=str(tmp_path / "cert.pem"), tls_key=str(tmp_path / "key.pem")
    ) as gateway:
        client = await RawSMTP.connect(port_of(gateway))
        assert "STARTTLS" in await client.command("EHLO client.test")
        await client.send(b"STARTTLS\r\nRSET\r\n")
        assert (await client.reply()).startswith("220")
        context = ssl.create_default_context()
        ca.configure_trust(context)
        await client.writer.start_tls(context, server_hostname="mx.test")
        reply = await client.command("NOOP")
        assert reply.startswith("250")
        assert (await client.command("EHLO client.test")).startswith("250")
        await client.close()


async def starttls_peer(gateway: Gateway, ca: trustme.CA) -> str:
    """The host name in the certificate the gateway presents after STARTTLS."""
    client = await RawSMTP.connect(port_of(gateway))
    await client.command("EHLO client.test")
    assert (await client.command("STARTTLS")).startswith("220")
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.check_hostname = False
    await client.writer.start_tls(context)
    peer = client.writer.get_extra_info("peercert")
    await client.close()
    names = [value for kind, value in peer["subjectAltName"] if kind == "DNS"]
    return str(names[0])


async def test_renewed_certificate_presented_from_next_connection(
    gateway_factory: GatewayFactory, tmp_path: Any
) -> None:
    """Certificate and key files rewritten while serving are presented from the next STARTTLS."""
    ca = trustme.CA()
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    first = ca.issue_cert("mx.test")
    first.cert_chain_pems[0].write_to_path(str(cert))
    first.private_key_pem.write_to_path(str(key))
    async with gateway_factory(tls_cert=str(cert), tls_key=str(key)) as gateway:
        assert await starttls_peer(gateway, ca) == "mx.test"
        assert await starttls_peer(gateway, ca) == "mx.test"
        renewed = ca.issue_cert("mx2.test")
        renewed.cert_chain_pems[0].write_to_path(str(cert))
        renewed.private_key_pem.write_to_path(str(key))
        stamp = cert.stat().st_mtime_ns + 1_000_000  # changed even on a coarse-clock file system
        os.utime(cert, ns=(stamp, stamp))
        os.utime(key, ns=(stamp, stamp))
        assert await starttls_peer(gateway, ca) == "mx2.test"


async def test_unknown_commands_502_then_close(gateway: Gateway) -> None:
    """Row 17: unknown commands get 500; the fifth gets 502 5.5.1 and the session ends."""
    client = await RawSMTP.connect(port_of(gateway))
    replies = [await client.command("FOO") for _ in range(5)]
    assert all(reply.startswith("500") for reply in replies[:4])
    assert replies[4].startswith("502 5.5.1")
    assert await client.closed()


async def test_junk_command_limit_421(gateway_factory: GatewayFactory) -> None:
    """Row 18: NOOP beyond max_junk_commands ends the session with 421 4.7.0."""
    async with gateway_factory(max_junk_commands=3) as gateway:
        client = await RawSMTP.connect(port_of(gateway))
        replies = [await client.command("NOOP") for _ in range(4)]
        assert all(reply.startswith("250") for reply in replies[:3])
        assert replies[3].startswith("421 4.7.0")
        assert await client.closed()


async def test_slowloris_closed_at_idle_timeout(gateway_factory: GatewayFactory) -> None:
    """Row 19: a command trickled one byte at a time is cut off at the idle timeout."""
    async with gateway_factory(idle_timeout=1.0) as gateway:
        client = await RawSMTP.connect(port_of(gateway))
        start = asyncio.get_running_loop().time()
        closed = False
        for byte in b"NOOP NOOP NOOP NOOP":
            try:
                await client.send(bytes([byte]))
            except ConnectionError:
                closed = True
                break
            if client.reader.at_eof():
                closed = True
                break
            await asyncio.sleep(0.25)
        closed = closed or await client.closed(timeout=2)
        assert closed
        assert asyncio.get_running_loop().time() - start < 4.5


async def test_slow_data_closed_fast_data_survives(gateway_factory: GatewayFactory) -> None:
    """Row 20: DATA below min_data_rate is cut at the idle timeout, while DATA that keeps the
    rate may last longer than the idle timeout and is accepted."""
    async with gateway_factory(idle_timeout=1.0, min_data_rate=500) as gateway:
        slow = await RawSMTP.connect(port_of(gateway))
        await slow.command("MAIL FROM:<a@customer.test>")
        await slow.command(f"RCPT TO:<{SUPPORT}>")
        await slow.command("DATA")
        cut = False
        for _ in range(8):
            try:
                await slow.send(b"slow line\r\n")
            except ConnectionError:
                cut = True
                break
            await asyncio.sleep(0.3)
        assert cut or await slow.closed(timeout=2)

        fast = await RawSMTP.connect(port_of(gateway))
        await fast.command("MAIL FROM:<a@customer.test>")
        await fast.command(f"RCPT TO:<{SUPPORT}>")
        await fast.command("DATA")
        await fast.send(b"From: a@customer.test\r\nSubject: fast\r\n\r\n")
        for _ in range(10):  # 2.5 s of DATA at ~8 KB/s, past the 1 s idle timeout
            await fast.send(b"z" * 998 + b"\r\n" + b"z" * 998 + b"\r\n")
            await asyncio.sleep(0.25)
        await fast.send(b".\r\n")
        assert (await fast.reply()).startswith("250")
        await fast.close()
        assert len(await queued(gateway)) == 1


async def test_connection_cap_per_client_421(gateway_factory: GatewayFactory) -> None:
    """Row 21: the connection beyond the per-client cap gets 421 4.7.0; open sessions go on."""
    async with gateway_factory(max_connections_per_ip=3) as gateway:
        clients = [await RawSMTP.connect(port_of(gateway)) for _ in range(3)]
        extra = await RawSMTP.connect(port_of(gateway), greet=False)
        assert (await extra.reply()).startswith("421 4.7.0")
        assert await extra.closed()
        assert (await clients[0].command("NOOP")).startswith("250")
        for client in clients:
            await client.close()
        await asyncio.sleep(0.2)
        again = await RawSMTP.connect(port_of(gateway), greet=False)
        assert (await again.reply()).startswith("220")
        await again.close()


async def test_connection_cap_global_421(gateway_factory: GatewayFactory) -> None:
    """Row 21/22: the global connection cap (bounding buffered DATA memory) answers 421."""
    async with gateway_factory(max_connections=2, max_connections_per_ip=10) as gateway:
        clients = [await RawSMTP.connect(port_of(gateway)) for _ in range(2)]
        extra = await RawSMTP.connect(port_of(gateway), greet=False)
        assert (await extra.reply()).startswith("421 4.7.0")
        for client in clients:
            await client.close()


async def test_reset_mid_data_stores_nothing(gateway: Gateway) -> None:
    """Row 23: a client that resets the connection mid-DATA leaves no rows and no session slot."""
    client = await RawSMTP.connect(port_of(gateway))
    await client.command("MAIL FROM:<a@customer.test>")
    await client.command(f"RCPT TO:<{SUPPORT}>")
    await client.command("DATA")
    await client.send(b"From: a@customer.test\r\nSubject: half\r\n\r\nhalf a bo")
    sock = client.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    client.writer.transport.abort()
    await asyncio.sleep(0.3)
    assert await queued(gateway) == []
    assert not gateway.limiter.open


async def test_half_close_after_transaction_commits_whole_or_nothing(gateway: Gateway) -> None:
    """Row 24: a client that half-closes right after the final dot gets the message committed
    whole (deduplicated when it retries), never partially."""
    raw = make_message(subject="half-close")
    client = await RawSMTP.connect(port_of(gateway))
    await client.send(
        f"MAIL FROM:<a@customer.test>\r\nRCPT TO:<{SUPPORT}>\r\nDATA\r\n".encode()
        + raw
        + b".\r\nQUIT\r\n"
    )
    client.writer.write_eof()
    await client.closed(timeout=3)
    await asyncio.sleep(0.5)
    await gateway.handler.drain()
    rows = await queued(gateway)
    assert len(rows) <= 1
    assert (await send(gateway, raw, [SUPPORT])).startswith("250")
    rows = await queued(gateway)
    assert len(rows) == 1
    [item] = await gateway.store.claim("test", 5, 3) or [None]
    if item is not None:
        assert item.data == raw


class ExplodingStore(Store):
    """A store whose write fails like a driver naming an internal host."""

    async def enqueue_many(self, *args: Any, **kwargs: Any) -> list[list[int]]:
        raise RuntimeError("could not connect to server at 10.0.0.5:5432")


async def test_internal_fault_is_451_without_detail(gateway: Gateway) -> None:
    """Row 25: a fault in the handler answers 451 4.3.0 and leaks nothing of the exception."""
    gateway.handler.store = ExplodingStore(gateway.store.engine)
    reply = await send(gateway, make_message(), [SUPPORT])
    assert reply.startswith("451 4.3.0")
    assert "10.0.0.5" not in reply and "RuntimeError" not in reply


async def test_storage_low_452_at_mail(gateway: Gateway) -> None:
    """Row 27: with free space under 1.5 × max message size, MAIL gets 452 4.3.1."""
    gateway.handler.free_space = lambda: 1000
    client = await RawSMTP.connect(port_of(gateway))
    assert (await client.command("MAIL FROM:<a@customer.test>")).startswith("452 4.3.1")
    gateway.handler.free_space = lambda: 10 * 1024 * 1024 * 1024
    assert (await client.command("MAIL FROM:<a@customer.test>")).startswith("250")
    await client.close()


async def test_retried_transaction_stored_once(gateway: Gateway) -> None:
    """Row 29: the same message sent again gets 250 and is stored once."""
    raw = make_message()
    first = await send(gateway, raw, [SUPPORT])
    second = await send(gateway, raw, [SUPPORT])
    assert first.startswith("250") and second.startswith("250")
    assert first.split()[-1] == second.split()[-1]
    assert len(await queued(gateway)) == 1


async def test_same_message_to_two_inboxes_queued_for_each(gateway: Gateway) -> None:
    """One message to two inboxes is queued once for each inbox."""
    reply = await send(gateway, make_message(), [SUPPORT, SALES])
    assert reply.startswith("250")
    assert sorted(row.inbox for row in await queued(gateway)) == ["sales", "support"]


class SlowStore(Store):
    """A store whose commit takes longer than the SMTP session timeout."""

    async def enqueue_many(self, *args: Any, **kwargs: Any) -> list[list[int]]:
        await asyncio.sleep(2.0)
        return await super().enqueue_many(*args, **kwargs)


async def test_commit_slower_than_session_timeout_completes(
    gateway_factory: GatewayFactory,
) -> None:
    """Row 31: when the session times out during a slow commit, the commit still completes
    atomically; the retried transaction then finds it and is not stored twice."""
    async with gateway_factory(idle_timeout=1.0) as gateway:
        gateway.handler.store = SlowStore(gateway.store.engine)
        raw = make_message(subject="slow commit")
        client = await RawSMTP.connect(port_of(gateway))
        await client.command("MAIL FROM:<a@customer.test>")
        await client.command(f"RCPT TO:<{SUPPORT}>")
        await client.command("DATA")
        await client.send(raw + b".\r\n")
        assert not (await client.reply(timeout=5)).startswith("250")
        await gateway.handler.drain()
        assert len(await queued(gateway)) == 1
        gateway.handler.store = gateway.store
        assert (await send(gateway, raw, [SUPPORT])).startswith("250")
        assert len(await queued(gateway)) == 1


async def test_too_many_received_headers_554(gateway: Gateway) -> None:
    """A message with 51 Received headers is a mail loop: 554 5.4.6, nothing stored."""
    hops = b"".join(
        b"Received: from hop%d.test by x.test; Thu, 26 Nov 2026\r\n" % n for n in range(51)
    )
    reply = await send(gateway, hops + make_message(), [SUPPORT])
    assert reply.startswith("554 5.4.6")
    assert await queued(gateway) == []


async def test_fifty_received_headers_accepted(gateway: Gateway) -> None:
    """Exactly 50 Received headers is still accepted."""
    hops = b"".join(
        b"Received: from hop%d.test by x.test; Thu, 26 Nov 2026\r\n" % n for n in range(50)
    )
    assert (await send(gateway, hops + make_message(), [SUPPORT])).startswith("250")


async def test_header_bomb_552(gateway_factory: GatewayFactory) -> None:
    """Row 32: a header section over 1000 lines is refused with 552 5.3.4, nothing stored."""
    async with gateway_factory(max_message_size="4MiB") as gateway:
        bomb = b"".join(b"X-H%d: v\r\n" % n for n in range(100_000))
        reply = await send(gateway, bomb + make_message(), [SUPPORT])
        assert reply.startswith("552 5.3.4")
        assert await queued(gateway) == []


async def test_polite_client_end_to_end(gateway: Gateway) -> None:
    """A standard SMTP client (aiosmtplib) delivers to two inboxes in one transaction."""
    errors, response = await aiosmtplib.send(
        make_message(),
        sender="john@customer.test",
        recipients=[SUPPORT, SALES],
        hostname="127.0.0.1",
        port=port_of(gateway),
        start_tls=False,
    )
    assert errors == {}
    assert response.startswith("2.0.0 Ok: queued as")
