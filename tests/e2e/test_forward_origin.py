"""Forwards through SMTP, end to end: each .eml lands on the right contact with the right
attribution and evidence, and spoofing attempts land on their real sender (both databases)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mailgateway.app import Gateway
from mailgateway.auth import DkimVerifier
from mailgateway.cli import main
from tests.dkimkeys import SELECTOR, FakeDns, sign
from tests.support import SALES, SUPPORT, RawSMTP, port_of, running_gateway, write_config
from tests.test_auth import unauthenticated
from tests.test_origin import read_fixture

AGENT = "alice@acme.example"
TRUSTED = '[trust]\nauthserv_ids = ["mx.acme.example"]\nverify_dkim = false\n'
OWN_DKIM = "[trust]\nauthserv_ids = []\nverify_dkim = true\n"

GatewayStarter = Callable[[str], AbstractAsyncContextManager[Gateway]]


@pytest.fixture
def config_for(tmp_path: Path, db_url: str) -> Callable[[str], Path]:
    """A configuration folder with the given [trust] section; sales logs forwards to forwarders."""

    def write(trust: str) -> Path:
        folder = write_config(tmp_path / "config", db_url)
        with (folder / "mailgateway.toml").open("a") as gateway:
            gateway.write(trust)
        with (folder / "inboxes" / "sales.toml").open("a") as sales:
            sales.write("\n[fallback_email]\noriginal_sender_of_forwards = false\n")
        return folder

    return write


@pytest.fixture
async def gateway(config_for: Callable[[str], Path]) -> AsyncIterator[Gateway]:
    """A gateway that believes mx.acme.example's Authentication-Results headers."""
    async with running_gateway(config_for(TRUSTED)) as running:
        yield running


async def deliver(gateway: Gateway, raw: bytes, rcpt: str = SUPPORT, mail_from: str = AGENT) -> int:
    """One SMTP transaction over a real socket; the queue id from the 250 reply."""
    client = await RawSMTP.connect(port_of(gateway))
    try:
        reply = await client.transaction(mail_from, [rcpt], raw)
    finally:
        await client.close()
    assert reply.startswith("250"), reply
    return int(reply.rsplit(" ", 1)[1])


