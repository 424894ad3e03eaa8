"""Hand-written forward-parser cases: clients, languages, HTML, nesting, refusals, hostile input."""

from __future__ import annotations

import email
import time
from email import policy
from email.message import EmailMessage, Message

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgateway.domain import Address
from mailgateway.inbound.forwards import (
    Forward,
    ForwardRule,
    html_to_text,
    parse_addresses,
    parse_attached_forward,
    parse_forward,
)

CUSTOMER = Address("jane@customer.example", "Jane Customer")
BODY = "Hello,\nmy invoice is wrong.\n\nRegards, Jane"


def _forward(text: str | None, html: str | None = None, subject: str = "") -> Forward:
    """parse_forward's result, which the test expects to be a forward."""
    result = parse_forward(text, html=html, subject=subject)
    assert result is not None
    return result


def _elapsed(text: str | None, html: str | None = None, subject: str = "") -> float:
    """Seconds one parse takes."""
    start = time.perf_counter()
    parse_forward(text, html=html, subject=subject)
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------
# Clients


def test_gmail_english() -> None:
    """A Gmail forward yields the customer, recipients, subject, date, body and the agent's note."""
    text = (
        "Can you take this one?\n\n"
        "---------- Forwarded message ---------\n"
        "From: Jane Customer <Jane@Customer.example>\n"
        "Date: Tue, Mar 4, 2025 at 10:12 AM\n"
        "Subject: Broken invoice\n"
        "To: <support@acme.example>\n"
        "Cc: Bob <bob@customer.example>, ops@customer.example\n\n"
        f"{BODY}\n"
    )
    result = _forward(text, subject="Fwd: Broken invoice")
    assert result.from_ == CUSTOMER
    assert result.to == (Address("support@acme.example"),)
    assert result.cc == (Address("bob@customer.example", "Bob"), Address("ops@customer.example"))
    assert (result.subject, result.date) == ("Broken invoice", "Tue, Mar 4, 2025 at 10:12 AM")
    assert (result.body, result.note, result.rule) == (BODY, "Can you take this one?", "separator")


def test_outlook_from_sent_to_subject() -> None:
    """An Outlook forward (rule line, then From/Sent/To/Subject) is read under an FW: subject."""
    text = (
        "\r\n________________________________\r\n"
        "From: Jane Customer <jane@customer.example>\r\n"
        "Sent: Tuesday, March 4, 2025 10:12\r\n"
        "To: support@acme.example <support@acme.example>\r\n"
        "Subject: Broken invoice\r\n\r\n"
        f"{BODY}\r\n"
    )
    result = _forward(text, subject="FW: Broken invoice")
    assert (result.from_, result.date) == (CUSTOMER, "Tuesday, March 4, 2025 10:12")
    assert result.to == (Address("support@acme.example"),)
    assert (result.body, result.rule) == (BODY, ForwardRule.ORIGINAL_MESSAGE)


def test_new_outlook_bare_header_block() -> None:
    """New Outlook's bare From/Date/To/Subject block, without a separator, is a forward."""
    text = (
        "From: Jane Customer <jane@customer.example>\n"
        "Date: Tuesday, 4 March 2025 at 10:12\n"
        "To: support@acme.example <support@acme.example>\n"
        "Subject: Broken invoice\n"
        f"{BODY}\n"
    )
    result = _forward(text, subject="FW: Broken invoice")
    assert (result.from_, result.body, result.rule) == (CUSTOMER, BODY, "header_block")


def test_apple_mail_begin_forwarded_message() -> None:
    """Apple Mail's quoted 'Begin forwarded message:' block is unquoted in the body."""
    text = (
        "> Begin forwarded message:\n>\n"
        "> From: Jane Customer <jane@customer.example>\n"
        "> Subject: Broken invoice\n"
        "> Date: 4 March 2025 at 10:12:21 CET\n"
        "> To: support@acme.example\n>\n"
        "> Hello,\n> my invoice is wrong.\n>\n> Regards, Jane\n>\n"
    )
    result = _forward(text)
    assert (result.from_, result.subject, result.body) == (CUSTOMER, "Broken invoice", BODY)


