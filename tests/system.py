"""Skip-or-fail for tests that need a system program or service."""

from __future__ import annotations

import os

import pytest


def require_system(reason: str) -> None:
    """Skip with the reason; under MAILGATEWAY_REQUIRE_SYSTEM=1 (CI) fail instead."""
    if os.environ.get("MAILGATEWAY_REQUIRE_SYSTEM") == "1":
        pytest.fail(f"required system part missing: {reason}")
    pytest.skip(reason)
