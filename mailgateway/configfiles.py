"""Write and edit the configuration folder (init, inboxes create, inboxes rename), atomically."""

from __future__ import annotations

import itertools
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

import tomlkit
from pydantic import ValidationError

from mailgateway.config import (
    GATEWAY_FILE,
    INBOXES_DIR,
    USERS_FILE,
    AccountConfig,
    Config,
    GatewayConfig,
    InboxConfig,
    config_error,
    derive_forwarding_address,
    inbox_file,
    load_config,
    slugify,
)
from mailgateway.errors import RefusedError

DEFAULT_INBOX_SLUG = "inbox"
DEFAULT_INBOX_NAME = "Inbox"

_GATEWAY_TEMPLATE = """\
# mailgateway configuration (SPEC §2), written by `mailgateway init`.
# Every section except [account] is optional; the commented keys show the defaults.
# Check changes with `mailgateway check-config`.

[account]
# forwarding and default from addresses live under <subdomain>.<domain>
subdomain = {subdomain}
# the company part of from names, unless an inbox sets fallback_email.from_company
company_name = {company}
plan = "paid"                              # "paid" or "free"
# domain_paid = "inbox.example.net"        # default-from domain for paid accounts
# domain_free = "free.example.net"         # ... and for free ones
# forwarding_domain = "inbox.example.net"  # default: domain_paid

[database]
# an absolute SQLite path, or postgresql+asyncpg://user@host/db;
# the environment variable MAILGATEWAY_DATABASE_URL overrides it
url = {database_url}

# [smtp]
# listen = ["127.0.0.1:2525"]              # "host:port"; IPv6 as "[::1]:2525"
# hostname = "localhost"                   # greeting and Received headers
# max_message_size = "25MiB"
# max_recipients = 100
# max_connections = 200
# max_connections_per_ip = 50
# tls_cert = ""                            # STARTTLS when both are set
# tls_key = ""
# idle_timeout = 300.0                     # seconds
# min_data_rate = 500                      # bytes per second during DATA
# max_received_headers = 50                # more is a mail loop
# max_header_lines = 1000
# max_header_size = "1MiB"
# max_junk_commands = 100                  # NOOP/RSET/VRFY/HELP per session

# [worker]
# batch_size = 20
# max_attempts = 3                         # then the message is held
# poll_interval = 1.0                      # seconds
# retry_delay = 30.0                       # seconds

# [outbound]
# smarthost = "127.0.0.1:25"
# dkim_selector = ""
# dkim_key = ""                            # path of the private key

# [http]
# listen = "127.0.0.1:8025"                # /metrics, /healthz, API

# [notifications]
# webhook_url = ""                         # Slack-style incoming webhook

# [trust]
# authserv_ids = []                        # Authentication-Results from these hosts are believed
# verify_dkim = true
"""

_USERS_TEMPLATE = """\
# Users and teams (SPEC §2). Without any, nobody is an agent yet. Add one [[users]]
# table per agent and one [[teams]] table per team, for example:
#
# [[users]]
# id = "alice"                   # also the <username> of the default from address
# email = "alice@example.com"    # mail from this address is the agent's
# first_name = "Alice"
# last_name = "Nowak"
# seat = "paid"                  # "paid" or "free"
# role = "member"                # "member", "account_access" or "super_admin"
# teams = ["support"]
#
# [[teams]]
# id = "support"
# name = "Support"
"""

_INBOX_TEMPLATE = """\
# An inbox; the file name is its slug. Only name is required; the other keys
# ([access], [fallback_email], [automation], [tickets], [[channels]]) have defaults.
name = {name}
{default}
[fallback_email]
forwarding_address = {address}   # point the team's forwarding here
"""


def init_config(directory: Path, *, subdomain: str, company: str) -> Config:
    """A new configuration folder with the default inbox; refused if DIR is not empty."""
    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise RefusedError(f"{directory} exists and is not empty")
    account = _account(subdomain, company)
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    try:
        _write_initial_files(directory.resolve(), account)
        return load_config(directory, environ={})
    except BaseException:
        _remove_initial_files(directory, remove_directory=created)
        raise


