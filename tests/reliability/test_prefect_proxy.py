"""The Prefect API proxy the outage cases run through, checked against the session's Prefect test server:
it passes requests and events on, counts them, answers the configured share of writes with 503, and while
down it refuses connections and drops the open ones."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from prefect.events import Event
from prefect.events.clients import PrefectEventsClient
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.prefect_proxy import PrefectProxy, normalised_path, prefect_writes


@pytest.fixture
def upstream(prefect_api) -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


@pytest.fixture
def proxy(upstream: str) -> Iterator[PrefectProxy]:
    with PrefectProxy(upstream, seed=7) as proxy:
        yield proxy


def test_ids_are_normalised_and_writes_chosen() -> None:
    run = str(uuid.uuid4())
    assert normalised_path(f"/api/flow_runs/{run}/set_state") == "/api/flow_runs/{id}/set_state"
    assert prefect_writes("POST", "/api/flow_runs/{id}/set_state")
    assert prefect_writes("POST", "/api/logs/")
    assert prefect_writes("PATCH", "/api/artifacts/{id}")
    assert not prefect_writes("POST", "/api/flow_runs/filter")
    assert not prefect_writes("GET", "/api/flow_runs/{id}")
    assert not prefect_writes("POST", "/api/flows/")


def test_requests_pass_through_and_are_counted(proxy: PrefectProxy, upstream: str) -> None:
    name = f"proxied-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=proxy.api_url, timeout=30) as api:
        assert api.get("/health").json() is True
        created = api.post("/flows/", json={"name": name})
        assert created.status_code in (200, 201), created.text
        flow_id = created.json()["id"]
        assert api.get(f"/flows/{flow_id}").json()["name"] == name
        assert api.get("/no-such-endpoint").status_code == 404
    # the write reached the real server
    with httpx.Client(base_url=upstream, timeout=30) as direct:
        assert direct.get(f"/flows/{flow_id}").json()["name"] == name
    counts = proxy.counts()
    assert counts["by_path"] == {
        "GET /api/health": 1,
        "POST /api/flows/": 1,
        "GET /api/flows/{id}": 1,
        "GET /api/no-such-endpoint": 1,
    }
    assert counts["by_method"] == {"GET": 3, "POST": 1}
    assert proxy.requests_total == 4 and proxy.refused_total == 0


def test_events_pass_through_the_websocket_and_are_counted(proxy: PrefectProxy, upstream: str) -> None:
    resource = f"test.proxy.{uuid.uuid4().hex[:8]}"

    async def emit_two() -> None:
        async with PrefectEventsClient(api_url=proxy.api_url) as events:
            for n in range(2):
                await events.emit(Event(event=f"proxy.test.{n}", resource={"prefect.resource.id": resource}))

    asyncio.run(emit_two())
    assert proxy.events_total == 2
    assert proxy.counts()["ws_messages"] == 3  # the auth handshake and the two events
    query = {"filter": {"resource": {"id": [resource]}}, "limit": 10}
    deadline = time.monotonic() + 20
    names: list[str] = []
    with httpx.Client(base_url=upstream, timeout=30) as direct:
        while time.monotonic() < deadline and len(names) < 2:
            names = sorted(e["event"] for e in direct.post("/events/filter", json=query).json()["events"])
            time.sleep(0.2)
    assert names == ["proxy.test.0", "proxy.test.1"]


def statuses_under_faults(upstream: str, seed: int, requests: int) -> list[int]:
    with PrefectProxy(upstream, seed=seed) as proxy, httpx.Client(base_url=proxy.api_url, timeout=30) as api:
        proxy.fail(0.3)
        statuses = [api.post("/logs/", json=[]).status_code for _ in range(requests)]
        health = [api.get("/health").status_code for _ in range(20)]
        assert health == [200] * 20  # reads are never refused
        assert proxy.refused_total == statuses.count(503)
        assert proxy.counts()["refused"] == {"POST /api/logs/": statuses.count(503)}
        proxy.heal()
        assert api.post("/logs/", json=[]).status_code == 201
    return statuses


def test_a_seeded_share_of_writes_is_answered_503(proxy: PrefectProxy, upstream: str) -> None:
    statuses = statuses_under_faults(upstream, seed=1, requests=200)
    assert set(statuses) == {201, 503}
    assert 0.22 <= statuses.count(503) / len(statuses) <= 0.38, statuses.count(503)
    # the same seed gives the same answers, another seed others
    assert statuses_under_faults(upstream, seed=1, requests=50) == statuses[:50]
    assert statuses_under_faults(upstream, seed=2, requests=50) != statuses[:50]
    with httpx.Client(base_url=proxy.api_url, timeout=30) as api:
        proxy.fail(1.0)
        refused = api.post("/logs/", json=[])
    assert refused.status_code == 503
    assert refused.json() == {"exception_message": "Service Unavailable"}


def test_down_refuses_connections_and_drops_open_ones(proxy: PrefectProxy) -> None:
    async def outage() -> None:
        async with connect(proxy.api_url.replace("http", "ws") + "/events/in") as socket:
            await socket.ping()
            with httpx.Client(base_url=proxy.api_url, timeout=5) as kept_alive:
                assert kept_alive.get("/health").status_code == 200
                await asyncio.to_thread(proxy.down)
                assert not proxy.is_up
                # the open websocket is dropped
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(socket.recv(), 5)
                # the kept-alive connection is gone, and a new one is refused
                with pytest.raises(httpx.TransportError):
                    kept_alive.get("/health")
        with pytest.raises(httpx.ConnectError):
            httpx.get(proxy.api_url + "/health", timeout=5)
        with pytest.raises(OSError):
            await connect(proxy.api_url.replace("http", "ws") + "/events/in", open_timeout=5)

    asyncio.run(outage())
    port = proxy.port
    proxy.up()
    assert proxy.port == port and proxy.is_up
    assert httpx.get(proxy.api_url + "/health", timeout=5).json() is True


def test_down_for_a_while_comes_back_by_itself(proxy: PrefectProxy) -> None:
    proxy.down(1.5)
    refused_at = time.monotonic()
    with pytest.raises(httpx.ConnectError):
        httpx.get(proxy.api_url + "/health", timeout=5)
    deadline = refused_at + 10
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(proxy.api_url + "/health", timeout=5)
            break
        except httpx.ConnectError:
            time.sleep(0.1)
    else:
        raise AssertionError("the proxy did not come back")
    assert answer.json() is True
    assert time.monotonic() - refused_at >= 1.2