def test_german_thunderbird() -> None:
    """A German Thunderbird forward (Von/Betreff/Datum/An/Kopie (CC)) is understood."""
    text = (
        "-------- Weitergeleitete Nachricht --------\n"
        "Betreff: \tRechnung falsch\n"
        "Datum: \tDi, 4 Mär 2025 10:12:00 +0100\n"
        "Von: \tJane Customer <jane@customer.example>\n"
        "An: \tsupport@acme.example\n"
        "Kopie (CC): \tBob <bob@customer.example>\n\n\n"
        f"{BODY}"
    )
    result = _forward(text, subject="WG: Rechnung falsch")
    assert (result.from_, result.subject) == (CUSTOMER, "Rechnung falsch")
    assert result.cc == (Address("bob@customer.example", "Bob"),)
    assert result.body == BODY


def test_french_with_non_breaking_spaces() -> None:
    """A French forward whose labels end in a non-breaking space before the colon is read."""
    text = (
        "---------- Message transféré ---------\n"
        "De\xa0: Jane Customer <jane@customer.example>\n"
        "Date\xa0: mar. 4 mars 2025 à 10:12\n"
        "Objet\xa0: Facture erronée\n"
        "À\xa0: support@acme.example\n\n"
        f"{BODY}\n"
    )
    result = _forward(text, subject="TR: Facture erronée")
    assert (result.from_, result.subject, result.date) == (
        CUSTOMER,
        "Facture erronée",
        "mar. 4 mars 2025 à 10:12",
    )
    assert result.to == (Address("support@acme.example"),)


def test_yahoo_labels_glued_on_one_line() -> None:
    """Yahoo's one-line header ('From: ...To: ...Sent: ...Subject: ...') is split by label."""
    text = (
        "  ----- Forwarded Message ----- From: Jane Customer <jane@customer.example>To: "
        '"support@acme.example" <support@acme.example>Sent: Tuesday, March 4, 2025, '
        "10:12:00 AM GMT+1Subject: Broken invoice\n"
        f"{BODY}"
    )
    result = _forward(text)
    assert (result.from_, result.subject) == (CUSTOMER, "Broken invoice")
    assert result.date == "Tuesday, March 4, 2025, 10:12:00 AM GMT+1"
    assert result.to == (Address("support@acme.example"),)


def test_outlook_quote_header_under_forward_subject() -> None:
    """Outlook 2019's 'On <date>, "name" <address> wrote:' is a forward under an FW: subject."""
    text = (
        "See below.\r\n\r\n"
        '\ufeffOn 04/03/2025 10:12, "Jane Customer" <jane@customer.example> wrote:\r\n\r\n'
        "    Hello,\r\n    my invoice is wrong.\r\n\r\n    Regards, Jane\r\n"
    )
    result = _forward(text, subject="FW: Broken invoice")
    assert (result.from_, result.subject, result.date) == (
        CUSTOMER,
        "Broken invoice",
        "04/03/2025 10:12",
    )
    assert (result.body, result.note, result.rule) == (BODY, "See below.", "quote_header")


# ---------------------------------------------------------------------------------------------
# HTML, nesting, refusals


def test_html_only_gmail_forward() -> None:
    """An HTML-only Gmail forward is found in the text derived from its HTML."""
    html = (
        '<div dir="ltr">Please handle this.<br><br><div class="gmail_quote">'
        '<div dir="ltr" class="gmail_attr">---------- Forwarded message ---------<br>'
        'From: <strong class="gmail_sendername">Jane Customer</strong> <span>&lt;'
        '<a href="mailto:jane@customer.example">jane@customer.example</a>&gt;</span><br>'
        "Date: Tue, 4 Mar 2025 at 10:12<br>Subject: Broken&nbsp;invoice<br>"
        "To: &lt;support@acme.example&gt;<br></div><br><br>"
        '<div dir="ltr">Hello,<div>my invoice is wrong.</div><div><br></div>'
        "<div>Regards, Jane</div></div></div></div>"
    )
    result = _forward(None, html=html, subject="Fwd: Broken invoice")
    assert (result.from_, result.note, result.body) == (CUSTOMER, "Please handle this.", BODY)
    assert result.subject == "Broken\xa0invoice"


