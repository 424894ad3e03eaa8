"""The JSON API for agent applications: conversations and contacts, under the inbox access rules
(members act; super admins and account access only view; anyone else gets 404)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from sqlalchemy import Row

from mailgateway import assignment, replies, tokens, views
from mailgateway.access import is_member, require_member, viewable_inboxes
from mailgateway.config import Config, UserConfig
from mailgateway.domain import ConversationStatus
from mailgateway.errors import RefusedError
from mailgateway.logs import get_logger
from mailgateway.store import api as api_store
from mailgateway.store.outbound import OutboundStore
from mailgateway.store.repo import Store
from mailgateway.web.context import daemon_of

log = get_logger(__name__)

PREFIX = "/api/v1"
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
USER = web.RequestKey("user", UserConfig)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """A refusal answered as JSON: {"error": code, "message": text}."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def problem(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON error response."""
    body = {"error": code, "message": message}
    return web.json_response(body, status=status, headers=headers)


def not_found(what: str) -> ApiError:
    """404: the thing does not exist, or the user may not know it does."""
    return ApiError(404, "not_found", f"no such {what}")


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every answer under /api/ is JSON, refusals and faults included (no internal detail)."""
    if not request.path.startswith(PREFIX + "/"):
        return await handler(request)
    try:
        return await handler(request)
    except ApiError as error:
        return problem(error.status, error.code, error.message)
    except web.HTTPException as error:
        return problem(error.status, error.reason.lower().replace(" ", "_"), error.reason)
    except Exception as error:
        log.error("api.failed", path=request.path, error=type(error).__name__)
        return problem(503, "unavailable", "temporary failure, try again later")


def bearer_token(header: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header."""
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Requests under /api/ need a valid token; the handler sees the token's user."""
    if not request.path.startswith(PREFIX + "/"):
        return await handler(request)
    token = bearer_token(request.headers.get("Authorization", ""))
    daemon = daemon_of(request)
    user = None if token is None else await tokens.authenticate(daemon.config, daemon.store, token)
    if user is None:
        message = "a valid API token is required: Authorization: Bearer <token>"
        challenge = {"WWW-Authenticate": 'Bearer realm="mailgateway"'}
        return problem(401, "unauthorized", message, challenge)
    request[USER] = user
    return await handler(request)


# -- reading the request ---------------------------------------------------------------------------


def context(request: web.Request) -> tuple[Config, Store, UserConfig]:
    """The configuration, the store and the authenticated user of an API request."""
    daemon = daemon_of(request)
    return daemon.config, daemon.store, request[USER]


def query_limit(request: web.Request) -> int:
    """?limit=N, 1 to MAX_LIMIT (default DEFAULT_LIMIT)."""
    text = request.query.get("limit", str(DEFAULT_LIMIT))
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise ApiError(400, "bad_request", f"limit must be an integer from 1 to {MAX_LIMIT}")
    return int(text)


def query_status(request: web.Request) -> str | None:
    """?status=open|closed."""
    status = request.query.get("status")
    if status is not None and status not in set(ConversationStatus):
        raise ApiError(400, "bad_request", "status must be open or closed")
    return status


def path_id(request: web.Request) -> int:
    """The numeric {id} of the path (non-numbers name nothing)."""
    text = request.match_info["id"]
    if not text.isdigit() or len(text) > 18:
        raise not_found("conversation")
    return int(text)


def visible(config: Config, user: UserConfig, inbox: str | None = None) -> list[str]:
    """The inboxes the user may see, or just the one asked for (404 when not among them)."""
    slugs = viewable_inboxes(config, user.id)
    if inbox is None:
        return slugs
    if inbox not in slugs:
        raise not_found("inbox")
    return [inbox]


async def visible_conversation(request: web.Request) -> Row[Any]:
    """The conversation of the path, when the user may see it; 404 otherwise."""
    config, store, user = context(request)
    rows = await store.conversation_rows(ids=[path_id(request)], inboxes=visible(config, user))
    if not rows:
        raise not_found("conversation")
    return rows[0]


# -- handlers ------------------------------------------------------------------------------------


async def me(request: web.Request) -> web.Response:
    """The token's user."""
    user = request[USER]
    return web.json_response(
        {
            "id": user.id,
            "email": user.email,
            "first_name": user.first_name,
            "last_name": user.last_name,
            "role": str(user.role),
            "seat": str(user.seat),
            "teams": list(user.teams),
        }
    )


async def list_inboxes(request: web.Request) -> web.Response:
    """The inboxes the user may see, and whether they may act in each."""
    config, _store, user = context(request)
    found = []
    for slug in visible(config, user):
        inbox = config.inboxes[slug]
        found.append(
            {
                "slug": slug,
                "name": inbox.name,
                "default": inbox.default,
                "forwarding_address": inbox.fallback_email.forwarding_address,
                "can_act": is_member(config, inbox, user.id),
            }
        )
    return web.json_response({"inboxes": found})


async def list_conversations(request: web.Request) -> web.Response:
    """Conversations of the inboxes the user may see, newest activity first."""
    config, store, user = context(request)
    rows = await store.conversation_rows(
        inboxes=visible(config, user, request.query.get("inbox")),
        status=query_status(request),
        assignee=request.query.get("assignee"),
        limit=query_limit(request),
    )
    return web.json_response({"conversations": [views.conversation_view(r) for r in rows]})


async def show_conversation(request: web.Request) -> web.Response:
    """One conversation with its messages."""
    row = await visible_conversation(request)
    store = daemon_of(request).store
    detail = views.conversation_detail(row, await store.message_rows(row.id))
    deliveries = await OutboundStore(store.engine).deliveries(row.id)
    return web.json_response(views.with_deliveries(detail, deliveries))


