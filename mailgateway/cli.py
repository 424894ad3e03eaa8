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
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from mailgateway import app, assignment, logs, replies, tokens, verification, views
from mailgateway.access import require_member
from mailgateway.config import (
    ChannelConfig,
    ChannelStatus,
    Config,
    OutboundConfig,
    create_inbox,
    init_config,
    load_config,
    rename_inbox,
)
from mailgateway.domain import (
    Availability,
    ChannelState,
    ConversationStatus,
    OutboundState,
    QueueState,
)
from mailgateway.errors import ConfigError, MailgatewayError, RefusedError
from mailgateway.intake import backfill
from mailgateway.intake.imap import read_health
from mailgateway.outbound import identity, sign
from mailgateway.store import api as api_store
from mailgateway.store import routing
from mailgateway.store.channels import Health
from mailgateway.store.channelsend import Sending, read_sending
from mailgateway.store.db import upgrade
from mailgateway.store.outbound import OutboundStore
from mailgateway.store.repo import Store, upsert_contact

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


def log_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """The daemon's and the worker's --log-level and --log-format."""
    function = click.option(
        "--log-format",
        type=click.Choice([f.value for f in logs.LogFormat]),
        default="auto",
        show_default=True,
        help="JSON lines on stdout (for journald), or text for people; auto: text on a terminal.",
    )(function)
    return click.option("--log-level", default="info", show_default=True)(function)


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
    Console(width=None if sys.stdout.isatty() else 160).print(table)


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
    logs.configure_for_commands()


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
@log_options
@guarded
def serve(config_dir: Path, log_level: str, log_format: str) -> None:
    """Run the daemon: SMTP intake, the inbound and outbound workers, the HTTP API."""
    logs.configure(log_level, log_format=logs.LogFormat(log_format))
    raise SystemExit(app.run(config_dir))


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
    config: Config,
    slug: str,
    health: Mapping[str, Health] | None = None,
    sending: Mapping[str, Sending] | None = None,
) -> dict[str, Any]:
    """An inbox as `inboxes list --json` shows it (channel health as last recorded, and how
    sending through each team channel fares)."""
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
                    "sending": views.sending_view(
                        (sending or {}).get(channel.address.lower(), Sending())
                    ),
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
    sending = asyncio.run(read_sending(config))
    rows = [inbox_view(config, slug, health, sending) for slug in config.inboxes]
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
        detail = views.conversation_detail(rows[0], await store.message_rows(conversation_id))
        deliveries = await OutboundStore(store.engine).deliveries(conversation_id)
        return views.with_deliveries(detail, deliveries)

    detail = with_store(config_dir, action)
    if as_json:
        print_json(detail)
        return
    contact = detail["contact"] or {}
    click.echo(f"#{detail['id']} [{detail['inbox']}] {detail['subject']} ({detail['status']})")
    click.echo(f"contact: {contact.get('name') or ''} <{contact.get('email') or ''}>")
    click.echo(f"assignee: {detail['assignee'] or '(unassigned)'}")
    if detail["ticket"] is not None:
        ticket = detail["ticket"]
        click.echo(f"ticket #{ticket['id']}: {ticket['pipeline']} / {ticket['stage']}")
    for message in detail["messages"]:
        sender = message["from"]
        click.echo(f"--- {message['date']} {sender['email']} ({message['thread_reason']})")
        for note in message_notes(message):
            click.echo(f"    {note}")
        if message["delivery"] is not None:
            delivery = message["delivery"]
            click.echo(f"    delivery: {delivery['state']} {delivery['reason'] or ''}".rstrip())
        click.echo((message["text"] or "")[:2000])


def message_notes(message: dict[str, Any]) -> list[str]:
    """Why a message is where it is, auto-reply flags and delivery failures, one line each."""
    notes = [f"thread: {message['thread_detail']}"] if message.get("thread_detail") else []
    if message.get("auto_submitted"):
        notes.append(f"auto-submitted: {', '.join(message.get('auto_reasons') or [])}")
    if message.get("delivery_status"):
        error = (message.get("delivery_error") or "").replace("\n", "; ")
        notes.append(f"delivery {message['delivery_status']}: {error}")
    return notes


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
    """The inbound and outbound queues."""


