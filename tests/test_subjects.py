"""Subject keys: reply/forward prefixes of every language in the table, list tags, counters,
auto-reply prefixes and out-of-office subjects, over .eml fixtures decoded by the parse stage."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgateway.inbound.parse import parse
from mailgateway.inbound.subjects import (
    AUTO_REPLY_PREFIXES,
    REPLY_FORWARD_PREFIXES,
    is_auto_reply_subject,
    subject_key,
    words,
)

FIXTURES = Path(__file__).parent / "fixtures" / "threading"
PREFIX_FIXTURES = sorted((FIXTURES / "prefixes").glob("*.eml"))


@pytest.mark.parametrize("path", PREFIX_FIXTURES, ids=lambda p: p.stem)
def test_language_prefix_stripped(path: Path) -> None:
    """A reply or forward prefix (in the charset its mail clients use) leaves the bare subject."""
    parsed = parse(path.read_bytes())
    assert parsed.defects == ()
    assert subject_key(parsed.subject) == "printer on fire"


def test_every_table_prefix_has_a_fixture() -> None:
    """Each word of the prefix table is shown by a fixture (its X-Fixture-Prefix header)."""
    shown = {parse(path.read_bytes()).header("x-fixture-prefix") for path in PREFIX_FIXTURES}
    assert set(words(REPLY_FORWARD_PREFIXES)) - shown == set()


@pytest.mark.parametrize(
    ("subject", "key"),
    [
        ("Printer on fire", "printer on fire"),
        ("RE: AW: [support] Fwd: Printer on fire", "printer on fire"),
        ("Re[2]: Printer on fire", "printer on fire"),
        ("Re(3): Printer on fire", "printer on fire"),
        ("Re^2 : Printer on fire", "printer on fire"),
        ("Re:Re:Printer on fire", "printer on fire"),
        ("[customers] Re: [customers] Printer on fire", "printer on fire"),
        ("【support】回复：Printer on fire", "printer on fire"),
        ("Printer on fire (fwd)", "printer on fire"),
        ("  Re:   Printer    ON fire  ", "printer on fire"),
        ("Automatic reply: Re: Printer on fire", "printer on fire"),
        ("Red alert: printer", "red alert: printer"),
        ("Recall: Printer", "recall: printer"),
        ("Invoice 2026-11", "invoice 2026-11"),
    ],
)
def test_subject_key_strips_only_prefixes(subject: str, key: str) -> None:
    """Prefixes, counters, list tags and '(fwd)' go; words that merely start alike stay."""
    assert subject_key(subject) == key


@pytest.mark.parametrize("subject", ["", "   ", "Re:", "Re: (no subject)", "AW: (kein Betreff)"])
def test_empty_subjects_have_no_key(subject: str) -> None:
    """A subject that says nothing never joins conversations."""
    assert subject_key(subject) is None


def test_key_is_bounded() -> None:
    """A huge subject gives a key of at most 255 characters (it is an indexed column)."""
    key = subject_key("Re: " + "x" * 100_000)
    assert key is not None and len(key) == 255


@pytest.mark.parametrize("word", words(AUTO_REPLY_PREFIXES))
def test_auto_reply_prefixes_are_recognised(word: str) -> None:
    """Each out-of-office/automatic-reply prefix of the table marks an auto-reply subject."""
    assert is_auto_reply_subject(f"{word.title()}: Printer on fire")
    assert subject_key(f"{word.upper()}: Printer on fire") == "printer on fire"


@pytest.mark.parametrize(
    "subject",
    [
        "Re: Auto: BMW 320d",
        "Our office is out of paper",
        "Mary is out of the office tomorrow, who covers?",
        "Re: Printer on fire",
    ],
)
def test_human_subjects_are_not_auto_replies(subject: str) -> None:
    """Subjects that only mention offices or start with 'Auto' are a person's."""
    assert not is_auto_reply_subject(subject)
