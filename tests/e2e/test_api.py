"""The JSON API over real HTTP: tokens, and the inbox access rules for every role."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailgateway.store import api as api_store
from tests.e2e.http_support import (
    Seeded,
    assert_documented,
    call,
    seeded_gateway,
    write_roles_config,
)

CONVERSATION = "/api/v1/conversations/{id}"

# What each user may see and where they may act (sales is open to everyone).
SEES = {
    "alice": {"support", "sales"},  # member through her team
    "bob": {"billing", "sales"},  # member by name; not in support
    "carol": {"support", "billing", "sales"},  # super admin: sees all
    "dave": {"support", "billing", "sales"},  # account access: sees all
    "erin": {"support", "sales"},  # free seat, member by name
}
ACTS = {
    "alice": {"support", "sales"},
    "bob": {"billing", "sales"},
    "carol": {"sales"},
    "dave": {"sales"},
    "erin": {"support", "sales"},
}


@pytest.fixture
async def seeded(tmp_path: Path, db_url: str) -> AsyncIterator[Seeded]:
    """A gateway with every role configured and one conversation in support, billing, sales."""
    async with seeded_gateway(write_roles_config(tmp_path / "config", db_url)) as running:
        yield running


@pytest.mark.parametrize("user", sorted(SEES))
async def test_list_shows_exactly_the_inboxes_a_role_may_see(seeded: Seeded, user: str) -> None:
    """Each role lists the conversations of exactly the inboxes it may see."""
    status, body = await call(seeded.base, "GET", "/api/v1/conversations", seeded.tokens[user])
    assert status == 200
    assert_documented("GET", "/api/v1/conversations", 200, body)
    assert {c["inbox"] for c in body["conversations"]} == SEES[user]
    assert len(body["conversations"]) == len(SEES[user])


@pytest.mark.parametrize("user", sorted(SEES))
async def test_show_is_404_outside_the_visible_inboxes(seeded: Seeded, user: str) -> None:
    """A conversation in an inbox the user may not see answers exactly like one that does not
    exist (404, same body); a visible one comes with its messages."""
    _, missing = await call(seeded.base, "GET", "/api/v1/conversations/999999", seeded.tokens[user])
    for inbox, conversation_id in seeded.conversations.items():
        path = f"/api/v1/conversations/{conversation_id}"
        status, body = await call(seeded.base, "GET", path, seeded.tokens[user])
        assert_documented("GET", CONVERSATION, status, body)
        if inbox in SEES[user]:
            assert status == 200
            assert body["inbox"] == inbox
            assert [m["from"]["email"] for m in body["messages"]] == [seeded.contacts[inbox]]
        else:
            assert (status, body) == (404, missing)


@pytest.mark.parametrize("user", sorted(SEES))
async def test_close_and_reopen_follow_membership(seeded: Seeded, user: str) -> None:
    """Members close and reopen; view-only roles get 403 and change nothing; others get 404."""
    store = seeded.gateway.store
    for inbox, conversation_id in seeded.conversations.items():
        path = f"/api/v1/conversations/{conversation_id}/close"
        status, body = await call(seeded.base, "POST", path, seeded.tokens[user])
        assert_documented("POST", CONVERSATION + "/close", status, body)
        [row] = await store.conversation_rows(ids=[conversation_id])
        if inbox in ACTS[user]:
            assert (status, body["status"], row.status) == (200, "closed", "closed")
            path = f"/api/v1/conversations/{conversation_id}/reopen"
            status, body = await call(seeded.base, "POST", path, seeded.tokens[user])
            assert_documented("POST", CONVERSATION + "/reopen", status, body)
            assert (status, body["status"]) == (200, "open")
        else:
            assert status == (403 if inbox in SEES[user] else 404)
            assert row.status == "open"


@pytest.mark.parametrize("user", sorted(SEES))
async def test_contacts_only_from_visible_inboxes(seeded: Seeded, user: str) -> None:
    """Contacts are listed and shown only through conversations the user may see."""
    status, body = await call(seeded.base, "GET", "/api/v1/contacts", seeded.tokens[user])
    assert status == 200
    assert_documented("GET", "/api/v1/contacts", 200, body)
    assert {c["email"] for c in body["contacts"]} == {seeded.contacts[i] for i in SEES[user]}
    for inbox, email in seeded.contacts.items():
        status, body = await call(
            seeded.base, "GET", f"/api/v1/contacts/{email}", seeded.tokens[user]
        )
        assert_documented("GET", "/api/v1/contacts/{email}", status, body)
        if inbox in SEES[user]:
            assert status == 200
            assert [c["inbox"] for c in body["conversations"]] == [inbox]
        else:
            assert status == 404


@pytest.mark.parametrize("user", sorted(SEES))
async def test_inboxes_tell_where_the_user_may_act(seeded: Seeded, user: str) -> None:
    """The inbox list names the visible inboxes and whether the user may act in each."""
    status, body = await call(seeded.base, "GET", "/api/v1/inboxes", seeded.tokens[user])
    assert_documented("GET", "/api/v1/inboxes", status, body)
    acts = {inbox["slug"] for inbox in body["inboxes"] if inbox["can_act"]}
    seen = {inbox["slug"] for inbox in body["inboxes"]} - {"archive"}
    assert (seen, acts - {"archive"}) == (SEES[user], ACTS[user])


async def test_one_users_token_never_reads_another_inbox(seeded: Seeded) -> None:
    """Alice's token cannot reach billing (Bob's inbox) by id, by inbox filter or by contact,
    while Bob's token reads it."""
    billing = seeded.conversations["billing"]
    alice, bob = seeded.tokens["alice"], seeded.tokens["bob"]
    assert (await call(seeded.base, "GET", f"/api/v1/conversations/{billing}", alice))[0] == 404
    status, body = await call(seeded.base, "GET", "/api/v1/conversations", alice, inbox="billing")
    assert (status, body["error"]) == (404, "not_found")
    contact = f"/api/v1/contacts/{seeded.contacts['billing']}"
    assert (await call(seeded.base, "GET", contact, alice))[0] == 404
    status, body = await call(seeded.base, "GET", f"/api/v1/conversations/{billing}", bob)
    assert (status, body["subject"]) == (200, "for billing")


