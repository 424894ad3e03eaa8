"""The outbound commands: `reply` and its refusals, `inboxes preview`, `queue list/retry` of
outbound rows, `from-address`, `dkim keygen`, and the [outbound] configuration checks."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import TypeVar

import dkim
import pytest
from click.testing import Result
from sqlalchemy import func, select, update

from mailgateway.domain import OutboundKind, OutboundState
from mailgateway.outbound import sign
from mailgateway.store import repo
from mailgateway.store.outbound import OutboundStore, Outgoing, from_addresses, outbound_queue
from mailgateway.store.repo import Store
from tests.cli_support import as_json, run, with_store
from tests.outbound_support import CUSTOMER, conversation, sending_config
from tests.support import make_message

T = TypeVar("T")


@pytest.fixture
def sending_dir(tmp_path: Path, db_url: str) -> Path:
    """The test configuration with the support inbox sending (no smarthost needed here)."""
    return sending_config(tmp_path / "config", db_url, 2525, dkim=False)


def new_conversation(db_url: str, inbox: str = "support") -> int:
    """A conversation in the inbox, made from one inbound message."""
    return with_store(db_url, lambda store: conversation(store, inbox=inbox))


def counts(db_url: str) -> tuple[int, int]:
    """How many messages rows and outbound rows exist."""

    async def read(store: Store) -> tuple[int, int]:
        async with store.engine.connect() as connection:
            messages = await connection.scalar(select(func.count()).select_from(repo.messages))
            queued = await connection.scalar(select(func.count()).select_from(outbound_queue))
        return int(messages or 0), int(queued or 0)

    return with_store(db_url, read)


def reply(config_dir: Path, conversation_id: int, user: str, *extra: str | Path) -> Result:
    """`reply ID --as USER --text Hello ...`."""
    return run(
        "reply", conversation_id, "--as", user, "--text", "Hello", *extra, "--config", config_dir
    )


def test_reply_stores_and_queues(sending_dir: Path, db_url: str, tmp_path: Path) -> None:
    """`reply --text-file --html-file --json` stores the reply on the conversation (direction
    outbound, signature filled, delivery queued) and lists it in `queue list --json`."""
    conversation_id = new_conversation(db_url)
    (tmp_path / "r.txt").write_text("Plain answer\n", encoding="utf-8")
    (tmp_path / "r.html").write_text("<html><body><p>HTML answer</p></body></html>")
    queued = as_json(
        run(
            "reply",
            conversation_id,
            "--as",
            "alice",
            "--text-file",
            tmp_path / "r.txt",
            "--html-file",
            tmp_path / "r.html",
            "--json",
            "--config",
            sending_dir,
        )
    )
    assert queued["from"] == {
        "name": "Alice Nowak from Acme Support",
        "email": "alice@acme.inbox.example.net",
    }
    assert queued["to"] == CUSTOMER
    shown = as_json(
        run("conversations", "show", conversation_id, "--json", "--config", sending_dir)
    )
    inbound, outbound = shown["messages"]
    assert inbound["delivery"] is None
    assert outbound["direction"] == "outbound"
    assert outbound["thread_reason"] == "in_reply_to"
    assert outbound["text"].startswith("Plain answer\n\n-- \nAlice Nowak\n")
    assert outbound["html"].endswith(
        '<div class="signature"><p>Alice Nowak<br>Acme &amp; Co Support</p></div>\n</body></html>'
    )
    assert outbound["delivery"]["state"] == "queued"
    rows = as_json(run("queue", "list", "--json", "--config", sending_dir))
    [row] = [r for r in rows if r["queue"] == "outbound"]
    assert (row["id"], row["state"], row["kind"], row["rcpt_to"]) == (
        queued["queue_id"],
        "queued",
        "reply",
        CUSTOMER,
    )


@pytest.mark.parametrize(
    ("user", "reason"),
    [
        ("carol", "can only view"),  # super_admin, not a member
        ("dave", "can only view"),  # account_access, not a member
        ("bob", "not a member"),
        ("nobody", "unknown user"),
    ],
)
def test_reply_refused_for_users_who_may_not_act(
    sending_dir: Path, db_url: str, user: str, reason: str
) -> None:
    """View-only admins, non-members and unknown users are refused (exit 1, one line), and
    nothing is written."""
    conversation_id = new_conversation(db_url)
    result = reply(sending_dir, conversation_id, user)
    assert result.exit_code == 1
    assert reason in result.stderr and result.stderr.count("\n") == 1
    assert counts(db_url) == (1, 0)


def test_super_admin_who_is_a_member_may_reply(sending_dir: Path, db_url: str) -> None:
    """An admin who is also a member of the inbox acts like any member."""
    text = (sending_dir / "inboxes" / "support.toml").read_text()
    (sending_dir / "inboxes" / "support.toml").write_text(
        text.replace('teams = ["support"]', 'teams = ["support"]\nusers = ["carol"]', 1)
    )
    assert reply(sending_dir, new_conversation(db_url), "carol").exit_code == 0


@pytest.mark.parametrize(
    ("inbox", "reason"),
    [("sales", "switched off"), ("archive", "disabled")],
)
def test_reply_refused_when_the_channel_cannot_send(
    sending_dir: Path, db_url: str, inbox: str, reason: str
) -> None:
    """Sending switched off, or the fallback email disabled, refuses the reply (exit 1)."""
    conversation_id = new_conversation(db_url, inbox)
    result = reply(sending_dir, conversation_id, "alice")
    assert result.exit_code == 1 and reason in result.stderr
    assert counts(db_url) == (1, 0)


def test_reply_refused_when_team_channel_disabled(
    sending_dir: Path, db_url: str, tmp_path: Path
) -> None:
    """A conversation on a disabled team mailbox cannot be answered through it (exit 1)."""
    secret = tmp_path / "secret"
    secret.write_text("x")
    server = (
        f'{{ host = "127.0.0.1", port = 1, tls = "none", user = "u", password_file = "{secret}" }}'
    )
    with (sending_dir / "inboxes" / "support.toml").open("a") as handle:
        handle.write(
            f'\n[[channels]]\naddress = "help@acme.example"\nstatus = "disabled"\n'
            f"imap = {server}\nsmtp = {server}\n"
        )
    conversation_id = new_conversation(db_url)

    async def move(store: Store) -> None:
        async with store.engine.begin() as connection:
            await connection.execute(update(repo.conversations).values(channel="help@acme.example"))

    with_store(db_url, move)
    result = reply(sending_dir, conversation_id, "alice")
    assert result.exit_code == 1 and "help@acme.example" in result.stderr
    assert "disabled" in result.stderr


def test_reply_refused_from_unverified_custom_address(sending_dir: Path, db_url: str) -> None:
    """A custom from address that was never verified refuses the reply and says how to
    verify it."""
    with (sending_dir / "inboxes" / "support.toml").open("a") as handle:
        handle.write('from_address = "help@acme.example"\n')
    result = reply(sending_dir, new_conversation(db_url), "alice")
    assert result.exit_code == 1
    assert "not verified" in result.stderr and "from-address verify" in result.stderr
    assert counts(db_url) == (1, 0)


@pytest.mark.parametrize("column", ["subject", "contact"])
def test_header_values_with_line_breaks_refused_before_writing(
    sending_dir: Path, db_url: str, column: str
) -> None:
    """A subject or contact name holding CR/LF (header injection) refuses the reply before
    anything is stored or queued."""
    conversation_id = new_conversation(db_url)

    async def poison(store: Store) -> None:
        async with store.engine.begin() as connection:
            if column == "subject":
                await connection.execute(
                    update(repo.conversations).values(subject="Hi\r\nBcc: evil@x.test")
                )
            else:
                await connection.execute(update(repo.contacts).values(name="J\nBcc: evil@x.test"))

    with_store(db_url, poison)
    result = reply(sending_dir, conversation_id, "alice")
    assert result.exit_code == 1 and "line break" in result.stderr
    assert counts(db_url) == (1, 0)


@pytest.mark.parametrize("args", [[], ["--text", "a", "--text-file", "x"], ["--text"]])
def test_reply_bad_usage_exit_2(sending_dir: Path, args: list[str]) -> None:
    """`reply` needs exactly one of --text and --text-file (exit 2 otherwise)."""
    (sending_dir / "x").write_text("x")
    args = [a if a != "x" else str(sending_dir / "x") for a in args]
    assert run("reply", "1", "--as", "alice", *args, "--config", sending_dir).exit_code == 2


def test_reply_to_unknown_conversation_exit_1(sending_dir: Path) -> None:
    """Replying to a conversation that does not exist is refused."""
    result = reply(sending_dir, 4242, "alice")
    assert result.exit_code == 1 and "no conversation 4242" in result.stderr


def test_preview_shows_from_and_signature_and_sends_nothing(sending_dir: Path, db_url: str) -> None:
    """`inboxes preview` shows the from name, from address and the signature as text and as
    HTML (agent names HTML-escaped), writing nothing."""
    preview = as_json(
        run("inboxes", "preview", "support", "--as", "erin", "--json", "--config", sending_dir)
    )
    assert preview["from_name"] == "Erin <O'Brien & Co> from Acme Support"
    assert preview["from_address"] == "erin@acme.inbox.example.net"
    assert preview["sending_enabled"] is True and preview["custom_address"] is False
    assert preview["signature"] == {
        "format": "html",
        "text": "Erin <O'Brien & Co>\nAcme & Co Support",
        "html": "<p>Erin &lt;O&#x27;Brien &amp; Co&gt;<br>Acme &amp; Co Support</p>",
    }
    shown = run("inboxes", "preview", "support", "--as", "erin", "--config", sending_dir)
    assert shown.stdout.startswith('From: "Erin <O\'Brien & Co> from Acme Support" <erin@')
    assert counts(db_url) == (0, 0)


def test_preview_company_mode_free_plan_and_text_signature(sending_dir: Path) -> None:
    """Company from names, the free plan's domain and a text signature with an HTML twin."""
    gateway = (sending_dir / "mailgateway.toml").read_text()
    (sending_dir / "mailgateway.toml").write_text(
        gateway.replace("[account]\n", '[account]\nplan = "free"\n', 1)
    )
    (sending_dir / "inboxes" / "sales.toml").write_text(
        'name = "Sales"\n[fallback_email]\nfrom_name = "company"\nfrom_company = "Acme Sales"\n'
        'signature = "Cheers,\\n{{ first_name }} <{{last_name}}>"\n'
    )
    preview = as_json(
        run("inboxes", "preview", "sales", "--as", "bob", "--json", "--config", sending_dir)
    )
    assert (preview["from_name"], preview["from_address"]) == (
        "Acme Sales",
        "bob@acme.free.example.net",
    )
    assert preview["sending_enabled"] is False
    assert preview["signature"]["text"] == "Cheers,\nBob <Stone>"
    assert preview["signature"]["html"] == "Cheers,<br>\nBob &lt;Stone&gt;"


