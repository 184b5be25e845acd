"""The reporting views over HTTP against the real Elasticsearch of the local stack.

Documents are what the Kafka Connect sink writes: the JSON form of the RiskAnalyzedTrade and
RiskAlert records (here from the detection core over the bundled sample trades, plus a few extra
alerts), indexed by id into indices named like the topics with this test's suffix, after the
project's index templates are installed. Expected answers are computed from the same records.

Priorities: until the core fills them, the alerts of the priority tests carry priorities set here
(some null, as in alerts from engines before the field existed).
"""

from __future__ import annotations

import dataclasses
import itertools
import socket
from collections import Counter
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from elasticsearch import AsyncElasticsearch

from riskengine.core import DEFAULT_RULES, ReferenceData, evaluate_many, parse_profile
from riskengine.search.index_templates import TEMPLATES, add_missing_fields, install_index_templates
from riskengine.search.reporting import Indices, create_reporting_app, elasticsearch_client

from .worker_harness import sample_profiles, sample_trades


def sample_documents() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(analyzed trades, alerts) of the sample, plus three more alerts of one user."""
    reference = ReferenceData(profiles={p["userId"]: parse_profile(p) for p in sample_profiles()})
    _states, evaluations = evaluate_many(sample_trades(), reference, DEFAULT_RULES)
    analyzed = [e.analyzed.to_record() for e in evaluations]
    alerts = [a.to_record() for e in evaluations for a in e.alerts]
    base = next(a for a in alerts if a["userId"] == "user-alice")
    for n, severity in enumerate(("LOW", "MEDIUM", "CRITICAL")):
        alerts.append(
            dict(
                base, alertId=f"extra-{n}", severity=severity, timestamp=base["timestamp"] + (n + 1) * 60_000
            )
        )
    return analyzed, alerts


async def index_documents(
    es: AsyncElasticsearch, indices: Indices, analyzed: list[dict[str, Any]], alerts: list[dict[str, Any]]
) -> None:
    """Index like the sink: doc id = tradeId / alertId; refreshed so searches see them at once."""
    operations: list[dict[str, Any]] = []
    for record in analyzed:
        operations += [
            {"index": {"_index": indices.trades, "_id": record["originalTrade"]["tradeId"]}},
            record,
        ]
    for record in alerts:
        operations += [{"index": {"_index": indices.alerts, "_id": record["alertId"]}}, record]
    response = await es.bulk(operations=operations, refresh=True)
    assert not response["errors"], response


@pytest.fixture
async def indexed(settings, unique):
    """The sample indexed into this test's indices; the indices are deleted afterwards."""
    own = dataclasses.replace(settings, worker_topic_suffix=f"-{unique}")
    indices = Indices.from_settings(own)
    analyzed, alerts = sample_documents()
    async with elasticsearch_client(own) as es:
        await install_index_templates(es, own)
        try:
            await index_documents(es, indices, analyzed, alerts)
            yield own, analyzed, alerts
        finally:
            await es.indices.delete(index=[indices.alerts, indices.trades], ignore_unavailable=True)


@pytest.fixture
async def client(indexed):
    own, _analyzed, _alerts = indexed
    async with TestClient(TestServer(create_reporting_app(own))) as http:
        yield http


async def get(http: TestClient[web.Request, web.Application], path: str, status: int = 200) -> Any:
    response = await http.get(path)
    body = await response.json()
    assert response.status == status, body
    return body


def window(records: list[dict[str, Any]], field: str) -> str:
    times = [r[field] for r in records]
    return f"since={min(times)}&until={max(times)}"


