"""The search pipeline for real: worker -> Kafka -> Kafka Connect (our sink) -> Elasticsearch.

Each test runs a real worker on its own topics (app id and topic suffix), deploys its own
connector (a unique name, so its own consumer group) on the stack's Kafka Connect, and reads the
result from the stack's Elasticsearch; the connector and the test's indices are removed afterwards.
The outage test stops and restarts the stack's Elasticsearch service itself (always restarted).
"""

from __future__ import annotations

import asyncio
import io
import json
import statistics
import struct
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import elastic_transport
import fastavro
import pytest
from elasticsearch import ApiError, AsyncElasticsearch

from riskengine.cli.replay_command import ALERTS_FILE, replay
from riskengine.contracts.avro_codec import SchemaCatalog
from riskengine.core import DEFAULT_RULES
from riskengine.search.reporting import Indices, elasticsearch_client
from riskengine.search.sink_connector import ConnectorStatus, connect_client, delete, deploy
from riskengine.settings import Settings
from riskengine_devtools.stack import build_services
from riskengine_devtools.stack.runner import down, stack_lock, up
from riskengine_devtools.stack.service import StackPaths

from .test_worker import collect, decoded
from .worker_harness import (
    WorkerProcess,
    isolated,
    prepare,
    publish_sample_profiles,
    running,
    sample_reference,
    sample_trades,
    send,
)

#: The issue's bound: an alert is searchable this long after it reached risk-alerts, at the latest.
END_TO_END_BOUND_S = 45.0
LATENCY_BOUND_S = 10.0


@dataclass
class Pipeline:
    """One test's isolated settings, codec catalog, worker, indices and connector name."""

    settings: Settings
    catalog: SchemaCatalog
    worker: WorkerProcess
    indices: Indices
    connector: str

    @property
    def trades_topic(self) -> str:
        return f"crypto-trades{self.settings.worker_topic_suffix}"

    @property
    def alerts_topic(self) -> str:
        return f"risk-alerts{self.settings.worker_topic_suffix}"

    @property
    def analyzed_topic(self) -> str:
        return f"risk-analyzed-trades{self.settings.worker_topic_suffix}"

    async def send_trades(self, count: int | None = None, first: int = 0) -> None:
        """Produce sample trades ``first`` .. ``first + count`` to this test's crypto-trades."""
        trades = sample_trades()[first : None if count is None else first + count]
        await send(
            self.settings,
            self.trades_topic,
            [(t.user_id.encode(), self.catalog.encode("CryptoTrade", t.to_record())) for t in trades],
        )


def expected_alert_ids(partitions: int = Settings.from_env({}).topic_partitions) -> set[str]:
    """The alert ids ``riskengine replay`` raises over the whole sample (what one worker must emit:
    the account patterns and the market and pair ones)."""
    with tempfile.TemporaryDirectory() as out:
        lines = [json.dumps(t.to_record()).encode() for t in sample_trades()]
        replay(lines, Path(out), DEFAULT_RULES, sample_reference(), partitions=partitions)
        text = (Path(out) / ALERTS_FILE).read_text()
    return {json.loads(line)["alertId"] for line in text.splitlines() if line.strip()}


@pytest.fixture
async def pipeline(settings: Settings, unique: str, tmp_path: Path) -> AsyncIterator[Pipeline]:
    """A worker and a connector on this test's topics; both removed afterwards, with the indices."""
    own = isolated(settings, unique)
    catalog = await prepare(own)
    await publish_sample_profiles(own, catalog)
    name = f"riskengine-test-{unique}"
    indices = Indices.from_settings(own)
    worker = WorkerProcess(own, tmp_path / "data")
    try:
        status = await deploy(own, name=name)
        assert status.running, status.describe()
        async with running([worker]):
            yield Pipeline(own, catalog, worker, indices, name)
    finally:
        await delete(own, name)
        async with elasticsearch_client(own) as es:
            await es.indices.delete(index=[indices.alerts, indices.trades], ignore_unavailable=True)


