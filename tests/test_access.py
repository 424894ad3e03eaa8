"""Access rules (pure): members act; super admins and account-access users only view."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgateway.access import can_view, is_member, require_assignable, require_member
from mailgateway.config import Config
from mailgateway.errors import RefusedError
from tests.routing_support import loaded, write_routing_config


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """The routing team: support is for the support team only, sales for everyone."""
    return loaded(write_routing_config(tmp_path / "c", "sqlite:////tmp/unused.db"))


@pytest.mark.parametrize(
    ("user", "member", "viewer"),
    [
        ("alice", True, True),
        ("dave", True, True),
        ("erin", False, False),
        ("root", False, True),
        ("auditor", False, True),
        ("nobody", False, False),
    ],
)
def test_who_acts_and_who_views_in_a_specific_inbox(
    config: Config, user: str, member: bool, viewer: bool
) -> None:
    """Team members act; admins and account-access users view without acting; others neither."""
    support = config.inboxes["support"]
    assert is_member(config, support, user) is member
    assert can_view(config, support, user) is viewer


def test_everyone_inbox_lets_every_user_act(config: Config) -> None:
    """In an inbox open to everyone, every known user (admins included) is a member."""
    sales = config.inboxes["sales"]
    assert all(is_member(config, sales, user) for user in config.users)


@pytest.mark.parametrize("user", ["root", "auditor"])
def test_view_only_user_refused_with_clear_reason(config: Config, user: str) -> None:
    """Acting as a view-only admin who is not a member is refused, saying why."""
    with pytest.raises(RefusedError, match=r"may view inbox 'support' but cannot act"):
        require_member(config, "support", user)


def test_non_member_and_unknown_user_refused(config: Config) -> None:
    """A plain non-member and an unknown user are refused; a member passes."""
    with pytest.raises(RefusedError, match="not a member of inbox 'support'"):
        require_member(config, "support", "erin")
    with pytest.raises(RefusedError, match="unknown user 'ghost'"):
        require_member(config, "support", "ghost")
    require_member(config, "support", "alice")


def test_assignable_needs_access_not_a_paid_seat(config: Config) -> None:
    """A free-seat member can be assigned by hand; a user without access or unknown cannot."""
    require_assignable(config, "support", "dave")
    with pytest.raises(RefusedError, match="no access to inbox 'support'"):
        require_assignable(config, "support", "erin")
    with pytest.raises(RefusedError, match="no access"):
        require_assignable(config, "support", "root")
    with pytest.raises(RefusedError, match="unknown user"):
        require_assignable(config, "support", "ghost")
