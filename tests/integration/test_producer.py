"""The producer service against the real broker and registry: produce, rate, labels, audit trail.

Each test uses its own topics (suffix from the ``unique`` fixture) and its own audit database.
"""

import asyncio
import json
import sqlite3
from collections import Counter
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from riskengine.contracts.avro_codec import SchemaCatalog
from riskengine.contracts.topics import Topics
from riskengine.producer.api import PRODUCER, create_app, kafka_connector
from riskengine.producer.audit import AuditLog, Outgoing
from riskengine.producer.config import ProducerConfig, SimulationDefaults

from .kafka_io import consume, end_offsets

pytestmark = pytest.mark.integration

TRADE = {"userId": "U000001", "symbol": "ETH/USDT", "side": "SELL", "quantity": 2.0, "price": 3_000.0}


def _topics(unique: str) -> Topics:
    return Topics(
        trades=f"trades-{unique}",
        orders=f"orders-{unique}",
        user_profiles=f"profiles-{unique}",
        risk_reference=f"reference-{unique}",
    )


@pytest.fixture
async def service(settings, unique, tmp_path):
    config = ProducerConfig(
        audit_db=tmp_path / "audit.sqlite3",
        topics=_topics(unique),
        defaults=SimulationDefaults(users=200, scenario_every=30),
    )
    client = TestClient(TestServer(create_app(config, kafka_connector(settings)), host="127.0.0.1"))
    await client.start_server()
    yield client, config
    await client.close()


async def _reader(settings) -> SchemaCatalog:
    catalog = SchemaCatalog.for_settings(settings)
    await catalog.register(["CryptoTrade", "OrderEvent", "UserProfile", "RiskReference"])
    return catalog


async def _total(settings, topic: str) -> int:
    return sum((await end_offsets(settings, topic)).values())


async def test_a_produced_trade_is_on_the_trades_topic(settings, service):
    client, config = service
    response = await client.post("/api/trades/produce", json=TRADE)
    assert response.status == 200
    body = await response.json()
    records = await consume(settings, config.topics.trades, 1)
    assert len(records) == 1
    (record,) = records
    assert (record.partition, record.offset, record.key) == (body["partition"], body["offset"], b"U000001")
    assert (await _reader(settings)).decode(record.value, "CryptoTrade") == body["trade"]
    assert record.headers == () or list(record.headers) == []


async def test_mock_trading_holds_the_requested_rate_within_ten_percent(settings, service):
    client, config = service
    response = await client.post("/api/admin/mock-trading/start?rateMs=100&scenarios=none&seed=3", json={})
    assert response.status == 200
    loop = asyncio.get_running_loop()
    await asyncio.sleep(3.0)  # past start-up: profiles published, producer warm
    before, began = await _total(settings, config.topics.trades), loop.time()
    await asyncio.sleep(10.0)
    after, ended = await _total(settings, config.topics.trades), loop.time()
    stats = await (await client.get("/api/admin/stats")).json()
    await client.post("/api/admin/mock-trading/stop", json={})
    rate = (after - before) / (ended - began)
    print(f"measured {rate:.2f} trades/s on the topic, stats say {stats['produced']['tradesPerSecond']}")
    assert 9.0 <= rate <= 11.0
    assert 9.0 <= stats["produced"]["tradesPerSecond"] <= 11.0
    assert stats["mockTrading"]["requestedTradesPerSecond"] == 10.0


