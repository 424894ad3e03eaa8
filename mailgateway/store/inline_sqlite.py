"""An async SQLAlchemy dialect for SQLite whose statements run inline on the event loop's thread.

aiosqlite hands every statement to a thread of its own and back, which costs more than a simple
statement itself. A process that does nothing but database work (an inbound worker process) keeps
no one waiting while a statement runs, so there SQLite's statements run where they are called:
`sqlite+inline:///PATH`.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.util import await_


async def _done() -> None:
    """An awaitable that completes at once: the asyncio extension wants every operation to
    await something, and inline work has nothing to wait for."""


class InlineCursor(sqlite3.Cursor):
    """A sqlite3 cursor whose statements count as awaited."""

    def execute(self, sql: str, parameters: Any = (), /) -> InlineCursor:
        """Run the statement now."""
        await_(_done())
        super().execute(sql, parameters)
        return self

    def executemany(self, sql: str, parameters: Any, /) -> InlineCursor:
        """Run the statement for each set of parameters now."""
        await_(_done())
        super().executemany(sql, parameters)
        return self

    async def _async_soft_close(self) -> None:
        """Nothing to release early: the rows are read from this cursor where they are used."""


class InlineConnection(sqlite3.Connection):
    """A sqlite3 connection handing out inline cursors; commits count as awaited."""

    def cursor(self, factory: Any = InlineCursor) -> Any:
        """An inline cursor."""
        return super().cursor(factory)

    def commit(self) -> None:
        """Commit now."""
        await_(_done())
        super().commit()

    def rollback(self) -> None:
        """Roll back now."""
        await_(_done())
        super().rollback()


class InlineSQLiteDialect(SQLiteDialect_pysqlite):
    """pysqlite with inline connections, accepted by the asyncio extension."""

    is_async = True
    supports_statement_cache = True

    @classmethod
    def get_pool_class(cls, url: Any) -> type[AsyncAdaptedQueuePool]:
        """A queue pool that asyncio code may wait on."""
        return AsyncAdaptedQueuePool

    def create_connect_args(self, url: Any) -> Any:
        """pysqlite's arguments, with the inline connection class."""
        args, kwargs = super().create_connect_args(url)
        return args, {**kwargs, "factory": InlineConnection}


SCHEME = "sqlite+inline"
registry.register("sqlite.inline", __name__, "InlineSQLiteDialect")