def test_preview_unknown_inbox_or_user_exit_1(sending_dir: Path) -> None:
    """Previewing an unknown inbox or for an unknown user is refused."""
    assert (
        run("inboxes", "preview", "nope", "--as", "alice", "--config", sending_dir).exit_code == 1
    )
    assert run("inboxes", "preview", "support", "--as", "x", "--config", sending_dir).exit_code == 1


def set_state(db_url: str, queue_id: int, state: OutboundState) -> None:
    """Put an outbound row in a state."""

    async def change(store: Store) -> None:
        async with store.engine.begin() as connection:
            await connection.execute(
                update(outbound_queue).where(outbound_queue.c.id == queue_id).values(state=state)
            )

    with_store(db_url, change)


def queue_one(db_url: str) -> int:
    """One outbound row that belongs to no conversation."""
    outgoing = Outgoing(make_message(), OutboundKind.REPLY, "a@acme.example", (CUSTOMER,))
    return with_store(db_url, lambda store: OutboundStore(store.engine).queue(outgoing))


@pytest.mark.parametrize("state", list(OutboundState))
def test_queue_list_shows_outbound_rows_in_every_state(
    sending_dir: Path, db_url: str, state: OutboundState
) -> None:
    """`queue list --state S --json` lists outbound rows of every state with queue "outbound";
    `--all` lists them too, and the default list shows only those not finished."""
    queue_id = queue_one(db_url)
    set_state(db_url, queue_id, state)
    listed = as_json(run("queue", "list", "--state", state, "--json", "--config", sending_dir))
    assert [(r["id"], r["queue"], r["state"]) for r in listed] == [(queue_id, "outbound", state)]
    everything = as_json(run("queue", "list", "--all", "--json", "--config", sending_dir))
    assert [r["id"] for r in everything] == [queue_id]
    default = as_json(run("queue", "list", "--json", "--config", sending_dir))
    finished = state in (OutboundState.SENT, OutboundState.FAILED)
    assert [r["id"] for r in default] == ([] if finished else [queue_id])


