"""The parse stage: bytes -> Parsed, for normal mail and catalogue rows 32-49 (RELIABILITY.md)."""

from __future__ import annotations

import base64
import hashlib
import sqlite3
import time
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailgateway.domain import Address, AttachmentInfo, Parsed
from mailgateway.inbound.parse import (
    BODY_LIMIT,
    clean_text,
    normalize_message_id,
    parse,
    received_count,
)

FIXTURES = Path(__file__).parent / "fixtures" / "parse"
SLOW = 2.0  # generous bound for the rows that pin linear behaviour (target: well under 1 s)


def message(*headers: str, body: bytes = b"body\r\n") -> bytes:
    """A message from header lines (str, UTF-8) and a body."""
    return "".join(f"{line}\r\n" for line in headers).encode() + b"\r\n" + body


def multipart(parts: list[bytes], *, boundary: str = "b-1", kind: str = "mixed") -> bytes:
    """A multipart message whose parts are given with their own headers."""
    head = f'Content-Type: multipart/{kind}; boundary="{boundary}"\r\n\r\n'.encode()
    delimiter = f"--{boundary}\r\n".encode()
    body = b"".join(delimiter + part + b"\r\n" for part in parts)
    return head + body + f"--{boundary}--\r\n".encode()


def attachment(filename_param: str, data: bytes = b"x") -> bytes:
    """An application/octet-stream attachment part with the given disposition parameter."""
    return (
        b"Content-Type: application/octet-stream\r\n"
        b"Content-Disposition: attachment; "
        + filename_param.encode("utf-8", "surrogatepass")
        + b"\r\n\r\n"
        + data
    )


def timed(raw: bytes) -> tuple[Parsed, float]:
    """The parse result and how long it took in seconds."""
    started = time.perf_counter()
    parsed = parse(raw)
    return parsed, time.perf_counter() - started


def header_strings(parsed: Parsed) -> list[str]:
    """Every string of a Parsed that must be header-safe (no CR, LF, NUL)."""
    addresses = [
        *([parsed.from_] if parsed.from_ else []),
        *parsed.to,
        *parsed.cc,
        *parsed.reply_to,
    ]
    return [
        parsed.message_id,
        parsed.subject,
        *parsed.in_reply_to,
        *parsed.references,
        *parsed.defects,
        *(text for address in addresses for text in (address.email, address.name)),
        *(text for item in parsed.attachments for text in (item.filename, item.content_type)),
        *(text for pair in parsed.headers for text in pair),
    ]


def assert_safe(parsed: Parsed) -> None:
    """Header strings hold no CR/LF/NUL; all text is encodable (no lone surrogates)."""
    for text in header_strings(parsed):
        assert not {"\r", "\n", "\x00"} & set(text), repr(text)
        text.encode("utf-8")
    for body in (parsed.text, parsed.html):
        assert body is None or "\x00" not in body
        assert body is None or isinstance(body.encode("utf-8"), bytes)


# --- normal mail ---------------------------------------------------------------------------


def test_plain_message() -> None:
    """A simple message yields every field normalised: ids, addresses, date, subject, text."""
    parsed = parse(
        message(
            "From: Ann Example <Ann@Example.COM>",
            'To: bob@example.test, "Carol C." <CAROL@example.test>',
            "Reply-To: help@example.test",
            "Subject: Hello there",
            "Date: Mon, 06 May 2024 09:11:57 +0200",
            "Message-ID: <Abc.123@Mail.Example.COM>",
            body=b"Line one\r\nLine two\r\n",
        )
    )
    assert parsed.message_id == "<Abc.123@mail.example.com>"
    assert not parsed.message_id_generated
    assert parsed.from_ == Address("ann@example.com", "Ann Example")
    assert parsed.to == (Address("bob@example.test"), Address("carol@example.test", "Carol C."))
    assert parsed.reply_to == (Address("help@example.test"),)
    assert parsed.subject == "Hello there"
    assert parsed.date == datetime(2024, 5, 6, 9, 11, 57, tzinfo=timezone(timedelta(hours=2)))
    assert parsed.text == "Line one\nLine two\n"
    assert parsed.html is None
    assert parsed.attachments == ()
    assert parsed.defects == ()
    assert parsed.header("message-id") == "<Abc.123@Mail.Example.COM>"


