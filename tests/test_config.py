"""Tests of loading and validating the configuration folder (mailgateway.config)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mailgateway.config import (
    AccessMode,
    AccountConfig,
    ChannelStatus,
    Config,
    DatabaseConfig,
    FromNameMode,
    Plan,
    Role,
    Seat,
    TlsMode,
    derive_forwarding_address,
    load_config,
    parse_hostport,
    parse_size,
    slugify,
)
from mailgateway.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "example"

GATEWAY = """
[account]
subdomain = "acme"
company_name = "Acme Inc."
"""

USERS = """
[[users]]
id = "alice"
email = "Alice@Acme.example"
first_name = "Alice"
last_name = "Nowak"
teams = ["support"]

[[users]]
id = "bob"
email = "bob@acme.example"
first_name = "Bob"
last_name = "Smith"

[[teams]]
id = "support"
name = "Support"
"""


def write_config(
    directory: Path,
    inboxes: dict[str, str] | None = None,
    *,
    gateway: str = GATEWAY,
    users: str | None = USERS,
) -> Path:
    """Write a configuration folder; inboxes maps slug to file text."""
    (directory / "inboxes").mkdir(parents=True)
    (directory / "mailgateway.toml").write_text(textwrap.dedent(gateway))
    if users is not None:
        (directory / "users.toml").write_text(textwrap.dedent(users))
    for slug, text in (inboxes or {"support": 'name = "Support"\n'}).items():
        (directory / "inboxes" / f"{slug}.toml").write_text(textwrap.dedent(text))
    return directory


def load_error(directory: Path) -> ConfigError:
    """The ConfigError that loading the folder raises."""
    with pytest.raises(ConfigError) as caught:
        load_config(directory, environ={})
    return caught.value


def loaded(directory: Path, inboxes: dict[str, str] | None = None, **kwargs: str) -> Config:
    """Write a configuration folder and load it."""
    return load_config(write_config(directory, inboxes, **kwargs), environ={})


# --- the example and the defaults -------------------------------------------------------


def test_example_config_loads() -> None:
    """config/example loads as documented: two inboxes, three users, support is the default."""
    config = load_config(EXAMPLE, environ={})
    assert list(config.inboxes) == ["sales", "support"]
    assert list(config.users) == ["alice", "bob", "carol"]
    assert config.default_inbox.slug == "support"
    assert config.users["carol"].seat is Seat.FREE
    assert config.users["carol"].role is Role.ACCOUNT_ACCESS
    assert config.inboxes["support"].fallback_email.from_company == "Acme Support"
    assert config.gateway.smtp.hostname == "mx.example.net"


def test_inbox_with_only_a_name_takes_every_default(tmp_path: Path) -> None:
    """An inbox file holding only a name is valid and gets the documented defaults."""
    inbox = loaded(tmp_path).inboxes["support"]
    assert inbox.default is True  # the lone inbox is the default
    assert inbox.access.mode is AccessMode.EVERYONE
    assert inbox.fallback_email.status is ChannelStatus.ENABLED
    assert inbox.fallback_email.send_enabled is False
    assert inbox.fallback_email.from_name is FromNameMode.AGENT_AND_COMPANY
    assert inbox.fallback_email.from_company == "Acme Inc."
    assert inbox.fallback_email.from_address == "default"
    assert inbox.fallback_email.original_sender_of_forwards is True
    assert inbox.automation.auto_assign is False
    assert inbox.tickets.enabled is False
    assert inbox.channels == []


def test_gateway_defaults(tmp_path: Path) -> None:
    """A mailgateway.toml with only [account] gets the documented defaults, sizes in bytes."""
    gateway = loaded(tmp_path).gateway
    assert gateway.account.plan is Plan.PAID
    assert gateway.account.forwarding_domain == "inbox.example.net"
    assert gateway.smtp.endpoints == [("127.0.0.1", 2525)]
    assert gateway.smtp.max_message_size == 25 * 1024 * 1024
    assert gateway.smtp.max_header_size == 1024 * 1024
    assert gateway.database.url == "sqlite:////var/lib/mailgateway/mailgateway.db"
    assert gateway.worker.retry_delay == 30.0
    assert gateway.outbound.smarthost_endpoint == ("127.0.0.1", 25)
    assert gateway.http.endpoint == ("127.0.0.1", 8025)
    assert gateway.trust.verify_dkim is True


def test_forwarding_address_is_derived_from_slug_subdomain_and_domain(tmp_path: Path) -> None:
    """Without forwarding_address an inbox gets <slug>@<subdomain>.<forwarding_domain>."""
    gateway = GATEWAY + 'forwarding_domain = "in.example.org"\n'
    config = loaded(tmp_path, {"sales-team": 'name = "Sales"\n'}, gateway=gateway)
    address = config.inboxes["sales-team"].fallback_email.forwarding_address
    assert address == "sales-team@acme.in.example.org"
    assert derive_forwarding_address("x", config.gateway.account) == "x@acme.in.example.org"


def test_from_domain_follows_the_plan() -> None:
    """Default from addresses use domain_paid on a paid plan and domain_free on a free one."""
    paid = AccountConfig(subdomain="acme", company_name="Acme")
    free = AccountConfig(subdomain="acme", company_name="Acme", plan=Plan.FREE)
    assert paid.from_domain == "acme.inbox.example.net"
    assert free.from_domain == "acme.free.example.net"


def test_users_file_is_optional(tmp_path: Path) -> None:
    """Without users.toml there are no users and no teams."""
    config = loaded(tmp_path, users=None)
    assert dict(config.users) == {} and dict(config.teams) == {}


# --- errors name the file and the key ---------------------------------------------------


@pytest.mark.parametrize(
    ("file", "text", "key"),
    [
        ("mailgateway.toml", "colour = 1\n" + GATEWAY, "colour"),
        ("mailgateway.toml", GATEWAY + "colour = 1\n", "account.colour"),
        ("mailgateway.toml", GATEWAY + "[smtp]\nmax_recipient = 5\n", "smtp.max_recipient"),
        (
            "users.toml",
            USERS + "[[users]]\nid='c'\nemail='c@x.example'\n"
            "first_name='C'\nlast_name='D'\nnick='cc'\n",
            "users[2].nick",
        ),
        ("inboxes/support.toml", 'name = "S"\ncolour = "red"\n', "colour"),
        (
            "inboxes/support.toml",
            'name = "S"\n[fallback_email]\nsend = true\n',
            "fallback_email.send",
        ),
        ("inboxes/support.toml", 'name = "S"\nslug = "x"\n', "slug"),
    ],
)
def test_unknown_key_is_an_error_naming_file_and_key(
    tmp_path: Path, file: str, text: str, key: str
) -> None:
    """An unknown key in any file is refused with the file and the dotted key."""
    write_config(tmp_path)
    (tmp_path / file).write_text(text)
    error = load_error(tmp_path)
    assert (error.file, error.key) == (file, key)
    assert str(error) == f"{file}: {key}: " + error.problem
    assert "unknown key" in error.problem


BAD_VALUES = [
    (
        "mailgateway.toml",
        '[account]\nsubdomain="acme"\ncompany_name="A"\nplan="gold"\n',
        "account.plan",
        "'gold'",
    ),
    (
        "mailgateway.toml",
        GATEWAY + '[smtp]\nmax_message_size = "25 megs"\n',
        "smtp.max_message_size",
        "not a size",
    ),
    ("mailgateway.toml", GATEWAY + '[smtp]\nlisten = ["127.0.0.1"]\n', "smtp.listen[0]", "no port"),
    ("mailgateway.toml", GATEWAY + '[smtp]\nlisten = ["::1:25"]\n', "smtp.listen[0]", "brackets"),
    ("mailgateway.toml", GATEWAY + "[smtp]\nmax_recipients = 0\n", "smtp.max_recipients", "> 0"),
    (
        "mailgateway.toml",
        GATEWAY + "[smtp]\nmax_recipients = true\n",
        "smtp.max_recipients",
        "integer",
    ),
    (
        "mailgateway.toml",
        GATEWAY + '[smtp]\ntls_cert = "/nonexistent/cert.pem"\n',
        "smtp.tls_cert",
        "not found",
    ),
    (
        "mailgateway.toml",
        GATEWAY + '[database]\nurl = "sqlite:///relative.db"\n',
        "database.url",
        "absolute path",
    ),
    (
        "mailgateway.toml",
        GATEWAY + '[database]\nurl = "mysql://h/db"\n',
        "database.url",
        "unsupported",
    ),
    (
        "mailgateway.toml",
        '[account]\nsubdomain="Acme Inc"\ncompany_name="A"\n',
        "account.subdomain",
        "DNS label",
    ),
    (
        "mailgateway.toml",
        GATEWAY + '[notifications]\nwebhook_url = "hooks.example"\n',
        "notifications.webhook_url",
        "https://",
    ),
    ("mailgateway.toml", "[smtp]\nmax_recipients = 5\n", "account", "missing"),
    (
        "users.toml",
        USERS + '[[users]]\nid="c"\nemail="c@x.example"\nfirst_name="C"\n'
        'last_name="D"\nseat="gold"\n',
        "users[2].seat",
        "'paid' or 'free'",
    ),
    ("users.toml", USERS.replace('"Alice@Acme.example"', '"alice"'), "users[0].email", "e-mail"),
    ("inboxes/support.toml", "default = true\n", "name", "missing"),
    (
        "inboxes/support.toml",
        'name = "S"\n[fallback_email]\nstatus = "paused"\n',
        "fallback_email.status",
        "'enabled' or 'disabled'",
    ),
    (
        "inboxes/support.toml",
        'name = "S"\n[fallback_email]\nsignature = "{{ nick }}"\n',
        "fallback_email.signature",
        "unknown token",
    ),
    (
        "inboxes/support.toml",
        'name = "S"\n[access]\nmode = "specific"\nusers = ["zed"]\n',
        "access.users",
        "unknown user 'zed'",
    ),
    (
        "inboxes/support.toml",
        'name = "S"\n[automation]\nteams = ["sales"]\n',
        "automation.teams",
        "unknown team 'sales'",
    ),
    (
        "inboxes/support.toml",
        'name = "S"\n[tickets]\nowner = "zed"\n',
        "tickets.owner",
        "unknown user",
    ),
    (
        "inboxes/support.toml",
        'name = "S"\n[automation]\nauto_assign = true\n',
        "automation.users",
        "at least one",
    ),
    (
        "inboxes/support.toml",
        'name = "S"\n[fallback_email]\nforwarding_address = "support@acme.example"\n',
        "fallback_email.forwarding_address",
        "@acme.inbox.example.net",
    ),
    (
        "inboxes/support.toml",
        'name = "S"\n[fallback_email]\nforwarding_address = "s+x@acme.inbox.example.net"\n',
        "fallback_email.forwarding_address",
        "before '@'",
    ),
]


@pytest.mark.parametrize(("file", "text", "key", "problem"), BAD_VALUES)
def test_bad_value_is_an_error_naming_file_and_key(
    tmp_path: Path, file: str, text: str, key: str, problem: str
) -> None:
    """A wrong value is refused with the file, the dotted key and what is wrong."""
    write_config(tmp_path)
    (tmp_path / file).write_text(text)
    error = load_error(tmp_path)
    assert (error.file, error.key) == (file, key)
    assert problem in error.problem


def channel(host: str = "imap.acme.example", tls: str = "implicit", secret: str = "") -> str:
    """An inbox file with one IMAP channel."""
    return textwrap.dedent(f"""\
        name = "Support"
        [[channels]]
        address = "help@acme.example"
        imap = {{ host = "{host}", port = 993, tls = "{tls}", user = "help", password_file = "{secret}" }}
        smtp = {{ host = "{host}", port = 587, tls = "{tls}", user = "help", password_file = "{secret}" }}
        """)  # noqa: E501


def test_channel_loads_with_a_readable_password_file(tmp_path: Path) -> None:
    """A channel's password file must exist; it is read only on demand."""
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    inbox = loaded(tmp_path / "c", {"support": channel(secret=str(secret))}).inboxes["support"]
    imap = inbox.channels[0].imap
    assert (imap.host, imap.port, imap.tls) == ("imap.acme.example", 993, TlsMode.IMPLICIT)
    assert imap.read_password() == "s3cret"
    assert "s3cret" not in repr(inbox)