async def landed(gateway: Gateway, queue_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Once the worker is done with the rows: queue id -> {conversation fields, message}."""
    async with asyncio.timeout(30):
        while any(row.state != "done" for row in await gateway.store.queue_rows()):
            await asyncio.sleep(0.05)
    found: dict[int, dict[str, Any]] = {}
    for row in await gateway.store.conversation_rows():
        for message in await gateway.store.message_rows(row.id):
            contact = {"email": row.contact_email, "name": row.contact_name}
            found[message.queue_id] = {"conversation": row.id, "contact": contact, "row": message}
    assert set(queue_ids) <= set(found)
    return found


def summary(entry: dict[str, Any]) -> tuple[Any, ...]:
    """(contact e-mail, contact name, message from, forwarded_by, attribution, rule, forward)."""
    message = entry["row"]
    evidence = message.evidence or {}
    return (
        entry["contact"]["email"],
        entry["contact"]["name"],
        message.from_email,
        message.forwarded_by,
        message.attribution,
        evidence.get("rule"),
        evidence.get("forward"),
    )


TRUSTED_FORWARDS = {
    "gmail_en_qp.eml": ("john.doe@customer.test", "John Doe", "separator"),
    "outlook365_de_base64.eml": ("juergen.mueller@kunde.test", "Jürgen Müller", "original_message"),
    "apple_mail_fr_qp.eml": ("emilie.durand@client.test", "Émilie Durand", "separator"),
    "thunderbird_es_8bit.eml": ("carlos.perez@cliente.test", "Carlos Pérez Gómez", "separator"),
    "new_outlook_pl_html_only.eml": (
        "zofia.wisniewska@klient.test", "Zofia Wiśniewska", "header_block"),
    "attached_rfc822_ja.eml": ("hanako.yamada@kokyaku.test", "山田 花子", "attachment"),
    "gmail_nested_chain.eml": ("karin.berg@reseller.test", "Karin Berg", "separator"),
    "yahoo_it_glued.eml": ("giulia.bianchi@cliente.test", "Giulia Bianchi", "separator"),
}  # fmt: skip


async def test_trusted_forwards_land_on_the_original_sender(gateway: Gateway) -> None:
    """An authenticated agent's forwards from eight clients and languages (QP, base64, HTML-only,
    attached, nested, with notes) each land on the original sender, forwarded by the agent."""
    ids = {name: await deliver(gateway, read_fixture(name)) for name in TRUSTED_FORWARDS}
    found = await landed(gateway, list(ids.values()))
    actual = {name: summary(found[queue_id]) for name, queue_id in ids.items()}
    expected = {
        name: (email, display, email, AGENT, "forward_original_sender", "trusted_forward", kind)
        for name, (email, display, kind) in TRUSTED_FORWARDS.items()
    }
    assert actual == expected
    evidence = found[ids["gmail_en_qp.eml"]]["row"].evidence
    assert evidence["header"].startswith("Authentication-Results: mx.acme.example; dkim=pass")
    assert evidence["quoted"] == "john.doe@customer.test"


ALICE = ("alice@acme.example", "Alice Nowak", "alice@acme.example")
SPOOFS = {
    # an outsider's fake forward of a "CEO" is the outsider's mail
    "spoof_outsider_fake_forward.eml": (
        ("mallory@evil.test", "Mallory", "mallory@evil.test"), None, "sender",
        "sender_not_a_user", "mallory@evil.test"),
    # an agent's address in From without authentication: the From header, nothing quoted
    "spoof_agent_unauthenticated.eml": (
        ALICE, None, "sender", "not_authenticated", "attacker@evil.test"),
    # an Authentication-Results header written by an untrusted host is ignored
    "spoof_untrusted_authentication_results.eml": (
        ALICE, None, "sender", "not_authenticated", "attacker@evil.test"),
    # a forged trusted-host header below the trusted host's own is ignored
    "spoof_forged_trusted_header_below.eml": (
        ALICE, None, "sender", "not_authenticated", "attacker@evil.test"),
    # a trusted pass for the attacker's domain does not vouch for the agent's From
    "spoof_misaligned_dkim.eml": (
        ALICE, None, "sender", "not_authenticated", "bounce@evil.test"),
    # an authenticated forward quoting one of our users, or our inbox, stays with the forwarder
    "forward_quoting_own_user.eml": (ALICE, AGENT, "forwarder", "quoted_sender_is_ours", AGENT),
    "forward_quoting_inbox.eml": (ALICE, AGENT, "forwarder", "quoted_sender_is_ours", AGENT),
    # an MTA's forward of the customer's own mail (Resent-*, SRS envelope) stays the customer's
    "mta_forward_srs_resent.eml": (
        ("john.doe@customer.test", "John Doe", "john.doe@customer.test"), None, "sender",
        "mta_forward", "SRS0=Ab1c=T4=customer.test=john.doe@customer-relay.test"),
}  # fmt: skip


async def test_spoofing_attempts_land_on_the_real_sender(gateway: Gateway) -> None:
    """Fake forwards, missing or untrusted authentication, quoted own addresses and MTA
    forwards are never attributed to the quoted sender."""
    ids = {
        name: await deliver(gateway, read_fixture(name), mail_from=spec[4])
        for name, spec in SPOOFS.items()
    }
    found = await landed(gateway, list(ids.values()))
    actual = {name: summary(found[queue_id])[:6] for name, queue_id in ids.items()}
    expected = {name: (*who, by, attribution, rule) for name, (who, by, attribution, rule, _) in
                SPOOFS.items()}  # fmt: skip
    assert actual == expected
    untrusted = found[ids["spoof_untrusted_authentication_results.eml"]]["row"].evidence
    assert untrusted["ignored_authserv_ids"] == ["smtp.evil.test"]
    assert untrusted["quoted"] == "ceo@bigcustomer.test"
    outsider = found[ids["spoof_outsider_fake_forward.eml"]]["row"].evidence
    assert outsider["warning"] == (
        "forward quoting ceo@bigcustomer.test not trusted: sender not a user"
    )
    contacts = {entry["contact"]["email"] for entry in found.values()}
    assert "ceo@bigcustomer.test" not in contacts


async def test_inbox_toggle_logs_forwards_to_the_forwarder(gateway: Gateway) -> None:
    """The same trusted forward: the original sender in support, the forwarder in sales
    (original_sender_of_forwards = false)."""
    raw = read_fixture("gmail_en_qp.eml")
    support, sales = await deliver(gateway, raw, SUPPORT), await deliver(gateway, raw, SALES)
    found = await landed(gateway, [support, sales])
    assert summary(found[support])[4:6] == ("forward_original_sender", "trusted_forward")
    assert summary(found[sales]) == (
        *ALICE,
        AGENT,
        "forwarder",
        "inbox_logs_forwards_to_forwarder",
        "separator",
    )


async def test_dkim_verified_by_our_own_check(config_for: Callable[[str], Path]) -> None:
    """With verify_dkim and no trusted hosts, our DKIM check (DNS injected) trusts a forward
    signed by the agent's domain, and refuses the same forward altered after signing."""
    signed = sign(unauthenticated("outlook365_de_base64.eml"), "acme.example")
    altered = signed.replace(b"\r\nFrom: Alice", b"\r\nFrom: Alice (really)")
    dns = FakeDns().publish("acme.example")
    async with running_gateway(config_for(OWN_DKIM)) as gateway:
        gateway.worker.dkim = DkimVerifier(dns=dns)
        good, bad = await deliver(gateway, signed), await deliver(gateway, altered)
        found = await landed(gateway, [good, bad])
    assert summary(found[good])[:5] == (
        "juergen.mueller@kunde.test", "Jürgen Müller", "juergen.mueller@kunde.test", AGENT,
        "forward_original_sender",
    )  # fmt: skip
    assert found[good]["row"].evidence["authentication"] == "dkim"
    assert found[good]["row"].evidence["header"] == f"DKIM-Signature: d=acme.example; s={SELECTOR}"
    assert summary(found[bad])[3:6] == (None, "sender", "not_authenticated")
    assert dns.asked == [f"{SELECTOR}._domainkey.acme.example."] * 2


async def test_conversations_show_returns_origin(config_for: Callable[[str], Path]) -> None:
    """`conversations show --json` gives the contact, from, forwarded_by, attribution, evidence."""
    folder = config_for(TRUSTED)
    async with running_gateway(folder) as gateway:
        queue_id = await deliver(gateway, read_fixture("attached_rfc822_ja.eml"))
        conversation = (await landed(gateway, [queue_id]))[queue_id]["conversation"]
    args = ["conversations", "show", str(conversation), "--json", "--config", str(folder)]
    result = await asyncio.to_thread(CliRunner().invoke, main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["contact"] == {"email": "hanako.yamada@kokyaku.test", "name": "山田 花子"}
    [message] = shown["messages"]
    assert message["from"] == {"email": "hanako.yamada@kokyaku.test", "name": "山田 花子"}
    assert (message["forwarded_by"], message["attribution"]) == (AGENT, "forward_original_sender")
    assert message["evidence"]["forward"] == "attachment"
    assert message["evidence"]["rule"] == "trusted_forward"
