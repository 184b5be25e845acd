"""The audit trail and the publisher: statuses, retries, recovery; with an in-memory transport."""

import asyncio
import sqlite3
from typing import Any

import pytest

from riskengine.producer.audit import AuditLog, Outgoing
from riskengine.producer.events import Label, LabelRole
from riskengine.producer.publisher import Publisher

from .offline_doubles import MemoryTransport, offline_catalog


def trade_message(n: int, scenario: str | None = None, order_id: str | None = None) -> Outgoing:
    record: dict[str, Any] = {
        "tradeId": f"t{n}",
        "userId": "u1",
        "customerId": "c1",
        "symbol": "BTC/USDT",
        "side": "BUY",
        "quantity": 0.5,
        "price": 60_000.0,
        "notional": 30_000.0,
        "timestamp": 1_767_225_600_000 + n,
        "exchange": "KRAKEN",
        "orderType": "MARKET",
        "riskLevel": None,
        "counterpartyUserId": None,
        "orderId": order_id,
    }
    return Outgoing(
        "trade",
        "CryptoTrade",
        "trades",
        "u1",
        f"t{n}",
        record["timestamp"],
        record,
        scenario,
        scenario and "S1",
        order_id,
    )


def order_message(n: int, order_id: str) -> Outgoing:
    record: dict[str, Any] = {
        "eventId": f"e{n}",
        "orderId": order_id,
        "userId": "u1",
        "symbol": "BTC/USDT",
        "side": "BUY",
        "eventType": "PLACED" if n == 1 else "FILLED",
        "price": 60_000.0,
        "quantity": 0.5,
        "remainingQuantity": 0.5 if n == 1 else 0.0,
        "timestamp": 1_767_225_600_000 + n,
        "exchange": "KRAKEN",
    }
    return Outgoing(
        "order", "OrderEvent", "orders", "u1", f"e{n}", record["timestamp"], record, order_id=order_id
    )


@pytest.fixture
async def audit(tmp_path):
    log = AuditLog(tmp_path / "audit.sqlite3")
    log.open()
    yield log
    await asyncio.to_thread(log.close)


async def test_rows_go_pending_failed_acked_and_a_trade_is_found_with_its_order(audit):
    audit.attempt(trade_message(1, order_id="o1"))
    audit.failed(trade_message(1, order_id="o1"), "BrokerDown: no ack")
    audit.attempt(trade_message(1, order_id="o1"))
    audit.acked(trade_message(1, order_id="o1"), 3, 42)
    for n in (1, 2):
        audit.attempt(order_message(n, "o1"))
        audit.acked(order_message(n, "o1"), 3, 10 + n)
    rows = await audit.trade("t1")
    assert [(r["kind"], r["event_id"]) for r in rows] == [("order", "e1"), ("trade", "t1"), ("order", "e2")]
    trade = rows[1]
    assert (trade["status"], trade["attempts"], trade["partition"], trade["offset"], trade["error"]) == (
        "acked",
        2,
        3,
        42,
        None,
    )
    assert trade["record"]["tradeId"] == "t1"
    assert await audit.trade("nope") == []
    assert await audit.status_counts() == {"acked": 3}


async def test_unacked_rows_come_back_for_sending_again(audit):
    audit.attempt(trade_message(1, scenario="wash_trading"))
    audit.attempt(trade_message(2))
    audit.failed(trade_message(2), "boom")
    audit.attempt(trade_message(3))
    audit.acked(trade_message(3), 0, 1)
    unacked = await audit.unacked()
    assert [m.event_id for m in unacked] == ["t1", "t2"]
    assert unacked[0] == trade_message(1, scenario="wash_trading")
    assert [r["event_id"] for r in await audit.find(status="failed")] == ["t2"]
    assert [r["event_id"] for r in await audit.find(scenario_id="S1")] == ["t1"]


