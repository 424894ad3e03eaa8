"""Composition root: builds the store, intake and worker from the configuration and runs them."""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import make_url

from mailgateway.config import Config, DatabaseConfig, EventLoop, ServerConfig, load_config
from mailgateway.errors import ConfigError, RefusedError
from mailgateway.inbound.worker import InboundWorker
from mailgateway.intake.imap import ChannelPollers
from mailgateway.intake.smtp import ConnectionLimiter, IntakeHandler, start_servers
from mailgateway.logs import get_logger
from mailgateway.notifier import Notifier
from mailgateway.outbound.sign import load_signer
from mailgateway.outbound.worker import OutboundWorker
from mailgateway.sdnotify import SystemdNotifier
from mailgateway.store.db import create_engine, current_revision, head_revision
from mailgateway.store.repo import Store
from mailgateway.web.server import HttpServer, start_http
from mailgateway.worker_processes import WorkerProcesses

log = get_logger(__name__)

SHUTDOWN_GRACE = 10.0


def open_store(config: Config) -> Store:
    """A store on the configured database."""
    return Store(create_engine(config.gateway.database.async_url))


async def require_schema(store: Store) -> None:
    """Refuse to run on a database that `db upgrade` has not brought to this version."""
    revision, head = await current_revision(store.engine), head_revision()
    if revision != head:
        found = revision or "nothing"
        msg = f"database schema is at {found}, not {head}: run `mailgateway db upgrade`"
        raise RefusedError(msg)


# How long a free-space figure stands: statvfs on every MAIL blocked the event loop behind the
# writer's fsync under load (tens of microseconds a message); the commit still answers 451 when
# the disk fills between two looks.
FREE_SPACE_REFRESH = 0.5


def free_space_probe(
    database: DatabaseConfig, clock: Callable[[], float] = time.monotonic
) -> Callable[[], int | None]:
    """Free bytes where a SQLite database lives (PostgreSQL reports its own full disk), looked
    up at most every FREE_SPACE_REFRESH seconds."""
    if not database.is_sqlite:
        return lambda: None
    folder = Path(make_url(database.async_url).database or ".").parent
    last: list[tuple[float, int | None]] = []

    def probe() -> int | None:
        now = clock()
        if last and now - last[0][0] < FREE_SPACE_REFRESH:
            return last[0][1]
        try:
            free: int | None = shutil.disk_usage(folder).free
        except OSError:
            free = None
        last[:] = [(now, free)]
        return free

    return probe


@dataclass
class Gateway:
    """The running daemon's parts."""

    config: Config
    store: Store
    handler: IntakeHandler
    worker: InboundWorker
    limiter: ConnectionLimiter
    servers: list[asyncio.Server] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    outbound: OutboundWorker | None = None
    http: HttpServer | None = None
    workers: WorkerProcesses | None = None  # with [worker] processes > 0; else `worker` runs here

    notifier: Notifier | None = None
    channels: ChannelPollers | None = None  # IMAP pollers, one per enabled channel

    @property
    def sockets(self) -> list[str]:
        """The addresses the SMTP listeners are bound to, as host:port."""
        return [
            f"{sock.getsockname()[0]}:{sock.getsockname()[1]}"
            for server in self.servers
            for sock in server.sockets
        ]

    def reload(self, directory: Path) -> bool:
        """Load the configuration again; an invalid one is refused and the old one stays."""
        try:
            config = load_config(directory)
        except ConfigError as error:
            log.error("config.reload_refused", error=str(error))
            return False
        self.config = config
        self.handler.config = config
        if self.outbound is not None:
            self.outbound.reconfigure(config)

        self.worker.reconfigure(config)
        if self.workers is not None:
            self.workers.reload()
        if self.notifier is not None:
            self.notifier.settings = config.gateway.notifications
        if self.channels is not None:
            self.channels.apply(config)
        log.info("config.reloaded", inboxes=len(config.inboxes))
        return True

    async def shutdown(self) -> None:
        """Stop accepting, let sessions finish (up to a grace period), drain commits, stop the
        worker after the row in hand."""
        for server in self.servers:
            server.close()
        with suppress(TimeoutError):
            async with asyncio.timeout(SHUTDOWN_GRACE):
                while self.limiter.open:
                    await asyncio.sleep(0.05)
        await self.handler.drain()
        if self.channels is not None:
            await self.channels.stop()
        self.worker.stop()
        if self.workers is not None:
            await self.workers.stop(SHUTDOWN_GRACE)
        if self.outbound is not None:
            self.outbound.stop()

        if self.notifier is not None:
            self.notifier.stop()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.http is not None:
            await self.http.close()
        await self.store.close()


