"""The engine's topics: their names, the layout each must have, and creating them.

Every topic the engine reads or writes is named in :class:`Topics`; :func:`topic_names` appends
``RISKENGINE_WORKER_TOPIC_SUFFIX`` (the one place a suffix is applied), :func:`topic_specs` gives
each its partitions, replication and configs, and :func:`ensure_topics` creates the missing ones
and checks the existing ones. :data:`RECORD_TOPICS` says which contract travels on which topic
(the registry subject is the topic's value subject, Confluent's TopicNameStrategy).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from riskengine.connections import client_options
from riskengine.errors import ContractError, FatalError
from riskengine.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Topics:
    """Every topic the engine reads or writes (README, "Data contracts"). Keys are userId unless noted."""

    trades: str = "crypto-trades"
    orders: str = "crypto-orders"
    user_profiles: str = "user-profiles"
    risk_rules: str = "risk-rules"
    #: Sanctions, country lists and market data: one versioned record under one key.
    risk_reference: str = "risk-reference"
    analyzed_trades: str = "risk-analyzed-trades"
    alerts: str = "risk-alerts"
    trades_dlq: str = "crypto-trades-dlq"
    orders_dlq: str = "crypto-orders-dlq"
    #: Internal: the per-user agent's executions repartitioned by symbol, for the market agent.
    market_events: str = "risk-market-events"
    #: Internal: the executions repartitioned by owner pair, for the account-pair agent.
    pair_events: str = "risk-pair-events"
    #: Each symbol's market context by minute (key: symbol), and the market partitions' progress.
    market_context: str = "risk-market-context"

    @property
    def compacted(self) -> frozenset[str]:
        """Reference-data topics: the latest value per key is all that matters."""
        return frozenset({self.user_profiles, self.risk_rules, self.risk_reference, self.market_context})

    def all(self) -> tuple[str, ...]:
        """Every topic the engine reads or writes."""
        return (
            self.trades,
            self.orders,
            self.user_profiles,
            self.risk_rules,
            self.risk_reference,
            self.analyzed_trades,
            self.alerts,
            self.trades_dlq,
            self.orders_dlq,
            self.market_events,
            self.pair_events,
            self.market_context,
        )


TOPICS = Topics()

#: Top-level record name -> the topic whose value subject it is registered under.
RECORD_TOPICS: dict[str, str] = {
    "CryptoTrade": TOPICS.trades,
    "OrderEvent": TOPICS.orders,
    "UserProfile": TOPICS.user_profiles,
    "RiskRules": TOPICS.risk_rules,
    "RiskReference": TOPICS.risk_reference,
    "RiskAnalyzedTrade": TOPICS.analyzed_trades,
    "RiskAlert": TOPICS.alerts,
    "MarketContext": TOPICS.market_context,
}


#: Contracts the engine reads from producers it does not control. FULL_TRANSITIVE: a new schema
#: must be readable by, and able to read, every earlier version, so a producer that drops a
#: required field (customerId, say) is refused by the registry at registration, instead of every
#: one of its records being dead-lettered by the workers.
INPUT_CONTRACTS = frozenset({"CryptoTrade", "OrderEvent", "UserProfile", "RiskRules", "RiskReference"})


def compatibility(name: str) -> str:
    """The registry compatibility level of contract ``name``'s subject.

    Inputs are FULL_TRANSITIVE (:data:`INPUT_CONTRACTS`). The engine's outputs stay BACKWARD: the
    engine is their only writer, and their readers (the sink connector, the dashboard) resolve the
    writer's schema by id.
    """
    return "FULL_TRANSITIVE" if name in INPUT_CONTRACTS else "BACKWARD"


def value_subject(topic: str) -> str:
    """The registry subject of a topic's values (Confluent's TopicNameStrategy).

    ``topic`` is the actual topic name, suffix included (:func:`topic_names`), so a standard client
    using TopicNameStrategy finds the subject, and a suffixed deployment never evolves another's.
    """
    return f"{topic}-value"


def record_subjects(suffix: str = "") -> dict[str, str]:
    """Contract name -> the value subject of its topic with ``suffix`` (RISKENGINE_WORKER_TOPIC_SUFFIX)."""
    return {name: value_subject(topic + suffix) for name, topic in RECORD_TOPICS.items()}


#: Dead letters and reference data are kept long enough for an operator to act on them.
_TOPIC_CONFIGS: dict[str, dict[str, str]] = {
    TOPICS.user_profiles: {"cleanup.policy": "compact"},
    TOPICS.risk_rules: {"cleanup.policy": "compact"},
    TOPICS.risk_reference: {"cleanup.policy": "compact"},
    TOPICS.trades_dlq: {"retention.ms": str(30 * 24 * 3600 * 1000)},
    TOPICS.orders_dlq: {"retention.ms": str(30 * 24 * 3600 * 1000)},
    # Read within seconds; a day covers a worker that is down for a while.
    TOPICS.market_events: {"retention.ms": str(24 * 3600 * 1000)},
    TOPICS.pair_events: {"retention.ms": str(24 * 3600 * 1000)},
    # Compacted to the latest context per symbol, but not before an hour: a worker that restarts
    # behind still finds the versions its trades need (each trade uses the one of its minute).
    TOPICS.market_context: {
        "cleanup.policy": "compact",
        "min.compaction.lag.ms": str(3600 * 1000),
        "segment.ms": str(3600 * 1000),
    },
}


#: How long a newly created topic may take to show its partitions in the metadata.
_METADATA_WAIT_S = 15.0


class TopicLayoutError(ContractError, FatalError):
    """An existing topic has a partition count other than the one the engine needs."""


@dataclass(frozen=True)
class TopicSpec:
    """A topic the engine owns, with the layout it must have."""

    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str]


def topic_names(settings: Settings) -> Topics:
    """The engine's topic names with ``RISKENGINE_WORKER_TOPIC_SUFFIX`` appended."""
    suffix = settings.worker_topic_suffix
    return Topics(**{f.name: getattr(TOPICS, f.name) + suffix for f in dataclasses.fields(Topics)})