async def acting_on(request: web.Request) -> tuple[Row[Any], Config, Store, UserConfig]:
    """The conversation of the path and the context, when the user may act on it: 404 when they
    may not see it, 403 when they may only view it."""
    row = await visible_conversation(request)
    config, store, user = context(request)
    try:
        require_member(config, row.inbox, user.id)
    except RefusedError as error:
        raise ApiError(403, "forbidden", str(error)) from None
    return row, config, store, user


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object (400 when it is not one)."""
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, "bad_request", "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    return body


def text_field(body: dict[str, Any], name: str, *, required: bool) -> str | None:
    """A string field of a JSON body (400 when missing but required, or not a string)."""
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise ApiError(400, "bad_request", f"{name} must be a non-empty string")
    return value


async def set_status(request: web.Request, status: ConversationStatus) -> web.Response:
    """Close or reopen, for members of the conversation's inbox only (viewers get 403)."""
    row, _config, store, user = await acting_on(request)
    await store.set_status(row.id, status)
    log.info("conversation.status_set", conversation_id=row.id, status=status, user=user.id)
    [updated] = await store.conversation_rows(ids=[row.id])
    return web.json_response(views.conversation_view(updated))


async def assign_conversation(request: web.Request) -> web.Response:
    """Assign to a user with access to the inbox (the assignment service decides, as the
    command line's `conversations assign` does)."""
    row, config, store, user = await acting_on(request)
    target = text_field(await json_body(request), "assignee", required=True)
    assert target is not None
    try:
        async with store.transaction() as connection:
            await assignment.assign_by_hand(connection, config, row.id, target, user.id)
    except RefusedError as error:
        raise ApiError(422, "refused", str(error)) from None
    log.info("conversation.assigned", conversation_id=row.id, assignee=target, user=user.id)
    [updated] = await store.conversation_rows(ids=[row.id])
    return web.json_response(views.conversation_view(updated))


async def reply_to_conversation(request: web.Request) -> web.Response:
    """Store a reply on the conversation and queue it for sending (the reply service checks
    the sending rules, as the command line's `reply` does): 202 with where it went."""
    row, config, store, user = await acting_on(request)
    body = await json_body(request)
    text = text_field(body, "text", required=True)
    html = text_field(body, "html", required=False)
    assert text is not None
    try:
        queued = await replies.queue_reply(
            config, store, replies.ReplyRequest(row.id, user.id, text, html)
        )
    except RefusedError as error:
        raise ApiError(422, "refused", str(error)) from None
    log.info("conversation.reply_queued", conversation_id=row.id, queue_id=queued.queue_id)
    sender = queued.sender
    return web.json_response(
        {
            "conversation_id": queued.conversation_id,
            "message": queued.message_row_id,
            "queue_id": queued.queue_id,
            "message_id": queued.message_id,
            "from": {"name": sender.name, "email": sender.address},
            "to": queued.to,
        },
        status=202,
    )


async def close_conversation(request: web.Request) -> web.Response:
    """Close a conversation."""
    return await set_status(request, ConversationStatus.CLOSED)


async def reopen_conversation(request: web.Request) -> web.Response:
    """Reopen a conversation."""
    return await set_status(request, ConversationStatus.OPEN)


def contact_view(row: Row[Any]) -> dict[str, Any]:
    """A contact, counting only conversations the user may see."""
    return {
        "email": row.email,
        "name": row.name or None,
        "owner": row.owner,
        "conversations": int(row.conversations),
        "last_activity_at": views.iso(row.last_activity_at),
        "created_at": views.iso(row.created_at),
    }


async def list_contacts(request: web.Request) -> web.Response:
    """Contacts with a conversation the user may see, most recently active first."""
    config, store, user = context(request)
    rows = await api_store.contact_rows(store, visible(config, user), limit=query_limit(request))
    return web.json_response({"contacts": [contact_view(row) for row in rows]})


async def show_contact(request: web.Request) -> web.Response:
    """One contact and its conversations the user may see."""
    config, store, user = context(request)
    inboxes = visible(config, user)
    found = await api_store.contact_rows(store, inboxes, email=request.match_info["email"])
    if not found:
        raise not_found("contact")
    ids = await api_store.contact_conversation_ids(store, found[0].id, inboxes)
    rows = await store.conversation_rows(ids=ids, inboxes=inboxes) if ids else []
    conversations = [views.conversation_view(r) for r in rows]
    return web.json_response({"contact": contact_view(found[0]), "conversations": conversations})


def add_routes(app: web.Application) -> None:
    """Register the API's routes (each one is described in openapi.json)."""
    app.router.add_get(f"{PREFIX}/me", me)
    app.router.add_get(f"{PREFIX}/inboxes", list_inboxes)
    app.router.add_get(f"{PREFIX}/conversations", list_conversations)
    app.router.add_get(f"{PREFIX}/conversations/{{id}}", show_conversation)
    app.router.add_post(f"{PREFIX}/conversations/{{id}}/close", close_conversation)
    app.router.add_post(f"{PREFIX}/conversations/{{id}}/reopen", reopen_conversation)
    app.router.add_post(f"{PREFIX}/conversations/{{id}}/assign", assign_conversation)
    app.router.add_post(f"{PREFIX}/conversations/{{id}}/reply", reply_to_conversation)
    app.router.add_get(f"{PREFIX}/contacts", list_contacts)
    app.router.add_get(f"{PREFIX}/contacts/{{email}}", show_contact)
