"""Tests of writing and editing the configuration folder (mailgateway.configfiles)."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from mailgateway.config import GatewayConfig, load_config
from mailgateway.configfiles import create_inbox, init_config, rename_inbox, write_atomic
from mailgateway.errors import ConfigError, RefusedError


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder made by init_config for subdomain acme."""
    directory = tmp_path / "conf"
    init_config(directory, subdomain="acme", company="Acme Inc.")
    return directory


def test_init_writes_a_valid_folder_with_the_default_inbox(tmp_path: Path) -> None:
    """init_config writes a folder that loads, with inbox "inbox" as the default."""
    directory = tmp_path / "new" / "conf"
    config = init_config(directory, subdomain="acme", company='Acme "Quoted" Inc.')
    reloaded = load_config(directory, environ={})
    assert reloaded.gateway.account.company_name == 'Acme "Quoted" Inc.'
    assert list(reloaded.inboxes) == ["inbox"]
    assert reloaded.default_inbox.name == "Inbox"
    assert reloaded.default_inbox.fallback_email.forwarding_address == (
        "inbox@acme.inbox.example.net"
    )
    assert config.gateway.database.url == f"sqlite:///{directory.resolve()}/mailgateway.db"
    assert dict(reloaded.users) == {}


def test_init_writes_the_forwarding_address_explicitly(folder: Path) -> None:
    """The default inbox's file names its forwarding address and default = true."""
    text = (folder / "inboxes" / "inbox.toml").read_text()
    assert 'forwarding_address = "inbox@acme.inbox.example.net"' in text
    assert re.search(r"^default = true", text, re.MULTILINE)


def test_init_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    """init_config refuses a non-empty folder and leaves its content alone."""
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(RefusedError, match="not empty"):
        init_config(tmp_path, subdomain="acme", company="Acme")
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_init_accepts_an_existing_empty_folder(tmp_path: Path) -> None:
    """An existing empty folder is filled."""
    config = init_config(tmp_path, subdomain="acme", company="Acme")
    assert config.default_inbox.slug == "inbox"


def test_init_with_a_bad_subdomain_writes_nothing(tmp_path: Path) -> None:
    """A subdomain that is no DNS label is a ConfigError naming account.subdomain."""
    with pytest.raises(ConfigError) as caught:
        init_config(tmp_path / "conf", subdomain="Acme Inc", company="Acme")
    assert caught.value.key == "account.subdomain"
    assert not (tmp_path / "conf").exists()


def test_init_reference_comments_show_the_real_defaults(folder: Path) -> None:
    """Uncommenting every commented key of mailgateway.toml changes nothing."""
    text = (folder / "mailgateway.toml").read_text()
    uncommented = re.sub(r"^# (\[\w+\]|\w+ = )", r"\1", text, flags=re.MULTILINE)
    assert uncommented.count("[smtp]") == 1 and "\nmax_junk_commands = 100" in uncommented
    (folder / "mailgateway.toml").write_text(uncommented)
    gateway = load_config(folder, environ={}).gateway
    account = gateway.account.model_dump()
    defaults = GatewayConfig.model_validate({"account": account})
    assert gateway.model_dump(exclude={"database"}) == defaults.model_dump(exclude={"database"})


def test_create_inbox_writes_a_file_with_a_generated_address(folder: Path) -> None:
    """create_inbox writes inboxes/<slug>.toml holding the name and the derived address."""
    inbox = create_inbox(folder, "Sales Team")
    assert inbox.slug == "sales-team" and inbox.name == "Sales Team" and not inbox.default
    assert inbox.fallback_email.forwarding_address == "sales-team@acme.inbox.example.net"
    text = (folder / "inboxes" / "sales-team.toml").read_text()
    assert 'name = "Sales Team"' in text
    assert 'forwarding_address = "sales-team@acme.inbox.example.net"' in text