def test_multipart_alternative_fixture() -> None:
    """From a real-shaped multipart/mixed: text and html from the alternative, two attachments."""
    parsed = parse((FIXTURES / "alternative-with-attachments.eml").read_bytes())
    assert parsed.subject == "Rechnung für Mai"
    assert parsed.from_ == Address("anna.mueller@example.org", "Anna Müller")
    assert parsed.to == (
        Address("support@example.test", "Support"),
        Address("bob@example.test", "Bob, Jr."),
    )
    assert parsed.cc == (Address("carol@example.test"),)
    assert parsed.text == "Hallo Welt – grüße\nZweite Zeile"
    assert parsed.html == "<p>Hallo <b>Welt</b> – grüße</p>\n"
    assert parsed.attachments == (
        AttachmentInfo("rechnung.pdf", "application/pdf", len(b"%PDF-1.4 test\n")),
        AttachmentInfo("übersicht Mai.txt", "text/plain", len("Übersicht".encode())),
    )
    assert parsed.defects == ()
    assert len(parsed.headers) == 11


def test_attachment_sizes_are_decoded_lengths() -> None:
    """Attachment size is the decoded byte length for base64, quoted-printable and 8bit."""
    data = bytes(range(256)) * 3
    raw = multipart(
        [
            b"Content-Type: text/plain\r\n\r\nsee attached",
            b"Content-Type: image/PNG; name=a.png\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + base64.encodebytes(data),
            b"Content-Type: text/csv\r\nContent-Disposition: attachment; filename=b.csv\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\na=3Db,=\r\nc",
            b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nhi",
        ]
    )
    parsed = parse(raw)
    assert parsed.text == "see attached"
    assert parsed.attachments == (
        AttachmentInfo("a.png", "image/png", len(data)),
        AttachmentInfo("b.csv", "text/csv", len(b"a=b,c")),
        AttachmentInfo("attachment", "message/rfc822", len(b"Subject: inner\r\n\r\nhi")),
    )


def test_html_only_leaves_text_none() -> None:
    """A message with only an html body has html set and text None (later stages derive)."""
    parsed = parse(message("Content-Type: text/html; charset=utf-8", body=b"<p>hi</p>"))
    assert parsed.text is None
    assert parsed.html == "<p>hi</p>"


def test_encoded_subject() -> None:
    """RFC 2047 words decode; adjacent words join, so a character split across two survives."""
    raw = message(
        "Subject: Re: =?UTF-8?Q?caf=C3?= =?utf-8?q?=A9_au_lait?= and =?ISO-8859-1?B?Y2Fm6Q==?="
    )
    assert parse(raw).subject == "Re: café au lait and café"


def test_references_and_in_reply_to_keep_order() -> None:
    """References keep their order (comments and non-ids dropped); In-Reply-To is a list."""
    parsed = parse((FIXTURES / "reply-with-references.eml").read_bytes())
    assert parsed.subject == "Re: Rechnung für Mai"
    assert parsed.in_reply_to == ("<20240506091157.4711@mx.example.org>",)
    assert parsed.references == (
        "<root-0@example.org>",
        "<20240506091157.4711@mx.example.org>",
        "<third@example.org>",
    )
    assert parsed.date == datetime(2024, 5, 7, 10, 0, tzinfo=UTC)


def test_references_keep_the_last_hundred() -> None:
    """References longer than 100 ids keep the last 100 (the closest ancestors) + defect."""
    ids = " ".join(f"<m{n}@example.test>" for n in range(150))
    parsed = parse(message(f"References: {ids}"))
    assert len(parsed.references) == 100
    assert parsed.references[0] == "<m50@example.test>"
    assert parsed.references[-1] == "<m149@example.test>"
    assert "references:truncated" in parsed.defects


