"""Group commit: messages that finish DATA while a commit is in flight share the next one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from mailgateway.logs import get_logger
from mailgateway.store.repo import Submission

log = get_logger(__name__)

CommitBatch = Callable[[Sequence[Submission]], Awaitable[list[list[int]]]]


class GroupCommit:
    """Queues submissions and commits them in batches, one transaction per batch; each caller
    is answered only after the transaction holding its message has committed. A failed batch is
    retried one message at a time, so one bad message cannot fail its neighbours."""

    def __init__(self, commit: CommitBatch, max_batch: int = 128) -> None:
        self.commit = commit
        self.max_batch = max_batch
        self.waiting: list[tuple[Submission, asyncio.Future[list[int]]]] = []
        self.drainer: asyncio.Task[None] | None = None

    def submit(self, submission: Submission) -> asyncio.Future[list[int]]:
        """Queue one message for the next commit (with whatever else is waiting); the future
        of its queue ids, settled once that commit is done (a future, not a task to wrap: one
        task fewer per message)."""
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self.waiting.append((submission, future))
        if self.drainer is None or self.drainer.done():
            self.drainer = asyncio.create_task(self._drain())
        return future

    async def _drain(self) -> None:
        """Commit batches until nothing is waiting."""
        while self.waiting:
            batch = self.waiting[: self.max_batch]
            del self.waiting[: self.max_batch]
            await self._commit(batch)

    async def _commit(self, batch: list[tuple[Submission, asyncio.Future[list[int]]]]) -> None:
        """One transaction for the batch; on failure, one per message."""
        try:
            results = await self.commit([submission for submission, _ in batch])
        except Exception as error:
            if len(batch) == 1:
                _settle(batch[0][1], error=error)
                return
            log.warning("intake.batch_failed", size=len(batch), error=type(error).__name__)
            for item in batch:
                await self._commit([item])
            return
        for (_, future), ids in zip(batch, results, strict=True):
            _settle(future, result=ids)


def _settle(
    future: asyncio.Future[list[int]],
    *,
    result: list[int] | None = None,
    error: BaseException | None = None,
) -> None:
    """Resolve a caller's future unless the caller is long gone."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result or [])
