"""Claims on queue rows: each names the process that took the row (`host:pid`, with a role suffix
for the outbound worker and the notifier). A restarted process puts back at once the rows of a
claimer of its own host that no longer exists; rows of other hosts wait for their lease."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncConnection

CLAIMER = re.compile(r"(?P<host>[^:/]+):(?P<pid>\d+)(?:[/:][\w-]+)?")


def claimer_alive(name: str, own: str) -> bool:
    """Whether the process that claimed rows as `name` may still be working on them. A process of
    this host that no longer exists is not, nor an earlier process that had our pid (`name` is
    our own name `own`, asked before we claimed anything); processes of other hosts, and names
    of another form, are trusted until their lease runs out."""
    match = CLAIMER.fullmatch(name)
    if match is None or match["host"] != socket.gethostname():
        return True
    if name == own:
        return False
    try:
        os.kill(int(match["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


async def gone_claimers(
    connection: AsyncConnection, table: Table, active: Any, alive: Callable[[str], bool]
) -> list[str]:
    """The claimers of the table's rows in state `active` that `alive` says are gone."""
    names = await connection.scalars(
        select(table.c.claimed_by).where(table.c.state == active).distinct()
    )
    return [name for name in names if name is not None and not alive(name)]
