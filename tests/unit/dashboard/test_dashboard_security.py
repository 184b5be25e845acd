"""The dashboard against hostile requests: Host and Origin, stream cap, long parameters, error bodies.

The alert consumer is not started (no broker); workers and Elasticsearch are closed ports or a
small aiohttp stand-in.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from riskengine.dashboard.feed import AlertFeed
from riskengine.dashboard.server import create_dashboard
from riskengine.settings import Secret, Settings


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def no_feed(monkeypatch):
    async def stop(self):
        return None

    monkeypatch.setattr(AlertFeed, "start", lambda self: None)
    monkeypatch.setattr(AlertFeed, "stop", stop)


async def served(settings: Settings) -> TestClient[web.Request, web.Application]:
    client = TestClient(TestServer(create_dashboard(settings), host="127.0.0.1"))
    await client.start_server()
    return client


#: Where the reporting views look for Elasticsearch (nothing listens there).
SEARCH_PORT = closed_port()


def settings_for(worker_url: str, **changes) -> Settings:
    return dataclasses.replace(
        Settings(),
        dashboard_worker_urls=worker_url,
        elasticsearch_url=f"http://127.0.0.1:{SEARCH_PORT}",
        **changes,
    )


@pytest.fixture
async def dashboard(no_feed):
    client = await served(settings_for(f"http://127.0.0.1:{closed_port()}", dashboard_max_streams=3))
    yield client
    await client.close()


async def test_a_foreign_host_is_a_421_and_a_foreign_origin_a_403(dashboard):
    client = dashboard
    assert (await client.get("/api/health")).status == 200
    for host in ("evil.example", f"evil.example:{client.port}", "127.0.0.1:1"):
        assert (await client.get("/api/health", headers={"Host": host})).status == 421, host
    for origin in ("http://evil.example", "http://127.0.0.1:1", "null"):
        assert (await client.get("/api/health", headers={"Origin": origin})).status == 403, origin
    own = {"Origin": f"http://localhost:{client.port}", "Host": f"localhost:{client.port}"}
    assert (await client.get("/api/health", headers=own)).status == 200


async def test_a_configured_extra_host_name_is_accepted(no_feed):
    settings = settings_for("http://127.0.0.1:6066", web_allowed_hosts="dashboard.internal, other")
    client = await served(settings)
    try:
        response = await client.get("/api/health", headers={"Host": f"dashboard.internal:{client.port}"})
        assert response.status == 200
    finally:
        await client.close()


async def test_a_post_that_is_not_json_is_a_415(dashboard):
    # No POST route exists: the 415 comes before routing, so a future one is covered too.
    response = await dashboard.post("/api/health", data=b"x", headers={"Content-Type": "text/plain"})
    assert response.status == 415


async def test_alert_streams_are_capped(dashboard):
    client = dashboard
    streams = [await client.get("/api/alerts/stream") for _ in range(3)]
    assert [s.status for s in streams] == [200, 200, 200]
    refused = await client.get("/api/alerts/stream")
    assert refused.status == 503 and "at most 3" in (await refused.json())["error"]
    streams[0].close()
    for _ in range(50):  # The server notices the closed connection on its next write or read.
        await asyncio.sleep(0.05)
        again = await client.get("/api/alerts/stream")
        if again.status == 200:
            again.close()
            break
    else:
        raise AssertionError("a closed stream's place was never freed")
    for stream in streams[1:]:
        stream.close()


async def test_concurrent_streams_never_pass_the_cap(dashboard):
    answers = await asyncio.gather(*(dashboard.get("/api/alerts/stream") for _ in range(10)))
    assert sorted(a.status for a in answers) == [200] * 3 + [503] * 7
    for answer in answers:
        answer.close()


async def test_an_over_long_parameter_is_a_400(dashboard):
    response = await dashboard.get("/api/reporting/alerts?since=" + "9" * 5000)
    assert response.status == 400


async def test_error_bodies_name_no_internal_address(dashboard):
    worker = await dashboard.get("/api/users/U000001")
    assert worker.status == 503
    text = await worker.text()
    assert "127.0.0.1" not in text and "Connect" not in text
    stats = await (await dashboard.get("/api/stats")).json()
    assert stats["workers"][0]["up"] is False
    assert "127.0.0.1:" not in stats["workers"][0]["error"]
    search = await dashboard.get("/api/reporting/alerts")
    assert search.status in (502, 503)
    text = await search.text()
    assert str(SEARCH_PORT) not in text and "http" not in text, text


async def test_the_dashboard_sends_the_worker_token(no_feed):
    seen: list[str | None] = []

    async def user(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"userId": "U1"})

    worker = web.Application()
    worker.router.add_get("/users/{user_id}", user)
    worker_server = TestServer(worker, host="127.0.0.1")
    await worker_server.start_server()
    settings = settings_for(
        f"http://127.0.0.1:{worker_server.port}", worker_admin_token=Secret("worker-token")
    )
    client = await served(settings)
    try:
        assert (await client.get("/api/users/U1")).status == 200
        assert seen == ["Bearer worker-token"]
    finally:
        await client.close()
        await worker_server.close()
