"""Plain text from an HTML body (pure), for mail that has no text/plain part."""

from __future__ import annotations

import re

import lxml.html
from lxml import etree

HTML_LIMIT = 2 * 1024 * 1024
TEXT_LIMIT = 512 * 1024
BLOCKS = (
    "address",
    "article",
    "blockquote",
    "dd",
    "div",
    "dl",
    "dt",
    "fieldset",
    "figure",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hr",
    "li",
    "main",
    "nav",
    "ol",
    "p",
    "pre",
    "section",
    "table",
    "tr",
    "ul",
)
CELLS = ("td", "th")
HIDDEN = ("head", "script", "style", "template", "title", "noscript", "object", "iframe")
_SPACES = re.compile(r"[ \t\r\f\v\u00a0\u200b]+")
_BLANK_LINES = re.compile(r"\n(?:[ \t]*\n)+")
_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def html_to_text(html: str) -> str:
    """Readable text of an HTML document: scripts, styles and the head dropped, entities
    decoded, one line per block element; the first HTML_LIMIT characters are read (libxml2's
    parser: linear and lenient). Never raises: unusable markup gives ''."""
    source = _CONTROLS.sub("", html[:HTML_LIMIT])
    if not source.strip():
        return ""
    try:
        root = lxml.html.document_fromstring(source, parser=_parser())
    except (etree.ParserError, ValueError):  # nothing parseable, e.g. only a comment
        return ""
    for element in list(root.iter(*HIDDEN)):
        element.text = None
        for child in list(element):
            element.remove(child)
    for element in root.iter(*BLOCKS):
        element.text = "\n" + (element.text or "")
        element.tail = "\n" + (element.tail or "")
    for element in root.iter("br", *CELLS):
        element.tail = ("\n" if element.tag == "br" else " ") + (element.tail or "")
    text = str(root.text_content())
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()[:TEXT_LIMIT]


def _parser() -> lxml.html.HTMLParser:
    """An HTML parser that never touches the network and keeps no comments or PIs."""
    return lxml.html.HTMLParser(
        recover=True, no_network=True, remove_comments=True, remove_pis=True
    )
