"""IMAP wire helpers and poller rules as pure functions, and the channel settings' validation."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from mailgateway.config import ChannelConfig, ImapConfig
from mailgateway.intake.imap import backoff_delay, describe
from mailgateway.intake.imapclient import ConnectionLost
from mailgateway.intake.imapwire import (
    header_facts,
    literal_size,
    parse_body,
    parse_internal_date,
    parse_meta,
    parse_search,
    parse_select,
    quote,
    search_date,
    uid_set,
)


@pytest.mark.parametrize(
    ("uids", "expected"),
    [([1], "1"), ([3, 1, 2], "1:3"), ([1, 2, 3, 7, 9, 10], "1:3,7,9:10"), ([5, 5, 6], "5:6")],
)
def test_uid_set_is_compact(uids: list[int], expected: str) -> None:
    """UIDs become the shortest sequence set, sorted and de-duplicated."""
    assert uid_set(uids) == expected


def test_uid_set_refuses_nothing() -> None:
    """An empty UID set is a bug, not a command to send."""
    with pytest.raises(ValueError):
        uid_set([])


@pytest.mark.parametrize(
    ("name", "wire"),
    [("INBOX", '"INBOX"'), ("Sent Items", '"Sent Items"'), ('a"b\\c', '"a\\"b\\\\c"')],
)
def test_quote_escapes_mailbox_names(name: str, wire: str) -> None:
    """Mailbox names are sent as quoted strings with quotes and backslashes escaped."""
    assert quote(name) == wire


@pytest.mark.parametrize("name", ["INBOX\r\nA1 DELETE INBOX", "a\nb", "a\x00b"])
def test_quote_refuses_line_breaks(name: str) -> None:
    """Row 58: CR, LF or NUL in a mailbox name never reach the wire (no injected command)."""
    with pytest.raises(ValueError):
        quote(name)


def test_search_date_uses_english_months() -> None:
    """SEARCH SINCE dates are d-Mon-yyyy whatever the locale."""
    assert search_date(date(2026, 3, 7)) == "7-Mar-2026"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("27-Nov-2026 02:58:06 +0000", datetime(2026, 11, 27, 2, 58, 6, tzinfo=UTC)),
        (" 7-Mar-2026 10:00:00 +0130", datetime(2026, 3, 7, 8, 30, tzinfo=UTC)),
        ("32-Nov-2026 02:58:06 +0000", None),
        ("27-Foo-2026 02:58:06 +0000", None),
        ("yesterday", None),
    ],
)
def test_internal_date(text: str, expected: datetime | None) -> None:
    """INTERNALDATE values become aware datetimes; anything malformed becomes None."""
    assert parse_internal_date(text) == expected


def test_search_response_ignores_the_completion_text() -> None:
    """UIDs come from the untagged lines only, never from digits in the completion text."""
    lines = [b"4 2 9", b"SEARCH 11", b"Search completed 5 (0.001 + 0.000 secs)."]
    assert parse_search(lines) == [2, 4, 9, 11]
    assert parse_search([b"Search completed."]) == []


def test_select_response_needs_uidvalidity() -> None:
    """UIDVALIDITY and UIDNEXT are read from response codes; without UIDVALIDITY, an error."""
    lines = [b"3 EXISTS", b"OK [UIDVALIDITY 1795748286] UIDs valid", b"OK [UIDNEXT 5] next"]
    status = parse_select([*lines, b"[READ-WRITE] Select completed"])
    assert (status.uidvalidity, status.uidnext) == (1795748286, 5)
    with pytest.raises(ValueError):
        parse_select([b"3 EXISTS", b"[READ-WRITE] Select completed"])


def test_meta_merges_lines_and_ignores_other_messages() -> None:
    """FETCH lines for UIDs not asked for (unsolicited flag updates) are ignored; partial
    lines for the same UID are merged."""
    lines = [
        b'1 FETCH (UID 10 FLAGS (\\Seen \\Recent) INTERNALDATE "27-Nov-2026 02:58:06 +0000")',
        b"1 FETCH (UID 10 RFC822.SIZE 321)",
        b"2 FETCH (UID 99 FLAGS (\\Seen))",
        b"3 FETCH (FLAGS (\\Deleted))",
        b'4 FETCH (UID 12 FLAGS () INTERNALDATE "bad" RFC822.SIZE 5)',
        b"Fetch completed.",
    ]
    first, second = parse_meta(lines, [10, 12])
    assert (first.uid, first.seen, first.size) == (10, True, 321)
    assert first.internal_date == datetime(2026, 11, 27, 2, 58, 6, tzinfo=UTC)
    assert (second.uid, second.seen, second.size, second.internal_date) == (12, False, 5, None)


def test_body_is_the_literal_of_the_asked_uid() -> None:
    """The message bytes are the literal that follows the FETCH line of the UID asked for."""
    lines = [
        b"1 FETCH (UID 3 BODY[] {5}",
        bytearray(b"other"),
        b")",
        b"2 FETCH (UID 4 BODY[] {5}",
        bytearray(b"mine!"),
        b")",
        b"Fetch completed.",
    ]
    assert parse_body(lines, 4) == b"mine!"
    assert parse_body(lines, 5) is None
    assert parse_body([b"Fetch completed."], 4) is None


def test_literal_size_is_read_from_the_line_end() -> None:
    """A line ending in {n} announces a literal of n bytes."""
    assert literal_size(b"* 1 FETCH (UID 1 BODY[] {99999999999}") == 99_999_999_999
    assert literal_size(b"* 1 FETCH (UID 1 FLAGS ())") is None


@pytest.mark.parametrize(
    ("raw", "message_id", "return_path"),
    [
        (
            b"Message-ID: <Abc@Example.COM>\r\nReturn-Path: <bounce@x.test>\r\n\r\nhi",
            "<Abc@example.com>",
            "bounce@x.test",
        ),
        (b"Subject: none\r\n\r\nhi", "", ""),
        (b"Message-ID: not an id\r\n\r\n", "", ""),
        (b"Message-ID: <a@b.test>\r\n injected: yes\r\n\r\n", "", ""),
        (b"\xff\xfe garbage without headers", "", ""),
        (b"From: Mary <Mary@Client.test>\r\n\r\nhi", "", "Mary@Client.test"),
        (b"Return-Path: <>\r\nFrom: MAILER-DAEMON@x.test\r\n\r\nbounce", "", ""),
    ],
)
def test_header_facts(raw: bytes, message_id: str, return_path: str) -> None:
    """Message-ID is normalized as the parse stage does ('' when absent or not an id); the
    envelope sender is the Return-Path ('' for `<>`), else the From address (mail a client
    APPENDed is not a null sender); any bytes are accepted."""
    facts = header_facts(raw)
    assert (facts.message_id, facts.return_path) == (message_id, return_path)


def test_backoff_doubles_up_to_the_cap() -> None:
    """Reconnect delays double from reconnect_min to reconnect_max; jitter only shortens."""
    settings = ImapConfig(reconnect_min=1.0, reconnect_max=30.0)
    assert [backoff_delay(n, settings, rand=0.0) for n in range(1, 8)] == [
        1.0,
        2.0,
        4.0,
        8.0,
        16.0,
        30.0,
        30.0,
    ]
    assert backoff_delay(3, settings, rand=1.0) == 2.0
    assert backoff_delay(100, settings, rand=0.0) == 30.0


def test_describe_hides_database_details() -> None:
    """Database and system errors are named by class only (their text may hold values);
    IMAP errors keep their words."""
    from sqlalchemy.exc import OperationalError

    error = OperationalError("INSERT INTO raw_messages VALUES (secret bytes)", {}, Exception())
    assert "secret" not in describe(error) and "OperationalError" in describe(error)
    assert describe(ConnectionLost("the server said BYE")) == "ConnectionLost: the server said BYE"


def _channel(tmp_path: Path, **values: object) -> ChannelConfig:
    """A channel with the given settings."""
    secret = tmp_path / "secret"
    secret.write_text("pw")
    server = {"host": "127.0.0.1", "port": 143, "tls": "none", "user": "u", "password_file": secret}
    return ChannelConfig.model_validate(
        {"address": "help@acme.example", "imap": server, "smtp": server, **values}
    )


def test_channel_defaults(tmp_path: Path) -> None:
    """A channel watches INBOX, marks mail seen, uses IDLE and polls every minute otherwise."""
    channel = _channel(tmp_path)
    assert (channel.folder, channel.move_to, channel.idle, channel.poll_interval) == (
        "INBOX",
        "",
        True,
        60.0,
    )


@pytest.mark.parametrize(
    "values",
    [
        {"move_to": "INBOX"},
        {"folder": "In\r\nbox"},
        {"folder": ""},
        {"move_to": "Proc\x00essed"},
        {"poll_interval": 0},
        {"idle": "yes"},
    ],
)
def test_bad_channel_settings_are_refused(tmp_path: Path, values: dict[str, object]) -> None:
    """Moving into the watched folder, control characters in folder names, a zero poll
    interval and non-boolean toggles are refused."""
    with pytest.raises(ValidationError):
        _channel(tmp_path, **values)


def test_idle_renewal_stays_under_29_minutes() -> None:
    """idle_renew may not exceed 29 minutes (servers may drop an IDLE older than 30)."""
    assert ImapConfig().idle_renew == 1500.0
    with pytest.raises(ValidationError):
        ImapConfig(idle_renew=1800.0)