@pytest.mark.parametrize(
    ("state", "retried"),
    [
        (OutboundState.HELD, True),
        (OutboundState.DEFERRED, True),
        (OutboundState.FAILED, True),
        (OutboundState.SENT, False),
        (OutboundState.ACTIVE, False),
    ],
)
def test_queue_retry_outbound(
    sending_dir: Path, db_url: str, state: OutboundState, retried: bool
) -> None:
    """`queue retry` queues a held, deferred or failed outbound row again with a fresh attempt
    count; a sent or sending row is refused (exit 1)."""
    queue_id = queue_one(db_url)
    set_state(db_url, queue_id, state)
    result = run("queue", "retry", queue_id, "--config", sending_dir)
    assert result.exit_code == (0 if retried else 1), result.output
    [row] = as_json(run("queue", "list", "--all", "--json", "--config", sending_dir))
    assert row["state"] == ("queued" if retried else state)


def test_queue_retry_same_id_in_both_queues(sending_dir: Path, db_url: str) -> None:
    """When an inbound and an outbound row with one id can both be retried, `queue retry` asks
    for --queue; with it, only that queue's row is retried."""

    async def held_inbound(store: Store) -> int:
        [queue_id] = await store.enqueue(
            make_message(), repo.Envelope(mail_from="a@x.test"), [repo.Delivery("support", "s@x")]
        )
        await store.claim("w", 1, 3)
        await store.fail(queue_id, "RuntimeError: boom", hold=True, retry_at=repo.utcnow())
        return queue_id

    inbound_id = with_store(db_url, held_inbound)
    outbound_id = queue_one(db_url)
    assert inbound_id == outbound_id
    set_state(db_url, outbound_id, OutboundState.HELD)
    ambiguous = run("queue", "retry", outbound_id, "--config", sending_dir)
    assert ambiguous.exit_code == 1 and "--queue" in ambiguous.stderr
    chosen = run("queue", "retry", outbound_id, "--queue", "outbound", "--config", sending_dir)
    assert chosen.exit_code == 0
    rows = as_json(run("queue", "list", "--all", "--json", "--config", sending_dir))
    assert sorted((r["queue"], r["state"]) for r in rows) == [
        ("inbound", "held"),
        ("outbound", "queued"),
    ]


