"""Fuzz campaign, smoke run: the seeds and a few hundred generated inputs through the boundary,
the store and the SMTP intake (`make fuzz` runs the same properties much longer, and atheris)."""

from __future__ import annotations

import asyncio
import gc
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailgateway.store.repo import Store
from tests.campaigns import boundary
from tests.campaigns.boundary import BoundaryFailure, check, check_row, check_stored
from tests.campaigns.faults import drain_worker
from tests.campaigns.seeds import CATALOGUE, CPYTHON, SMUGGLING_ENDINGS, seeds, write_corpus
from tests.campaigns.strategies import examples, header_sections, mutated_seeds
from tests.support import SUPPORT, RawSMTP, port_of, running_gateway, write_config

ROOT = Path(__file__).resolve().parents[2]
SEEDS = seeds()
FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
SMTP_REPLIES = ("250 2.0.0", "500 5.5.2", "550 5.5.2", "552 5.3.4", "554 5.4.6")


def test_seeds_cover_the_catalogue_smuggling_and_cpython_issues() -> None:
    """The corpus holds the eight smuggling endings, the catalogue's inputs and the five CPython
    issues RELIABILITY.md names."""
    assert len(SMUGGLING_ENDINGS) == 8
    assert {name for name in CATALOGUE if name.startswith("14-")} == {
        f"14-smuggling-{n}" for n in range(8)
    }
    issues = {name.split("-", 2)[1] for name in CPYTHON}
    assert issues == {"148518", "151857", "136063", "87075", "102988"}
    assert len(SEEDS) > 150


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seed_keeps_the_boundary_properties(name: str) -> None:
    """Every seed passes the boundary: no exception, ≤ 1 s, ≤ 64 MiB, clean header values."""
    values = check(SEEDS[name])
    assert len(values["content_hash"]) == 64


async def test_seeds_through_the_store(store: Store) -> None:
    """Every seed through the real store: bytes kept, replay idempotent, clean row, never held."""
    worker = boundary.store_worker(store)
    for raw in SEEDS.values():
        await check_stored(store, worker, raw)
    counts = await store.queue_counts()
    assert counts == {"done": len({*SEEDS.values()})}


@settings(FUZZ, max_examples=examples(150))
@given(mutated_seeds())
def test_mutated_seeds_keep_the_boundary_properties(raw: bytes) -> None:
    """Seeds with random mutations pass the boundary."""
    check(raw)


@settings(FUZZ, max_examples=examples(150))
@given(header_sections())
def test_hostile_header_sections_keep_the_boundary_properties(raw: bytes) -> None:
    """Header sections built from the structured-header crasher pieces pass the boundary."""
    check(raw)


@settings(FUZZ, max_examples=examples(100))
@given(st.binary(max_size=4096))
def test_any_bytes_keep_the_boundary_properties(raw: bytes) -> None:
    """Arbitrary bytes pass the boundary."""
    check(raw)


def test_the_checks_can_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    """The properties are not vacuous: a CR in a header value, a NUL in a body, a slow input and
    a memory-hungry input are each reported as failures."""
    with pytest.raises(BoundaryFailure, match="subject"):
        check_row({"subject": "a\r\nBcc: x", "text": "fine"})
    with pytest.raises(BoundaryFailure, match="text"):
        check_row({"subject": "ok", "text": "a\x00b"})
    check_row({"subject": "ok", "text": "line one\r\nline two"})

    def busy(raw: bytes) -> dict[str, object]:
        """Burn 1.1 s of CPU time."""
        started = time.process_time()
        while time.process_time() - started < 1.1:
            pass
        return {}

    monkeypatch.setattr(boundary, "row_values", busy)
    with pytest.raises(BoundaryFailure, match=" s for "):
        check(b"x")
    monkeypatch.setattr(boundary, "row_values", lambda raw: len(b"x" * (80 << 20)) and {})
    with pytest.raises(BoundaryFailure, match="MiB"):
        check(b"x")


# -- through the SMTP intake ---------------------------------------------------------------


def stuffed(data: bytes) -> bytes:
    """DATA as an SMTP client sends it: dot-stuffed on CRLF lines, ending in CRLF."""
    received = data if data.endswith(b"\r\n") else data + b"\r\n"
    lines = received.split(b"\r\n")[:-1]
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)


