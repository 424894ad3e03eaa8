"""The route stage (pure): round robin, contact owner with fallback, eligibility, tickets."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from mailgateway.config import AssignTo, Config, InboxConfig
from mailgateway.domain import Availability
from mailgateway.inbound.route import (
    STRATEGIES,
    AssignReason,
    Person,
    RoutingFacts,
    candidate_pool,
    next_in_turn,
    people_of,
    plan_ticket,
    route,
)
from tests.routing_support import loaded, write_routing_config


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """The routing team's configuration (no database needed)."""
    return loaded(write_routing_config(tmp_path / "c", "sqlite:////tmp/unused.db"))


def facts(
    config: Config,
    inbox: InboxConfig,
    *,
    away: tuple[str, ...] = (),
    cursor: str | None = None,
    owner: str | None = None,
    auto_submitted: bool = False,
) -> RoutingFacts:
    """Routing facts for an inbox with some users away."""
    availability = {user: Availability.AWAY for user in away}
    return RoutingFacts(
        people=people_of(config, inbox, availability),
        pool=candidate_pool(config, inbox),
        cursor=cursor,
        owner=owner,
        auto_submitted=auto_submitted,
    )


def run_round_robin(config: Config, inbox: InboxConfig, count: int, **kw: object) -> Counter[str]:
    """Route `count` new conversations in turn, carrying the cursor as the store would."""
    cursor: str | None = None
    counts: Counter[str] = Counter()
    for _ in range(count):
        decided = route(inbox, facts(config, inbox, cursor=cursor, **kw))  # type: ignore[arg-type]
        assert decided.assignee is not None
        counts[decided.assignee] += 1
        cursor = decided.cursor
    return counts


def test_every_strategy_is_named(config: Config) -> None:
    """Every `assign_to` value of the configuration names a strategy in the explicit table."""
    assert set(STRATEGIES) == set(AssignTo)


def test_pool_is_listed_users_and_team_members_sorted(config: Config) -> None:
    """The pool holds the listed users and the members of the listed teams, sorted by id."""
    support = config.inboxes["support"]
    assert candidate_pool(config, support) == ("alice", "bob", "carol", "dave")
    listed = support.model_copy(
        update={"automation": support.automation.model_copy(update={"users": ["erin"]})}
    )
    assert candidate_pool(config, listed) == ("alice", "bob", "carol", "dave", "erin")


def test_1000_conversations_over_three_users_differ_by_at_most_one(config: Config) -> None:
    """1000 new conversations over 3 eligible users (a free seat in the team) differ by ≤ 1."""
    counts = run_round_robin(config, config.inboxes["support"], 1000)
    assert set(counts) == {"alice", "bob", "carol"}
    assert sum(counts.values()) == 1000
    assert max(counts.values()) - min(counts.values()) <= 1


def test_free_seat_and_away_users_are_never_auto_assigned(config: Config) -> None:
    """A free-seat user and an away user get no conversation; the others share them evenly."""
    counts = run_round_robin(config, config.inboxes["support"], 300, away=("bob",))
    assert counts == Counter({"alice": 150, "carol": 150})


def test_user_without_access_is_never_auto_assigned(config: Config) -> None:
    """A listed user who has no access to the inbox is skipped."""
    support = config.inboxes["support"]
    listed = support.model_copy(
        update={"automation": support.automation.model_copy(update={"users": ["erin"]})}
    )
    assert "erin" not in run_round_robin(config, listed, 50)


def test_round_robin_continues_after_the_cursor() -> None:
    """The next user is the first eligible one after the cursor, wrapping around; a cursor that
    left the pool is placed by its id."""
    people = {u: Person(u, paid=True, has_access=True, online=True) for u in "abd"}
    assert next_in_turn(("a", "b", "d"), people, None) == "a"
    assert next_in_turn(("a", "b", "d"), people, "a") == "b"
    assert next_in_turn(("a", "b", "d"), people, "d") == "a"
    assert next_in_turn(("a", "b", "d"), people, "c") == "d"