def test_date_naive_is_utc_and_invalid_is_none() -> None:
    """A date without zone (-0000) becomes aware UTC; an unparseable date is None + defect."""
    naive = parse(message("Date: Mon, 06 May 2024 09:11:57 -0000"))
    assert naive.date == datetime(2024, 5, 6, 9, 11, 57, tzinfo=UTC)
    broken = parse(message("Date: yesterday-ish"))
    assert broken.date is None
    assert "header:date:invalid" in broken.defects


def test_address_forms() -> None:
    """Groups, comments, encoded and quoted names and route addresses all yield mailboxes."""
    parsed = parse(
        message(
            "From: =?utf-8?b?SsO2cmc=?= <J@X.example>",
            'To: team: a@x.test, "B \\"Q\\" b" <b@x.test>;, c@x.test (Carol), <@r1,@r2:d@x.test>',
            "Cc: undisclosed-recipients:;",
        )
    )
    assert parsed.from_ == Address("j@x.example", "Jörg")
    assert [address.email for address in parsed.to] == [
        "a@x.test",
        "b@x.test",
        "c@x.test",
        "d@x.test",
    ]
    assert parsed.to[1].name == 'B "Q" b'
    assert parsed.cc == ()


def test_unparseable_from_is_none_with_defect() -> None:
    """A From without a usable mailbox gives from_=None and a defect; a missing From too."""
    assert parse(message("From: not an address")).from_ is None
    assert "header:from:invalid" in parse(message("From: not an address")).defects
    assert "header:from:missing" in parse(message("Subject: x")).defects


def test_text_is_capped() -> None:
    """text beyond 2 MiB characters is cut at the cap and a defect records it."""
    parsed = parse(message("Content-Type: text/plain", body=b"a" * (BODY_LIMIT + 10)))
    assert parsed.text is not None
    assert len(parsed.text) == BODY_LIMIT
    assert "text:truncated" in parsed.defects


def test_bare_cr_in_header_does_not_inject_a_field() -> None:
    """A bare CR inside a header value becomes a space + defect, never a new header field."""
    parsed = parse(b"Subject: hi\rBcc: evil@x.test\r\nFrom: a@x.test\r\n\r\nbody")
    assert parsed.subject == "hi Bcc: evil@x.test"
    assert parsed.header("bcc") is None
    assert [name for name, _ in parsed.headers] == ["Subject", "From"]
    assert "header:bare-cr" in parsed.defects


def test_long_header_value_is_truncated() -> None:
    """A header value over 100 KiB is cut to 100 KiB before any structured parsing + defect."""
    parsed = parse(message("X-Long: " + "v" * 200_000, "Subject: after"))
    assert len(parsed.header("x-long") or "") == 100 * 1024 - 1  # the space after ':' counts
    assert parsed.subject == "after"
    assert "header:x-long:truncated" in parsed.defects


def test_header_section_over_one_mib_is_not_parsed_further() -> None:
    """Fields starting beyond 1 MiB of header section are dropped; the body is still found."""
    fields = [f"X-F{n}: " + "v" * 10_000 for n in range(200)]
    parsed = parse(message(*fields, "Subject: too late", body=b"the body"))
    assert 100 <= len(parsed.headers) <= 106
    assert parsed.subject == ""
    assert parsed.text == "the body"
    assert "headers:truncated" in parsed.defects


def test_folded_header_flood_is_linear() -> None:
    """A header folded over 8 MiB of lines is capped, ends the 1 MiB section, parses fast."""
    raw = b"Subject: a\r\n" + b" b\r\n" * (2 * 1024 * 1024) + b"From: x@y.test\r\n\r\nbody"
    parsed, seconds = timed(raw)
    assert parsed.subject.startswith("a b b")
    assert parsed.from_ is None
    assert {"header:subject:truncated", "headers:truncated"} <= set(parsed.defects)
    assert parsed.text == "body"
    assert seconds < SLOW


def test_multipart_without_usable_boundary_is_read_as_text() -> None:
    """A multipart without boundary, or whose boundary never occurs, is read as flagged text."""
    missing = parse(message("Content-Type: multipart/mixed", body=b"just text"))
    assert missing.text == "just text"
    assert "mime:no-boundary" in missing.defects
    absent = parse(message("Content-Type: multipart/mixed; boundary=zz", body=b"no parts"))
    assert absent.text == "no parts"
    assert "mime:boundary-not-found" in absent.defects


