"""The worker's web server against hostile requests, served in-process without a broker.

The Faust app is built and its web server's aiohttp application served by aiohttp's test server;
no consumer runs, so routed views are told they are on the owner (Faust's ``SameNode``).
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from faust.exceptions import SameNode

from riskengine.core.account_pairs import PairState, encode_pair_state
from riskengine.core.market import MarketState, encode_market_state
from riskengine.settings import Secret, Settings
from riskengine.worker.app import create_app
from riskengine.worker.snapshots import Snapshotter
from riskengine.worker.tables.user_state import MARKET_TABLE_NAME, PAIR_TABLE_NAME

TOKEN = "worker-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"Content-Type": "application/json"}


async def serve(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> TestClient[web.Request, web.Application]:
    app = create_app(settings)
    app.finalize()

    async def on_owner(*args, **kwargs):
        raise SameNode()

    monkeypatch.setattr(app.router, "route_topic_req", on_owner)
    app.web.init_server()
    # The aiohttp driver's application (the base Web type does not declare it).
    application: web.Application = cast(Any, app.web).web_app
    client = TestClient(TestServer(application, host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
async def worker(tmp_path, monkeypatch):
    settings = dataclasses.replace(
        Settings(), worker_admin_token=Secret(TOKEN), worker_snapshot_dir=tmp_path, s3_bucket=""
    )
    client = await serve(settings, monkeypatch)
    yield client
    await client.close()


@pytest.fixture
async def open_worker(tmp_path, monkeypatch):
    settings = dataclasses.replace(Settings(), worker_snapshot_dir=tmp_path, s3_bucket="")
    client = await serve(settings, monkeypatch)
    yield client
    await client.close()


@pytest.mark.parametrize("path", ["/table/", "/table/user-state/", "/router/"])
async def test_fausts_raw_table_and_router_pages_are_off(worker, path):
    assert (await worker.get(path, headers=AUTH)).status == 404
    assert (await worker.get(path)).status == 404


@pytest.mark.parametrize("path", ["/users/U1", "/users/U1/orders"])
async def test_state_views_need_the_token_when_one_is_set(worker, path):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = await worker.get(path, headers=headers)
        assert response.status == 401, headers
    # With the token the view answers (no such user in an empty table).
    response = await worker.get(path, headers=AUTH)
    assert response.status == 404 and "unknown user" in (await response.json())["error"]


async def test_a_malformed_authorization_header_is_a_401(worker):
    for raw in (b"Bearer \xff\xfe", b"\xc3\xa9t\xc3\xa9", b"Bearer"):
        reader, writer = await asyncio.open_connection("127.0.0.1", worker.port)
        request = b"POST /admin/alerts/clear HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: %s\r\n" % (
            worker.port,
            raw,
        )
        writer.write(
            request + b"Content-Type: application/json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        status_line = await reader.readline()
        writer.close()
        assert status_line.split()[1] == b"401", (raw, status_line)


async def test_admin_posts_must_be_json(worker):
    for content_type in (None, "text/plain", "application/x-www-form-urlencoded"):
        headers = AUTH | ({"Content-Type": content_type} if content_type else {})
        response = await worker.post("/admin/alerts/clear", data=b"x", headers=headers)
        assert response.status == 415, content_type
    assert (await worker.post("/admin/alerts/clear", headers=AUTH | JSON)).status == 200


async def test_host_and_origin_are_checked(worker):
    headers = AUTH | JSON
    for host in ("evil.example", f"evil.example:{worker.port}"):
        response = await worker.post("/admin/alerts/clear", headers=headers | {"Host": host})
        assert response.status == 421, host
        assert (await worker.get("/health", headers={"Host": host})).status == 421
    for origin in ("http://evil.example", "null", f"http://evil.example:{worker.port}"):
        response = await worker.post("/admin/alerts/clear", headers=headers | {"Origin": origin})
        assert response.status == 403, origin
    # A peer worker forwards a routed request with its own Host and port: accepted.
    peer = {"Host": "127.0.0.1:6067", "Origin": "http://localhost:6067"}
    assert (await worker.post("/admin/alerts/clear", headers=headers | peer)).status == 200


async def test_without_a_token_admin_endpoints_answer_only_loopback(open_worker, monkeypatch):
    assert (await open_worker.post("/admin/alerts/clear", headers=JSON)).status == 200
    assert (await open_worker.get("/users/U1")).status == 404  # the state views stay open
    monkeypatch.setattr("riskengine.worker.web_views.is_loopback", lambda remote: False)
    response = await open_worker.post("/admin/alerts/clear", headers=JSON)
    assert response.status == 403 and "localhost" in (await response.json())["error"]


async def test_over_long_parameters_are_a_400_without_echoing_them(worker):
    response = await worker.get("/alerts?since=" + "9" * 5000)
    assert response.status == 400 and len(await response.text()) < 300
    response = await worker.get("/alerts?since=" + "x" * 200)
    assert response.status == 400 and len(await response.text()) < 300


async def test_a_failing_snapshot_store_is_a_502_without_its_details(worker, monkeypatch):
    async def failing(self):
        raise OSError("http://10.1.2.3:7070/riskengine-snapshots refused: secret detail")

    monkeypatch.setattr(Snapshotter, "snapshot", failing)
    response = await worker.post("/admin/snapshot", headers=AUTH | JSON)
    assert response.status == 502
    text = await response.text()
    assert "10.1.2.3" not in text and "secret detail" not in text and "OSError" not in text


class FakeDb:
    def __init__(self, values: dict[bytes, bytes]) -> None:
        self.values = values

    def get(self, key: bytes) -> bytes | None:
        return self.values.get(key)


async def test_market_and_pair_tables_are_shown_decoded_behind_the_token(worker, monkeypatch):
    market = MarketState(last_time=5, last_id="t5", executions=3, fired={"PRICE_CRASH": 4})
    pair = PairState(last_time=7, last_id="t7", legs={"BTC/USDT": [[7, "C1", 0.5, "t7", "U1", "U2"]]})
    held = {
        MARKET_TABLE_NAME: {2: FakeDb({}), 3: FakeDb({b"BTC/USDT": encode_market_state(market)})},
        PAIR_TABLE_NAME: {1: FakeDb({b"C1|C2": encode_pair_state(pair)})},
    }
    monkeypatch.setattr("riskengine.worker.web_views.held_partitions", lambda table: held.get(table.name, {}))

    assert (await worker.get("/tables")).status == 401
    assert (await worker.get("/tables/market-state?key=BTC/USDT")).status == 401
    listed = (await (await worker.get("/tables", headers=AUTH)).json())["tables"]
    assert {t["name"] for t in listed} == {"user-state", MARKET_TABLE_NAME, PAIR_TABLE_NAME}

    response = await worker.get("/tables/market-state?key=BTC/USDT", headers=AUTH)
    assert response.status == 200
    body = await response.json()
    assert body["partition"] == 3 and body["state"]["executions"] == 3
    assert body["state"]["lastApplied"] == {"timestamp": 5, "tradeId": "t5"}
    assert body["state"]["lastAlerts"] == {"PRICE_CRASH": 4}

    body = await (await worker.get("/tables/pair-state?key=C1|C2", headers=AUTH)).json()
    assert body["state"]["openLegs"]["BTC/USDT"][0]["buyingOwner"] == "C1"

    response = await worker.get("/tables/market-state?key=ETH/USDT", headers=AUTH)
    assert response.status == 404 and "[2, 3]" in (await response.json())["error"]
    assert (await worker.get("/tables/user-state?key=U1", headers=AUTH)).status == 404
    assert (await worker.get("/tables/market-state", headers=AUTH)).status == 400


async def test_an_unreadable_table_value_is_a_500_without_its_details(worker, monkeypatch):
    held = {MARKET_TABLE_NAME: {0: FakeDb({b"BTC/USDT": b"\x09garbage"})}}
    monkeypatch.setattr("riskengine.worker.web_views.held_partitions", lambda table: held.get(table.name, {}))
    response = await worker.get("/tables/market-state?key=BTC/USDT", headers=AUTH)
    assert response.status == 500 and "see the worker's log" in (await response.json())["error"]