def test_relative_password_file_is_relative_to_the_config_folder(tmp_path: Path) -> None:
    """password_file = "secrets/help" means DIR/secrets/help."""
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "help").write_text("pw")
    inbox = loaded(tmp_path, {"support": channel(secret="secrets/help")}).inboxes["support"]
    assert inbox.channels[0].smtp.password_file == tmp_path / "secrets" / "help"


def test_missing_password_file_names_the_key(tmp_path: Path) -> None:
    """A password_file that does not exist is an error on that key."""
    write_config(tmp_path, {"support": channel(secret="/nonexistent/secret")})
    error = load_error(tmp_path)
    assert (error.file, error.key) == ("inboxes/support.toml", "channels[0].imap.password_file")
    assert "not found" in error.problem


def test_plaintext_is_refused_for_a_remote_mail_server(tmp_path: Path) -> None:
    """tls = "none" on a non-loopback host is an error on the tls key."""
    secret = tmp_path / "secret"
    secret.write_text("pw")
    write_config(tmp_path / "c", {"support": channel(tls="none", secret=str(secret))})
    error = load_error(tmp_path / "c")
    assert error.key == "channels[0].imap.tls"
    assert "loopback" in error.problem


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_plaintext_is_allowed_on_loopback(tmp_path: Path, host: str) -> None:
    """tls = "none" is accepted when the mail server is this machine."""
    secret = tmp_path / "secret"
    secret.write_text("pw")
    config = loaded(tmp_path / "c", {"support": channel(host, "none", str(secret))})
    assert config.inboxes["support"].channels[0].imap.tls is TlsMode.NONE