def create_inbox(directory: Path, name: str) -> InboxConfig:
    """Write inboxes/<slug>.toml with the name and a generated forwarding address.

    A lone inbox that is the default only by being alone gets `default = true` written,
    so that it stays the default.
    """
    config = load_config(directory, environ={})
    slug = _free_slug(config, slugify(name))
    address = derive_forwarding_address(slug, config.gateway.account)
    path = config.directory / inbox_file(slug)
    restore = _pin_lone_default(config)
    try:
        write_atomic(path, _inbox_text(name.strip(), address, default=False))
        return load_config(directory, environ={}).inboxes[slug]
    except BaseException:
        path.unlink(missing_ok=True)
        restore()
        raise


def rename_inbox(directory: Path, slug: str, name: str) -> InboxConfig:
    """Change only the name of an inbox; comments and layout of its file are kept."""
    config = load_config(directory, environ={})
    if slug not in config.inboxes:
        raise RefusedError(f"no inbox {slug!r}")
    path = config.directory / inbox_file(slug)
    old_text = path.read_text(encoding="utf-8")
    document = tomlkit.parse(old_text)
    document["name"] = name.strip()
    write_atomic(path, document.as_string())
    try:
        return load_config(directory, environ={}).inboxes[slug]
    except BaseException:
        write_atomic(path, old_text)
        raise


def write_atomic(path: Path, text: str, *, mode: int | None = None) -> None:
    """Replace a file in one step (temp file, fsync, rename); mode defaults to the old one."""
    if mode is None:
        mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o644
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fchmod(stream.fileno(), mode)
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Make a rename in the folder durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _account(subdomain: str, company: str) -> AccountConfig:
    """The [account] of a new folder, validated before anything is written."""
    try:
        gateway = GatewayConfig.model_validate(
            {"account": {"subdomain": subdomain, "company_name": company}}
        )
    except ValidationError as exc:
        raise config_error(GATEWAY_FILE, exc) from None
    return gateway.account


def _write_initial_files(directory: Path, account: AccountConfig) -> None:
    """mailgateway.toml, users.toml and the default inbox."""
    database_url = f"sqlite:///{directory / 'mailgateway.db'}"
    gateway = _GATEWAY_TEMPLATE.format(
        subdomain=_toml(account.subdomain),
        company=_toml(account.company_name),
        database_url=_toml(database_url),
    )
    write_atomic(directory / GATEWAY_FILE, gateway)
    write_atomic(directory / USERS_FILE, _USERS_TEMPLATE)
    (directory / INBOXES_DIR).mkdir()
    address = derive_forwarding_address(DEFAULT_INBOX_SLUG, account)
    inbox = _inbox_text(DEFAULT_INBOX_NAME, address, default=True)
    write_atomic(directory / inbox_file(DEFAULT_INBOX_SLUG), inbox)


def _remove_initial_files(directory: Path, *, remove_directory: bool) -> None:
    """Undo a failed init: the folder was empty before, so everything written goes."""
    for name in (inbox_file(DEFAULT_INBOX_SLUG), USERS_FILE, GATEWAY_FILE):
        (directory / name).unlink(missing_ok=True)
    for folder in (directory / INBOXES_DIR, *((directory,) if remove_directory else ())):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _pin_lone_default(config: Config) -> Callable[[], None]:
    """Write `default = true` into a lone inbox lacking it; returns how to undo that."""
    if len(config.inboxes) != 1:
        return lambda: None
    path = config.directory / inbox_file(config.default_inbox.slug)
    old_text = path.read_text(encoding="utf-8")
    document = tomlkit.parse(old_text)
    if document.get("default") is True:
        return lambda: None
    document["default"] = True
    write_atomic(path, document.as_string())
    return lambda: write_atomic(path, old_text)


def _free_slug(config: Config, base: str) -> str:
    """base, or base-2, base-3 ...: the first slug whose file and address are both unused."""
    taken = {inbox.fallback_email.forwarding_address.lower() for inbox in config.inboxes.values()}
    for number in itertools.count(1):
        suffix = f"-{number}" if number > 1 else ""
        slug = base[: 63 - len(suffix)].rstrip("-") + suffix
        address = derive_forwarding_address(slug, config.gateway.account).lower()
        if not (config.directory / inbox_file(slug)).exists() and address not in taken:
            return slug
    raise AssertionError("unreachable")


def _inbox_text(name: str, address: str, *, default: bool) -> str:
    """The TOML of a new inbox file."""
    default_line = "default = true                   # the account's default inbox\n"
    return _INBOX_TEMPLATE.format(
        name=_toml(name), default=default_line if default else "", address=_toml(address)
    )


def _toml(value: str) -> str:
    """A TOML string literal for the value, escaped."""
    return tomlkit.item(value).as_string()
