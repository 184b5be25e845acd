"""The dashboard's fan-out, stats aggregation and settings, without services."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from typing import Any

import pytest
from aiohttp import web

from riskengine.dashboard.feed import CLOSED, Broadcaster
from riskengine.dashboard.server import STATIC, _event, aggregate_stats, create_dashboard, worker_urls
from riskengine.settings import Settings


def alert(n: int) -> dict[str, Any]:
    return {"alertId": f"a{n}", "severity": "HIGH"}


async def test_every_subscriber_gets_every_alert_in_order():
    broadcaster = Broadcaster(queue_size=10, backlog=0)
    first, second = broadcaster.subscribe(), broadcaster.subscribe()
    for n in range(3):
        broadcaster.publish(alert(n))
    for subscription in (first, second):
        assert [await subscription.get(1.0) for _ in range(3)] == [alert(0), alert(1), alert(2)]
        assert await subscription.get(0.01) is None, "nothing more: a timeout, not an alert"


async def test_a_slow_subscriber_drops_alerts_and_never_blocks_the_others():
    broadcaster = Broadcaster(queue_size=2, backlog=0)
    slow, fast = broadcaster.subscribe(), broadcaster.subscribe()
    # The queue holds at least backlog + 1 alerts: here 2.
    for n in range(5):
        broadcaster.publish(alert(n))  # synchronous: publishing cannot wait on anyone
        assert await fast.get(1.0) == alert(n)
    assert slow.take_dropped() == 3
    assert slow.take_dropped() == 0, "counted once"
    assert [await slow.get(1.0), await slow.get(1.0)] == [alert(0), alert(1)]


async def test_newcomers_get_the_backlog_after_the_last_alert_they_saw():
    broadcaster = Broadcaster(queue_size=10, backlog=3)
    for n in range(5):
        broadcaster.publish(alert(n))
    fresh = broadcaster.subscribe()
    assert [await fresh.get(1.0) for _ in range(3)] == [alert(2), alert(3), alert(4)]
    resumed = broadcaster.subscribe(last_seen="a3")
    assert await resumed.get(1.0) == alert(4)
    assert await resumed.get(0.01) is None
    unknown = broadcaster.subscribe(last_seen="a0")  # fell out of the backlog: all of it
    assert await unknown.get(1.0) == alert(2)


async def test_closing_ends_every_stream_even_with_a_full_queue():
    broadcaster = Broadcaster(queue_size=1, backlog=0)
    subscription = broadcaster.subscribe()
    broadcaster.publish(alert(1))
    broadcaster.publish(alert(2))
    waiter = asyncio.ensure_future(broadcaster.subscribe().get(5.0))
    await asyncio.sleep(0)
    broadcaster.close()
    assert await subscription.get(1.0) is CLOSED
    assert await asyncio.wait_for(waiter, 1.0) is CLOSED
    assert broadcaster.subscriptions == set()
    assert await broadcaster.subscribe().get(1.0) is CLOSED, "no new stream once closed"
    broadcaster.unsubscribe(subscription)  # a handler's finally after close is harmless


def test_stats_of_every_worker_are_combined_and_a_down_worker_is_reported():
    workers = [
        {
            "url": "http://w1",
            "up": True,
            "stats": {
                "uptimeSeconds": 10.0,
                "tradesIn": 100,
                "analyzed": 98,
                "throughputPerSecond": 12.5,
                "consumerLag": {"0": 3, "2": 0},
                "deadLetters": {"malformed-frame": 2},
                "alertsByPattern": {"LARGE_ORDER": 4, "WASH_TRADING": 1},
                "rulesVersion": 2,
            },
        },
        {
            "url": "http://w2",
            "up": True,
            "stats": {
                "tradesIn": 50,
                "analyzed": 50,
                "throughputPerSecond": 7.5,
                "consumerLag": {"1": 5, "2": 1},  # partition 2 moving between the two
                "deadLetters": {"malformed-frame": 1, "invalid-record": 1},
                "alertsByPattern": {"LARGE_ORDER": 2},
                "rulesVersion": 3,
            },
        },
        {"url": "http://w3", "up": False, "error": "connection refused"},
    ]
    combined = aggregate_stats(workers)
    assert combined["throughputPerSecond"] == 20.0
    assert (combined["tradesIn"], combined["analyzed"]) == (150, 148)
    assert combined["consumerLag"] == {"0": 3, "1": 5, "2": 1}
    assert combined["consumerLagTotal"] == 9
    assert combined["deadLetters"] == {"malformed-frame": 3, "invalid-record": 1}
    assert combined["deadLettersTotal"] == 4
    assert combined["alertsByPattern"] == {"LARGE_ORDER": 6, "WASH_TRADING": 1}
    assert list(combined["alertsByPattern"]) == ["LARGE_ORDER", "WASH_TRADING"], "most frequent first"
    assert combined["alertsTotal"] == 7
    assert combined["rulesVersion"] == 3
    assert (combined["workersUp"], combined["workersDown"]) == (2, 1)
    assert combined["workers"][0]["partitions"] == ["0", "2"]
    assert combined["workers"][2] == {"url": "http://w3", "up": False, "error": "connection refused"}
    assert aggregate_stats([])["workersUp"] == 0


def test_worker_urls_are_checked():
    def urls(value: str) -> list[str]:
        return worker_urls(dataclasses.replace(Settings(), dashboard_worker_urls=value))

    assert urls(" http://127.0.0.1:6066/ , http://127.0.0.1:6067") == [
        "http://127.0.0.1:6066",
        "http://127.0.0.1:6067",
    ]
    for bad in ("", " , ", "127.0.0.1:6066", "ftp://host"):
        with pytest.raises(ValueError, match="RISKENGINE_DASHBOARD_WORKER_URLS"):
            urls(bad)


def test_an_event_is_one_sse_record():
    record = _event("alert", {"alertId": "a\n1", "text": "two\nlines"}, "a1")
    lines = record.decode().split("\n")
    assert lines[:2] == ["event: alert", "id: a1"]
    assert json.loads(lines[2].removeprefix("data: ")) == {"alertId": "a\n1", "text": "two\nlines"}
    assert record.endswith(b"\n\n") and record.count(b"\n") == 4


def test_the_script_only_looks_up_elements_the_page_has():
    """A renamed or missing element would only fail in a browser, on the one click that needs it."""
    page = (STATIC / "index.html").read_text()
    script = (STATIC / "dashboard.js").read_text()
    ids = set(re.findall(r'\bid="([^"]+)"', page))
    looked_up = set(re.findall(r'\$\("([^"]+)"\)', script))
    # The detail panel's parts, looked up by name (showPanel).
    looked_up |= {f"{part}-detail" for part in ("user", "market", "alert")}
    assert looked_up - ids == set()
    assert {"market-detail", "market-chart", "market-window", "market-account-alerts"} <= looked_up
    assert {"alerts-sort", "alerts-min-priority"} <= looked_up, "the live list's priority controls"


def test_the_priority_controls_offer_what_the_reporting_view_takes():
    """The order options are the alert search's sorts; the minimum's bounds are the contract's."""
    from riskengine.search.reporting import MAX_PRIORITY, PRIORITY_BANDS, parse_alert_search

    page = (STATIC / "index.html").read_text()
    select = re.search(r'<select id="alerts-sort".*?</select>', page, re.S)
    assert select is not None
    for sort in re.findall(r'value="([^"]*)"', select.group(0)):
        assert parse_alert_search({"sort": sort}).sort == sort
    minimum = re.search(r'<input id="alerts-min-priority"[^>]*>', page, re.S)
    assert minimum is not None
    assert 'min="0"' in minimum.group(0) and f'max="{MAX_PRIORITY}"' in minimum.group(0)
    # The page's colour bands are the reporting view's.
    script = (STATIC / "dashboard.js").read_text()
    assert [low for _name, low in PRIORITY_BANDS] == [80, 50, 0]
    assert 'priority >= 80 ? "high" : priority >= 50 ? "medium" : "low"' in script


def test_the_dashboard_serves_the_market_view_under_the_reporting_api():
    app = create_dashboard(dataclasses.replace(Settings(), dashboard_worker_urls="http://127.0.0.1:6066"))
    reporting = next(
        resource for resource in app.router.resources() if resource.canonical == "/api/reporting"
    )
    assert isinstance(reporting, web.PrefixedSubAppResource)
    served = {resource.canonical for resource in reporting.get_info()["app"].router.resources()}
    assert "/api/reporting/market" in served
