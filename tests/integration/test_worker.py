"""The worker end to end against the real stack: patterns, dead letters, runtime rules.

Workers run as ``faust -A riskengine worker`` subprocesses with their own app id and topic suffix.
Expected results come from the detection core run in this process over the same input
(``riskengine replay``), which is what a single worker must produce.
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

import pytest

from riskengine.cli.replay_command import ALERTS_FILE, ANALYZED_FILE, replay
from riskengine.contracts.avro_codec import SchemaCatalog
from riskengine.core import DEFAULT_RULES
from riskengine_devtools.chaos.kafka_io import collect as collect

from .kafka_io import committed_to_the_end
from .worker_harness import (
    WorkerProcess,
    isolated,
    prepare,
    publish_sample_profiles,
    sample_reference,
    sample_trades,
    send,
    send_trades,
)


def decoded(catalog: SchemaCatalog, records: list[Any], name: str) -> list[dict[str, Any]]:
    """The values of ``records`` decoded as contract ``name``."""
    return [catalog.decode(r.value, name) for r in records]


@pytest.fixture
async def worker(settings, unique, tmp_path):
    """One worker on isolated topics, with the sample profiles published; always stopped."""
    own = isolated(settings, unique)
    catalog = await prepare(own)
    await publish_sample_profiles(own, catalog)
    process = WorkerProcess(own, tmp_path / "data")
    process.start()
    try:
        await process.wait_ready()
        yield own, catalog, process
    finally:
        process.stop()


async def test_every_trade_is_analyzed_and_every_pattern_alerts(worker, tmp_path):
    """(a) The sample sequence holds every implemented pattern; the worker matches replay (the core,
    with the market contexts the market agent gives)."""
    settings, catalog, _process = worker
    trades = sample_trades()
    suffix = settings.worker_topic_suffix
    await send_trades(settings, catalog, trades)
    lines = [json.dumps(t.to_record()).encode() for t in trades]
    replay(lines, tmp_path, DEFAULT_RULES, sample_reference(), partitions=settings.topic_partitions)
    expected_analyzed = {
        a["originalTrade"]["tradeId"]: a
        for a in (json.loads(line) for line in (tmp_path / ANALYZED_FILE).read_text().splitlines())
    }
    expected_alerts = {
        a["alertId"]: a
        for a in (json.loads(line) for line in (tmp_path / ALERTS_FILE).read_text().splitlines())
    }
    assert len({a["patternType"] for a in expected_alerts.values()}) >= 8, (
        "the sample must hold every pattern"
    )

    ids = {t.trade_id for t in trades}
    analyzed = decoded(
        catalog,
        await collect(
            settings,
            f"risk-analyzed-trades{suffix}",
            lambda rs: len(rs) >= len(trades),
        ),
        "RiskAnalyzedTrade",
    )
    assert {a["originalTrade"]["tradeId"] for a in analyzed} == ids
    for got in analyzed:
        assert got["processedAt"] is not None
        want = expected_analyzed[got["originalTrade"]["tradeId"]]
        for field in (
            "riskScore",
            "finalRiskLevel",
            "triggeredPatterns",
            "complianceFlags",
            "ruleVersion",
            "marketImpactAnalysis",
        ):
            assert got[field] == want[field], (field, got["originalTrade"]["tradeId"])

    alerts = decoded(
        catalog,
        await collect(settings, f"risk-alerts{suffix}", lambda rs: len(rs) >= len(expected_alerts)),
        "RiskAlert",
    )
    assert {a["alertId"] for a in alerts} == set(expected_alerts)
    for alert in alerts:
        assert alert == expected_alerts[alert["alertId"]]


async def test_bad_messages_become_dead_letters_and_good_ones_flow(worker):
    """(c) Each kind of malformed message lands in the DLQ with its reason; neighbours are analyzed."""
    settings, catalog, _process = worker
    suffix = settings.worker_topic_suffix
    good = sample_trades()[:4]
    bad_record = dict(good[0].to_record(), tradeId="bad-qty", quantity=-1.0)
    unknown_id = b"\x00" + struct.pack(">I", 987_654_321) + b"\x02"
    truncated = catalog.encode("CryptoTrade", good[1].to_record())[:-7]
    mismatched = catalog.encode("CryptoTrade", dict(good[2].to_record(), tradeId="wrong-key"))
    u = good[0].user_id.encode()
    messages: list[tuple[bytes | None, bytes | None]] = [
        (good[0].user_id.encode(), catalog.encode("CryptoTrade", good[0].to_record())),
        (u, b"not avro at all"),
        (good[1].user_id.encode(), catalog.encode("CryptoTrade", good[1].to_record())),
        (u, unknown_id),
        (u, truncated),
        (good[2].user_id.encode(), catalog.encode("CryptoTrade", good[2].to_record())),
        (u, catalog.encode("CryptoTrade", bad_record)),
        (b"someone-else", mismatched),
        (good[3].user_id.encode(), catalog.encode("CryptoTrade", good[3].to_record())),
    ]
    await send(settings, f"crypto-trades{suffix}", messages)

    dead = await collect(settings, f"crypto-trades-dlq{suffix}", lambda rs: len(rs) >= 5)
    reasons = sorted(dict(r.headers)["reason"].decode() for r in dead)
    assert reasons == sorted(
        ["malformed-frame", "unknown-schema-id", "unreadable-record", "invalid-record", "key-mismatch"]
    )
    sent_values = {value for _key, value in messages}
    for record in dead:
        headers = dict(record.headers)
        assert record.value in sent_values, "the dead letter carries the original bytes"
        assert headers["source-topic"] == f"crypto-trades{suffix}".encode()
        assert int(headers["source-offset"]) >= 0 and int(headers["source-partition"]) >= 0
        assert headers["exception"]
    analyzed = decoded(
        catalog,
        await collect(settings, f"risk-analyzed-trades{suffix}", lambda rs: len(rs) >= len(good)),
        "RiskAnalyzedTrade",
    )
    assert {a["originalTrade"]["tradeId"] for a in analyzed} == {t.trade_id for t in good}


async def test_a_rules_update_changes_alerts_without_restart(worker):
    """(d) A new rules version lowers the BTC large-order threshold; an invalid one is skipped."""
    settings, catalog, _process = worker
    suffix = settings.worker_topic_suffix
    base = sample_trades()[0].to_record()

    def trade(n: int, user: str, notional: float) -> tuple[bytes, bytes]:
        record = dict(
            base,
            tradeId=f"rules-{n}",
            userId=user,
            customerId=f"c-{user}",
            symbol="BTC/USDT",
            quantity=notional / 50_000.0,
            price=50_000.0,
            notional=notional,
            timestamp=base["timestamp"] + n * 1000,
            counterpartyUserId=None,
        )
        return user.encode(), catalog.encode("CryptoTrade", record)

    def rules(version: int, parameters: dict[str, str]) -> tuple[bytes, bytes]:
        record = {"version": version, "parameters": parameters, "updatedAt": 0, "updatedBy": "test"}
        return b"rules", catalog.encode("RiskRules", record)

    trades_topic, rules_topic = f"crypto-trades{suffix}", f"risk-rules{suffix}"
    await send(settings, trades_topic, [trade(0, "whale", 300_000.0)])
    # Trades and rules are separate topics with no order between them: the first trade must have
    # been analyzed before the update is sent for it to be analyzed under the defaults.
    await collect(settings, f"risk-analyzed-trades{suffix}", lambda rs: len(rs) >= 1, wait_s=30.0)
    await send(settings, rules_topic, [rules(5, {"threshold.btc": "100000"})])

    async def probe_until(version: int, first: int) -> int:
        """Send small probe trades until one is analyzed with ``version``; returns the next number."""
        n = first
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while loop.time() < deadline:
            await send(settings, trades_topic, [trade(n, "probe", 100.0)])
            n += 1
            seen = decoded(
                catalog,
                await collect(settings, f"risk-analyzed-trades{suffix}", lambda rs: False, wait_s=1.0),
                "RiskAnalyzedTrade",
            )
            if any(a["ruleVersion"] == version for a in seen):
                return n
        raise AssertionError(f"rules version {version} never became active")

    n = await probe_until(5, 100)
    await send(settings, trades_topic, [trade(1, "whale", 300_000.0)])
    # As for the first trade: analyzed before the next update is sent, or it may meet version 8.
    await collect(
        settings,
        f"risk-analyzed-trades{suffix}",
        lambda rs: any(
            a["originalTrade"]["tradeId"] == "rules-1" for a in decoded(catalog, rs, "RiskAnalyzedTrade")
        ),
        wait_s=30.0,
    )
    # Version 7 is invalid (unknown parameter): it must be rejected and 5 stay active until 8.
    await send(
        settings, rules_topic, [rules(7, {"threshold.btcc": "1"}), rules(8, {"threshold.btc": "200000"})]
    )
    await probe_until(8, n)

    analyzed = {
        a["originalTrade"]["tradeId"]: a
        for a in decoded(
            catalog,
            await collect(settings, f"risk-analyzed-trades{suffix}", lambda rs: False, wait_s=2.0),
            "RiskAnalyzedTrade",
        )
    }
    assert analyzed["rules-0"]["ruleVersion"] == 0
    assert "LARGE_ORDER" not in analyzed["rules-0"]["triggeredPatterns"]
    assert analyzed["rules-1"]["ruleVersion"] == 5
    assert "LARGE_ORDER" in analyzed["rules-1"]["triggeredPatterns"]
    assert {a["ruleVersion"] for a in analyzed.values()} <= {0, 5, 8}, "version 7 was never active"
    alerts = decoded(
        catalog,
        await collect(settings, f"risk-alerts{suffix}", lambda rs: len(rs) >= 1, wait_s=10.0),
        "RiskAlert",
    )
    large = [a for a in alerts if a["patternType"] == "LARGE_ORDER" and a["userId"] == "whale"]
    assert [a["ruleVersion"] for a in large] == [5]


async def test_the_group_commits_every_input_partition_to_its_end_and_the_worker_stops_cleanly(worker):
    """Acked in step 5, the input records are committed up to each input partition's end; and a
    SIGTERM finds nothing handed out left waiting: the worker stops before it would be killed (it
    waited for the events its agents held back, which are never acked once nothing more arrives)."""
    settings, catalog, process = worker
    trades = sample_trades()
    await send_trades(settings, catalog, trades)
    suffix = settings.worker_topic_suffix
    await collect(settings, f"risk-analyzed-trades{suffix}", lambda rs: len(rs) >= len(trades))
    topic = f"crypto-trades{suffix}"
    committed, ends = await committed_to_the_end(settings, settings.worker_app_id, topic)
    assert sum(ends.values()) == len(trades)
    assert committed == ends

    process.stop()
    assert process.process is not None and process.process.returncode == 0, process.log()[-4000:]
