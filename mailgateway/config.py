"""Load and validate the configuration folder: mailgateway.toml, users.toml, inboxes/*.toml."""

from __future__ import annotations

import enum
import importlib.util
import ipaddress
import os
import re
import tomllib
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mailgateway.errors import ConfigError

GATEWAY_FILE = "mailgateway.toml"
USERS_FILE = "users.toml"
INBOXES_DIR = "inboxes"
DATABASE_URL_VARIABLE = "MAILGATEWAY_DATABASE_URL"

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DNS_LABEL = re.compile(_LABEL)
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*", re.IGNORECASE)
_EMAIL = re.compile(
    rf"[A-Za-z0-9.!#$%&'*+/=?^_`{{|}}~-]{{1,64}}@{_LABEL}(?:\.{_LABEL})*", re.IGNORECASE
)
_FORWARDING_LOCAL = re.compile(r"[a-z0-9._-]{1,64}", re.IGNORECASE)
_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_REPLY_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_SIZE_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIGNATURE_TOKEN = re.compile(r"\{\{\s*([^}\s]*)\s*\}\}")
SIGNATURE_TOKENS = frozenset({"full_name", "first_name", "last_name"})
_SQLITE_SCHEMES = frozenset({"sqlite", "sqlite+aiosqlite"})
_POSTGRES_SCHEMES = frozenset({"postgresql", "postgresql+asyncpg", "postgres"})


# --- values -----------------------------------------------------------------------------


def parse_size(value: str | int) -> int:
    """Bytes in "25MiB", "10MB", "512KiB", "1048576" or 1048576 (binary and decimal units)."""
    if isinstance(value, bool):
        raise ValueError("must be a size such as 25MiB, 10MB or 1048576")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    match = _SIZE.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"not a size: {value!r} (use e.g. 25MiB, 10MB or 1048576)")
    number, unit = match.groups()
    return int(float(number) * _SIZE_UNITS[(unit or "b").lower()])


def parse_hostport(value: str, *, default_port: int | None = None) -> tuple[str, int]:
    """(host, port) from "host:port", "[v6]:port" or, with a default port, a bare host."""
    host, port_text = _split_hostport(value)
    if not host or not (_HOSTNAME.fullmatch(host) or _is_ip(host)):
        raise ValueError(f"not a host:port address: {value!r}")
    if port_text is None:
        if default_port is None:
            raise ValueError(f"{value!r} has no port (use host:port, e.g. 127.0.0.1:2525)")
        return host, default_port
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"bad port in {value!r} (0-65535)")
    return host, int(port_text)


def _split_hostport(value: str) -> tuple[str, str | None]:
    """Host and port text of an address; IPv6 hosts must be written in brackets."""
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        if not _is_ip(host) or (rest and not rest.startswith(":")):
            raise ValueError(f"not a [IPv6]:port address: {value!r}")
        return host, rest[1:] if rest else None
    if value.count(":") > 1:
        raise ValueError(f"IPv6 addresses need brackets, e.g. [::1]:25, not {value!r}")
    host, sep, port = value.partition(":")
    return host, port if sep else None


def _is_ip(host: str) -> bool:
    """Whether the text is an IPv4 or IPv6 address."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    """Whether a host name or address stays on this machine."""
    if host.lower().rstrip(".") in {"localhost", "localhost.localdomain"}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def slugify(name: str) -> str:
    """An inbox slug for a name: "Sales Team" -> "sales-team"; ASCII, never empty."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")
    return slug[:63].rstrip("-") or "inbox"


def derive_forwarding_address(slug: str, account: AccountConfig) -> str:
    """The generated forwarding address of an inbox: <slug>@<subdomain>.<forwarding_domain>."""
    return f"{slug}@{account.local_domain}"


def _check_email(value: str) -> str:
    """An e-mail address, checked for shape (local@domain)."""
    if not _EMAIL.fullmatch(value):
        raise ValueError(f"not an e-mail address: {value!r}")
    return value


def _check_hostname(value: str) -> str:
    """A DNS host name, lower-cased."""
    if not _HOSTNAME.fullmatch(value):
        raise ValueError(f"not a host name: {value!r}")
    return value.lower()


def _check_host(value: str) -> str:
    """A host name or an IP address (IPv6 with or without brackets)."""
    address = value.strip("[]")
    return address if _is_ip(address) else _check_hostname(value)


def _check_not_blank(value: str) -> str:
    """Text that is not empty or only spaces."""
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _check_id(value: str) -> str:
    """A user or team id: lower-case letters, digits, '.', '_' and '-'."""
    if not _ID.fullmatch(value):
        raise ValueError(f"{value!r} is not an id (a-z, 0-9, '.', '_', '-'; up to 64)")
    return value