async def indexed_ids(es: AsyncElasticsearch, index: str, field: str) -> set[str]:
    """The values of ``field`` (a dotted path) of every document in ``index`` (none before it exists)."""
    try:
        response = await es.search(
            index=index, size=10_000, source_includes=[field], ignore_unavailable=True, allow_no_indices=True
        )
    except ApiError as exc:
        if exc.status_code == 503:
            return set()  # the index was just created (or recovers after a restart): no shard yet
        raise
    ids = set()
    for hit in response["hits"]["hits"]:
        node = hit["_source"]
        for step in field.split("."):
            node = node[step]
        ids.add(str(node))
    return ids


async def wait_until(
    check: Callable[[], Any], done: Callable[[Any], bool], wait_s: float, every_s: float = 0.1
) -> Any:
    """Call ``check`` until ``done(result)`` or ``wait_s`` pass; returns the last result."""
    deadline = time.monotonic() + wait_s
    while True:
        result = await check()
        if done(result) or time.monotonic() > deadline:
            return result
        await asyncio.sleep(every_s)


async def test_alerts_are_searchable_within_10_s_of_reaching_risk_alerts(
    pipeline: Pipeline, record_property: Callable[[str, object], None]
) -> None:
    """(a) Trades through a real worker become alerts in Elasticsearch, each within 10 s."""
    expected = expected_alert_ids()
    first_seen: dict[str, float] = {}
    sent_at = time.time()
    await pipeline.send_trades()
    async with elasticsearch_client(pipeline.settings) as es:
        deadline = time.monotonic() + 60
        # Poll every 50 ms and note when each alert id first becomes searchable.
        while set(first_seen) != expected and time.monotonic() < deadline:
            now = time.time()
            for alert_id in await indexed_ids(es, pipeline.indices.alerts, "alertId"):
                first_seen.setdefault(alert_id, now)
            await asyncio.sleep(0.05)
        assert set(first_seen) == expected, f"missing in Elasticsearch: {expected - set(first_seen)}"
        # From the trades' production, through the worker and the connector, to the index: the
        # market alerts come once every trades partition is idle and the market has caught up
        # (the sample is a backlog of historical trades), so this bound is looser.
        assert max(first_seen.values()) - sent_at < END_TO_END_BOUND_S, max(first_seen.values()) - sent_at

        records = await collect(pipeline.settings, pipeline.alerts_topic, lambda rs: len(rs) >= len(expected))
        alerts = {r["alertId"]: r for r in decoded(pipeline.catalog, records, "RiskAlert")}
        assert set(alerts) == expected
        # The alert reached risk-alerts at its record timestamp (the worker's producer, this machine).
        arrived = {
            pipeline.catalog.decode(r.value, "RiskAlert")["alertId"]: r.timestamp / 1000 for r in records
        }
        latencies = sorted(first_seen[alert_id] - arrived[alert_id] for alert_id in expected)
        record_property(
            "alert_to_searchable_s", {"max": latencies[-1], "median": statistics.median(latencies)}
        )
        print(
            f"alert -> searchable: {len(latencies)} alerts, median {statistics.median(latencies):.2f} s, "
            f"max {latencies[-1]:.2f} s"
        )
        assert latencies[-1] < LATENCY_BOUND_S, latencies

        # Each document is the alert's JSON form (what the reporting views read), under its id.
        for alert_id, alert in alerts.items():
            document = await es.get(index=pipeline.indices.alerts, id=alert_id)
            assert document["_source"] == alert
        trade_ids = await wait_until(
            lambda: indexed_ids(es, pipeline.indices.trades, "originalTrade.tradeId"),
            lambda ids: len(ids) >= len(sample_trades()),
            wait_s=30,
        )
        assert trade_ids == {t.trade_id for t in sample_trades()}