def test_nobody_eligible_leaves_unassigned(config: Config) -> None:
    """With every candidate away, the conversation stays unassigned and the cursor stays."""
    support = config.inboxes["support"]
    decided = route(support, facts(config, support, away=("alice", "bob", "carol"), cursor="bob"))
    assert (decided.assignee, decided.reason, decided.cursor) == (
        None,
        AssignReason.NO_CANDIDATE,
        "bob",
    )
    assert not decided.advanced


def test_eligible_owner_gets_the_conversation(config: Config) -> None:
    """contact_owner: an online, paid owner with access is assigned; the round robin stays."""
    sales = config.inboxes["sales"]
    decided = route(sales, facts(config, sales, owner="erin", cursor="alice"))
    assert (decided.assignee, decided.reason, decided.cursor) == (
        "erin",
        AssignReason.CONTACT_OWNER,
        "alice",
    )
    assert not decided.advanced


@pytest.mark.parametrize(
    ("owner", "away"),
    [("erin", ("erin",)), ("dave", ()), (None, ()), ("gone", ())],
    ids=["away-owner", "free-seat-owner", "no-owner", "unknown-owner"],
)
def test_ineligible_owner_falls_back_to_inbox_users(
    config: Config, owner: str | None, away: tuple[str, ...]
) -> None:
    """An away, free-seat, missing or unknown owner falls back to the inbox's users and teams."""
    sales = config.inboxes["sales"]
    with_pool = sales.model_copy(
        update={"automation": sales.automation.model_copy(update={"teams": ["support"]})}
    )
    decided = route(with_pool, facts(config, with_pool, owner=owner, away=away, cursor="alice"))
    assert (decided.assignee, decided.reason) == ("bob", AssignReason.OWNER_FALLBACK)
    assert decided.advanced and decided.cursor == "bob"


def test_away_owner_without_inbox_users_stays_unassigned(config: Config) -> None:
    """An away owner and no users or teams listed on the inbox: unassigned."""
    sales = config.inboxes["sales"]
    decided = route(sales, facts(config, sales, owner="erin", away=("erin",)))
    assert (decided.assignee, decided.reason) == (None, AssignReason.NO_CANDIDATE)


def test_owner_without_access_falls_back(config: Config) -> None:
    """An owner who is not a member of the inbox is not eligible there."""
    support = config.inboxes["support"]
    by_owner = support.model_copy(
        update={
            "automation": support.automation.model_copy(
                update={"assign_to": AssignTo.CONTACT_OWNER}
            )
        }
    )
    decided = route(by_owner, facts(config, by_owner, owner="erin"))
    assert (decided.assignee, decided.reason) == ("alice", AssignReason.OWNER_FALLBACK)


def test_auto_submitted_and_no_automation_stay_unassigned(config: Config) -> None:
    """Auto-replies never trigger assignment; inboxes without automation do not assign."""
    support = config.inboxes["support"]
    auto = route(support, facts(config, support, auto_submitted=True))
    assert (auto.assignee, auto.reason) == (None, AssignReason.AUTO_SUBMITTED)
    manual = config.inboxes["archive"]
    off = route(manual, facts(config, manual))
    assert (off.assignee, off.reason) == (None, AssignReason.AUTOMATION_OFF)


def test_ticket_plan(config: Config) -> None:
    """Tickets: none when disabled; owner follows the assignee, or is the configured user."""
    support = config.inboxes["support"]
    plan = plan_ticket(support, "alice")
    assert plan is not None
    assert (plan.pipeline, plan.stage, plan.owner, plan.follows_assignee) == (
        "Support Pipeline",
        "New",
        "alice",
        True,
    )
    fixed = support.model_copy(
        update={"tickets": support.tickets.model_copy(update={"owner": "carol"})}
    )
    fixed_plan = plan_ticket(fixed, "alice")
    assert fixed_plan is not None
    assert (fixed_plan.owner, fixed_plan.follows_assignee) == ("carol", False)
    assert plan_ticket(config.inboxes["archive"], "alice") is None
