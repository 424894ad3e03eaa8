"""The daemon's HTTP listener: /healthz, /metrics after real SMTP traffic, /openapi.json."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
from openapi_spec_validator import validate
from prometheus_client.parser import text_string_to_metric_families

from mailgateway.app import Gateway
from mailgateway.config import load_config
from mailgateway.store.db import create_engine
from mailgateway.store.repo import Store
from mailgateway.tokens import create_token
from mailgateway.web.server import build_app
from tests.e2e.conftest import GatewayFactory
from tests.e2e.daemon import send
from tests.e2e.http_support import call, http_base, wait_done
from tests.outbound_support import sending_config, smtp_sink
from tests.support import make_message, running_gateway

OPENAPI_FILE = Path(__file__).resolve().parents[2] / "mailgateway" / "web" / "openapi.json"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
UNREACHABLE_DB = "postgresql+asyncpg://postgres@127.0.0.1:9/nothing"


async def get(url: str) -> tuple[int, str]:
    """GET a URL; the status and body text."""
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def scrape(gateway: Gateway) -> Samples:
    """Every sample of /metrics by name and labels."""
    status, text = await get(http_base(gateway) + "/metrics")
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much a sample grew between two scrapes (absent counts as 0)."""
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


async def scrape_until(gateway: Gateway, before: Samples, name: str, grown: float) -> Samples:
    """Scrape until a sample has grown by `grown` since `before`; the last scrape."""
    async with asyncio.timeout(10):
        while delta(before, after := await scrape(gateway), name) < grown:
            await asyncio.sleep(0.05)
    return after


async def test_healthz_ok_while_everything_runs(gateway: Gateway) -> None:
    """/healthz is 200 with every check ok on a running gateway."""
    status, text = await get(http_base(gateway) + "/healthz")
    assert status == 200
    assert json.loads(text) == {
        "status": "ok",
        "checks": {"database": "ok", "smtp": "ok", "workers": "ok"},
    }


async def test_healthz_503_when_database_unreachable(gateway: Gateway) -> None:
    """/healthz is 503 naming the database when it cannot be reached."""
    working = gateway.store
    gateway.store = Store(create_engine(UNREACHABLE_DB))
    try:
        status, text = await get(http_base(gateway) + "/healthz")
    finally:
        await gateway.store.close()
        gateway.store = working
    body = json.loads(text)
    assert status == 503
    assert body["status"] == "failing"
    assert body["checks"]["database"].startswith("unreachable")
    assert body["checks"]["smtp"] == "ok"


async def test_healthz_503_when_listeners_closed(gateway: Gateway) -> None:
    """/healthz is 503 once the SMTP listeners stop accepting (as during shutdown)."""
    for server in gateway.servers:
        server.close()
    status, text = await get(http_base(gateway) + "/healthz")
    assert status == 503
    assert json.loads(text)["checks"]["smtp"] == "down"


async def test_metrics_after_traffic(gateway: Gateway) -> None:
    """After three accepted messages and two refused recipients, /metrics shows the accepted
    count, the refusals by code, the queue depth by state and the latency histogram."""
    port = int(gateway.sockets[0].rsplit(":", 1)[1])
    before = await scrape(gateway)
    for n in range(3):
        assert (await asyncio.to_thread(send, port, make_message(subject=f"m{n}")))[0] == 250
    unknown = await asyncio.to_thread(send, port, make_message(), "nobody@acme.inbox.example.net")
    relay = await asyncio.to_thread(send, port, make_message(), "someone@elsewhere.test")
    assert (unknown[0], relay[0]) == (550, 550)
    await wait_done(gateway.store, 3)
    after = await scrape(gateway)
    assert delta(before, after, "mailgateway_smtp_accepted_total") == 3
    assert delta(before, after, "mailgateway_smtp_rejected_total", code="550 5.1.1") == 1
    assert delta(before, after, "mailgateway_smtp_rejected_total", code="550 5.7.1") == 1
    assert delta(before, after, "mailgateway_inbound_stored_total") == 3
    assert delta(before, after, "mailgateway_inbound_processing_seconds_count") == 3
    assert after[("mailgateway_queue_depth", (("queue", "inbound"), ("state", "done")))] == 3
    assert after[("mailgateway_queue_depth", (("queue", "inbound"), ("state", "held")))] == 0
    assert after[("mailgateway_queue_depth", (("queue", "outbound"), ("state", "queued")))] == 0
    for name in ("sent", "deferred", "failed", "held"):
        assert ("mailgateway_outbound_" + name + "_total", ()) in after


async def test_metrics_count_outbound_outcomes(tmp_path: Path, db_url: str) -> None:
    """A reply the smarthost first answers 451 and then accepts counts one deferral and one
    sent message, and the outbound queue depth shows it sent."""
    async with smtp_sink(data_replies=["451 4.3.0 Try again later"]) as sink:
        config_dir = sending_config(tmp_path / "config", db_url, sink.port, dkim=False)
        async with running_gateway(config_dir) as gateway:
            port = int(gateway.sockets[0].rsplit(":", 1)[1])
            assert (await asyncio.to_thread(send, port, make_message()))[0] == 250
            await wait_done(gateway.store, 1)
            [conversation] = await gateway.store.conversation_rows()
            issued = await create_token(load_config(config_dir), gateway.store, "alice")
            before = await scrape(gateway)
            path = f"/api/v1/conversations/{conversation.id}/reply"
            status, _ = await call(http_base(gateway), "POST", path, issued.token, {"text": "Hi"})
            assert status == 202
            await sink.wait_for(1)
            after = await scrape_until(gateway, before, "mailgateway_outbound_sent_total", 1)
    assert delta(before, after, "mailgateway_outbound_deferred_total") == 1
    assert delta(before, after, "mailgateway_outbound_sent_total") == 1
    assert delta(before, after, "mailgateway_outbound_failed_total") == 0
    assert after[("mailgateway_queue_depth", (("queue", "outbound"), ("state", "sent")))] == 1


async def test_metrics_content_type_is_prometheus_text(gateway: Gateway) -> None:
    """/metrics answers in Prometheus' text exposition format."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(http_base(gateway) + "/metrics") as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        assert (await response.text()).startswith("# HELP ")


async def test_served_openapi_is_the_file_in_the_repository(gateway: Gateway) -> None:
    """/openapi.json serves exactly the description kept in the repository, a valid OpenAPI."""
    status, text = await get(http_base(gateway) + "/openapi.json")
    document = json.loads(OPENAPI_FILE.read_text())
    assert status == 200
    assert json.loads(text) == document
    validate(document)


def test_openapi_describes_every_api_route() -> None:
    """Every route under /api/ is in the OpenAPI description, and every described one exists."""
    app = build_app(None)  # type: ignore[arg-type]  # routes only; nothing is served
    routes = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/api/")
        and route.method != "HEAD"
    }
    document = json.loads(OPENAPI_FILE.read_text())
    described = {(method, path) for path, item in document["paths"].items() for method in item}
    assert routes == described


async def test_http_listener_stops_with_the_gateway(gateway_factory: GatewayFactory) -> None:
    """After shutdown nothing answers on the HTTP port any more."""
    async with gateway_factory() as running:
        base = http_base(running)
        assert (await get(base + "/healthz"))[0] == 200
    try:
        await get(base + "/healthz")
        raise AssertionError("the HTTP listener still answers after shutdown")
    except aiohttp.ClientConnectionError:
        pass
