"""`conversations show` explains threading decisions, auto-reply flags and delivery failures."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from click.testing import CliRunner

from mailgateway.cli import main
from mailgateway.store.db import create_engine
from mailgateway.store.repo import Store
from tests.test_threading_worker import deliver, fixture, process, send_ours, start


async def bounced_conversation(db_url: str, config_dir: Path) -> int:
    """John's conversation with our reply and its Postfix bounce; its id."""
    store = Store(create_engine(db_url))
    try:
        first = await start(store, config_dir)
        await send_ours(store, first.conversation_id)
        await deliver(store, fixture("bounces/dsn-postfix"), mail_from="")
        await process(store, config_dir)
        return first.conversation_id
    finally:
        await store.close()


def test_show_prints_decisions(db_url: str, config_dir: Path) -> None:
    """The text view names the rule's detail, the auto-reply reasons and the delivery failure;
    the JSON view carries the same fields."""
    conversation_id = asyncio.run(bounced_conversation(db_url, config_dir))
    args = ["conversations", "show", str(conversation_id), "--config", str(config_dir)]
    text = CliRunner().invoke(main, args, catch_exceptions=False)
    assert text.exit_code == 0, text.output
    assert "thread: bounce of a stored message" in text.output
    assert "auto-submitted: auto-submitted:auto-replied, report:delivery-status" in text.output
    assert "delivery failed: john.doe@customer.test: 550 5.1.1" in text.output
    shown = CliRunner().invoke(main, [*args, "--json"], catch_exceptions=False)
    ours, bounce = json.loads(shown.stdout)["messages"][1:]
    assert ours["delivery_status"] == "failed"
    assert bounce["bounce"]["recipients"][0]["status"] == "5.1.1"