async def test_alert_search_filters_sorts_and_pages(indexed, client):
    _own, _analyzed, alerts = indexed
    everything = await get(client, "/alerts?size=100")
    assert everything["total"] == len(alerts)
    times = [a["timestamp"] for a in everything["alerts"]]
    assert times == sorted(times, reverse=True), "newest first"
    assert everything["alerts"][0] in alerts, "documents come back as indexed"

    alice = await get(client, "/alerts?user=user-alice")
    assert {a["alertId"] for a in alice["alerts"]} == {
        a["alertId"] for a in alerts if a["userId"] == "user-alice"
    }

    severe = await get(client, "/alerts?severity=high,critical&size=100")
    assert severe["total"] == sum(a["severity"] in ("HIGH", "CRITICAL") for a in alerts)

    pattern = alerts[0]["patternType"]
    by_pattern = await get(client, f"/alerts?pattern={pattern}&size=100")
    assert by_pattern["total"] == sum(a["patternType"] == pattern for a in alerts)

    wash = await get(client, "/alerts?q=wash%20trading")
    assert wash["total"] >= 1
    assert all("wash" in a["description"].lower() for a in wash["alerts"])
    assert (await get(client, "/alerts?q=nothing-says-this"))["total"] == 0

    late = sorted(a["timestamp"] for a in alerts)[-3]
    since_iso = await get(client, f"/alerts?since={late}&size=100")
    assert since_iso["total"] == sum(a["timestamp"] >= late for a in alerts)
    until = await get(client, f"/alerts?until={late - 1}&size=100")
    assert until["total"] + since_iso["total"] == len(alerts)

    pages = [await get(client, f"/alerts?size=4&page={page}") for page in (1, 2, 3)]
    ids = [a["alertId"] for page in pages for a in page["alerts"]]
    assert len(ids) == len(alerts) == len(set(ids)), "pages neither overlap nor skip"


async def test_a_users_history_is_its_score_series_and_recent_alerts(indexed, client):
    _own, analyzed, alerts = indexed
    user = "user-alice"
    own_trades = sorted(
        (a for a in analyzed if a["originalTrade"]["userId"] == user), key=lambda a: a["eventTimestamp"]
    )
    history = await get(client, f"/users/{user}/history")
    assert [p["tradeId"] for p in history["trades"]] == [a["originalTrade"]["tradeId"] for a in own_trades]
    assert [p["riskScore"] for p in history["trades"]] == [a["riskScore"] for a in own_trades]
    assert [p["riskLevel"] for p in history["trades"]] == [a["finalRiskLevel"] for a in own_trades]
    summary = history["summary"]
    assert summary["trades"] == len(own_trades)
    assert summary["maxRiskScore"] == pytest.approx(max(a["riskScore"] for a in own_trades))
    assert summary["byLevel"] == dict(Counter(a["finalRiskLevel"] for a in own_trades))
    own_alerts = sorted((a for a in alerts if a["userId"] == user), key=lambda a: -a["timestamp"])
    assert [a["alertId"] for a in history["alerts"]] == [a["alertId"] for a in own_alerts]

    latest = await get(client, f"/users/{user}/history?size=2&alerts=0")
    assert [p["tradeId"] for p in latest["trades"]] == [
        a["originalTrade"]["tradeId"] for a in own_trades[-2:]
    ]
    assert latest["alerts"] == [] and latest["summary"]["trades"] == len(own_trades)
    unknown = await get(client, "/users/nobody/history")
    assert unknown["trades"] == [] and unknown["summary"]["trades"] == 0


async def test_top_users_rank_by_max_score_summed_score_and_alerts(indexed, client):
    _own, analyzed, alerts = indexed
    span = window(analyzed, "eventTimestamp")
    max_score: dict[str, float] = {}
    sum_score: Counter[str] = Counter()
    for record in analyzed:
        user = record["originalTrade"]["userId"]
        max_score[user] = max(max_score.get(user, 0.0), record["riskScore"])
        sum_score[user] += record["riskScore"]

    by_max = await get(client, f"/top-users?by=max&size=3&{span}")
    assert [u["value"] for u in by_max["users"]] == pytest.approx(
        sorted(max_score.values(), reverse=True)[:3]
    )
    for row in by_max["users"]:
        assert row["maxRiskScore"] == pytest.approx(max_score[row["userId"]])

    by_sum = await get(client, f"/top-users?by=sum&size=100&{span}")
    assert [u["userId"] for u in by_sum["users"]][:1] == [sum_score.most_common(1)[0][0]]
    assert {u["userId"]: u["value"] for u in by_sum["users"]} == pytest.approx(dict(sum_score))

    by_alerts = await get(client, f"/top-users?by=alerts&size=2&{window(alerts, 'timestamp')}")
    top = by_alerts["users"][0]
    assert (top["userId"], top["alerts"]) == ("user-alice", 4)
    assert sum(top["bySeverity"].values()) == 4

    # The default window is the last 24 hours; the sample is older.
    assert (await get(client, "/top-users"))["users"] == []


