"""`make soak`: the crash campaign on SQLite and PostgreSQL, then the fault campaign; prints the
figures, writes them as JSON, and exits 1 if any campaign found a problem."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mailgateway import logs
from tests.campaigns.crash import CrashSettings, crash_campaign
from tests.campaigns.databases import campaign_database
from tests.campaigns.faults import POSTGRESQL, SQLITE, Timing
from tests.campaigns.imapfault import ImapReport, imap_fault
from tests.campaigns.readonly import sqlite_read_only_restart
from tests.campaigns.smarthost import SCENARIOS, smarthost_fault
from tests.dovecot import Dovecot


def arguments() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=250, help="SIGKILLs per database")
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--windows", type=int, default=3, help="fault windows per scenario")
    parser.add_argument("--window", type=float, default=4.0, help="seconds per fault window")
    parser.add_argument("--no-crash", action="store_true")
    parser.add_argument("--no-faults", action="store_true")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("var/soak.json"))
    return parser.parse_args()


async def crash_runs(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    """The crash campaign on each database."""
    results = []
    for kind in args.databases.split(","):
        folder = workdir / f"crash-{kind}"
        folder.mkdir(parents=True)
        async with campaign_database(kind, folder) as url:
            settings = CrashSettings(kills=args.kills, seed=args.seed)
            report = await crash_campaign(folder, url, settings, kind)
        results.append(report.figures())
        print(summary("crash", results[-1]), flush=True)
    return results


async def fault_runs(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    """Every fault scenario on the database it applies to (smarthost faults on both)."""
    timing = Timing(
        windows=args.windows,
        before=1.0,
        window=args.window,
        after=1.0,
        sessions=10,
        commit_timeout=min(2.0, args.window / 3),
        drain_timeout=120.0,
    )
    plan: list[tuple[str, str, Any]] = [
        *(("postgresql", name, scenario) for name, scenario in POSTGRESQL.items()),
        *(("sqlite", name, scenario) for name, scenario in SQLITE.items()),
        ("sqlite", "sqlite-read-only-remount", sqlite_read_only_restart),
        *(
            (kind, name, lambda w, u, t, name=name: smarthost_fault(w, u, t, name))
            for kind in ("sqlite", "postgresql")
            for name in SCENARIOS
        ),
    ]
    if shutil.which("dovecot") is not None:
        plan += [
            (kind, "imap-connection-dropped", imap_scenario) for kind in ("sqlite", "postgresql")
        ]
    results = []
    for kind, name, scenario in plan:
        if kind not in args.databases.split(","):
            continue
        folder = workdir / f"fault-{kind}-{name}"
        folder.mkdir(parents=True)
        async with campaign_database(kind, folder) as url:
            report = await scenario(folder, url, timing)
        figures = {"database": kind, **(report.figures() if report else {"fault": name})}
        if report is None:
            figures |= {"ok": None, "notes": ["not run: no tmpfs can be mounted here"]}
        results.append(figures)
        print(summary("fault", figures), flush=True)
    return results


async def imap_scenario(workdir: Path, url: str, timing: Timing) -> ImapReport:
    """The IMAP fault against a private Dovecot of its own."""
    server = Dovecot()
    server.add_users(1)
    try:
        server.start()
        return await imap_fault(workdir, url, timing, server)
    finally:
        server.close()


def summary(kind: str, figures: dict[str, Any]) -> str:
    """One line per run."""
    if kind == "crash":
        return (
            f"crash {figures['database']}: {figures['kills']} kills {figures['kills_by_point']},"
            f" {figures['acknowledged']} acknowledged, {figures['lost']} lost,"
            f" {figures['duplicated']} duplicated, {figures['unprocessed']} unprocessed,"
            f" held {figures['held']}, queue {figures['queue_states']},"
            f" integrity {figures['integrity']}, {figures['seconds']} s: "
            + ("OK" if figures["ok"] else "FAILED")
        )
    inside = figures.get(
        "replies_in_window", figures.get("states_at_window_end", figures.get("connection_drops"))
    )
    return (
        f"fault {figures['database']} {figures['fault']}: in window {inside},"
        f" lost {figures.get('lost', figures.get('missing'))},"
        f" duplicated {figures.get('duplicated', figures.get('delivered_more_than_once'))}: "
        + {True: "OK", False: "FAILED", None: "NOT RUN"}[figures["ok"]]
    )


async def main() -> int:
    """Run what was asked, write the figures, say whether everything held."""
    args = arguments()
    logs.configure("critical")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mailgateway-soak-"))
    print(f"soak: seed {args.seed}, working in {workdir}", flush=True)
    started = time.monotonic()
    crash = [] if args.no_crash else await crash_runs(args, workdir)
    faults = [] if args.no_faults else await fault_runs(args, workdir)
    figures = {
        "seed": args.seed,
        "crash": crash,
        "faults": faults,
        "kills": sum(run["kills"] for run in crash),
        "lost": sum(run["lost"] for run in crash) + sum(run.get("lost", 0) for run in faults),
        "duplicated": sum(run["duplicated"] for run in crash),
        "seconds": round(time.monotonic() - started),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2, default=str))
    failed = [run for run in crash + faults if run["ok"] is False]
    print(
        f"soak: {figures['kills']} kills, {figures['lost']} lost, {figures['duplicated']}"
        f" duplicated, {len(failed)} failed runs; figures in {args.out}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
