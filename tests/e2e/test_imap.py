"""IMAP channels against a real Dovecot: exactly-once fetching, IDLE and polling, flags and
moves, UIDVALIDITY changes, server restarts and dropped connections, health."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailgateway.app import Gateway
from mailgateway.config import WorkerConfig
from mailgateway.domain import ChannelState
from mailgateway.inbound.worker import InboundWorker
from mailgateway.store.channels import ChannelStore
from mailgateway.store.repo import Store
from tests.dovecot import Account, Dovecot
from tests.e2e.imap_support import (
    ADDRESS,
    TcpProxy,
    health_of,
    imap_rows,
    imap_subjects,
    loaded,
    poller_for,
    rows_at_least,
    running,
    synced,
    wait_for,
    write_channel_config,
)
from tests.support import make_message, running_gateway

SEEN = "\\Seen"
LONG_AGO = datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)


async def test_existing_unread_mail_is_imported_exactly_once(
    tmp_path: Path, db_url: str, store: Store, dovecot: Dovecot, mail_account: Account
) -> None:
    """On first contact the mailbox's unread mail is queued once and marked seen; read mail
    stays out (it is `import imap`'s), and a second connection queues nothing again."""
    unread = [make_message(subject=f"unread {n}") for n in range(3)]
    dovecot.append(mail_account, *unread)
    dovecot.append(mail_account, make_message(subject="read before"), flags=SEEN, when=LONG_AGO)
    config = loaded(write_channel_config(tmp_path / "c", db_url, dovecot, mail_account))

    for _ in range(2):  # the second round is a restart: it must find nothing new
        poller = poller_for(config, store)
        async with running(poller):
            await wait_for(synced(poller), what="first pass")

    rows = await imap_rows(store)
    assert sorted(await imap_subjects(store)) == ["unread 0", "unread 1", "unread 2"]
    assert {row.channel for row in rows} == {ADDRESS}
    assert {row.inbox for row in rows} == {"support"}
    assert {row.archive for row in rows} == {False}
    flags = dovecot.flags(mail_account)
    assert len(flags) == 4 and all(SEEN in found for found in flags.values())


async def test_new_mail_arrives_while_running_through_idle(
    tmp_path: Path, db_url: str, store: Store, dovecot: Dovecot, mail_account: Account
) -> None:
    """With IDLE, mail delivered while the poller runs is queued within seconds (the poll
    interval is an hour, so only the server's push can explain it), then marked seen."""
    directory = write_channel_config(
        tmp_path / "c", db_url, dovecot, mail_account, poll_interval=3600.0
    )
    poller = poller_for(loaded(directory), store)
    async with running(poller):
        await wait_for(synced(poller), what="first pass")
        await asyncio.sleep(0.3)  # let the poller enter IDLE
        for n in range(3):
            await asyncio.to_thread(dovecot.append, mail_account, make_message(subject=f"new {n}"))
            took = await wait_for(rows_at_least(store, n + 1), timeout=10, what=f"message {n}")
            assert took < 5
    assert sorted(await imap_subjects(store)) == ["new 0", "new 1", "new 2"]
    assert all(SEEN in found for found in dovecot.flags(mail_account).values())


async def test_idle_is_renewed_and_mail_still_arrives(
    tmp_path: Path, db_url: str, store: Store, dovecot: Dovecot, mail_account: Account
) -> None:
    """IDLE is ended and re-issued every idle_renew seconds (the 29-minute rule, here 0.5 s);
    mail still arrives after several renewals on the same connection."""
    directory = write_channel_config(
        tmp_path / "c", db_url, dovecot, mail_account, imap={"idle_renew": 0.5}
    )
    poller = poller_for(loaded(directory), store)
    async with running(poller):
        await wait_for(synced(poller), what="first pass")
        passes = poller.passes
        await asyncio.sleep(2.0)
        assert poller.passes >= passes + 2  # each renewal is followed by a pass
        await asyncio.to_thread(dovecot.append, mail_account, make_message(subject="later"))
        await wait_for(rows_at_least(store, 1), what="message after renewals")
    assert poller.connections == 1
    assert await imap_subjects(store) == ["later"]


async def test_polling_fetches_new_mail_without_idle(
    tmp_path: Path, db_url: str, store: Store, dovecot: Dovecot, mail_account: Account
) -> None:
    """With `idle = false` the channel is polled every poll_interval seconds."""
    directory = write_channel_config(
        tmp_path / "c", db_url, dovecot, mail_account, idle=False, poll_interval=0.2
    )
    poller = poller_for(loaded(directory), store)
    async with running(poller):
        await wait_for(synced(poller), what="first pass")
        await asyncio.to_thread(dovecot.append, mail_account, make_message(subject="polled"))
        await wait_for(rows_at_least(store, 1), what="polled message")
    assert await imap_subjects(store) == ["polled"]


async def test_move_to_folder_instead_of_marking_seen(
    tmp_path: Path, db_url: str, store: Store, dovecot: Dovecot, mail_account: Account
) -> None:
    """With `move_to`, committed mail is moved out of the watched folder (still queued once)."""
    dovecot.create_folder(mail_account, "Processed")
    dovecot.append(mail_account, make_message(subject="one"), make_message(subject="two"))
    directory = write_channel_config(
        tmp_path / "c", db_url, dovecot, mail_account, move_to="Processed"
    )
    poller = poller_for(loaded(directory), store)
    async with running(poller):
        await wait_for(rows_at_least(store, 2), what="both queued")
        await wait_for(_folder_empty(dovecot, mail_account), what="INBOX emptied")
    assert len(dovecot.flags(mail_account, "Processed")) == 2
    assert sorted(await imap_subjects(store)) == ["one", "two"]


async def test_worker_records_the_channel_on_the_conversation(
    tmp_path: Path, db_url: str, store: Store, dovecot: Dovecot, mail_account: Account
) -> None:
    """Mail fetched from a channel becomes a conversation whose channel is the team address."""
    dovecot.append(mail_account, make_message(subject="from the team mailbox"))
    config = loaded(write_channel_config(tmp_path / "c", db_url, dovecot, mail_account))
    async with running(poller_for(config, store)):
        await wait_for(rows_at_least(store, 1), what="queued")
    worker = InboundWorker(store, WorkerConfig(poll_interval=0.1), id_domain="mx.test")
    assert await worker.run_once() == 1
    [conversation] = await store.conversation_rows()
    assert conversation.channel == ADDRESS
    assert conversation.subject == "from the team mailbox"


async def test_uidvalidity_change_loses_and_duplicates_nothing(
    tmp_path: Path, db_url: str, store: Store, dovecot: Dovecot, mail_account: Account
) -> None:
    """After the folder's UIDVALIDITY changes and its UIDs are handed out anew (a restore or a
    server move), mail stored before is recognised by Message-ID (even with changed bytes) or
    by content (no Message-ID), and only mail really new is queued: nothing lost, nothing
    twice; old read mail stays out."""
    no_id = make_message(subject="no message id").replace(b"Message-ID:", b"X-Old-ID:")
    with_id = make_message(subject="with id", message_id="<with-id@customer.test>")
    dovecot.append(mail_account, make_message(subject="old and read"), flags=SEEN, when=LONG_AGO)
    dovecot.append(mail_account, make_message(subject="unread"))
    config = loaded(write_channel_config(tmp_path / "c", db_url, dovecot, mail_account))
    poller = poller_for(config, store)
    async with running(poller):
        await wait_for(rows_at_least(store, 1), what="unread queued")
        await asyncio.to_thread(dovecot.append, mail_account, with_id, no_id)
        await wait_for(rows_at_least(store, 3), what="new mail queued")
    before = dovecot.uidvalidity(mail_account)
    [with_id_uid] = [uid for uid, _ in _uids_by_subject(dovecot, mail_account, "with id")]
    dovecot.expunge(mail_account, [with_id_uid])  # the move rewrote this one's headers
    dovecot.append(mail_account, b"X-Migrated: yes\r\n" + with_id, flags=SEEN)
    dovecot.append(mail_account, make_message(subject="arrived during the move"))
    dovecot.append(mail_account, make_message(subject="read elsewhere meanwhile"), flags=SEEN)
    dovecot.renumber(mail_account)
    assert dovecot.uidvalidity(mail_account) != before

    poller = poller_for(config, store)
    async with running(poller):
        await wait_for(synced(poller), what="pass after the change")
    assert sorted(await imap_subjects(store)) == [
        "arrived during the move",
        "no message id",
        "read elsewhere meanwhile",
        "unread",
        "with id",
    ]
    assert all(SEEN in found for found in dovecot.flags(mail_account).values())
    checkpoint = await ChannelStore(store).checkpoint(poller.mailbox)
    assert checkpoint is not None and checkpoint.uidvalidity == dovecot.uidvalidity(mail_account)


async def test_message_over_the_size_limit_is_left_and_reported(
    tmp_path: Path, db_url: str, store: Store, dovecot: Dovecot, mail_account: Account
) -> None:
    """A message over max_message_size is not fetched: it stays unread on the server, the
    channel's last error says so, and the mail after it still comes in."""
    big = make_message(subject="huge", body="x" * 80 + "\n" * 20_000)
    dovecot.append(mail_account, make_message(subject="before"), big)
    dovecot.append(mail_account, make_message(subject="after"))
    directory = write_channel_config(tmp_path / "c", db_url, dovecot, mail_account)
    gateway_file = directory / "mailgateway.toml"
    gateway_file.write_text(gateway_file.read_text().replace('"1MiB"', '"10KiB"'))
    poller = poller_for(loaded(directory), store)
    async with running(poller):
        await wait_for(synced(poller), what="first pass")
        health = await health_of(store)
    assert sorted(await imap_subjects(store)) == ["after", "before"]
    assert health.state is ChannelState.OK
    assert health.last_error is not None and "over max_message_size" in health.last_error
    unread = [uid for uid, found in dovecot.flags(mail_account).items() if SEEN not in found]
    assert len(unread) == 1


async def test_server_stopped_and_restarted_is_reconnected_to(
    tmp_path: Path, db_url: str, store: Store, private_dovecot: Dovecot
) -> None:
    """When the server goes away (it says BYE during IDLE) the poller notices at once, not at a
    timeout, records the error, retries with backoff, and once the server is back it
    reconnects and fetches what was delivered meanwhile."""
    server = private_dovecot
    account = server.account()
    directory = write_channel_config(
        tmp_path / "c", db_url, server, account, imap={"timeout": 60.0, "idle_renew": 600.0}
    )
    poller = poller_for(loaded(directory), store)
    async with running(poller):
        await wait_for(synced(poller), what="first pass")
        await asyncio.sleep(0.3)
        await asyncio.to_thread(server.stop)
        noticed = await wait_for(_state(store, ChannelState.RETRYING), 30, "retrying")
        assert noticed < 20  # Dovecot's session says BYE ~10 s after its master stops; 60 s
        # is the command timeout, so the BYE is what was noticed
        await asyncio.sleep(1.0)  # several failed attempts while the server is down
        server.deliver_file(account, make_message(subject="delivered while down"))
        await asyncio.to_thread(server.start)
        await wait_for(rows_at_least(store, 1), timeout=20, what="mail after restart")
        await wait_for(_state(store, ChannelState.OK), what="healthy again")
    health = await health_of(store)
    assert health.last_error is not None and health.last_success_at is not None
    assert health.last_success_at > health.last_error_at  # type: ignore[operator]
    assert poller.connections >= 2
    assert await imap_subjects(store) == ["delivered while down"]


async def test_dropped_and_frozen_connections_are_replaced(
    tmp_path: Path, db_url: str, store: Store, dovecot: Dovecot, mail_account: Account
) -> None:
    """Row 59: a connection cut without BYE (RST) is noticed at once; one that goes silent
    (no FIN, no answer) is given up after the renewal and the command timeout. Either way the
    poller reconnects and mail delivered meanwhile arrives."""
    async with TcpProxy(dovecot.port) as proxy:
        directory = write_channel_config(
            tmp_path / "c",
            db_url,
            dovecot,
            mail_account,
            port=proxy.port,
            imap={"timeout": 1.0, "idle_renew": 1.0},
        )
        poller = poller_for(loaded(directory), store)
        async with running(poller):
            await wait_for(synced(poller), what="first pass")
            proxy.cut()
            await asyncio.to_thread(dovecot.append, mail_account, make_message(subject="cut"))
            await wait_for(rows_at_least(store, 1), what="mail after a cut")
            proxy.freeze()
            await asyncio.to_thread(dovecot.append, mail_account, make_message(subject="frozen"))
            took = await wait_for(rows_at_least(store, 2), what="mail after a freeze")
            assert took < 10
        assert poller.connections >= 3
    assert sorted(await imap_subjects(store)) == ["cut", "frozen"]


async def test_refused_login_shows_as_auth_failed(
    tmp_path: Path, db_url: str, store: Store, private_dovecot: Dovecot
) -> None:
    """A wrong password is recorded as the channel's health (auth_failed, with the server's
    words) and retried with backoff rather than given up."""
    account = private_dovecot.account()
    wrong = Account(account.user, "not the password")
    directory = write_channel_config(tmp_path / "c", db_url, private_dovecot, wrong)
    poller = poller_for(loaded(directory), store)
    async with running(poller):
        await wait_for(_state(store, ChannelState.AUTH_FAILED), what="auth failure recorded")
    health = await health_of(store)
    assert health.last_error is not None and "refused" in health.last_error
    assert "not the password" not in health.last_error
    assert health.last_success_at is None


@pytest.mark.parametrize("tls", ["implicit", "starttls"])
async def test_tls_modes_fetch_mail(
    tmp_path: Path, db_url: str, store: Store, dovecot: Dovecot, mail_account: Account, tls: str
) -> None:
    """Implicit TLS and STARTTLS connect with a checked certificate and fetch mail."""
    dovecot.append(mail_account, make_message(subject=f"over {tls}"))
    directory = write_channel_config(tmp_path / "c", db_url, dovecot, mail_account, tls=tls)
    async with running(poller_for(loaded(directory), store)):
        await wait_for(rows_at_least(store, 1), what="queued over TLS")
    assert await imap_subjects(store) == [f"over {tls}"]


async def test_untrusted_certificate_is_refused(
    tmp_path: Path, db_url: str, store: Store, dovecot: Dovecot, mail_account: Account
) -> None:
    """A server certificate that the system CAs do not vouch for is refused (no fetch), and
    the health says why."""
    dovecot.append(mail_account, make_message(subject="must not be fetched"))
    directory = write_channel_config(tmp_path / "c", db_url, dovecot, mail_account, tls="starttls")
    inbox_file = directory / "inboxes" / "support.toml"
    inbox_file.write_text(inbox_file.read_text().replace(f', ca_file = "{dovecot.ca_file}"', ""))
    async with running(poller_for(loaded(directory), store)):
        await wait_for(_state(store, ChannelState.RETRYING), what="refused certificate")
    health = await health_of(store)
    assert health.last_error is not None and "CERTIFICATE" in health.last_error.upper()
    assert await imap_rows(store) == []


async def test_daemon_polls_enabled_channels_only(
    tmp_path: Path, db_url: str, store: Store, dovecot: Dovecot, mail_account: Account
) -> None:
    """The daemon runs a poller per enabled channel; a disabled channel is not polled, and
    enabling it (SIGHUP reload) starts its poller."""
    dovecot.append(mail_account, make_message(subject="waiting"))
    directory = write_channel_config(
        tmp_path / "c", db_url, dovecot, mail_account, status="disabled"
    )
    async with running_gateway(directory) as gateway:
        assert _polled(gateway) == []
        await asyncio.sleep(1.0)
        assert await imap_rows(store) == []
        inbox_file = directory / "inboxes" / "support.toml"
        inbox_file.write_text(inbox_file.read_text().replace('"disabled"', '"enabled"'))
        assert gateway.reload(directory)
        assert _polled(gateway) == [ADDRESS]
        await wait_for(rows_at_least(store, 1), what="queued after enabling")
        await wait_for(_conversations(store, 1), what="processed by the worker")
    [conversation] = await store.conversation_rows()
    assert conversation.channel == ADDRESS


def test_inboxes_list_shows_channel_health(
    tmp_path: Path, db_url: str, dovecot: Dovecot, mail_account: Account
) -> None:
    """`inboxes list --json` shows each channel's health as the poller recorded it."""
    from click.testing import CliRunner

    from mailgateway.cli import main
    from mailgateway.store.db import create_engine

    directory = write_channel_config(tmp_path / "c", db_url, dovecot, mail_account)

    async def one_pass() -> None:
        store = Store(create_engine(db_url))
        try:
            poller = poller_for(loaded(directory), store)
            async with running(poller):
                await wait_for(synced(poller), what="first pass")
        finally:
            await store.close()

    asyncio.run(one_pass())
    result = CliRunner().invoke(main, ["inboxes", "list", "--json", "--config", str(directory)])
    assert result.exit_code == 0, result.output
    support = next(inbox for inbox in json.loads(result.stdout) if inbox["slug"] == "support")
    channel = next(c for c in support["channels"] if c["type"] == "imap")
    assert channel["address"] == ADDRESS
    assert channel["health"] in {"ok", "stopped"}
    assert channel["last_success_at"] is not None


# -- checks -----------------------------------------------------------------------------------


def _polled(gateway: Gateway) -> list[str]:
    """The channels the daemon runs pollers for."""
    assert gateway.channels is not None
    return sorted(gateway.channels.running)


def _folder_empty(server: Dovecot, account: Account) -> object:
    """A check that INBOX holds no message."""

    async def check() -> bool:
        return not await asyncio.to_thread(server.flags, account)

    return check


def _state(store: Store, state: ChannelState) -> object:
    """A check that the channel's recorded health is `state`."""

    async def check() -> bool:
        health = await ChannelStore(store).health()
        return ADDRESS in health and health[ADDRESS].state is state

    return check


def _conversations(store: Store, count: int) -> object:
    """A check that `count` conversations exist."""

    async def check() -> bool:
        return len(await store.conversation_rows()) >= count

    return check


def _uids_by_subject(server: Dovecot, account: Account, subject: str) -> list[tuple[int, str]]:
    """UIDs of INBOX messages with this subject."""
    with server.client(account) as imap:
        imap.select("INBOX")
        _, data = imap.uid("SEARCH", "SUBJECT", f'"{subject}"')
    return [(int(uid), subject) for uid in data[0].split()]


async def test_poller_sets_channel_metrics(
    tmp_path: Path, db_url: str, store: Store, dovecot: Dovecot, mail_account: Account
) -> None:
    """A healthy pass marks the channel up and counts each fetched message in /metrics."""
    from mailgateway import metrics

    def sample(name: str) -> float:
        value = metrics.REGISTRY.get_sample_value(name, {"inbox": "support", "channel": ADDRESS})
        return value or 0.0

    async def channel_up() -> bool:
        return sample("mailgateway_imap_channel_up") == 1

    before = sample("mailgateway_imap_fetched_total")
    dovecot.append(
        mail_account, make_message(subject="counted 1"), make_message(subject="counted 2")
    )
    config = loaded(write_channel_config(tmp_path / "c", db_url, dovecot, mail_account))
    poller = poller_for(config, store)
    async with running(poller):
        await wait_for(synced(poller), what="first pass")
        await wait_for(channel_up, what="channel up")
    assert sample("mailgateway_imap_fetched_total") - before == 2
    assert sample("mailgateway_imap_channel_up") == 0  # stopped
