"""The dashboard in a real headless browser, fed by a real worker on the local stack.

A worker runs on this test's own topics; the dashboard app serves in this process on a free port,
pointed at that worker (behind a second worker URL where nothing listens, which must be reported,
not fatal) and at the test's topic suffix. Debian's ``chromium``, driven by Playwright, opens the
page; trades that raise alerts are produced while it is open, and the alerts must appear in the
live list. Drill-down: a user's window comes from the worker; an alert's evidence trades come from
Elasticsearch, where the test indexes the analyzed trades and alerts it reads from the worker's
output topics, as the Kafka Connect sink will.

Market view: trades of one symbol (a pump, then a dump) go through the worker, and two market
alerts (userId null, keyed by symbol; the core's market patterns are not needed for the page) are
produced on the alerts topic; both are indexed. From the alert's row the page must open the
symbol's market: the price series, the volume bars and a marker per market alert, saved as
``/tmp/market_view.png``.

Priority: alerts with priorities (some null) are indexed; the page opened with ``?sort=priority&
minPriority=50`` must list them in that order and filtered (the URL's parameters go to the
reporting view), and the order and minimum-priority controls must change the rendered list, the
page URL, and where live alerts go.

The page load time and the time from producing an alert-raising trade to its row in the browser
are printed (``pytest -rP`` shows them).
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from riskengine.dashboard.server import FEED, serving
from riskengine.search.index_templates import install_index_templates
from riskengine.search.reporting import Indices, elasticsearch_client

from .test_reporting_elasticsearch import expected_order, index_documents, prioritized_alerts
from .test_worker import collect, decoded
from .worker_harness import WorkerProcess, free_port, isolated, prepare, running, sample_trades, send

#: Seconds a browser-side wait may take before the test fails.
WAIT_MS = 30_000
#: Where the market view's screenshot goes (kept after the run, unlike pytest's tmp_path).
MARKET_SCREENSHOT = Path(tempfile.gettempdir()) / "market_view.png"
#: Where the alert list sorted by priority goes.
PRIORITY_SCREENSHOT = Path(tempfile.gettempdir()) / "alerts_by_priority.png"


def chromium_path() -> str:
    """Debian's chromium; a missing browser fails the test with the fix (it is not skipped)."""
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(
            "chromium is not installed, so the dashboard's browser test cannot run: "
            "run scripts/ensure-chromium (apt-get install -y --no-install-recommends chromium)"
        )
    return path


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    executable = chromium_path()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def stack(settings, unique, tmp_path):
    """A worker on isolated topics, the index templates, and the dashboard serving for both."""
    own = isolated(settings, unique)
    catalog = await prepare(own)
    worker = WorkerProcess(own, tmp_path / "data")
    indices = Indices.from_settings(own)
    async with running([worker]), elasticsearch_client(own) as es:
        await install_index_templates(es, own)
        dead = f"http://127.0.0.1:{free_port()}"
        dashboard_settings = dataclasses.replace(
            own, dashboard_host="127.0.0.1", dashboard_port=0, dashboard_worker_urls=f"{dead},{worker.url}"
        )
        try:
            async with serving(dashboard_settings) as (app, url):
                await asyncio.wait_for(app[FEED].live.wait(), 30)
                yield own, catalog, worker, es, app, url
        finally:
            await es.indices.delete(index=[indices.alerts, indices.trades], ignore_unavailable=True)


def trade(base: dict[str, Any], trade_id: str, user: str, symbol: str, notional: float) -> dict[str, Any]:
    """A CryptoTrade record of ``user`` at the current time."""
    price = 50_000.0 if symbol.startswith("BTC") else 3_000.0
    return dict(
        base,
        tradeId=trade_id,
        userId=user,
        customerId=f"c-{user}",
        symbol=symbol,
        side="BUY",
        quantity=notional / price,
        price=price,
        notional=notional,
        timestamp=int(time.time() * 1000),
        counterpartyUserId=None,
    )


