"""Conformance of the forward parser with the peer corpus in shared/forward-corpus (data only).

Run as a script (`python tests/test_forward_corpus.py`) to print the per-field figures."""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from mailgateway.inbound.forwards import Forward, parse_forward

ROOT = Path(__file__).resolve().parents[1]


def corpus_dir() -> Path:
    """The corpus folder: MAILGATEWAY_FORWARD_CORPUS, else ../shared/forward-corpus."""
    configured = os.environ.get("MAILGATEWAY_FORWARD_CORPUS")
    return Path(configured) if configured else ROOT.parent / "shared" / "forward-corpus"


def load_cases() -> list[dict[str, Any]]:
    """The corpus cases, or [] when the corpus is absent."""
    expected = corpus_dir() / "test" / "expected.json"
    if not expected.is_file():
        return []
    cases: list[dict[str, Any]] = json.loads(expected.read_text(encoding="utf-8"))["cases"]
    return cases


def read_fixture(name: str) -> str:
    """A fixture byte-exact: UTF-8, line ends and BOMs kept."""
    return (corpus_dir() / "test" / "fixtures" / name).read_bytes().decode("utf-8")


def run_case(case: dict[str, Any]) -> Forward | None:
    """Our parser on one case, called as upstream calls its own (body, subject or nothing)."""
    subject = read_fixture(case["subject_file"]) if case["subject_file"] else ""
    return parse_forward(read_fixture(case["body_file"]), subject=subject)


def actual_value(result: Forward | None, key: str) -> Any:
    """The value of an upstream result path (email.to.0.address...) in our result; '' is null."""
    if key == "forwarded":
        return result is not None
    if result is None:
        return _MISSING
    if key == "message":
        return result.note or None
    path = key.removeprefix("email.").split(":")[0].split(".")
    if path[0] in ("to", "cc"):
        addresses = result.to if path[0] == "to" else result.cc
        if path[1] == "length":
            return len(addresses)
        index = int(path[1])
        if index >= len(addresses):
            return _MISSING
        address = addresses[index]
        return (address.email if path[2] == "address" else address.name) or None
    if path[0] == "from":
        return (result.from_.email if path[1] == "address" else result.from_.name) or None
    value: str = getattr(result, path[0])
    return value or None


_MISSING = object()


def key_passes(result: Forward | None, key: str, expected: Any) -> bool:
    """Whether our result satisfies one expected key, with the corpus's semantics."""
    actual = actual_value(result, key)
    if key == "email.date":
        return isinstance(actual, str) and len(actual) > 1
    if key.endswith(":startswith"):
        return isinstance(actual, str) and actual.startswith(expected)
    return bool(actual == expected)


def failures(case: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The keys of a case our parser misses: key -> (expected, actual)."""
    result = run_case(case)
    return {
        key: (expected, actual_value(result, key))
        for key, expected in case["expect"].items()
        if not key_passes(result, key, expected)
    }


CASES = load_cases()
PARAMS: list[dict[str, Any] | None] = [*CASES] if CASES else [None]


@pytest.mark.parametrize("case", PARAMS, ids=[c["id"] for c in CASES] or ["absent"])
def test_corpus_case(case: dict[str, Any] | None) -> None:
    """Every expected key of the corpus case holds for our parser's result."""
    if case is None:
        pytest.skip(f"forward corpus not found at {corpus_dir()}")
    assert failures(case) == {}


def figures() -> tuple[Counter[str], Counter[str]]:
    """Per-field counts over the whole corpus: (passed, total)."""
    passed: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for case in CASES:
        missed = failures(case)
        for key in case["expect"]:
            parts = key.removeprefix("email.").split(".")
            field = ".".join(part for part in parts if not part.isdigit())
            total[field] += 1
            passed[field] += key not in missed
    return passed, total


def main() -> int:
    """Print per-field conformance and the failing keys; non-zero if any key fails."""
    if not CASES:
        print(f"forward corpus not found at {corpus_dir()}")
        return 2
    passed, total = figures()
    for field in sorted(total):
        print(f"{field:<16} {passed[field]:>5}/{total[field]:<5}")
    print(f"{'overall':<16} {sum(passed.values()):>5}/{sum(total.values()):<5}")
    bad = {case["id"]: failures(case) for case in CASES}
    for case_id, missed in bad.items():
        for key, (expected, actual) in missed.items():
            print(f"FAIL {case_id} {key}: expected {expected!r} got {actual!r}"[:400])
    return 0 if sum(passed.values()) == sum(total.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
