"""Plain text of an HTML mail body as a reader sees it, in linear time on hostile markup."""

from __future__ import annotations

import re
from html.parser import HTMLParser

MAX_HTML_CHARS = 1 << 20  # HTML read when there is no text part
MAX_TAG_CHARS = 4000  # a tag's attributes are no longer than this

_HTML_SPACE = re.compile(r"[ \t\r\n\f]+")
# A tag or declaration as it follows a '<' (the markup is split at each '<').
_TAG = re.compile(rf"(/?)([A-Za-z][A-Za-z0-9:_-]{{0,63}})(?:[\s/][^>]{{0,{MAX_TAG_CHARS}}})?>")
_DECLARATION = re.compile(rf"[!?][^>]{{0,{MAX_TAG_CHARS}}}>")
_TAG_STARTS = frozenset("/!?abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def html_to_text(html: str) -> str:
    """Plain text of an HTML body, one line per block or <br>, as a reader sees it."""
    extractor = _TextExtractor()
    extractor.feed(_plain_markup(html[:MAX_HTML_CHARS]))
    extractor.close()
    return extractor.text()


def _plain_markup(html: str) -> str:
    """HTML that html.parser reads in linear time: comments, declarations and processing
    instructions dropped, each tag cut to its bare name, every other '<' escaped. (The
    stdlib parser rescans the rest of the input at each unclosed '<', '</', '<!--' or '<?'.)"""
    pieces = _without_comments(html).split("<")
    out = [pieces[0]]
    for piece in pieces[1:]:
        if not piece or piece[0] not in _TAG_STARTS:
            out.append("&lt;")
            out.append(piece)
        elif tag := _TAG.match(piece):
            out.append(f"<{tag[1]}{tag[2].lower()}>")
            out.append(piece[tag.end() :])
        elif declaration := _DECLARATION.match(piece):
            out.append(piece[declaration.end() :])
        else:
            out.append("&lt;")
            out.append(piece)
    return "".join(out)


def _without_comments(html: str) -> str:
    """HTML without its closed '<!-- ... -->' comments."""
    pieces: list[str] = []
    position = 0
    while (opening := html.find("<!--", position)) != -1:
        close = html.find("-->", opening + 4)
        if close == -1:
            break
        pieces.append(html[position:opening])
        position = close + 3
    pieces.append(html[position:])
    return "".join(pieces)


class _TextExtractor(HTMLParser):
    """Text of an HTML document: blocks and <br> become line breaks, scripts and styles vanish."""

    BLOCKS = frozenset(
        {
            "address", "article", "aside", "blockquote", "center", "dd", "div", "dl", "dt",
            "fieldset", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header",
            "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table", "tbody", "thead",
            "tfoot", "tr", "ul",
        }
    )  # fmt: skip
    HIDDEN = frozenset({"script", "style", "template", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._parts: list[str] = []
        self._hidden = 0
        self._pre = 0
        self._line_empty = True

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.HIDDEN:
            self._hidden += 1
        elif tag == "br":
            self._newline()
        elif tag in self.BLOCKS:
            self._soft_break()
        elif tag in ("td", "th"):
            self._parts.append(" ")
        self._pre += tag == "pre"

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self._newline()
        elif tag in self.BLOCKS:
            self._soft_break()

    def handle_endtag(self, tag: str) -> None:
        if tag in self.HIDDEN:
            self._hidden = max(self._hidden - 1, 0)
        elif tag in self.BLOCKS:
            self._soft_break()
        if tag == "pre":
            self._pre = max(self._pre - 1, 0)

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        if not self._pre:
            data = _HTML_SPACE.sub(" ", data)
            if self._line_empty:
                data = data.lstrip(" ")
        if data:
            self._parts.append(data)
            self._line_empty = data.endswith("\n")

    def _newline(self) -> None:
        self._parts.append("\n")
        self._line_empty = True

    def _soft_break(self) -> None:
        if not self._line_empty:
            self._newline()

    def text(self) -> str:
        """The text gathered so far, each line trimmed."""
        return "\n".join(line.strip(" \t") for line in "".join(self._parts).split("\n"))
