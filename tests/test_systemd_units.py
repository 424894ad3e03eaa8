"""The systemd files in systemd/: the unit verifies clean and is hardened as documented; the
sysusers.d and tmpfiles.d examples create the user and folders."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailgateway.cli import main
from tests.system import require_system

SYSTEMD = Path(__file__).resolve().parents[1] / "systemd"
UNIT = SYSTEMD / "mailgateway.service"
INSTALLED_AT = "/opt/mailgateway/bin/mailgateway"

REQUIRED = {
    "Type": "notify",
    "User": "mailgateway",
    "Group": "mailgateway",
    "ExecReload": "/bin/kill -HUP $MAINPID",
    "WatchdogSec": "30s",
    "ProtectSystem": "strict",
    "ReadWritePaths": "/var/lib/mailgateway",
    "NoNewPrivileges": "true",
    "PrivateTmp": "true",
    "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
    "AmbientCapabilities": "CAP_NET_BIND_SERVICE",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "SystemCallFilter": "@system-service",
}


def tool(name: str) -> str:
    """The path of a systemd tool; skip (fail in CI) when it is missing."""
    found = shutil.which(name)
    if found is None:
        require_system(f"{name} is not installed (Debian package systemd)")
    assert found is not None
    return found


def directives(text: str) -> dict[str, list[str]]:
    """Every Key=value of a unit file, each key with all its values in order."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        match = re.fullmatch(r"([A-Za-z]+)=(.*)", line.strip())
        if match:
            found.setdefault(match[1], []).append(match[2])
    return found


def local_unit(directory: Path, extra: str = "") -> Path:
    """The unit with ExecStart pointed at this installation's mailgateway (verify checks that
    the program exists), plus extra lines in [Service]."""
    program = Path(sys.executable).with_name("mailgateway")
    if not program.exists():
        pytest.skip("the mailgateway entry point is not installed beside this Python")
    text = UNIT.read_text().replace(INSTALLED_AT, str(program))
    text = text.replace("[Service]\n", f"[Service]\n{extra}", 1)
    path = directory / "mailgateway.service"
    path.write_text(text)
    return path


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` of one unit file."""
    command = [tool("systemd-analyze"), "verify", str(unit)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_unit_verifies_clean(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the unit without a single warning."""
    done = verify(local_unit(tmp_path))
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_verify_reports_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelt directive makes verify speak up."""
    done = verify(local_unit(tmp_path, extra="ProtectSytem=strict\n"))
    assert "ProtectSytem" in done.stdout + done.stderr


@pytest.mark.parametrize(("key", "value"), sorted(REQUIRED.items()))
def test_unit_has_documented_setting(key: str, value: str) -> None:
    """The unit carries each setting the README documents (notify, own user, hardening)."""
    assert value in directives(UNIT.read_text()).get(key, [])


def test_unit_exposure_is_low(tmp_path: Path) -> None:
    """`systemd-analyze security` rates the unit's exposure at most 2.0 (of 10)."""
    command = [tool("systemd-analyze"), "security", "--offline=yes", str(local_unit(tmp_path))]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout + done.stderr)
    assert match is not None, done.stdout + done.stderr
    assert float(match[1]) <= 2.0


def test_exec_start_is_a_valid_command() -> None:
    """The unit's ExecStart arguments are accepted by `mailgateway` itself."""
    [exec_start] = directives(UNIT.read_text())["ExecStart"]
    program, *arguments = shlex.split(exec_start)
    assert program == INSTALLED_AT
    result = CliRunner().invoke(main, [*arguments, "--help"])
    assert result.exit_code == 0, result.output
    assert "--log-format" in result.output


def test_sysusers_and_tmpfiles_make_user_and_folders(tmp_path: Path) -> None:
    """sysusers.d creates the mailgateway system user; tmpfiles.d then creates the state
    folder owned by it and the configuration folder readable by its group only."""
    (tmp_path / "etc").mkdir()
    sysusers = SYSTEMD / "sysusers.d" / "mailgateway.conf"
    tmpfiles = SYSTEMD / "tmpfiles.d" / "mailgateway.conf"
    root = f"--root={tmp_path}"
    subprocess.run([tool("systemd-sysusers"), root, str(sysusers)], check=True, timeout=60)
    subprocess.run(
        [tool("systemd-tmpfiles"), "--create", root, str(tmpfiles)], check=True, timeout=60
    )
    passwd = (tmp_path / "etc" / "passwd").read_text()
    [entry] = [line.split(":") for line in passwd.splitlines() if line.startswith("mailgateway:")]
    uid, gid, home, shell = int(entry[2]), int(entry[3]), entry[5], entry[6]
    assert (home, shell) == ("/var/lib/mailgateway", "/usr/sbin/nologin")
    assert uid < 1000  # a system user
    state = (tmp_path / "var" / "lib" / "mailgateway").stat()
    config = (tmp_path / "etc" / "mailgateway").stat()
    assert (state.st_uid, state.st_gid, state.st_mode & 0o777) == (uid, gid, 0o750)
    assert (config.st_uid, config.st_gid, config.st_mode & 0o777) == (0, gid, 0o750)