async def test_the_audit_trail_and_the_labels_agree_with_what_the_broker_received(settings, service):
    client, config = service
    scenarios = "large_order,kyc_limit_breach,sanctioned_user,self_trade"
    query = f"rateMs=10&seed=5&scenarioEvery=40&quietMs=0&scenarios={scenarios}"
    assert (await client.post(f"/api/admin/mock-trading/start?{query}", json={})).status == 200
    await asyncio.sleep(8.0)
    assert (await (await client.post("/api/admin/mock-trading/stop", json={})).json())["status"] == "stopped"
    producer = client.app[PRODUCER]
    await producer.publisher.close()  # every ack in before comparing
    audit = producer.audit
    rows = await audit.find(limit=10_000)
    assert rows and {row["status"] for row in rows} == {"acked"}
    expected = {(r["topic"], r["partition"], r["offset"]): (r["event_id"], r["scenario"]) for r in rows}

    reader = await _reader(settings)
    received = {}
    per_topic = Counter(r["topic"] for r in rows)
    for topic, name, id_of in (
        (config.topics.trades, "CryptoTrade", lambda v: v["tradeId"]),
        (config.topics.orders, "OrderEvent", lambda v: v["eventId"]),
        (config.topics.user_profiles, "UserProfile", lambda v: f"{v['userId']}@{v['updatedAt']}"),
        (config.topics.risk_reference, "RiskReference", lambda v: f"reference@{v['version']}"),
    ):
        records = await consume(settings, topic, per_topic[topic] + 1, wait_s=10.0)
        assert len(records) == per_topic[topic], topic
        for record in records:
            headers = dict(record.headers)
            scenario = headers["scenario"].decode() if "scenario" in headers else None
            received[(topic, record.partition, record.offset)] = (
                id_of(reader.decode(record.value, name)),
                scenario,
            )
    assert received == expected
    assert per_topic[config.topics.user_profiles] == 200
    assert per_topic[config.topics.risk_reference] == 1, "the reference lists, once per start"

    labelled = Counter(scenario for _, scenario in received.values() if scenario)
    assert set(labelled) == {"large_order", "kyc_limit_breach", "sanctioned_user", "self_trade"}
    trades_by_id = {
        event_id: scenario
        for (topic, _, _), (event_id, scenario) in received.items()
        if topic == config.topics.trades
    }
    stats = await (await client.get("/api/admin/stats")).json()
    assert stats["produced"]["producedByScenario"] == dict(sorted(labelled.items()))
    with sqlite3.connect(config.audit_db) as conn:
        labels = conn.execute("SELECT label FROM labels").fetchall()
    assert labels
    for (text,) in labels:
        label = json.loads(text)
        sent_with = [trades_by_id[t] for t in label["tradeIds"]]
        if label["role"] == "primary":
            # Every trade a scenario made reached the broker with its label (runs cut short by
            # the stop are marked incomplete and list only what was sent).
            assert set(sent_with) <= {label["scenario"]}
            assert sent_with or not label["complete"] or label["scenario"] == "quote_stuffing"
        else:
            # An incidental pattern may reach back into the account's unlabelled trades.
            assert label["scenario"] in sent_with


async def test_messages_left_unacknowledged_by_a_previous_run_are_sent_at_start(settings, unique, tmp_path):
    config = ProducerConfig(audit_db=tmp_path / "audit.sqlite3", topics=_topics(unique))
    trade_id = f"left-{unique}"
    record: dict[str, Any] = {
        "tradeId": trade_id,
        "userId": "U000009",
        "customerId": "C000009",
        "symbol": "SOL/USDT",
        "side": "BUY",
        "quantity": 3.0,
        "price": 150.0,
        "notional": 450.0,
        "timestamp": 1_767_225_600_000,
        "exchange": "KUCOIN",
        "orderType": "MARKET",
        "riskLevel": None,
        "counterpartyUserId": None,
        "orderId": None,
    }
    crashed = AuditLog(config.audit_db)
    crashed.open()
    message = Outgoing(
        "trade",
        "CryptoTrade",
        config.topics.trades,
        "U000009",
        trade_id,
        1_767_225_600_000,
        record,
    )
    crashed.attempt(message)
    crashed.failed(message, "KafkaTimeoutError: broker went away")
    await asyncio.to_thread(crashed.close)

    client = TestClient(TestServer(create_app(config, kafka_connector(settings)), host="127.0.0.1"))
    await client.start_server()
    try:
        records = await consume(settings, config.topics.trades, 1)
        assert [(await _reader(settings)).decode(r.value, "CryptoTrade") for r in records] == [record]
        rows = (await (await client.get(f"/api/admin/audit?tradeId={record['tradeId']}")).json())["events"]
        assert [(r["status"], r["attempts"], r["offset"]) for r in rows] == [("acked", 2, records[0].offset)]
    finally:
        await client.close()
