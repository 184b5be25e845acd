"""The reporting views' parameter parsing, query bodies and result shaping, without Elasticsearch."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from riskengine.search import reporting as r
from riskengine.settings import Settings

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def error_of(call, *args) -> r.ParameterError:
    with pytest.raises(r.ParameterError) as caught:
        call(*args)
    return caught.value


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1767225600000", NOW),
        ("2026-01-01T00:00:00Z", NOW),
        ("2026-01-01T01:00:00+01:00", NOW),
        ("2026-01-01T00:00:00", NOW),  # no zone: UTC
        ("2026-01-01", NOW),
        ("2026-01-01T00:00:00.250Z", NOW + 250),
    ],
)
def test_times_are_epoch_ms_or_iso(raw, expected):
    assert r.parse_time("since", raw) == expected


@pytest.mark.parametrize("raw", ["yesterday", "2026-13-01", "1.5", "-5", str(r.MAX_EPOCH_MS + 1)])
def test_a_bad_time_names_its_parameter(raw):
    error = error_of(r.parse_time, "until", raw)
    assert error.parameter == "until"
    assert "until" in str(error)


def test_alert_search_defaults_and_every_filter():
    assert r.parse_alert_search({}) == r.AlertSearch()
    search = r.parse_alert_search(
        {
            "user": "u-1",
            "pattern": "wash_trading, LARGE_ORDER,WASH_TRADING",
            "severity": "HIGH",
            "since": "2026-01-01T00:00:00Z",
            "until": str(NOW + 1000),
            "q": "  wash trades  ",
            "size": "50",
            "page": "3",
        }
    )
    assert search == r.AlertSearch(
        user="u-1",
        patterns=("WASH_TRADING", "LARGE_ORDER"),
        severities=("HIGH",),
        since=NOW,
        until=NOW + 1000,
        q="wash trades",
        size=50,
        page=3,
    )


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"pattern": "PUMPING"}, "pattern"),
        ({"severity": "SEVERE"}, "severity"),
        ({"size": "0"}, "size"),
        ({"size": "101"}, "size"),
        ({"size": "ten"}, "size"),
        ({"page": "0"}, "page"),
        ({"page": "101", "size": "100"}, "page"),  # beyond Elasticsearch's result window
        ({"since": str(NOW + 1), "until": str(NOW)}, "since"),
        ({"q": "x" * 201}, "q"),
        ({"user": "u" * 129}, "user"),
        ({"serverity": "HIGH"}, "serverity"),  # a typo is an error, not an ignored filter
    ],
)
def test_alert_search_rejects_bad_parameters(params, parameter):
    assert error_of(r.parse_alert_search, params).parameter == parameter


def test_alert_search_body_filters_sorts_and_pages():
    search = r.AlertSearch(
        user="u-1",
        patterns=("WASH_TRADING",),
        severities=("HIGH", "CRITICAL"),
        since=NOW,
        q="wash",
        size=10,
        page=2,
    )
    body = r.alert_search_body(search)
    assert body["query"] == {
        "bool": {
            "filter": [
                {"term": {"userId": "u-1"}},
                {"terms": {"patternType": ["WASH_TRADING"]}},
                {"terms": {"severity": ["HIGH", "CRITICAL"]}},
                {"range": {"timestamp": {"format": "epoch_millis", "gte": NOW}}},
            ],
            "must": [
                {
                    "simple_query_string": {
                        "query": "wash",
                        "fields": ["description", "recommendedAction"],
                        "default_operator": "and",
                    }
                }
            ],
        }
    }
    assert body["sort"] == [{"timestamp": "desc"}, {"alertId": "asc"}]
    assert (body["from"], body["size"]) == (10, 10)
    assert r.alert_search_body(r.AlertSearch())["query"] == {"bool": {"filter": []}}


def test_every_filtered_field_is_mapped_in_the_index_templates():
    """Terms on an unmapped field match nothing (dynamic: false): the bodies use mapped fields only."""
    from riskengine.search.index_templates import TEMPLATES

    alerts = TEMPLATES["riskengine-alerts"][1]["properties"]
    trades = TEMPLATES["riskengine-analyzed-trades"][1]["properties"]
    for field in (
        "userId",
        "patternType",
        "severity",
        "timestamp",
        "alertId",
        "description",
        "recommendedAction",
        "priority",
    ):
        assert field in alerts, field
    assert alerts["priority"] == {"type": "integer"}, "sorted and ranged as a number"
    for field in ("riskScore", "finalRiskLevel", "triggeredPatterns", "eventTimestamp"):
        assert field in trades, field
    for field in ("userId", "tradeId"):
        assert field in trades["originalTrade"]["properties"], field
    for source, splits in r.SPLIT_FIELDS.items():
        mapped = alerts if source == "alerts" else trades
        for field in splits.values():
            assert mapped[field] == {"type": "keyword"}, (source, field)


def test_user_history_parameters_and_bodies():
    history = r.parse_user_history("u-1", {"since": str(NOW), "size": "5", "alerts": "0"})
    assert history == r.UserHistory(user="u-1", since=NOW, until=None, size=5, alerts=0)
    trades = r.history_trades_body(history)
    assert trades["query"]["bool"]["filter"] == [
        {"term": {"originalTrade.userId": "u-1"}},
        {"range": {"eventTimestamp": {"format": "epoch_millis", "gte": NOW}}},
    ]
    assert trades["sort"][0] == {"eventTimestamp": "desc"}
    assert trades["size"] == 5
    assert set(trades["aggs"]) == {"maxScore", "avgScore", "levels"}
    alerts = r.history_alerts_body(dataclasses.replace(history, alerts=7))
    assert alerts["query"]["bool"]["filter"][0] == {"term": {"userId": "u-1"}}
    assert alerts["size"] == 7
    assert error_of(r.parse_user_history, "", {}).parameter == "userId"
    assert error_of(r.parse_user_history, "u", {"size": "1001"}).parameter == "size"
    assert error_of(r.parse_user_history, "u", {"alerts": "101"}).parameter == "alerts"


def test_top_users_default_to_the_last_day_ranked_by_max_score():
    top = r.parse_top_users({}, NOW)
    assert top == r.TopUsers(since=NOW - r.DEFAULT_WINDOW_MS, until=NOW, by="max", size=10)
    body = r.top_users_body(top)
    users = body["aggs"]["users"]
    assert body["size"] == 0
    assert users["terms"]["field"] == "originalTrade.userId"
    assert users["terms"]["order"][0] == {"maxScore": "desc"}
    assert body["query"]["bool"]["filter"] == [
        {
            "range": {
                "eventTimestamp": {"format": "epoch_millis", "gte": NOW - r.DEFAULT_WINDOW_MS, "lte": NOW}
            }
        }
    ]
    summed = r.top_users_body(r.parse_top_users({"by": "sum", "size": "3"}, NOW))["aggs"]["users"]["terms"]
    assert summed["order"][0] == {"sumScore": "desc"}
    assert summed["size"] == 3


def test_top_users_by_alerts_count_alert_documents():
    top = r.parse_top_users({"by": "alerts", "since": str(NOW - 1000), "until": str(NOW)}, NOW + 10**6)
    body = r.top_users_body(top)
    users = body["aggs"]["users"]
    assert users["terms"]["field"] == "userId"
    assert users["terms"]["order"][0] == {"_count": "desc"}
    assert set(users["aggs"]) == {"patterns", "severities", "priorityBands", "noPriority"}
    row = r.top_users_result(
        top,
        {
            "aggregations": {
                "users": {
                    "buckets": [
                        {
                            "key": "u-1",
                            "doc_count": 3,
                            "priorityBands": {"buckets": {"80-100": {"doc_count": 1}}},
                            "noPriority": {"doc_count": 2},
                        }
                    ]
                }
            }
        },
    )["users"][0]
    assert row["byPriority"] == {"80-100": 1, "50-79": 0, "0-49": 0, "none": 2}
    assert body["query"]["bool"]["filter"][0]["range"]["timestamp"] == {
        "format": "epoch_millis",
        "gte": NOW - 1000,
        "lte": NOW,
    }
    assert error_of(r.parse_top_users, {"by": "median"}, NOW).parameter == "by"
    assert error_of(r.parse_top_users, {"size": "1000"}, NOW).parameter == "size"


def test_counts_choose_an_interval_and_validate_the_split():
    counts = r.parse_counts({}, NOW)
    assert (counts.source, counts.split, counts.until - counts.since) == ("alerts", None, r.DEFAULT_WINDOW_MS)
    assert counts.interval == "30m"  # 48 buckets over a day
    hour = r.parse_counts({"since": str(NOW - 3_600_000), "until": str(NOW), "split": "severity"}, NOW)
    assert (hour.interval, hour.interval_ms) == ("1m", 60_000)
    body = r.counts_body(hour)
    histogram = body["aggs"]["overTime"]
    assert histogram["date_histogram"] == {
        "field": "timestamp",
        "fixed_interval": "1m",
        "min_doc_count": 0,
        "extended_bounds": {"min": NOW - 3_600_000, "max": NOW},
    }
    assert histogram["aggs"]["split"]["terms"]["field"] == "severity"
    trades = r.counts_body(r.parse_counts({"source": "trades", "split": "riskLevel", "interval": "5m"}, NOW))
    assert trades["aggs"]["overTime"]["date_histogram"]["field"] == "eventTimestamp"
    assert trades["aggs"]["overTime"]["aggs"]["split"]["terms"]["field"] == "finalRiskLevel"
    assert "aggs" not in r.counts_body(counts)["aggs"]["overTime"]


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"source": "orders"}, "source"),
        ({"split": "riskLevel"}, "split"),  # alerts have a severity, not a risk level
        ({"source": "trades", "split": "severity"}, "split"),
        ({"interval": "5 minutes"}, "interval"),
        ({"interval": "0m"}, "interval"),
        ({"interval": "1s"}, "interval"),  # 86,401 buckets over the default day
        ({"since": "soon"}, "since"),
        ({"since": str(NOW + 1)}, "since"),  # after the default until (now)
    ],
)
def test_counts_reject_bad_parameters(params, parameter):
    assert error_of(r.parse_counts, params, NOW).parameter == parameter


def test_auto_interval_gives_at_most_sixty_buckets():
    for span in (1000, 59_000, 600_000, 3_600_000, 86_400_000, 30 * 86_400_000):
        interval = r.auto_interval(span)
        assert span // r.parse_interval(interval) <= r.AUTO_BUCKETS or interval == "1d"


def test_trade_ids_are_required_deduplicated_and_bounded():
    assert r.parse_trade_ids({"ids": "t1, t2,t1,,"}) == ("t1", "t2")
    assert r.trades_by_id_body(("t1", "t2")) == {
        "query": {"terms": {"originalTrade.tradeId": ["t1", "t2"]}},
        "size": 2,
    }
    assert error_of(r.parse_trade_ids, {}).parameter == "ids"
    assert error_of(r.parse_trade_ids, {"ids": " , "}).parameter == "ids"
    assert error_of(r.parse_trade_ids, {"ids": ",".join(f"t{i}" for i in range(201))}).parameter == "ids"


def test_results_are_shaped_from_elasticsearch_answers():
    alert = {"alertId": "a1", "userId": "u-1"}
    search = r.AlertSearch(size=5, page=2)
    assert r.alert_search_result(search, {"hits": {"total": {"value": 7}, "hits": [{"_source": alert}]}}) == {
        "alerts": [alert],
        "total": 7,
        "page": 2,
        "size": 5,
        "sort": "time",
        "minPriority": None,
        "byPriority": {"80-100": 0, "50-79": 0, "0-49": 0, "none": 0},
    }

    def analyzed(trade_id: str, ts: int, score: float, level: str) -> dict[str, Any]:
        return {
            "_source": {
                "originalTrade": {"tradeId": trade_id, "symbol": "BTC/USDT", "side": "BUY", "notional": 10.0},
                "riskScore": score,
                "finalRiskLevel": level,
                "triggeredPatterns": [],
                "eventTimestamp": ts,
            }
        }

    trades = {
        "hits": {
            "total": {"value": 2},
            "hits": [analyzed("t2", NOW + 1, 0.9, "CRITICAL"), analyzed("t1", NOW, 0.1, "LOW")],
        },
        "aggregations": {
            "maxScore": {"value": 0.9},
            "avgScore": {"value": 0.5},
            "levels": {"buckets": [{"key": "LOW", "doc_count": 1}, {"key": "CRITICAL", "doc_count": 1}]},
        },
    }
    history = r.history_result(
        r.UserHistory(user="u-1"), trades, {"hits": {"total": {"value": 1}, "hits": []}}
    )
    assert [p["tradeId"] for p in history["trades"]] == ["t1", "t2"], "oldest first"
    assert history["trades"][1]["riskLevel"] == "CRITICAL"
    assert history["summary"] == {
        "trades": 2,
        "maxRiskScore": 0.9,
        "avgRiskScore": 0.5,
        "byLevel": {"LOW": 1, "CRITICAL": 1},
    }

    counts = r.Counts(since=NOW, until=NOW + 120_000, interval="1m", interval_ms=60_000, split="severity")
    answer = {
        "aggregations": {
            "overTime": {
                "buckets": [
                    {
                        "key": NOW,
                        "doc_count": 3,
                        "split": {
                            "buckets": [{"key": "HIGH", "doc_count": 2}, {"key": "LOW", "doc_count": 1}]
                        },
                    },
                    {"key": NOW + 60_000, "doc_count": 0, "split": {"buckets": []}},
                ]
            }
        }
    }
    shaped = r.counts_result(counts, answer)
    assert shaped["series"] == ["LOW", "HIGH"], "severities in their order, not by count"
    assert shaped["buckets"][0] == {"time": NOW, "total": 3, "counts": {"HIGH": 2, "LOW": 1}}
    assert shaped["total"] == 3

    top = r.TopUsers(since=NOW, until=NOW, by="sum")
    ranked = r.top_users_result(
        top,
        {
            "aggregations": {
                "users": {
                    "buckets": [
                        {
                            "key": "u-1",
                            "doc_count": 4,
                            "maxScore": {"value": 0.9},
                            "sumScore": {"value": 2.0},
                            "avgScore": {"value": 0.5},
                            "levels": {"buckets": [{"key": "HIGH", "doc_count": 4}]},
                        }
                    ]
                }
            }
        },
    )
    assert ranked["users"] == [
        {
            "userId": "u-1",
            "value": 2.0,
            "trades": 4,
            "maxRiskScore": 0.9,
            "sumRiskScore": 2.0,
            "avgRiskScore": 0.5,
            "byLevel": {"HIGH": 4},
        }
    ]

    found = r.trades_result(("t1", "t2", "t3"), {"hits": {"hits": [analyzed("t3", NOW, 0.1, "LOW")]}})
    assert [t["originalTrade"]["tradeId"] for t in found["trades"]] == ["t3"]
    assert found["missing"] == ["t1", "t2"]


def test_indices_follow_the_topic_suffix():
    settings = dataclasses.replace(Settings(), worker_topic_suffix="-abc")
    assert r.Indices.from_settings(settings) == r.Indices("risk-alerts-abc", "risk-analyzed-trades-abc")
    assert r.Indices.from_settings(Settings()) == r.Indices("risk-alerts", "risk-analyzed-trades")


def test_counts_without_an_index_are_zero_buckets_aligned_like_elasticsearchs():
    counts = r.Counts(since=NOW + 61_000, until=NOW + 180_000, interval="1m", interval_ms=60_000)
    shaped = r.counts_result(counts, {"hits": {"total": {"value": 0}, "hits": []}})
    assert [b["time"] for b in shaped["buckets"]] == [NOW + 60_000, NOW + 120_000, NOW + 180_000]
    assert all(b == {"time": b["time"], "total": 0, "counts": {}} for b in shaped["buckets"])
    assert (shaped["total"], shaped["series"]) == (0, [])


def test_alert_search_sorts_by_time_or_priority_and_filters_by_a_minimum_priority():
    assert (r.AlertSearch().sort, r.AlertSearch().min_priority) == ("time", None)
    assert r.parse_alert_search({"sort": "time", "minPriority": " "}) == r.AlertSearch()
    search = r.parse_alert_search({"sort": "priority", "minPriority": "050"})
    assert (search.sort, search.min_priority) == ("priority", 50)
    for edge in (0, 100):
        assert r.parse_alert_search({"minPriority": str(edge)}).min_priority == edge


@pytest.mark.parametrize(
    "raw",
    [
        "-1",
        "101",
        "9" * 400,  # refused before int() (which raises on 4,300+ digits) and not echoed whole
        "-" + "9" * 400,
        "1e300",
        "1e2",
        "50.0",
        "0x10",
        "+50",
        "NaN",
        "Infinity",
        "fifty",
        "\uff15\uff10",  # full-width digits are not an integer here
        "50,60",
    ],
)
def test_a_bad_minimum_priority_is_refused_clearly(raw):
    error = error_of(r.parse_alert_search, {"minPriority": raw})
    assert error.parameter == "minPriority"
    message = str(error)
    assert message.startswith("minPriority must be") and "0 and 100" in message
    assert len(message) < 120, message


@pytest.mark.parametrize("raw", ["PRIORITY", "newest", "priority,time", "-priority", "x" * 500])
def test_a_bad_sort_is_refused_clearly(raw):
    error = error_of(r.parse_alert_search, {"sort": raw})
    assert error.parameter == "sort"
    assert "sort must be time or priority" in str(error) and len(str(error)) < 120


def test_alert_search_body_sorts_by_priority_with_none_last_and_filters_the_minimum():
    by_time = r.alert_search_body(r.AlertSearch())
    assert by_time["sort"] == [{"timestamp": "desc"}, {"alertId": "asc"}], "the default order is unchanged"
    assert by_time["query"] == {"bool": {"filter": []}}, "no priority filter unless asked"
    body = r.alert_search_body(r.AlertSearch(user="u-1", sort="priority", min_priority=0))
    assert body["sort"] == [
        {"priority": {"order": "desc", "missing": "_last", "unmapped_type": "integer"}},
        {"timestamp": "desc"},
        {"alertId": "asc"},
    ]
    assert body["query"]["bool"]["filter"] == [
        {"term": {"userId": "u-1"}},
        {"range": {"priority": {"gte": 0}}},
    ]
    assert body["aggs"] == {
        "priorityBands": {
            "range": {
                "field": "priority",
                "keyed": True,
                "ranges": [
                    {"key": "80-100", "from": 80},
                    {"key": "50-79", "from": 50, "to": 80},
                    {"key": "0-49", "from": 0, "to": 50},
                ],
            }
        },
        "noPriority": {"missing": {"field": "priority"}},
    }
    # Each body is its own: changing one does not change the next.
    body["sort"].clear()
    body["aggs"].clear()
    again = r.alert_search_body(r.AlertSearch(sort="priority"))
    assert len(again["sort"]) == 3 and len(again["aggs"]) == 2


def test_alert_search_result_counts_priority_bands():
    search = r.AlertSearch(sort="priority", min_priority=50)
    answer = {
        "hits": {"total": {"value": 9}, "hits": []},
        "aggregations": {
            "priorityBands": {
                "buckets": {
                    "80-100": {"from": 80.0, "doc_count": 2},
                    "50-79": {"from": 50.0, "to": 80.0, "doc_count": 3},
                    "0-49": {"from": 0.0, "to": 50.0, "doc_count": 0},
                }
            },
            "noPriority": {"doc_count": 4},
        },
    }
    shaped = r.alert_search_result(search, answer)
    assert shaped["byPriority"] == {"80-100": 2, "50-79": 3, "0-49": 0, "none": 4}
    assert list(shaped["byPriority"]) == ["80-100", "50-79", "0-49", "none"], "highest first"
    assert (shaped["sort"], shaped["minPriority"]) == ("priority", 50)
    empty = r.alert_search_result(r.AlertSearch(), {"hits": {"total": {"value": 0}, "hits": []}})
    assert empty["byPriority"] == {"80-100": 0, "50-79": 0, "0-49": 0, "none": 0}


def test_the_priority_bands_cover_0_to_100_once():
    lows = [low for _name, low in r.PRIORITY_BANDS]
    assert lows == sorted(lows, reverse=True) and lows[-1] == 0 and lows[0] <= r.MAX_PRIORITY