async def test_requests_without_a_valid_token_are_401(seeded: Seeded) -> None:
    """No token, a made-up token and a revoked token are all refused with 401."""
    path = "/api/v1/conversations"
    status, body = await call(seeded.base, "GET", path)
    assert_documented("GET", path, status, body)
    assert status == 401
    assert (await call(seeded.base, "GET", path, "mgt_" + "x" * 43))[0] == 401
    rows = await api_store.token_rows(seeded.gateway.store, "alice")
    assert await api_store.revoke_token(seeded.gateway.store, rows[0].id)
    assert (await call(seeded.base, "GET", path, seeded.tokens["alice"]))[0] == 401
    assert (await call(seeded.base, "GET", path, seeded.tokens["bob"]))[0] == 200


async def test_token_of_a_removed_user_stops_working_after_reload(
    seeded: Seeded, tmp_path: Path
) -> None:
    """A user taken out of users.toml loses API access at the next reload."""
    config_dir = tmp_path / "config"
    assert (await call(seeded.base, "GET", "/api/v1/me", seeded.tokens["erin"]))[0] == 200
    users = (config_dir / "users.toml").read_text()
    (config_dir / "users.toml").write_text(
        re.sub(r'\[\[users\]\]\nid = "erin".*?\n\n', "", users, flags=re.S)
    )
    (config_dir / "inboxes" / "support.toml").write_text(
        'name = "Support"\ndefault = true\n\n[access]\nmode = "specific"\nteams = ["support"]\n'
    )
    assert seeded.gateway.reload(config_dir)
    assert (await call(seeded.base, "GET", "/api/v1/me", seeded.tokens["erin"]))[0] == 401


async def test_bad_query_parameters_are_400(seeded: Seeded) -> None:
    """An unknown status or an out-of-range limit is refused with a JSON 400."""
    token = seeded.tokens["alice"]
    for params in ({"status": "pending"}, {"limit": "0"}, {"limit": "many"}):
        status, body = await call(seeded.base, "GET", "/api/v1/conversations", token, **params)
        assert_documented("GET", "/api/v1/conversations", status, body)
        assert (status, body["error"]) == (400, "bad_request")


async def test_filters_and_limit(seeded: Seeded) -> None:
    """status, inbox and limit narrow the list; newest activity comes first."""
    token, base = seeded.tokens["carol"], seeded.base
    closing = seeded.conversations["sales"]
    assert (await call(base, "POST", f"/api/v1/conversations/{closing}/close", token))[0] == 200
    _, closed = await call(base, "GET", "/api/v1/conversations", token, status="closed")
    assert [c["id"] for c in closed["conversations"]] == [closing]
    _, one = await call(base, "GET", "/api/v1/conversations", token, limit="1")
    assert [c["id"] for c in one["conversations"]] == [closing]
    _, support = await call(base, "GET", "/api/v1/conversations", token, inbox="support")
    assert [c["inbox"] for c in support["conversations"]] == ["support"]


async def test_me_names_the_tokens_user(seeded: Seeded) -> None:
    """/me answers with the user the token was issued to, role and seat included."""
    status, body = await call(seeded.base, "GET", "/api/v1/me", seeded.tokens["erin"])
    assert_documented("GET", "/api/v1/me", status, body)
    assert (body["id"], body["role"], body["seat"]) == ("erin", "member", "free")


