"""Helpers for tests of the command line: run it in-process, read its JSON, reach the store."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from click.testing import CliRunner, Result

from mailgateway.cli import main
from mailgateway.store.db import create_engine
from mailgateway.store.repo import Store

T = TypeVar("T")


def run(*args: str | Path) -> Result:
    """Invoke the CLI in-process."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def as_json(result: Result) -> Any:
    """The command's stdout as a JSON document (asserting success first)."""
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def with_store(db_url: str, action: Callable[[Store], Awaitable[T]]) -> T:
    """Run an action on a store of the test database, outside any running event loop."""

    async def run_action() -> T:
        store = Store(create_engine(db_url))
        try:
            return await action(store)
        finally:
            await store.close()

    return asyncio.run(run_action())
