"""A private Postfix instance for tests: its own configuration, queue and log in a temporary
folder, smtpd on a free 127.0.0.1 port, relaying the gateway's domain to the gateway."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.system import require_system

FORWARDING_DOMAIN = "acme.inbox.example.net"
TEAM_DOMAIN = "acme.example"

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/spool
data_directory = {root}/data
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.postfix.test
mydomain = postfix.test
myorigin = $myhostname
mydestination =
local_recipient_maps =
local_transport = error:local delivery is disabled
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
relay_domains = {forwarding_domain}
transport_maps = hash:{config}/transport
virtual_alias_domains = {team_domain}
virtual_alias_maps = hash:{config}/virtual
smtp_dns_support_level = disabled
smtp_host_lookup = native
smtpd_peername_lookup = no
smtp_connect_timeout = 5s
smtputf8_enable = no
biff = no
append_dot_mydomain = no
# Deferred mail waits for `postfix flush`, not for a retry timer: the tests decide when.
queue_run_delay = 1h
minimal_backoff_time = 1h
maximal_backoff_time = 2h
"""

MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Postfix:
    """One private Postfix: `postfix -c DIR` with everything under one temporary folder."""

    def __init__(self, gateway_port: int, aliases: dict[str, str], extra: str = "") -> None:
        for program in ("postfix", "postmap", "postqueue"):
            if shutil.which(program) is None:
                require_system(f"{program} is not installed (Debian package postfix)")
        # Postfix's daemons run as the postfix user: the folder must be reachable by it.
        self.root = Path(tempfile.mkdtemp(prefix="mailgateway-postfix-"))
        self.root.chmod(0o755)
        self.config = self.root / "etc"
        self.port = free_port()
        self.gateway_port = gateway_port
        self.aliases = aliases
        self.extra = extra

    def write(self) -> None:
        """main.cf, master.cf, the transport map and the virtual alias map."""
        for folder in (self.config, self.root / "spool", self.root / "data"):
            folder.mkdir(mode=0o755)
        shutil.chown(self.root / "data", "postfix")
        values = {
            "root": self.root,
            "config": self.config,
            "forwarding_domain": FORWARDING_DOMAIN,
            "team_domain": TEAM_DOMAIN,
        }
        (self.config / "main.cf").write_text(MAIN_CF.format(**values) + self.extra)
        (self.config / "master.cf").write_text(MASTER_CF.format(port=self.port))
        transport = f"{FORWARDING_DOMAIN} smtp:[127.0.0.1]:{self.gateway_port}\n"
        (self.config / "transport").write_text(transport)
        lines = [f"{team} {inbox}\n" for team, inbox in self.aliases.items()]
        (self.config / "virtual").write_text("".join(lines))
        for table in ("transport", "virtual"):
            self.run("postmap", "-c", str(self.config), f"hash:{self.config / table}")

    def run(self, *command: str) -> str:
        """Run a Postfix command; its output (a failure raises with Postfix's words)."""
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(command)}: {done.stdout}{done.stderr}{self.log()}")
        return done.stdout

    def start(self) -> None:
        """Write the configuration, start the master, wait until smtpd answers."""
        self.write()
        self.run("postfix", "-c", str(self.config), "start")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                    if sock.recv(100).startswith(b"220"):
                        return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"Postfix smtpd did not answer on port {self.port}: {self.log()}")

    def stop(self) -> None:
        """Stop the master and its daemons, and remove the folder."""
        subprocess.run(["postfix", "-c", str(self.config), "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)

    def flush(self) -> None:
        """`postfix flush`: try every deferred message now."""
        self.run("postfix", "-c", str(self.config), "flush")

    def queue(self) -> list[dict[str, Any]]:
        """The messages in Postfix's queue (`postqueue -j`)."""
        output = self.run("postqueue", "-c", str(self.config), "-j")
        return [json.loads(line) for line in output.splitlines() if line.strip()]

    def log(self) -> str:
        """Postfix's mail log so far."""
        path = self.root / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""
