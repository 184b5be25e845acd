"""The REST API: validation, defaults, auth, mock-trading control, stats and audit lookups.

Served by aiohttp on 127.0.0.1 with the in-memory transport; the same API against the real broker
is covered by tests/integration/test_producer.py.
"""

import asyncio

import pytest
from aiohttp.test_utils import TestClient, TestServer

from riskengine.producer.api import create_app
from riskengine.producer.config import ProducerConfig, SimulationDefaults
from riskengine.settings import Secret

from .offline_doubles import MemoryTransport, offline_catalog

VALID = {"userId": "U000001", "symbol": "BTC/USDT", "side": "BUY", "quantity": 0.5, "price": 60_000}


@pytest.fixture
async def served(tmp_path):
    transport = MemoryTransport()

    async def connect(config):
        return transport, offline_catalog()

    config = ProducerConfig(
        audit_db=tmp_path / "audit.sqlite3",
        admin_token=Secret("s3cret"),
        defaults=SimulationDefaults(users=100, rate_ms=20.0, scenario_every=10),
    )
    client = TestClient(TestServer(create_app(config, connect), host="127.0.0.1"))
    await client.start_server()
    yield client, transport
    await client.close()


AUTH = {"Authorization": "Bearer s3cret"}
#: Headers of an admin POST without a body (every POST must be JSON).
ADMIN = AUTH | {"Content-Type": "application/json"}


async def test_a_minimal_trade_is_completed_and_produced(served):
    client, transport = served
    response = await client.post("/api/trades/produce", json=VALID, headers=AUTH)
    assert response.status == 200
    body = await response.json()
    trade = body["trade"]
    assert body["status"] == "acked" and body["offset"] == 0
    assert trade["tradeId"].startswith("T-api-") and trade["notional"] == 30_000.0
    assert (
        trade["customerId"] == "U000001" and trade["exchange"] == "BINANCE" and trade["orderType"] == "MARKET"
    )
    assert trade["timestamp"] > 1_700_000_000_000
    topic, key, value, headers, _ = transport.sent[0]
    assert (topic, key, headers) == ("crypto-trades", b"U000001", [])
    assert offline_catalog().decode(value, "CryptoTrade") == trade


async def test_given_fields_are_kept(served):
    client, _ = served
    full = VALID | {
        "tradeId": "t-42",
        "customerId": "C9",
        "notional": 30_000.0,
        "timestamp": 1_767_225_600_000,
        "exchange": "KRAKEN",
        "orderType": "LIMIT",
        "riskLevel": "HIGH",
        "counterpartyUserId": "U000002",
        "orderId": "o-1",
    }
    body = await (await client.post("/api/trades/produce", json=full, headers=AUTH)).json()
    assert body["trade"] == full | {"quantity": 0.5, "price": 60_000.0}


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({k: v for k, v in VALID.items() if k != "userId"}, "userId", "missing"),
        ({k: v for k, v in VALID.items() if k != "price"}, "price", "missing"),
        (VALID | {"side": "HOLD"}, "side", "BUY or SELL"),
        (VALID | {"side": "buy"}, "side", "BUY or SELL"),
        (VALID | {"quantity": -1}, "quantity", "> 0"),
        (VALID | {"quantity": "1"}, "quantity", "must be a number"),
        (VALID | {"price": True}, "price", "must be a number"),
        (VALID | {"notional": 1.0}, "notional", "quantity x price"),
        (VALID | {"symbol": "BTCUSDT"}, "symbol", "BASE/QUOTE"),
        (VALID | {"timestamp": -5}, "timestamp", "between"),
        (VALID | {"timestamp": 1.5}, "timestamp", "integer"),
        (VALID | {"riskLevel": "EXTREME"}, "riskLevel", "unknown risk level"),
        (VALID | {"userId": " u1"}, "userId", "surrounding spaces"),
        (VALID | {"qty": 5}, "qty", "unknown field"),
        ([VALID], "body", "JSON object"),
    ],
)
async def test_a_bad_body_is_a_400_naming_the_field(served, body, field, reason):
    client, transport = served
    response = await client.post("/api/trades/produce", json=body, headers=AUTH)
    assert response.status == 400
    answer = await response.json()
    assert answer["field"] == field and reason in answer["reason"]
    assert transport.sent == []


async def test_a_body_that_is_not_json_is_a_400(served):
    client, _ = served
    response = await client.post("/api/trades/produce", data=b"{not json", headers=ADMIN)
    assert response.status == 400 and (await response.json())["field"] == "body"


