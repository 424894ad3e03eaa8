"""Which database errors say the database is unavailable (full, read-only, locked, unreachable,
shutting down) rather than that the work in hand is at fault."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy.exc import DBAPIError

# SQLite primary result codes: BUSY, LOCKED, NOMEM, READONLY, IOERR, FULL, CANTOPEN, PROTOCOL
SQLITE_UNAVAILABLE = frozenset({5, 6, 7, 8, 10, 13, 14, 15})
# PostgreSQL SQLSTATE classes: connection exception, transaction rollback (deadlock,
# serialization), insufficient resources (disk full, too many connections), operator
# intervention (shutdown, database not accepting connections), system error (I/O)
POSTGRESQL_UNAVAILABLE = ("08", "40", "53", "57", "58")
POSTGRESQL_LOCK_NOT_AVAILABLE = "55P03"


def database_unavailable(error: BaseException) -> bool:
    """Whether the error, or one it wraps, means the database could not be reached or written;
    such a failure is the database's, not the message's."""
    return any(_unavailable(cause) for cause in _causes(error))


def _unavailable(cause: BaseException) -> bool:
    """One link of the chain."""
    if isinstance(cause, DBAPIError) and (cause.connection_invalidated or cause.statement is None):
        return True  # the connection broke, or could not even be made
    if isinstance(cause, OSError | TimeoutError):
        return True
    code = getattr(cause, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF in SQLITE_UNAVAILABLE:
        return True
    state = getattr(cause, "sqlstate", None)
    return isinstance(state, str) and (
        state[:2] in POSTGRESQL_UNAVAILABLE or state == POSTGRESQL_LOCK_NOT_AVAILABLE
    )


def _causes(error: BaseException) -> Iterator[BaseException]:
    """The error, the driver error it wraps, and what caused them."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        cause = pending.pop()
        if cause is None or id(cause) in seen:
            continue
        seen.add(id(cause))
        yield cause
        orig = getattr(cause, "orig", None)
        pending.extend(
            [orig if isinstance(orig, BaseException) else None, cause.__cause__, cause.__context__]
        )