def test_tls_cert_without_key_is_an_error(tmp_path: Path) -> None:
    """tls_cert and tls_key are set together or not at all."""
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    write_config(tmp_path / "c", gateway=GATEWAY + f'[smtp]\ntls_cert = "{cert}"\n')
    error = load_error(tmp_path / "c")
    assert (error.file, error.key) == ("mailgateway.toml", "smtp.tls_key")


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    """Broken TOML is refused with the file and the line of the fault."""
    write_config(tmp_path, {"support": 'name = "S"\n\nname = \n'})
    error = load_error(tmp_path)
    assert error.file == "inboxes/support.toml"
    assert "line 3" in error.problem


def test_missing_folder_and_missing_gateway_file_are_errors(tmp_path: Path) -> None:
    """No folder, or no mailgateway.toml in it, is a ConfigError."""
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent", environ={})
    write_config(tmp_path / "c")
    (tmp_path / "c" / "mailgateway.toml").unlink()
    assert load_error(tmp_path / "c").file == "mailgateway.toml"


def test_inbox_file_name_must_be_a_slug(tmp_path: Path) -> None:
    """inboxes/Sales Team.toml is refused: the file name is the slug."""
    write_config(tmp_path, {"support": 'name = "S"\n', "Sales Team": 'name = "Sales"\n'})
    assert load_error(tmp_path).file == "inboxes/Sales Team.toml"