def test_from_address_verify_and_confirm_commands(sending_dir: Path, db_url: str) -> None:
    """`from-address verify` queues a code mail (the code is stored only hashed); a wrong
    `confirm` exits 1; an address no inbox uses is refused."""
    with (sending_dir / "inboxes" / "support.toml").open("a") as handle:
        handle.write('from_address = "help@acme.example"\n')
    result = run("from-address", "verify", "help@acme.example", "--config", sending_dir)
    assert result.exit_code == 0 and "queued as outbound row" in result.stdout
    [row] = as_json(run("queue", "list", "--json", "--config", sending_dir))
    assert (row["kind"], row["mail_from"], row["rcpt_to"]) == (
        "verification",
        "",
        "help@acme.example",
    )
    wrong = run("from-address", "confirm", "help@acme.example", "abcdef", "--config", sending_dir)
    assert wrong.exit_code == 1 and "wrong code" in wrong.stderr
    other = run("from-address", "verify", "me@elsewhere.test", "--config", sending_dir)
    assert other.exit_code == 1 and "not the custom from address" in other.stderr


def test_confirm_refuses_expired_and_exhausted_codes(sending_dir: Path, db_url: str) -> None:
    """An expired code is refused; five wrong codes revoke the pending code."""
    with (sending_dir / "inboxes" / "support.toml").open("a") as handle:
        handle.write('from_address = "help@acme.example"\n')
    assert (
        run("from-address", "verify", "help@acme.example", "--config", sending_dir).exit_code == 0
    )

    async def expire(store: Store) -> None:
        async with store.engine.begin() as connection:
            await connection.execute(update(from_addresses).values(code_expires_at=repo.utcnow()))

    with_store(db_url, expire)
    expired = run("from-address", "confirm", "help@acme.example", "123456", "--config", sending_dir)
    assert expired.exit_code == 1 and "expired" in expired.stderr
    assert (
        run("from-address", "verify", "help@acme.example", "--config", sending_dir).exit_code == 0
    )
    for _ in range(5):
        run("from-address", "confirm", "help@acme.example", "x", "--config", sending_dir)
    last = run("from-address", "confirm", "help@acme.example", "x", "--config", sending_dir)
    assert last.exit_code == 1 and "no code is pending" in last.stderr


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_dkim_keygen_writes_private_key_and_prints_record(tmp_path: Path, algorithm: str) -> None:
    """`dkim keygen` writes a key readable by its owner only and prints a TXT record whose
    public key verifies what the key signs; an existing key is never overwritten."""
    out = tmp_path / "keys" / "mg1.key"
    args = [
        "dkim",
        "keygen",
        "--selector",
        "mg1",
        "--domain",
        "Acme.Example",
        "--algorithm",
        algorithm,
        "--out",
        out,
        "--config",
        tmp_path,
    ]
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    record = result.stdout.strip().splitlines()[-1]
    assert record.startswith('mg1._domainkey.acme.example. IN TXT ( "v=DKIM1; k=' + algorithm)
    value = "".join(part for part in record.split('"')[1::2])
    key = sign.parse_key(out.read_bytes())
    if algorithm == "rsa":
        assert "-----BEGIN RSA PRIVATE KEY-----" in out.read_text()
    signed = sign.Signer(key, "mg1", "acme.example").sign_now(make_message(sender="a@acme.example"))
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: value.encode())
    again = run(*args)
    assert again.exit_code == 1 and "never overwritten" in again.stderr