def test_html_only_outlook_forward_with_conditional_comments() -> None:
    """Outlook HTML with styles and conditional comments yields only the visible text."""
    html = (
        "<html><head><style>p{margin:0}</style><!--[if gte mso 9]><xml><o:shapedefaults/>"
        "</xml><![endif]--></head><body><p>FYI</p><div style='border-top:solid'>"
        "<p class=MsoNormal><b>From:</b> Jane Customer &lt;jane@customer.example&gt;<br>"
        "<b>Sent:</b> Tuesday, March 4, 2025 10:12 AM<br><b>To:</b> Support "
        "&lt;support@acme.example&gt;<br><b>Subject:</b> Broken invoice</p></div>"
        "<p>Hello,</p><p>my invoice is wrong.</p></body></html>"
    )
    result = _forward("", html=html, subject="FW: Broken invoice")
    assert (result.from_, result.note) == (CUSTOMER, "FYI")
    assert result.to == (Address("support@acme.example", "Support"),)
    assert result.body == "Hello,\nmy invoice is wrong."


def test_nested_chain_outermost_wins() -> None:
    """In a chain of forwards the directly forwarded (outermost) message is returned."""
    text = (
        "---------- Forwarded message ---------\n"
        "From: Jane Customer <jane@customer.example>\n"
        "Date: Tue, 4 Mar 2025 at 10:12\nSubject: Fwd: Broken invoice\nTo: <a@acme.example>\n\n"
        "Forwarding my earlier mail.\n\n"
        "---------- Forwarded message ---------\n"
        "From: Old Sender <old@elsewhere.example>\n"
        "Date: Mon, 3 Mar 2025 at 09:00\nSubject: Broken invoice\nTo: <jane@customer.example>\n\n"
        "Original text.\n"
    )
    result = _forward(text)
    assert result.from_ == CUSTOMER
    assert result.body.startswith("Forwarding my earlier mail.\n\n---------- Forwarded message")
    assert result.body.endswith("Original text.")


def test_plain_mail_is_not_a_forward() -> None:
    """A plain message without any forwarded block gives None."""
    text = "Hi team,\n\nthe printer on floor 2 is out of toner.\nFrom: the front desk\n"
    assert parse_forward(text, subject="Printer") is None
    assert parse_forward(None) is None
    assert parse_forward("", html="") is None


@pytest.mark.parametrize("subject", ["", "Re: Broken invoice", "AW: Broken invoice"])
def test_reply_with_quote_header_is_not_a_forward(subject: str) -> None:
    """A reply quoting 'On ... wrote:' is no forward, whatever its (non-forward) subject."""
    text = (
        "Thanks, fixed.\n\n"
        "On Tue, 4 Mar 2025 at 10:12, Jane Customer <jane@customer.example> wrote:\n"
        "> Hello,\n> my invoice is wrong.\n"
    )
    assert parse_forward(text, subject=subject) is None


def test_reply_subject_refuses_outlook_reply_blocks() -> None:
    """Outlook's From/Sent/To/Subject block under a Re: subject is a reply, not a forward."""
    text = (
        "Thanks!\n\n________________________________\n"
        "From: Jane Customer <jane@customer.example>\nSent: Tuesday, March 4, 2025 10:12\n"
        "To: support@acme.example\nSubject: Broken invoice\n\nHello\n"
    )
    assert parse_forward(text, subject="RE: Broken invoice") is None
    assert _forward(text, subject="FW: Broken invoice").from_ == CUSTOMER