async def test_admin_endpoints_need_the_bearer_token(served):
    client, _ = served
    for method, path in (
        ("POST", "/api/admin/mock-trading/start"),
        ("GET", "/api/admin/stats"),
        ("GET", "/api/admin/audit"),
    ):
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            headers = headers | {"Content-Type": "application/json"}
            response = await client.request(method, path, headers=headers)
            assert response.status == 401, path
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await client.get("/api/admin/stats", headers=ADMIN)).status == 200


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("rateMs=fast", "rateMs"),
        ("rateMs=0", "rateMs"),
        ("scenarios=wash", "scenarios"),
        ("users=5", "users"),
        ("symbols=BTC/EUR", "symbols"),
        ("seed=x", "seed"),
        ("scenarioEvery=0", "scenarioEvery"),
        ("quietMs=-1", "quietMs"),
    ],
)
async def test_bad_start_parameters_are_a_400_naming_them(served, query, field):
    client, _ = served
    response = await client.post(f"/api/admin/mock-trading/start?{query}", headers=ADMIN)
    assert response.status == 400
    assert (await response.json())["field"] == field


async def test_mock_trading_produces_profiles_then_labelled_and_unlabelled_events(served):
    client, transport = served
    response = await client.post(
        "/api/admin/mock-trading/start?rateMs=5&seed=7&quietMs=0&scenarios=large_order,kyc_limit_breach",
        headers=ADMIN,
    )
    assert response.status == 200
    started = await response.json()
    assert started["status"] == "started" and started["seed"] == 7 and started["profiles"] == 100
    await asyncio.sleep(2.5)
    assert (
        await (
            await client.post("/api/admin/mock-trading/start?rateMs=5&scenarios=none", headers=ADMIN)
        ).json()
    )["status"] == "restarted"
    stopped = await client.post("/api/admin/mock-trading/stop", headers=ADMIN)
    assert (await stopped.json())["status"] == "stopped"
    assert (await (await client.post("/api/admin/mock-trading/stop", headers=ADMIN)).json())[
        "status"
    ] == "not running"
    topics = [topic for topic, *_ in transport.sent]
    assert topics[:100] == ["user-profiles"] * 100
    assert {"crypto-trades", "crypto-orders"} <= set(topics)
    labelled = {dict(h)["scenario"].decode() for _, _, _, h, _ in transport.sent if h}
    assert labelled == {"large_order", "kyc_limit_breach"}
    stats = await (await client.get("/api/admin/stats", headers=ADMIN)).json()
    produced = stats["produced"]
    assert produced["producedPerTopic"]["user-profiles"] == 200
    assert set(produced["producedByScenario"]) == {"large_order", "kyc_limit_breach"}
    assert produced["failedAttempts"] == 0 and produced["tradesPerSecond"] > 0
    assert stats["mockTrading"]["running"] is False
    assert stats["audit"]["rowsByStatus"] == {"acked": len(transport.sent)}


async def test_the_audit_endpoint_finds_a_trade_and_its_order_events(served):
    client, _ = served
    await client.post("/api/admin/mock-trading/start?rateMs=5&seed=3&scenarios=none", headers=ADMIN)
    await asyncio.sleep(1.0)
    await client.post("/api/admin/mock-trading/stop", headers=ADMIN)
    rows = (await (await client.get("/api/admin/audit?status=acked&limit=10000", headers=ADMIN)).json())[
        "events"
    ]
    trade = next(r for r in rows if r["kind"] == "trade")
    response = await client.get(f"/api/admin/audit?tradeId={trade['event_id']}", headers=ADMIN)
    events = (await response.json())["events"]
    assert {e["status"] for e in events} == {"acked"}
    kinds = [(e["kind"], e["record"].get("eventType")) for e in events]
    assert ("trade", None) in kinds and kinds[0] == ("order", "PLACED")
    assert ("order", "FILLED") in kinds
    assert (await client.get("/api/admin/audit?tradeId=nope", headers=ADMIN)).status == 404
    assert (await client.get("/api/admin/audit?status=lost", headers=ADMIN)).status == 400
    assert (await client.get("/api/admin/audit?limit=0", headers=ADMIN)).status == 400


async def test_health_needs_no_token(served):
    client, _ = served
    assert (await (await client.get("/health")).json()) == {"status": "ok"}


# -- hostile requests (issue 15, item 5) ---------------------------------------------------------


@pytest.fixture
async def open_served(tmp_path):
    """The API without an admin token."""
    transport = MemoryTransport()

    async def connect(config):
        return transport, offline_catalog()

    config = ProducerConfig(audit_db=tmp_path / "audit.sqlite3", defaults=SimulationDefaults(users=100))
    client = TestClient(TestServer(create_app(config, connect), host="127.0.0.1"))
    await client.start_server()
    yield client, transport
    await client.close()


