"""Scale benchmark (not a test): intake and end-to-end rates as ratios to a bare aiosmtpd sink
measured in the same run, end-of-data -> 250 latency, peak memory, rates with a million stored
messages, and two processes on PostgreSQL against one. Prints one table.

    python bench/bench_scale.py [--messages 3000] [--rounds 3] [--stored 1000000]
                                [--database sqlite|postgresql|both]

The load is Postfix's smtp-source (1 KB messages, 10 sessions, a new connection per message) where
installed, else a Python client; servers run in child processes. Each rate is the median of
`--rounds` runs, the sink's and the gateway's runs interleaved (this machine is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PG_ADMIN = os.environ.get("MAILGATEWAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
SENDER = "bench@customer.test"
RCPT = "support@acme.inbox.example.net"
SESSIONS = 10
WORKERS = 1  # worker processes beside each SMTP process (the default on two cores or more)


# -- servers (child processes) -------------------------------------------------------------------


def serve_sink(port: int, loop: str) -> None:
    """A bare aiosmtpd server that answers 250 to everything and stores nothing."""
    from aiosmtpd.smtp import SMTP

    class Sink:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            return "250 OK"

    async def main() -> None:
        running = asyncio.get_running_loop()
        await running.create_server(lambda: SMTP(Sink(), hostname="bench"), "127.0.0.1", port)
        stop = asyncio.Event()
        running.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()

    run_on(loop, main)


def serve_gateway(config_dir: Path, worker: bool) -> None:
    """The gateway's parts as the daemon builds them, on its configured loop; with `worker`
    false the inbound worker is stopped (intake alone)."""
    from mailgateway import app, logs
    from mailgateway.config import load_config

    logs.configure("warning")
    config = load_config(config_dir)

    async def main() -> None:
        gateway = await app.start(config)
        if not worker:
            gateway.worker.stop()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await gateway.shutdown()

    with asyncio.Runner(loop_factory=app.loop_factory(config.gateway.server)) as runner:
        runner.run(main())


def run_on(loop: str, main: Callable[[], object]) -> None:
    """Run a coroutine function on asyncio's loop or uvloop."""
    if loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    else:
        factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())  # type: ignore[arg-type]


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def server(*args: str) -> Iterator[subprocess.Popen[bytes]]:
    """This script as a server child process, waited for until it listens, then stopped."""
    child = subprocess.Popen([sys.executable, __file__, "--serve", *args])
    port = int(args[1])
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or child.poll() is not None:
                child.kill()
                raise SystemExit(f"bench: server {args[0]} did not start") from None
            time.sleep(0.05)
    try:
        yield child
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()


def sink(loop: str = "asyncio") -> tuple[int, Callable[[], object]]:
    """A port and a context factory for a sink server."""
    port = free_port()
    return port, lambda: server("sink", str(port), loop)


def gateway(config_dir: Path, worker: bool = True) -> tuple[int, Callable[[], object]]:
    """A port and a context factory for a gateway server on that port."""
    port = free_port()
    text = (config_dir / "mailgateway.toml").read_text()
    start = text.index("listen = [")
    end = text.index("]", start)
    text = text[:start] + f'listen = ["127.0.0.1:{port}"' + text[end:]
    (config_dir / "mailgateway.toml").write_text(text)
    return port, lambda: server("gateway", str(port), str(config_dir), "1" if worker else "0")


# -- load ------------------------------------------------------------------------------------------


def send(port: int, messages: int, sessions: int = SESSIONS, size: int = 1024) -> float:
    """Send `messages` messages of `size` bytes over `sessions` parallel sessions, a new
    connection per message; the seconds it took."""
    started = time.perf_counter()
    if shutil.which("smtp-source"):
        subprocess.run(
            [*source_command(sessions, messages, size), f"127.0.0.1:{port}"],
            check=True,
        )
    else:
        asyncio.run(python_load(port, messages, sessions, size, []))
    return time.perf_counter() - started


def source_command(sessions: int, messages: int, size: int) -> list[str]:
    """smtp-source's arguments (without the server)."""
    counts = ["-s", str(sessions), "-m", str(messages), "-l", str(size)]
    return ["smtp-source", *counts, "-f", SENDER, "-t", RCPT]