async def test_a_reprocessed_alert_updates_its_document_instead_of_adding_one(pipeline: Pipeline) -> None:
    """(b) The same RiskAlert bytes again, then a changed version of it: still one document."""
    await pipeline.send_trades()
    expected = expected_alert_ids()
    records = await collect(pipeline.settings, pipeline.alerts_topic, lambda rs: len(rs) >= len(expected))
    original = records[0]
    alert = pipeline.catalog.decode(original.value, "RiskAlert")
    alert_id = alert["alertId"]

    async with elasticsearch_client(pipeline.settings) as es:

        async def document() -> dict[str, Any] | None:
            await es.indices.refresh(index=pipeline.indices.alerts, ignore_unavailable=True)
            found = await es.options(ignore_status=404).get(index=pipeline.indices.alerts, id=alert_id)
            return dict(found) if found.get("found") else None

        async def count() -> int:
            response = await es.count(index=pipeline.indices.alerts, query={"term": {"alertId": alert_id}})
            return int(response["count"])

        first = await wait_until(document, lambda d: d is not None, wait_s=30)
        assert first is not None and first["_version"] == 1

        # Re-processing (a worker re-sending after a crash): the identical bytes again.
        await send(pipeline.settings, pipeline.alerts_topic, [(original.key, original.value)])
        again = await wait_until(document, lambda d: d is not None and d["_version"] == 2, wait_s=30)
        assert again is not None and again["_version"] == 2, again
        assert again["_source"] == alert
        assert await count() == 1

        # An alert merged with more evidence keeps its id: the document is replaced, not added.
        changed = dict(alert, description="merged with later evidence", severity="CRITICAL")
        await send(
            pipeline.settings,
            pipeline.alerts_topic,
            [(original.key, pipeline.catalog.encode("RiskAlert", changed))],
        )
        updated = await wait_until(document, lambda d: d is not None and d["_version"] == 3, wait_s=30)
        assert updated is not None and updated["_source"] == changed
        assert await count() == 1
        total = await es.count(index=pipeline.indices.alerts)
        assert total["count"] == len(expected)


async def _connector_state(pipeline: Pipeline) -> ConnectorStatus | None:
    async with connect_client(pipeline.settings) as connect:
        return await connect.status(pipeline.connector)


async def _elasticsearch_answers(settings: Settings) -> bool:
    try:
        async with AsyncElasticsearch(settings.elasticsearch_url, request_timeout=2, max_retries=0) as es:
            await es.cluster.health()
    except elastic_transport.TransportError:
        return False
    return True


async def test_an_elasticsearch_outage_stops_neither_the_worker_nor_the_index_for_good(
    pipeline: Pipeline, settings: Settings
) -> None:
    """(c) Elasticsearch down: the worker goes on; once it is back, the connector catches up."""
    total = len(sample_trades())
    half = total // 2
    lines: list[str] = []
    (elastic,) = build_services(settings, only=["elastic"])
    paths = StackPaths.from_settings(settings)

    await pipeline.send_trades(count=half)
    async with elasticsearch_client(pipeline.settings) as es:
        before = await wait_until(
            lambda: indexed_ids(es, pipeline.indices.trades, "originalTrade.tradeId"),
            lambda ids: len(ids) >= half,
            wait_s=30,
        )
    assert len(before) == half, "the connector indexes before the outage"

    try:
        with stack_lock(paths, lines.append):
            assert await down([elastic], lines.append) == 0, "\n".join(lines)
        assert not await _elasticsearch_answers(settings)

        await pipeline.send_trades(first=half)
        analyzed = await collect(pipeline.settings, pipeline.analyzed_topic, lambda rs: len(rs) >= total)
        assert len(analyzed) == total, "the worker keeps analysing while Elasticsearch is down"
        # Give the connector several failed attempts: it must wait and retry, not fail.
        await asyncio.sleep(5)
        state = await _connector_state(pipeline)
        assert state is not None and state.running, state.describe() if state else "connector gone"
    finally:
        if not await _elasticsearch_answers(settings):
            with stack_lock(paths, lines.append):
                assert await up([elastic], settings.stack_start_timeout, lines.append) == 0, "\n".join(lines)

    expected_trades = {t.trade_id for t in sample_trades()}
    expected_alerts = {
        alert["alertId"]
        for alert in decoded(
            pipeline.catalog,
            await collect(pipeline.settings, pipeline.alerts_topic, lambda rs: False, wait_s=2.0),
            "RiskAlert",
        )
    }
    assert expected_alerts == expected_alert_ids()
    started = time.monotonic()
    async with elasticsearch_client(pipeline.settings) as es:
        trades = await wait_until(
            lambda: indexed_ids(es, pipeline.indices.trades, "originalTrade.tradeId"),
            lambda ids: ids == expected_trades,
            wait_s=60,
            every_s=0.5,
        )
        alerts = await wait_until(
            lambda: indexed_ids(es, pipeline.indices.alerts, "alertId"),
            lambda ids: ids == expected_alerts,
            wait_s=30,
            every_s=0.5,
        )
    print(f"caught up {time.monotonic() - started:.1f} s after Elasticsearch was ready again")
    assert trades == expected_trades
    assert alerts == expected_alerts
    state = await _connector_state(pipeline)
    assert state is not None and state.running


