"""Assignment of conversations: gathers the facts, runs the route stage, and records assignee,
ticket and notification in the caller's transaction."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from mailgateway.access import require_assignable, require_member
from mailgateway.config import AssignTo, Config, InboxConfig
from mailgateway.domain import Address, NotificationKind
from mailgateway.errors import RefusedError
from mailgateway.inbound.route import (
    Assignment,
    RoutingFacts,
    candidate_pool,
    people_of,
    plan_ticket,
    route,
)
from mailgateway.notifications import event_payload
from mailgateway.store import outbox, routing


@dataclass(frozen=True, slots=True)
class NewConversation:
    """A conversation the worker has just created, with what routing needs to know of it."""

    id: int
    inbox: str
    subject: str
    contact_id: int | None
    contact: Address | None
    auto_submitted: bool
    archive: bool = False  # backfilled old mail: never auto-assigned, never notified


@dataclass(frozen=True, slots=True)
class HandAssignment:
    """The result of `conversations assign`."""

    conversation_id: int
    inbox: str
    previous: str | None
    assignee: str

    @property
    def changed(self) -> bool:
        """Whether the assignee is a different user than before."""
        return self.previous != self.assignee


async def _facts(
    connection: AsyncConnection, config: Config, inbox: InboxConfig, new: NewConversation
) -> RoutingFacts:
    """What route() decides on; the round robin's cursor is locked when automation may use it."""
    automated = inbox.automation.auto_assign and not (new.auto_submitted or new.archive)
    if not automated:
        return RoutingFacts({}, (), None, None, new.auto_submitted)
    by_owner = inbox.automation.assign_to is AssignTo.CONTACT_OWNER
    return RoutingFacts(
        people=people_of(config, inbox, await routing.availability(connection)),
        pool=candidate_pool(config, inbox),
        cursor=await routing.lock_cursor(connection, inbox.slug),
        owner=await routing.contact_owner(connection, new.contact_id) if by_owner else None,
    )


async def route_new_conversation(
    connection: AsyncConnection, config: Config, new: NewConversation
) -> Assignment | None:
    """Assign a new conversation per its inbox's automation, open its ticket, and queue the
    new-conversation notification; None when the inbox is not configured."""
    inbox = config.inboxes.get(new.inbox)
    if inbox is None:
        return None
    assignment = route(inbox, await _facts(connection, config, inbox, new))
    if assignment.assignee is not None:
        await routing.set_assignee(connection, new.id, assignment.assignee)
    if assignment.advanced and assignment.assignee is not None:
        await routing.advance_cursor(connection, inbox.slug, assignment.assignee)
    ticket = plan_ticket(inbox, assignment.assignee)
    if ticket is not None:
        await routing.create_ticket(
            connection,
            new.id,
            pipeline=ticket.pipeline,
            stage=ticket.stage,
            owner=ticket.owner,
            follows_assignee=ticket.follows_assignee,
        )
    if config.gateway.notifications.webhook_url and not (new.auto_submitted or new.archive):
        payload = event_payload(
            config,
            conversation_id=new.id,
            inbox=new.inbox,
            subject=new.subject,
            contact_email=new.contact.email if new.contact else None,
            contact_name=new.contact.name if new.contact else None,
            assignee=assignment.assignee,
        )
        await outbox.add_event(connection, NotificationKind.NEW_CONVERSATION, new.id, payload)
    return assignment


async def assign_by_hand(
    connection: AsyncConnection, config: Config, conversation_id: int, target: str, actor: str
) -> HandAssignment:
    """Assign a conversation on behalf of a member of its inbox to a user with access to it
    (free seats and away users included), and queue the assignment notification."""
    row = await routing.lock_conversation(connection, conversation_id)
    if row is None:
        msg = f"no conversation {conversation_id}"
        raise RefusedError(msg)
    require_member(config, row.inbox, actor)
    require_assignable(config, row.inbox, target)
    result = HandAssignment(conversation_id, row.inbox, row.assignee, target)
    if not result.changed:
        return result
    await routing.set_assignee(connection, conversation_id, target)
    if config.gateway.notifications.webhook_url:
        payload = event_payload(
            config,
            conversation_id=conversation_id,
            inbox=row.inbox,
            subject=row.subject,
            contact_email=row.contact_email,
            contact_name=row.contact_name,
            assignee=target,
            assigned_by=actor,
        )
        await outbox.add_event(connection, NotificationKind.ASSIGNED, conversation_id, payload)
    return result