async def python_load(
    port: int, messages: int, sessions: int, size: int, latencies: list[float]
) -> None:
    """The load in Python: each session sends its share, one connection per message, and
    records the time from the end of the data to the 250."""
    body = (("x" * 78 + "\r\n") * (size // 80 + 1))[:size]

    async def one(n: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)

        async def reply() -> bytes:
            while True:
                line = await reader.readline()
                if line[3:4] != b"-":
                    return line

        await reply()
        writer.write(f"EHLO bench.test\r\nMAIL FROM:<{SENDER}>\r\nRCPT TO:<{RCPT}>\r\n".encode())
        for _ in range(3):
            await reply()
        writer.write(b"DATA\r\n")
        await reply()
        header = f"From: <{SENDER}>\r\nTo: <{RCPT}>\r\nMessage-ID: <{uuid.uuid4()}@bench>\r\n\r\n"
        writer.write(header.encode() + body.encode() + b"\r\n.\r\n")
        await writer.drain()
        ended = time.perf_counter()
        final = await reply()
        latencies.append(time.perf_counter() - ended)
        if not final.startswith(b"250"):
            raise SystemExit(f"bench: unexpected reply {final!r}")
        writer.write(b"QUIT\r\n")
        writer.close()

    async def session(numbers: range) -> None:
        for n in numbers:
            await one(n)

    await asyncio.gather(*(session(range(s, messages, sessions)) for s in range(sessions)))


# -- databases ---------------------------------------------------------------------------------


@dataclass
class Database:
    """A fresh, migrated database for one measurement."""

    url: str
    kind: str

    @classmethod
    def create(cls, kind: str, workdir: Path) -> Database:
        """A new SQLite file or PostgreSQL database, migrated."""
        if kind == "sqlite":
            url = f"sqlite+aiosqlite:///{workdir / f'bench-{uuid.uuid4().hex[:8]}.db'}"
        else:
            name = f"mg_bench_{uuid.uuid4().hex[:8]}"
            asyncio.run(pg_admin(f'CREATE DATABASE "{name}"'))
            url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
            url = f"{url}/{name}"
        database = cls(url, kind)
        asyncio.run(database.migrate())
        return database

    async def migrate(self) -> None:
        """Bring the schema to the newest revision."""
        from mailgateway.store.db import create_engine, upgrade

        engine = create_engine(self.url)
        await upgrade(engine)
        await engine.dispose()

    async def fill(self, count: int) -> None:
        """Add `count` stored messages with bulk SQL."""
        from mailgateway.store.db import create_engine
        from tests.bulk import fill

        engine = create_engine(self.url)
        await fill(engine, count)
        await engine.dispose()

    def done(self) -> int:
        """How many queue rows are done."""

        async def count() -> int:
            from mailgateway.store.db import create_engine
            from mailgateway.store.repo import Store

            store = Store(create_engine(self.url))
            try:
                return (await store.queue_counts()).get("done", 0)
            finally:
                await store.close()

        return asyncio.run(count())

    def wait_done(self, expected: int, timeout: float = 600.0) -> float:
        """Wait until `expected` rows are done; when that happened (perf_counter)."""
        deadline = time.perf_counter() + timeout
        while self.done() < expected:
            if time.perf_counter() > deadline:
                raise SystemExit(f"bench: only {self.done()} of {expected} rows done")
            time.sleep(0.05)
        return time.perf_counter()

    def config(self, workdir: Path, processes: int = 0) -> Path:
        """A gateway configuration on this database with production limits and timings, its
        inbound worker inside the SMTP process (0) or in worker processes."""
        from tests.support import write_config

        return write_config(
            workdir / f"config-{uuid.uuid4().hex[:8]}",
            self.url,
            worker={"poll_interval": 1.0, "retry_delay": 30.0, "processes": processes},
            max_connections=200,
            max_connections_per_ip=100,
            max_message_size="25MiB",
            idle_timeout=300.0,
        )

    def drop(self) -> None:
        """Remove a PostgreSQL database (SQLite files go with the work folder)."""
        if self.kind == "postgresql":
            name = self.url.rsplit("/", 1)[1]
            asyncio.run(pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def postgres_reachable() -> bool:
    """Whether the PostgreSQL server answers."""
    try:
        asyncio.run(pg_admin("SELECT 1"))
    except Exception:  # refused, unknown host, bad credentials, no driver: all mean "skip it"
        return False
    return True


async def pg_admin(statement: str) -> None:
    """One statement on the PostgreSQL server."""
    import asyncpg

    connection = await asyncpg.connect(PG_ADMIN)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


# -- measurements ------------------------------------------------------------------------------


@dataclass
class Bench:
    """One run's settings and work folder."""

    messages: int
    rounds: int
    workdir: Path

    def sink_rate(self, loop: str = "asyncio") -> float:
        """The bare sink's rate (median of the rounds)."""
        port, running = sink(loop)
        with running():  # type: ignore[attr-defined]
            send(port, min(300, self.messages))
            return statistics.median(
                self.messages / send(port, self.messages) for _ in range(self.rounds)
            )

    def intake_rate(self, kind: str, stored: int = 0, event_loop: str | None = None) -> float:
        """The gateway's rate with its worker stopped (median of the rounds)."""
        database = Database.create(kind, self.workdir)
        try:
            if stored:
                asyncio.run(database.fill(stored))
            config = database.config(self.workdir)
            if event_loop:
                with (config / "mailgateway.toml").open("a") as file:
                    file.write(f'[server]\nevent_loop = "{event_loop}"\n')
            port, running = gateway(config, worker=False)
            with running():  # type: ignore[attr-defined]
                send(port, min(300, self.messages))
                return statistics.median(
                    self.messages / send(port, self.messages) for _ in range(self.rounds)
                )
        finally:
            database.drop()

    def end_to_end_rate(
        self, kind: str, stored: int = 0, gateways: int = 1, workers: int = WORKERS
    ) -> float:
        """Messages per second from the first connection until the last conversation is
        stored, through `gateways` gateway processes sharing the database, each with `workers`
        worker processes (0: the worker inside the SMTP process)."""
        processes = gateways
        database = Database.create(kind, self.workdir)
        try:
            if stored:
                asyncio.run(database.fill(stored))
            base = database.done()
            servers = [gateway(database.config(self.workdir, workers)) for _ in range(processes)]
            with contextlist([running for _, running in servers]):
                time.sleep(2.0 if workers else 0.0)  # worker processes start
                started = time.perf_counter()
                senders = [subprocess_send(port, self.messages // processes) for port, _ in servers]
                for sender in senders:
                    sender.wait()
                finished = database.wait_done(base + self.messages // processes * processes)
            return self.messages // processes * processes / (finished - started)
        finally:
            database.drop()

    def latency(self, kind: str) -> tuple[float, float]:
        """End of data -> 250 at 10 sessions with the worker running: p50 and p99 (ms)."""
        database = Database.create(kind, self.workdir)
        try:
            port, running = gateway(database.config(self.workdir, WORKERS))
            latencies: list[float] = []
            with running():  # type: ignore[attr-defined]
                time.sleep(2.0)
                run_on_best(python_load(port, self.messages, SESSIONS, 1024, latencies))
            cuts = statistics.quantiles(latencies, n=100)
            return cuts[49] * 1000, cuts[98] * 1000
        finally:
            database.drop()

    def peak_rss(self, kind: str, sessions: int = 50, size: int = 64 * 1024) -> tuple[float, float]:
        """Peak resident memory (MB) of the SMTP process and of its worker process over 50
        concurrent 64 KB sessions, 10 rounds, until the worker has stored them all."""
        database = Database.create(kind, self.workdir)
        try:
            port, running = gateway(database.config(self.workdir, WORKERS))
            with running() as child:  # type: ignore[attr-defined]
                send(port, sessions * 10, sessions=sessions, size=size)
                database.wait_done(sessions * 10)
                peaks = [peak_of(pid) for pid in [child.pid, *children_of(child.pid)]]
            return peaks[0], sum(peaks[1:])
        finally:
            database.drop()


def peak_of(pid: int) -> float:
    """A process's peak resident memory (VmHWM), MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    peak = next(line for line in status.splitlines() if line.startswith("VmHWM"))
    return int(peak.split()[1]) / 1024


def children_of(pid: int) -> list[int]:
    """The pids of a process's children."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def subprocess_send(port: int, messages: int) -> subprocess.Popen[bytes]:
    """smtp-source (or this script's Python load) in the background."""
    if shutil.which("smtp-source"):
        command = [*source_command(SESSIONS, messages, 1024), f"127.0.0.1:{port}"]
    else:
        command = [sys.executable, __file__, "--load", str(port), str(messages)]
    return subprocess.Popen(command)


def run_on_best(coroutine: object) -> None:
    """Run the Python client on uvloop when installed (less client time in the figures)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coroutine)  # type: ignore[arg-type]
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(coroutine)  # type: ignore[arg-type]


@contextmanager
def contextlist(factories: list[Callable[[], object]]) -> Iterator[None]:
    """Enter several context managers made by factories, exit them in reverse."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        for factory in factories:
            stack.enter_context(factory())  # type: ignore[arg-type]
        yield


# -- the table ---------------------------------------------------------------------------------


def table(rows: list[tuple[str, str, str]]) -> None:
    """Print the results: what, figure, target."""
    width = max(len(row[0]) for row in rows)
    print(f"\n{'measure':{width}}  {'figure':>22}  target")
    print(f"{'-' * width}  {'-' * 22}  {'-' * 14}")
    for what, figure, target in rows:
        print(f"{what:{width}}  {figure:>22}  {target}")


def measure(bench: Bench, kind: str, stored: int) -> list[tuple[str, str, str]]:
    """Every figure for one database."""
    sink_rate = bench.sink_rate()
    sink_uv = bench.sink_rate("uvloop") if shutil.which("smtp-source") else 0.0
    intake = bench.intake_rate(kind)
    intake_asyncio = bench.intake_rate(kind, event_loop="asyncio")
    e2e = bench.end_to_end_rate(kind)
    e2e_inside = bench.end_to_end_rate(kind, workers=0)
    p50, p99 = bench.latency(kind)
    rss, worker_rss = bench.peak_rss(kind)
    rows = [
        (f"[{kind}] bare aiosmtpd sink, asyncio loop", f"{sink_rate:7.0f} msg/s", "baseline"),
        (f"[{kind}] bare aiosmtpd sink, uvloop", f"{sink_uv:7.0f} msg/s", "(info)"),
        (f"[{kind}] intake (default loop)", ratio(intake, sink_rate), ">= 1.0 x"),
        (f"[{kind}] intake (asyncio loop)", ratio(intake_asyncio, sink_rate), "(info)"),
        (f"[{kind}] end to end (accepted -> stored)", ratio(e2e, sink_rate), ">= 0.6 x"),
        (f"[{kind}] end to end, worker in SMTP process", ratio(e2e_inside, sink_rate), "(info)"),
        (
            f"[{kind}] end of data -> 250, 10 sessions",
            f"p50 {p50:.1f} p99 {p99:.1f} ms",
            "<= 20 ms",
        ),
        (f"[{kind}] peak RSS, 50 x 64 KB sessions", f"{rss:7.1f} MB", "<= 150 MB"),
        (f"[{kind}] peak RSS of the worker process", f"{worker_rss:7.1f} MB", "(info)"),
    ]
    if stored:
        full_intake = bench.intake_rate(kind, stored=stored)
        full_e2e = bench.end_to_end_rate(kind, stored=stored)
        rows += [
            (f"[{kind}] intake, {stored:,} stored / empty", ratio(full_intake, intake), ">= 0.9 x"),
            (f"[{kind}] end to end, {stored:,} stored / empty", ratio(full_e2e, e2e), ">= 0.9 x"),
        ]
    if kind == "postgresql":
        two = bench.end_to_end_rate(kind, gateways=2)
        rows.append((f"[{kind}] end to end, two processes / one", ratio(two, e2e), ">= 1.6 x"))
    return rows


def ratio(rate: float, baseline: float) -> str:
    """A rate with its ratio to the baseline."""
    return f"{rate / baseline:4.2f} x ({rate:6.0f}/s)"


def main() -> None:
    """Run every measurement and print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stored", type=int, default=1_000_000)
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--serve", nargs="+")
    parser.add_argument("--load", nargs=2, type=int)
    args = parser.parse_args()
    if args.serve:
        kind, port, *rest = args.serve
        if kind == "sink":
            return serve_sink(int(port), rest[0])
        return serve_gateway(Path(rest[0]), rest[1] == "1")
    if args.load:
        return asyncio.run(python_load(args.load[0], args.load[1], SESSIONS, 1024, []))
    kinds = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    if args.database == "both" and not postgres_reachable():
        print(f"bench: PostgreSQL at {PG_ADMIN} is not reachable; SQLite only")
        kinds = ["sqlite"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(args.messages, args.rounds, Path(tmp))
        for kind in kinds:
            rows += measure(bench, kind, args.stored)
    load = "smtp-source" if shutil.which("smtp-source") else "Python client"
    print(
        f"\n{args.messages} x 1 KB messages per run, {SESSIONS} sessions, a connection per "
        f"message ({load}); median of {args.rounds}; {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    table(rows)


if __name__ == "__main__":
    main()