def spoofing_flow(base: dict[str, Any], user: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(order events, trades) of a spoof, timed from now: five filled BUY market orders of 0.01 BTC,
    a SELL bait of 0.2 BTC, a BUY fill 1 s later, the bait cancelled 2 s after the fill."""
    now = int(time.time() * 1000) - 20_000
    orders: list[dict[str, Any]] = []
    trades: list[dict[str, Any]] = []

    def order(at: int, kind: str, order_id: str, side: str, quantity: float, price: float) -> None:
        orders.append(
            {
                "eventId": f"{order_id}-{kind}",
                "orderId": order_id,
                "userId": user,
                "symbol": "BTC/USDT",
                "side": side,
                "eventType": kind,
                "price": price,
                "quantity": quantity,
                "remainingQuantity": 0.0 if kind == "FILLED" else quantity,
                "timestamp": at,
                "exchange": "TEST",
            }
        )

    for i in range(6):
        at = now + i * 1_000
        if i == 5:
            order(at - 500, "PLACED", f"{user}-bait", "SELL", 0.2, 50_100.0)
        order(at, "PLACED", f"{user}-o{i}", "BUY", 0.01, 50_000.0)
        order(at, "FILLED", f"{user}-o{i}", "BUY", 0.01, 50_000.0)
        fill = trade(base, f"{user}-t{i}", user, "BTC/USDT", 500.0)
        trades.append(dict(fill, timestamp=at, orderId=f"{user}-o{i}"))
    order(now + 7_000, "CANCELLED", f"{user}-bait", "SELL", 0.2, 50_100.0)
    orders.sort(key=lambda o: o["timestamp"])
    return orders, trades


#: A pump then a dump of SOL/USDT, one trade every 2 minutes by a ring of three accounts.
PUMP_PRICES = (150.0, 156.0, 163.0, 170.0, 178.0, 186.0, 190.0, 172.0, 158.0, 149.0, 141.0, 140.0)


def pump_and_dump_flow(
    base: dict[str, Any], unique: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(trades, market alerts) of a pump and dump of SOL/USDT in the last 25 minutes.

    The alerts are what the market patterns raise: no userId, the symbol, the trades as evidence,
    numbers as features: a PUMP_AND_DUMP at the last trade and a PRICE_CRASH during the dump.
    """
    symbol = "SOL/USDT"
    start = int(time.time() * 1000) - 24 * 60_000
    ring = [f"ring{n}-{unique}" for n in range(3)]
    trades = []
    for i, price in enumerate(PUMP_PRICES):
        notional = 2_000.0 + 500.0 * i
        record = trade(base, f"sol-{unique}-{i}", ring[i % 3], symbol, notional)
        trades.append(dict(record, price=price, quantity=notional / price, timestamp=start + i * 120_000))

    def market_alert(pattern: str, severity: str, last: int, description: str, rise: float) -> dict[str, Any]:
        return {
            "alertId": f"{pattern.lower()}-{unique}",
            "patternType": pattern,
            "userId": None,
            "symbol": symbol,
            "severity": severity,
            "description": description,
            "recommendedAction": "Review the ring's accounts and the symbol's order flow.",
            "timestamp": trades[last]["timestamp"],
            "evidence": [t["tradeId"] for t in trades[: last + 1]],
            "features": [
                {"name": "priceRise", "value": rise, "threshold": 0.2, "comparison": ">="},
                {"name": "referencePrice", "value": PUMP_PRICES[0], "threshold": None, "comparison": None},
            ],
            "ruleVersion": 1,
            "orderActivity": [],
        }

    alerts = [
        market_alert("PRICE_CRASH", "MEDIUM", 9, f"{symbol} fell 21.6% in 6 minutes", -0.216),
        market_alert(
            "PUMP_AND_DUMP", "HIGH", 11, f"{symbol} pumped 26.7% by a ring of 3 accounts, then dumped", 0.267
        ),
    ]
    return trades, alerts


async def open_page(browser: Browser, url: str) -> tuple[Page, float, float]:
    """A page on the dashboard, once its event stream is open; (page, load s, ready s)."""
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    started = time.perf_counter()
    await page.goto(url, wait_until="load")
    loaded = time.perf_counter() - started
    await expect(page.get_by_test_id("feed-status")).to_have_text("live", timeout=WAIT_MS)
    # The chart has its first counts, so live alerts are counted into it.
    await page.get_by_test_id("risk-chart-svg").wait_for(timeout=WAIT_MS)
    return page, loaded, time.perf_counter() - started


async def test_live_alerts_drill_down_and_evidence_in_a_browser(browser, stack, unique, tmp_path):
    settings, catalog, _worker, es, _app, url = stack
    suffix = settings.worker_topic_suffix
    page, load_s, ready_s = await open_page(browser, url)
    second, _load, _ready = await open_page(browser, url)
    async with aiohttp.ClientSession() as http, http.get(f"{url}/api/health") as response:
        health = await response.json()
    assert health == {"feed": "live", "topic": f"risk-alerts{suffix}", "subscribers": 2}

    # Produce while the page is open: whale's BTC trade of 600,000 breaks the BTC large-order
    # threshold and, without a profile (KYC tier 0), the per-trade limit; its first trade is small.
    base = sample_trades()[0].to_record()
    whale, fish = f"whale-{unique}", f"fish-{unique}"
    small = trade(base, f"t-small-{unique}", whale, "BTC/USDT", 500.0)
    large = trade(base, f"t-large-{unique}", whale, "BTC/USDT", 600_000.0)
    eth = trade(base, f"t-eth-{unique}", fish, "ETH/USDT", 300_000.0)
    await send(settings, f"crypto-trades{suffix}", [(whale.encode(), catalog.encode("CryptoTrade", small))])
    produced = time.perf_counter()
    await send(settings, f"crypto-trades{suffix}", [(whale.encode(), catalog.encode("CryptoTrade", large))])
    first_row = page.locator(f'[data-testid="alert-row"][data-user-id="{whale}"]').first
    await first_row.wait_for(timeout=WAIT_MS)
    latency_s = time.perf_counter() - produced
    await send(settings, f"crypto-trades{suffix}", [(fish.encode(), catalog.encode("CryptoTrade", eth))])

    alerts = decoded(
        catalog,
        await collect(
            settings, f"risk-alerts{suffix}", lambda rs: {whale, fish} <= {r.key.decode() for r in rs}
        ),
        "RiskAlert",
    )
    assert {"LARGE_ORDER"} <= {a["patternType"] for a in alerts if a["userId"] == whale}
    for shown in (page, second):  # every browser gets every alert from the one consumer
        for alert in alerts:
            row = shown.locator(f'[data-testid="alert-row"][data-alert-id="{alert["alertId"]}"]')
            await expect(row).to_have_count(1, timeout=WAIT_MS)
            await expect(row).to_have_attribute("data-severity", alert["severity"])
    await expect(page.get_by_test_id("alert-count")).to_have_text(str(len(alerts)))
    # Live alerts are counted into the chart before anything is indexed.
    await expect(page.get_by_test_id("risk-chart-svg")).to_have_attribute("data-total", str(len(alerts)))

    # Drill-down to a user: its detection window, answered by the worker through the dashboard.
    await page.locator(
        f'[data-testid="alert-row"][data-user-id="{whale}"] [data-testid="alert-user"]'
    ).first.click()
    await expect(page.get_by_test_id("user-detail")).to_be_visible()
    await expect(page.get_by_test_id("user-detail-id")).to_have_text(whale)
    await expect(page.get_by_test_id("user-trade-count")).to_have_text("2", timeout=WAIT_MS)
    await expect(page.get_by_test_id("user-recent-trades")).to_have_text("2")

    # Index what the sink will index, then drill down to an alert's evidence trades.
    analyzed = decoded(
        catalog,
        await collect(settings, f"risk-analyzed-trades{suffix}", lambda rs: len(rs) >= 3),
        "RiskAnalyzedTrade",
    )
    await index_documents(es, Indices.from_settings(settings), analyzed, alerts)
    large_order = next(a for a in alerts if a["userId"] == whale and a["patternType"] == "LARGE_ORDER")
    await page.locator(f'[data-testid="alert-row"][data-alert-id="{large_order["alertId"]}"] td').last.click()
    await expect(page.get_by_test_id("alert-detail")).to_be_visible()
    await expect(page.get_by_test_id("user-detail")).to_be_hidden()
    await expect(page.get_by_test_id("alert-detail-pattern")).to_have_text("LARGE_ORDER")
    evidence = page.get_by_test_id("evidence-row")
    await expect(evidence).to_have_count(len(large_order["evidence"]), timeout=WAIT_MS)
    assert [await row.get_attribute("data-trade-id") for row in await evidence.all()] == large_order[
        "evidence"
    ]
    await expect(evidence.first).to_contain_text("BTC/USDT")
    await expect(page.get_by_test_id("alert-features")).to_contain_text("notional")

    # Refreshed views: worker figures (one worker down, reported), indexed counts, top users.
    await page.get_by_test_id("refresh").click()
    await expect(page.get_by_test_id("workers-up")).to_have_text("1 / 2", timeout=WAIT_MS)
    await expect(page.get_by_test_id("analyzed")).to_have_text("3", timeout=WAIT_MS)
    await expect(page.locator('[data-testid="worker"][data-up="false"]')).to_have_count(1)
    await expect(page.get_by_test_id("risk-chart-svg")).to_have_attribute("data-total", str(len(alerts)))
    top = page.locator(f'[data-testid="top-user-row"][data-user-id="{whale}"]')
    await top.wait_for(timeout=WAIT_MS)
    await top.locator("td").last.click()
    await expect(page.get_by_test_id("user-detail-id")).to_have_text(whale)
    await expect(page.get_by_test_id("user-history-svg").locator("circle")).to_have_count(2, timeout=WAIT_MS)
    await expect(page.get_by_test_id("user-alerts").locator("tr")).to_have_count(
        sum(a["userId"] == whale for a in alerts)
    )

    # An order-flow alert: its order book story, drawn from the alert's own order activity.
    spoofer = f"spoofer-{unique}"
    orders, trades = spoofing_flow(base, spoofer)
    await send(
        settings,
        f"crypto-orders{suffix}",
        [(spoofer.encode(), catalog.encode("OrderEvent", o)) for o in orders],
    )
    await send(
        settings,
        f"crypto-trades{suffix}",
        [(spoofer.encode(), catalog.encode("CryptoTrade", t)) for t in trades],
    )
    spoof_row = page.locator(
        f'[data-testid="alert-row"][data-user-id="{spoofer}"][data-pattern="SPOOFING"]'
    ).first
    await spoof_row.wait_for(timeout=WAIT_MS)
    await spoof_row.locator("td").last.click()
    await expect(page.get_by_test_id("alert-detail-pattern")).to_have_text("SPOOFING")
    await expect(page.get_by_test_id("order-story")).to_be_visible()
    bait = page.locator(f'[data-testid="order-life"][data-order-id="{spoofer}-bait"]')
    await expect(bait).to_have_attribute("data-end", "CANCELLED")
    await expect(bait).to_have_attribute("data-side", "SELL")
    await expect(bait.locator('[data-testid="order-event"][data-kind="PLACED"]')).to_have_count(1)
    await expect(bait.locator('[data-testid="order-event"][data-kind="CANCELLED"]')).to_have_count(1)
    fills = page.get_by_test_id("order-fill")
    await expect(fills.and_(page.locator(f'[data-trade-id="{spoofer}-t5"]'))).to_have_count(1)
    assert await fills.count() >= 1
    spoof_alert = next(
        a
        for a in decoded(
            catalog,
            await collect(
                settings,
                f"risk-alerts{suffix}",
                lambda rs: any(r.key.decode() == spoofer for r in rs),
            ),
            "RiskAlert",
        )
        if a["userId"] == spoofer and a["patternType"] == "SPOOFING"
    )
    await expect(page.get_by_test_id("order-activity-row")).to_have_count(len(spoof_alert["orderActivity"]))
    await page.get_by_test_id("order-story").screenshot(path=tmp_path / "order-story.png")

    # Search: a bad parameter is explained, a good one finds the whale's alerts.
    await page.get_by_test_id("search-since").fill("tomorrow")
    await page.get_by_test_id("search-submit").click()
    await expect(page.get_by_test_id("search-note")).to_contain_text("since")
    await page.get_by_test_id("search-since").fill("")
    await page.get_by_test_id("search-user").fill(whale)
    await page.get_by_test_id("search-submit").click()
    await expect(page.get_by_test_id("search-row")).to_have_count(sum(a["userId"] == whale for a in alerts))

    await page.screenshot(path=tmp_path / "dashboard.png", full_page=True)
    navigation_ms = await page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd")
    print(
        f"dashboard page load {load_s * 1000:.0f} ms (navigation timing {navigation_ms:.0f} ms), "
        f"live after {ready_s * 1000:.0f} ms; trade produced -> alert row in the browser "
        f"{latency_s * 1000:.0f} ms; screenshot {tmp_path / 'dashboard.png'}"
    )


async def test_dashboard_api_passes_worker_answers_through(stack):
    settings, _catalog, worker, _es, _app, url = stack
    async with aiohttp.ClientSession() as http:
        # The first worker URL is down: the request goes on to the next, whose 404 passes through.
        async with http.get(f"{url}/api/users/nobody-{settings.worker_topic_suffix}") as response:
            assert response.status == 404
            assert "unknown user" in (await response.json())["error"]
        async with http.get(f"{url}/api/users/{'x' * 129}") as response:
            assert response.status == 400
            assert (await response.json())["parameter"] == "userId"
        async with http.get(f"{url}/api/stats") as response:
            stats = await response.json()
        assert [w["up"] for w in stats["workers"]] == [False, True]
        assert stats["workers"][1]["url"] == worker.url
        assert stats["workers"][0]["error"]
        assert stats["feed"]["state"] == "live"
        async with http.get(f"{url}/api/reporting/alerts?severity=NONE") as response:
            assert response.status == 400
            assert (await response.json())["parameter"] == "severity"


async def test_market_view_of_a_market_alert_in_a_browser(browser, stack, unique):
    settings, catalog, _worker, es, _app, url = stack
    suffix = settings.worker_topic_suffix
    page, _load, _ready = await open_page(browser, url)
    trades, market_alerts = pump_and_dump_flow(sample_trades()[0].to_record(), unique)
    crash, pump = market_alerts
    await send(
        settings,
        f"crypto-trades{suffix}",
        [(t["userId"].encode(), catalog.encode("CryptoTrade", t)) for t in trades],
    )
    analyzed = decoded(
        catalog,
        await collect(settings, f"risk-analyzed-trades{suffix}", lambda rs: len(rs) >= len(trades)),
        "RiskAnalyzedTrade",
    )
    assert {a["originalTrade"]["tradeId"] for a in analyzed} == {t["tradeId"] for t in trades}
    # Keyed by symbol, like the market patterns' alerts; the dashboard's feed shows them live.
    await send(
        settings,
        f"risk-alerts{suffix}",
        [(a["symbol"].encode(), catalog.encode("RiskAlert", a)) for a in market_alerts],
    )
    await index_documents(es, Indices.from_settings(settings), analyzed, market_alerts)

    # The reporting endpoint: every trade in its minute, the two market alerts, hostile input refused.
    window = f"since={trades[0]['timestamp'] - 60_000}&until={trades[-1]['timestamp'] + 60_000}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/api/reporting/market?symbol=SOL%2FUSDT&{window}") as response:
            assert response.status == 200
            answer = await response.json()
        for query in (
            "symbol=SOL%2FUSDT&since=" + "9" * 5000,
            "symbol=SOL%2FUSDT&since=2&until=1",
            "symbol=x",
        ):
            async with http.get(f"{url}/api/reporting/market?{query}") as response:
                assert response.status == 400, await response.text()
                assert (await response.json())["error"]
    assert answer["interval"] == "30s"
    assert [b["price"] for b in answer["buckets"] if b["trades"]] == pytest.approx(PUMP_PRICES)
    assert answer["summary"]["trades"] == len(trades)
    assert (answer["summary"]["low"], answer["summary"]["high"]) == (min(PUMP_PRICES), max(PUMP_PRICES))
    assert [a["alertId"] for a in answer["alerts"]] == [pump["alertId"], crash["alertId"]], "newest first"
    assert {a["userId"] for a in answer["accounts"]} == {t["userId"] for t in trades}

    # From the market alert in the live list to its market, around its time.
    row = page.locator(f'[data-testid="alert-row"][data-alert-id="{pump["alertId"]}"]')
    await expect(row).to_have_attribute("data-market", "true", timeout=WAIT_MS)
    await row.locator("td").last.click()
    market = page.get_by_test_id("market-detail")
    await expect(market).to_be_visible()
    await expect(page.get_by_test_id("alert-detail-pattern")).to_have_text("PUMP_AND_DUMP")
    await expect(page.get_by_test_id("market-symbol")).to_have_text("SOL/USDT")
    chart = page.get_by_test_id("market-svg")
    await expect(chart).to_have_attribute("data-traded-buckets", str(len(trades)), timeout=WAIT_MS)
    points = page.get_by_test_id("market-price-point")
    await expect(points).to_have_count(len(trades))
    prices = [float(await p.get_attribute("data-price") or "nan") for p in await points.all()]
    assert prices == pytest.approx(PUMP_PRICES), "the price series, oldest first"
    await expect(page.get_by_test_id("market-price-line")).to_have_attribute("data-points", str(len(trades)))
    await expect(page.get_by_test_id("market-volume-bar")).to_have_count(len(trades))
    await expect(page.get_by_test_id("market-band")).to_have_count(1)
    await expect(page.get_by_test_id("market-trades")).to_have_text(str(len(trades)))
    markers = page.get_by_test_id("market-alert")
    await expect(markers).to_have_count(2)
    pump_marker = markers.and_(page.locator(f'[data-alert-id="{pump["alertId"]}"]'))
    await expect(pump_marker).to_have_attribute("data-pattern", "PUMP_AND_DUMP")
    await expect(pump_marker).to_have_attribute("data-market", "true")
    await expect(pump_marker).to_have_class("market-alert selected")
    await expect(pump_marker.locator("title")).to_contain_text(pump["description"])
    await expect(page.get_by_test_id("market-anchor")).to_have_count(1)
    await expect(page.get_by_test_id("market-alert-row")).to_have_count(2)
    await expect(page.get_by_test_id("market-account-row")).to_have_count(3)
    # The accounts behind the market alert are its evidence trades' users.
    await expect(page.get_by_test_id("evidence-row")).to_have_count(len(pump["evidence"]), timeout=WAIT_MS)
    await expect(page.get_by_test_id("evidence-user")).to_have_count(len(pump["evidence"]))
    await expect(page.get_by_test_id("alert-features")).to_contain_text("priceRise")
    await market.screenshot(path=MARKET_SCREENSHOT)

    # A marker opens its alert; the market stays.
    await markers.and_(page.locator(f'[data-alert-id="{crash["alertId"]}"]')).click()
    await expect(page.get_by_test_id("alert-detail-pattern")).to_have_text("PRICE_CRASH")
    await expect(market).to_be_visible()

    # The symbol of an alert opens the market alone; market alerts are searchable by symbol.
    await page.locator(
        f'[data-testid="alert-row"][data-alert-id="{crash["alertId"]}"] [data-testid="alert-symbol"]'
    ).click()
    await expect(page.get_by_test_id("alert-detail")).to_be_hidden()
    await expect(market).to_be_visible()
    await expect(page.get_by_test_id("market-price-point")).to_have_count(len(trades), timeout=WAIT_MS)
    await page.get_by_test_id("search-symbol").fill("SOL/USDT")
    await page.get_by_test_id("search-scope").select_option("market")
    await page.get_by_test_id("search-submit").click()
    await expect(page.get_by_test_id("search-row")).to_have_count(2, timeout=WAIT_MS)
    await expect(page.locator('[data-testid="search-row"][data-market="true"]')).to_have_count(2)
    print(f"market view screenshot {MARKET_SCREENSHOT}")