#: Registry Avro the converter reads fine, but whose ``timestamp`` the alerts index maps as a date.
UNMAPPABLE_SCHEMA = {
    "type": "record",
    "name": "UnmappableAlert",
    "namespace": "riskengine.test",
    "fields": [{"name": "alertId", "type": "string"}, {"name": "timestamp", "type": "string"}],
}


async def unmappable_alert(catalog: SchemaCatalog) -> bytes:
    """A wire-format record Elasticsearch refuses (400, a date field holding a word)."""
    schema_id = await catalog.register_schema("riskengine-test-unmappable-value", UNMAPPABLE_SCHEMA)
    body = io.BytesIO()
    fastavro.schemaless_writer(
        body, fastavro.parse_schema(UNMAPPABLE_SCHEMA), {"alertId": "unmappable", "timestamp": "yesterday"}
    )
    return b"\x00" + struct.pack(">I", schema_id) + body.getvalue()


async def test_undecodable_records_and_rejected_documents_go_to_the_dead_letter_topic(
    pipeline: Pipeline,
) -> None:
    """Not Avro, or a document Elasticsearch refuses: dead-lettered with the reason; the rest flows."""
    await pipeline.send_trades()
    expected = expected_alert_ids()
    records = await collect(pipeline.settings, pipeline.alerts_topic, lambda rs: len(rs) >= len(expected))
    alert = pipeline.catalog.decode(records[0].value, "RiskAlert")
    after = dict(alert, alertId="after-the-bad-ones")
    unmappable = await unmappable_alert(pipeline.catalog)
    await send(
        pipeline.settings,
        pipeline.alerts_topic,
        [
            (b"bad", b"not avro at all"),
            (b"bad", unmappable),
            (b"bad", pipeline.catalog.encode("RiskAlert", after)),
        ],
    )
    dlq = f"risk-search-dlq{pipeline.settings.worker_topic_suffix}"
    dead = await collect(pipeline.settings, dlq, lambda rs: len(rs) >= 2, wait_s=30)
    assert sorted(r.value for r in dead) == sorted([b"not avro at all", unmappable])
    for record in dead:
        headers = {key: value.decode() for key, value in record.headers}
        assert headers["__connect.errors.topic"] == pipeline.alerts_topic
        assert headers["__connect.errors.exception.message"], headers
    async with elasticsearch_client(pipeline.settings) as es:
        ids = await wait_until(
            lambda: indexed_ids(es, pipeline.indices.alerts, "alertId"),
            lambda found: "after-the-bad-ones" in found,
            wait_s=30,
        )
    assert ids == expected | {"after-the-bad-ones"}
    state = await _connector_state(pipeline)
    assert state is not None and state.running, state.describe() if state else "connector gone"