def test_dkim_keygen_default_path_and_bad_selector(tmp_path: Path) -> None:
    """Without --out the key goes to CONFIG/dkim/<selector>.key; a bad selector is usage
    error 2."""
    result = run("dkim", "keygen", "--selector", "s1", "--domain", "a.test", "--config", tmp_path)
    assert result.exit_code == 0 and (tmp_path / "dkim" / "s1.key").is_file()
    bad = run("dkim", "keygen", "--selector", "a b", "--domain", "a.test", "--config", tmp_path)
    assert bad.exit_code == 2


def test_dkim_key_missing_or_without_selector_is_invalid_config(sending_dir: Path) -> None:
    """A dkim_key that is not a readable file, or one without dkim_selector, fails
    `check-config` with exit 2 naming mailgateway.toml and the key."""
    gateway = (sending_dir / "mailgateway.toml").read_text()
    (sending_dir / "mailgateway.toml").write_text(
        gateway + 'dkim_selector = "mg1"\ndkim_key = "nope.key"\n'
    )
    missing = run("check-config", "--config", sending_dir)
    assert missing.exit_code == 2
    assert "mailgateway.toml" in missing.stderr and "outbound.dkim_key" in missing.stderr
    (sending_dir / "nope.key").write_text("x")
    (sending_dir / "mailgateway.toml").write_text(gateway + 'dkim_key = "nope.key"\n')
    unnamed = run("check-config", "--config", sending_dir)
    assert unnamed.exit_code == 2 and "dkim_selector must be set" in unnamed.stderr


def test_duplicate_from_names_error_names_both_files(sending_dir: Path) -> None:
    """Two sending fallback emails that would show the same from name fail with an error that
    names both inbox files."""
    (sending_dir / "inboxes" / "sales.toml").write_text(
        'name = "Sales"\n[fallback_email]\nsend_enabled = true\nfrom_company = "ACME support"\n'
    )
    result = run("check-config", "--config", sending_dir)
    assert result.exit_code == 2
    assert "inboxes/sales.toml" in result.stderr and "inboxes/support.toml" in result.stderr
