"""IMAP fetch rate: a channel's first pass over N unread 1 KB messages (fetch by UID, durable
commit with the checkpoint, then \\Seen), as a ratio to a bare client that fetches the same
messages and sets \\Seen without storing anything, both measured in this run (not a test).

    python bench/bench_imap.py [--messages 500] [--database sqlite|postgresql]

Needs dovecot (Debian: dovecot-core, dovecot-imapd); PostgreSQL at 127.0.0.1:5432 for
--database postgresql.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mailgateway import logs  # noqa: E402
from mailgateway.config import load_config  # noqa: E402
from mailgateway.intake.imap import ChannelPoller, poller_specs  # noqa: E402
from mailgateway.store.db import create_engine, upgrade  # noqa: E402
from mailgateway.store.repo import Store  # noqa: E402
from tests.dovecot import Account, Dovecot, channel_block  # noqa: E402
from tests.support import make_message, toml_section, write_config  # noqa: E402

BATCH = 50


def bare_fetch(server: Dovecot, account: Account) -> float:
    """Seconds for a plain client to fetch every message by UID and mark them seen."""
    start = time.perf_counter()
    with server.client(account) as imap:
        imap.select("INBOX")
        _, data = imap.uid("SEARCH", "UNSEEN")
        uids = data[0].split()
        for offset in range(0, len(uids), BATCH):
            batch = uids[offset : offset + BATCH]
            for uid in batch:
                imap.uid("FETCH", uid, "(UID FLAGS INTERNALDATE RFC822.SIZE)")
                imap.uid("FETCH", uid, "(UID BODY.PEEK[])")
            imap.uid("STORE", b",".join(batch), "+FLAGS.SILENT", "(\\Seen)")
    return time.perf_counter() - start


async def gateway_pass(directory: Path, url: str) -> float:
    """Seconds for the channel's poller to complete its first pass."""
    engine = create_engine(url)
    await upgrade(engine)
    store = Store(engine)
    [spec] = poller_specs(load_config(directory)).values()
    poller = ChannelPoller(store, spec)
    start = time.perf_counter()
    async with poller.session() as session:
        await poller.sync(session)
    took = time.perf_counter() - start
    await store.close()
    return took


def fill(server: Dovecot, account: Account, count: int) -> None:
    """N distinct unread messages of about 1 KB."""
    body = ("x" * 70 + "\n") * 12
    server.append(account, *(make_message(subject=f"bench {n}", body=body) for n in range(count)))


PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def postgres(statement: str) -> None:
    """Run one administrative statement on the local PostgreSQL."""
    import asyncpg

    async def run() -> None:
        connection = await asyncpg.connect(PG_ADMIN)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run())


def main() -> None:
    """Run both passes and print the rates and their ratio."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    logs.configure("warning")
    name = f"mg_bench_{uuid.uuid4().hex[:8]}"
    folder = Path(tempfile.mkdtemp(prefix="mg-bench-"))
    server = Dovecot()
    server.add_users(2)
    server.start()
    try:
        baseline_account, gateway_account = server.account(), server.account()
        fill(server, baseline_account, args.messages)
        fill(server, gateway_account, args.messages)
        url = f"sqlite+aiosqlite:///{folder / 'bench.db'}"
        if args.database == "postgresql":
            postgres(f'CREATE DATABASE "{name}"')
            url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
        directory = write_config(folder / "config", url)
        secret = folder / "secret"
        secret.write_text(gateway_account.password)
        with (directory / "mailgateway.toml").open("a") as gateway:
            gateway.write(toml_section("imap", {"timeout": 30.0}))
        with (directory / "inboxes" / "support.toml").open("a") as inbox:
            inbox.write("\n" + channel_block(server, gateway_account, secret))
        bare = bare_fetch(server, baseline_account)
        ours = asyncio.run(gateway_pass(directory, url))
    finally:
        server.close()
        shutil.rmtree(folder, ignore_errors=True)
        if args.database == "postgresql":
            postgres(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    n = args.messages
    print(f"bare fetch + \\Seen:            {n / bare:8.1f} messages/s")
    print(f"mailgateway first pass ({args.database}): {n / ours:8.1f} messages/s")
    print(f"ratio (mailgateway / bare):     {bare / ours:8.2f}")


if __name__ == "__main__":
    main()
