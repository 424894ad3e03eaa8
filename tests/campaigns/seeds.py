"""Fuzzing seeds: the RELIABILITY.md catalogue's hostile inputs, the eight SMTP smuggling endings,
the CPython email issues it names, the inputs of the fuzz campaign's findings, and every .eml
fixture of the test suite."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

SMUGGLING_ENDINGS = (
    b"\n.\n",
    b"\r.\r",
    b"\r\n.\r",
    b"\r.\r\n",
    b"\r\n.\n",
    b"\n.\r\n",
    b"\r\n.\x00\r\n",
    b"\r\r\n.\r\r\n",
)


def message(*headers: str | bytes, body: bytes = b"body\r\n") -> bytes:
    """A message from header lines and a body, CRLF line ends."""
    lines = [line if isinstance(line, bytes) else line.encode() for line in headers]
    return b"".join(line + b"\r\n" for line in lines) + b"\r\n" + body


def multipart(parts: list[bytes], boundary: str = "b-1") -> bytes:
    """A multipart/mixed message of the given parts (each with its own headers)."""
    head = f'From: a@customer.test\r\nContent-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
    body = b"".join(f"--{boundary}\r\n".encode() + part + b"\r\n" for part in parts)
    return head.encode() + body + f"--{boundary}--\r\n".encode()


def smuggling(ending: bytes) -> bytes:
    """Row 14: a fake end-of-data followed by smuggled commands, as the body of one message."""
    return (
        b"From: a@customer.test\r\nSubject: one\r\n\r\nbody"
        + ending
        + b"MAIL FROM:<ceo@bank.test>\r\nRCPT TO:<sales@acme.inbox.example.net>\r\nDATA\r\n"
        + b"Subject: smuggled\r\n\r\nevil\r\n"
    )


def nested(depth: int) -> bytes:
    """Row 35: multipart/mixed nested `depth` levels deep."""
    parts = [b'From: a@customer.test\r\nContent-Type: multipart/mixed; boundary="b0"\r\n\r\n']
    parts += [
        f'--b{n}\r\nContent-Type: multipart/mixed; boundary="b{n + 1}"\r\n\r\n'.encode()
        for n in range(depth)
    ]
    parts.append(f"--b{depth}\r\nContent-Type: text/plain\r\n\r\ndeepest\r\n".encode())
    parts += [f"--b{n}--\r\n".encode() for n in reversed(range(depth + 1))]
    return b"".join(parts)


def zip_bomb() -> bytes:
    """Row 47: 16 MiB of zeros compressed into a small zip attachment."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bomb:
        bomb.writestr("zeros.bin", bytes(16 * 1024 * 1024))
    import base64

    encoded = base64.encodebytes(archive.getvalue()).replace(b"\n", b"\r\n")
    return multipart(
        [
            b"Content-Type: text/plain\r\n\r\nsee attachment",
            b"Content-Type: application/zip; name=invoice.zip\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded,
        ]
    )


def attachment(parameter: str) -> bytes:
    """Row 46: a part with a hostile file name parameter."""
    return multipart(
        [
            "Content-Type: application/octet-stream\r\n"
            f"Content-Disposition: attachment; {parameter}\r\n\r\nx".encode()
        ]
    )