async def test_writes_neither_wait_for_nor_get_lost_on_a_locked_database(audit, tmp_path):
    blocker = sqlite3.connect(tmp_path / "audit.sqlite3", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # the writer thread cannot commit while this is held
    loop = asyncio.get_running_loop()
    began = loop.time()
    for n in range(1_000):
        audit.attempt(trade_message(n))
    audit.label(
        Label(
            "S1",
            "wash_trading",
            "WASH_TRADING",
            LabelRole.PRIMARY,
            ("u1",),
            "BTC/USDT",
            1,
            2,
            ("t1",),
            (),
            (),
            True,
            True,
        )
    )
    assert loop.time() - began < 0.5
    await asyncio.sleep(1.5)  # longer than the writer's busy timeout: it must retry, not drop
    blocker.execute("ROLLBACK")
    blocker.close()
    assert await audit.status_counts() == {"pending": 1_000}
    with sqlite3.connect(tmp_path / "audit.sqlite3") as conn:
        assert conn.execute("SELECT scenario_id, pattern FROM labels").fetchall() == [("S1", "WASH_TRADING")]


async def test_publisher_retries_until_acked_and_audits_every_attempt(audit):
    transport = MemoryTransport(fail_sends=1, fail_acks=1)
    publisher = Publisher(transport, offline_catalog(), audit, "trades", retry_base_s=0.01)
    delivery = await (await publisher.submit(trade_message(1, scenario="large_order")))
    assert (delivery.topic, delivery.offset) == ("trades", 0)
    (row,) = await audit.find(event_id="t1")
    assert (row["status"], row["attempts"], row["offset"]) == ("acked", 3, 0)
    assert publisher.stats.failed_attempts == 2 and publisher.stats.retries == 2
    assert publisher.snapshot()["producedByScenario"] == {"large_order": 1}
    topic, key, value, headers, _ = transport.sent[0]
    assert (topic, key, value[0]) == ("trades", b"u1", 0)
    assert headers == [("scenario", b"large_order"), ("scenario-id", b"S1")]


async def test_messages_are_handed_over_in_submission_order(audit):
    transport = MemoryTransport()
    publisher = Publisher(transport, offline_catalog(), audit, "trades")
    tasks = [await publisher.submit(trade_message(n)) for n in range(50)]
    await asyncio.gather(*tasks)
    catalog = offline_catalog()
    assert [catalog.decode(v, "CryptoTrade")["tradeId"] for _, _, v, _, _ in transport.sent] == [
        f"t{n}" for n in range(50)
    ]
    assert publisher.snapshot()["producedPerTopic"] == {"trades": 50}
    assert publisher.stats.trade_rate() == pytest.approx(5.0)


async def test_what_is_unacknowledged_at_shutdown_is_sent_at_the_next_start(tmp_path):
    path = tmp_path / "audit.sqlite3"
    first = AuditLog(path)
    first.open()
    down = MemoryTransport(fail_sends=10**6)
    publisher = Publisher(down, offline_catalog(), first, "trades", retry_base_s=0.01)
    await publisher.submit(trade_message(1))
    await publisher.submit(trade_message(2))
    await publisher.close(grace_s=0.05)
    assert publisher.in_flight == 0
    await asyncio.to_thread(first.close)

    second = AuditLog(path)
    second.open()
    up = MemoryTransport()
    restarted = Publisher(up, offline_catalog(), second, "trades")
    assert await restarted.recover() == 2
    await restarted.close()
    assert sorted(offline_catalog().decode(v, "CryptoTrade")["tradeId"] for _, _, v, _, _ in up.sent) == [
        "t1",
        "t2",
    ]
    assert await second.status_counts() == {"acked": 2}
    await asyncio.to_thread(second.close)


async def test_a_record_that_does_not_fit_its_contract_is_refused_before_auditing(audit):
    publisher = Publisher(MemoryTransport(), offline_catalog(), audit, "trades")
    bad = trade_message(1)
    bad.record["side"] = "HOLD"
    with pytest.raises(ValueError, match="CryptoTrade"):
        await publisher.submit(bad)
    assert await audit.status_counts() == {}
