"""A recording chat webhook for tests: a real aiohttp server on 127.0.0.1 with scripted replies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web


class RecordingWebhook:
    """Records every JSON body posted to /hook; answers the scripted statuses, then 200."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.headers: dict[str, str] = {}
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        """Record the body and answer the next scripted status."""
        self.received.append(await request.json())
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, text="ok", headers=self.headers)

    async def wait_for(self, count: int, timeout: float = 15.0) -> None:
        """Wait until at least `count` posts have arrived."""
        async with asyncio.timeout(timeout):
            while len(self.received) < count:
                await asyncio.sleep(0.02)


@asynccontextmanager
async def recording_webhook() -> AsyncIterator[RecordingWebhook]:
    """A webhook server on a free port of 127.0.0.1, stopped afterwards."""
    hook = RecordingWebhook()
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    hook.url = f"http://{host}:{port}/hook"
    try:
        yield hook
    finally:
        await runner.cleanup()
