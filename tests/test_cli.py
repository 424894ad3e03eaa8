"""The command line: exit statuses, --json documents, and the commands of SPEC §3 (step 1)."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import pytest

from mailgateway.config import WorkerConfig
from mailgateway.inbound.worker import InboundWorker
from mailgateway.store.repo import Delivery, Envelope, Store
from mailgateway.store.schema import utcnow
from tests.cli_support import as_json, run, with_store
from tests.support import make_message

T = TypeVar("T")


async def fill(store: Store) -> None:
    """Two processed conversations in the support inbox and one in sales."""
    envelope = Envelope(mail_from="john.doe@customer.test")
    await store.enqueue(make_message(subject="first"), envelope, [Delivery("support", "s@x")])
    await store.enqueue(make_message(subject="second"), envelope, [Delivery("support", "s@x")])
    await store.enqueue(make_message(subject="third"), envelope, [Delivery("sales", "s@x")])
    settings = WorkerConfig(batch_size=10, max_attempts=3, poll_interval=0.1, retry_delay=0.0)
    await InboundWorker(store, settings, id_domain="mx.test").run_once()


def test_check_config_ok(config_dir: Path) -> None:
    """`check-config` on a valid folder exits 0."""
    result = run("check-config", "--config", config_dir)
    assert result.exit_code == 0
    assert "3 inboxes" in result.stdout


def test_check_config_names_file_and_key(config_dir: Path) -> None:
    """An invalid value exits 2 with one line naming the file and the key."""
    (config_dir / "inboxes" / "sales.toml").write_text(
        'name = "Sales"\n[fallback_email]\nstatus = "on"\n'
    )
    result = run("check-config", "--config", config_dir)
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "\n" not in line
    assert "inboxes/sales.toml" in line and "fallback_email.status" in line


def test_missing_config_folder_exits_2(tmp_path: Path) -> None:
    """A configuration folder that does not exist is an invalid configuration (exit 2)."""
    assert run("check-config", "--config", tmp_path / "nowhere").exit_code == 2


def test_init_then_inboxes_list(tmp_path: Path) -> None:
    """`init` writes a folder whose default inbox is ready; `inboxes list --json` shows it."""
    folder = tmp_path / "new"
    assert run("init", folder, "--subdomain", "globex", "--company", "Globex").exit_code == 0
    inboxes = as_json(run("inboxes", "list", "--json", "--config", folder))
    assert isinstance(inboxes, list) and len(inboxes) == 1
    [inbox] = inboxes
    assert inbox["default"] is True
    assert inbox["forwarding_address"].endswith("@globex.inbox.example.net")
    assert inbox["channels"][0]["type"] == "fallback_email"


def test_init_refuses_non_empty_folder(config_dir: Path) -> None:
    """`init` into a folder that has files is refused with exit 1."""
    result = run("init", config_dir, "--subdomain", "x", "--company", "X")
    assert result.exit_code == 1
    assert result.stderr.startswith("mailgateway: ")


def test_inboxes_create_and_rename(config_dir: Path) -> None:
    """`inboxes create` adds a file with a generated address; `rename` changes only the name."""
    assert run("inboxes", "create", "Billing Team", "--config", config_dir).exit_code == 0
    assert (config_dir / "inboxes" / "billing-team.toml").exists()
    assert (
        run("inboxes", "rename", "billing-team", "Billing", "--config", config_dir).exit_code == 0
    )
    inboxes = as_json(run("inboxes", "list", "--json", "--config", config_dir))
    assert isinstance(inboxes, list)
    billing = next(i for i in inboxes if i["slug"] == "billing-team")
    assert billing["name"] == "Billing"
    assert billing["forwarding_address"] == "billing-team@acme.inbox.example.net"


def test_rename_unknown_inbox_exit_1(config_dir: Path) -> None:
    """Renaming an inbox that does not exist is refused (exit 1)."""
    assert run("inboxes", "rename", "nosuch", "X", "--config", config_dir).exit_code == 1


def test_unmigrated_database_refused(tmp_path: Path) -> None:
    """Commands on a database that was never migrated exit 1 and say to run `db upgrade`."""
    from tests.support import write_config

    folder = write_config(tmp_path / "c", f"sqlite:///{tmp_path / 'fresh.db'}")
    result = run("conversations", "list", "--config", folder)
    assert result.exit_code == 1
    assert "db upgrade" in result.stderr
    assert run("db", "upgrade", "--config", folder).exit_code == 0
    assert as_json(run("conversations", "list", "--json", "--config", folder)) == []


def test_conversations_list_show_close_reopen(config_dir: Path, db_url: str) -> None:
    """List (newest first, filters, limit), show with messages, close and reopen by a member."""
    with_store(db_url, fill)
    listed = as_json(run("conversations", "list", "--json", "--config", config_dir))
    assert isinstance(listed, list)
    assert [c["subject"] for c in listed] == ["third", "second", "first"]
    assert "messages" not in listed[0]
    support = as_json(
        run(
            "conversations",
            "list",
            "--json",
            "--inbox",
            "support",
            "--limit",
            "1",
            "--config",
            config_dir,
        )
    )
    assert [c["subject"] for c in support] == ["second"]  # type: ignore[union-attr]
    first_id = listed[-1]["id"]
    shown = as_json(run("conversations", "show", str(first_id), "--json", "--config", config_dir))
    assert isinstance(shown, dict)
    for key in ("id", "inbox", "subject", "status", "contact", "assignee", "channel", "ticket"):
        assert key in shown
    [message] = shown["messages"]
    for key in (
        "id",
        "direction",
        "message_id",
        "date",
        "from",
        "forwarded_by",
        "attribution",
        "thread_reason",
        "auto_submitted",
        "subject",
        "text",
        "html",
        "attachments",
    ):
        assert key in message
    assert message["date"] == "2026-11-26T10:00:00+00:00"
    assert (
        run(
            "conversations", "close", str(first_id), "--as", "alice", "--config", config_dir
        ).exit_code
        == 0
    )
    closed = as_json(
        run("conversations", "list", "--json", "--status", "closed", "--config", config_dir)
    )
    assert [c["id"] for c in closed] == [first_id]  # type: ignore[union-attr]
    assert (
        run(
            "conversations", "reopen", str(first_id), "--as", "alice", "--config", config_dir
        ).exit_code
        == 0
    )
    assert (
        as_json(
            run("conversations", "list", "--json", "--status", "closed", "--config", config_dir)
        )
        == []
    )


def test_close_refused_for_non_member(config_dir: Path, db_url: str) -> None:
    """A user who is not a member of the inbox cannot close its conversation (exit 1)."""
    with_store(db_url, fill)
    support = as_json(
        run("conversations", "list", "--json", "--inbox", "support", "--config", config_dir)
    )
    conversation_id = support[0]["id"]  # type: ignore[index]
    result = run(
        "conversations", "close", str(conversation_id), "--as", "bob", "--config", config_dir
    )
    assert result.exit_code == 1
    assert "not a member" in result.stderr


def test_show_unknown_conversation_exit_1(config_dir: Path) -> None:
    """Showing a conversation that does not exist exits 1 with a one-line reason."""
    result = run("conversations", "show", "4242", "--config", config_dir)
    assert result.exit_code == 1
    assert "no conversation 4242" in result.stderr


async def hold_one(store: Store) -> int:
    """One queue row, claimed and held with a reason."""
    [queue_id] = await store.enqueue(
        make_message(), Envelope(mail_from="a@x.test"), [Delivery("support", "s@x")]
    )
    await store.claim("w", 1, 3)
    await store.fail(queue_id, "RuntimeError: boom", hold=True, retry_at=utcnow())
    return queue_id


def test_queue_list_and_retry(config_dir: Path, db_url: str) -> None:
    """`queue list --state held --json` shows a held row; `queue retry` queues it again."""
    queue_id = with_store(db_url, hold_one)
    held = as_json(run("queue", "list", "--state", "held", "--json", "--config", config_dir))
    assert [(r["id"], r["reason"]) for r in held] == [(queue_id, "RuntimeError: boom")]  # type: ignore[union-attr]
    assert run("queue", "retry", str(queue_id), "--config", config_dir).exit_code == 0
    queued = as_json(run("queue", "list", "--state", "queued", "--json", "--config", config_dir))
    assert [r["attempts"] for r in queued] == [0]  # type: ignore[union-attr]
    assert run("queue", "retry", "999", "--config", config_dir).exit_code == 1


@pytest.mark.parametrize(
    "args", [["conversations", "list", "--status", "pending"], ["conversations", "show", "x"]]
)
def test_bad_usage_exit_2(config_dir: Path, args: list[str]) -> None:
    """Bad arguments exit 2."""
    assert run(*args, "--config", config_dir).exit_code == 2
