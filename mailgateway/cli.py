"""The `mailgateway` command line (click): parses arguments, calls the services, prints."""

from __future__ import annotations

import asyncio
import functools
import json
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from mailgateway import app, logs, views
from mailgateway.access import require_member
from mailgateway.config import (
    ChannelConfig,
    ChannelStatus,
    Config,
    create_inbox,
    init_config,
    load_config,
    rename_inbox,
)
from mailgateway.domain import ChannelState, ConversationStatus, QueueState
from mailgateway.errors import ConfigError, MailgatewayError, RefusedError
from mailgateway.intake import backfill
from mailgateway.intake.imap import read_health
from mailgateway.store.channels import Health
from mailgateway.store.db import upgrade
from mailgateway.store.repo import Store

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_CONFIG = "/etc/mailgateway"


def fail(message: str, code: int = 1) -> None:
    """Print a one-line reason on stderr and exit with the code."""
    click.echo(f"mailgateway: {message}", err=True)
    raise SystemExit(code)


def guarded(function: Callable[P, T]) -> Callable[P, T]:
    """Turn the project's errors into exit statuses: 2 invalid configuration, 1 refused."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return function(*args, **kwargs)
        except ConfigError as error:
            fail(str(error), 2)
        except RefusedError as error:
            fail(str(error), 1)
        except OSError as error:
            fail(f"{type(error).__name__}: {error}", 1)
        raise AssertionError  # unreachable: fail() exits

    return wrapper


def config_option(function: Callable[..., Any]) -> Callable[..., Any]:
    """Every command takes --config DIR (or MAILGATEWAY_CONFIG)."""
    return click.option(
        "--config",
        "config_dir",
        envvar="MAILGATEWAY_CONFIG",
        default=DEFAULT_CONFIG,
        show_default=True,
        type=click.Path(path_type=Path, file_okay=False),
        help="Configuration folder.",
    )(function)


def json_option(function: Callable[..., Any]) -> Callable[..., Any]:
    """Listing commands take --json."""
    return click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")(
        function
    )


def print_json(data: Any) -> None:
    """One JSON document on stdout."""
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A readable table on stdout."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    Console().print(table)


def with_store(config_dir: Path, action: Callable[[Config, Store], Awaitable[T]]) -> T:
    """Load the configuration, open the database, run the action, close the database."""
    config = load_config(config_dir)

    async def run() -> T:
        store = app.open_store(config)
        try:
            await app.require_schema(store)
            return await action(config, store)
        finally:
            await store.close()

    return asyncio.run(run())


@click.group()
@click.version_option(package_name="mailgateway")
def main() -> None:
    """mailgateway: customer email in, conversations out."""


# -- configuration ------------------------------------------------------------------------------


@main.command("init")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option("--subdomain", required=True, help="The account's subdomain (e.g. acme).")
@click.option("--company", required=True, help="The company name shown in from names.")
@guarded
def init_command(directory: Path, subdomain: str, company: str) -> None:
    """Write a new configuration folder with the default inbox."""
    config = init_config(directory, subdomain=subdomain, company=company)
    inbox = config.default_inbox
    address = inbox.fallback_email.forwarding_address
    click.echo(f"created {directory} with inbox {inbox.slug!r} at {address}")


@main.command("check-config")
@config_option
@guarded
def check_config(config_dir: Path) -> None:
    """Validate the whole configuration; exit 2 with file and key on an error."""
    config = load_config(config_dir)
    click.echo(f"configuration ok: {len(config.inboxes)} inboxes, {len(config.users)} users")


@main.command("serve")
@config_option
@click.option("--log-level", default="info", show_default=True)
@guarded
def serve(config_dir: Path, log_level: str) -> None:
    """Run the daemon: SMTP intake and the inbound worker."""
    logs.configure(log_level)
    raise SystemExit(asyncio.run(app.serve(config_dir)))


@main.group("db")
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@config_option
@guarded
def db_upgrade(config_dir: Path) -> None:
    """Create or migrate the schema to this version."""
    config = load_config(config_dir)

    async def run() -> None:
        store = app.open_store(config)
        try:
            await upgrade(store.engine)
        finally:
            await store.close()

    asyncio.run(run())
    click.echo("database schema is up to date")


# -- inboxes ------------------------------------------------------------------------------------


@main.group("inboxes")
def inboxes() -> None:
    """Inboxes (one TOML file each)."""


def channel_health_view(channel: ChannelConfig, health: Mapping[str, Health]) -> dict[str, Any]:
    """A team email channel's health: the poller's state, last error and last success."""
    found = health.get(channel.address.lower())
    state = ChannelState.DISABLED if channel.status is ChannelStatus.DISABLED else None
    return {
        "health": str(state or (found.state if found else ChannelState.UNKNOWN)),
        "last_error": found.last_error if found else None,
        "last_error_at": views.iso(found.last_error_at) if found else None,
        "last_success_at": views.iso(found.last_success_at) if found else None,
    }


def inbox_view(
    config: Config, slug: str, health: Mapping[str, Health] | None = None
) -> dict[str, Any]:
    """An inbox as `inboxes list --json` shows it (channel health as last recorded)."""
    inbox = config.inboxes[slug]
    return {
        "slug": inbox.slug,
        "name": inbox.name,
        "default": inbox.slug == config.default_inbox.slug,
        "forwarding_address": inbox.fallback_email.forwarding_address,
        "status": str(inbox.fallback_email.status),
        "channels": [
            {
                "type": "fallback_email",
                "address": inbox.fallback_email.forwarding_address,
                "status": str(inbox.fallback_email.status),
                "health": "ok",
            },
            *(
                {
                    "type": str(channel.type),
                    "address": channel.address,
                    "status": str(channel.status),
                    **channel_health_view(channel, health or {}),
                }
                for channel in inbox.channels
            ),
        ],
    }


@inboxes.command("list")
@config_option
@json_option
@guarded
def inboxes_list(config_dir: Path, as_json: bool) -> None:
    """The inboxes with their forwarding addresses and channels."""
    config = load_config(config_dir)
    health = asyncio.run(read_health(config))
    rows = [inbox_view(config, slug, health) for slug in config.inboxes]
    if as_json:
        print_json(rows)
        return
    print_table(
        "Inboxes",
        ["slug", "name", "default", "forwarding address", "channels"],
        [
            [
                r["slug"],
                r["name"],
                "yes" if r["default"] else "",
                r["forwarding_address"],
                ", ".join(
                    f"{c['type']} {c['address']} ({c['status']}, {c['health']})"
                    for c in r["channels"]
                ),
            ]
            for r in rows
        ],
    )


@inboxes.command("create")
@click.argument("name")
@config_option
@guarded
def inboxes_create(name: str, config_dir: Path) -> None:
    """Write inboxes/<slug>.toml with a generated forwarding address."""
    inbox = create_inbox(config_dir, name)
    click.echo(f"created inbox {inbox.slug!r} at {inbox.fallback_email.forwarding_address}")


@inboxes.command("rename")
@click.argument("slug")
@click.argument("name")
@config_option
@guarded
def inboxes_rename(slug: str, name: str, config_dir: Path) -> None:
    """Change an inbox's display name (its slug and address stay)."""
    inbox = rename_inbox(config_dir, slug, name)
    click.echo(f"renamed inbox {inbox.slug!r} to {inbox.name!r}")


