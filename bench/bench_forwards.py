"""Time the forward parser on 1 MB hostile bodies against a normal 2 KB forward.

Run: `python bench/bench_forwards.py`. Prints the median time of each body and the ratio of the
slowest hostile one to the normal one; exits 1 if a hostile body takes over 100 ms."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mailgateway.inbound.forwards import parse_forward

LIMIT_SECONDS = 0.100
SIZE = 1_000_000
SEPARATOR = "---------- Forwarded message ---------\n"
LABELS = "From: a@b\nTo: c@d\nSubject: x\n"


def fill(unit: str, size: int = SIZE) -> str:
    """`unit` repeated up to `size` characters."""
    return unit * (size // len(unit))


def normal_forward() -> str:
    """A realistic Gmail forward of about 2 KB, with a note above it."""
    paragraph = (
        "Our order 4711 arrived damaged: the box was crushed and two of the six glasses are "
        "broken. Could you send replacements or refund the two glasses? Photos are attached.\n"
    )
    return (
        "Hi team, can someone take this one? She wrote to me directly.\n\nThanks, Ana\n\n"
        f"{SEPARATOR}"
        "From: Jane Customer <jane@customer.example>\n"
        "Date: Tue, Mar 4, 2025 at 10:12 AM\n"
        "Subject: Damaged delivery, order 4711\n"
        "To: Ana Agent <ana@acme.example>\n"
        "Cc: Bob <bob@customer.example>, orders@customer.example\n\n"
        "Hello Ana,\n\n" + paragraph * 10 + "\nBest regards,\nJane Customer\n+1 555 0100\n"
    )


def hostile_bodies() -> dict[str, tuple[str, str]]:
    """1 MB bodies made of tens of thousands of separator and label lines: (text, subject)."""
    header = f"{SEPARATOR}From: Jane <jane@customer.example>\nDate: today\nSubject: x\n\n"
    return {
        "separator and label lines, no forward": (fill(SEPARATOR + LABELS), ""),
        "label lines under an FW: subject": (fill("From: a@b\n"), "FW: x"),
        "forward, then 1 MB of separators and labels": (header + fill(SEPARATOR + LABELS), ""),
        "quoted separators and labels": (fill("> " + SEPARATOR + "> From: a@b\n> Date: x\n"), ""),
        "Yahoo-style glued label lines": (
            fill("----- Forwarded Message ----- From: " + "To: a@b CcTo: " * 60 + "\n"),
            "",
        ),
        "quote header lines under an FW: subject": (
            fill('On 1/2/2025 10:00, "A" <a@b.c> wrote:\n'),
            "FW: x",
        ),
    }


def median_seconds(call: Callable[[], object], runs: int) -> float:
    """Median wall time of `runs` calls."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    """Run the benchmark and print the figures; 1 if a hostile body is over the limit."""
    normal = normal_forward()
    assert parse_forward(normal) is not None, "the normal forward must be recognised"
    normal_time = median_seconds(lambda: parse_forward(normal), 201)
    print(f"normal forward ({len(normal):,} chars): {normal_time * 1e3:.3f} ms (median)")
    worst = 0.0
    for name, (text, subject) in hostile_bodies().items():
        elapsed = median_seconds(partial(parse_forward, text, subject=subject), 7)
        worst = max(worst, elapsed)
        print(f"hostile: {name} ({len(text):,} chars): {elapsed * 1e3:.2f} ms (median)")
    ratio = worst / normal_time
    print(f"slowest hostile / normal: {ratio:.0f}x time for {SIZE / len(normal):.0f}x the size")
    verdict = "OK" if worst <= LIMIT_SECONDS else "TOO SLOW"
    print(f"{verdict}: slowest hostile {worst * 1e3:.2f} ms (limit {LIMIT_SECONDS * 1e3:.0f} ms)")
    return 0 if worst <= LIMIT_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
