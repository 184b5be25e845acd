"""The Faust application: ``faust -A riskengine worker`` runs it.

:func:`create_app` builds a :class:`RiskApp` from the settings: the broker and its credentials, the
RocksDB store (rocksdict, small options per table), raw bytes on every topic (agents see the
original bytes, which the dead-letter topic needs; Avro is done by the warmed
:class:`~riskengine.contracts.avro_codec.SchemaCatalog`), the engine's topics with the configured partition
count, no autodiscovery (agents, tables and views are registered explicitly), and the web server
on ``RISKENGINE_WORKER_WEB_HOST``.

Before anything consumes, :meth:`RiskApp.on_first_start` creates the engine's topics with the
intended layout (so no client auto-creates one with the broker's default partition count) and
registers and warms the schema catalog (so processing never waits for the registry). The Kafka
transport is Faust's aiokafka driver with the post-rebalance seek corrected
(:mod:`riskengine.worker.faust_compat`).

``riskengine.worker.app`` (the attribute ``faust -A riskengine`` looks up) is created lazily by the
package's ``__getattr__``, so importing ``riskengine.core`` or the CLI never imports Faust.
"""

from __future__ import annotations

import gc
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import faust
from faust.types import TransportT

from riskengine.connections import ssl_context
from riskengine.contracts.avro_codec import SchemaCatalog, registry_client
from riskengine.contracts.topics import Topics, ensure_topics, topic_names, topic_specs
from riskengine.settings import Settings
from riskengine.worker.faust_compat import Transport
from riskengine.worker.snapshots import Snapshotter, snapshot_store

if TYPE_CHECKING:
    from riskengine.worker.agents.trade_analysis import TradeAnalysis

log = logging.getLogger(__name__)
# One line per registry request at info level drowns the worker's own log.
logging.getLogger("httpx").setLevel(logging.WARNING)

#: Recent alerts kept in memory per worker for the /alerts view.
RECENT_ALERTS = 1000
#: Garbage-collector thresholds of a worker process, instead of CPython's (700, 10, 10). A worker
#: holds a few hundred thousand long-lived objects (Faust, the per-user states); with the defaults a
#: full collection walked all of them every few seconds under load, pausing the event loop for
#: 130-290 ms each time (9 in a 35 s benchmark run, p99 latency 98 ms). With these, young
#: collections are rarer and a full one runs after some 40 million allocations (p99 32 ms).
GC_THRESHOLDS = (20_000, 20, 100)
#: Seconds between two freezes of the objects that have survived so far. Without it the per-user
#: states accumulate in the oldest generation, and each full collection walked them all: 203-259 ms
#: per collection in the benchmark, freeing 0-16 objects, and p99 latency up to 230 ms whenever one
#: fell into the 20 s latency phase.
FREEZE_INTERVAL_S = 10.0
#: A collection that stops the worker at least this long is logged as a warning.
SLOW_COLLECTION_MS = 20.0


def broker_credentials(settings: Settings) -> Any:
    """Faust credentials for SSL / SASL from the settings, or None for PLAINTEXT."""
    context = ssl_context(settings)
    if settings.kafka_security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password.get(),
            ssl_context=context,
            mechanism=settings.kafka_sasl_mechanism,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def tune_garbage_collector(app: faust.App) -> None:
    """Once ``app`` has started (tables recovered): collect, freeze what exists, set :data:`GC_THRESHOLDS`.

    Frozen objects (modules, Faust's services, everything built at start-up) are left out of every
    later collection; reference counting still frees them when they are dropped. From then on the
    survivors are frozen again every :data:`FREEZE_INTERVAL_S` seconds, so a full collection only
    walks what is new since. The price is that a reference cycle which became garbage and was not
    yet collected when it was frozen is never freed; the full collections measured before freed
    0-16 objects each, so the worker's long-lived heap has next to no cycles. Collections that stop
    the worker for :data:`SLOW_COLLECTION_MS` or more are logged.
    """

    async def tune_garbage_collector() -> None:
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        gc.callbacks.append(_report_slow_collections())
        log.info(
            "garbage collector: %d start-up objects frozen, thresholds %s",
            gc.get_freeze_count(),
            GC_THRESHOLDS,
        )

    async def freeze_survivors() -> None:
        gc.freeze()

    # App tasks and timers start once table recovery has completed.
    app.task(tune_garbage_collector)
    app.timer(FREEZE_INTERVAL_S, name="freeze-survivors")(freeze_survivors)


