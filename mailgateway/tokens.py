"""API tokens: issued once per request, stored as SHA-256 digests, resolved to their user."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from mailgateway.config import Config, UserConfig
from mailgateway.errors import RefusedError
from mailgateway.logs import get_logger
from mailgateway.store import api as api_store
from mailgateway.store.repo import Store

log = get_logger(__name__)

TOKEN_PREFIX = "mgt_"
SHOWN_CHARACTERS = 12  # "mgt_" and 8 random characters: enough to tell tokens apart in a list


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token just created: the secret is shown to the operator once and never stored."""

    id: int
    user_id: str
    token: str


def new_token() -> str:
    """A fresh token with 256 random bits."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What is stored of a token: its SHA-256 (the token is random, so no salt or stretching
    is needed)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


async def create_token(config: Config, store: Store, user_id: str) -> IssuedToken:
    """Issue a token for a user of users.toml."""
    if user_id not in config.users:
        msg = f"unknown user {user_id!r} (not in users.toml)"
        raise RefusedError(msg)
    token = new_token()
    token_id = await api_store.add_token(
        store, user_id, token_digest(token), token[:SHOWN_CHARACTERS]
    )
    log.info("token.created", token_id=token_id, user=user_id)
    return IssuedToken(token_id, user_id, token)


async def authenticate(config: Config, store: Store, token: str) -> UserConfig | None:
    """The user a presented token belongs to; None when it is unknown, revoked, or its user is
    no longer in users.toml."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 128:
        return None
    user_id = await api_store.token_user(store, token_digest(token))
    return None if user_id is None else config.users.get(user_id)