async def test_unknown_api_path_is_json_404(seeded: Seeded) -> None:
    """An unknown path under /api/ answers a JSON error, not an HTML page."""
    status, body = await call(seeded.base, "GET", "/api/v1/nothing", seeded.tokens["alice"])
    assert (status, body["error"]) == (404, "not_found")


async def test_concurrent_requests_of_two_users_stay_apart(seeded: Seeded) -> None:
    """Fifty interleaved requests of two users each see only their own inboxes."""
    calls = [
        call(seeded.base, "GET", "/api/v1/conversations", seeded.tokens[user])
        for user in ("alice", "bob") * 25
    ]
    results = await asyncio.gather(*calls)
    for user, (status, body) in zip(("alice", "bob") * 25, results, strict=True):
        assert status == 200
        assert {c["inbox"] for c in body["conversations"]} == SEES[user]


@pytest.mark.parametrize("user", sorted(SEES))
async def test_assign_follows_membership(seeded: Seeded, user: str) -> None:
    """Members assign (here: to themselves); view-only roles get 403 and nothing changes;
    others get 404."""
    store = seeded.gateway.store
    for inbox, conversation_id in seeded.conversations.items():
        path = f"/api/v1/conversations/{conversation_id}/assign"
        status, body = await call(
            seeded.base, "POST", path, seeded.tokens[user], {"assignee": user}
        )
        assert_documented("POST", CONVERSATION + "/assign", status, body)
        [row] = await store.conversation_rows(ids=[conversation_id])
        if inbox in ACTS[user]:
            assert (status, body["assignee"], row.assignee) == (200, user, user)
        else:
            assert status == (403 if inbox in SEES[user] else 404)
            assert row.assignee is None


async def test_assign_to_a_user_without_access_is_refused(seeded: Seeded) -> None:
    """Assigning a support conversation to Bob (no access to support) is a 422 naming why."""
    path = f"/api/v1/conversations/{seeded.conversations['support']}/assign"
    status, body = await call(
        seeded.base, "POST", path, seeded.tokens["alice"], {"assignee": "bob"}
    )
    assert_documented("POST", CONVERSATION + "/assign", status, body)
    assert (status, body["error"]) == (422, "refused")
    assert "bob" in body["message"]


@pytest.mark.parametrize("user", sorted(SEES))
async def test_reply_follows_membership(seeded: Seeded, user: str) -> None:
    """Members of support reply (202, a queued outbound row on the conversation); view-only
    roles get 403 and others 404, with nothing queued."""
    conversation_id = seeded.conversations["support"]
    path = f"/api/v1/conversations/{conversation_id}/reply"
    status, body = await call(seeded.base, "POST", path, seeded.tokens[user], {"text": "On it."})
    assert_documented("POST", CONVERSATION + "/reply", status, body)
    messages = await seeded.gateway.store.message_rows(conversation_id)
    outbound = [m for m in messages if m.direction == "outbound"]
    if "support" in ACTS[user]:
        assert status == 202
        assert (body["to"], body["conversation_id"]) == (
            seeded.contacts["support"],
            conversation_id,
        )
        assert [m.id for m in outbound] == [body["message"]]
        assert "On it." in (outbound[0].text or "")
    else:
        assert status == (403 if "support" in SEES[user] else 404)
        assert outbound == []


async def test_reply_refused_where_sending_is_off(seeded: Seeded) -> None:
    """A member replying in an inbox whose fallback email does not send gets 422 and the
    reason; nothing is stored."""
    conversation_id = seeded.conversations["billing"]
    path = f"/api/v1/conversations/{conversation_id}/reply"
    status, body = await call(seeded.base, "POST", path, seeded.tokens["bob"], {"text": "Hi"})
    assert_documented("POST", CONVERSATION + "/reply", status, body)
    assert (status, body["error"]) == (422, "refused")
    assert len(await seeded.gateway.store.message_rows(conversation_id)) == 1


async def test_reply_and_assign_need_a_proper_body(seeded: Seeded) -> None:
    """A missing or empty text, a non-object body, or a missing assignee is a JSON 400."""
    token, base = seeded.tokens["alice"], seeded.base
    conversation_id = seeded.conversations["support"]
    reply = f"/api/v1/conversations/{conversation_id}/reply"
    assign = f"/api/v1/conversations/{conversation_id}/assign"
    for path, body in ((reply, {}), (reply, {"text": "  "}), (reply, ["text"]), (assign, {})):
        status, answer = await call(base, "POST", path, token, body)
        assert (status, answer["error"]) == (400, "bad_request"), (path, body)