def topic_specs(settings: Settings, names: tuple[str, ...] | None = None) -> list[TopicSpec]:
    """The engine's topics (:func:`topic_names`, or ``names``) with their layout.

    Every topic gets the same partition count: the trade topic and the tables' changelogs must
    match (Faust's PartitionsMismatch), and co-partitioned outputs keep a user on one partition.
    Compaction and retention follow the topic's name without the suffix.
    """
    suffix = settings.worker_topic_suffix
    return [
        TopicSpec(
            name,
            settings.topic_partitions,
            settings.topic_replication_factor,
            _TOPIC_CONFIGS.get(name.removesuffix(suffix) if suffix else name, {}),
        )
        for name in (names or topic_names(settings).all())
    ]


async def ensure_topics(settings: Settings, specs: list[TopicSpec]) -> dict[str, str]:
    """Create the missing topics; check the partition count of existing ones.

    Returns topic name -> ``"created"`` or ``"exists"``. Raises :class:`TopicLayoutError` when an
    existing topic has another partition count (it would break co-partitioning silently).
    """
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        result = {spec.name: "exists" for spec in specs if spec.name in existing}
        if missing:
            new_topics = [
                NewTopic(spec.name, spec.partitions, spec.replication_factor, topic_configs=spec.configs)
                for spec in missing
            ]
            try:
                await admin.create_topics(new_topics)
            except TopicAlreadyExistsError:
                log.info("another client created some topics concurrently")
            result.update({spec.name: "created" for spec in missing})
        partitions = await _partition_counts(admin, [spec.name for spec in specs])
        for spec in specs:
            if partitions.get(spec.name) != spec.partitions:
                raise TopicLayoutError(
                    f"topic {spec.name} has {partitions.get(spec.name)} partitions, expected "
                    f"{spec.partitions} (RISKENGINE_TOPIC_PARTITIONS); recreate it or change the setting"
                )
        return result
    finally:
        await admin.close()


async def _partition_counts(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    """Partitions per topic; waits while a just-created topic still shows none (metadata lag)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _METADATA_WAIT_S
    while True:
        described = await admin.describe_topics(names)
        counts = {d["topic"]: len(d["partitions"]) for d in described}
        if all(counts.get(name) for name in names) or loop.time() > deadline:
            return counts
        await asyncio.sleep(0.2)
