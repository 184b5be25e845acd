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


ADMIN = {"Authorization": "Bearer s3cret"}


async def test_a_minimal_trade_is_completed_and_produced(served):
    client, transport = served
    response = await client.post("/api/trades/produce", json=VALID)
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
    body = await (await client.post("/api/trades/produce", json=full)).json()
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
    response = await client.post("/api/trades/produce", json=body)
    assert response.status == 400
    answer = await response.json()
    assert answer["field"] == field and reason in answer["reason"]
    assert transport.sent == []


async def test_a_body_that_is_not_json_is_a_400(served):
    client, _ = served
    response = await client.post(
        "/api/trades/produce", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status == 400 and (await response.json())["field"] == "body"


async def test_admin_endpoints_need_the_bearer_token(served):
    client, _ = served
    for method, path in (
        ("POST", "/api/admin/mock-trading/start"),
        ("GET", "/api/admin/stats"),
        ("GET", "/api/admin/audit"),
    ):
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            response = await client.request(method, path, headers=headers)
            assert response.status == 401, path
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await client.get("/api/admin/stats", headers=ADMIN)).status == 200
    assert (await client.post("/api/trades/produce", json=VALID)).status == 200  # not an admin endpoint


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
