"""Kafka connection options and topic administration, from the one settings object."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from riskengine.contracts import TOPICS, Topics
from riskengine.settings import Settings

log = logging.getLogger(__name__)

#: Dead letters and reference data are kept long enough for an operator to act on them.
_TOPIC_CONFIGS: dict[str, dict[str, str]] = {
    TOPICS.user_profiles: {"cleanup.policy": "compact"},
    TOPICS.risk_rules: {"cleanup.policy": "compact"},
    TOPICS.trades_dlq: {"retention.ms": str(30 * 24 * 3600 * 1000)},
    TOPICS.orders_dlq: {"retention.ms": str(30 * 24 * 3600 * 1000)},
}


#: How long a newly created topic may take to show its partitions in the metadata.
_METADATA_WAIT_S = 15.0


class TopicLayoutError(RuntimeError):
    """An existing topic has a partition count other than the one the engine needs."""


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for SSL and SASL_SSL, or None for plaintext protocols."""
    if not settings.kafka_uses_tls:
        return None
    context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile or None)
    if settings.kafka_ssl_certfile:
        context.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile)
    return context


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments shared by every aiokafka client (producer, consumer, admin)."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password.get()
    return options


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