async def test_counts_over_time_with_and_without_a_split(indexed, client):
    _own, analyzed, alerts = indexed
    span = window(alerts, "timestamp")
    counts = await get(client, f"/counts?{span}&interval=10m&split=severity")
    assert counts["total"] == len(alerts)
    times = [b["time"] for b in counts["buckets"]]
    assert times == sorted(times) and all(b - a == 600_000 for a, b in itertools.pairwise(times))
    by_severity: Counter[str] = Counter()
    for bucket in counts["buckets"]:
        by_severity.update(bucket["counts"])
        assert sum(bucket["counts"].values()) == bucket["total"]
    assert by_severity == Counter(a["severity"] for a in alerts)
    assert counts["series"] == [s for s in ("LOW", "MEDIUM", "HIGH", "CRITICAL") if by_severity[s]]
    assert any(b["total"] == 0 for b in counts["buckets"]), "empty intervals are buckets too"

    trades = await get(client, f"/counts?source=trades&split=riskLevel&{window(analyzed, 'eventTimestamp')}")
    assert trades["total"] == len(analyzed)
    assert len(trades["buckets"]) <= 61
    levels: Counter[str] = Counter()
    for bucket in trades["buckets"]:
        levels.update(bucket["counts"])
    assert levels == Counter(a["finalRiskLevel"] for a in analyzed)
    plain = await get(client, f"/counts?{span}&interval=1h")
    assert plain["series"] == [] and plain["total"] == len(alerts)


async def test_evidence_trades_by_id(indexed, client):
    _own, analyzed, alerts = indexed
    alert = max(alerts, key=lambda a: len(a["evidence"]))
    ids = alert["evidence"]
    found = await get(client, f"/trades?ids={','.join([*ids, 'not-a-trade'])}")
    assert [t["originalTrade"]["tradeId"] for t in found["trades"]] == ids
    assert found["missing"] == ["not-a-trade"]
    by_id = {a["originalTrade"]["tradeId"]: a for a in analyzed}
    assert found["trades"][0] == by_id[ids[0]], "the whole analyzed trade, as indexed"


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/alerts?severity=SEVERE", "severity"),
        ("/alerts?since=yesterday", "since"),
        ("/alerts?size=1000", "size"),
        ("/alerts?colour=red", "colour"),
        ("/alerts?minPriority=-1", "minPriority"),
        ("/alerts?minPriority=101", "minPriority"),
        ("/alerts?minPriority=" + "9" * 400, "minPriority"),
        ("/alerts?minPriority=1e300", "minPriority"),
        ("/alerts?minPriority=high", "minPriority"),
        ("/alerts?minPriority=50.5", "minPriority"),
        ("/alerts?sort=severity", "sort"),
        ("/alerts?sort=PRIORITY", "sort"),
        ("/users/someone/history?size=0", "size"),
        ("/top-users?by=median", "by"),
        ("/counts?interval=1s&since=0", "interval"),
        ("/counts?source=trades&split=severity", "split"),
        ("/trades", "ids"),
    ],
)
async def test_bad_parameters_answer_400_naming_them(client, path, parameter):
    body = await get(client, path, status=400)
    assert body["parameter"] == parameter
    assert parameter in body["error"]


async def test_elasticsearch_unreachable_answers_503(settings):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port once the probe is closed.
    down = dataclasses.replace(settings, elasticsearch_url=f"http://127.0.0.1:{port}")
    async with TestClient(TestServer(create_reporting_app(down))) as http:
        for path in ("/alerts", "/top-users", "/counts", "/users/u/history", "/trades?ids=t1"):
            body = await get(http, path, status=503)
            # The caller learns the service is down, not where it lives (the log has that).
            assert "unavailable" in body["error"] and str(port) not in body["error"]
        # Parameters are checked before Elasticsearch is asked.
        assert (await get(http, "/alerts?size=0", status=400))["parameter"] == "size"


