"""The worker's origin step on both databases: row by row and in batches, with configuration."""

from __future__ import annotations

from pathlib import Path

from mailgateway.auth import DkimVerifier
from mailgateway.config import WorkerConfig
from mailgateway.inbound.worker import InboundWorker
from mailgateway.store.repo import Delivery, Envelope, Store
from mailgateway.views import conversation_detail
from tests.dkimkeys import FakeDns
from tests.support import loaded
from tests.test_origin import read_fixture

SETTINGS = WorkerConfig(batch_size=10, max_attempts=3, poll_interval=0.1, retry_delay=0.0)
TRUST = '[trust]\nauthserv_ids = ["mx.acme.example"]\nverify_dkim = true\n'


def worker_for(store: Store, config_dir: Path) -> InboundWorker:
    """A worker with the test configuration (trusting mx.acme.example) and an empty DNS."""
    with (config_dir / "mailgateway.toml").open("a") as gateway:
        gateway.write(TRUST)
    worker = InboundWorker(store, SETTINGS, id_domain="mx.test", config=loaded(config_dir))
    worker.dkim = DkimVerifier(dns=FakeDns())
    return worker


async def shown(store: Store) -> dict[str, tuple[str, str, str | None]]:
    """Subject -> (contact e-mail, attribution, forwarded_by) of every stored message."""
    found = {}
    for row in await store.conversation_rows():
        detail = conversation_detail(row, await store.message_rows(row.id))
        for message in detail["messages"]:
            found[message["subject"]] = (
                detail["contact"]["email"],
                message["attribution"],
                message["forwarded_by"],
            )
    return found


EXPECTED = {
    "Fwd: Printer on fire": (
        "john.doe@customer.test",
        "forward_original_sender",
        "alice@acme.example",
    ),
    "Fwd: Refund": ("alice@acme.example", "sender", None),
}


async def test_rows_processed_one_by_one_get_their_origin(store: Store, config_dir: Path) -> None:
    """The one-row path (used after a failed batch) applies the trust policy as a batch does."""
    envelope = Envelope(mail_from="alice@acme.example")
    for name in ("gmail_en_qp.eml", "spoof_agent_unauthenticated.eml"):
        await store.enqueue(read_fixture(name), envelope, [Delivery("support", "s@x")])
    worker = worker_for(store, config_dir)
    for item in await store.claim(worker.name, 10, 3):
        assert await worker.process(item) is not None
    assert await shown(store) == EXPECTED


async def test_batch_gets_origins(store: Store, config_dir: Path) -> None:
    """A batch stored in one transaction carries each message's own origin."""
    envelope = Envelope(mail_from="alice@acme.example")
    for name in ("gmail_en_qp.eml", "spoof_agent_unauthenticated.eml"):
        await store.enqueue(read_fixture(name), envelope, [Delivery("support", "s@x")])
    assert await worker_for(store, config_dir).run_once() == 2
    assert await shown(store) == EXPECTED