def test_unclosed_multipart_keeps_its_last_part() -> None:
    """A multipart missing its close delimiter still yields every part, the last to the end."""
    raw = multipart(
        [b"Content-Type: text/plain\r\n\r\nfirst", attachment("filename=last.bin", b"12345")]
    )
    parsed = parse(raw.removesuffix(b"--b-1--\r\n"))
    assert parsed.text == "first"
    assert parsed.attachments[0].filename == "last.bin"


def test_received_count() -> None:
    """received_count counts Received fields of the header section only, any case, folded."""
    raw = (
        b"Received: from a\r\n\tby b\r\nRECEIVED : from c\r\nX-Note: Received: no\r\n"
        b"X-Bare: a\rReceived: no\r\n\r\nReceived: in the body\r\n"
    )
    assert received_count(raw) == 2
    assert received_count(b"\r\nReceived: x\r\n") == 0
    assert received_count(b"".join(b"Received: hop %d\r\n" % n for n in range(51))) == 51


def test_clean_text() -> None:
    """clean_text: NUL/surrogates -> U+FFFD, breaks -> space, controls dropped, TAB kept, cut."""
    assert clean_text("a\x00b\r\nc\x1b[31md\te\u2028f\udcff") == "a\ufffdb  c[31md\te f\ufffd"
    assert clean_text("abcdef", limit=3) == "abc"
    assert clean_text("plain") == "plain"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<Local.Part@Example.COM>", "<Local.Part@example.com>"),
        ("  <a@b.test> (comment)", "<a@b.test>"),
        ("<a\r\n @b.test>", "<a@b.test>"),
        ("bare@Host.Test", "<bare@host.test>"),
        ("<[b378a1c2-5f6e]@microsoft.com>", "<[b378a1c2-5f6e]@microsoft.com>"),
        ("<no-at-sign>", None),
        ("<a@b> <c@d>", None),
        ("<a\x00@b.test>", None),
        ("", None),
    ],
)
def test_normalize_message_id(value: str, expected: str | None) -> None:
    """normalize_message_id keeps local-part case, lower-cases the domain, rejects junk."""
    assert normalize_message_id(value) == expected


# --- catalogue rows 32-49 --------------------------------------------------------------------


def test_32_header_bomb_is_truncated() -> None:
    """Row 32: 100 000 header lines keep the first 1000 fields, defect, body still found."""
    raw = b"".join(b"X-H%d: v\r\n" % n for n in range(100_000)) + b"\r\nthe body\r\n"
    parsed, seconds = timed(raw)
    assert len(parsed.headers) == 1000
    assert "headers:truncated" in parsed.defects
    assert parsed.text == "the body\n"
    assert seconds < SLOW


def test_33_subject_with_16000_encoded_words_is_fast() -> None:
    """Row 33: a Subject of 16 000 encoded-words is capped at 100 KiB raw and decoded fast."""
    raw = message("Subject: " + " ".join(["=?utf-8?q?ab?="] * 16_000))
    parsed, seconds = timed(raw)
    assert parsed.subject.startswith("abababab")
    assert len(parsed.subject) < 100 * 1024
    assert "header:subject:truncated" in parsed.defects
    assert seconds < SLOW


def test_34_address_flood_is_capped() -> None:
    """Row 34: To with 16 000 addresses keeps at most 1000 (defect) within the time bound."""
    raw = message("To: " + ", ".join(f"User {n} <u{n}@example.test>" for n in range(16_000)))
    parsed, seconds = timed(raw)
    assert len(parsed.to) == 1000
    assert parsed.to[999] == Address("u999@example.test", "User 999")
    assert "address:to:truncated" in parsed.defects
    assert seconds < SLOW