def _check_endpoint(value: str) -> str:
    """A "host:port" listen address."""
    parse_hostport(value)
    return value


def _check_size(value: object) -> object:
    """Sizes may be written "25MiB"; other types are left for the int check to refuse."""
    if isinstance(value, str | int) and not isinstance(value, bool):
        return parse_size(value)
    return value


def _existing_file(value: str | Path, info: ValidationInfo) -> Path:
    """A readable file; relative paths are relative to the configuration folder."""
    path = Path(value)
    directory = (info.context or {}).get("directory")
    if not path.is_absolute() and isinstance(directory, Path):
        path = directory / path
    if not path.is_file():
        raise ValueError(f"file not found: {str(path)!r}")
    if not os.access(path, os.R_OK):
        raise ValueError(f"file not readable: {str(path)!r}")
    return path


Count = Annotated[int, Strict(), Field(gt=0)]
Seconds = Annotated[float, Strict(), Field(gt=0)]
Delay = Annotated[float, Strict(), Field(ge=0)]
Size = Annotated[int, BeforeValidator(_check_size), Strict(), Field(gt=0)]
Flag = Annotated[bool, Strict()]
Email = Annotated[str, AfterValidator(_check_email)]
Hostname = Annotated[str, AfterValidator(_check_hostname)]
Host = Annotated[str, AfterValidator(_check_host)]
Endpoint = Annotated[str, AfterValidator(_check_endpoint)]
Text = Annotated[str, AfterValidator(_check_not_blank)]
Id = Annotated[str, AfterValidator(_check_id)]
_M = TypeVar("_M", bound=BaseModel)


# --- enumerations -----------------------------------------------------------------------


class Plan(enum.StrEnum):
    """The account's plan; it picks the domain of default from addresses."""

    PAID = "paid"
    FREE = "free"


class Seat(enum.StrEnum):
    """A user's seat; only paid seats can be auto-assigned."""

    PAID = "paid"
    FREE = "free"


class Role(enum.StrEnum):
    """What a user may see beyond the inboxes they are a member of."""

    MEMBER = "member"
    ACCOUNT_ACCESS = "account_access"
    SUPER_ADMIN = "super_admin"


class AccessMode(enum.StrEnum):
    """Who can work in an inbox."""

    EVERYONE = "everyone"
    SPECIFIC = "specific"


class ChannelStatus(enum.StrEnum):
    """Whether a channel sends and its incoming mail is shown."""

    ENABLED = "enabled"
    DISABLED = "disabled"


class FromNameMode(enum.StrEnum):
    """How the from name of replies is built."""

    AGENT_AND_COMPANY = "agent_and_company"
    COMPANY = "company"


class SignatureFormat(enum.StrEnum):
    """Whether the team signature is plain text or HTML."""

    TEXT = "text"
    HTML = "html"


class AssignTo(enum.StrEnum):
    """Whom automation assigns incoming conversations to."""

    SPECIFIC = "specific"
    CONTACT_OWNER = "contact_owner"


class TlsMode(enum.StrEnum):
    """How a connection to a team mail server is protected."""

    IMPLICIT = "implicit"
    STARTTLS = "starttls"
    NONE = "none"


class ChannelType(enum.StrEnum):
    """The kind of a team email channel."""

    IMAP = "imap"


# --- mailgateway.toml -------------------------------------------------------------------