async def listed(page: Page, expected: list[str]) -> None:
    """Wait until the live list shows exactly ``expected`` (alert ids, top to bottom)."""
    rows = page.get_by_test_id("alert-row")
    deadline = time.monotonic() + WAIT_MS / 1000
    while True:
        shown = await rows.evaluate_all("rows => rows.map(r => r.dataset.alertId)")
        if shown == expected or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert shown == expected


async def test_the_alert_list_sorts_and_filters_by_priority_in_a_browser(browser, stack, unique):
    settings, catalog, _worker, es, _app, url = stack
    alerts = prioritized_alerts(unique)
    await index_documents(es, Indices.from_settings(settings), [], alerts)
    by_id = {a["alertId"]: a for a in alerts}
    newest = sorted(alerts, key=lambda a: -a["timestamp"])

    def at_least(minimum: int) -> list[dict[str, Any]]:
        return [a for a in alerts if a["priority"] is not None and a["priority"] >= minimum]

    # The page URL's order and minimum reach the reporting view and set the controls.
    page, _load, _ready = await open_page(browser, f"{url}/?sort=priority&minPriority=50")
    await expect(page.get_by_test_id("alerts-sort")).to_have_value("priority")
    await expect(page.get_by_test_id("alerts-min-priority")).to_have_value("50")
    await listed(page, expected_order(at_least(50)))
    await expect(page.get_by_test_id("alert-count")).to_have_text(str(len(at_least(50))))

    # Each row shows its priority in its band's colour.
    rows = page.get_by_test_id("alert-row")
    for row in await rows.all():
        alert = by_id[await row.get_attribute("data-alert-id") or ""]
        badge = row.get_by_test_id("priority")
        await expect(badge).to_have_text(str(alert["priority"]))
        band = "high" if alert["priority"] >= 80 else "medium"
        await expect(badge).to_have_attribute("data-band", band)
    colours = {
        band: await page.locator(f'[data-testid="alert-row"] [data-band="{band}"]').first.evaluate(
            "node => getComputedStyle(node).backgroundColor"
        )
        for band in ("high", "medium")
    }
    assert colours == {"high": "rgb(214, 59, 59)", "medium": "rgb(240, 168, 48)"}  # red, amber

    # Newest first, same minimum; the page URL follows the controls.
    await page.get_by_test_id("alerts-sort").select_option("time")
    await listed(page, [a["alertId"] for a in newest if a in at_least(50)])
    assert page.url.endswith("/?minPriority=50")

    # No minimum: every alert, those without a priority too (a grey dash), newest first.
    await page.get_by_test_id("alerts-min-priority").fill("")
    await page.get_by_test_id("alerts-min-priority").dispatch_event("change")
    await listed(page, [a["alertId"] for a in newest])
    assert page.url == f"{url}/"
    unprioritized = page.locator('[data-testid="alert-row"][data-priority=""]')
    await expect(unprioritized).to_have_count(sum(a["priority"] is None for a in alerts))
    await expect(unprioritized.first.get_by_test_id("priority")).to_have_text("\u2013")
    await expect(unprioritized.first.get_by_test_id("priority")).to_have_attribute("data-band", "none")
    low = page.locator('[data-testid="alert-row"][data-priority="0"] [data-testid="priority"]')
    await expect(low).to_have_attribute("data-band", "low")

    # Highest priority first without a minimum: the alerts without a priority last.
    await page.get_by_test_id("alerts-sort").select_option("priority")
    await listed(page, expected_order(alerts))
    assert page.url.endswith("/?sort=priority")
    await page.locator("#alerts-panel").screenshot(path=PRIORITY_SCREENSHOT)

    # Minimum 80: live alerts go to their place, and one below the minimum is not listed.
    await page.get_by_test_id("alerts-min-priority").fill("80")
    await page.get_by_test_id("alerts-min-priority").dispatch_event("change")
    await listed(page, expected_order(at_least(80)))
    assert page.url.endswith("/?sort=priority&minPriority=80")
    now = int(time.time() * 1000)
    urgent = dict(alerts[0], alertId=f"live-urgent-{unique}", priority=95, timestamp=now)
    routine = dict(alerts[0], alertId=f"live-routine-{unique}", priority=10, timestamp=now)
    await send(
        settings,
        f"risk-alerts{settings.worker_topic_suffix}",
        [(a["userId"].encode(), catalog.encode("RiskAlert", a)) for a in (urgent, routine)],
    )
    await listed(page, expected_order([*at_least(80), urgent]))
    assert await page.locator(f'[data-alert-id="{urgent["alertId"]}"]').get_attribute("data-source") == "live"

    # Back to everything newest first: the live alerts (not indexed) stay listed, the routine one too.
    await page.get_by_test_id("alerts-min-priority").fill("")
    await page.get_by_test_id("alerts-min-priority").dispatch_event("change")
    await page.get_by_test_id("alerts-sort").select_option("time")
    live = sorted((urgent, routine), key=lambda a: (-a["timestamp"], a["alertId"]))
    await listed(page, [a["alertId"] for a in [*live, *newest]])

    # A minimum the reporting view refuses is explained, and nothing is listed as if it applied.
    for hostile in ("1e300", "-5", "9" * 200, "high"):
        bad, _load, _ready = await open_page(browser, f"{url}/?minPriority={hostile}")
        await expect(bad.get_by_test_id("alerts-note")).to_contain_text("minPriority", timeout=WAIT_MS)
        await expect(bad.get_by_test_id("alert-row")).to_have_count(0)
        await bad.close()
    # A value longer than any parameter may be (256 characters) is refused with the page itself.
    over = await browser.new_page()
    refused = await over.goto(f"{url}/?minPriority={'9' * 400}")
    assert refused is not None and refused.status == 400
    await over.close()

    # The search form passes its order and minimum priority through too.
    await page.get_by_test_id("search-user").fill(f"prio-{unique}")
    await page.get_by_test_id("search-min-priority").fill("50")
    await page.get_by_test_id("search-sort").select_option("priority")
    await page.get_by_test_id("search-submit").click()
    found = page.get_by_test_id("search-row")
    await expect(found).to_have_count(len(at_least(50)), timeout=WAIT_MS)
    assert [await r.get_attribute("data-alert-id") for r in await found.all()] == expected_order(at_least(50))
    await expect(page.get_by_test_id("search-note")).to_contain_text("by priority: 80-100 4, 50-79 3")