CATALOGUE: dict[str, Callable[[], bytes]] = {
    **{
        f"14-smuggling-{n}": (lambda ending=ending: smuggling(ending))
        for n, ending in enumerate(SMUGGLING_ENDINGS)
    },
    "15-bare-lf-header": lambda: b"From: a@customer.test\r\nSubject: a\nX-Evil: b\r\n\r\nbody\r\n",
    "15-bare-cr-header": lambda: b"From: a@customer.test\r\nSubject: a\rX-Evil: b\r\n\r\nbody\r\n",
    "32-header-bomb": lambda: (
        b"".join(b"X-H%d: v\r\n" % n for n in range(100_000)) + b"\r\nbody\r\n"
    ),
    "33-encoded-words": lambda: message("Subject: " + " ".join(["=?utf-8?q?ab?="] * 16_000)),
    "34-address-flood": lambda: message(
        "To: " + ", ".join(f"User {n} <u{n}@example.test>" for n in range(16_000))
    ),
    "34-semicolon-flood": lambda: message(
        "Content-Type: text/plain" + ";" * 16_000 + " charset=iso-8859-1", body=b"caf\xe9"
    ),
    "35-nested-2000": lambda: nested(2000),
    "36-parts-1001": lambda: multipart(
        [
            f"Content-Type: application/octet-stream; name=f{n}.bin\r\n\r\nabc".encode()
            for n in range(1001)
        ]
    ),
    "37-bad-base64": lambda: multipart(
        [
            b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8gd29ybGQ",
            b"Content-Type: application/pdf; name=x.pdf\r\nContent-Transfer-Encoding: base64"
            b"\r\n\r\n!!!notbase64===",
        ]
    ),
    "38-bogus-charset": lambda: message(
        'Content-Type: text/plain; charset="x-bogus-42"', body=b"caf\xc3\xa9 \xff"
    ),
    "39-rfc2047-garbage": lambda: message(
        "Subject: =?x-bogus?q?abc?= =?utf-8?b?!!!?= =?utf-8?q?" + "=FF" * 10 + "?="
    ),
    "40-encoded-crlf": lambda: message(
        "Subject: =?utf-8?q?hi=0D=0ABcc:_evil@x.test?=",
        "Message-ID: <=?utf-8?q?a=0D=0ABcc:_x?=@evil.test>",
        "From: =?utf-8?q?Eve=0D=0AX-Evil:_1?= <eve@x.test>",
    ),
    "42-nul": lambda: b'Subject: a\x00b\r\nFrom: "N\x00N" <n@x.test>\r\n\r\nx\x00y',
    "43-latin1-and-surrogates": lambda: message(
        b"Subject: caf\xe9",
        b"From: Jos\xe9 <j@x.test>",
        "Content-Type: text/plain; charset=utf-7",
        "X-Tricky: =?utf-7?q?+2AA-?= =?raw-unicode-escape?q?=5Cud800?=",
        body=b"x+2AA-y caf\xe9",
    ),
    "44-duplicate-singletons": lambda: message(
        "From: first@x.test",
        "From: second@x.test",
        "Subject: one",
        "Subject: two",
        "Message-ID: <1@x.test>",
        "Message-ID: <2@x.test>",
    ),
    "45-no-message-id": lambda: message("From: a@x.test", "Subject: no id"),
    "46-traversal-name": lambda: attachment('filename="../../etc/passwd"'),
    "46-rfc2231-name": lambda: attachment("filename*=utf-8''..%2F..%2Fetc%2Fpasswd%00.txt"),
    "46-long-name": lambda: attachment(f'filename="{"n" * 10_000}.txt"'),
    "47-zip-bomb": zip_bomb,
    "48-sql": lambda: message(
        "Subject: x'); DROP TABLE messages;--",
        'From: "x\'); DROP TABLE messages;--" <a@x.test>',
        "Message-ID: <1');DROP_TABLE_messages;--@evil.test>",
    ),
    "49-log-injection": lambda: message(
        "Subject: =?utf-8?q?ok=0D=0Afake_event=1B[2J?=", "From: =?utf-8?q?Eve=0A=1B[31m?= <e@x.t>"
    ),
    "50-received-51": lambda: (
        b"".join(
            b"Received: from hop%d.test by x.test; Thu, 26 Nov 2026\r\n" % n for n in range(51)
        )
        + message("From: a@customer.test", "X-Loop: support@acme.inbox.example.net")
    ),
    "51-auto-reply": lambda: message(
        "From: MAILER-DAEMON@x.test",
        "Auto-Submitted: auto-replied",
        "Precedence: bulk",
        "List-Id: <x.list>",
        "X-Autoreply: yes",
        "Subject: Out of office",
    ),
    "53-spoofed-forward": lambda: message(
        "From: alice@acme.example",
        "Authentication-Results: evil.test; dkim=pass header.d=acme.example",
        "Subject: Fwd: invoice",
        body=b"---------- Forwarded message ---------\r\nFrom: CEO <ceo@corp.test>\r\n"
        b"Subject: invoice\r\n\r\npay now\r\n",
    ),
    "54-dkim-l-and-expired-x": lambda: message(
        "DKIM-Signature: v=1; a=rsa-sha256; d=acme.example; s=mg1; l=10; x=1000000000;"
        " t=999999999; h=from:subject; bh=AAAA; b=AAAA",
        "From: alice@acme.example",
        "Subject: Fwd: x",
        body=b"---------- Forwarded message ---------\r\nFrom: a@b.test\r\n\r\nx\r\n",
    ),
}

