"""The pure outbound stages: who a reply is from (identity) and how it is rendered (render)."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from mailgateway.config import Config, FromNameMode, load_config
from mailgateway.domain import Address
from mailgateway.errors import RefusedError
from mailgateway.outbound import identity, render
from mailgateway.outbound.identity import Sender, Signature
from tests.outbound_support import sending_config

WHEN = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)
SENDER = Sender(
    "Alice Nowak from Acme",
    "alice@acme.inbox.example.net",
    "smarthost",
    False,
    Signature("Alice\nAcme", "<p>Alice<br>Acme</p>"),
)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """The sending test configuration (no database needed)."""
    url = f"sqlite:///{tmp_path / 'none.db'}"
    return load_config(sending_config(tmp_path / "c", url, 25, dkim=False))


def make_reply(**changes: object) -> render.Reply:
    """A reply with sensible parts, some replaced."""
    values: dict[str, object] = {
        "sender": SENDER,
        "to": Address("john@customer.test", "John Doe"),
        "subject": "Printer on fire",
        "text": "Hello John",
        "html": None,
        "parent": render.Parent("<p1@customer.test>"),
        "reply_to": "support+tok@acme.inbox.example.net",
        "message_id": "<r1@acme.inbox.example.net>",
        "date": WHEN,
    }
    return render.Reply(**(values | changes))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("parent", "expected"),
    [
        (render.Parent("<c@x>", ("<b@x>",), ("<a@x>", "<b@x>")), ("<a@x>", "<b@x>", "<c@x>")),
        (render.Parent("<c@x>", ("<b@x>",), ()), ("<b@x>", "<c@x>")),
        (render.Parent("<c@x>", ("<a@x>", "<b@x>"), ()), ("<c@x>",)),
        (render.Parent("<c@x>"), ("<c@x>",)),
        (render.Parent("<c@x>", (), ("<c@x>",)), ("<c@x>",)),
    ],
    ids=["references", "single-in-reply-to", "two-in-reply-to", "none", "no-duplicate"],
)
def test_references_follow_rfc_5322(parent: render.Parent, expected: tuple[str, ...]) -> None:
    """References = parent's References (else its single In-Reply-To) + parent's Message-ID."""
    assert render.references_for(parent) == expected


def test_long_reference_chains_keep_first_and_latest() -> None:
    """A chain over the limit keeps the thread's root and the most recent ids."""
    chain = tuple(f"<m{i}@x>" for i in range(50))
    ids = render.references_for(render.Parent("<last@x>", (), chain))
    assert len(ids) == render.REFERENCES_LIMIT
    assert ids[0] == "<m0@x>" and ids[-2:] == ("<m49@x>", "<last@x>")


@pytest.mark.parametrize(
    ("subject", "expected"),
    [("Printer", "Re: Printer"), ("Re: Printer", "Re: Printer"), ("RE:x", "RE:x"), ("", "Re:")],
)
def test_reply_subject(subject: str, expected: str) -> None:
    """Replies get one "Re:" prefix, never two."""
    assert render.reply_subject(subject) == expected


def test_rendered_reply_headers_and_alternatives() -> None:
    """The reply has every header a reply needs, no Auto-Submitted, and text and HTML
    alternatives each ending with the signature."""
    data = render.to_bytes(render.render_reply(make_reply()))
    message = message_from_bytes(data, policy=policy.default)
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
    assert message["Reply-To"] == "support+tok@acme.inbox.example.net"
    assert message["In-Reply-To"] == message["References"] == "<p1@customer.test>"
    assert message["Message-ID"] == "<r1@acme.inbox.example.net>"
    assert message["Date"] == "Fri, 27 Nov 2026 09:30:00 +0000"
    assert message["Auto-Submitted"] is None
    assert message.get_content_type() == "multipart/alternative"
    text, markup = (message.get_body((kind,)) for kind in ("plain", "html"))
    assert text is not None and markup is not None
    assert text.get_content().replace("\r\n", "\n") == "Hello John\n\n-- \nAlice\nAcme\n"
    assert '<p>Hello John</p>\n<div class="signature"><p>Alice<br>Acme</p></div>' in (
        markup.get_content().replace("\r\n", "\n")
    )


def test_first_message_of_a_conversation_has_no_threading_headers() -> None:
    """Without a parent there is neither In-Reply-To nor References."""
    message = render.render_reply(make_reply(parent=None))
    assert message["In-Reply-To"] is None and message["References"] is None


def test_html_signature_goes_before_body_end() -> None:
    """An agent's HTML document gets the signature inside its body."""
    markup = render.html_body("x", "<html><BODY><p>Hi</p></BODY></html>", SENDER.signature)
    assert (
        markup
        == '<html><BODY><p>Hi</p><div class="signature"><p>Alice<br>Acme</p></div>\n</BODY></html>'
    )


def test_text_made_html_is_escaped() -> None:
    """Text turned into HTML has its markup characters escaped."""
    markup = render.html_body("a <b> & c\nd\n\ne", None, Signature("", ""))
    assert markup == "<p>a &lt;b&gt; &amp; c<br>\nd</p>\n<p>e</p>"


