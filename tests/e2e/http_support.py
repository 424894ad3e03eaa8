"""Helpers for HTTP tests: a configuration with every role, tokens, a client, OpenAPI checks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from mailgateway.app import Gateway
from mailgateway.config import load_config
from mailgateway.store.repo import Store
from mailgateway.tokens import create_token
from mailgateway.web.server import openapi_document
from tests.e2e.daemon import send
from tests.support import SALES, SUPPORT, make_message, running_gateway, write_config

BILLING = "billing@acme.inbox.example.net"
OPENAPI_URI = "urn:mailgateway:openapi"

# alice: support team member; bob: no team, listed in billing; carol: super admin;
# dave: account access; erin: a free seat listed by name in support.
USERS = """
[[users]]
id = "alice"
email = "alice@acme.example"
first_name = "Alice"
last_name = "Nowak"
teams = ["support"]

[[users]]
id = "bob"
email = "bob@acme.example"
first_name = "Bob"
last_name = "Stone"

[[users]]
id = "carol"
email = "carol@acme.example"
first_name = "Carol"
last_name = "Admin"
role = "super_admin"

[[users]]
id = "dave"
email = "dave@acme.example"
first_name = "Dave"
last_name = "Viewer"
role = "account_access"

[[users]]
id = "erin"
email = "erin@acme.example"
first_name = "Erin"
last_name = "Free"
seat = "free"

[[teams]]
id = "support"
name = "Support"
"""


def write_roles_config(directory: Path, db_url: str) -> Path:
    """Inboxes support (team support + erin; sending on), billing (bob only), sales (everyone),
    archive (disabled)."""
    write_config(directory, db_url)
    (directory / "users.toml").write_text(USERS)
    (directory / "inboxes" / "support.toml").write_text(
        'name = "Support"\ndefault = true\n\n[access]\nmode = "specific"\n'
        'teams = ["support"]\nusers = ["erin"]\n\n[fallback_email]\nsend_enabled = true\n'
    )
    (directory / "inboxes" / "billing.toml").write_text(
        'name = "Billing"\n\n[access]\nmode = "specific"\nusers = ["bob"]\n'
    )
    return directory


@dataclass
class Seeded:
    """A running gateway with one conversation per inbox and a token per user."""

    gateway: Gateway
    base: str
    tokens: dict[str, str]
    conversations: dict[str, int]  # inbox slug -> conversation id
    contacts: dict[str, str]  # inbox slug -> the contact's address


async def wait_done(store: Store, count: int) -> None:
    """Wait until `count` inbound queue rows are done."""
    async with asyncio.timeout(20):
        while (await store.queue_counts()).get("done", 0) < count:
            await asyncio.sleep(0.05)


def http_base(gateway: Gateway) -> str:
    """The gateway's HTTP base URL."""
    assert gateway.http is not None
    return f"http://{gateway.http.address}"


@contextlib.asynccontextmanager
async def seeded_gateway(config_dir: Path) -> AsyncIterator[Seeded]:
    """A gateway that received one mail for support, billing and sales (from three customers)."""
    async with running_gateway(config_dir) as gateway:
        port = int(gateway.sockets[0].rsplit(":", 1)[1])
        contacts = {
            "support": "sue@customer.test",
            "billing": "bill@customer.test",
            "sales": "sam@customer.test",
        }
        for inbox, rcpt in (("support", SUPPORT), ("billing", BILLING), ("sales", SALES)):
            raw = make_message(subject=f"for {inbox}", sender=contacts[inbox], to=rcpt)
            code, _ = await asyncio.to_thread(send, port, raw, rcpt)
            assert code == 250
        await wait_done(gateway.store, 3)
        rows = await gateway.store.conversation_rows()
        conversations = {row.inbox: int(row.id) for row in rows}
        config = load_config(config_dir)
        tokens = {
            user: (await create_token(config, gateway.store, user)).token for user in config.users
        }
        yield Seeded(gateway, http_base(gateway), tokens, conversations, contacts)


async def call(
    base: str,
    method: str,
    path: str,
    token: str | None = None,
    body: Any = None,
    **params: str,
) -> tuple[int, Any]:
    """One request (with a JSON body when given); the status and the decoded JSON answer."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, base + path, headers=headers, params=params, json=body) as response,
    ):
        return response.status, await response.json(content_type=None)


def schema_pointer(method: str, template: str, status: int) -> str:
    """The JSON pointer, in the OpenAPI document, of a documented response body's schema."""
    operation = openapi_document()["paths"][template][method.lower()]
    response = operation["responses"][str(status)]
    if "$ref" in response:
        base = response["$ref"].lstrip("#")
    else:
        path = template.replace("~", "~0").replace("/", "~1")
        base = f"/paths/{path}/{method.lower()}/responses/{status}"
    return f"{base}/content/application~1json/schema"


def assert_documented(method: str, template: str, status: int, body: Any) -> None:
    """The response is one the OpenAPI description lists, and its body matches the schema."""
    registry: Registry[Any] = Registry().with_resource(
        OPENAPI_URI, Resource.from_contents(openapi_document(), default_specification=DRAFT202012)
    )
    schema = {"$ref": f"{OPENAPI_URI}#{schema_pointer(method, template, status)}"}
    Draft202012Validator(schema, registry=registry).validate(body)