async def test_views_answer_empty_before_anything_is_indexed(settings, unique):
    """Before the sink created the indices, every view answers (empty), none fails."""
    fresh = dataclasses.replace(settings, worker_topic_suffix=f"-{unique}-none")
    async with TestClient(TestServer(create_reporting_app(fresh))) as http:
        assert (await get(http, "/alerts"))["total"] == 0
        assert (await get(http, "/top-users?by=alerts"))["users"] == []
        assert (await get(http, "/trades?ids=t1"))["missing"] == ["t1"]
        assert (await get(http, "/users/u/history"))["trades"] == []
        counts = await get(http, "/counts?since=0&until=3600000&interval=10m")
        assert [b["time"] for b in counts["buckets"]] == [n * 600_000 for n in range(7)]


#: (alertId suffix, priority, minutes after the base alert) of the priority tests: ties at 90 and
#: at 50 (the newer first), nulls (the newer first, after every prioritized alert), both ends.
PRIORITIES: tuple[tuple[str, int | None, int], ...] = (
    ("p90-old", 90, 1),
    ("p90-new", 90, 2),
    ("p100", 100, 3),
    ("p0", 0, 4),
    ("p50-new", 50, 7),
    ("p50-old", 50, 5),
    ("none-old", None, 6),
    ("none-new", None, 8),
    ("p79", 79, 9),
    ("p80", 80, 10),
)


def prioritized_alerts(unique: str) -> list[dict[str, Any]]:
    """Alerts of one user with the priorities of :data:`PRIORITIES` (null ones without priority)."""
    _analyzed, alerts = sample_documents()
    base = alerts[0]
    return [
        dict(
            base,
            alertId=f"{name}-{unique}",
            userId=f"prio-{unique}",
            priority=priority,
            timestamp=base["timestamp"] + minutes * 60_000,
        )
        for name, priority, minutes in PRIORITIES
    ]


def expected_order(alerts: list[dict[str, Any]]) -> list[str]:
    """Highest priority first, then newest, alerts without a priority last (newest first)."""
    ranked = sorted(alerts, key=lambda a: (a["priority"] is None, -(a["priority"] or 0), -a["timestamp"]))
    return [a["alertId"] for a in ranked]


async def test_alerts_sort_by_priority_with_null_last_and_filter_by_a_minimum(indexed, client, unique):
    own, _analyzed, _alerts = indexed
    alerts = prioritized_alerts(unique)
    async with elasticsearch_client(own) as es:
        await index_documents(es, Indices.from_settings(own), [], alerts)
    user = f"prio-{unique}"

    by_priority = await get(client, f"/alerts?user={user}&sort=priority&size=100")
    assert [a["alertId"] for a in by_priority["alerts"]] == expected_order(alerts)
    assert [a["priority"] for a in by_priority["alerts"]] == [100, 90, 90, 80, 79, 50, 50, 0, None, None]
    assert by_priority["sort"] == "priority"
    assert by_priority["byPriority"] == {"80-100": 4, "50-79": 3, "0-49": 1, "none": 2}
    span = window(alerts, "timestamp")
    top = await get(client, f"/top-users?by=alerts&size=100&{span}")
    row = next(u for u in top["users"] if u["userId"] == user)
    assert row["byPriority"] == by_priority["byPriority"]

    by_time = await get(client, f"/alerts?user={user}&size=100")
    assert [a["alertId"] for a in by_time["alerts"]] == [
        a["alertId"] for a in sorted(alerts, key=lambda a: -a["timestamp"])
    ], "newest first stays the default"
    assert by_time == await get(client, f"/alerts?user={user}&size=100&sort=time")

    # Pages of the priority order neither overlap nor skip (ties broken by time, then id).
    pages = [await get(client, f"/alerts?user={user}&sort=priority&size=3&page={n}") for n in (1, 2, 3, 4)]
    assert [a["alertId"] for page in pages for a in page["alerts"]] == expected_order(alerts)

    for minimum in (0, 50, 80, 100):
        kept = await get(client, f"/alerts?user={user}&minPriority={minimum}&sort=priority&size=100")
        wanted = [a for a in alerts if a["priority"] is not None and a["priority"] >= minimum]
        assert [a["alertId"] for a in kept["alerts"]] == expected_order(wanted), minimum
        assert kept["total"] == len(wanted) and kept["minPriority"] == minimum
        assert kept["byPriority"]["none"] == 0, "a minimum leaves out alerts without a priority"
    high = await get(client, f"/alerts?user={user}&minPriority=80")
    assert [a["alertId"] for a in high["alerts"]] == [
        f"{n}-{unique}" for n in ("p80", "p100", "p90-new", "p90-old")
    ], "filtered, newest first"

    # The sample's alerts (whatever their priority) and these together: every null after every value.
    everything = await get(client, "/alerts?sort=priority&size=100")
    priorities = [a.get("priority") for a in everything["alerts"]]
    valued = [p for p in priorities if p is not None]
    assert priorities == valued + [None] * (len(priorities) - len(valued))
    assert valued == sorted(valued, reverse=True)


