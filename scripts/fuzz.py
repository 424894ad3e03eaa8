"""`make fuzz`: every seed through the boundary and both stores, atheris for a million inputs, and
the hypothesis properties at length; prints the figures, writes them as JSON, exits 1 on any
failure (atheris keeps the failing input as crash-*/timeout-*/oom-* in the artifacts folder)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mailgateway import logs
from mailgateway.store.db import create_engine
from mailgateway.store.repo import Store
from tests.campaigns import boundary
from tests.campaigns.databases import campaign_database
from tests.campaigns.seeds import seeds, write_corpus

ROOT = Path(__file__).resolve().parents[1]
MAX_LEN = 65536


def arguments() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1_000_000, help="atheris inputs in all")
    parser.add_argument("--jobs", type=int, default=1, help="atheris processes")
    parser.add_argument("--store-every", type=int, default=20)
    parser.add_argument("--examples", type=int, default=2000, help="per hypothesis property")
    parser.add_argument("--no-atheris", action="store_true")
    parser.add_argument("--no-hypothesis", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("var/fuzz.json"))
    return parser.parse_args()


async def seed_pass() -> dict[str, Any]:
    """Every seed through the boundary, then through a real store of each kind."""
    failures: list[str] = []
    corpus = seeds()
    for name, raw in corpus.items():
        try:
            boundary.check(raw)
        except Exception as error:
            failures.append(f"{name}: {type(error).__name__}: {error}")
    for kind in ("sqlite", "postgresql"):
        async with campaign_database(kind, Path(tempfile.mkdtemp(prefix="mg-seeds-"))) as url:
            store = Store(create_engine(url))
            worker = boundary.store_worker(store)
            try:
                for name, raw in corpus.items():
                    try:
                        await boundary.check_stored(store, worker, raw)
                    except Exception as error:
                        failures.append(f"{kind} {name}: {type(error).__name__}: {error}")
            finally:
                await store.close()
    return {"seeds": len(corpus), "checked": 3 * len(corpus), "failures": failures}


def atheris_run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """libFuzzer-guided inputs through the boundary (every `store_every`-th also through a
    store), in `jobs` processes; the counts come from libFuzzer's own final statistics."""
    seeds_dir, corpus, artifacts = workdir / "seeds", workdir / "corpus", workdir / "artifacts"
    write_corpus(seeds_dir, limit=MAX_LEN)
    corpus.mkdir(exist_ok=True)
    artifacts.mkdir(exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "tests.campaigns.fuzz_atheris",
        "--store-every",
        str(args.store_every),
        "--store",
        str(workdir),
        "--artifacts",
        str(artifacts),
        "--",
        f"-runs={args.runs // args.jobs}",
        f"-max_len={MAX_LEN}",
        "-timeout=0",
        "-rss_limit_mb=4096",
        "-print_final_stats=1",
        f"-artifact_prefix={artifacts}/",
    ]
    if args.jobs > 1:
        command += [f"-jobs={args.jobs}", f"-workers={args.jobs}"]
    command += [str(corpus), str(seeds_dir)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    log = workdir / "atheris.log"
    with log.open("w") as output:
        status = subprocess.run(
            command, cwd=workdir, env=env, stdout=output, stderr=output, check=False
        ).returncode
    texts = [log.read_text(errors="replace")] + [
        path.read_text(errors="replace") for path in sorted(workdir.glob("fuzz-*.log"))
    ]
    runs = sum(
        int(count)
        for text in texts
        for count in re.findall(r"stat::number_of_executed_units: (\d+)", text)
    )
    # libFuzzer's crash-<sha1> and the target's own failure-<sha1> hold the same input: count
    # each input once, by the name that has its reason beside it
    inputs: dict[str, str] = {}
    for path in sorted(artifacts.iterdir()):
        digest = path.name.partition("-")[2]
        if path.suffix != ".txt" and (digest not in inputs or path.name.startswith("failure-")):
            inputs[digest] = path.name
    found = sorted(inputs.values())
    return {
        "exit_status": status,
        "runs": runs,
        "failures": found,
        "corpus": len(list(corpus.iterdir())),
        "seconds": round(time.monotonic() - started),
        "log": str(log),
    }


def hypothesis_run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The hypothesis properties of the fuzz smoke tests, with many more examples each."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MAILGATEWAY_FUZZ_EXAMPLES": str(args.examples)}
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--timeout=0",
            "tests/campaigns/test_fuzz.py",
            "-k",
            "keep_the",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    log = workdir / "hypothesis.log"  # the falsifying examples, kept for a rerun
    log.write_text(result.stdout + result.stderr)
    passed = re.search(r"(\d+) passed", result.stdout)
    failed = re.search(r"(\d+) failed", result.stdout)
    properties = 5  # three boundary properties and the SMTP property on two databases
    return {
        "exit_status": result.returncode,
        "examples": args.examples * properties,
        "passed": int(passed.group(1)) if passed else 0,
        "failed": int(failed.group(1)) if failed else 0,
        "failures": [line for line in result.stdout.splitlines() if line.startswith("FAILED")],
        "seconds": round(time.monotonic() - started),
        "log": str(log),
    }


def main() -> int:
    """Run what was asked, write the figures, say whether anything failed."""
    args = arguments()
    logs.configure("critical")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mailgateway-fuzz-"))
    print(f"fuzz: working in {workdir}", flush=True)
    figures: dict[str, Any] = {"seed_pass": asyncio.run(seed_pass())}
    print(f"fuzz: seeds {figures['seed_pass']}", flush=True)
    if not args.no_atheris:
        if _has_atheris():
            figures["atheris"] = atheris_run(args, workdir)
        else:
            figures["atheris"] = {"runs": 0, "failures": ["atheris is not installed"]}
        print(f"fuzz: atheris {figures['atheris']}", flush=True)
    if not args.no_hypothesis:
        figures["hypothesis"] = hypothesis_run(args, workdir)
        print(f"fuzz: hypothesis {figures['hypothesis']}", flush=True)
    iterations = (
        figures["seed_pass"]["checked"]
        + figures.get("atheris", {}).get("runs", 0)
        + figures.get("hypothesis", {}).get("examples", 0)
    )
    failures = (
        len(figures["seed_pass"]["failures"])
        + len(figures.get("atheris", {}).get("failures", []))
        + figures.get("hypothesis", {}).get("failed", 0)
    )
    figures |= {"iterations": iterations, "failures": failures}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2))
    print(f"fuzz: {iterations} iterations, {failures} failures; figures in {args.out}")
    return 1 if failures else 0


def _has_atheris() -> bool:
    """Whether atheris can be imported here."""
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
