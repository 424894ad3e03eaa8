"""Back-pressure over SMTP: 451 4.3.2 at MAIL while the inbound queue is too deep, on both
databases."""

from __future__ import annotations

from mailgateway.inbound.worker import InboundWorker
from mailgateway.intake.backpressure import QUEUE_FULL
from tests.e2e.conftest import GatewayFactory
from tests.support import SUPPORT, RawSMTP, make_message, port_of


async def test_smtp_refuses_with_451_4_3_2_until_the_queue_drains(
    gateway_factory: GatewayFactory,
) -> None:
    """With the worker stopped, MAIL is refused once the queue holds more than max_queue_depth
    rows; after a worker drains it, mail is accepted again."""
    async with gateway_factory(max_queue_depth=2) as gateway:
        gateway.worker.stop()
        gateway.handler.backpressure.refresh = 0
        await gateway.tasks[0]
        port = port_of(gateway)
        client = await RawSMTP.connect(port)
        replies = [
            await client.transaction("a@customer.test", [SUPPORT], make_message(subject=f"{n}"))
            for n in range(3)
        ]
        refused = await client.command("MAIL FROM:<a@customer.test>")
        await client.command("RSET")
        drain = InboundWorker(gateway.store, gateway.config.gateway.worker, id_domain="mx.test")
        while await drain.run_once():
            pass
        accepted = await client.transaction("a@customer.test", [SUPPORT], make_message())
        await client.close()
    assert [reply[:3] for reply in replies] == ["250", "250", "250"]
    assert refused == QUEUE_FULL
    assert accepted.startswith("250 ")
