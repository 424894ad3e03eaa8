"""A private Dovecot for tests: own config, users and maildirs in a temp folder, on 127.0.0.1."""

from __future__ import annotations

import contextlib
import imaplib
import mailbox
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import trustme

from tests.support import toml_value

START_TIMEOUT = 15.0
PASSWORD = "correct horse"


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Account:
    """A mailbox user of the test server."""

    user: str
    password: str


class Dovecot:
    """`dovecot -F -c CONF` as a child process, with a passwd-file of users and maildirs."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mg-dovecot-"))
        self.root.chmod(0o755)
        self.port = free_port()
        self.tls_port = free_port()
        self.ca = trustme.CA()
        self.process: subprocess.Popen[bytes] | None = None
        self._pool: list[Account] = []
        self._taken: list[Account] = []
        self.mail_uid, self.mail_gid, internal, login = self._users()
        for name in ("mail", "home", "run", "state"):
            (self.root / name).mkdir()
        for name in ("mail", "home"):
            os.chown(self.root / name, self.mail_uid, self.mail_gid)
        (self.root / "users").write_text("")
        self._write_tls()
        (self.root / "dovecot.conf").write_text(self._config(internal, login))

    @staticmethod
    def _users() -> tuple[int, int, str, str]:
        """Mail uid/gid, internal user and login user: Dovecot refuses root for mail and login
        processes, so as root the packaged dovecot/dovenull users serve; otherwise ourselves."""
        if os.geteuid() != 0:
            me = pwd.getpwuid(os.geteuid()).pw_name
            return os.geteuid(), os.getegid(), me, me
        mail = pwd.getpwnam("dovecot")
        return mail.pw_uid, mail.pw_gid, "dovecot", "dovenull"

    def _write_tls(self) -> None:
        """A certificate for 127.0.0.1 signed by the test CA."""
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        cert.private_key_pem.write_to_path(str(self.root / "key.pem"))
        cert.cert_chain_pems[0].write_to_path(str(self.root / "cert.pem"))
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    @property
    def ca_file(self) -> Path:
        """The CA that signed the server's certificate."""
        return self.root / "ca.pem"

    def _config(self, internal: str, login: str) -> str:
        """dovecot.conf: IMAP on a plain/STARTTLS port and an implicit-TLS port, users from a
        passwd-file, maildirs under the temp folder."""
        root = self.root
        return f"""
base_dir = {root}/run
state_dir = {root}/state
instance_name = mg-test-{self.port}
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{root}/cert.pem
ssl_key = <{root}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
default_internal_user = {internal}
default_internal_group = {internal}
default_login_user = {login}
first_valid_uid = 1
mail_location = maildir:{root}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = static
  args = uid={self.mail_uid} gid={self.mail_gid} home={root}/home/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.tls_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
"""

    # -- process ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Run the server and wait until it greets on its port."""
        log = (self.root / "stdout.log").open("ab")
        self.process = subprocess.Popen(
            ["dovecot", "-F", "-c", str(self.root / "dovecot.conf")],
            stdout=log,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dovecot exited: {self.logs()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock,
            ):
                if sock.recv(100).startswith(b"* OK"):
                    return
            time.sleep(0.05)
        raise RuntimeError(f"dovecot did not start: {self.logs()}")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and wait until its port is free."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (self.root / "run" / "master.pid").exists():
            time.sleep(0.05)

    def close(self) -> None:
        """Stop the server and remove its folder."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def logs(self) -> str:
        """What the server logged (for failure messages)."""
        return "".join(
            path.read_text(errors="replace")
            for path in (self.root / "stdout.log", self.root / "dovecot.log")
            if path.exists()
        )

    # -- users and mail --------------------------------------------------------------------------

    def add_users(self, count: int, password: str = PASSWORD) -> None:
        """Create mailbox users before the server starts (a user added later would need
        Dovecot to re-read its passwd-file, and a login refused meanwhile costs an auth
        penalty of seconds for every later login from 127.0.0.1)."""
        with (self.root / "users").open("a") as users:
            for _ in range(count):
                user = f"u{len(self._pool) + len(self._taken)}"
                users.write(f"{user}:{{PLAIN}}{password}::::::\n")
                self._pool.append(Account(user, password))

    def account(self) -> Account:
        """An unused mailbox user."""
        account = self._pool.pop(0)
        self._taken.append(account)
        return account

    @contextlib.contextmanager
    def client(self, account: Account) -> Iterator[imaplib.IMAP4]:
        """A logged-in stdlib IMAP client (independent of the code under test)."""
        imap = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        try:
            imap.login(account.user, account.password)
            yield imap
        finally:
            with contextlib.suppress(imaplib.IMAP4.error, OSError):
                imap.logout()

    def append(
        self,
        account: Account,
        *messages: bytes,
        flags: str = "",
        folder: str = "INBOX",
        when: datetime | None = None,
    ) -> list[int]:
        """Deliver messages into a folder by APPEND (received `when`, default now); UIDs."""
        uids = []
        stamp = imaplib.Time2Internaldate(when) if when is not None else None
        with self.client(account) as imap:
            for data in messages:
                status, reply = imap.append(folder, f"({flags})" if flags else None, stamp, data)
                assert status == "OK", reply
                found = re.search(rb"APPENDUID \d+ (\d+)", reply[0] or b"")
                uids.append(int(found.group(1)) if found else 0)
        return uids

    def deliver_file(self, account: Account, data: bytes) -> None:
        """Deliver a message straight into the maildir, as a local delivery agent does (works
        while the server is down)."""
        folder = self.root / "mail" / account.user
        box = mailbox.Maildir(folder, create=True)
        key = box.add(data)
        for path in (folder, *(folder / sub for sub in ("cur", "new", "tmp"))):
            os.chown(path, self.mail_uid, self.mail_gid)
        os.chown(folder / "new" / key, self.mail_uid, self.mail_gid)

    def create_folder(self, account: Account, folder: str) -> None:
        """Create a folder."""
        with self.client(account) as imap:
            imap.create(folder)

    def flags(self, account: Account, folder: str = "INBOX") -> dict[int, set[str]]:
        """Every message of a folder: UID -> flags."""
        with self.client(account) as imap:
            imap.select(folder)
            status, data = imap.uid("FETCH", "1:*", "(UID FLAGS)")
            assert status == "OK", data
        found: dict[int, set[str]] = {}
        for line in data:
            if isinstance(line, bytes) and (
                match := re.search(rb"UID (\d+) FLAGS \(([^)]*)\)", line)
            ):
                found[int(match.group(1))] = set(match.group(2).decode().split())
        return found

    def uidvalidity(self, account: Account, folder: str = "INBOX") -> int:
        """The folder's UIDVALIDITY."""
        with self.client(account) as imap:
            imap.select(folder)
            _, data = imap.response("UIDVALIDITY")
            return int(data[0])

    def expunge(self, account: Account, uids: list[int], folder: str = "INBOX") -> None:
        """Delete messages for good."""
        with self.client(account) as imap:
            imap.select(folder)
            imap.uid("STORE", ",".join(map(str, uids)), "+FLAGS", "(\\Deleted)")
            imap.expunge()

    def renumber(self, account: Account) -> None:
        """Make INBOX's UIDVALIDITY change and its UIDs be handed out again from 1 (what a
        restore or a server move does): the server is stopped, the UID list and indexes of the
        maildir removed, the server started again."""
        self.stop()
        folder = self.root / "mail" / account.user
        for path in folder.iterdir():
            if path.name == "dovecot-uidlist" or path.name.startswith("dovecot.index"):
                path.unlink()
        self.start()


def tls_context(server: Dovecot) -> ssl.SSLContext:
    """A client context trusting the test CA."""
    return ssl.create_default_context(cafile=str(server.ca_file))


def channel_block(
    server: Dovecot,
    account: Account,
    secret: Path,
    *,
    address: str = "help@acme.example",
    tls: str = "none",
    port: int | None = None,
    **options: object,
) -> str:
    """An inbox file's [[channels]] entry for the account on the test server (or on another
    port, such as a proxy's)."""
    port = port or (server.tls_port if tls == "implicit" else server.port)
    ca = f', ca_file = "{server.ca_file}"' if tls != "none" else ""
    server_line = (
        f'{{ host = "127.0.0.1", port = {port}, tls = "{tls}", user = "{account.user}", '
        f'password_file = "{secret}"{ca} }}'
    )
    lines = [
        "[[channels]]",
        'type = "imap"',
        f'address = "{address}"',
        f"imap = {server_line}",
        f"smtp = {server_line}",
    ]
    for key, value in options.items():
        lines.append(f"{key} = {toml_value(value)}")
    return "\n".join(lines) + "\n"