async def transaction(port: int, data: bytes) -> str:
    """One transaction over a raw socket; the reply to the final dot."""
    client = await RawSMTP.connect(port)
    try:
        await client.command("MAIL FROM:<mta@customer.test>")
        await client.command(f"RCPT TO:<{SUPPORT}>")
        await client.command("DATA")
        await client.send(stuffed(data) + b".\r\n")
        return await client.reply()
    finally:
        await client.close()


async def smtp_properties(config_dir: Path, data: bytes) -> None:
    """Through a gateway: the reply is 250 or a content refusal (never 4xx, never a dropped
    connection); after 250 the stored bytes equal the bytes received, the row is processed
    clean, and the same transaction again gets the same queue ids and stores nothing new."""
    received = data if data.endswith(b"\r\n") else data + b"\r\n"
    async with running_gateway(config_dir) as gateway:
        port = port_of(gateway)
        reply = await transaction(port, data)
        assert reply.startswith(SMTP_REPLIES), reply
        if not reply.startswith("250"):
            return
        assert await transaction(port, data) == reply
        queue_id = int(reply.rsplit(" ", 1)[1])
        await drain_worker(gateway, 120)  # a bound for a hang, not a speed: it returns when done
        worker = boundary.store_worker(gateway.store)
        await check_stored(gateway.store, worker, received)
        [row] = [row for row in await gateway.store.queue_rows() if row.id == queue_id]
        assert row.state == "done"


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_smtp_transactions_keep_the_properties(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Mutated seeds sent over SMTP keep the intake's properties on both databases."""
    from tests.conftest import pg_url

    url = (
        request.getfixturevalue("sqlite_url")
        if kind == "sqlite"
        else pg_url(request.getfixturevalue("pg_database"))
    )
    config_dir = write_config(tmp_path / "config", url, max_message_size="256KiB")

    @settings(FUZZ, max_examples=examples(12))
    @given(mutated_seeds() | header_sections())
    def property_holds(data: bytes) -> None:
        asyncio.run(smtp_properties(config_dir, data))

    property_holds()


def test_boundary_time_leaves_out_garbage_collection() -> None:
    """The CPU time charged to an input holds no garbage collection of the fuzzing process (a
    collection of its heap once took a 4 ms input over the 1 s limit)."""
    raw = next(iter(seeds().values()))
    collections: list[str] = []

    def record(phase: str, info: dict[str, int]) -> None:
        """Note every collection that starts."""
        if phase == "start":
            collections.append(phase)

    threshold = gc.get_threshold()
    gc.set_threshold(1)  # collect at every allocation the collector counts
    gc.callbacks.append(record)
    try:
        boundary.timed(raw)
    finally:
        gc.callbacks.remove(record)
        gc.set_threshold(*threshold)
    assert collections == []


# -- the atheris harness -------------------------------------------------------------------


def test_atheris_harness_runs(tmp_path: Path) -> None:
    """The atheris entry point fuzzes the seeded boundary (and the store every few inputs)
    without a failure; `make fuzz` runs it for a million inputs."""
    pytest.importorskip("atheris", reason="atheris ships wheels for Linux x86-64 only")
    corpus = tmp_path / "corpus"
    write_corpus(corpus, limit=4096)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.campaigns.fuzz_atheris",
            "--store-every",
            "5",
            "--store",
            str(tmp_path),
            "--artifacts",
            str(tmp_path / "artifacts"),
            "--",
            "-runs=400",
            "-max_len=4096",
            "-timeout=0",
            str(corpus),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    done = re.search(r"Done (\d+) runs", result.stderr)
    assert done is not None and int(done.group(1)) >= 400, result.stderr[-1000:]


def test_atheris_target_keeps_a_failing_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An input that fails the boundary is saved with its reason before the failure reaches
    libFuzzer, so no finding is lost however the fuzzer process ends."""
    pytest.importorskip("atheris", reason="atheris ships wheels for Linux x86-64 only")
    from tests.campaigns import fuzz_atheris

    def failing(raw: bytes) -> dict[str, object]:
        raise BoundaryFailure("found one")

    target = fuzz_atheris.Target(0, tmp_path, tmp_path / "artifacts")
    monkeypatch.setattr(boundary, "check", failing)
    with pytest.raises(BoundaryFailure):
        target(b"hostile input")
    [saved, reason] = sorted((tmp_path / "artifacts").iterdir())
    assert saved.read_bytes() == b"hostile input"
    assert reason.read_text() == "BoundaryFailure: found one\n"