QUEUE_STATES = ["queued", "active", "held", "deferred", "done", "sent", "failed"]
OUTBOUND_PENDING = [
    OutboundState.QUEUED,
    OutboundState.ACTIVE,
    OutboundState.DEFERRED,
    OutboundState.HELD,
]


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
        inbound = [views.queue_view(row) for row in await store.queue_rows(states)]
        outbound_states = OUTBOUND_PENDING if state is None and not show_all else states
        outbound = await OutboundStore(store.engine).rows(outbound_states)
        return inbound + [views.outbound_queue_view(row) for row in outbound]

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
@click.option(
    "--queue",
    "which",
    type=click.Choice(["inbound", "outbound"]),
    help="Which queue the id is in (needed only when both have a retryable row with it).",
)
@config_option
@guarded
def queue_retry(queue_id: int, which: str | None, config_dir: Path) -> None:
    """Queue a held row (or a deferred or failed outbound one) again, due now."""

    async def action(config: Config, store: Store) -> str | None:
        return await retry_row(store, queue_id, which)

    retried = with_store(config_dir, action)
    if retried is None:
        fail(f"queue row {queue_id} is not held, deferred, failed or queued")
    click.echo(f"{retried} queue row {queue_id} queued for retry")


# -- outbound: replies, from addresses, DKIM ---------------------------------------------------


async def retry_row(store: Store, queue_id: int, which: str | None) -> str | None:
    """Retry the row in the named queue, or in the one queue where that id can be retried;
    refused when both can. Returns the queue's name, or None when nothing was retried."""
    outbound = OutboundStore(store.engine)
    if which is None:
        inbound_ok, outbound_ok = await outbound.retryable(queue_id)
        if inbound_ok and outbound_ok:
            msg = f"both queues have a row {queue_id}: add --queue inbound or --queue outbound"
            raise RefusedError(msg)
        which = "outbound" if outbound_ok else "inbound"
    retried = await (outbound.retry(queue_id) if which == "outbound" else store.retry(queue_id))
    return which if retried else None


