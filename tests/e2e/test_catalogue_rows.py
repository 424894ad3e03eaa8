"""Catalogue rows that had no test of their own: 22 (memory of concurrent maximum-size DATA) and 52
(backscatter), over real sockets on both databases."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mailgateway.app import Gateway
from mailgateway.store.outbound import OutboundStore
from tests.campaigns.crash import DaemonProcess, free_port, listening
from tests.campaigns.daemon import KillPoint
from tests.support import SUPPORT, RawSMTP, make_message, port_of, write_config

MiB = 1024 * 1024
SESSIONS = 100
CAP = 20


def peak_memory(pid: int) -> int:
    """A process's peak resident memory in bytes (Linux /proc VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


async def max_size_transfer(port: int, body: bytes) -> str:
    """Open a session and send a message just under the size limit; the last reply seen."""
    try:
        client = await RawSMTP.connect(port, greet=False)
    except OSError as error:
        return type(error).__name__
    try:
        greeting = await client.reply()
        if not greeting.startswith("220"):
            return greeting
        await client.command("EHLO client.test")
        await client.command("MAIL FROM:<a@customer.test>")
        await client.command(f"RCPT TO:<{SUPPORT}>")
        await client.command("DATA")
        await client.send(body + b".\r\n")
        return await client.reply(timeout=60)
    except (ConnectionError, TimeoutError) as error:
        return type(error).__name__
    finally:
        await client.close()


async def test_row_22_concurrent_max_size_data_stays_within_budget(
    tmp_path: Path, db_url: str
) -> None:
    """Row 22: 100 clients sending a maximum-size message (1 MiB here) at once: beyond the
    connection cap they get 421, and the daemon's peak memory grows by less than the cap times
    four message sizes (aiosmtpd holds a message in memory while it arrives), not by 100 times."""
    port = free_port()
    config = write_config(
        tmp_path / "config",
        db_url,
        listen=[f"127.0.0.1:{port}"],
        max_message_size="1MiB",
        max_connections=CAP,
        max_connections_per_ip=SESSIONS,
        idle_timeout=60.0,
    )
    daemon = DaemonProcess(config, tmp_path, KillPoint.TIMER, 0)
    try:
        assert await listening(port, daemon)
        baseline = peak_memory(daemon.process.pid)
        line = b"x" * 998 + b"\r\n"
        body = make_message(body="start\n") + line * (MiB // len(line) - 8)
        replies = await asyncio.gather(*(max_size_transfer(port, body) for _ in range(SESSIONS)))
        growth = peak_memory(daemon.process.pid) - baseline
    finally:
        assert daemon.terminate() == 0
    accepted = [reply for reply in replies if reply.startswith("250")]
    refused = [reply for reply in replies if reply.startswith("421 4.7.0")]
    assert len(accepted) >= CAP and len(accepted) + len(refused) == SESSIONS, set(replies)
    assert growth < CAP * 4 * MiB, f"{growth >> 20} MiB"


async def test_row_52_no_backscatter(gateway: Gateway) -> None:
    """Row 52: a forged sender writing to an unknown recipient is refused during the SMTP
    dialogue (550 at RCPT), never accepted and bounced later: nothing is queued in or out, and
    accepted hostile mail (a forged bounce) never makes the gateway send anything."""
    client = await RawSMTP.connect(port_of(gateway))
    assert (await client.command("MAIL FROM:<victim@innocent.test>")).startswith("250")
    assert (await client.command("RCPT TO:<nosuch@acme.inbox.example.net>")).startswith("550 5.1.1")
    assert (await client.command("DATA")).startswith("503")
    forged_bounce = make_message(
        sender="MAILER-DAEMON@innocent.test",
        subject="Undelivered Mail Returned to Sender",
        Auto_Submitted="auto-replied",
    )
    assert (await client.transaction("", [SUPPORT], forged_bounce)).startswith("250")
    await client.close()
    await gateway.handler.drain()
    for _ in range(50):
        rows = await gateway.store.queue_rows()
        if rows and all(row.state == "done" for row in rows):
            break
        await asyncio.sleep(0.1)
    assert [row.rcpt_to for row in rows] == [SUPPORT]
    assert await OutboundStore(gateway.store.engine).rows() == []
