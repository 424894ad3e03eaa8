"""What the HTTP handlers read of the running daemon, and where they find it."""

from __future__ import annotations

import asyncio
from typing import Protocol

from aiohttp import web

from mailgateway.config import Config
from mailgateway.store.repo import Store


class Daemon(Protocol):
    """The running daemon's parts the HTTP side reads (the configuration changes on reload)."""

    config: Config
    store: Store
    servers: list[asyncio.Server]
    tasks: list[asyncio.Task[None]]


DAEMON = web.AppKey("daemon", Daemon)


def daemon_of(request: web.Request) -> Daemon:
    """The daemon serving this request."""
    return request.app[DAEMON]
