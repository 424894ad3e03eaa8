"""`mailgateway serve` under a crash plan: hooks that SIGKILL the process at a chosen commit."""

from __future__ import annotations

import contextlib
import enum
import os
import random
import signal
import sys
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection

from mailgateway.store import db
from mailgateway.store.repo import Store, Submission
from mailgateway.store.sqlite_writer import SqliteWriter

KIND = "campaign_transaction"


class KillPoint(enum.StrEnum):
    """Where in a commit the process kills itself (TIMER: it does not; the campaign kills it)."""

    TIMER = "timer"
    INTAKE_BEFORE_COMMIT = "intake-before-commit"  # rows written, COMMIT not yet sent
    INTAKE_DURING_COMMIT = "intake-during-commit"  # a timer fires 0-2 ms into the COMMIT
    INTAKE_AFTER_COMMIT = "intake-after-commit"  # committed, 250 not yet written
    WORKER_BEFORE_COMMIT = "worker-before-commit"  # a worker transaction about to commit


class Plan:
    """Kill the process at the `nth` commit of the kind the point names; say so in `record`."""

    def __init__(self, point: KillPoint, nth: int, record: str) -> None:
        self.point = point
        self.remaining = nth
        self.record = record
        self.lock = threading.Lock()

    def due(self, point: KillPoint) -> bool:
        """Count one commit of that kind; True when it is the planned one."""
        if point is not self.point:
            return False
        with self.lock:
            self.remaining -= 1
            return self.remaining == 0

    def kill(self) -> None:
        """Note the point in the record file (the kernel keeps a write of a dying process),
        then SIGKILL ourselves."""
        descriptor = os.open(self.record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(descriptor, f"{self.point.value}\n".encode())
        os.close(descriptor)
        os.kill(os.getpid(), signal.SIGKILL)


def install(plan: Plan) -> None:
    """Wrap the store's transactions and group commit and listen to every engine's commits."""
    original_transaction = Store.transaction
    original_enqueue = Store.enqueue_many
    original_engine = db.create_engine

    @contextlib.asynccontextmanager
    async def transaction(self: Store, *, urgent: bool = False) -> AsyncIterator[AsyncConnection]:
        """The store's transaction, its connection tagged intake (urgent) or worker."""
        async with original_transaction(self, urgent=urgent) as connection:
            connection.sync_connection.info[KIND] = "intake" if urgent else "worker"  # type: ignore[union-attr]
            yield connection

    async def enqueue_many(self: Store, submissions: Sequence[Submission]) -> list[list[int]]:
        """The group commit; the planned kill once it returned, before any 250 is written."""
        ids = await original_enqueue(self, submissions)
        if plan.due(KillPoint.INTAKE_AFTER_COMMIT):
            plan.kill()
        return ids

    def on_commit(connection: Any) -> None:
        """SQLAlchemy's commit event: just before COMMIT goes to the database."""
        kind = connection.info.get(KIND)
        if kind == "worker" and plan.due(KillPoint.WORKER_BEFORE_COMMIT):
            plan.kill()
        if kind == "intake" and plan.due(KillPoint.INTAKE_BEFORE_COMMIT):
            plan.kill()
        if kind == "intake" and plan.due(KillPoint.INTAKE_DURING_COMMIT):
            threading.Timer(random.uniform(0, 0.002), plan.kill).start()

    def forget(_dbapi_connection: Any, record: Any) -> None:
        """A connection back in the pool belongs to no transaction."""
        record.info.pop(KIND, None)

    def create_engine(url: str) -> Any:
        """The gateway's engine, listened to."""
        engine = original_engine(url)
        event.listen(engine.sync_engine, "commit", on_commit)
        event.listen(engine.sync_engine.pool, "checkin", forget)
        return engine

    original_writer_init = SqliteWriter.__init__

    def writer_init(self: SqliteWriter, url: Any) -> None:
        """SQLite's intake writer thread commits on its own connection: listen to it too."""
        original_writer_init(self, url)
        event.listen(
            self.engine, "begin", lambda connection: connection.info.update({KIND: "intake"})
        )
        event.listen(self.engine, "commit", on_commit)
        event.listen(self.engine.pool, "checkin", forget)

    SqliteWriter.__init__ = writer_init  # type: ignore[method-assign]
    Store.transaction = transaction  # type: ignore[method-assign]
    Store.enqueue_many = enqueue_many  # type: ignore[method-assign]
    db.create_engine = create_engine
    import mailgateway.app

    mailgateway.app.create_engine = create_engine  # type: ignore[attr-defined]


def main(argv: list[str]) -> None:
    """`python -m tests.campaigns.daemon POINT NTH RECORD -- <mailgateway arguments>`."""
    point, nth, record, separator, *rest = argv
    assert separator == "--"
    install(Plan(KillPoint(point), int(nth), record))
    from mailgateway.cli import main as mailgateway

    mailgateway(rest)


if __name__ == "__main__":
    main(sys.argv[1:])
