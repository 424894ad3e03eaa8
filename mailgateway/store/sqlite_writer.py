"""SQLite writes on a thread of their own: a whole transaction costs the event loop one hop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import event
from sqlalchemy.engine import URL

T = TypeVar("T")


class SqliteWriter:
    """A synchronous connection to the SQLite file, used by one thread: aiosqlite hops to its
    thread and back for every statement, which under load costs more than the statements."""

    def __init__(self, url: URL) -> None:
        from mailgateway.store.db import _on_sqlite_begin, _on_sqlite_connect

        self.engine = create_sync_engine(
            url.set(drivername="sqlite"), pool_size=1, connect_args={"timeout": 10}
        )
        event.listen(self.engine, "connect", _on_sqlite_connect)
        event.listen(self.engine, "begin", _on_sqlite_begin)
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        """`work(connection, ...)` in one transaction on the writer's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.thread, lambda: self._transaction(work, *args))

    def _transaction(self, work: Callable[..., T], *args: Any) -> T:
        """One transaction around the work (rolled back if it raises)."""
        with self.engine.begin() as connection:
            return work(connection, *args)

    def close(self) -> None:
        """Let queued work finish, then close the connection."""
        self.thread.submit(self.engine.dispose).result()
        self.thread.shutdown(wait=True)
