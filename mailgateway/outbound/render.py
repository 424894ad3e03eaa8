"""Outgoing messages from their parts (pure): headers checked for line breaks, threading headers
per RFC 5322 §3.6.4, signature appended, text and HTML alternatives."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage
from email.utils import format_datetime

from mailgateway.domain import Address
from mailgateway.errors import RefusedError
from mailgateway.outbound.identity import Sender, Signature

REFERENCES_LIMIT = 20
SUBJECT_LIMIT = 900
SIGNATURE_SEPARATOR = "-- "
_UNSAFE = re.compile(r"[\r\n\x00]")
_REPLY_PREFIX = re.compile(r"^\s*re\s*:", re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
WIRE = policy.SMTP


class UnsafeHeaderError(RefusedError):
    """A header value holds CR, LF or NUL (header injection); nothing is written."""


@dataclass(frozen=True, slots=True)
class Parent:
    """The message a reply answers: its Message-ID and its own threading headers."""

    message_id: str
    in_reply_to: tuple[str, ...] = ()
    references: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Reply:
    """Everything a reply is made of; `render_reply` turns it into a message."""

    sender: Sender
    to: Address
    subject: str
    text: str
    html: str | None
    parent: Parent | None
    reply_to: str | None  # None: answers go to the From address (a team mailbox)
    message_id: str
    date: datetime


@dataclass(frozen=True, slots=True)
class Notice:
    """An automatic message of ours (a verification code): plain text, no reply expected."""

    from_name: str
    from_address: str
    to: str
    subject: str
    text: str
    message_id: str
    date: datetime


def check_header(name: str, value: str) -> str:
    """The value, if it holds no CR, LF or NUL; else UnsafeHeaderError before anything is
    written."""
    if _UNSAFE.search(value):
        msg = f"refused: the {name} header value contains a line break or NUL"
        raise UnsafeHeaderError(msg)
    return value


def check_address(name: str, address: str) -> str:
    """An ASCII local@domain address without line breaks (no SMTPUTF8 on the way out)."""
    check_header(name, address)
    local, at, domain = address.rpartition("@")
    if not (at and local and domain and address.isascii()) or " " in address:
        msg = f"refused: the {name} address {address!r} cannot be sent to"
        raise RefusedError(msg)
    return address


def reply_subject(subject: str) -> str:
    """ "Re: <subject>", without stacking a second "Re:"."""
    subject = " ".join(subject.split())[:SUBJECT_LIMIT]
    if _REPLY_PREFIX.match(subject):
        return subject
    return f"Re: {subject}" if subject else "Re:"


def references_for(parent: Parent) -> tuple[str, ...]:
    """RFC 5322 §3.6.4: the parent's References (or its single In-Reply-To) then its Message-ID;
    long chains keep the first and the latest ids."""
    chain = parent.references
    if not chain and len(parent.in_reply_to) == 1:
        chain = parent.in_reply_to
    ids = tuple(dict.fromkeys((*chain, parent.message_id)))
    if len(ids) > REFERENCES_LIMIT:
        ids = (ids[0], *ids[-(REFERENCES_LIMIT - 1) :])
    return ids


def text_body(text: str, signature: Signature) -> str:
    """The agent's text with the signature after the standard "-- " separator."""
    body = text.rstrip() + "\n"
    if signature.text:
        body += f"\n{SIGNATURE_SEPARATOR}\n{signature.text}\n"
    return body


def html_body(text: str, markup: str | None, signature: Signature) -> str:
    """The agent's HTML (or their text made HTML) with the signature before </body>."""
    if markup is None:
        paragraphs = [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
        markup = "\n".join(
            "<p>" + "<br>\n".join(html.escape(line) for line in p.splitlines()) + "</p>"
            for p in paragraphs
        )
    if not signature.html:
        return markup
    block = f'<div class="signature">{signature.html}</div>'
    ends = list(_BODY_END.finditer(markup))
    if not ends:
        return f"{markup}\n{block}\n"
    cut = ends[-1].start()
    return f"{markup[:cut]}{block}\n{markup[cut:]}"


def _mailbox(role: str, name: str, address: str) -> HeaderAddress:
    """A checked header address."""
    check_header(role, name)
    return HeaderAddress(display_name=name, addr_spec=check_address(role, address))


def _ids(role: str, ids: Sequence[str]) -> str:
    """Message ids joined for a header, each checked."""
    return " ".join(check_header(role, message_id) for message_id in ids)


def render_reply(reply: Reply) -> EmailMessage:
    """The reply as a MIME message: From, To, Subject, Date, Message-ID, In-Reply-To and
    References, Reply-To (when set), text and HTML alternatives. No Auto-Submitted: a human
    wrote it."""
    message = EmailMessage(policy=WIRE)
    message["From"] = _mailbox("From", reply.sender.name, reply.sender.address)
    message["To"] = _mailbox("To", reply.to.name, reply.to.email)
    message["Subject"] = reply_subject(check_header("Subject", reply.subject))
    message["Date"] = format_datetime(reply.date)
    message["Message-ID"] = check_header("Message-ID", reply.message_id)
    if reply.parent is not None:
        message["In-Reply-To"] = check_header("In-Reply-To", reply.parent.message_id)
        message["References"] = _ids("References", references_for(reply.parent))
    if reply.reply_to is not None:
        message["Reply-To"] = _mailbox("Reply-To", "", reply.reply_to)
    signature = reply.sender.signature
    message.set_content(text_body(reply.text, signature), cte="quoted-printable")
    message.add_alternative(
        html_body(reply.text, reply.html, signature), subtype="html", cte="quoted-printable"
    )
    for part in message.iter_parts():
        del part["MIME-Version"]  # only the top level carries it
    return message


def render_notice(notice: Notice) -> EmailMessage:
    """An automatic plain-text message, marked Auto-Submitted: auto-generated (RFC 3834)."""
    message = EmailMessage(policy=WIRE)
    message["From"] = _mailbox("From", notice.from_name, notice.from_address)
    message["To"] = _mailbox("To", "", notice.to)
    message["Subject"] = check_header("Subject", notice.subject)
    message["Date"] = format_datetime(notice.date)
    message["Message-ID"] = check_header("Message-ID", notice.message_id)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(notice.text, cte="quoted-printable")
    return message


def to_bytes(message: EmailMessage) -> bytes:
    """The message as it goes on the wire: CRLF line endings."""
    return message.as_bytes(policy=WIRE)