# -- conversations ------------------------------------------------------------------------------


@main.group("conversations")
def conversations() -> None:
    """Conversations."""


@conversations.command("list")
@config_option
@json_option
@click.option("--inbox", help="Only this inbox (slug).")
@click.option("--status", type=click.Choice([s.value for s in ConversationStatus]))
@click.option("--assignee", help="Only conversations assigned to this user.")
@click.option("--limit", type=click.IntRange(min=1), help="At most N, newest first.")
@guarded
def conversations_list(
    config_dir: Path,
    as_json: bool,
    inbox: str | None,
    status: str | None,
    assignee: str | None,
    limit: int | None,
) -> None:
    """Conversations, newest first."""

    async def action(config: Config, store: Store) -> list[dict[str, Any]]:
        rows = await store.conversation_rows(
            inbox=inbox, status=status, assignee=assignee, limit=limit
        )
        return [views.conversation_view(row) for row in rows]

    found = with_store(config_dir, action)
    if as_json:
        print_json(found)
        return
    print_table(
        "Conversations",
        ["id", "inbox", "status", "contact", "assignee", "subject"],
        [
            [
                c["id"],
                c["inbox"],
                c["status"],
                (c["contact"] or {}).get("email"),
                c["assignee"],
                c["subject"][:60],
            ]
            for c in found
        ],
    )