def test_34_semicolon_flood_in_content_type() -> None:
    """Row 34: Content-Type with 16 000 ';' parses fast and a later charset still applies."""
    raw = message(
        "Content-Type: text/plain" + ";" * 16_000 + " charset=iso-8859-1",
        body="café".encode("latin-1"),
    )
    parsed, seconds = timed(raw)
    assert parsed.text == "café"
    assert seconds < SLOW


def test_35_deep_nesting_is_opaque_below_depth_50() -> None:
    """Row 35: 2000 nested multiparts never raise; depth > 50 is skipped with a defect."""
    parts = [
        b'Content-Type: multipart/mixed; boundary="b0"\r\n\r\n--b0\r\n'
        b"Content-Type: text/plain\r\n\r\ntop text\r\n"
    ]
    for level in range(2000):
        parts.append(
            f'--b{level}\r\nContent-Type: multipart/mixed; boundary="b{level + 1}"\r\n\r\n'.encode()
        )
    parts.append(b"--b2000\r\nContent-Type: text/plain\r\n\r\ndeepest\r\n--b2000--\r\n")
    parts.extend(f"--b{level}--\r\n".encode() for level in reversed(range(2000)))
    parsed, seconds = timed(b"".join(parts))
    assert parsed.text == "top text"
    assert "mime:too-deep" in parsed.defects
    assert seconds < SLOW


def test_36_more_than_1000_parts_stop_the_walk() -> None:
    """Row 36: 1001 parts yield the first 1000 and a too-many-parts defect."""
    raw = multipart([attachment(f"filename=f{n}.bin", b"abc") for n in range(1001)])
    parsed, seconds = timed(raw)
    assert len(parsed.attachments) == 1000
    assert parsed.attachments[-1] == AttachmentInfo("f999.bin", "application/octet-stream", 3)
    assert "mime:too-many-parts" in parsed.defects
    assert seconds < SLOW


def test_37_invalid_base64_is_decoded_best_effort() -> None:
    """Row 37: invalid base64 never raises; a defect is recorded and the text is best effort."""
    raw = multipart(
        [
            b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8gd29ybGQ",
            b"Content-Type: application/pdf; name=x.pdf\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n"
            b"!!!notbase64===",
        ]
    )
    parsed = parse(raw)
    assert parsed.text == "hello world"
    assert parsed.attachments == (AttachmentInfo("x.pdf", "application/pdf", 6),)
    assert "mime:bad-base64" in parsed.defects


def test_38_unknown_charset_falls_back_to_utf8() -> None:
    """Row 38: charset x-bogus-42 decodes as UTF-8 with replacement and records a defect."""
    raw = message('Content-Type: text/plain; charset="x-bogus-42"', body=b"caf\xc3\xa9 \xff")
    parsed = parse(raw)
    assert parsed.text == "café \ufffd"
    assert "charset:x-bogus-42" in parsed.defects


def test_39_rfc2047_garbage_gives_replacement_characters() -> None:
    """Row 39: bogus charsets, broken base64 words and invalid UTF-8 give U+FFFD, no error."""
    garbage = parse(message("Subject: =?x-bogus?q?abc?= =?utf-8?b?!!!?="))
    assert garbage.subject == "abc\ufffd"
    invalid = parse(message("Subject: =?utf-8?q?" + "=FF" * 10 + "?="))
    assert invalid.subject == "\ufffd" * 10


def test_40_encoded_crlf_never_reaches_header_values() -> None:
    """Row 40: encoded CR/LF is flattened in Subject and never decoded in Message-ID."""
    parsed = parse(
        message(
            "Subject: =?utf-8?q?hi=0D=0ABcc:_evil@x.test?=",
            "Message-ID: <=?utf-8?q?a=0D=0ABcc:_x?=@evil.test>",
        )
    )
    assert parsed.subject == "hi  Bcc: evil@x.test"
    assert parsed.message_id == "<=?utf-8?q?a=0D=0ABcc:_x?=@evil.test>"
    assert parsed.header("bcc") is None
    reply = EmailMessage()
    reply["Subject"] = "Re: " + parsed.subject
    reply["References"] = parsed.message_id
    assert "evil" in reply["Subject"]


