"""Fixtures for real-socket tests: a gateway started on this loop with per-test limits."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from mailgateway.app import Gateway
from tests.dovecot import Account, Dovecot
from tests.support import running_gateway, write_config
from tests.system import require_system

GatewayFactory = Callable[..., AbstractAsyncContextManager[Gateway]]


@pytest.fixture
def gateway_factory(tmp_path: Path, db_url: str) -> GatewayFactory:
    """Start a gateway with SMTP settings overridden for one test."""

    def factory(**smtp: Any) -> AbstractAsyncContextManager[Gateway]:
        return running_gateway(write_config(tmp_path / "config", db_url, **smtp))

    return factory


@pytest.fixture
async def gateway(gateway_factory: GatewayFactory) -> AsyncIterator[Gateway]:
    """A gateway with the default test limits."""
    async with gateway_factory() as running:
        yield running


# -- IMAP channels: a private Dovecot for the session ---------------------------------------------


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    """A private Dovecot on free 127.0.0.1 ports for the whole session (users are per test)."""
    if shutil.which("dovecot") is None:
        require_system("dovecot is not installed (Debian: dovecot-core dovecot-imapd)")
    server = Dovecot()
    server.add_users(300)
    try:
        server.start()
    except RuntimeError as error:
        server.close()
        pytest.fail(str(error))
    yield server
    server.close()


@pytest.fixture
def mail_account(dovecot: Dovecot) -> Account:
    """A fresh, empty mailbox user on the session's Dovecot."""
    return dovecot.account()


@pytest.fixture
def private_dovecot(dovecot: Dovecot) -> Iterator[Dovecot]:
    """A Dovecot of this test's own, for tests that stop it or fail logins (Dovecot slows
    every login from an address after a refused one)."""
    server = Dovecot()
    server.add_users(2)
    server.start()
    yield server
    server.close()