class _Model(BaseModel):
    """Base of every configuration model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class AccountConfig(_Model):
    """[account]: who the gateway serves and which domains its addresses live under."""

    subdomain: str
    company_name: Text
    plan: Plan = Plan.PAID
    domain_paid: Hostname = "inbox.example.net"
    domain_free: Hostname = "free.example.net"
    forwarding_domain: Hostname = ""

    @model_validator(mode="before")
    @classmethod
    def _forwarding_domain_default(cls, data: Any) -> Any:
        """forwarding_domain defaults to domain_paid."""
        if isinstance(data, dict) and "forwarding_domain" not in data:
            return {**data, "forwarding_domain": data.get("domain_paid", "inbox.example.net")}
        return data

    @field_validator("subdomain")
    @classmethod
    def _subdomain_is_label(cls, value: str) -> str:
        """The subdomain is one lower-case DNS label."""
        if not _DNS_LABEL.fullmatch(value):
            raise ValueError(f"{value!r} is not a DNS label (a-z, 0-9, '-'; up to 63)")
        return value

    @property
    def local_domain(self) -> str:
        """The domain of the generated forwarding addresses."""
        return f"{self.subdomain}.{self.forwarding_domain}"

    @property
    def from_domain(self) -> str:
        """The domain of default from addresses: <subdomain>.<domain_paid|domain_free>."""
        domain = self.domain_paid if self.plan is Plan.PAID else self.domain_free
        return f"{self.subdomain}.{domain}"


class SmtpConfig(_Model):
    """[smtp]: the intake listener and its limits."""

    listen: list[Endpoint] = Field(default_factory=lambda: ["127.0.0.1:2525"], min_length=1)
    hostname: Hostname = "localhost"
    max_message_size: Size = 25 * 2**20
    max_recipients: Count = 100
    max_connections: Count = 200
    max_connections_per_ip: Count = 50
    tls_cert: str = ""
    tls_key: str = Field(default="", validate_default=True)
    idle_timeout: Seconds = 300.0
    min_data_rate: Count = 500
    max_received_headers: Count = 50
    max_header_lines: Count = 1000
    max_header_size: Size = 2**20
    max_junk_commands: Count = 100
    max_queue_depth: Count = 100_000

    @field_validator("tls_cert")
    @classmethod
    def _cert_exists(cls, value: str, info: ValidationInfo) -> str:
        """A certificate, when set, is a readable file."""
        return str(_existing_file(value, info)) if value else value

    @field_validator("tls_key")
    @classmethod
    def _key_pairs_cert(cls, value: str, info: ValidationInfo) -> str:
        """tls_cert and tls_key are set together, and the key is a readable file."""
        if "tls_cert" in info.data and bool(value) != bool(info.data["tls_cert"]):
            raise ValueError("tls_cert and tls_key must be set together (or both left empty)")
        return str(_existing_file(value, info)) if value else value

    @property
    def endpoints(self) -> list[tuple[str, int]]:
        """The listen addresses as (host, port)."""
        return [parse_hostport(address) for address in self.listen]

    @property
    def tls_enabled(self) -> bool:
        """Whether STARTTLS is offered."""
        return bool(self.tls_cert)


class DatabaseConfig(_Model):
    """[database]: where conversations and queues are stored (the URL may hold a password)."""

    url: str = Field(default="sqlite:////var/lib/mailgateway/mailgateway.db", repr=False)

    @field_validator("url")
    @classmethod
    def _supported_url(cls, value: str) -> str:
        """SQLite with an absolute path, or PostgreSQL."""
        scheme, sep, rest = value.partition("://")
        if not sep:
            raise ValueError("must be sqlite:////ABSOLUTE/PATH or postgresql+asyncpg://...")
        if scheme in _SQLITE_SCHEMES:
            path = rest[1:].partition("?")[0] if rest.startswith("/") else ""
            if not path.startswith("/"):
                raise ValueError("must be an absolute path (sqlite:////var/lib/mailgateway/x.db)")
        elif scheme not in _POSTGRES_SCHEMES:
            raise ValueError(f"unsupported database {scheme!r}: use sqlite or postgresql")
        elif not rest:
            raise ValueError("postgresql URL has no host or database")
        return value

    @property
    def is_sqlite(self) -> bool:
        """Whether the database is SQLite."""
        return self.url.partition("://")[0] in _SQLITE_SCHEMES

    @property
    def async_url(self) -> str:
        """The SQLAlchemy URL with the async driver (aiosqlite or asyncpg)."""
        rest = self.url.partition("://")[2]
        driver = "sqlite+aiosqlite" if self.is_sqlite else "postgresql+asyncpg"
        return f"{driver}://{rest}"

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite database file, or None for PostgreSQL."""
        if not self.is_sqlite:
            return None
        return Path(self.url.partition("://")[2][1:].partition("?")[0])


class WorkerConfig(_Model):
    """[worker]: how the queue workers claim and retry rows."""

    batch_size: Count = 20
    max_attempts: Count = 3
    poll_interval: Seconds = 1.0
    retry_delay: Delay = 30.0
    lease: Seconds = 600.0
    processes: Annotated[int, Strict(), Field(ge=0, le=64)] = Field(
        default_factory=lambda: 1 if (os.cpu_count() or 1) >= 2 else 0
    )


