"""The worker's Faust app: ``faust -A riskengine worker`` runs it; :func:`create_app` wires it.

:func:`create_app` is the one place the worker is put together, in this order: the
:class:`~riskengine.worker.context.WorkerContext` (settings, topic names, schema catalog, metrics,
reference data), the :class:`RiskApp` with its tables, the agents, the snapshot timer, the web
views and the garbage-collector tuning. Nothing is assigned to the app after it is constructed.

The app: the broker and its credentials, the RocksDB store (rocksdict, small options per table),
raw bytes on every topic (agents see the original bytes, which the dead-letter topic needs; Avro
is done by the warmed schema catalog), the engine's topics with the configured partition count,
no autodiscovery (agents, tables and views are registered explicitly), the web server on
``RISKENGINE_WORKER_WEB_HOST`` behind :func:`riskengine.web_guard.guard` and without Faust's own
``/table`` and ``/router`` pages (they serve raw state bytes and the cluster layout to anyone; the
worker's ``/users/{userId}`` views decode the state, behind the admin token when one is set), and
the Kafka transport of :mod:`riskengine.worker.faust_compat`
(Faust's aiokafka driver with the post-rebalance seek corrected).

Before anything consumes, :meth:`RiskApp.on_first_start` creates the engine's topics with the
intended layout (so no client auto-creates one with the broker's default partition count),
registers and warms the schema catalog (so processing never waits for the registry) and loads the
reference data.

``riskengine.app`` (the attribute ``faust -A riskengine`` looks up) is ``create_app`` of the settings
in the environment, made on first access by the package's ``__getattr__``; importing
``riskengine.core``, the CLI or this module builds no app.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import faust

import riskengine
from riskengine.connections import ssl_context
from riskengine.contracts.topics import ensure_topics, topic_specs
from riskengine.core import BUILD as CORE_BUILD
from riskengine.logs import faust_logging_config, quiet_libraries
from riskengine.settings import Settings
from riskengine.web_guard import allowed_names, guard
from riskengine.worker.agents.user_agent import UserAgent
from riskengine.worker.agents.watermarked_agent import market_agent, pair_agent
from riskengine.worker.context import WorkerContext
from riskengine.worker.faust_compat import TransportApp
from riskengine.worker.gc_tuning import tune_garbage_collector
from riskengine.worker.snapshots import Snapshotter, snapshot_store
from riskengine.worker.tables.user_state import MARKET_TABLE_NAME, PAIR_TABLE_NAME, StateTable, UserStateTable
from riskengine.worker.web_views import register_views

log = logging.getLogger(__name__)
# One line per registry request at info level drowns the worker's own log (Faust's logging setup,
# below, keeps it quiet too).
quiet_libraries()


#: Longest interval between two heartbeats of the worker's group member (seconds).
MAX_HEARTBEAT_S = 3.0


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
        # In a container the worker listens on every interface (probes, port-forward) and advertises
        # its pod IP, which the other workers forward /users/{userId} requests to.
        web_bind=settings.worker_web_bind or settings.worker_web_host,
        web_host=settings.worker_web_host,
        # Raw table bytes and partition layout, unauthenticated: the worker's own views replace them.
        web_tables_enabled=False,
        web_router_enabled=False,
        # Any port: Faust forwards a /users request to the key's owner with the original Host
        # header, which names the first worker's port.
        web_application_options={
            "middlewares": [
                guard(allowed_names(settings.worker_web_host, settings.web_allowed_hosts), any_port=True)
            ]
        },
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # For records sent through Faust's producer (the agents send their own, see
        # riskengine.worker.commit): sent one by one, almost every record would be its own produce
        # request (measured: 25,600 requests for 30,250 records). A few ms batch them.
        producer_linger=0.005,
        # The commit interval bounds how much is re-processed after a crash (and how many
        # pending outputs a busy user's state carries).
        broker_commit_interval=1.0,
        broker_session_timeout=settings.worker_session_timeout,
        # A member learns that the group rebalances from a heartbeat: a joining worker waited up to
        # an interval (6 s at session/10) while the others went on alone. Kafka's own default is 3 s.
        broker_heartbeat_interval=min(MAX_HEARTBEAT_S, settings.worker_session_timeout / 10),
        logging_config=faust_logging_config(settings),
    )


class RiskApp(TransportApp):
    """The Faust app of the worker: its context and its tables, set when it is constructed."""

    def __init__(self, context: WorkerContext) -> None:
        super().__init__(context.settings.worker_app_id, **app_options(context.settings))
        self.context = context
        self.fetch_wait_ms = context.settings.worker_fetch_wait_ms
        self.user_state = UserStateTable(self, context.settings)
        self.market_state = StateTable(
            self, context.settings, MARKET_TABLE_NAME, "per-symbol market state (riskengine.core.market)"
        )
        self.pair_state = StateTable(
            self,
            context.settings,
            PAIR_TABLE_NAME,
            "per-owner-pair round trips (riskengine.core.account_pairs)",
        )

    async def on_first_start(self) -> None:
        """Create the topics, fill the schema catalog and load the reference data before consuming."""
        await super().on_first_start()
        context = self.context
        # Where the code came from, too: two checkouts on one machine are easily mixed up.
        log.info("detection core: %s; riskengine from %s", CORE_BUILD, Path(riskengine.__file__).parent)
        created = await ensure_topics(context.settings, topic_specs(context.settings))
        log.info("topics: %s", ", ".join(f"{name} {state}" for name, state in created.items()))
        ids = await context.catalog.register()
        cached = await context.catalog.warm()
        log.info("schema catalog ready: writer ids %s, %d schemas cached", ids, cached)
        # Profiles and rules are loaded before the first trade is evaluated.
        await context.reference.start()

    async def on_stop(self) -> None:
        """Stop following the reference data with the app."""
        await self.context.reference.stop()
        await super().on_stop()


def create_app(settings: Settings) -> RiskApp:
    """The worker's Faust app for ``settings``, with its tables, agents and web views registered."""
    context = WorkerContext.from_settings(settings)
    app = RiskApp(context)
    users = UserAgent(app, context, app.user_state)
    market_agent(app, context, app.market_state, users.trade_ends)
    pair_agent(app, context, app.pair_state, users.trade_ends)
    snapshots = Snapshotter(app, snapshot_store(settings))
    if settings.worker_snapshot_interval:
        app.timer(settings.worker_snapshot_interval, name="table-snapshots")(snapshots.on_timer)
    register_views(
        app, context, users, snapshots, {MARKET_TABLE_NAME: app.market_state, PAIR_TABLE_NAME: app.pair_state}
    )
    app.on_partitions_assigned.connect(_count_rebalance(context))
    tune_garbage_collector(app)
    return app


def _count_rebalance(context: WorkerContext) -> Any:
    """A signal receiver counting each partition assignment (``riskengine_rebalances_total``)."""

    def receiver(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        context.metrics.rebalances += 1

    return receiver
