"""The HTTP listener (aiohttp): /healthz, /metrics, /openapi.json and the JSON API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from mailgateway import metrics
from mailgateway.domain import OutboundState, QueueState
from mailgateway.logs import get_logger
from mailgateway.store import api as api_store
from mailgateway.store.repo import Store
from mailgateway.web import api
from mailgateway.web.context import DAEMON, Daemon

log = get_logger(__name__)

HEALTH_TIMEOUT = 3.0
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@cache
def openapi_document() -> dict[str, Any]:
    """The API's OpenAPI description, as shipped beside this module."""
    text = resources.files("mailgateway.web").joinpath("openapi.json").read_text("utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


async def database_state(store: Store) -> str:
    """ "ok" when the database answers within the health timeout, else what went wrong."""
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT):
            await api_store.ping(store)
    except TimeoutError:
        return "timeout"
    except Exception as error:
        return f"unreachable ({type(error).__name__})"
    return "ok"


def listener_state(servers: Sequence[asyncio.Server]) -> str:
    """ "ok" while every SMTP listener accepts connections."""
    if servers and all(server.is_serving() for server in servers):
        return "ok"
    return "down"


def worker_state(tasks: Sequence[asyncio.Task[None]]) -> str:
    """ "ok" while every background task (workers) is running."""
    return "ok" if all(not task.done() for task in tasks) else "stopped"


async def healthz(request: web.Request) -> web.Response:
    """200 when the database answers and the listeners and workers run; 503 otherwise."""
    daemon = request.app[DAEMON]
    checks = {
        "database": await database_state(daemon.store),
        "smtp": listener_state(daemon.servers),
        "workers": worker_state(daemon.tasks),
    }
    healthy = all(state == "ok" for state in checks.values())
    body = {"status": "ok" if healthy else "failing", "checks": checks}
    return web.json_response(body, status=200 if healthy else 503)


async def metrics_page(request: web.Request) -> web.Response:
    """Prometheus' text format; queue depths are read from the database now."""
    store = request.app[DAEMON].store
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT):
            inbound = await store.queue_counts()
            outbound = await api_store.outbound_counts(store)
        metrics.set_queue_depths("inbound", inbound, tuple(QueueState))
        metrics.set_queue_depths("outbound", outbound, tuple(OutboundState))
    except Exception as error:  # the rest of the page is still worth serving
        log.warning("metrics.queue_depth_failed", error=type(error).__name__)
    return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI description of the JSON API."""
    return web.json_response(openapi_document())


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every answer by route template (bounded label values) and status."""
    route = request.match_info.route.resource
    name = route.canonical if route is not None else "unmatched"
    try:
        response = await handler(request)
    except web.HTTPException as error:
        metrics.HTTP_REQUESTS.labels(route=name, status=str(error.status)).inc()
        raise
    metrics.HTTP_REQUESTS.labels(route=name, status=str(response.status)).inc()
    return response


def build_app(daemon: Daemon) -> web.Application:
    """The whole HTTP application for a running daemon."""
    app = web.Application(middlewares=[count_requests, api.authenticate, api.json_errors])
    app[DAEMON] = daemon
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/openapi.json", openapi)
    api.add_routes(app)
    return app


@dataclass
class HttpServer:
    """The running HTTP listener."""

    runner: web.AppRunner

    @property
    def address(self) -> str:
        """The bound address as host:port."""
        host, port = self.runner.addresses[0][:2]
        return f"{host}:{port}"

    async def close(self) -> None:
        """Stop listening and finish the requests in progress."""
        await self.runner.cleanup()


async def start_http(daemon: Daemon, endpoint: tuple[str, int]) -> HttpServer:
    """Serve HTTP on the endpoint on the running loop."""
    runner = web.AppRunner(build_app(daemon), access_log=None, handle_signals=False)
    await runner.setup()
    host, port = endpoint
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    return HttpServer(runner)
