"""The worker and ``riskengine replay`` give the same results on the same trades and order events.

A generated run (the simulator with every scenario, order events at its usual ratio, 50,000+
events) goes to the worker's topics (profiles, then trades and order events, before the worker
starts, so it consumes a backlog of both inputs), and to ``riskengine replay`` as files, with the
same reference data: the run's reference file (profiles on user-profiles, the sanctions and country
lists on risk-reference). The alert sets must
be identical record for record, and so must every analyzed trade but its ``processedAt``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from riskengine.cli.replay_command import ALERTS_FILE, ANALYZED_FILE, load_reference, replay
from riskengine.contracts.reference_record import REFERENCE_KEY, reference_record
from riskengine.core import DEFAULT_RULES
from riskengine.producer.files import write_run
from riskengine.producer.simulator import SimulationConfig

from .test_worker import collect
from .worker_harness import WorkerProcess, isolated, prepare, running, send

TRADES = 14_000


def json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def test_worker_and_replay_agree_on_trades_and_order_events(settings, unique, tmp_path):
    # A trade record every 1.2 s of simulated time: 14,000 records span about four hours, long
    # enough for a pump-and-dump (after the simulator's first hour) besides every other scenario.
    run = write_run(
        SimulationConfig(seed=23, users=400, scenario_every=60, rate_ms=1200), TRADES, tmp_path / "run.jsonl"
    )
    trades = json_lines(run.files.trades)
    orders = json_lines(run.files.orders)
    profiles = json_lines(run.files.profiles)
    assert len(trades) + len(orders) >= 50_000

    # The run's whole reference file: profiles, sanctioned users and countries, restricted countries.
    reference = load_reference(run.files.reference)
    assert reference.sanctioned_countries and len(reference.profiles) == len(profiles)
    with run.files.trades.open("rb") as trade_lines, run.files.orders.open("rb") as order_lines:
        summary = replay(
            trade_lines,
            tmp_path / "replay",
            DEFAULT_RULES,
            reference,
            orders=order_lines,
            partitions=settings.topic_partitions,
        )
    assert summary.trades == len(trades) and summary.order_events == len(orders) and summary.malformed == 0
    expected_alerts = {a["alertId"]: a for a in json_lines(tmp_path / "replay" / ALERTS_FILE)}
    expected_analyzed = {
        a["originalTrade"]["tradeId"]: a for a in json_lines(tmp_path / "replay" / ANALYZED_FILE)
    }
    order_patterns = {a["patternType"] for a in expected_alerts.values()} & {
        "SPOOFING",
        "LAYERING",
        "QUOTE_STUFFING",
        "MOMENTUM_IGNITION",
    }
    assert order_patterns == {"SPOOFING", "LAYERING", "QUOTE_STUFFING", "MOMENTUM_IGNITION"}
    patterns = Counter(a["patternType"] for a in expected_alerts.values())
    assert {"PUMP_AND_DUMP", "PRICE_CRASH", "ROUND_TRIP_WASH"} <= set(patterns), patterns

    own = isolated(settings, unique)
    catalog = await prepare(own)
    suffix = own.worker_topic_suffix
    await send(
        own,
        f"user-profiles{suffix}",
        [(p["userId"].encode(), catalog.encode("UserProfile", p)) for p in profiles],
    )
    await send(
        own,
        f"risk-reference{suffix}",
        [(REFERENCE_KEY, catalog.encode("RiskReference", reference_record(reference, version=1)))],
    )
    await send(
        own,
        f"crypto-trades{suffix}",
        [(t["userId"].encode(), catalog.encode("CryptoTrade", t)) for t in trades],
    )
    await send(
        own,
        f"crypto-orders{suffix}",
        [(o["userId"].encode(), catalog.encode("OrderEvent", o)) for o in orders],
    )

    worker = WorkerProcess(own, tmp_path / "data", name="parity")
    async with running([worker]):
        ready = time.perf_counter()
        analyzed_records = await collect(
            own,
            f"risk-analyzed-trades{suffix}",
            lambda rs: len(rs) >= len(trades),
            wait_s=600.0,
        )
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            for _ in range(120):
                async with session.get(f"{worker.url}/stats") as response:
                    stats = await response.json()
                if stats["orderEventsIn"] >= len(orders) and stats["heldEvents"] == 0:
                    break
                await asyncio.sleep(0.5)
        elapsed = time.perf_counter() - ready
        # The market and pair agents release the last executions once every trades partition is
        # idle (two seconds after its last trade).
        alert_records = await collect(
            own, f"risk-alerts{suffix}", lambda rs: len(rs) >= len(expected_alerts), 60.0
        )
    assert stats["orderEventsIn"] == len(orders) and stats["deadLettersTotal"] == 0, stats
    assert stats["lateOrderEvents"] == summary.late_order_events

    got_alerts = {a["alertId"]: a for a in (catalog.decode(r.value, "RiskAlert") for r in alert_records)}
    got_patterns = Counter(a["patternType"] for a in got_alerts.values())
    print(
        "alerts per pattern, worker vs replay:",
        {p: (got_patterns[p], n) for p, n in sorted(patterns.items())},
    )
    assert set(got_alerts) == set(expected_alerts)
    assert got_alerts == expected_alerts
    got_analyzed = {}
    for record in analyzed_records:
        analyzed = catalog.decode(record.value, "RiskAnalyzedTrade")
        analyzed["processedAt"] = None
        got_analyzed[analyzed["originalTrade"]["tradeId"]] = analyzed
    # Every trade scored against the market context replay computed (none waited out MAX_CONTEXT_WAIT_S).
    assert stats["marketContextStale"] == 0 and stats["lateForMarket"] == summary.late_for_market, stats
    with_context = sum(
        1 for a in expected_analyzed.values() if a["marketImpactAnalysis"]["marketContextAsOf"]
    )
    assert with_context > len(trades) // 2
    assert got_analyzed == expected_analyzed
    events = len(trades) + len(orders)
    print(
        f"worker: {len(trades):,} trades and {len(orders):,} order events (a backlog) analyzed in "
        f"{elapsed:.1f} s = {events / elapsed:,.0f} events/s; replay {summary.events_per_second:,.0f} "
        f"events/s; {with_context:,} trades scored against a market context"
    )
