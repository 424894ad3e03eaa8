"""Envelope paths: the gateway's quick reading of the usual `<local@domain>` form gives exactly
what aiosmtpd's own parser gives, for that form and for everything near it."""

from __future__ import annotations

import random

from aiosmtpd.smtp import SMTP

from mailgateway.intake.smtp import SIMPLE_PATH, ConnectionLimiter, GatewaySMTP

PATHS = [
    "<bench@customer.test>",
    "<john.smith+tag@mail.customer.test> SIZE=1024 BODY=8BITMIME",
    "<a@b>  SIZE=1",
    "<a@b> (comment) SIZE=1",
    '<"quoted local"@b>',
    "<a..b@c>",
    "<a@b.>",
    "<a@[192.0.2.1]>",
    "<@route.test:a@b>",
    "< a@b >",
    "<a@b>\t",
    "<a@b> ",
    "<a@b>x",
    "<>",
    "a@b",
    "<é@b>",
    "<" + "x" * 64 + "@b>",
    "<" + "x" * 65 + "@b>",
]
ALPHABET = [*"ab.@<> =-\t()\"\\:;,[]!#$%&'*+/?^_`{|}~Z09", "é", "\x00", "\r", "x" * 70]


class Handler:
    """No hooks: only the parser is exercised."""


def reading(protocol: SMTP, path: str) -> object:
    """What a protocol makes of a path: (address, parameters); a path that makes the parser
    raise (aiosmtpd's does on some broken paths) reads as malformed, (None, None)."""
    try:
        return protocol._getaddr(path)
    except Exception:
        return None, None


def mutations(count: int) -> list[str]:
    """Paths a few random edits away from the listed ones (seeded: the same on every run)."""
    chance = random.Random(9)
    found = []
    for _ in range(count):
        path = chance.choice(PATHS)
        for _ in range(chance.randint(1, 4)):
            at = chance.randrange(len(path) + 1)
            edit = chance.random()
            if edit < 0.4:
                path = path[:at] + chance.choice(ALPHABET) + path[at:]
            elif edit < 0.7:
                path = path[:at] + path[at + 1 :]
            else:
                path = path[:at] + chance.choice(ALPHABET) + path[at + 1 :]
        found.append(path)
    return found


async def test_paths_read_as_aiosmtpd_reads_them() -> None:
    """Every listed path and 20,000 edits of them read the same as with aiosmtpd's parser."""
    gateway = GatewaySMTP(Handler(), limiter=ConnectionLimiter(1, 1), min_data_rate=1)
    plain = SMTP(Handler())
    plain.local_part_limit = gateway.local_part_limit
    paths = PATHS + mutations(20_000)
    assert [reading(gateway, path) for path in paths] == [reading(plain, path) for path in paths]
    assert sum(SIMPLE_PATH.fullmatch(path) is not None for path in paths) > 2_000


async def test_paths_that_break_aiosmtpd_are_malformed() -> None:
    """A broken domain literal, on which aiosmtpd's parser raises, reads as malformed."""
    gateway = GatewaySMTP(Handler(), limiter=ConnectionLimiter(1, 1), min_data_rate=1)
    assert gateway._getaddr("<bench@[customer.test>") == (None, None)
    assert gateway._getaddr("<a@[b> SIZE=1") == (None, None)


async def test_long_local_part_refused_on_the_quick_path() -> None:
    """A 65-character local part in the usual form is refused like aiosmtpd refuses it."""
    gateway = GatewaySMTP(Handler(), limiter=ConnectionLimiter(1, 1), min_data_rate=1)
    assert gateway._getaddr("<" + "x" * 65 + "@b.test>") == (None, None)
    assert gateway._getaddr("<" + "x" * 64 + "@b.test> SIZE=9") == ("x" * 64 + "@b.test", "SIZE=9")