def test_users_ids_are_unique_and_teams_exist(tmp_path: Path) -> None:
    """A repeated user id, or a team that is not defined, names the user entry."""
    write_config(tmp_path, users=USERS.replace('id = "bob"', 'id = "alice"'))
    assert load_error(tmp_path).key == "users[1].id"
    (tmp_path / "users.toml").write_text(USERS.replace('teams = ["support"]', 'teams = ["x"]'))
    error = load_error(tmp_path)
    assert (error.key, error.problem) == ("users[0].teams", "unknown team 'x'")


# --- rules across inboxes ---------------------------------------------------------------


def test_two_defaults_are_an_error(tmp_path: Path) -> None:
    """Two inboxes with default = true are refused, naming the second one's file."""
    inboxes = {"a": 'name = "A"\ndefault = true\n', "b": 'name = "B"\ndefault = true\n'}
    write_config(tmp_path, inboxes)
    error = load_error(tmp_path)
    assert (error.file, error.key) == ("inboxes/b.toml", "default")


def test_no_default_among_several_inboxes_is_an_error(tmp_path: Path) -> None:
    """Several inboxes and none default is refused."""
    write_config(tmp_path, {"a": 'name = "A"\n', "b": 'name = "B"\n'})
    assert load_error(tmp_path).key == "default"


