"""The command line of routing: assign with access rules, availability, contacts and owners."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from mailgateway.store.db import create_engine
from mailgateway.store.repo import Store
from tests.cli_support import as_json, run
from tests.routing_support import deliver, loaded, process_all, worker_for, write_routing_config


def refused(result: Result, reason: str) -> None:
    """Exit 1 with one line on stderr that contains the reason."""
    assert result.exit_code == 1, result.output
    line = result.stderr.strip()
    assert "\n" not in line and reason in line, line


@pytest.fixture
def folder(tmp_path: Path, db_url: str) -> Path:
    """The routing team's configuration with two processed conversations: support (assigned
    to alice, with a ticket) and sales (unassigned), both from john.doe@customer.test."""
    path = write_routing_config(tmp_path / "config", db_url)

    async def fill() -> None:
        store = Store(create_engine(db_url))
        try:
            await deliver(store, "support", subject="Printer on fire")
            await deliver(store, "sales", subject="Quote please")
            await process_all(worker_for(store, loaded(path)))
        finally:
            await store.close()

    asyncio.run(fill())
    return path


def conversation(folder: Path, inbox: str) -> dict[str, Any]:
    """The one conversation of an inbox, as `conversations list --json` shows it."""
    [found] = as_json(run("conversations", "list", "--json", "--inbox", inbox, "--config", folder))
    return dict(found)


def test_list_shows_assignee_and_ticket(folder: Path) -> None:
    """`conversations list --json` fills assignee and ticket; `show --json` too."""
    support = conversation(folder, "support")
    assert support["assignee"] == "alice"
    assert support["ticket"] == {
        "id": support["ticket"]["id"],
        "pipeline": "Support Pipeline",
        "stage": "New",
        "owner": "alice",
    }
    shown = as_json(run("conversations", "show", str(support["id"]), "--json", "--config", folder))
    assert shown["ticket"] == support["ticket"] and shown["assignee"] == "alice"
    assert conversation(folder, "sales")["ticket"] is None


def test_member_assigns_free_seat_by_hand(folder: Path) -> None:
    """A member assigns to a free-seat member; the ticket owner follows; --assignee finds it."""
    support = conversation(folder, "support")
    result = run(
        "conversations", "assign", str(support["id"]), "dave", "--as", "carol", "--config", folder
    )
    assert result.exit_code == 0, result.output
    assert "assigned to dave" in result.stdout
    again = conversation(folder, "support")
    assert again["assignee"] == "dave" and again["ticket"]["owner"] == "dave"
    listed = as_json(
        run("conversations", "list", "--json", "--assignee", "dave", "--config", folder)
    )
    assert [c["id"] for c in listed] == [support["id"]]


@pytest.mark.parametrize("actor", ["root", "auditor"])
def test_view_only_admin_cannot_assign_or_close(folder: Path, actor: str) -> None:
    """Super admins and account-access users who are not members are refused (exit 1)."""
    support_id = str(conversation(folder, "support")["id"])
    reason = f"user '{actor}' ({'super_admin' if actor == 'root' else 'account_access'}) may view"
    refused(
        run("conversations", "assign", support_id, "bob", "--as", actor, "--config", folder), reason
    )
    refused(run("conversations", "close", support_id, "--as", actor, "--config", folder), reason)
    assert conversation(folder, "support")["assignee"] == "alice"
    assert conversation(folder, "support")["status"] == "open"


def test_admin_member_of_everyone_inbox_may_assign(folder: Path) -> None:
    """In an inbox open to everyone, a super admin is a member and may assign."""
    sales_id = str(conversation(folder, "sales")["id"])
    result = run("conversations", "assign", sales_id, "erin", "--as", "root", "--config", folder)
    assert result.exit_code == 0, result.output
    assert conversation(folder, "sales")["assignee"] == "erin"


def test_assign_refusals(folder: Path) -> None:
    """Target without access, unknown target, non-member actor and unknown conversation: exit 1."""
    support_id = str(conversation(folder, "support")["id"])
    refused(
        run("conversations", "assign", support_id, "erin", "--as", "alice", "--config", folder),
        "cannot assign to 'erin': no access to inbox 'support'",
    )
    refused(
        run("conversations", "assign", support_id, "ghost", "--as", "alice", "--config", folder),
        "unknown user 'ghost'",
    )
    refused(
        run("conversations", "assign", support_id, "bob", "--as", "erin", "--config", folder),
        "not a member of inbox 'support'",
    )
    refused(
        run("conversations", "assign", "4242", "bob", "--as", "alice", "--config", folder),
        "no conversation 4242",
    )
    assert conversation(folder, "support")["assignee"] == "alice"


def test_set_availability_and_users_list(folder: Path) -> None:
    """Availability is stored and listed; unknown users exit 1, unknown statuses exit 2."""
    result = run("users", "set-availability", "bob", "away", "--config", folder)
    assert result.exit_code == 0, result.output
    users = {u["id"]: u for u in as_json(run("users", "list", "--json", "--config", folder))}
    assert users["bob"]["availability"] == "away"
    assert users["alice"]["availability"] == "online"
    assert users["dave"]["seat"] == "free" and users["root"]["role"] == "super_admin"
    refused(run("users", "set-availability", "ghost", "away", "--config", folder), "unknown user")
    assert run("users", "set-availability", "bob", "busy", "--config", folder).exit_code == 2


def test_contacts_list_show_and_owner(folder: Path) -> None:
    """Contacts are listed with owners; `show --json` lists every message logged on the contact;
    `set-owner` sets the owner (creating an unknown contact) and refuses unknown users."""
    [contact] = as_json(run("contacts", "list", "--json", "--config", folder))
    assert contact["email"] == "john.doe@customer.test"
    assert (contact["owner"], contact["conversations"], contact["messages"]) == (None, 2, 2)
    result = run("contacts", "set-owner", "John.Doe@customer.test", "erin", "--config", folder)
    assert result.exit_code == 0, result.output
    shown = as_json(run("contacts", "show", "john.doe@customer.test", "--json", "--config", folder))
    assert shown["owner"] == "erin" and shown["name"] == "John Doe"
    assert [(a["inbox"], a["subject"], a["kind"]) for a in shown["activity"]] == [
        ("support", "Printer on fire", "email_received"),
        ("sales", "Quote please", "email_received"),
    ]
    assert (
        run("contacts", "set-owner", "new@customer.test", "bob", "--config", folder).exit_code == 0
    )
    emails = [c["email"] for c in as_json(run("contacts", "list", "--json", "--config", folder))]
    assert emails == ["john.doe@customer.test", "new@customer.test"]
    refused(
        run("contacts", "set-owner", "new@customer.test", "ghost", "--config", folder),
        "unknown user",
    )
    refused(run("contacts", "show", "nobody@x.test", "--config", folder), "no contact")


def test_owner_routing_from_the_command_line(folder: Path, db_url: str) -> None:
    """An owner set with the CLI gets the contact's next sales conversation while online, and
    not while away (sales lists no fallback users)."""
    assert (
        run("contacts", "set-owner", "john.doe@customer.test", "erin", "--config", folder).exit_code
        == 0
    )

    async def one_more(subject: str) -> None:
        store = Store(create_engine(db_url))
        try:
            await deliver(store, "sales", subject=subject)
            await process_all(worker_for(store, loaded(folder)))
        finally:
            await store.close()

    asyncio.run(one_more("owner online"))
    assert run("users", "set-availability", "erin", "away", "--config", folder).exit_code == 0
    asyncio.run(one_more("owner away"))
    listed = as_json(run("conversations", "list", "--json", "--inbox", "sales", "--config", folder))
    assert {c["subject"]: c["assignee"] for c in listed} == {
        "Quote please": None,
        "owner online": "erin",
        "owner away": None,
    }