CPYTHON: dict[str, Callable[[], bytes]] = {
    # gh-148518, gh-151857: IndexError in the header parser on these values (row 41)
    "gh-148518-to-quote": lambda: message('To: "', "From: a@x.test"),
    "gh-148518-name-star": lambda: message("Content-Type: text/plain; name*", "From: a@x.test"),
    "gh-151857-to-comment-colon": lambda: message("To: (c):", "From: a@x.test"),
    "gh-151857-msgid-brackets": lambda: message(
        "Message-ID: <[b378a1c2-5f6e-4d0a-9c1e-2f3a4b5c6d7e]@microsoft.com>", "From: a@x.test"
    ),
    # gh-136063: quadratic decoding of many encoded words (row 33)
    "gh-136063-encoded-words": lambda: message(
        "Subject: " + " ".join(["=?utf-8?b?YWI=?="] * 8_000), "From: a@x.test"
    ),
    # gh-87075: ';;;;' stuffing in structured parameters (row 34)
    "gh-87075-semicolons": lambda: message(
        "Content-Disposition: attachment" + ";" * 16_000 + " filename=a.txt", "From: a@x.test"
    ),
    # gh-102988 (CVE-2023-27043): parseaddr/getaddresses mistake who an address is
    "gh-102988-paren": lambda: message("From: alice@example.org)<bob@example.org>"),
    "gh-102988-quoted": lambda: message(
        'From: "alice@example.org" <bob@evil.test>', "To: alice@example.org<bob@example.org>"
    ),
    "gh-102988-two": lambda: message(
        "From: bob@evil.test,alice@acme.example", "Cc: a@x.test (b@y.test) <c@z.test>"
    ),
}

# What the fuzz campaign found (docs/campaigns.md, "What the campaigns found"), by number.
FINDINGS: dict[str, Callable[[], bytes]] = {
    # 7: Exim's address pattern was cubic on an unterminated last line of '@'
    "finding-7-exim-unterminated-line": lambda: message(
        "From: Mail Delivery System <Mailer-Daemon@x.test>",
        "Subject: Mail delivery failed",
        body=b"The following address(es) failed:\r\n\r\n  " + b"@" * 4000,
    ),
    # 8: qmail's address pattern was quadratic on '<' and a long run of '@'
    "finding-8-qmail-at-run": lambda: message(
        "From: MAILER-DAEMON@x.test", "Subject: failure notice", body=b"<" + b"@" * 40_000
    ),
    # 9: the address pattern of recipient fields was quadratic on a long run without '@'
    "finding-9-failed-recipients-run": lambda: message(
        "From: a@customer.test", "X-Failed-Recipients: " + "a" * 60_000
    ),
    "finding-9-final-recipient-run": lambda: message(
        "From: MAILER-DAEMON@x.test",
        "Content-Type: multipart/report; report-type=delivery-status; boundary=b",
        body=b"--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Final-Recipient: rfc822; " + b"a" * 60_000 + b"\r\nAction: failed\r\n\r\n--b--\r\n",
    ),
    # 10: the copy-of-the-message marker was quadratic on a line of dashes
    "finding-10-dash-line": lambda: message(
        "From: MAILER-DAEMON@x.test", "Subject: Undeliverable", body=b"-" * 20_000
    ),
    # 11: a trusted host's pass result with an empty property value failed the origin step
    "finding-11-empty-result-property": lambda: message(
        "Authentication-Results: mx.acme.example; dkim=pass header.d=customer.test header.b=",
        "From: a@customer.test",
    ),
}


def fixtures() -> dict[str, bytes]:
    """Every .eml of the test suite, CRLF line ends as over SMTP."""
    return {
        f"fixture-{path.relative_to(FIXTURES)}": path.read_bytes()
        .replace(b"\r\n", b"\n")
        .replace(b"\n", b"\r\n")
        for path in sorted(FIXTURES.rglob("*.eml"))
    }


def seeds() -> dict[str, bytes]:
    """Every seed by name."""
    made = {name: build() for name, build in {**CATALOGUE, **CPYTHON, **FINDINGS}.items()}
    return made | fixtures()


def write_corpus(folder: Path, limit: int | None = None) -> int:
    """Write the seeds (those up to `limit` bytes) as files for a fuzzer's corpus; how many."""
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    for name, data in seeds().items():
        if limit is None or len(data) <= limit:
            (folder / name.replace("/", "_")).write_bytes(data)
            written += 1
    return written