@pytest.mark.parametrize(
    "path", ["/api/trades/produce", "/api/admin/mock-trading/start", "/api/admin/mock-trading/stop"]
)
@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
async def test_a_post_that_is_not_json_is_a_415(served, path, content_type):
    client, transport = served
    headers = AUTH | ({"Content-Type": content_type} if content_type else {})
    response = await client.post(path, data=b'{"userId": "U1"}', headers=headers)
    assert response.status == 415
    assert (await response.json())["field"] == "Content-Type"
    assert transport.sent == []


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:{port}", "127.0.0.1:1", "localhost.evil.example:{port}", "[bad"]
)
async def test_a_host_that_is_not_this_server_is_a_421(served, host):
    client, transport = served
    headers = ADMIN | {"Host": host.format(port=client.port)}
    response = await client.post("/api/trades/produce", json=VALID, headers=headers)
    assert response.status == 421 and (await response.json())["field"] == "Host"
    response = await client.post("/api/admin/mock-trading/stop", headers=headers)
    assert response.status == 421
    assert transport.sent == []


async def test_own_host_names_are_accepted(served):
    client, _ = served
    for host in (f"127.0.0.1:{client.port}", f"localhost:{client.port}", f"LOCALHOST:{client.port}"):
        response = await client.get("/api/admin/stats", headers=ADMIN | {"Host": host})
        assert response.status == 200, host


@pytest.mark.parametrize(
    "origin", ["http://evil.example", "http://127.0.0.1:1", "null", "file://", "https://localhost:{port}"]
)
async def test_a_foreign_origin_is_a_403(served, origin):
    client, transport = served
    headers = ADMIN | {"Origin": origin.format(port=client.port)}
    response = await client.post("/api/trades/produce", json=VALID, headers=headers)
    assert response.status == 403 and (await response.json())["field"] == "Origin"
    assert (await client.post("/api/admin/mock-trading/stop", headers=headers)).status == 403
    assert transport.sent == []


async def test_the_own_origin_and_no_origin_are_accepted(served):
    client, _ = served
    own = {"Origin": f"http://127.0.0.1:{client.port}"}
    assert (await client.post("/api/trades/produce", json=VALID, headers=AUTH | own)).status == 200
    assert (await client.post("/api/trades/produce", json=VALID, headers=AUTH)).status == 200


async def test_produce_needs_the_token_when_one_is_set(served):
    client, transport = served
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        response = await client.post("/api/trades/produce", json=VALID, headers=headers)
        assert response.status == 401
    assert transport.sent == []


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer s3cret extra",
        "Bearer \u00e9t\u00e9",
        "Bearer \udcff",
        "\u00ff\u00fe",
    ],
)
async def test_a_malformed_authorization_header_is_a_401(served, header):
    client, _ = served
    raw = header.encode("utf-8", "surrogateescape")
    # Sent as raw bytes: aiohttp's client would refuse some of these as str.
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    request = b"GET /api/admin/stats HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: %s\r\n" % (
        client.port,
        raw,
    )
    writer.write(request + b"Connection: close\r\n\r\n")
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    assert status_line.split()[1] == b"401", (header, status_line)


async def test_without_a_token_admin_endpoints_answer_only_loopback(open_served, monkeypatch):
    client, _ = open_served
    assert (await client.get("/api/admin/stats")).status == 200
    monkeypatch.setattr("riskengine.producer.api.is_loopback", lambda remote: False)
    response = await client.get("/api/admin/stats")
    assert response.status == 403 and "localhost" in (await response.json())["reason"]
    assert (await client.post("/api/trades/produce", json=VALID)).status == 200


async def test_an_over_long_parameter_is_a_400(served):
    client, _ = served
    response = await client.get("/api/admin/audit?limit=" + "9" * 5000, headers=ADMIN)
    assert response.status == 400 and (await response.json())["field"] == "limit"
    response = await client.post("/api/admin/mock-trading/start?seed=" + "1" * 5000, headers=ADMIN)
    assert response.status == 400


async def test_concurrent_starts_leave_one_simulation_that_stop_stops(served):
    client, transport = served
    start = "/api/admin/mock-trading/start?rateMs=2&scenarios=none&quietMs=0"
    answers = await asyncio.gather(*(client.post(start, headers=ADMIN) for _ in range(3)))
    assert [a.status for a in answers] == [200, 200, 200]
    await asyncio.sleep(0.3)
    assert (await (await client.post("/api/admin/mock-trading/stop", headers=ADMIN)).json())[
        "status"
    ] == "stopped"
    after_stop = len(transport.sent)
    await asyncio.sleep(0.5)
    assert len(transport.sent) == after_stop, "nothing is produced after stop"
    assert not any(task.get_name() == "mock-trading" for task in asyncio.all_tasks())