def test_no_inbox_is_an_error(tmp_path: Path) -> None:
    """A folder without inbox files is refused."""
    write_config(tmp_path)
    (tmp_path / "inboxes" / "support.toml").unlink()
    assert "at least one" in load_error(tmp_path).problem


def test_duplicate_forwarding_address_is_an_error(tmp_path: Path) -> None:
    """Two inboxes cannot share a forwarding address (compared case-insensitively)."""
    clash = 'name = "B"\n[fallback_email]\nforwarding_address = "A@acme.inbox.example.net"\n'
    write_config(tmp_path, {"a": 'name = "A"\ndefault = true\n', "b": clash})
    error = load_error(tmp_path)
    assert (error.file, error.key) == ("inboxes/b.toml", "fallback_email.forwarding_address")
    assert "inboxes/a.toml" in error.problem


def sending(company: str, mode: str = "company") -> str:
    """An inbox file whose fallback email sends with the given from name."""
    return (
        f'name = "{company}"\n[fallback_email]\nsend_enabled = true\n'
        f'from_name = "{mode}"\nfrom_company = "{company}"\n'
    )


def test_duplicate_from_name_is_an_error(tmp_path: Path) -> None:
    """Two sending fallback emails with the same from name are refused."""
    inboxes = {"a": "default = true\n" + sending("Acme"), "b": sending("acme")}
    write_config(tmp_path, inboxes)
    error = load_error(tmp_path)
    assert (error.file, error.key) == ("inboxes/b.toml", "fallback_email.from_company")


def test_from_name_rule_ignores_other_modes_and_non_sending_inboxes(tmp_path: Path) -> None:
    """The same company text is fine with another mode or when one inbox does not send."""
    inboxes = {
        "a": "default = true\n" + sending("Acme"),
        "b": sending("Acme", "agent_and_company"),
        "c": 'name = "C"\n[fallback_email]\nfrom_company = "Acme"\nfrom_name = "company"\n',
    }
    assert list(loaded(tmp_path, inboxes).inboxes) == ["a", "b", "c"]


# --- lookups ----------------------------------------------------------------------------


@pytest.fixture
def two_inboxes(tmp_path: Path) -> Config:
    """A folder with a default support inbox and a sales inbox."""
    return loaded(tmp_path, {"support": 'name = "S"\ndefault = true\n', "sales": 'name = "X"\n'})


@pytest.mark.parametrize(
    ("address", "slug", "token"),
    [
        ("support@acme.inbox.example.net", "support", None),
        ("Sales@ACME.Inbox.Example.NET", "sales", None),
        ("support+Ab_9-z@acme.inbox.example.net", "support", "Ab_9-z"),
        ("SUPPORT+tok@acme.inbox.example.net", "support", "tok"),
    ],
)
def test_inbox_by_address_matches_exact_and_token_forms(
    two_inboxes: Config, address: str, slug: str, token: str | None
) -> None:
    """A forwarding address or its <local>+<token> form finds the inbox, case-insensitively."""
    found = two_inboxes.inbox_by_address(address)
    assert found is not None
    assert (found[0].slug, found[1]) == (slug, token)


@pytest.mark.parametrize(
    "address",
    [
        "support@acme.example",
        "nobody@acme.inbox.example.net",
        "support+@acme.inbox.example.net",
        "support+bad.token@acme.inbox.example.net",
        "support+" + "x" * 65 + "@acme.inbox.example.net",
        "no-at-sign",
    ],
)
def test_inbox_by_address_refuses_foreign_and_malformed(two_inboxes: Config, address: str) -> None:
    """Other domains, unknown locals and malformed tokens find no inbox."""
    assert two_inboxes.inbox_by_address(address) is None


def test_local_domains_and_default_inbox(two_inboxes: Config) -> None:
    """local_domains holds the gateway's domain; default_inbox is the one marked default."""
    assert two_inboxes.local_domains() == frozenset({"acme.inbox.example.net"})
    assert two_inboxes.default_inbox.slug == "support"
    assert list(two_inboxes.inboxes) == ["sales", "support"]


