"""Replying to a conversation: who may send and how, the rendered message, stored on the
conversation and queued in one transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.utils import make_msgid
from typing import Any

from mailgateway.config import Config, InboxConfig
from mailgateway.domain import Address, Attribution, Direction, OutboundKind, ThreadReason
from mailgateway.errors import RefusedError
from mailgateway.inbound.parse import normalize_message_id
from mailgateway.outbound import identity, render
from mailgateway.outbound.identity import SMARTHOST, Sender
from mailgateway.store.outbound import OutboundStore, Outgoing, ReplyContext
from mailgateway.store.repo import Store
from mailgateway.store.schema import utcnow


@dataclass(frozen=True, slots=True)
class ReplyRequest:
    """An agent's reply as the command line takes it."""

    conversation_id: int
    user: str
    text: str
    html: str | None = None


@dataclass(frozen=True, slots=True)
class QueuedReply:
    """A reply stored on its conversation and waiting in the outbound queue."""

    conversation_id: int
    message_row_id: int
    queue_id: int
    message_id: str
    sender: Sender
    to: str


def parent_of(context: ReplyContext) -> render.Parent | None:
    """The latest message of the conversation: the one the reply answers."""
    row = context.parent
    if row is None:
        return None
    return render.Parent(row.message_id, tuple(row.in_reply_to), tuple(row.references))


def message_values(reply: render.Reply, inbox: str, when: datetime) -> dict[str, Any]:
    """The messages row of an outbound reply (direction outbound)."""
    parent = reply.parent
    signature = reply.sender.signature
    return {
        "inbox": inbox,
        "queue_id": None,
        "direction": Direction.OUTBOUND,
        "message_id": normalize_message_id(reply.message_id) or reply.message_id,
        "message_id_generated": False,
        "in_reply_to": [] if parent is None else [parent.message_id],
        "references": [] if parent is None else list(render.references_for(parent)),
        "subject": render.reply_subject(reply.subject),
        "from_email": reply.sender.address,
        "from_name": reply.sender.name,
        "to": [{"email": reply.to.email, "name": reply.to.name}],
        "cc": [],
        "date": reply.date,
        "text": render.text_body(reply.text, signature),
        "html": render.html_body(reply.text, reply.html, signature),
        "attachments": [],
        "forwarded_by": None,
        "attribution": Attribution.SENDER,
        "thread_reason": ThreadReason.NEW if parent is None else ThreadReason.IN_REPLY_TO,
        "auto_submitted": False,
        "defects": [],
        "created_at": when,
    }


def reply_address(inbox: InboxConfig, reply_token: str, sender: Sender) -> str | None:
    """Reply-To (and envelope sender) of a reply from the fallback email: the inbox's address
    with the reply token. A reply from a team mailbox has none: answers and bounces go to that
    mailbox, which the channel fetches (the forwarding address may not even take mail)."""
    if sender.transport != SMARTHOST:
        return None
    return identity.reply_address(inbox, reply_token)


async def queue_reply(config: Config, store: Store, request: ReplyRequest) -> QueuedReply:
    """Check, render, store and queue a reply; RefusedError (nothing written) when the user,
    the channel or the from address may not send."""
    outbound = OutboundStore(store.engine)
    context = await outbound.reply_context(request.conversation_id)
    if context is None:
        msg = f"no conversation {request.conversation_id}"
        raise RefusedError(msg)
    conversation = context.conversation
    inbox = config.inboxes.get(conversation.inbox)
    if inbox is None:
        msg = f"inbox {conversation.inbox!r} of conversation {conversation.id} is not configured"
        raise RefusedError(msg)
    user = identity.require_may_reply(config, inbox, request.user)
    sender = identity.sender_for(config, inbox, conversation.channel, user)
    if sender.custom_address and not await outbound.is_verified(sender.address):
        msg = (
            f"the custom from address {sender.address} of inbox {inbox.slug!r} is not verified:"
            f" run `mailgateway from-address verify {sender.address}`"
        )
        raise RefusedError(msg)
    if not context.contact_email:
        msg = f"conversation {conversation.id} has no contact address to reply to"
        raise RefusedError(msg)
    if not request.text.strip():
        msg = "the reply text is empty"
        raise RefusedError(msg)
    now = utcnow()
    reply_to = reply_address(inbox, conversation.reply_token, sender)
    reply = render.Reply(
        sender=sender,
        to=Address(context.contact_email, context.contact_name),
        subject=conversation.subject,
        text=request.text,
        html=request.html,
        parent=parent_of(context),
        reply_to=reply_to,
        message_id=make_msgid(domain=config.gateway.account.local_domain),
        date=now,
    )
    data = render.to_bytes(render.render_reply(reply))
    outgoing = Outgoing(
        data=data,
        kind=OutboundKind.REPLY,
        mail_from=reply_to or sender.address,
        rcpt_to=(context.contact_email,),
        transport=sender.transport,
        inbox=inbox.slug,
        author=user.id,
    )
    row_id, queue_id = await outbound.queue_reply(
        outgoing, conversation.id, message_values(reply, inbox.slug, now)
    )
    return QueuedReply(
        conversation.id, row_id, queue_id, reply.message_id, sender, context.contact_email
    )