def test_create_inbox_slug_collision_gets_a_number(folder: Path) -> None:
    """A name whose slug is taken gets -2, then -3."""
    assert create_inbox(folder, "Sales").slug == "sales"
    assert create_inbox(folder, "sales!").slug == "sales-2"
    assert create_inbox(folder, "SALES").slug == "sales-3"
    assert sorted(load_config(folder, environ={}).inboxes) == [
        "inbox",
        "sales",
        "sales-2",
        "sales-3",
    ]


def test_create_inbox_skips_a_slug_whose_address_is_taken(folder: Path) -> None:
    """A slug whose derived address another inbox already uses is skipped."""
    taken = 'name = "O"\n[fallback_email]\nforwarding_address = "sales@acme.inbox.example.net"\n'
    (folder / "inboxes" / "other.toml").write_text(taken)
    inbox = create_inbox(folder, "Sales")
    assert inbox.slug == "sales-2"


def test_create_inbox_removes_its_file_when_the_folder_is_then_invalid(folder: Path) -> None:
    """If the new file makes the folder invalid it is removed and the error raised."""
    with pytest.raises(ConfigError) as caught:
        create_inbox(folder, "   ")
    assert caught.value.key == "name"
    assert sorted(p.name for p in (folder / "inboxes").iterdir()) == ["inbox.toml"]


@pytest.mark.parametrize("line", ["", "default = false\n"])
def test_create_inbox_keeps_a_lone_implicit_default(folder: Path, line: str) -> None:
    """A lone inbox that was default only by being alone stays the default."""
    path = folder / "inboxes" / "inbox.toml"
    path.write_text(f'# mine\nname = "Inbox"\n{line}\n[access]\nmode = "everyone"\n')
    create_inbox(folder, "Sales")
    config = load_config(folder, environ={})
    assert config.default_inbox.slug == "inbox"
    assert path.read_text().startswith('# mine\nname = "Inbox"\ndefault = true\n')


def test_rename_changes_only_the_name(folder: Path) -> None:
    """rename_inbox edits the name and keeps every comment and the layout."""
    path = folder / "inboxes" / "inbox.toml"
    before = path.read_text().replace('name = "Inbox"', 'name = "Inbox"   # shown to agents')
    path.write_text(before)
    inbox = rename_inbox(folder, "inbox", "Help Desk")
    assert inbox.name == "Help Desk" and inbox.slug == "inbox"
    after = path.read_text()
    assert after == before.replace('name = "Inbox"', 'name = "Help Desk"')


def test_rename_unknown_slug_is_refused(folder: Path) -> None:
    """Renaming an inbox that does not exist is refused and writes nothing."""
    with pytest.raises(RefusedError, match="no inbox"):
        rename_inbox(folder, "../mailgateway", "X")
    assert sorted(p.name for p in (folder / "inboxes").iterdir()) == ["inbox.toml"]


def test_rename_to_an_invalid_name_restores_the_file(folder: Path) -> None:
    """A rename that makes the folder invalid is undone and the error raised."""
    path = folder / "inboxes" / "inbox.toml"
    before = path.read_text()
    with pytest.raises(ConfigError):
        rename_inbox(folder, "inbox", " ")
    assert path.read_text() == before


def test_editing_functions_are_reachable_from_config(tmp_path: Path) -> None:
    """mailgateway.config.init_config/create_inbox/rename_inbox delegate to configfiles."""
    from mailgateway import config

    config.init_config(tmp_path / "c", subdomain="acme", company="Acme")
    assert config.create_inbox(tmp_path / "c", "Sales").slug == "sales"
    assert config.rename_inbox(tmp_path / "c", "sales", "Deals").name == "Deals"


def test_write_atomic_keeps_the_mode_and_leaves_no_temp_file(tmp_path: Path) -> None:
    """write_atomic replaces the content, keeps the old mode and leaves nothing else."""
    path = tmp_path / "file.toml"
    path.write_text("old")
    path.chmod(0o640)
    write_atomic(path, "new")
    assert path.read_text() == "new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["file.toml"]