@conversations.command("show")
@click.argument("conversation_id", type=int)
@config_option
@json_option
@guarded
def conversations_show(conversation_id: int, config_dir: Path, as_json: bool) -> None:
    """One conversation with its messages."""

    async def action(config: Config, store: Store) -> dict[str, Any]:
        rows = await store.conversation_rows(ids=[conversation_id])
        if not rows:
            msg = f"no conversation {conversation_id}"
            raise RefusedError(msg)
        return views.conversation_detail(rows[0], await store.message_rows(conversation_id))

    detail = with_store(config_dir, action)
    if as_json:
        print_json(detail)
        return
    contact = detail["contact"] or {}
    click.echo(f"#{detail['id']} [{detail['inbox']}] {detail['subject']} ({detail['status']})")
    click.echo(f"contact: {contact.get('name') or ''} <{contact.get('email') or ''}>")
    for message in detail["messages"]:
        sender = message["from"]
        click.echo(f"--- {message['date']} {sender['email']} ({message['thread_reason']})")
        click.echo((message["text"] or "")[:2000])


def set_status(
    conversation_id: int, user: str, config_dir: Path, status: ConversationStatus
) -> None:
    """Close or reopen a conversation on behalf of a member of its inbox."""

    async def action(config: Config, store: Store) -> None:
        rows = await store.conversation_rows(ids=[conversation_id])
        if not rows:
            msg = f"no conversation {conversation_id}"
            raise RefusedError(msg)
        require_member(config, rows[0].inbox, user)
        await store.set_status(conversation_id, status)

    with_store(config_dir, action)
    click.echo(f"conversation {conversation_id} {status}")


@conversations.command("close")
@click.argument("conversation_id", type=int)
@click.option("--as", "user", required=True, help="The acting user.")
@config_option
@guarded
def conversations_close(conversation_id: int, user: str, config_dir: Path) -> None:
    """Close a conversation."""
    set_status(conversation_id, user, config_dir, ConversationStatus.CLOSED)


@conversations.command("reopen")
@click.argument("conversation_id", type=int)
@click.option("--as", "user", required=True, help="The acting user.")
@config_option
@guarded
def conversations_reopen(conversation_id: int, user: str, config_dir: Path) -> None:
    """Reopen a closed conversation."""
    set_status(conversation_id, user, config_dir, ConversationStatus.OPEN)


# -- queues -------------------------------------------------------------------------------------


@main.group("queue")
def queue() -> None:
    """The inbound queue."""


QUEUE_STATES = ["queued", "active", "held", "deferred", "done"]