async def start(config: Config) -> Gateway:
    """Build every part and start listening and processing."""
    signer = load_signer(config.gateway.outbound)
    store = open_store(config)
    await require_schema(store)
    gateway_settings = config.gateway
    worker = InboundWorker(
        store, gateway_settings.worker, id_domain=gateway_settings.smtp.hostname, config=config
    )
    processes = gateway_settings.worker.processes
    workers = WorkerProcesses(config.directory, processes) if processes else None
    wake = worker.wake if workers is None else workers.wake
    handler = IntakeHandler(
        config, store, free_space=free_space_probe(gateway_settings.database), on_commit=wake
    )
    limiter = ConnectionLimiter(
        gateway_settings.smtp.max_connections, gateway_settings.smtp.max_connections_per_ip
    )
    gateway = Gateway(config, store, handler, worker, limiter)
    gateway.servers = await start_servers(handler, limiter, gateway_settings.smtp.endpoints)
    if workers is None:
        gateway.tasks.append(asyncio.create_task(worker.run()))
    else:
        gateway.workers = workers
        workers.start()
    gateway.outbound = OutboundWorker(store, config, signer)
    gateway.tasks.append(asyncio.create_task(gateway.outbound.run()))

    gateway.notifier = Notifier(
        store,
        gateway_settings.notifications,
        name=worker.name,
        poll_interval=gateway_settings.worker.poll_interval,
    )
    gateway.tasks.append(asyncio.create_task(gateway.notifier.run()))

    gateway.channels = ChannelPollers(store, on_commit=wake)
    gateway.channels.apply(config)
    gateway.http = await start_http(gateway, gateway_settings.http.endpoint)
    log.info(
        "gateway.started",
        listen=",".join(gateway.sockets),
        http=gateway.http.address,
        inboxes=len(config.inboxes),
    )
    return gateway


def reload_notified(gateway: Gateway, directory: Path, notifier: SystemdNotifier) -> None:
    """SIGHUP: reload, telling systemd RELOADING first and READY once done (also when refused:
    the old configuration keeps running)."""
    notifier.reloading()
    gateway.reload(directory)
    notifier.ready(f"serving {len(gateway.config.inboxes)} inboxes")


def loop_factory(server: ServerConfig) -> Callable[[], asyncio.AbstractEventLoop]:
    """The event loop `[server] event_loop` names (uvloop by default when installed)."""
    if server.event_loop is EventLoop.UVLOOP:
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def run(directory: Path) -> int:
    """Run the daemon on the configured event loop until it is stopped."""
    server = load_config(directory).gateway.server
    with asyncio.Runner(loop_factory=loop_factory(server)) as runner:
        loop = runner.get_loop()
        log.info("gateway.event_loop", event_loop=server.event_loop, loop=type(loop).__module__)
        return runner.run(serve(directory))


async def serve(directory: Path) -> int:
    """Run the daemon until SIGTERM or SIGINT; SIGHUP reloads the configuration."""
    config = load_config(directory)
    gateway = await start(config)
    notifier = SystemdNotifier()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload_notified, gateway, directory, notifier)
    notifier.ready(f"serving {len(config.inboxes)} inboxes")
    watchdog = asyncio.create_task(notifier.keep_alive())
    await stop.wait()
    log.info("gateway.stopping")
    notifier.stopping()
    await gateway.shutdown()
    watchdog.cancel()
    log.info("gateway.stopped")
    return 0