# ---------------------------------------------------------------------------------------------
# Addresses and attached messages


JANE = Address("jane@x.example", "Jane")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"Doe, Jane" <Jane@X.example>', [Address("jane@x.example", "Doe, Jane")]),
        (
            "Doe, Jane <jane@x.example>, b@y.example",
            [Address("jane@x.example", "Doe, Jane"), Address("b@y.example")],
        ),
        ("Jane [mailto:jane@x.example]", [JANE]),
        ("*Jane* <jane@x.example>", [JANE]),
        ("İlkay<MAILTO:ilkay@x.example> <ilkay@x.example>", [Address("ilkay@x.example", "İlkay")]),
        ("Jane<mailto:jane@x.example> <jane@x.example<mailto:jane@x.example>>", [JANE]),
        ("'jane@x.example' <jane@x.example>; Bob", [Address("jane@x.example"), Address("", "Bob")]),
        ("Jane Customer", [Address("", "Jane Customer")]),
    ],
)
def test_address_forms(value: str, expected: list[Address]) -> None:
    """Address lists as clients print them are split into lower-cased mailboxes and names."""
    assert parse_addresses(value) == expected


def _attached(inner: EmailMessage) -> tuple[Message, Message]:
    """A forwarding mail carrying `inner` as message/rfc822, parsed back from bytes with the
    default policy and with compat32: the attached part of each."""
    outer = EmailMessage()
    outer["From"] = "Agent <agent@acme.example>"
    outer["Subject"] = "Fwd: Rechnung"
    outer.set_content("See attached.")
    outer.add_attachment(inner)
    raw = outer.as_bytes()
    parts = []
    for parse_policy in (policy.default, policy.compat32):
        parsed = email.message_from_bytes(raw, policy=parse_policy)
        parts.append(next(p for p in parsed.walk() if p.get_content_type() == "message/rfc822"))
    return parts[0], parts[1]


def test_attached_rfc822_forward() -> None:
    """A message/rfc822 attachment gives the attached message's headers (decoded) and text."""
    inner = EmailMessage()
    inner["From"] = "Jürgen Kunde <Juergen@Kunde.example>"
    inner["To"] = "support@acme.example, Bob <bob@kunde.example>"
    inner["Subject"] = "Rechnung falsch – bitte prüfen"
    inner["Date"] = "Tue, 04 Mar 2025 10:12:00 +0100"
    inner.set_content("Grüß Gott,\ndie Rechnung ist falsch.\n")
    for part in _attached(inner):
        result = parse_attached_forward(part, note="See attached.")
        assert result is not None
        assert result.from_ == Address("juergen@kunde.example", "Jürgen Kunde")
        assert result.to == (Address("support@acme.example"), Address("bob@kunde.example", "Bob"))
        assert result.subject == "Rechnung falsch – bitte prüfen"
        assert (result.date, result.note) == ("Tue, 04 Mar 2025 10:12:00 +0100", "See attached.")
        assert (result.body, result.rule) == ("Grüß Gott,\ndie Rechnung ist falsch.", "attachment")


def test_attached_html_only_message_and_non_message() -> None:
    """An attached HTML-only message gives its text; a part without From gives None."""
    inner = EmailMessage()
    inner["From"] = "jane@customer.example"
    inner.set_content("<p>Hello,</p><p>my invoice is wrong.</p>", subtype="html")
    result = parse_attached_forward(inner)
    assert result is not None
    assert (result.from_, result.body) == (
        Address("jane@customer.example"),
        "Hello,\nmy invoice is wrong.",
    )
    assert parse_attached_forward(EmailMessage()) is None


# ---------------------------------------------------------------------------------------------
# Hostile input: linear time, never an exception