@queue.command("list")
@config_option
@json_option
@click.option("--state", type=click.Choice(QUEUE_STATES), help="Only rows in this state.")
@click.option("--all", "show_all", is_flag=True, help="Include rows already done.")
@guarded
def queue_list(config_dir: Path, as_json: bool, state: str | None, show_all: bool) -> None:
    """Queue rows not yet done (or of one state), oldest first."""
    if state is not None:
        states: list[str] | None = [state]
    elif show_all:
        states = None
    else:
        states = [QueueState.QUEUED, QueueState.ACTIVE, QueueState.HELD]

    async def action(config: Config, store: Store) -> list[dict[str, Any]]:
        return [views.queue_view(row) for row in await store.queue_rows(states)]

    rows = with_store(config_dir, action)
    if as_json:
        print_json(rows)
        return
    print_table(
        "Queue",
        ["id", "queue", "state", "inbox", "from", "attempts", "reason"],
        [
            [
                r["id"],
                r["queue"],
                r["state"],
                r["inbox"],
                r["mail_from"],
                r["attempts"],
                r["reason"],
            ]
            for r in rows
        ],
    )


@queue.command("retry")
@click.argument("queue_id", type=int)
@config_option
@guarded
def queue_retry(queue_id: int, config_dir: Path) -> None:
    """Queue a held row again for processing."""

    async def action(config: Config, store: Store) -> bool:
        return await store.retry(queue_id)

    if not with_store(config_dir, action):
        fail(f"queue row {queue_id} is not held or queued")
    click.echo(f"queue row {queue_id} queued for retry")


# -- backfill -----------------------------------------------------------------------------------


@main.group("import")
def import_group() -> None:
    """Backfill old mail (archive mode: no notifications, no auto-assignment)."""


class ProgressBar:
    """A rich progress bar on stderr for a backfill."""

    def __init__(self, label: str) -> None:
        self.bar = Progress(
            TextColumn(label),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self.task = self.bar.add_task(label, total=None)

    def start(self, total: int) -> None:
        """Show the bar, sized to the total."""
        self.bar.update(self.task, total=total)
        self.bar.start()

    def advance(self) -> None:
        """One more message."""
        self.bar.advance(self.task)

    def stop(self) -> None:
        """Remove the bar."""
        self.bar.stop()


def run_import(
    config_dir: Path,
    label: str,
    action: Callable[[Config, Store, ProgressBar], Awaitable[backfill.ImportReport]],
    as_json: bool,
) -> None:
    """Run a backfill with a progress bar and print what it did."""
    bar = ProgressBar(label)
    try:
        report = with_store(config_dir, lambda config, store: action(config, store, bar))
    except (ConfigError, RefusedError):
        raise
    except MailgatewayError as error:
        fail(f"{type(error).__name__}: {error}")
    finally:
        bar.stop()
    if as_json:
        print_json(report.as_dict())
        return
    click.echo(
        f"imported {report.queued} of {report.found} messages "
        f"({report.duplicates} stored already under the same Message-ID or content, "
        f"{report.already} imported before, {report.too_large} over the size limit)"
    )


@import_group.command("imap")
@click.argument("channel")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d"]), help="Only mail since DATE.")
@click.option("--folder", help="Another folder than the channel's (e.g. an archive).")
@config_option
@json_option
@guarded
def import_imap(
    channel: str, since: Any, folder: str | None, config_dir: Path, as_json: bool
) -> None:
    """Backfill a team mailbox's existing mail, resumable."""

    async def action(config: Config, store: Store, bar: ProgressBar) -> backfill.ImportReport:
        day = since.date() if since is not None else None
        return await backfill.import_imap(
            config, store, channel, folder=folder, since=day, progress=bar
        )

    run_import(config_dir, f"import {channel}", action, as_json)


@import_group.command("mbox")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--inbox", "slug", required=True, help="The inbox (slug) the mail goes to.")
@config_option
@json_option
@guarded
def import_mbox(file: Path, slug: str, config_dir: Path, as_json: bool) -> None:
    """Backfill an mbox file into an inbox, resumable."""

    async def action(config: Config, store: Store, bar: ProgressBar) -> backfill.ImportReport:
        return await backfill.import_mbox(config, store, file, slug, progress=bar)

    run_import(config_dir, f"import {file.name}", action, as_json)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