async def test_an_index_from_before_the_priority_gets_the_field_and_sorts_meanwhile(settings, unique):
    """An alerts index created under the template without ``priority`` (dynamic: false, so a
    priority in a document is not indexed): sorting by priority still answers; once
    :func:`add_missing_fields` ran (``connector deploy`` does), new documents sort and filter."""
    own = dataclasses.replace(settings, worker_topic_suffix=f"-{unique}-old")
    indices = Indices.from_settings(own)
    alerts = prioritized_alerts(unique)
    _pattern, mappings = TEMPLATES["riskengine-alerts"]
    old = {**mappings, "properties": {k: v for k, v in mappings["properties"].items() if k != "priority"}}
    async with elasticsearch_client(own) as es:
        # Created as the old template would: a template of a higher priority for this one index
        # applies instead of the project's (composable templates do not merge).
        await es.indices.put_index_template(
            name=f"it-old-{unique}", index_patterns=[indices.alerts], priority=100, template={"mappings": old}
        )
        try:
            await es.indices.create(index=indices.alerts)
        finally:
            await es.indices.delete_index_template(name=f"it-old-{unique}")
        try:
            created = await es.indices.get_mapping(index=indices.alerts)
            assert "priority" not in created[indices.alerts]["mappings"]["properties"]
            await index_documents(es, indices, [], alerts[:5])
            async with TestClient(TestServer(create_reporting_app(own))) as http:
                before = await get(http, "/alerts?sort=priority&size=100")
                assert {a["alertId"] for a in before["alerts"]} == {a["alertId"] for a in alerts[:5]}
                assert before["byPriority"]["none"] == 5, "not indexed: they count as without one"
                assert (await get(http, "/alerts?minPriority=0"))["total"] == 0

                added = await add_missing_fields(es)
                assert added[indices.alerts] == ["priority"]
                assert indices.alerts not in await add_missing_fields(es), "idempotent"
                mapping = await es.indices.get_mapping(index=indices.alerts)
                assert mapping[indices.alerts]["mappings"]["properties"]["priority"] == {"type": "integer"}

                await index_documents(es, indices, [], alerts[5:])
                after = await get(http, "/alerts?sort=priority&size=100")
                # The new documents' priorities are indexed; the older ones' still count as none.
                valued = [a for a in alerts[5:] if a["priority"] is not None]
                rest = sorted((a for a in alerts if a not in valued), key=lambda a: -a["timestamp"])
                assert [a["alertId"] for a in after["alerts"]] == expected_order(valued) + [
                    a["alertId"] for a in rest
                ]
                minimum = await get(http, "/alerts?minPriority=0&size=100")
                assert minimum["total"] == len(valued)

                # Indexing the older documents again makes their priority searchable too.
                await index_documents(es, indices, [], alerts[:5])
                whole = await get(http, "/alerts?sort=priority&size=100")
                assert [a["alertId"] for a in whole["alerts"]] == expected_order(alerts)
        finally:
            await es.indices.delete(index=indices.alerts, ignore_unavailable=True)
