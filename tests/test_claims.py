"""Claim names and their claimers: a process of this host that is gone is known dead at once,
whatever role it claimed in (inbound worker, outbound worker, notifier)."""

from __future__ import annotations

import os
import socket

from mailgateway.store.claims import claimer_alive
from tests.support import exited_pid

HOST = socket.gethostname()


def test_gone_local_process_is_dead_in_every_role() -> None:
    """A claim of this host by an exited process is dead, as inbound, outbound or notifier."""
    pid = exited_pid()
    for name in (f"{HOST}:{pid}", f"{HOST}:{pid}/outbound", f"{HOST}:{pid}:notifier"):
        assert claimer_alive(name, own=f"{HOST}:{os.getpid()}") is False, name


def test_running_local_process_is_alive() -> None:
    """A claim of this host by a running process (our parent) is alive, whatever its role."""
    for name in (f"{HOST}:{os.getppid()}", f"{HOST}:{os.getppid()}/outbound"):
        assert claimer_alive(name, own=f"{HOST}:{os.getpid()}") is True, name


def test_other_hosts_and_odd_names_are_trusted() -> None:
    """Another host's claim, or a name of another form, is trusted until its lease runs out."""
    pid = exited_pid()
    own = f"{HOST}:{os.getpid()}"
    assert claimer_alive(f"elsewhere.test:{pid}", own=own) is True
    assert claimer_alive("w1", own=own) is True
    assert claimer_alive(f"{HOST}:not-a-pid", own=own) is True


def test_our_own_name_before_claiming_is_an_earlier_process() -> None:
    """Rows under our own name, seen at start before we claimed, belong to an earlier process."""
    own = f"{HOST}:{os.getpid()}/outbound"
    assert claimer_alive(own, own=own) is False