class OutboundConfig(_Model):
    """[outbound]: the smarthost, the DKIM signing key and the retry schedule of replies."""

    smarthost: str = "127.0.0.1:25"
    dkim_selector: str = ""
    dkim_key: str = ""
    dkim_domain: str = ""
    timeout: Seconds = 60.0
    retry_delay: Seconds = 300.0
    max_retry_delay: Seconds = 3600.0
    give_up_after: Seconds = 5 * 86400.0

    @field_validator("smarthost")
    @classmethod
    def _smarthost_address(cls, value: str) -> str:
        """host or host:port."""
        parse_hostport(value, default_port=25)
        return value

    @field_validator("dkim_selector")
    @classmethod
    def _selector_shape(cls, value: str) -> str:
        """Empty, or DNS labels (the name before ._domainkey.)."""
        if value and not _HOSTNAME.fullmatch(value):
            raise ValueError(f"{value!r} is not a DKIM selector (DNS labels, e.g. mg1)")
        return value

    @field_validator("dkim_key")
    @classmethod
    def _key_readable(cls, value: str, info: ValidationInfo) -> str:
        """The key, when set, is a readable file, and a selector names it in DNS."""
        if not value:
            return value
        if not info.data.get("dkim_selector"):
            raise ValueError("dkim_selector must be set when dkim_key is")
        return str(_existing_file(value, info))

    @field_validator("dkim_domain")
    @classmethod
    def _domain_shape(cls, value: str) -> str:
        """Empty (sign as the From address's domain) or a host name."""
        return _check_hostname(value) if value else value

    @property
    def smarthost_endpoint(self) -> tuple[str, int]:
        """The smarthost as (host, port); the port defaults to 25."""
        return parse_hostport(self.smarthost, default_port=25)


class HttpConfig(_Model):
    """[http]: the /metrics, /healthz and API listener."""

    listen: Endpoint = "127.0.0.1:8025"

    @property
    def endpoint(self) -> tuple[str, int]:
        """The listen address as (host, port)."""
        return parse_hostport(self.listen)


class NotificationsConfig(_Model):
    """[notifications]: the chat webhook for new and assigned conversations (a secret URL)."""

    webhook_url: str = Field(default="", repr=False)
    max_attempts: Count = 10
    retry_delay: Seconds = 5.0
    timeout: Seconds = 10.0

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        """Empty, or an http(s) URL."""
        parts = urlsplit(value)
        if value and (parts.scheme not in {"http", "https"} or not parts.netloc):
            raise ValueError("must be an http:// or https:// URL")
        return value


class TrustConfig(_Model):
    """[trust]: whose Authentication-Results headers are believed."""

    authserv_ids: list[Text] = Field(default_factory=list)
    verify_dkim: Flag = True


class ImapConfig(_Model):
    """[imap]: timing of the IMAP channel pollers (shared by every channel)."""

    timeout: Seconds = 60.0
    idle_renew: Annotated[float, Strict(), Field(gt=0, le=1740)] = 1500.0
    reconnect_min: Seconds = 1.0
    reconnect_max: Seconds = 300.0


class EventLoop(enum.StrEnum):
    """Which asyncio event loop the daemon runs on."""

    UVLOOP = "uvloop"
    ASYNCIO = "asyncio"


def uvloop_installed() -> bool:
    """Whether the uvloop package can be imported."""
    return importlib.util.find_spec("uvloop") is not None


def _loop_available(value: EventLoop) -> EventLoop:
    """uvloop only when it is installed."""
    if value is EventLoop.UVLOOP and not uvloop_installed():
        raise ValueError('uvloop is not installed (pip install uvloop, or use "asyncio")')
    return value


class ServerConfig(_Model):
    """[server]: the daemon's process settings."""

    event_loop: Annotated[EventLoop, AfterValidator(_loop_available)] = Field(
        default_factory=lambda: EventLoop.UVLOOP if uvloop_installed() else EventLoop.ASYNCIO
    )


