"""(f) The web views of two workers in one group: any worker answers for any user."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .test_worker import collect
from .worker_harness import WorkerProcess, isolated, prepare, running, sample_trades, send_trades

TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: An admin POST without a body (every POST must be JSON).
ADMIN = AUTH | {"Content-Type": "application/json"}


async def get(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    async with session.get(url, headers=headers) as response:
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, await response.text()


@pytest.fixture
async def two_workers(settings, unique, tmp_path):
    own = isolated(settings, unique)
    catalog = await prepare(own)
    workers = [
        WorkerProcess(own, tmp_path / f"data-{n}", name=f"w{n}", worker_admin_token=TOKEN) for n in (1, 2)
    ]
    async with running(workers):
        yield own, catalog, workers


async def owned_partitions(session: aiohttp.ClientSession, workers: list[WorkerProcess], total: int):
    """Wait until the two workers split the trade partitions between them; returns each one's set."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 45
    owned: list[set[str]] = []
    while loop.time() < deadline:
        owned = []
        for worker in workers:
            status, stats = await get(session, f"{worker.url}/stats")
            owned.append(set(stats["consumerLag"]) if status == 200 else set())
        if all(owned) and not owned[0] & owned[1] and len(owned[0] | owned[1]) == total:
            return owned
        await asyncio.sleep(0.5)
    raise AssertionError(f"partitions never split between the workers: {owned}")


async def test_web_views_answer_from_any_worker(two_workers):
    settings, catalog, workers = two_workers
    suffix = settings.worker_topic_suffix
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        await owned_partitions(session, workers, settings.topic_partitions)
        trades = sample_trades()
        await send_trades(settings, catalog, trades)
        await collect(settings, f"risk-analyzed-trades{suffix}", lambda rs: len(rs) >= len(trades))
        counts: dict[str, int] = {}
        for trade in trades:
            counts[trade.user_id] = counts.get(trade.user_id, 0) + 1

        partitions_seen = set()
        for user, count in counts.items():
            documents = []
            for worker in workers:
                status, document = await get(session, f"{worker.url}/users/{user}", AUTH)
                assert status == 200, (worker.url, user, document)
                documents.append(document)
            assert documents[0] == documents[1], "both workers answer with the owner's state"
            assert documents[0]["tradeCount"] == count
            partitions_seen.add(documents[0]["lastApplied"]["partition"])
        # Users live on several partitions, and each worker owns some: some answers were forwarded.
        assert len(partitions_seen) >= 2

        status, document = await get(session, f"{workers[0].url}/users/nobody-{suffix}", AUTH)
        assert status == 404 and "unknown user" in document["error"]

        # The state is the worker's decoded view, behind the token; Faust's raw pages are off.
        user = next(iter(counts))
        for worker in workers:
            status, _ = await get(session, f"{worker.url}/users/{user}")
            assert status == 401
            for page in ("/table/", "/table/user-state/", "/router/"):
                status, _ = await get(session, f"{worker.url}{page}", AUTH)
                assert status == 404, page
        # The market table, decoded, from whichever worker holds the symbol's partition.
        # (The market agent releases executions in event time, so it may follow a little later.)
        symbol = trades[0].symbol
        found: list[Any] = []
        for _ in range(40):
            for worker in workers:
                status, body = await get(session, f"{worker.url}/tables/market-state?key={symbol}", AUTH)
                assert status in (200, 404), body
                if status == 200 and body["state"]["executions"] >= 1:
                    found.append(body)
            if found:
                break
            await asyncio.sleep(0.5)
        assert found and "bars" in found[0]["state"]
        status, _ = await get(session, f"{workers[0].url}/tables/market-state?key={symbol}")
        assert status == 401
        status, _ = await get(session, f"{workers[0].url}/users/{user}", {"Host": "evil.example:80"} | AUTH)
        assert status == 421
        status, _ = await get(session, f"{workers[0].url}/alerts?since={'9' * 5000}")
        assert status == 400

        statuses = {}
        for worker in workers:
            status, stats = await get(session, f"{worker.url}/stats")
            assert status == 200
            statuses[worker.url] = stats
        assert sum(s["analyzed"] for s in statuses.values()) == len(trades)
        patterns: dict[str, int] = {}
        for stats in statuses.values():
            for pattern, n in stats["alertsByPattern"].items():
                patterns[pattern] = patterns.get(pattern, 0) + n
        assert patterns.get("WASH_TRADING") == 2

        # Alerts, filtered, from whichever worker raised them.
        wash = []
        for worker in workers:
            status, body = await get(session, f"{worker.url}/alerts?pattern=WASH_TRADING&severity=CRITICAL")
            assert status == 200
            wash.extend(body["alerts"])
        assert len(wash) == 2 and all(a["patternType"] == "WASH_TRADING" for a in wash)
        status, body = await get(session, f"{workers[0].url}/alerts?since=99999999999999")
        assert status == 200 and body["alerts"] == []
        for bad in ("severity=LOUD", "pattern=NOPE", "since=yesterday", "limit=0"):
            status, body = await get(session, f"{workers[0].url}/alerts?{bad}")
            assert status == 400 and body["error"], bad

        status, health = await get(session, f"{workers[1].url}/health")
        assert status == 200 and health["status"] == "ready"
        status, text = await get(session, f"{workers[0].url}/metrics")
        assert status == 200
        # Scraped as Prometheus does: the text parser must accept every line.
        families = {family.name: family for family in text_string_to_metric_families(text)}
        assert families["riskengine_analyzed"].type == "counter"
        assert any(s.name == "riskengine_consumer_lag" for s in families["riskengine_consumer_lag"].samples)
        scraped = [
            families[name]
            for name in (
                "riskengine_batch_processing_seconds",
                "riskengine_trade_processing_seconds",
                "riskengine_batch_size",
                "riskengine_delivery_seconds",
                "riskengine_event_time_lag_seconds",
            )
        ]
        assert all(family.type == "histogram" for family in scraped)
        # Some worker analyzed the trades: the two workers' trade histograms together counted them.
        counted = 0.0
        for worker in workers:
            status, text = await get(session, f"{worker.url}/metrics")
            for family in text_string_to_metric_families(text):
                if family.name == "riskengine_trade_processing_seconds":
                    counted += sum(s.value for s in family.samples if s.name.endswith("_count"))
        assert counted >= 1

        clear = f"{workers[0].url}/admin/alerts/clear"
        async with session.post(clear, json={}) as response:
            assert response.status == 401
        async with session.post(clear, json={}, headers={"Authorization": "Bearer wrong"}) as response:
            assert response.status == 401
        async with session.post(clear, data=b"{}", headers=AUTH | {"Content-Type": "text/plain"}) as response:
            assert response.status == 415
        async with session.post(clear, headers=ADMIN | {"Origin": "http://evil.example"}) as response:
            assert response.status == 403
        async with session.post(clear, headers=ADMIN) as response:
            assert response.status == 200
        status, body = await get(session, f"{workers[0].url}/alerts")
        assert body["alerts"] == []
