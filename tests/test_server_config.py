"""The scale settings: `[server] event_loop`, `[worker] lease`, `[smtp] max_queue_depth`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mailgateway import app, config
from mailgateway.config import EventLoop, ServerConfig
from tests.test_config import GATEWAY, load_error, loaded, write_config


def test_defaults(tmp_path: Path) -> None:
    """Without the keys: a 600 s lease, back-pressure past 100,000 rows, uvloop when installed."""
    gateway = loaded(tmp_path).gateway
    assert gateway.worker.lease == 600.0
    assert gateway.smtp.max_queue_depth == 100_000
    expected = EventLoop.UVLOOP if config.uvloop_installed() else EventLoop.ASYNCIO
    assert gateway.server.event_loop is expected


def test_keys_are_read(tmp_path: Path) -> None:
    """The three keys take the values written in mailgateway.toml."""
    text = GATEWAY + '[server]\nevent_loop = "asyncio"\n[worker]\nlease = 30.0\n'
    text += "[smtp]\nmax_queue_depth = 500\n"
    gateway = loaded(tmp_path, gateway=text).gateway
    assert gateway.server.event_loop is EventLoop.ASYNCIO
    assert (gateway.worker.lease, gateway.smtp.max_queue_depth) == (30.0, 500)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[server]\nevent_loop = "tokio"\n', "server.event_loop"),
        ("[worker]\nlease = 0.0\n", "worker.lease"),
        ("[smtp]\nmax_queue_depth = 0\n", "smtp.max_queue_depth"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    """An unknown loop, a lease that is not positive, a depth of zero: refused with the key."""
    write_config(tmp_path, gateway=GATEWAY + text)
    error = load_error(tmp_path)
    assert (error.file, error.key) == ("mailgateway.toml", key)


def test_uvloop_without_uvloop_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Asking for uvloop where it is not installed is a configuration error; the default then
    falls back to asyncio's own loop."""
    monkeypatch.setattr(config, "uvloop_installed", lambda: False)
    assert ServerConfig().event_loop is EventLoop.ASYNCIO
    write_config(tmp_path, gateway=GATEWAY + '[server]\nevent_loop = "uvloop"\n')
    assert "uvloop is not installed" in load_error(tmp_path).problem


def test_loop_factory_builds_the_configured_loop() -> None:
    """`asyncio` gives the standard library's loop, `uvloop` uvloop's."""
    plain = app.loop_factory(ServerConfig(event_loop=EventLoop.ASYNCIO))()
    assert type(plain).__module__.startswith("asyncio")
    plain.close()
    uvloop = pytest.importorskip("uvloop")
    fast = app.loop_factory(ServerConfig(event_loop=EventLoop.UVLOOP))()
    assert isinstance(fast, uvloop.Loop) and isinstance(fast, asyncio.AbstractEventLoop)
    fast.close()