SEPARATOR = "---------- Forwarded message ---------\n"
HOSTILE_TEXTS = {
    "100k separator lines": SEPARATOR * 100_000,
    "50k From label lines": "From: a@b\n" * 50_000,
    "separator and label lines": (SEPARATOR + "From: a@b\nTo: c@d\n") * 20_000,
    "one 2 MB line": "a" * 2_000_000,
    "one line of dashes": "-" * 1_000_000,
    "one line of quote markers": "> " * 500_000,
    "one line of colons": "From:" * 200_000,
    "long From value of brackets": f"{SEPARATOR}From: " + "<a" * 400_000 + "\nDate: x\n",
    "long From value of quotes": f"{SEPARATOR}From: " + "«a, " * 200_000 + "\nDate: x\n",
    "long To value of commas": f"{SEPARATOR}From: a@b.c\nTo: " + "x, " * 300_000,
    "glued labels": ("----- Forwarded Message ----- From: " + "To: CCTo:" * 4000 + "\n") * 50,
    "quote header lines": 'On 1/2/2025 10:00, "A" <a@b.c> wrote:\n' * 30_000,
}
HOSTILE_HTML = {
    "unclosed tags": "<a" * 200_000,
    "unclosed comments": "<!--" * 200_000,
    "unclosed end tags": "</" * 200_000,
    "processing instructions": "<?" * 200_000,
    "tags": "<div>From: a@b</div>" * 20_000,
}


@pytest.mark.parametrize("text", list(HOSTILE_TEXTS.values()), ids=list(HOSTILE_TEXTS))
def test_hostile_text_is_parsed_quickly(text: str) -> None:
    """Hostile bodies (huge runs of separators, labels, long lines) parse in well under 2 s."""
    assert _elapsed(text, subject="FW: x") < 2.0
    assert _elapsed(text) < 2.0


@pytest.mark.parametrize("html", list(HOSTILE_HTML.values()), ids=list(HOSTILE_HTML))
def test_hostile_html_is_parsed_quickly(html: str) -> None:
    """Hostile HTML (unclosed tags and comments, which the stdlib parser rescans) stays fast."""
    assert _elapsed(None, html=html) < 2.0


def test_html_to_text_keeps_text_around_stray_brackets() -> None:
    """Stray '<' and unclosed comments are kept as text; tags, styles and comments vanish."""
    html = "<style>x{}</style><p>a < b</p><!-- hidden --><p>c &amp; d</p><!-- open"
    assert html_to_text(html).strip() == "a < b\nc & d\n<!-- open"


FRAGMENTS = [
    SEPARATOR.strip(),
    "-----Original Message-----",
    "_" * 32,
    "Begin forwarded message:",
    "From: Jane <jane@x.example>",
    "Von: a@b",
    "*From:* x<mailto:x@y.z>",
    "Date: Tue, 4 Mar 2025",
    "Subject: s",
    "To: 'a, b' <a@b>, c@d;",
    "Cc:",
    "> ",
    ">> From: q",
    'On 1/2/2025 10:00, "A" <a@b.c> wrote:',
    "----- Forwarded Message ----- From: a <a@b>To: b@c Sent: 1:2Subject: x",
    "\ufeff\r",
    "",
]


@settings(max_examples=200, deadline=None)
@given(text=st.text(), subject=st.text(max_size=40), html=st.none() | st.text(max_size=400))
def test_never_raises_on_arbitrary_text(text: str, subject: str, html: str | None) -> None:
    """Any text, HTML and subject give a Forward or None, never an exception."""
    result = parse_forward(text, html=html, subject=subject)
    from_html = parse_forward(None, html=text, subject=subject)
    assert all(found is None or isinstance(found, Forward) for found in (result, from_html))


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=30), max_size=30),
    subject=st.sampled_from(["", "FW: x", "Re: x", "Fwd: x"]),
)
def test_never_raises_on_forward_like_text(parts: list[str], subject: str) -> None:
    """Text assembled from separators, labels and quote headers never makes the parser raise."""
    result = parse_forward("\n".join(parts), subject=subject)
    assert result is None or isinstance(result.from_, Address)
