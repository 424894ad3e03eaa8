"""Hypothesis strategies for the fuzz campaign: mutated seeds and hostile header sections."""

from __future__ import annotations

import functools
import os

from hypothesis import strategies as st

from tests.campaigns.seeds import seeds

SMALL = 64 * 1024
TOKENS = [
    b"\r",
    b"\n",
    b"\r\n",
    b"\x00",
    b":",
    b";",
    b",",
    b'"',
    b"(",
    b")",
    b"<",
    b">",
    b"@",
    b"=?",
    b"?=",
    b"--",
    b"*",
    b"'",
    b"%",
    b"\\",
    b"\xff",
    b"\xe9",
    b" ",
    b"\t",
    b"=?utf-8?b?",
    b"=?utf-8?q?",
    b"=?x-bogus?q?",
    b"=0D=0A",
    b"\r\n.\r\n",
    b"\n.\n",
    b"multipart/mixed; boundary=x",
    b"\r\n\r\n",
    b"--x\r\n",
    b"message/rfc822",
    b"---------- Forwarded message ---------\r\nFrom: ",
    b"Content-Type: ",
    b"Authentication-Results: mx.acme.example; dkim=pass header.d=acme.example\r\n",
    b"From: alice@acme.example\r\n",
    b"support+",
    b"<a@b>",
    b"Received: x\r\n",
]
HEADER_NAMES = [
    "From",
    "To",
    "Cc",
    "Reply-To",
    "Sender",
    "Subject",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Date",
    "Content-Type",
    "Content-Disposition",
    "Content-Transfer-Encoding",
    "MIME-Version",
    "Authentication-Results",
    "DKIM-Signature",
    "Auto-Submitted",
    "Precedence",
    "List-Id",
    "X-Loop",
    "Delivered-To",
    "Resent-From",
    "Received",
    "X-Failed-Recipients",
    "Return-Path",
    "X-Auto-Response-Suppress",
]
VALUE_PIECES = [
    '"',
    "(",
    ")",
    "<",
    ">",
    "@",
    ",",
    ";",
    ":",
    "\\",
    "=?utf-8?q?a=0D=0Ab?=",
    "=?utf-8?b?!!!?=",
    "=?x-bogus?q?x?=",
    "name*",
    "name*0*=utf-8''%2F",
    "[b378]@x",
    "alice@acme.example",
    "support@acme.inbox.example.net",
    "support+token@acme.inbox.example.net",
    "<id@customer.test>",
    "multipart/mixed; boundary=b",
    "text/plain; charset=utf-7",
    "base64",
    "quoted-printable",
    "auto-replied",
    "bulk",
    "dkim=pass header.d=acme.example",
    "mx.acme.example;",
    "caf\xe9",
    "\u202e",
    " ",
    "\t",
]


def examples(default: int) -> int:
    """How many examples a property gets: the smoke default, or MAILGATEWAY_FUZZ_EXAMPLES."""
    return int(os.environ.get("MAILGATEWAY_FUZZ_EXAMPLES", default))


@functools.cache
def small_seeds() -> list[bytes]:
    """The seeds small enough to mutate quickly."""
    return [data for data in seeds().values() if len(data) <= SMALL]


@st.composite
def mutated_seeds(draw: st.DrawFn) -> bytes:
    """A seed with a few bytes replaced, inserted or deleted at random places."""
    data = bytearray(draw(st.sampled_from(small_seeds())))
    for _ in range(draw(st.integers(0, 8))):
        at = draw(st.integers(0, len(data)))
        token = draw(st.sampled_from(TOKENS) | st.binary(min_size=1, max_size=8))
        data[at : at + draw(st.integers(0, 4))] = token
    return bytes(data)


header_value = st.lists(st.sampled_from(VALUE_PIECES) | st.text(max_size=12), max_size=12).map(
    "".join
)


@st.composite
def header_sections(draw: st.DrawFn) -> bytes:
    """A message whose header section is built from hostile pieces for the structured headers
    (the class of input that crashes CPython's header parser), with a short body."""
    lines = draw(
        st.lists(st.tuples(st.sampled_from(HEADER_NAMES), header_value), min_size=1, max_size=12)
    )
    head = b"".join(
        f"{name}: {value}".encode("utf-8", "surrogateescape") + b"\r\n" for name, value in lines
    )
    body = draw(st.sampled_from(TOKENS) | st.binary(max_size=64))
    return head + b"\r\n" + body
