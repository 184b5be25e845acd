"""/metrics: written by prometheus_client, parsed back with the Prometheus text parser.

The figures come from a real run of the per-user analysis, the commit protocol and the pipeline
on in-process fakes (tests/unit/worker/test_user_agent.py), so the histograms are filled where the
worker fills them, not by the test.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from riskengine.core import BUILD
from riskengine.worker.metrics import (
    EVENT_TIME_LAG_BUCKETS,
    TRADE_SECONDS_BUCKETS,
    EventHistogram,
    Metrics,
    exposition,
)
from riskengine.worker.pipeline import BatchPipeline
from riskengine.worker.web_views import prometheus_text, stats_document
from tests.unit.worker.test_user_agent import Worker, events_of, input_trades
from tests.unit.worker.worker_fakes import FakeProducer, FakeStore, FakeStream, Journal

CHANGELOG = "riskengine-user-state-changelog"


def parsed(text: str) -> dict[str, Any]:
    """Family name -> family, from the Prometheus text format (raises on anything malformed)."""
    return {family.name: family for family in text_string_to_metric_families(text)}


def sample(family: Any, name: str, **labels: str) -> float:
    """The value of the one sample of ``family`` with ``name`` and exactly ``labels``."""
    (value,) = [s.value for s in family.samples if s.name == name and s.labels == labels]
    return float(value)


async def run_worker() -> tuple[Worker, int, int]:
    """Wash trades and a spoof through a started pipeline; (worker, events, trades)."""
    journal = Journal()
    worker = Worker(FakeStore(journal, {0, 1}, CHANGELOG), FakeProducer(journal))
    items = input_trades()
    taken = events_of(worker.context.catalog, items)
    failures: list[BaseException] = []

    async def on_failure(exc: BaseException) -> None:
        failures.append(exc)

    pipeline = BatchPipeline(worker.commit, worker.analysis.analyze, on_failure, worker.context.metrics)
    pipeline.start()
    stream = FakeStream(journal)
    for event in taken:
        pipeline.add(event, stream, more_waiting=event is not taken[-1])
    for _ in range(200):
        if len(stream.acked) == len(taken):
            break
        await asyncio.sleep(0.01)
    await pipeline.stop()
    assert failures == [] and len(stream.acked) == len(taken)
    trades = sum(1 for _partition, item in items if type(item).__name__ == "Trade")
    return worker, len(taken), trades


async def test_metrics_parse_with_the_prometheus_parser_and_carry_the_histograms():
    worker, events, trades = await run_worker()
    context = worker.context
    text = prometheus_text(stats_document(SimpleNamespace(), context), context.metrics)  # type: ignore[arg-type]
    families = parsed(text)

    # Today's counters keep their names and types.
    assert families["riskengine_trades_in"].type == "counter"
    assert sample(families["riskengine_trades_in"], "riskengine_trades_in_total") == trades
    assert families["riskengine_analyzed"].type == "counter"
    assert sample(families["riskengine_core_compiled"], "riskengine_core_compiled") == int(BUILD.compiled)
    assert sample(families["riskengine_analyzed"], "riskengine_analyzed_total") == trades
    alerts = families["riskengine_alerts"]
    assert alerts.type == "counter"
    assert sample(alerts, "riskengine_alerts_total", pattern="WASH_TRADING") == 2
    assert sample(alerts, "riskengine_alerts_total", pattern="SPOOFING") == 1
    assert families["riskengine_throughput_per_second"].type == "gauge"
    assert families["riskengine_rebalances"].type == "counter"

    # Histograms, filled by the pipeline and the analysis.
    batch = families["riskengine_batch_processing_seconds"]
    assert batch.type == "histogram"
    batches = sample(batch, "riskengine_batch_processing_seconds_count", agent="user")
    assert batches >= 1
    assert sample(batch, "riskengine_batch_processing_seconds_sum", agent="user") > 0
    size = families["riskengine_batch_size"]
    assert size.type == "histogram"
    assert sample(size, "riskengine_batch_size_sum", agent="user") == events
    assert sample(size, "riskengine_batch_size_count", agent="user") == batches
    delivery = families["riskengine_delivery_seconds"]
    for step in ("persist", "publish"):
        assert sample(delivery, "riskengine_delivery_seconds_count", agent="user", step=step) == batches
    changelog = families["riskengine_changelog_bytes"]
    assert changelog.type == "histogram"
    written = [
        value
        for (topic, _partition), records in worker.commit.producer.logs.items()  # type: ignore[attr-defined]
        if topic == CHANGELOG
        for _key, value, _headers in records
    ]
    assert written, "the run wrote no state"
    assert sample(changelog, "riskengine_changelog_bytes_sum", agent="user") == sum(map(len, written))
    assert sample(changelog, "riskengine_changelog_bytes_count", agent="user") == batches
    per_trade = families["riskengine_trade_processing_seconds"]
    assert per_trade.type == "histogram"
    assert sample(per_trade, "riskengine_trade_processing_seconds_count") == trades
    lag = families["riskengine_event_time_lag_seconds"]
    assert lag.type == "histogram"
    assert sample(lag, "riskengine_event_time_lag_seconds_count") == trades
    # The builders' trades are far more than an hour old: every one is in the top bucket only.
    assert sample(lag, "riskengine_event_time_lag_seconds_bucket", le="+Inf") == trades
    top = f"{EVENT_TIME_LAG_BUCKETS[-1]}"
    assert sample(lag, "riskengine_event_time_lag_seconds_bucket", le=top) == 0


def test_event_time_lag_is_now_minus_the_trade_timestamp():
    metrics = Metrics()
    now = 1_800_000_000.0
    metrics.observe_delivered([int(now * 1000) - 40, int(now * 1000) - 3_000, int(now * 1000) + 500], now=now)
    lag = parsed(exposition(lambda: stats_of(metrics), metrics.histograms))[
        "riskengine_event_time_lag_seconds"
    ]
    assert sample(lag, "riskengine_event_time_lag_seconds_bucket", le="0.005") == 1  # the future one: 0
    assert sample(lag, "riskengine_event_time_lag_seconds_bucket", le="0.05") == 2
    assert sample(lag, "riskengine_event_time_lag_seconds_bucket", le="2.5") == 2
    assert sample(lag, "riskengine_event_time_lag_seconds_bucket", le="5.0") == 3
    assert abs(sample(lag, "riskengine_event_time_lag_seconds_sum") - 3.04) < 1e-9


class Exposed:
    """A registry collector of one EventHistogram."""

    def __init__(self, histogram: EventHistogram) -> None:
        self.histogram = histogram

    def collect(self) -> Any:
        return self.histogram.collect()


@given(
    st.lists(
        st.one_of(
            st.sampled_from([*TRADE_SECONDS_BUCKETS, 0.0, -1.0, 1e300, float("inf")]),
            st.floats(min_value=-1.0, max_value=1.0),
        ),
        max_size=60,
    )
)
def test_an_event_histogram_is_exposed_as_prometheus_clients_histogram_is(values: list[float]) -> None:
    """Same buckets (a value on a bound counts in it), count, sum and names; only _created's time
    differs."""
    theirs = CollectorRegistry()
    ours = CollectorRegistry()
    histogram = Histogram("x_seconds", "What x takes", buckets=TRADE_SECONDS_BUCKETS, registry=theirs)
    event_histogram = EventHistogram("x_seconds", "What x takes", TRADE_SECONDS_BUCKETS)
    ours.register(Exposed(event_histogram))
    for value in values:
        histogram.observe(value)
        event_histogram.observe(value)

    def text(registry: CollectorRegistry) -> list[str]:
        lines = generate_latest(registry).decode().splitlines()
        return [line for line in lines if not line.startswith("x_seconds_created ")]

    assert text(ours) == text(theirs)
    lines = generate_latest(ours).decode().splitlines()
    assert len([line for line in lines if line.startswith("x_seconds_created ")]) == 1


def stats_of(metrics: Metrics) -> dict[str, Any]:
    """A /stats document of a worker with no partitions (the figures the collector needs)."""
    return {
        "coreBuild": {"compiled": True, "detail": "mypyc"},
        "tradesIn": metrics.trades_in,
        "analyzed": metrics.analyzed,
        "throughputPerSecond": metrics.throughput(),
        "consumerLag": {"0": 7, "1": 0},
        "orderEventsLag": {"0": 1},
        "deadLetters": {"decode-error": 2},
        "alertsByPattern": {},
        "rulesVersion": 1,
        "rulesRejected": 0,
        "referenceVersion": 0,
        "referenceRejected": 0,
        "referenceIgnoredStale": 0,
        "redelivered": 0,
        "orderEventsIn": 0,
        "orderIssues": {},
        "marketContextStale": 0,
        "lateForMarket": 0,
        "rebalances": 3,
        "fencedBatches": 2,
        "heldEvents": 0,
        "marketAgent": {"released": 5, "held": 2},
        "pairAgent": {},
    }


def test_labelled_figures_become_labelled_samples_of_the_right_type():
    metrics = Metrics()
    families = parsed(exposition(lambda: stats_of(metrics)))
    lag = families["riskengine_consumer_lag"]
    assert lag.type == "gauge"
    assert sample(lag, "riskengine_consumer_lag", partition="0") == 7
    dead = families["riskengine_dead_letters"]
    assert dead.type == "counter"
    assert sample(dead, "riskengine_dead_letters_total", reason="decode-error") == 2
    assert sample(families["riskengine_rebalances"], "riskengine_rebalances_total") == 3
    assert sample(families["riskengine_fenced_batches"], "riskengine_fenced_batches_total") == 2
    assert families["riskengine_market_agent_released"].type == "counter"
    assert families["riskengine_market_agent_held"].type == "gauge"
    assert sample(families["riskengine_market_agent_held"], "riskengine_market_agent_held") == 2
    # No histograms unless asked for: /stats-only exposition stays small.
    assert "riskengine_batch_size" not in families