@pytest.mark.parametrize(
    "line",
    [
        'To: "',
        "Content-Type: text/plain; name*",
        "To: (c):",
        "Message-ID: <[b378a1c2-5f6e-4d0a-9c1e-2f3a4b5c6d7e]@microsoft.com>",
    ],
)
def test_41_cpython_header_crashers_are_contained(line: str) -> None:
    """Row 41: CPython header crashers parse; the raw value is kept and the body still read."""
    parsed = parse(message(line, "From: a@x.test", body=b"still here"))
    name, _, value = line.partition(": ")
    assert parsed.header(name) == value
    assert parsed.text == "still here"
    assert parsed.from_ == Address("a@x.test")
    if name == "To":
        assert parsed.to == ()
        assert "header:to:IndexError" in parsed.defects
    if name == "Message-ID":
        assert parsed.message_id == value
        assert not parsed.message_id_generated


def test_42_nul_bytes_become_replacement_characters() -> None:
    """Row 42: NUL in headers and body becomes U+FFFD in every text field."""
    raw = b'Subject: a\x00b\r\nFrom: "N\x00N" <n@x.test>\r\n\r\nx\x00y'
    parsed = parse(raw)
    assert parsed.subject == "a\ufffdb"
    assert parsed.from_ == Address("n@x.test", "N\ufffdN")
    assert parsed.header("subject") == "a\ufffdb"
    assert parsed.text == "x\ufffdy"


def test_43_latin1_and_surrogate_producing_input() -> None:
    """Row 43: Latin-1 bytes read as Latin-1; surrogate-making charsets end sqlite3-safe."""
    latin = parse(b"Subject: caf\xe9\r\nFrom: Jos\xe9 <j@x.test>\r\n\r\ncaf\xe9")
    assert latin.subject == "café"
    assert latin.from_ == Address("j@x.test", "José")
    assert latin.text == "café"
    tricky = parse(
        message(
            "Subject: =?utf-7?q?+2AA-?= =?raw-unicode-escape?q?=5Cud800?=",
            "Content-Type: text/plain; charset=utf-7",
            body=b"x+2AA-y",
        )
    )
    assert tricky.subject.startswith("\ufffd")
    assert tricky.text == "x\ufffdy"
    database = sqlite3.connect(":memory:")
    for text in [*header_strings(latin), *header_strings(tricky), tricky.text]:
        database.execute("select ?", (text,))


def test_44_duplicate_singletons_first_wins() -> None:
    """Row 44: duplicated From, Subject, Message-ID, To, Date keep the first and flag each."""
    parsed = parse(
        message(
            "From: first@x.test",
            "From: second@x.test",
            "Subject: one",
            "Subject: two",
            "Message-ID: <1@x.test>",
            "Message-ID: <2@x.test>",
            "To: a@x.test",
            "To: b@x.test",
            "Date: Mon, 06 May 2024 09:00:00 +0000",
            "Date: Tue, 07 May 2024 09:00:00 +0000",
            "X-Tag: one",
            "X-Tag: two",
        )
    )
    assert parsed.from_ == Address("first@x.test")
    assert parsed.subject == "one"
    assert parsed.message_id == "<1@x.test>"
    assert parsed.to == (Address("a@x.test"),)
    assert parsed.date == datetime(2024, 5, 6, 9, tzinfo=UTC)
    for name in ("from", "subject", "message-id", "to", "date"):
        assert f"duplicate:{name}" in parsed.defects
    assert "duplicate:x-tag" not in parsed.defects


def test_45_missing_message_id_is_generated_deterministically() -> None:
    """Row 45: a missing or malformed Message-ID is sha256-derived, stable and flagged."""
    raw = message("From: a@x.test", "Subject: no id")
    parsed = parse(raw, id_domain="gw.example.test")
    assert parsed.message_id == f"<{hashlib.sha256(raw).hexdigest()[:32]}@gw.example.test>"
    assert parsed.message_id_generated
    assert "message-id:missing" in parsed.defects
    assert parse(raw, id_domain="gw.example.test").message_id == parsed.message_id
    assert parse(raw + b"!", id_domain="gw.example.test").message_id != parsed.message_id
    malformed = parse(message("Message-ID: not an id"))
    assert malformed.message_id_generated
    assert "message-id:invalid" in malformed.defects