def read_text(path: Path) -> str:
    """A UTF-8 text file given on the command line."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        msg = f"{path} is not UTF-8 text"
        raise RefusedError(msg) from None


FILE = click.Path(path_type=Path, dir_okay=False, exists=True)


@main.command("reply")
@click.argument("conversation_id", type=int)
@click.option("--as", "user", required=True, help="The agent replying (a member of the inbox).")
@click.option("--text", help="The reply as plain text.")
@click.option("--text-file", type=FILE, help="The reply's plain text, from a UTF-8 file.")
@click.option("--html-file", type=FILE, help="An HTML version of the reply (UTF-8 file).")
@config_option
@json_option
@guarded
def reply_command(
    conversation_id: int,
    user: str,
    text: str | None,
    text_file: Path | None,
    html_file: Path | None,
    config_dir: Path,
    as_json: bool,
) -> None:
    """Store a reply on the conversation and queue it (the daemon signs and sends it)."""
    if (text is None) == (text_file is None):
        raise click.UsageError("give exactly one of --text and --text-file")
    request = replies.ReplyRequest(
        conversation_id,
        user,
        text if text is not None else read_text(text_file),  # type: ignore[arg-type]
        None if html_file is None else read_text(html_file),
    )

    async def action(config: Config, store: Store) -> replies.QueuedReply:
        return await replies.queue_reply(config, store, request)

    queued = with_store(config_dir, action)
    sender = queued.sender
    if as_json:
        print_json(
            {
                "conversation_id": queued.conversation_id,
                "message": queued.message_row_id,
                "queue_id": queued.queue_id,
                "message_id": queued.message_id,
                "from": {"name": sender.name, "email": sender.address},
                "to": queued.to,
            }
        )
        return
    click.echo(
        f"reply queued as outbound row {queued.queue_id}: "
        f'"{sender.name}" <{sender.address}> to {queued.to}'
    )


@inboxes.command("preview")
@click.argument("slug")
@click.option("--as", "user_id", required=True, help="The agent the preview is for.")
@config_option
@json_option
@guarded
def inboxes_preview(slug: str, user_id: str, config_dir: Path, as_json: bool) -> None:
    """How a reply from the inbox looks to the customer; nothing is sent."""
    config = load_config(config_dir)
    inbox, user = config.inboxes.get(slug), config.users.get(user_id)
    if inbox is None or user is None:
        fail(f"no inbox {slug!r}" if inbox is None else f"unknown user {user_id!r}")
    assert inbox is not None and user is not None
    sender = identity.preview_sender(config, inbox, user)
    fallback = inbox.fallback_email
    preview = {
        "inbox": slug,
        "user": user_id,
        "from_name": sender.name,
        "from_address": sender.address,
        "custom_address": sender.custom_address,
        "sending_enabled": fallback.send_enabled and fallback.status is ChannelStatus.ENABLED,
        "signature": {
            "format": str(fallback.signature_format),
            "text": sender.signature.text,
            "html": sender.signature.html,
        },
    }
    if as_json:
        print_json(preview)
        return
    click.echo(f'From: "{sender.name}" <{sender.address}>')
    if sender.custom_address:
        click.echo("(custom address: replies are refused until it is verified)")
    if not preview["sending_enabled"]:
        click.echo("(sending from this inbox's fallback email is off)")
    click.echo(f"--- signature (text)\n{sender.signature.text}")
    click.echo(f"--- signature (HTML)\n{sender.signature.html}")


@main.group("from-address")
def from_address() -> None:
    """Custom from addresses: verified by a code mailed to them."""


@from_address.command("verify")
@click.argument("address")
@config_option
@guarded
def from_address_verify(address: str, config_dir: Path) -> None:
    """Mail a one-time code to a custom from address (through the outbound queue)."""

    async def action(config: Config, store: Store) -> int | None:
        return await verification.request_code(config, store, address)

    queue_id = with_store(config_dir, action)
    if queue_id is None:
        click.echo(f"{address} is verified already; nothing sent")
        return
    minutes = int(verification.CODE_LIFETIME.total_seconds() // 60)
    click.echo(
        f"a code for {address} is queued as outbound row {queue_id} (valid {minutes} minutes);"
        f" confirm with: mailgateway from-address confirm {address} CODE"
    )


@from_address.command("confirm")
@click.argument("address")
@click.argument("code")
@config_option
@guarded
def from_address_confirm(address: str, code: str, config_dir: Path) -> None:
    """Mark a custom from address verified with the code mailed to it."""

    async def action(config: Config, store: Store) -> None:
        await verification.confirm_code(config, store, address, code)

    with_store(config_dir, action)
    click.echo(f"{address} is verified: replies may be sent from it")


@main.group("dkim")
def dkim_group() -> None:
    """DKIM signing keys."""


@dkim_group.command("keygen")
@click.option("--selector", required=True, help="The DNS selector, e.g. mg1.")
@click.option("--domain", required=True, help="The signing domain (d=).")
@click.option(
    "--algorithm",
    type=click.Choice([a.value for a in sign.Algorithm]),
    default=sign.Algorithm.RSA.value,
    show_default=True,
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Key file to write [default: CONFIG/dkim/<selector>.key].",
)
@config_option
@guarded
def dkim_keygen(
    selector: str, domain: str, algorithm: str, out: Path | None, config_dir: Path
) -> None:
    """Write a new private key (mode 0600) and print the DNS TXT record that publishes it."""
    try:
        OutboundConfig(dkim_selector=selector, dkim_domain=domain)
    except ValidationError as error:
        raise click.BadParameter(str(error.errors()[0]["msg"])) from None
    path = out or config_dir / "dkim" / f"{selector}.key"
    if path.exists():
        fail(f"{path} exists already: a key is never overwritten")
    pem, key = sign.generate_key(sign.Algorithm(algorithm))
    sign.write_key_file(path, pem)
    click.echo(f'; wrote {path} (mode 0600): set dkim_selector = "{selector}", dkim_key = "{path}"')
    click.echo(sign.dns_record(selector, domain.lower(), key))


# -- assignment, contacts and users -------------------------------------------------------------


@conversations.command("assign")
@click.argument("conversation_id", type=int)
@click.argument("assignee")
@click.option("--as", "user", required=True, help="The acting user (a member of the inbox).")
@config_option
@guarded
def conversations_assign(conversation_id: int, assignee: str, user: str, config_dir: Path) -> None:
    """Assign a conversation to a user with access to its inbox."""

    async def action(config: Config, store: Store) -> assignment.HandAssignment:
        async with store.engine.begin() as connection:
            return await assignment.assign_by_hand(
                connection, config, conversation_id, assignee, user
            )

    result = with_store(config_dir, action)
    if result.changed:
        click.echo(f"conversation {conversation_id} assigned to {assignee}")
    else:
        click.echo(f"conversation {conversation_id} is already assigned to {assignee}")


@main.group("contacts")
def contacts() -> None:
    """Contacts: owners and activity."""


@contacts.command("list")
@config_option
@json_option
@guarded
def contacts_list(config_dir: Path, as_json: bool) -> None:
    """Contacts with their owners, by address."""

    async def action(config: Config, store: Store) -> list[dict[str, Any]]:
        async with store.engine.connect() as connection:
            return [views.contact_view(row) for row in await routing.contact_rows(connection)]

    found = with_store(config_dir, action)
    if as_json:
        print_json(found)
        return
    print_table(
        "Contacts",
        ["email", "name", "owner", "conversations", "messages"],
        [[c["email"], c["name"], c["owner"], c["conversations"], c["messages"]] for c in found],
    )


@contacts.command("show")
@click.argument("email")
@config_option
@json_option
@guarded
def contacts_show(email: str, config_dir: Path, as_json: bool) -> None:
    """One contact with its activity: every message logged on it."""

    async def action(config: Config, store: Store) -> dict[str, Any]:
        async with store.engine.connect() as connection:
            rows = await routing.contact_rows(connection, email.strip().lower())
            if not rows:
                msg = f"no contact {email}"
                raise RefusedError(msg)
            activity = await routing.activity_rows(connection, rows[0].id)
            return views.contact_detail(rows[0], activity)

    detail = with_store(config_dir, action)
    if as_json:
        print_json(detail)
        return
    click.echo(f"{detail['name'] or ''} <{detail['email']}>  owner: {detail['owner'] or '-'}")
    for entry in detail["activity"]:
        click.echo(
            f"{entry['logged_at']} {entry['kind']} [{entry['inbox']}] "
            f"#{entry['conversation_id']} {entry['subject'][:60]}"
        )


@contacts.command("set-owner")
@click.argument("email")
@click.argument("owner")
@config_option
@guarded
def contacts_set_owner(email: str, owner: str, config_dir: Path) -> None:
    """Give a contact an owner (a user id); the contact is created when unknown."""
    address = email.strip().lower()
    if "@" not in address:
        fail(f"not an e-mail address: {email!r}", 2)

    async def action(config: Config, store: Store) -> None:
        if owner not in config.users:
            msg = f"unknown user {owner!r}"
            raise RefusedError(msg)
        async with store.engine.begin() as connection:
            await upsert_contact(connection, address, "")
            await routing.set_contact_owner(connection, address, owner)

    with_store(config_dir, action)
    click.echo(f"contact {address} is owned by {owner}")


@main.group("users")
def users() -> None:
    """Users (from users.toml) and their availability."""


@users.command("set-availability")
@click.argument("user")
@click.argument("status", type=click.Choice([a.value for a in Availability]))
@config_option
@guarded
def users_set_availability(user: str, status: str, config_dir: Path) -> None:
    """Mark a user online or away; away users are not auto-assigned."""

    async def action(config: Config, store: Store) -> None:
        if user not in config.users:
            msg = f"unknown user {user!r}"
            raise RefusedError(msg)
        async with store.engine.begin() as connection:
            await routing.set_availability(connection, user, Availability(status))

    with_store(config_dir, action)
    click.echo(f"user {user} is {status}")


@users.command("list")
@config_option
@json_option
@guarded
def users_list(config_dir: Path, as_json: bool) -> None:
    """Users with their seat, role, teams and availability."""

    async def action(config: Config, store: Store) -> list[dict[str, Any]]:
        async with store.engine.connect() as connection:
            stored = await routing.availability(connection)
        return [
            {
                "id": u.id,
                "email": u.email,
                "name": u.full_name,
                "seat": str(u.seat),
                "role": str(u.role),
                "teams": list(u.teams),
                "availability": str(stored.get(u.id, Availability.ONLINE)),
            }
            for u in config.users.values()
        ]

    found = with_store(config_dir, action)
    if as_json:
        print_json(found)
        return
    print_table(
        "Users",
        ["id", "name", "seat", "role", "teams", "availability"],
        [
            [u["id"], u["name"], u["seat"], u["role"], ", ".join(u["teams"]), u["availability"]]
            for u in found
        ],
    )


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


# -- API tokens ---------------------------------------------------------------------------------


@main.group("tokens")
def tokens_group() -> None:
    """API tokens for the HTTP API (stored hashed)."""


@tokens_group.command("create")
@click.argument("user")
@config_option
@guarded
def tokens_create(user: str, config_dir: Path) -> None:
    """Issue an API token for USER; it is printed once and only its hash is kept."""

    async def action(config: Config, store: Store) -> tokens.IssuedToken:
        return await tokens.create_token(config, store, user)

    issued = with_store(config_dir, action)
    click.echo(issued.token)
    click.echo(f"token {issued.id} for {issued.user_id}: shown once, store it now", err=True)


@tokens_group.command("list")
@click.option("--user", help="Only this user's tokens.")
@config_option
@json_option
@guarded
def tokens_list(user: str | None, config_dir: Path, as_json: bool) -> None:
    """Tokens by id, user and first characters (never the token itself)."""

    async def action(config: Config, store: Store) -> list[dict[str, Any]]:
        return [views.token_view(row) for row in await api_store.token_rows(store, user)]

    rows = with_store(config_dir, action)
    if as_json:
        print_json(rows)
        return
    print_table(
        "API tokens",
        ["id", "user", "starts with", "created", "revoked"],
        [[r["id"], r["user"], r["prefix"], r["created_at"], r["revoked_at"]] for r in rows],
    )


@tokens_group.command("revoke")
@click.argument("token_id", type=int)
@config_option
@guarded
def tokens_revoke(token_id: int, config_dir: Path) -> None:
    """Revoke a token: requests with it are refused from now on."""

    async def action(config: Config, store: Store) -> bool:
        return await api_store.revoke_token(store, token_id)

    if not with_store(config_dir, action):
        fail(f"no active token {token_id}")
    click.echo(f"token {token_id} revoked")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


@main.command("worker")
@config_option
@log_options
@click.option("--child", is_flag=True, hidden=True, help="started by serve")
@click.option("--report-fd", type=int, hidden=True, help="pipe for serve's metrics")
@guarded
def worker(
    config_dir: Path, log_level: str, log_format: str, child: bool, report_fd: int | None
) -> None:
    """Run only the inbound worker (serve starts `[worker] processes` of these by itself)."""
    from mailgateway import worker_processes

    logs.configure(log_level, log_format=logs.LogFormat(log_format))
    raise SystemExit(worker_processes.main(config_dir, child=child, report_fd=report_fd))