@pytest.mark.parametrize(
    "change",
    [
        {"subject": "Hi\r\nBcc: evil@x.test"},
        {"message_id": "<a@b>\r\nBcc: evil@x.test"},
        {"to": Address("john@customer.test", "John\nBcc: evil@x.test")},
        {"to": Address("john@customer.test\r\n", "John")},
        {"reply_to": "support+tok@acme.inbox.example.net\nBcc: e@x.test"},
        {"parent": render.Parent("<p@x>\r\nBcc: e@x.test")},
        {"parent": render.Parent("<p@x>", (), ("<a@x>\x00",))},
        {
            "sender": Sender(
                "Alice\r\nBcc: e@x.test", "a@b.test", "smarthost", False, Signature("", "")
            )
        },
    ],
)
def test_line_breaks_in_header_values_are_refused(change: dict[str, object]) -> None:
    """CR, LF or NUL in any header value refuses the reply (header injection) instead of
    rendering it."""
    with pytest.raises(render.UnsafeHeaderError):
        render.render_reply(make_reply(**change))


@pytest.mark.parametrize("address", ["jörg@customer.test", "no-at-sign", "a b@c.test"])
def test_unsendable_addresses_are_refused(address: str) -> None:
    """Addresses that need SMTPUTF8 or are malformed are refused with a reason."""
    with pytest.raises(RefusedError, match="cannot be sent to"):
        render.render_reply(make_reply(to=Address(address, "")))


def test_notice_is_marked_auto_generated() -> None:
    """An automatic message carries Auto-Submitted: auto-generated (RFC 3834)."""
    notice = render.Notice(
        "Acme", "no-reply@acme.test", "help@acme.example", "Code", "123\n", "<n@acme.test>", WHEN
    )
    message = render.render_notice(notice)
    assert message["Auto-Submitted"] == "auto-generated"
    assert message.get_content_type() == "text/plain"


def test_from_name_and_address_rules(config: Config) -> None:
    """agent_and_company names the agent and the company; default addresses are the user id
    at <subdomain>.<domain of the plan>; custom addresses are used as configured."""
    alice, support = config.users["alice"], config.inboxes["support"]
    fallback = support.fallback_email
    assert identity.from_name(fallback, alice) == "Alice Nowak from Acme Support"
    company = fallback.model_copy(update={"from_name": FromNameMode.COMPANY})
    assert identity.from_name(company, alice) == "Acme Support"
    assert identity.from_address(config, fallback, alice) == "alice@acme.inbox.example.net"
    custom = fallback.model_copy(update={"from_address": "help@acme.example"})
    assert identity.from_address(config, custom, alice) == "help@acme.example"


def test_signature_tokens_escaped_only_in_html(config: Config) -> None:
    """{{ full_name }} is HTML-escaped in an HTML signature and left as is in its text form."""
    erin = config.users["erin"]
    signature = identity.render_signature(config.inboxes["support"].fallback_email, erin)
    assert signature.html == "<p>Erin &lt;O&#x27;Brien &amp; Co&gt;<br>Acme &amp; Co Support</p>"
    assert signature.text == "Erin <O'Brien & Co>\nAcme & Co Support"


def test_html_to_text_drops_markup_and_hidden_parts() -> None:
    """A signature's text form keeps the visible text, one line per block."""
    markup = (
        "<style>p{}</style><div><b>Alice</b>&nbsp;N.</div><p>Acme<br/>Support</p>"
        "<ul><li>x</li></ul>"
    )
    assert identity.html_to_text(markup) == "Alice N.\n\nAcme\nSupport\n\nx"


def test_view_only_and_non_members_may_not_reply(config: Config) -> None:
    """Members may reply; super_admin and account_access users who are not members are
    refused as view-only; other non-members as non-members."""
    support = config.inboxes["support"]
    assert identity.require_may_reply(config, support, "alice").id == "alice"
    for user in ("carol", "dave"):
        with pytest.raises(RefusedError, match="can only view"):
            identity.require_may_reply(config, support, user)
    with pytest.raises(RefusedError, match="not a member"):
        identity.require_may_reply(config, support, "bob")


def test_sender_refusals(config: Config) -> None:
    """A disabled fallback email or sending switched off refuses; an unknown channel too."""
    alice = config.users["alice"]
    with pytest.raises(RefusedError, match="switched off"):
        identity.sender_for(config, config.inboxes["sales"], "fallback_email", alice)
    with pytest.raises(RefusedError, match="disabled"):
        identity.sender_for(config, config.inboxes["archive"], "fallback_email", alice)
    with pytest.raises(RefusedError, match="no longer connected"):
        identity.sender_for(config, config.inboxes["support"], "gone@acme.example", alice)
    sender = identity.sender_for(config, config.inboxes["support"], "fallback_email", alice)
    assert (sender.transport, sender.custom_address) == ("smarthost", False)


def test_reply_address_carries_the_token(config: Config) -> None:
    """Reply-To is <local>+<token>@<forwarding domain>, which intake maps back to the inbox."""
    address = identity.reply_address(config.inboxes["support"], "AbC_12-x")
    assert address == "support+AbC_12-x@acme.inbox.example.net"
    assert config.inbox_by_address(address) == (config.inboxes["support"], "AbC_12-x")