@pytest.mark.parametrize(
    ("param", "expected"),
    [
        ('filename="../../etc/passwd"', "passwd"),
        ('filename="..\\..\\win.ini"', "win.ini"),
        ('filename="/abs/path"', "path"),
        ("filename=CON", "CON"),
        ('filename="a\x00.txt"', "a.txt"),
        ("filename*=utf-8''..%2F..%2Fetc%2Fpasswd", "passwd"),
        ("filename*=utf-8''%0D%0Aevil%00.txt", "evil.txt"),
        ('filename=".."', "attachment"),
        ('filename=""', "attachment"),
        ('filename="dir/"', "attachment"),
        ('filename="inv\u202eoice.txt"', "invoice.txt"),
        ('filename="=?utf-8?q?a=2Fb.txt?="', "b.txt"),
    ],
)
def test_46_hostile_attachment_names_are_sanitised(param: str, expected: str) -> None:
    """Row 46: names lose paths, controls and bidi marks; empty or dots become 'attachment'."""
    parsed = parse(multipart([attachment(param)]))
    assert parsed.attachments == (AttachmentInfo(expected, "application/octet-stream", 1),)


def test_46_long_attachment_name_is_capped() -> None:
    """Row 46: a 10 000-character name is cut to 255 characters, keeping the extension."""
    parsed = parse(multipart([attachment(f'filename="{"n" * 10_000}.txt"')]))
    name = parsed.attachments[0].filename
    assert len(name) == 255
    assert name.endswith("nnn.txt")


def test_48_sql_like_header_values_are_kept_verbatim() -> None:
    """Row 48: SQL-ish Subject, From name and Message-ID are stored verbatim, not escaped."""
    parsed = parse(
        message(
            "Subject: x'); DROP TABLE messages;--",
            'From: "x\'); DROP TABLE messages;--" <a@x.test>',
            "Message-ID: <1');DROP_TABLE_messages;--@evil.test>",
        )
    )
    assert parsed.subject == "x'); DROP TABLE messages;--"
    assert parsed.from_ == Address("a@x.test", "x'); DROP TABLE messages;--")
    assert parsed.message_id == "<1');DROP_TABLE_messages;--@evil.test>"


def test_49_log_injection_values_are_single_line() -> None:
    """Row 49: CRLF and ANSI escapes in Subject/From never leave a line break or ESC."""
    parsed = parse(
        message(
            "Subject: =?utf-8?q?ok=0D=0Afake_event=1B[2J?=",
            "From: =?utf-8?q?Eve=0A=1B[31m?= <eve@x.test>",
        )
    )
    assert parsed.subject == "ok  fake event[2J"
    assert parsed.from_ == Address("eve@x.test", "Eve [31m")


# --- properties ------------------------------------------------------------------------------

VALID = (FIXTURES / "alternative-with-attachments.eml").read_bytes()
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
    b"<",
    b">",
    b"=?",
    b"?=",
    b"--",
    b"==outer==",
    b"inner-42",
    b"*",
    b"'",
    b"%",
    b"\\",
    b"\xff",
    b"\xe9",
    b" ",
    b"=?utf-8?b?",
    b"=?x-bogus?q?",
    b"multipart/mixed; boundary=x",
    b"\r\n\r\n",
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """The valid fixture with a few bytes replaced, inserted or deleted at random places."""
    data = bytearray(VALID)
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(data)))
        token = draw(st.sampled_from(TOKENS) | st.binary(min_size=1, max_size=4))
        cut = draw(st.integers(0, 3))
        data[at : at + cut] = token
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_any_bytes_parse_safely(raw: bytes) -> None:
    """For arbitrary bytes parse() returns, and header strings hold no CR/LF/NUL."""
    assert_safe(parse(raw))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_messages_parse_safely(raw: bytes) -> None:
    """For mutations of a valid message parse() returns, and header strings stay clean."""
    parsed = parse(raw)
    assert_safe(parsed)
    assert parsed.message_id.startswith("<")
