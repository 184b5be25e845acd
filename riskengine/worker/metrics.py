"""The worker's metrics: counters the web views report (/stats, /metrics) and latency histograms.

Two kinds live here, both updated on the event loop (no locks needed):

- plain counters and gauges (:class:`Metrics` attributes such as ``trades_in``), which ``/stats``
  shows as JSON and :class:`StatsCollector` turns into Prometheus families at scrape time;
- histograms (``prometheus_client.Histogram``; :class:`EventHistogram` for the two observed per
  trade): processing time per batch and per trade, batch sizes, delivery round trips, changelog
  bytes per batch, and the event-time lag of analyzed trades (wall clock at output minus the
  trade's own timestamp).

``/metrics`` is :func:`exposition` of both, written by ``prometheus_client`` (the ecosystem's
library) in the Prometheus text format. Each :class:`Metrics` has its own registry, so tests and
benchmarks that build several workers in one process never share or collide on a metric.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

#: Recent alerts kept in memory per worker for the /alerts view.
RECENT_ALERTS = 1000
#: The Content-Type of /metrics: the classic text format every Prometheus version scrapes.
CONTENT_TYPE = "text/plain; version=0.0.4"

# Buckets, in seconds unless noted. A batch takes a few ms at a low rate and up to seconds on a
# backlog; the core scores a trade in tens of microseconds; the event-time lag spans a healthy
# worker (milliseconds) to one catching up on an hour of backlog.
BATCH_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
TRADE_SECONDS_BUCKETS = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.05,
)
EVENT_TIME_LAG_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)
#: Events per batch (the pipeline takes at most pipeline.MAX_BATCH, 10,000).
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
#: Bytes of state envelopes a batch writes to its changelog: a user's envelope is written whole once
#: per batch it changed in, so small batches of market makers' 20-40 KB states write most.
CHANGELOG_BYTES_BUCKETS = (1_000, 10_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 10_000_000)


#: How prometheus_client writes a bucket bound (``+Inf``, ``0.005``, ``1e-05``); untyped there.
_bound_label: Callable[[float], str] = floatToGoString


class EventHistogram:
    """An unlabelled histogram observed once per trade: prometheus_client's ``Histogram`` takes a
    lock for each observation and each bucket it increments (about 1 us; two per trade were a
    percent of a worker's CPU), which the event loop, the only writer, does not need. Exposed
    exactly as that ``Histogram`` would be (cumulative ``le`` buckets, ``_count``, ``_sum``,
    ``_created``)."""

    def __init__(self, name: str, documentation: str, buckets: Iterable[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = tuple(float(bound) for bound in buckets)
        #: observations per bucket (value <= its bound and > the one before), the last one +Inf
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        """Count ``value`` in the first bucket whose bound is at least it (Prometheus' ``le``)."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def collect(self) -> Iterable[Metric]:
        """The histogram's family, cumulative as the exposition format wants."""
        buckets: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            buckets.append((_bound_label(bound), total))
        family = HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=self.sum)
        family.samples.append(Sample(f"{self.name}_created", {}, self.created))
        yield family


class Histograms(Collector):
    """The worker's histograms; a collector of its own so one registry can hold it with the stats."""

    def __init__(self) -> None:
        self.batch_seconds = Histogram(
            "riskengine_batch_processing_seconds",
            "Seconds from taking a batch to acking its events (analysis, changelog, outputs), by agent",
            ["agent"],
            buckets=BATCH_SECONDS_BUCKETS,
            registry=None,
        )
        self.trade_seconds = EventHistogram(
            "riskengine_trade_processing_seconds",
            "Seconds to score one trade: market context, detection core, encoding the analyzed record",
            TRADE_SECONDS_BUCKETS,
        )
        self.batch_size = Histogram(
            "riskengine_batch_size",
            "Input events per batch, by agent",
            ["agent"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=None,
        )
        self.delivery_seconds = Histogram(
            "riskengine_delivery_seconds",
            "Round trip of a batch's delivery step: persist (state store and changelog acknowledged) "
            "or publish (outputs acknowledged, events acked), by agent",
            ["agent", "step"],
            buckets=BATCH_SECONDS_BUCKETS,
            registry=None,
        )
        self.changelog_bytes = Histogram(
            "riskengine_changelog_bytes",
            "Bytes of state a batch writes to the state store and its changelog, by agent "
            "(over riskengine_batch_size_sum: changelog bytes per event)",
            ["agent"],
            buckets=CHANGELOG_BYTES_BUCKETS,
            registry=None,
        )
        self.event_time_lag = EventHistogram(
            "riskengine_event_time_lag_seconds",
            "Wall clock when an analyzed trade is acknowledged minus the trade's own timestamp",
            EVENT_TIME_LAG_BUCKETS,
        )

    def all(self) -> tuple[Histogram | EventHistogram, ...]:
        """Every histogram, in exposition order."""
        return (
            self.batch_seconds,
            self.trade_seconds,
            self.batch_size,
            self.delivery_seconds,
            self.changelog_bytes,
            self.event_time_lag,
        )

    def collect(self) -> Iterable[Metric]:
        """The histograms' current samples (prometheus_client's Collector protocol)."""
        for histogram in self.all():
            yield from histogram.collect()


class Metrics:
    """Counters the web views report and the histograms; updated by the agents on the event loop."""

    def __init__(self) -> None:
        self.started = time.time()
        self.trades_in = 0
        self.order_events_in = 0
        #: order events the order book found inconsistent, by kind (they changed nothing)
        self.order_issues: Counter[str] = Counter()
        #: order events beyond the allowed lateness (applied to the book, kept out of the patterns)
        self.late_order_events = 0
        #: events held back at the last batch, waiting for the other input of their partition
        self.held_events = 0
        self.analyzed = 0
        self.redelivered = 0
        self.resent = 0
        self.invalid_profiles = 0
        #: trades more than market.allowed.lateness behind their partition (kept out of the market)
        self.late_for_market = 0
        #: trades scored with a market context that was not final after MAX_CONTEXT_WAIT_S
        self.market_context_stale = 0
        #: partition assignments this worker went through (each completed rebalance counts once)
        self.rebalances = 0
        #: batches stopped by a rebalance before they were acked (their events came again)
        self.fenced_batches = 0
        #: per watermarked agent ("market", "pair"): records released, late, re-delivered, rejected,
        #: and held at the last batch
        self.keyed: dict[str, Counter[str]] = {"market": Counter(), "pair": Counter()}
        self.alerts_by_pattern: Counter[str] = Counter()
        self.dead_letters_by_reason: Counter[str] = Counter()
        self.recent_alerts: deque[dict[str, Any]] = deque(maxlen=RECENT_ALERTS)
        #: (topic, partition) -> last offset processed (for consumer lag)
        self.positions: dict[tuple[str, int], int] = {}
        self.histograms = Histograms()
        # (monotonic second, trades analyzed in it) for a 10 s throughput figure
        self._seconds: deque[list[float]] = deque(maxlen=11)

    def count_analyzed(self, count: int) -> None:
        """``count`` more analyzed trades (delivered), for the totals and the throughput window."""
        self.analyzed += count
        second = float(int(time.monotonic()))
        if self._seconds and self._seconds[-1][0] == second:
            self._seconds[-1][1] += count
        else:
            self._seconds.append([second, float(count)])

    def throughput(self) -> float:
        """Analyzed trades per second over the last ten complete seconds."""
        now = int(time.monotonic())
        done = [count for second, count in self._seconds if now - 10 <= second < now]
        return sum(done) / 10.0

    def observe_delivered(self, event_times_ms: Iterable[int], now: float | None = None) -> None:
        """The event-time lag of trades whose analyzed records were just acknowledged."""
        now_ms = (time.time() if now is None else now) * 1000.0
        lag = self.histograms.event_time_lag
        for at in event_times_ms:
            # A trade stamped in the future (a skewed producer clock) counts as no lag.
            lag.observe(max(0.0, now_ms - at) / 1000.0)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _labelled(
    family: CounterMetricFamily | GaugeMetricFamily, label: str, values: Mapping[str, float]
) -> CounterMetricFamily | GaugeMetricFamily:
    for key, value in sorted(values.items()):
        family.add_metric([str(key)], value)
    return family


class StatsCollector(Collector):
    """The ``/stats`` figures as Prometheus families, read from ``stats()`` at every scrape."""

    def __init__(self, stats: Callable[[], Mapping[str, Any]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        """One family per figure; names are those /metrics has always had."""
        s = self._stats()
        yield _counter("riskengine_trades_in", "Trades received from the trades topic", s["tradesIn"])
        yield _counter("riskengine_analyzed", "Trades analyzed and delivered", s["analyzed"])
        yield _gauge(
            "riskengine_core_compiled",
            "1 when the detection core runs compiled (mypyc, `make native`), 0 when interpreted",
            int(s["coreBuild"]["compiled"]),
        )
        yield _gauge(
            "riskengine_throughput_per_second",
            "Analyzed trades per second over the last ten seconds",
            s["throughputPerSecond"],
        )
        yield _labelled(
            GaugeMetricFamily(
                "riskengine_consumer_lag", "Trades on the broker not yet processed", labels=["partition"]
            ),
            "partition",
            s["consumerLag"],
        )
        yield _labelled(
            GaugeMetricFamily(
                "riskengine_order_events_lag",
                "Order events on the broker not yet processed",
                labels=["partition"],
            ),
            "partition",
            s["orderEventsLag"],
        )
        yield _labelled(
            CounterMetricFamily(
                "riskengine_dead_letters", "Events sent to a dead-letter topic, by reason", labels=["reason"]
            ),
            "reason",
            s["deadLetters"],
        )
        yield _labelled(
            CounterMetricFamily("riskengine_alerts", "Alerts raised, by pattern", labels=["pattern"]),
            "pattern",
            s["alertsByPattern"],
        )
        yield _gauge("riskengine_rules_version", "Version of the active rules", s["rulesVersion"])
        yield _counter("riskengine_rules_rejected", "Rules messages rejected as invalid", s["rulesRejected"])
        yield _gauge(
            "riskengine_reference_version", "Version of the active reference lists", s["referenceVersion"]
        )
        yield _counter(
            "riskengine_reference_rejected", "Reference messages rejected as invalid", s["referenceRejected"]
        )
        yield _counter(
            "riskengine_reference_ignored_stale",
            "Reference messages ignored: not above the active version",
            s["referenceIgnoredStale"],
        )
        yield _counter(
            "riskengine_redelivered", "Events re-delivered after a crash or rebalance", s["redelivered"]
        )
        yield _counter("riskengine_order_events_in", "Order events received", s["orderEventsIn"])
        yield _labelled(
            CounterMetricFamily(
                "riskengine_order_issues", "Order events inconsistent with the book, by kind", labels=["kind"]
            ),
            "kind",
            s["orderIssues"],
        )
        yield _counter(
            "riskengine_market_context_stale",
            "Trades scored with a market context that was not final in time",
            s["marketContextStale"],
        )
        yield _counter(
            "riskengine_late_for_market", "Trades too late for the market state", s["lateForMarket"]
        )
        yield _counter(
            "riskengine_rebalances", "Partition assignments (completed rebalances)", s["rebalances"]
        )
        yield _counter(
            "riskengine_fenced_batches",
            "Batches stopped by a rebalance before they were acked (their events come again)",
            s["fencedBatches"],
        )
        yield _gauge(
            "riskengine_held_events", "Events held at the last batch for the other input", s["heldEvents"]
        )
        for agent in ("market", "pair"):
            for kind, value in sorted(s[f"{agent}Agent"].items()):
                name = f"riskengine_{agent}_agent_{kind}"
                text = f"The {agent} agent's {kind} records"
                yield _gauge(name, text, value) if kind == "held" else _counter(name, text, value)


def exposition(stats: Callable[[], Mapping[str, Any]], histograms: Histograms | None = None) -> str:
    """The Prometheus text format of the stats (and the histograms), written by prometheus_client."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(stats))
    if histograms is not None:
        registry.register(histograms)
    return generate_latest(registry).decode()
