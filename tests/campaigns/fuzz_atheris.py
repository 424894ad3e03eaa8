"""libFuzzer-guided fuzzing of the boundary with atheris: `python -m tests.campaigns.fuzz_atheris
[--store-every N] [--store DIR] -- <libFuzzer options> CORPUS...` (see `make fuzz`)."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import atheris

with atheris.instrument_imports(include=["mailgateway", "email"]):
    from mailgateway import logs
    from mailgateway.store.db import create_engine
    from mailgateway.store.repo import Store
    from tests.campaigns import boundary
    from tests.campaigns.databases import migrate


HANG_LIMIT = 10.0  # seconds of wall time before an input counts as a hang


def hang(_signum: int, _frame: Any) -> None:
    """SIGALRM while an input runs: a hang is a failure like any other."""
    raise boundary.BoundaryFailure(f"no answer within {HANG_LIMIT:g} s")


class Target:
    """The function libFuzzer calls with each input: the pure boundary always, and every
    `store_every`-th input also through a real SQLite store (bytes, replay, stored row). A
    failing input is saved in `artifacts` before the failure propagates (libFuzzer's own crash
    files are written from a signal handler that does not always get to run)."""

    def __init__(self, store_every: int, folder: Path, artifacts: Path) -> None:
        self.store_every = store_every
        self.artifacts = artifacts
        self.count = 0
        self.loop = asyncio.new_event_loop()
        url = f"sqlite+aiosqlite:///{folder / 'fuzz.db'}"
        self.loop.run_until_complete(migrate(url))
        self.store = Store(create_engine(url))
        self.worker = boundary.store_worker(self.store)

    def __call__(self, data: bytes) -> None:
        """Check one input; save it when it fails."""
        self.count += 1
        signal.setitimer(signal.ITIMER_REAL, HANG_LIMIT)
        try:
            boundary.check(data)
            if self.store_every and self.count % self.store_every == 0:
                self.loop.run_until_complete(boundary.check_stored(self.store, self.worker, data))
        except BaseException as error:
            self.artifacts.mkdir(parents=True, exist_ok=True)
            name = f"failure-{hashlib.sha1(data).hexdigest()}"
            (self.artifacts / name).write_bytes(data)
            (self.artifacts / f"{name}.txt").write_text(f"{type(error).__name__}: {error}\n")
            raise
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)


def main(argv: list[str]) -> None:
    """Parse our options, hand the rest to libFuzzer."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store-every", type=int, default=20)
    parser.add_argument("--store", type=Path, default=None)
    parser.add_argument("--artifacts", type=Path, default=Path("."))
    ours, rest = parser.parse_known_args(argv[1:])
    logs.configure("critical")
    logging.disable(logging.CRITICAL)
    folder = ours.store or Path(tempfile.mkdtemp(prefix="mg-atheris-"))
    target: Any = Target(ours.store_every, folder, ours.artifacts)
    signal.signal(signal.SIGALRM, hang)
    atheris.Setup([argv[0], *[arg for arg in rest if arg != "--"]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
