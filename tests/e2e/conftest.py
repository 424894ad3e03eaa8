"""Fixtures for real-socket tests: a gateway started on this loop with per-test limits."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from mailgateway.app import Gateway
from tests.support import running_gateway, write_config

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