def _report_slow_collections() -> Callable[[str, dict[str, int]], None]:
    """A ``gc.callbacks`` entry that logs every collection that stops the worker for long."""
    started = 0.0

    def on_collection(phase: str, info: dict[str, int]) -> None:
        nonlocal started
        if phase == "start":
            started = time.perf_counter()
            return
        paused_ms = (time.perf_counter() - started) * 1000
        if paused_ms >= SLOW_COLLECTION_MS:
            log.warning(
                "garbage collection of generation %d paused the worker for %.0f ms (%d objects freed)",
                info["generation"],
                paused_ms,
                info["collected"],
            )

    return on_collection


class Metrics:
    """Counters the web views report; updated by the agents on the event loop (no locks needed)."""

    def __init__(self) -> None:
        self.started = time.time()
        self.trades_in = 0
        self.analyzed = 0
        self.redelivered = 0
        self.resent = 0
        self.invalid_profiles = 0
        self.alerts_by_pattern: Counter[str] = Counter()
        self.dead_letters_by_reason: Counter[str] = Counter()
        self.recent_alerts: deque[dict[str, Any]] = deque(maxlen=RECENT_ALERTS)
        #: source partition -> last offset seen (for consumer lag)
        self.positions: dict[int, int] = {}
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


class RiskApp(faust.App):
    """The Faust app plus what its agents and views share: settings, names, catalog, metrics."""

    settings: Settings
    names: Topics
    catalog: SchemaCatalog
    metrics: Metrics
    analysis: TradeAnalysis
    snapshots: Snapshotter

    async def on_first_start(self) -> None:
        """Create the topics and fill the schema catalog before any consumer or agent starts."""
        await super().on_first_start()
        created = await ensure_topics(self.settings, topic_specs(self.settings))
        log.info("topics: %s", ", ".join(f"{name} {state}" for name, state in created.items()))
        ids = await self.catalog.register()
        cached = await self.catalog.warm()
        log.info("schema catalog ready: writer ids %s, %d schemas cached", ids, cached)
        # Profiles and rules are loaded before the first trade is evaluated.
        await self.analysis.reader.start()

    def _new_transport(self) -> TransportT:
        """Faust's aiokafka transport, with the consumer of :mod:`riskengine.worker.faust_compat`."""
        return Transport(self.conf.broker_consumer, self)

    async def on_stop(self) -> None:
        """Stop the reference-data reader with the app."""
        await self.analysis.reader.stop()
        await super().on_stop()


def app_options(settings: Settings) -> dict[str, Any]:
    """The Faust app configuration of the worker (shared with ``riskengine bench-e2e``'s passthrough)."""
    return dict(
        broker=[f"kafka://{server.strip()}" for server in settings.kafka_bootstrap_servers.split(",")],
        broker_credentials=broker_credentials(settings),
        store="rocksdb://",
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        table_standby_replicas=settings.worker_standby_replicas,
        autodiscover=False,
        web_bind=settings.worker_web_host,
        web_host=settings.worker_web_host,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # For records sent through Faust's producer (the trade-analysis agent sends its own, see
        # riskengine.worker.commit): sent one by one, almost every record would be its own produce
        # request (measured: 25,600 requests for 30,250 records). A few ms batch them.
        producer_linger=0.005,
        # The commit interval bounds how much is re-processed after a crash (and how many
        # pending outputs a busy user's state carries).
        broker_commit_interval=1.0,
        broker_session_timeout=settings.worker_session_timeout,
        broker_heartbeat_interval=settings.worker_session_timeout / 10,
    )


def create_app(settings: Settings) -> RiskApp:
    """The worker's Faust app for ``settings``, with its tables, agents and web views registered."""
    app = RiskApp(settings.worker_app_id, **app_options(settings))
    app.settings = settings
    app.names = topic_names(settings)
    app.catalog = SchemaCatalog(registry_client(settings))
    app.metrics = Metrics()

    # Imported here: these modules need the app class and would otherwise import in a cycle.
    from riskengine.worker.agents.trade_analysis import register_trade_analysis
    from riskengine.worker.web_views import register_views

    register_trade_analysis(app)
    app.snapshots = Snapshotter(app, snapshot_store(settings))
    if settings.worker_snapshot_interval:
        app.timer(settings.worker_snapshot_interval, name="table-snapshots")(app.snapshots.on_timer)
    register_views(app)
    tune_garbage_collector(app)
    return app


app = create_app(Settings.from_env())
