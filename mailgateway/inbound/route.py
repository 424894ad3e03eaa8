"""Who gets a new conversation, and its ticket (pure): assignment strategies chosen by name."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from mailgateway.access import is_member
from mailgateway.config import AssignTo, Config, InboxConfig, Seat
from mailgateway.domain import Availability

CONVERSATION_OWNER = "conversation_owner"


class AssignReason(enum.StrEnum):
    """Why a conversation got its assignee (or none)."""

    ROUND_ROBIN = "round_robin"
    CONTACT_OWNER = "contact_owner"
    OWNER_FALLBACK = "owner_fallback"
    NO_CANDIDATE = "no_candidate"
    AUTOMATION_OFF = "automation_off"
    AUTO_SUBMITTED = "auto_submitted"


@dataclass(frozen=True, slots=True)
class Person:
    """What routing needs to know about one user for one inbox."""

    id: str
    paid: bool
    has_access: bool
    online: bool

    @property
    def eligible(self) -> bool:
        """Only online users with a paid seat and access to the inbox are auto-assigned."""
        return self.paid and self.has_access and self.online


@dataclass(frozen=True, slots=True)
class RoutingFacts:
    """Everything route() decides on, read by the worker inside its transaction."""

    people: Mapping[str, Person]
    pool: tuple[str, ...]
    cursor: str | None
    owner: str | None
    auto_submitted: bool = False


@dataclass(frozen=True, slots=True)
class Assignment:
    """The decision: an assignee (or None), why, and where the round robin now stands."""

    assignee: str | None
    reason: AssignReason
    cursor: str | None

    @property
    def advanced(self) -> bool:
        """Whether the round robin handed out a turn (its cursor must be stored)."""
        return self.reason in {AssignReason.ROUND_ROBIN, AssignReason.OWNER_FALLBACK}


@dataclass(frozen=True, slots=True)
class TicketPlan:
    """The ticket to create with a new conversation."""

    pipeline: str
    stage: str
    owner: str | None
    follows_assignee: bool


Strategy = Callable[[RoutingFacts], Assignment]


def people_of(
    config: Config, inbox: InboxConfig, availability: Mapping[str, Availability]
) -> dict[str, Person]:
    """Every user of the account with the facts that make them eligible in this inbox; users
    without a stored availability are online."""
    return {
        user.id: Person(
            id=user.id,
            paid=user.seat is Seat.PAID,
            has_access=is_member(config, inbox, user.id),
            online=availability.get(user.id, Availability.ONLINE) is Availability.ONLINE,
        )
        for user in config.users.values()
    }


def candidate_pool(config: Config, inbox: InboxConfig) -> tuple[str, ...]:
    """The inbox's listed users and the members of its listed teams, sorted by id (the
    round robin's order)."""
    automation = inbox.automation
    teams = set(automation.teams)
    members = {user.id for user in config.users.values() if teams & set(user.teams)}
    return tuple(sorted({*automation.users, *members} & set(config.users)))


def next_in_turn(
    pool: Sequence[str], people: Mapping[str, Person], cursor: str | None
) -> str | None:
    """The first eligible user after the cursor in the pool's order, wrapping around; None when
    nobody is eligible. The cursor need not be in the pool (ids are compared)."""
    eligible = [user for user in pool if user in people and people[user].eligible]
    if not eligible:
        return None
    later = [user for user in eligible if cursor is not None and user > cursor]
    return (later or eligible)[0]


def round_robin(facts: RoutingFacts) -> Assignment:
    """`specific`: the next eligible user of the pool in turn."""
    assignee = next_in_turn(facts.pool, facts.people, facts.cursor)
    if assignee is None:
        return Assignment(None, AssignReason.NO_CANDIDATE, facts.cursor)
    return Assignment(assignee, AssignReason.ROUND_ROBIN, assignee)


def contact_owner(facts: RoutingFacts) -> Assignment:
    """`contact_owner`: the contact's owner when eligible; otherwise the pool's round robin
    (when the inbox lists users or teams), else nobody."""
    owner = facts.people.get(facts.owner) if facts.owner is not None else None
    if owner is not None and owner.eligible:
        return Assignment(owner.id, AssignReason.CONTACT_OWNER, facts.cursor)
    fallback = round_robin(facts)
    if fallback.assignee is None:
        return fallback
    return Assignment(fallback.assignee, AssignReason.OWNER_FALLBACK, fallback.cursor)


STRATEGIES: Mapping[AssignTo, Strategy] = MappingProxyType(
    {AssignTo.SPECIFIC: round_robin, AssignTo.CONTACT_OWNER: contact_owner}
)


def route(inbox: InboxConfig, facts: RoutingFacts) -> Assignment:
    """Assign a new conversation per the inbox's [automation]; auto-replies and inboxes without
    automation stay unassigned."""
    if facts.auto_submitted:
        return Assignment(None, AssignReason.AUTO_SUBMITTED, facts.cursor)
    if not inbox.automation.auto_assign:
        return Assignment(None, AssignReason.AUTOMATION_OFF, facts.cursor)
    return STRATEGIES[inbox.automation.assign_to](facts)


def plan_ticket(inbox: InboxConfig, assignee: str | None) -> TicketPlan | None:
    """The ticket of a new conversation when [tickets] is enabled: its owner is the assignee
    (and follows it) unless a user id is configured."""
    tickets = inbox.tickets
    if not tickets.enabled:
        return None
    if tickets.owner == CONVERSATION_OWNER:
        return TicketPlan(tickets.pipeline, tickets.stage, assignee, follows_assignee=True)
    return TicketPlan(tickets.pipeline, tickets.stage, tickets.owner, follows_assignee=False)
