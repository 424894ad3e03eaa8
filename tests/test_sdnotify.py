"""The notify protocol client: socket addresses, the watchdog rule, datagrams on a real socket."""

from __future__ import annotations

import socket
import uuid

import pytest

from mailgateway.sdnotify import SystemdNotifier, socket_address, watchdog_interval


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("/run/systemd/notify", "/run/systemd/notify"),
        ("@abstract-name", "\0abstract-name"),
        ("", None),
        ("relative/path", None),
    ],
)
def test_socket_address(value: str, address: str | None) -> None:
    """$NOTIFY_SOCKET is a path, or '@' for the abstract namespace; anything else is ignored."""
    assert socket_address(value) == address


@pytest.mark.parametrize(
    ("environ", "interval"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(environ: dict[str, str], interval: float | None) -> None:
    """Pings go at half of WATCHDOG_USEC, only when WATCHDOG_PID (if set) is this process."""
    assert watchdog_interval(environ, 4242) == interval


def test_datagrams_reach_the_socket() -> None:
    """ready/reloading/stopping each send one datagram of KEY=VALUE lines."""
    name = f"mailgateway-unit-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        listener.settimeout(5)
        notifier = SystemdNotifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.ready("serving 2 inboxes")
        assert notifier.reloading()
        assert notifier.stopping()
        received = [listener.recv(4096).decode().splitlines() for _ in range(3)]
    assert received[0] == ["READY=1", "STATUS=serving 2 inboxes"]
    assert received[1][0] == "RELOADING=1" and received[1][1].startswith("MONOTONIC_USEC=")
    assert received[2] == ["STOPPING=1", "STATUS=stopping"]


def test_without_systemd_nothing_is_sent() -> None:
    """Outside systemd (no NOTIFY_SOCKET) the notifier does nothing and says so."""
    assert SystemdNotifier({}).ready("x") is False


def test_a_vanished_socket_is_not_fatal() -> None:
    """A socket that no longer exists is logged and reported, never raised."""
    notifier = SystemdNotifier({"NOTIFY_SOCKET": f"@gone-{uuid.uuid4().hex}"})
    assert notifier.stopping() is False
