"""Imports point one way: cli → app → workers and intake → stages and store → domain, errors,
config. Pure stages do no I/O: they import neither the store, nor workers, nor I/O libraries."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mailgateway"
WORKERS = {"worker", "poller"}
IO_LIBRARIES = (
    "sqlalchemy",
    "aiosmtpd",
    "aiosmtplib",
    "aioimaplib",
    "asyncpg",
    "aiosqlite",
    "aiohttp",
    "socket",
    "dkim",
    "dns",
    "mailgateway.store",
    "mailgateway.app",
    "mailgateway.cli",
    "mailgateway.intake",
)


def imports_of(path: Path) -> set[str]:
    """Every module a source file imports (absolute names)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def stage_modules() -> list[Path]:
    """The pure stages: every module of inbound/ and outbound/ except workers and senders."""
    return sorted(
        path
        for folder in ("inbound", "outbound")
        for path in (PACKAGE / folder).glob("*.py")
        if path.stem not in WORKERS and path.stem not in {"__init__", "send", "sign", "sentcopy"}
    )


@pytest.mark.parametrize("path", stage_modules(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_stages_do_no_io(path: Path) -> None:
    """A pure stage imports no database, network or worker module."""
    bad = {
        name
        for name in imports_of(path)
        if name.startswith(IO_LIBRARIES) or name.rsplit(".", 1)[-1] in WORKERS
    }
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("path", sorted((PACKAGE / "store").rglob("*.py")), ids=lambda p: p.name)
def test_store_depends_on_nothing_above_it(path: Path) -> None:
    """The store imports no intake, pipeline, app or command-line module."""
    above = (
        "mailgateway.intake",
        "mailgateway.inbound",
        "mailgateway.outbound",
        "mailgateway.app",
        "mailgateway.cli",
    )
    bad = {name for name in imports_of(path) if name.startswith(above)}
    assert not bad, f"{path.name} imports {sorted(bad)}"


def test_only_the_cli_imports_the_cli() -> None:
    """Nothing in the package imports the command line (it is the top of the graph)."""
    users = [
        p.name
        for p in PACKAGE.rglob("*.py")
        if p.name not in {"cli.py", "__main__.py"} and "mailgateway.cli" in imports_of(p)
    ]
    assert users == []
