"""SQLite writes on a thread of their own: a whole transaction costs the event loop one hop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import event
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError

T = TypeVar("T")

# Another process (a worker process) may hold SQLite's write lock. SQLite's own busy handler
# sleeps in growing steps (up to 100 ms) while it waits; the writer instead tries again every
# half millisecond, so an SMTP commit gets the lock soon after it is released.
BUSY_PAUSE = 0.0005
BUSY_TIMEOUT = 10.0


def _no_busy_wait(dbapi_connection: Any, _record: Any) -> None:
    """Report a held write lock at once (the writer waits for it itself)."""
    dbapi_connection.execute("PRAGMA busy_timeout=0")


class SqliteWriter:
    """A synchronous connection to the SQLite file, used by one thread: aiosqlite hops to its
    thread and back for every statement, which under load costs more than the statements."""

    def __init__(self, url: URL) -> None:
        from mailgateway.store.db import _on_sqlite_begin, _on_sqlite_connect

        self.engine = create_sync_engine(
            url.set(drivername="sqlite"), pool_size=1, connect_args={"timeout": 10}
        )
        event.listen(self.engine, "connect", _on_sqlite_connect)
        event.listen(self.engine, "connect", _no_busy_wait)
        event.listen(self.engine, "begin", _on_sqlite_begin)
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        """`work(connection, ...)` in one transaction on the writer's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.thread, lambda: self._transaction(work, *args))

    def _transaction(self, work: Callable[..., T], *args: Any) -> T:
        """One transaction around the work (rolled back if it raises), begun again while
        another process holds the write lock."""
        deadline = time.monotonic() + BUSY_TIMEOUT
        while True:
            try:
                with self.engine.begin() as connection:
                    return work(connection, *args)
            except OperationalError as error:
                if "locked" not in str(error.orig) or time.monotonic() > deadline:
                    raise
            time.sleep(BUSY_PAUSE)

    def close(self) -> None:
        """Let queued work finish, then close the connection."""
        self.thread.submit(self.engine.dispose).result()
        self.thread.shutdown(wait=True)
