"""Intake rate: 1 KB messages over 10 concurrent SMTP sessions, as a ratio to a bare aiosmtpd
server that answers 250 without storing, both measured in this run (not a test).

    python bench/bench_intake.py [--messages 2000] [--sessions 10] [--database sqlite|postgresql]

Each server runs in its own child process; the client runs here, so both sides get a core.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BODY = ("x" * 70 + "\r\n") * 12
ENVELOPE = (
    b"MAIL FROM:<bench@customer.test>\r\nRCPT TO:<support@acme.inbox.example.net>\r\nDATA\r\n"
)


def message(n: int) -> bytes:
    """A distinct message of about 1 KB."""
    header = (
        f"From: Bench <bench@customer.test>\r\nTo: support@acme.inbox.example.net\r\n"
        f"Subject: bench {n}\r\nMessage-ID: <bench-{n}-{time.time_ns()}@customer.test>\r\n\r\n"
    )
    return (header + BODY).encode()


async def session(port: int, numbers: list[int], latencies: list[float]) -> None:
    """One SMTP session sending its share of the messages back to back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def reply() -> bytes:
        while True:
            line = await reader.readline()
            if line[3:4] != b"-":
                return line

    await reply()
    writer.write(b"EHLO bench.test\r\n")
    await writer.drain()
    await reply()
    for n in numbers:
        started = time.perf_counter()
        writer.write(ENVELOPE)
        await writer.drain()
        for _ in range(3):
            await reply()
        writer.write(message(n) + b".\r\n")
        await writer.drain()
        final = await reply()
        if not final.startswith(b"250"):
            raise SystemExit(f"bench: unexpected reply {final!r}")
        latencies.append(time.perf_counter() - started)
    writer.write(b"QUIT\r\n")
    await writer.drain()
    writer.close()


async def drive(port: int, messages: int, sessions: int) -> tuple[float, list[float]]:
    """Send the messages over concurrent sessions; returns (messages per second, latencies)."""
    latencies: list[float] = []
    shares = [list(range(s, messages, sessions)) for s in range(sessions)]
    started = time.perf_counter()
    await asyncio.gather(*(session(port, share, latencies) for share in shares))
    return messages / (time.perf_counter() - started), latencies


def serve_baseline(port_file: Path) -> None:
    """A bare aiosmtpd server that accepts everything and stores nothing."""
    from aiosmtpd.smtp import SMTP

    class Sink:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            return "250 OK"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: SMTP(Sink(), hostname="bench"), "127.0.0.1", 0)
        port_file.write_text(str(server.sockets[0].getsockname()[1]))
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()

    asyncio.run(main())


def serve_gateway(port_file: Path, config_dir: Path) -> None:
    """The real gateway: intake, durable commit, worker."""
    from mailgateway import app, logs
    from mailgateway.config import load_config

    logs.configure("warning")

    async def main() -> None:
        gateway = await app.start(load_config(config_dir))
        if os.environ.get("BENCH_NO_WORKER"):
            gateway.worker.stop()
        port_file.write_text(gateway.sockets[0].rsplit(":", 1)[1])
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await gateway.shutdown()

    if os.environ.get("BENCH_PROFILE"):
        import cProfile

        cProfile.runctx("asyncio.run(main())", globals(), locals(), os.environ["BENCH_PROFILE"])
        return
    asyncio.run(main())


def run_server(
    kind: str, workdir: Path, config_dir: Path | None
) -> tuple[subprocess.Popen[bytes], int]:
    """Start a server child process and wait for its port."""
    port_file = workdir / f"{kind}.port"
    port_file.unlink(missing_ok=True)
    args = [sys.executable, __file__, "--serve", kind, "--port-file", str(port_file)]
    if config_dir is not None:
        args += ["--config", str(config_dir)]
    child = subprocess.Popen(args)
    deadline = time.monotonic() + 30
    while not port_file.exists() or not port_file.read_text():
        if time.monotonic() > deadline or child.poll() is not None:
            raise SystemExit(f"bench: {kind} server did not start")
        time.sleep(0.05)
    return child, int(port_file.read_text())


def database_url(kind: str, workdir: Path) -> str:
    """A fresh migrated database for the gateway run."""
    from mailgateway.store.db import create_engine, upgrade

    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
    else:
        import asyncpg

        name = f"mg_bench_{os.getpid()}"

        async def create() -> None:
            connection = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
            await connection.execute(f'CREATE DATABASE "{name}"')
            await connection.close()

        asyncio.run(create())
        url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"

    async def migrate() -> None:
        engine = create_engine(url)
        await upgrade(engine)
        await engine.dispose()

    asyncio.run(migrate())
    return url


def measure(
    kind: str, workdir: Path, config_dir: Path | None, messages: int, sessions: int
) -> tuple[float, list[float]]:
    """Messages per second and latencies against one server kind."""
    child, port = run_server(kind, workdir, config_dir)
    try:
        asyncio.run(drive(port, min(200, messages), sessions))  # warm-up
        return asyncio.run(drive(port, messages, sessions))
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=60)


def report(label: str, rate: float, latencies: list[float]) -> None:
    """One result line: rate and 99th percentile latency."""
    p99 = statistics.quantiles(latencies, n=100)[98] * 1000
    print(f"{label:40s} {rate:8.1f} msg/s  p99 {p99:6.1f} ms")


def main() -> None:
    """Measure the baseline and the gateway in one run and print the ratio."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--serve")
    parser.add_argument("--port-file", type=Path)
    parser.add_argument("--config", type=Path)
    args = parser.parse_args()
    if args.serve == "baseline":
        return serve_baseline(args.port_file)
    if args.serve == "gateway":
        return serve_gateway(args.port_file, args.config)

    from tests.support import write_config

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        config_dir = write_config(
            workdir / "config",
            database_url(args.database, workdir),
            worker={"batch_size": int(os.environ.get("BENCH_WORKER_BATCH", "20"))},
            max_connections_per_ip=100,
            max_connections=200,
        )
        base_rate, base_lat = measure("baseline", workdir, None, args.messages, args.sessions)
        gw_rate, gw_lat = measure("gateway", workdir, config_dir, args.messages, args.sessions)
    print(f"messages={args.messages} sessions={args.sessions} size~1KB database={args.database}")
    report("baseline (bare aiosmtpd, no storage)", base_rate, base_lat)
    report("mailgateway (durable commit + worker)", gw_rate, gw_lat)
    print(f"ratio: {gw_rate / base_rate:.2f}")


if __name__ == "__main__":
    main()
