"""The market view (``GET /market``) and alert search by symbol and scope, without Elasticsearch.

Parsing, query bodies and result shaping are pure functions; the HTTP tests run the reporting app
with an Elasticsearch URL where nothing listens: a bad parameter must answer 400 with a message
before any search is tried, and a good one 503, never a 500.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from riskengine.search import reporting as r
from riskengine.search.index_templates import TEMPLATES
from riskengine.settings import Settings

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR = 3_600_000
DAY = 24 * HOUR
MARKET_ONLY = {"bool": {"must_not": [{"exists": {"field": "userId"}}]}}


def error_of(call, *args) -> r.ParameterError:
    with pytest.raises(r.ParameterError) as caught:
        call(*args)
    return caught.value


def test_a_market_view_defaults_to_the_last_day_of_market_alerts():
    view = r.parse_market({"symbol": "BTC/USDT"}, NOW)
    assert view == r.MarketView(
        symbol="BTC/USDT", since=NOW - DAY, until=NOW, interval="15m", interval_ms=900_000
    )
    assert (view.scope, view.alerts) == ("market", 50)
    assert (view.until - view.since) // view.interval_ms <= r.MARKET_BUCKETS


def test_the_interval_fits_the_window():
    def interval(span: int) -> str:
        return r.parse_market(
            {"symbol": "ETH/USDT", "since": str(NOW - span), "until": str(NOW)}, NOW
        ).interval

    assert interval(30 * 60_000) == "30s"  # 60 points over half an hour
    assert interval(2 * HOUR) == "1m"
    assert interval(7 * DAY) == "3h"
    assert interval(92 * DAY) == "1d"
    given = r.parse_market({"symbol": "ETH/USDT", "interval": "5m", "scope": "all", "alerts": "0"}, NOW)
    assert (given.interval, given.interval_ms, given.scope, given.alerts) == ("5m", 300_000, "all", 0)


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({}, "symbol"),
        ({"symbol": ""}, "symbol"),
        ({"symbol": "BTCUSDT"}, "symbol"),  # not BASE/QUOTE
        ({"symbol": "BTC/USDT/X"}, "symbol"),
        ({"symbol": "BTC /USDT"}, "symbol"),
        ({"symbol": "B/" + "U" * 200}, "symbol"),
        ({"symbol": "BTC/USDT", "since": "9" * 5000}, "since"),  # int() itself would raise on this
        ({"symbol": "BTC/USDT", "until": "-" + "9" * 5000}, "until"),
        ({"symbol": "BTC/USDT", "since": "-1"}, "since"),
        ({"symbol": "BTC/USDT", "since": str(NOW), "until": str(NOW - 1)}, "since"),  # negative range
        ({"symbol": "BTC/USDT", "since": str(NOW), "until": str(NOW)}, "until"),  # empty range
        ({"symbol": "BTC/USDT", "since": str(NOW - 93 * DAY), "until": str(NOW)}, "since"),  # too wide
        ({"symbol": "BTC/USDT", "since": "0", "until": str(r.MAX_EPOCH_MS)}, "since"),
        ({"symbol": "BTC/USDT", "interval": "1s"}, "interval"),  # 86,401 buckets over the default day
        ({"symbol": "BTC/USDT", "interval": "1" * 5000 + "m"}, "interval"),
        ({"symbol": "BTC/USDT", "scope": "everyone"}, "scope"),
        ({"symbol": "BTC/USDT", "alerts": "101"}, "alerts"),
        ({"symbol": "BTC/USDT", "alerts": "9" * 5000}, "alerts"),
        ({"symbol": "BTC/USDT", "user": "u-1"}, "user"),  # not a parameter of this view
    ],
)
def test_a_market_view_rejects_bad_parameters(params, parameter):
    error = error_of(r.parse_market, params, NOW)
    assert error.parameter == parameter
    assert len(str(error)) < 200, "a hostile value is not echoed whole"


def test_the_market_body_buckets_prices_and_volume_of_the_symbol():
    view = r.parse_market({"symbol": "SOL/USDT", "since": str(NOW - 2 * HOUR), "until": str(NOW)}, NOW)
    body = r.market_trades_body(view)
    assert body["size"] == 0
    assert body["query"] == {
        "bool": {
            "filter": [
                {"term": {"originalTrade.symbol": "SOL/USDT"}},
                {"range": {"eventTimestamp": {"format": "epoch_millis", "gte": NOW - 2 * HOUR, "lte": NOW}}},
            ]
        }
    }
    histogram = body["aggs"]["overTime"]
    assert histogram["date_histogram"] == {
        "field": "eventTimestamp",
        "fixed_interval": "1m",
        "min_doc_count": 0,
        "extended_bounds": {"min": NOW - 2 * HOUR, "max": NOW},
    }
    metrics = {
        "volume": {"sum": {"field": "originalTrade.notional"}},
        "quantity": {"sum": {"field": "originalTrade.quantity"}},
        "low": {"min": {"field": "originalTrade.price"}},
        "high": {"max": {"field": "originalTrade.price"}},
    }
    assert histogram["aggs"] == metrics
    assert {name: body["aggs"][name] for name in metrics} == metrics, "the window's figures too"
    accounts = body["aggs"]["accounts"]["terms"]
    assert (accounts["field"], accounts["order"][0]) == ("originalTrade.userId", {"volume": "desc"})


def test_the_market_alerts_are_the_symbols_alerts_without_a_user():
    view = r.parse_market({"symbol": "SOL/USDT", "since": str(NOW - HOUR), "until": str(NOW)}, NOW)
    body = r.market_alerts_body(view)
    assert body["query"]["bool"]["filter"] == [
        {"term": {"symbol": "SOL/USDT"}},
        MARKET_ONLY,
        {"range": {"timestamp": {"format": "epoch_millis", "gte": NOW - HOUR, "lte": NOW}}},
    ]
    assert body["sort"] == [{"timestamp": "desc"}, {"alertId": "asc"}]
    assert (body["size"], body["from"]) == (50, 0)
    assert body["aggs"]["patterns"]["terms"]["field"] == "patternType"
    every = r.market_alerts_body(dataclasses.replace(view, scope="all"))
    assert every["query"]["bool"]["filter"][1]["range"], "scope=all: no filter on the user"


def test_alerts_are_searchable_by_symbol_and_scope():
    search = r.parse_alert_search({"symbol": "ETH/USDT", "scope": "market", "pattern": "pump_and_dump"})
    assert (search.symbol, search.scope, search.patterns) == ("ETH/USDT", "market", ("PUMP_AND_DUMP",))
    assert r.alert_search_body(search)["query"]["bool"]["filter"] == [
        {"term": {"symbol": "ETH/USDT"}},
        MARKET_ONLY,
        {"terms": {"patternType": ["PUMP_AND_DUMP"]}},
    ]
    accounts = r.alert_search_body(r.parse_alert_search({"scope": "account"}))
    assert accounts["query"]["bool"]["filter"] == [{"exists": {"field": "userId"}}]
    assert r.parse_alert_search({}).scope == "all"
    assert error_of(r.parse_alert_search, {"symbol": "ETH"}).parameter == "symbol"
    assert error_of(r.parse_alert_search, {"scope": "MARKET"}).parameter == "scope"


def test_the_fields_the_market_view_reads_are_mapped_for_it():
    """Unmapped fields (dynamic: false) match nothing and aggregate nothing."""
    alerts = TEMPLATES["riskengine-alerts"][1]["properties"]
    trade = TEMPLATES["riskengine-analyzed-trades"][1]["properties"]["originalTrade"]["properties"]
    assert alerts["symbol"] == {"type": "keyword"}, "alerts are searched by exact symbol"
    assert alerts["userId"] == {"type": "keyword"}, "exists/missing userId tells market alerts apart"
    assert trade["symbol"] == {"type": "keyword"}
    assert trade["userId"] == {"type": "keyword"}
    for field in ("price", "quantity", "notional"):
        assert trade[field] == {"type": "double"}, field


def bucket(key: int, trades: int, volume: float, quantity: float, low: float | None, high: float | None):
    return {
        "key": key,
        "doc_count": trades,
        "volume": {"value": volume},
        "quantity": {"value": quantity},
        "low": {"value": low},
        "high": {"value": high},
    }


def test_the_market_answer_has_a_volume_weighted_price_per_bucket():
    view = r.MarketView(symbol="SOL/USDT", since=NOW, until=NOW + 120_000, interval="1m", interval_ms=60_000)
    trades = {
        "hits": {"total": {"value": 3}, "hits": []},
        "aggregations": {
            "overTime": {
                "buckets": [
                    bucket(NOW, 2, 300.0, 2.0, 100.0, 200.0),
                    bucket(NOW + 60_000, 0, 0.0, 0.0, None, None),
                    bucket(NOW + 120_000, 1, 150.0, 1.0, 150.0, 150.0),
                ]
            },
            **{
                k: v
                for k, v in bucket(0, 3, 450.0, 3.0, 100.0, 200.0).items()
                if k not in ("key", "doc_count")
            },
            "accounts": {"buckets": [{"key": "u-1", "doc_count": 2, "volume": {"value": 300.0}}]},
        },
    }
    market_alert = {"alertId": "m1", "userId": None, "symbol": "SOL/USDT", "patternType": "PUMP_AND_DUMP"}
    alerts = {
        "hits": {"total": {"value": 1}, "hits": [{"_source": market_alert}]},
        "aggregations": {"patterns": {"buckets": [{"key": "PUMP_AND_DUMP", "doc_count": 1}]}},
    }
    shaped = r.market_result(view, trades, alerts)
    assert shaped["buckets"] == [
        {
            "time": NOW,
            "trades": 2,
            "volume": 300.0,
            "quantity": 2.0,
            "price": 150.0,
            "low": 100.0,
            "high": 200.0,
        },
        {
            "time": NOW + 60_000,
            "trades": 0,
            "volume": 0.0,
            "quantity": 0.0,
            "price": None,
            "low": None,
            "high": None,
        },
        {
            "time": NOW + 120_000,
            "trades": 1,
            "volume": 150.0,
            "quantity": 1.0,
            "price": 150.0,
            "low": 150.0,
            "high": 150.0,
        },
    ]
    assert shaped["summary"] == {
        "trades": 3,
        "volume": 450.0,
        "quantity": 3.0,
        "price": 150.0,
        "low": 100.0,
        "high": 200.0,
    }
    assert shaped["accounts"] == [{"userId": "u-1", "trades": 2, "volume": 300.0}]
    assert (shaped["alerts"], shaped["alertsTotal"]) == ([market_alert], 1)
    assert shaped["alertsByPattern"] == {"PUMP_AND_DUMP": 1}
    assert (shaped["symbol"], shaped["interval"], shaped["intervalMs"], shaped["scope"]) == (
        "SOL/USDT",
        "1m",
        60_000,
        "market",
    )


def test_a_market_without_an_index_is_empty_buckets():
    view = r.MarketView(
        symbol="SOL/USDT", since=NOW + 61_000, until=NOW + 180_000, interval="1m", interval_ms=60_000
    )
    shaped = r.market_result(view, {"hits": {"total": {"value": 0}, "hits": []}}, None)
    assert [b["time"] for b in shaped["buckets"]] == [NOW + 60_000, NOW + 120_000, NOW + 180_000]
    assert all(b["trades"] == 0 and b["price"] is None for b in shaped["buckets"])
    assert shaped["summary"]["trades"] == 0
    assert (shaped["alerts"], shaped["alertsTotal"], shaped["accounts"]) == ([], 0, [])


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """The reporting app on an Elasticsearch URL where nothing listens."""
    settings = dataclasses.replace(Settings(), elasticsearch_url=f"http://127.0.0.1:{closed_port()}")
    async with TestClient(TestServer(r.create_reporting_app(settings))) as http:
        yield http


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("", "symbol"),
        ("symbol=" + "9" * 5000, "symbol"),
        ("symbol=BTC%2FUSDT&since=" + "9" * 5000, "since"),
        ("symbol=BTC%2FUSDT&since=" + "9" * 5000 + "&until=1", "since"),
        ("symbol=BTC%2FUSDT&since=1767225600000&until=1767225500000", "since"),
        ("symbol=BTC%2FUSDT&since=2000-01-01&until=2026-01-01", "since"),
        ("symbol=BTC%2FUSDT&since=0000-01-01", "since"),
        ("symbol=BTC%2FUSDT&since=1e400", "since"),
        ("symbol=BTC%2FUSDT&alerts=-" + "9" * 5000, "alerts"),
        ("symbol=BTC%2FUSDT&interval=" + "9" * 5000 + "d", "interval"),
        ("symbol=%00%2F%00", "symbol"),
    ],
)
async def test_hostile_market_parameters_answer_400_with_a_message(client, query, parameter):
    response = await client.get(f"/market?{query}")
    body: dict[str, Any] = await response.json()
    assert response.status == 400, body
    assert body["parameter"] == parameter
    assert body["error"] and len(body["error"]) < 200


async def test_hostile_alert_search_parameters_answer_400(client):
    for query, parameter in (
        ("since=" + "1" * 5000, "since"),
        ("size=" + "1" * 5000, "size"),
        ("symbol=" + "x" * 5000, "symbol"),
    ):
        response = await client.get(f"/alerts?{query}")
        assert response.status == 400
        assert (await response.json())["parameter"] == parameter


async def test_a_good_market_request_without_elasticsearch_answers_503(client):
    response = await client.get("/market?symbol=BTC%2FUSDT&since=1767225600000&until=1767229200000")
    assert response.status == 503
    error = (await response.json())["error"]
    assert "unavailable" in error and "127.0.0.1" not in error and "http" not in error