class GatewayConfig(_Model):
    """mailgateway.toml."""

    account: AccountConfig
    smtp: SmtpConfig = Field(default_factory=SmtpConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    outbound: OutboundConfig = Field(default_factory=OutboundConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    notifications: NotificationsConfig = Field(default_factory=NotificationsConfig)
    trust: TrustConfig = Field(default_factory=TrustConfig)
    imap: ImapConfig = Field(default_factory=ImapConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)


# --- users.toml -------------------------------------------------------------------------


class UserConfig(_Model):
    """One [[users]] entry."""

    id: Id
    email: Email
    first_name: Text
    last_name: str
    seat: Seat = Seat.PAID
    role: Role = Role.MEMBER
    teams: list[str] = Field(default_factory=list)

    @property
    def full_name(self) -> str:
        """First and last name."""
        return f"{self.first_name} {self.last_name}".strip()


class TeamConfig(_Model):
    """One [[teams]] entry."""

    id: Id
    name: Text


class UsersFile(_Model):
    """users.toml."""

    users: list[UserConfig] = Field(default_factory=list)
    teams: list[TeamConfig] = Field(default_factory=list)


# --- inboxes/*.toml ---------------------------------------------------------------------


class AccessConfig(_Model):
    """[access]: who can work in the inbox."""

    mode: AccessMode = AccessMode.EVERYONE
    users: list[str] = Field(default_factory=list)
    teams: list[str] = Field(default_factory=list)


class FallbackEmailConfig(_Model):
    """[fallback_email]: the forwarding address and how replies from it look.

    Loaded configurations always have forwarding_address and from_company filled in.
    """

    forwarding_address: str = ""
    status: ChannelStatus = ChannelStatus.ENABLED
    send_enabled: Flag = False
    from_name: FromNameMode = FromNameMode.AGENT_AND_COMPANY
    from_company: Text = ""
    from_address: str = "default"
    signature_format: SignatureFormat = SignatureFormat.TEXT
    signature: str = ""
    original_sender_of_forwards: Flag = True

    @field_validator("forwarding_address")
    @classmethod
    def _plain_address(cls, value: str) -> str:
        """local@domain, with no '+' (that separates the reply token)."""
        local = _check_email(value).rpartition("@")[0]
        if not _FORWARDING_LOCAL.fullmatch(local):
            raise ValueError("the part before '@' may only hold a-z, 0-9, '.', '_', '-'")
        return value

    @field_validator("from_address")
    @classmethod
    def _default_or_email(cls, value: str) -> str:
        """The word "default" or an e-mail address."""
        return value if value == "default" else _check_email(value)

    @field_validator("signature")
    @classmethod
    def _known_tokens(cls, value: str) -> str:
        """Only {{ full_name }}, {{ first_name }} and {{ last_name }} are tokens."""
        for token in _SIGNATURE_TOKEN.findall(value):
            if token not in SIGNATURE_TOKENS:
                known = _names(SIGNATURE_TOKENS)
                raise ValueError(f"unknown token {{{{ {token} }}}} (use {known})")
        return value


class AutomationConfig(_Model):
    """[automation]: auto-assignment of incoming conversations."""

    auto_assign: Flag = False
    assign_to: AssignTo = AssignTo.SPECIFIC
    users: list[str] = Field(default_factory=list)
    teams: list[str] = Field(default_factory=list)


class TicketsConfig(_Model):
    """[tickets]: incoming conversations as support tickets."""

    enabled: Flag = False
    pipeline: Text = "Support Pipeline"
    stage: Text = "New"
    owner: str = "conversation_owner"


class MailServerConfig(_Model):
    """The imap or smtp server of a team email channel."""

    host: Host
    port: Annotated[int, Strict(), Field(gt=0, le=65535)]
    tls: TlsMode
    user: Text
    password_file: Path
    ca_file: str = ""

    @field_validator("tls")
    @classmethod
    def _plaintext_only_on_loopback(cls, value: TlsMode, info: ValidationInfo) -> TlsMode:
        """tls = "none" sends the password in clear: only allowed to this machine."""
        host = info.data.get("host")
        if value is TlsMode.NONE and host is not None and not is_loopback(host):
            raise ValueError('"none" is only allowed for a loopback host (127.0.0.1, ::1)')
        return value

    @field_validator("password_file")
    @classmethod
    def _readable(cls, value: Path, info: ValidationInfo) -> Path:
        """The password file exists and can be read (its content is not read here)."""
        return _existing_file(value, info)

    @field_validator("ca_file")
    @classmethod
    def _ca_readable(cls, value: str, info: ValidationInfo) -> str:
        """A CA bundle to trust instead of the system's (a private server), when set."""
        return str(_existing_file(value, info)) if value else value

    def read_password(self) -> str:
        """The password, read from its file now (never store or log it)."""
        return self.password_file.read_text(encoding="utf-8").rstrip("\r\n")


def _check_folder(value: str) -> str:
    """An IMAP folder name: printable ASCII (quoted on the wire), not empty."""
    if not value.strip() or not all(" " <= char <= "~" for char in value):
        raise ValueError(f"{value!r} is not a folder name (printable ASCII, not empty)")
    return value


def _check_optional_folder(value: str) -> str:
    """Empty, or an IMAP folder name."""
    return _check_folder(value) if value else value


Folder = Annotated[str, AfterValidator(_check_folder)]
OptionalFolder = Annotated[str, AfterValidator(_check_optional_folder)]


class ChannelConfig(_Model):
    """One [[channels]] entry: a team email account (IMAP in, SMTP out)."""

    type: ChannelType = ChannelType.IMAP
    address: Email
    status: ChannelStatus = ChannelStatus.ENABLED
    imap: MailServerConfig
    smtp: MailServerConfig
    folder: Folder = "INBOX"
    move_to: OptionalFolder = ""
    idle: Flag = True
    poll_interval: Seconds = 60.0
    sent_folder: OptionalFolder = ""

    @field_validator("move_to")
    @classmethod
    def _move_elsewhere(cls, value: str, info: ValidationInfo) -> str:
        """Fetched mail is moved to another folder than the one watched."""
        if value and value == info.data.get("folder"):
            raise ValueError("must differ from folder (leave empty to mark mail seen instead)")
        return value

    @field_validator("sent_folder")
    @classmethod
    def _sent_elsewhere(cls, value: str, info: ValidationInfo) -> str:
        """Copies of sent replies never go to the watched folder (they would come back in)."""
        if value and value == info.data.get("folder"):
            raise ValueError("must differ from folder (sent replies would be fetched as new mail)")
        return value


class InboxConfig(_Model):
    """inboxes/<slug>.toml; only name is required."""

    slug: str
    name: Text
    default: Flag = False
    access: AccessConfig = Field(default_factory=AccessConfig)
    fallback_email: FallbackEmailConfig = Field(default_factory=FallbackEmailConfig)
    automation: AutomationConfig = Field(default_factory=AutomationConfig)
    tickets: TicketsConfig = Field(default_factory=TicketsConfig)
    channels: list[ChannelConfig] = Field(default_factory=list)

    @field_validator("slug")
    @classmethod
    def _slug_shape(cls, value: str) -> str:
        """Slugs are lower-case letters, digits and '-'."""
        if not _SLUG.fullmatch(value):
            raise ValueError(f"{value!r} is not a slug (a-z, 0-9, '-'; up to 63)")
        return value


# --- the loaded configuration -----------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """The whole validated configuration folder."""

    directory: Path
    gateway: GatewayConfig
    users: Mapping[str, UserConfig]
    teams: Mapping[str, TeamConfig]
    inboxes: Mapping[str, InboxConfig]
    _by_address: Mapping[str, InboxConfig] = field(init=False, repr=False, compare=False)
    _by_email: Mapping[str, UserConfig] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Index inboxes by forwarding address and users by e-mail."""
        by_address = {i.fallback_email.forwarding_address.lower(): i for i in self.inboxes.values()}
        by_email = {user.email.lower(): user for user in self.users.values()}
        object.__setattr__(self, "_by_address", MappingProxyType(by_address))
        object.__setattr__(self, "_by_email", MappingProxyType(by_email))

    @property
    def default_inbox(self) -> InboxConfig:
        """The account's default inbox."""
        return next(inbox for inbox in self.inboxes.values() if inbox.default)

    def local_domains(self) -> frozenset[str]:
        """Domains whose mail the gateway accepts (lower-case)."""
        domains = {address.rpartition("@")[2] for address in self._by_address}
        return frozenset({*domains, self.gateway.account.local_domain.lower()})

    def inbox_by_address(self, address: str) -> tuple[InboxConfig, str | None] | None:
        """The inbox and reply token (or None) of a recipient address; None when unknown."""
        local, at, domain = address.strip().rpartition("@")
        if not at:
            return None
        inbox = self._by_address.get(f"{local}@{domain}".lower())
        if inbox is not None:
            return inbox, None
        base, plus, token = local.partition("+")
        inbox = self._by_address.get(f"{base}@{domain}".lower())
        if inbox is None or not plus or not _REPLY_TOKEN.fullmatch(token):
            return None
        return inbox, token

    def user_by_email(self, email: str) -> UserConfig | None:
        """The user with this e-mail address (case-insensitive), or None."""
        return self._by_email.get(email.strip().lower())


# --- loading ----------------------------------------------------------------------------


def load_config(directory: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate the whole configuration folder; raise ConfigError on any problem."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(str(directory), "", "configuration folder not found")
    context = {"directory": directory}
    gateway = _validate(GatewayConfig, _read(directory, GATEWAY_FILE), GATEWAY_FILE, context)
    gateway = _override_database(gateway, os.environ if environ is None else environ)
    people = _load_users(directory, context)
    inboxes = _load_inboxes(directory, gateway.account, context)
    config = Config(
        directory=directory,
        gateway=gateway,
        users=MappingProxyType({user.id: user for user in people.users}),
        teams=MappingProxyType({team.id: team for team in people.teams}),
        inboxes=MappingProxyType(inboxes),
    )
    _check_inboxes(config)
    return config


def _read(directory: Path, name: str, *, required: bool = True) -> dict[str, Any]:
    """The parsed TOML of one file; a missing optional file reads as empty."""
    path = directory / name
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        if required:
            raise ConfigError(name, "", "file not found") from None
        return {}
    except OSError as exc:
        raise ConfigError(name, "", f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(name, "", "not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(name, "", f"invalid TOML: {exc}") from None


def _validate(
    model: type[_M], data: Mapping[str, Any], file: str, context: Mapping[str, Any]
) -> _M:
    """The model for the data, or a ConfigError naming the file and the key."""
    try:
        return model.model_validate(data, context=dict(context))
    except ValidationError as exc:
        raise config_error(file, exc) from None


def _override_database(gateway: GatewayConfig, environ: Mapping[str, str]) -> GatewayConfig:
    """database.url replaced by $MAILGATEWAY_DATABASE_URL when that is set."""
    url = environ.get(DATABASE_URL_VARIABLE, "")
    if not url:
        return gateway
    try:
        database = DatabaseConfig(url=url)
    except ValidationError as exc:
        raise ConfigError("environment", DATABASE_URL_VARIABLE, _problem(exc)) from None
    return gateway.model_copy(update={"database": database})


def _load_users(directory: Path, context: Mapping[str, Any]) -> UsersFile:
    """users.toml, with ids and e-mails unique and team references resolved."""
    people = _validate(UsersFile, _read(directory, USERS_FILE, required=False), USERS_FILE, context)
    _require_unique(USERS_FILE, "teams", "id", [team.id for team in people.teams])
    _require_unique(USERS_FILE, "users", "id", [user.id for user in people.users])
    _require_unique(USERS_FILE, "users", "email", [user.email.lower() for user in people.users])
    team_ids = {team.id for team in people.teams}
    for index, user in enumerate(people.users):
        _require_known(USERS_FILE, f"users[{index}].teams", "team", user.teams, team_ids)
    return people


def _load_inboxes(
    directory: Path, account: AccountConfig, context: Mapping[str, Any]
) -> dict[str, InboxConfig]:
    """Every inboxes/*.toml by slug, sorted; a lone inbox is the default."""
    folder = directory / INBOXES_DIR
    paths = sorted(p for p in folder.glob("*.toml") if p.is_file() and not p.name.startswith("."))
    inboxes = {p.stem: _load_inbox(directory, p.stem, account, context) for p in paths}
    if not inboxes:
        raise ConfigError(f"{INBOXES_DIR}/", "", "no inbox: add at least one inboxes/<slug>.toml")
    if len(inboxes) == 1:
        slug = next(iter(inboxes))
        inboxes[slug] = inboxes[slug].model_copy(update={"default": True})
    return inboxes


def _load_inbox(
    directory: Path, slug: str, account: AccountConfig, context: Mapping[str, Any]
) -> InboxConfig:
    """One inbox file, with the derived forwarding address and company filled in."""
    file = inbox_file(slug)
    if not _SLUG.fullmatch(slug):
        raise ConfigError(file, "", "file name must be a slug (a-z, 0-9, '-') plus .toml")
    data = _read(directory, file)
    if "slug" in data:
        raise ConfigError(file, "slug", "unknown key (the slug is the file name)")
    fallback = data.get("fallback_email", {})
    if isinstance(fallback, dict):
        fallback.setdefault("forwarding_address", derive_forwarding_address(slug, account))
        fallback.setdefault("from_company", account.company_name)
        data["fallback_email"] = fallback
    return _validate(InboxConfig, {**data, "slug": slug}, file, context)


def inbox_file(slug: str) -> str:
    """The path of an inbox's file relative to the configuration folder."""
    return f"{INBOXES_DIR}/{slug}.toml"


# --- editing (implemented in configfiles, which builds on this module) ----------------


def init_config(directory: Path, *, subdomain: str, company: str) -> Config:
    """A new configuration folder with the default inbox; refused if DIR is not empty."""
    from mailgateway import configfiles

    return configfiles.init_config(directory, subdomain=subdomain, company=company)


def create_inbox(directory: Path, name: str) -> InboxConfig:
    """Write inboxes/<slug>.toml with the name and a generated forwarding address."""
    from mailgateway import configfiles

    return configfiles.create_inbox(directory, name)


def rename_inbox(directory: Path, slug: str, name: str) -> InboxConfig:
    """Change only the name of an inbox; comments and layout of its file are kept."""
    from mailgateway import configfiles

    return configfiles.rename_inbox(directory, slug, name)


# --- rules across files -----------------------------------------------------------------


def _check_inboxes(config: Config) -> None:
    """Rules that span inboxes and users.toml."""
    _check_default(config.inboxes)
    _check_forwarding_addresses(config)
    _check_from_names(config.inboxes)
    _check_channel_addresses(config.inboxes)
    for inbox in config.inboxes.values():
        _check_references(inbox, config)


def _check_default(inboxes: Mapping[str, InboxConfig]) -> None:
    """Exactly one inbox is the default."""
    defaults = [slug for slug, inbox in inboxes.items() if inbox.default]
    if not defaults:
        raise ConfigError(f"{INBOXES_DIR}/", "default", "no inbox has default = true (one must)")
    if len(defaults) > 1:
        first = inbox_file(defaults[0])
        raise ConfigError(inbox_file(defaults[1]), "default", f"{first} is the default already")


def _check_forwarding_addresses(config: Config) -> None:
    """Forwarding addresses are on the account's local domain and used once."""
    local_domain = config.gateway.account.local_domain
    seen: dict[str, str] = {}
    for slug, inbox in config.inboxes.items():
        address = inbox.fallback_email.forwarding_address.lower()
        key = "fallback_email.forwarding_address"
        if address.rpartition("@")[2] != local_domain:
            raise ConfigError(inbox_file(slug), key, f"must be an address @{local_domain}")
        if address in seen:
            raise ConfigError(inbox_file(slug), key, f"{address} is used by {seen[address]} too")
        seen[address] = inbox_file(slug)


def _check_from_names(inboxes: Mapping[str, InboxConfig]) -> None:
    """The from name of every sending fallback email is unique."""
    seen: dict[tuple[str, str], str] = {}
    for slug, inbox in inboxes.items():
        fallback = inbox.fallback_email
        if not fallback.send_enabled:
            continue
        key = (fallback.from_name.value, fallback.from_company.strip().casefold())
        if key in seen:
            problem = f"from name {fallback.from_company!r} ({key[0]}) is used by {seen[key]} too"
            raise ConfigError(inbox_file(slug), "fallback_email.from_company", problem)
        seen[key] = inbox_file(slug)


def _check_channel_addresses(inboxes: Mapping[str, InboxConfig]) -> None:
    """A team mailbox is connected to one inbox only, once."""
    seen: dict[str, str] = {}
    for slug, inbox in inboxes.items():
        for index, channel in enumerate(inbox.channels):
            address = channel.address.lower()
            if address in seen:
                problem = f"{address} is connected in {seen[address]} too"
                raise ConfigError(inbox_file(slug), f"channels[{index}].address", problem)
            seen[address] = inbox_file(slug)


def _check_references(inbox: InboxConfig, config: Config) -> None:
    """Users and teams named by an inbox exist."""
    file, users, teams = inbox_file(inbox.slug), set(config.users), set(config.teams)
    _require_known(file, "access.users", "user", inbox.access.users, users)
    _require_known(file, "access.teams", "team", inbox.access.teams, teams)
    _require_known(file, "automation.users", "user", inbox.automation.users, users)
    _require_known(file, "automation.teams", "team", inbox.automation.teams, teams)
    owner = inbox.tickets.owner
    if owner != "conversation_owner":
        _require_known(file, "tickets.owner", "user", [owner], users)
    automation = inbox.automation
    specific = automation.auto_assign and automation.assign_to is AssignTo.SPECIFIC
    if specific and not (automation.users or automation.teams):
        problem = 'auto_assign to "specific" needs at least one user or team'
        raise ConfigError(file, "automation.users", problem)


def _require_known(file: str, key: str, kind: str, names: Iterable[str], known: set[str]) -> None:
    """Every name is one of the known ones."""
    for name in names:
        if name not in known:
            raise ConfigError(file, key, f"unknown {kind} {name!r}")


def _require_unique(file: str, table: str, key: str, values: list[str]) -> None:
    """No value appears twice in a list of tables."""
    seen: set[str] = set()
    for index, value in enumerate(values):
        if value in seen:
            raise ConfigError(file, f"{table}[{index}].{key}", f"duplicate {key} {value!r}")
        seen.add(value)


# --- pydantic errors as one line --------------------------------------------------------

_TYPE_NAMES = {
    "int_type": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "list_type": "a list",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "dict_type": "a table",
}


def config_error(file: str, exc: ValidationError) -> ConfigError:
    """The first validation error as a ConfigError naming the file and the dotted key."""
    error = exc.errors(include_url=False)[0]
    return ConfigError(file, dotted_key(error["loc"]), _problem(exc))


def dotted_key(loc: Iterable[int | str]) -> str:
    """("users", 2, "seat") -> "users[2].seat"."""
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else f".{part}" if key else str(part)
    return key


def _problem(exc: ValidationError) -> str:
    """What is wrong, in words, for the first error (values echoed only for enumerations)."""
    error = exc.errors(include_url=False)[0]
    kind, ctx = error["type"], error.get("ctx", {})
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required, but missing"
    if kind == "enum":
        return f"must be {ctx['expected']}, not {error['input']!r}"
    if kind == "value_error":
        return str(ctx["error"])
    if kind in _TYPE_NAMES:
        return f"must be {_TYPE_NAMES[kind]}"
    if kind in {"greater_than", "less_than_equal"}:
        return f"must be {'>' if kind == 'greater_than' else '<='} {ctx.get('gt', ctx.get('le'))}"
    if kind == "too_short":
        return f"needs at least {ctx['min_length']} item(s)"
    return str(error["msg"])


def _names(names: Iterable[str]) -> str:
    """A sorted, comma-separated list of names."""
    return ", ".join(sorted(names))
