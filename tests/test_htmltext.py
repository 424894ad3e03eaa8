"""Text from HTML-only mail: visible text kept, scripts and styles dropped, linear on hostile
markup."""

from __future__ import annotations

import time

import pytest

from mailgateway.inbound.htmltext import HTML_LIMIT, html_to_text


def test_visible_text_with_blocks_and_entities() -> None:
    """Paragraphs and line breaks become lines; entities are decoded; head, style and script go."""
    html = (
        "<html><head><title>t</title><style>p {color: red}</style></head><body>"
        "<p>Hello&nbsp;<b>John</b> &amp; team</p><div>line one<br>line two</div>"
        "<script>alert(1)</script>after<table><tr><td>a</td><td>b</td></tr></table>"
        "<!-- hidden --></body></html>"
    )
    assert html_to_text(html) == "Hello John & team\n\nline one\nline two\nafter\n\na b"


@pytest.mark.parametrize("html", ["", "   ", "<!-- only a comment -->", "<script>x()</script>"])
def test_nothing_visible_gives_empty_text(html: str) -> None:
    """Markup without visible text gives '' (never an exception)."""
    assert html_to_text(html) == ""


def test_control_characters_removed() -> None:
    """NUL and other controls (which libxml2 refuses) are dropped, the text kept."""
    assert html_to_text("<p>a\x00b\x01c</p>") == "abc"


@pytest.mark.parametrize(
    "html",
    [
        "<" * HTML_LIMIT,
        "</" * (HTML_LIMIT // 2),
        "<?" * (HTML_LIMIT // 2),
        "<a" * (HTML_LIMIT // 2),
        "<![CDATA[" * (HTML_LIMIT // 9),
        "<div>" * (HTML_LIMIT // 5),
        "<p>x" * (HTML_LIMIT // 4),
    ],
    ids=["lt", "end-tags", "pis", "open-tags", "cdata", "deep", "many-blocks"],
)
def test_hostile_markup_is_linear(html: str) -> None:
    """2 MiB of pathological markup (quadratic for html.parser on Python 3.11) is read fast."""
    started = time.perf_counter()
    html_to_text(html)
    assert time.perf_counter() - started < 3.0
