"""docs/reliability-catalogue.md stays in sync with the suite: all 60 rows, every named test
exists, and no row stays pending once its tests exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "docs" / "reliability-catalogue.md"
NODE = re.compile(r"`(tests/[\w/]+\.py::\w+)`")


def catalogue() -> dict[int, tuple[list[str], bool]]:
    """Each row's node ids and whether it is pending."""
    rows: dict[int, tuple[list[str], bool]] = {}
    for line in TABLE.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].isdigit():
            number = int(cells[0])
            assert number not in rows, f"row {number} twice"
            rows[number] = (NODE.findall(cells[2]), cells[2].startswith("pending:"))
    return rows


def existing(nodes: list[str]) -> set[str]:
    """Which of the node ids pytest collects (each on its own: one missing id must not hide
    the others)."""
    files = {node.split("::")[0] for node in nodes if (ROOT / node.split("::")[0]).exists()}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    collected = {line.split("[")[0] for line in result.stdout.splitlines() if "::" in line}
    return {node for node in nodes if node in collected}


def test_every_catalogue_row_is_listed_with_tests() -> None:
    """The table has rows 1 to 60, each naming at least one test."""
    rows = catalogue()
    assert sorted(rows) == list(range(1, 61))
    assert all(nodes for nodes, _ in rows.values())


def test_every_named_test_exists_and_pending_rows_are_still_pending() -> None:
    """Every test a pinned row names is collected by pytest; a pending row is one whose tests
    are not all here yet (once they are, mark it pinned)."""
    rows = catalogue()
    nodes = [node for row_nodes, _ in rows.values() for node in row_nodes]
    found = existing(nodes)
    missing = {
        number: [node for node in row_nodes if node not in found]
        for number, (row_nodes, pending) in rows.items()
        if not pending and not set(row_nodes) <= found
    }
    assert missing == {}
    ready = [
        number
        for number, (row_nodes, pending) in rows.items()
        if pending and set(row_nodes) <= found
    ]
    assert ready == [], f"rows {ready} are pinned now: drop 'pending:' in {TABLE.name}"