def test_user_by_email_is_case_insensitive(two_inboxes: Config) -> None:
    """Users are found by e-mail whatever its case; strangers are None."""
    alice = two_inboxes.user_by_email("alice@ACME.example")
    assert alice is not None and alice.full_name == "Alice Nowak"
    assert two_inboxes.user_by_email("eve@acme.example") is None


# --- database URL -----------------------------------------------------------------------


def test_environment_overrides_database_url(tmp_path: Path) -> None:
    """MAILGATEWAY_DATABASE_URL replaces database.url; an empty value is ignored."""
    directory = write_config(tmp_path)
    url = "postgresql://mg@db.example/mg"
    config = load_config(directory, environ={"MAILGATEWAY_DATABASE_URL": url})
    assert config.gateway.database.url == url
    assert config.gateway.database.async_url == "postgresql+asyncpg://mg@db.example/mg"
    config = load_config(directory, environ={"MAILGATEWAY_DATABASE_URL": ""})
    assert config.gateway.database.is_sqlite


def test_invalid_environment_database_url_names_the_variable(tmp_path: Path) -> None:
    """A bad MAILGATEWAY_DATABASE_URL is an error naming the variable."""
    directory = write_config(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config(directory, environ={"MAILGATEWAY_DATABASE_URL": "sqlite:///x.db"})
    assert caught.value.key == "MAILGATEWAY_DATABASE_URL"
    assert "absolute path" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "async_url", "is_sqlite"),
    [
        ("sqlite:////var/mg.db", "sqlite+aiosqlite:////var/mg.db", True),
        ("sqlite+aiosqlite:////var/mg.db", "sqlite+aiosqlite:////var/mg.db", True),
        ("postgres://u@h/d", "postgresql+asyncpg://u@h/d", False),
        ("postgresql+asyncpg://u:p@h:5432/d", "postgresql+asyncpg://u:p@h:5432/d", False),
    ],
)
def test_database_async_url(url: str, async_url: str, is_sqlite: bool) -> None:
    """Every accepted URL maps to the SQLAlchemy async driver."""
    database = DatabaseConfig(url=url)
    assert (database.async_url, database.is_sqlite) == (async_url, is_sqlite)


def test_database_url_is_not_echoed(tmp_path: Path) -> None:
    """Neither an invalid database URL's error nor the config's repr shows the password."""
    write_config(tmp_path, gateway=GATEWAY + '[database]\nurl = "mysql://u:hunter2@h/d"\n')
    assert "hunter2" not in str(load_error(tmp_path))
    database = DatabaseConfig(url="postgresql://u:hunter2@h/d")
    assert "hunter2" not in repr(database)


# --- values -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("25MiB", 25 * 2**20),
        ("10MB", 10_000_000),
        ("512KiB", 512 * 1024),
        ("1048576", 1048576),
        (1048576, 1048576),
        ("1 GiB", 2**30),
        ("2kb", 2000),
        ("1.5MiB", 3 * 2**19),
    ],
)
def test_parse_size(value: str | int, size: int) -> None:
    """Sizes accept binary and decimal units, plain numbers and ints."""
    assert parse_size(value) == size


@pytest.mark.parametrize("value", ["", "25 megs", "MiB", "-1", "1e6", -5])
def test_parse_size_refuses_nonsense(value: str | int) -> None:
    """Anything else is a ValueError."""
    with pytest.raises(ValueError):
        parse_size(value)


@pytest.mark.parametrize(
    ("value", "endpoint"),
    [
        ("127.0.0.1:2525", ("127.0.0.1", 2525)),
        ("[::1]:25", ("::1", 25)),
        ("mx.example.net:0", ("mx.example.net", 0)),
        ("0.0.0.0:25", ("0.0.0.0", 25)),
    ],
)
def test_parse_hostport(value: str, endpoint: tuple[str, int]) -> None:
    """Listen addresses are host:port, IPv6 in brackets; port 0 lets the OS choose."""
    assert parse_hostport(value) == endpoint


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Sales Team", "sales-team"),
        ("Équipe Ventes!", "equipe-ventes"),
        ("  --  ", "inbox"),
        ("日本", "inbox"),
        ("x" * 80, "x" * 63),
    ],
)
def test_slugify(name: str, slug: str) -> None:
    """slugify gives an ASCII slug, never empty, at most 63 characters."""
    assert slugify(name) == slug
