"""``riskengine reference publish FILE``: put reference data on the topics every worker follows.

``FILE`` is the JSON that ``riskengine replay --reference FILE`` reads (``profiles``,
``sanctionedUsers``, ``sanctionedCountries``, ``restrictedCountries``, ``markets``), loaded and
validated by the same code, so a file replay accepts is a file the workers accept and the other
way round. The whole file is validated before anything is sent; a bad entry is one error line
naming it (exit 2) and nothing is published.

What goes where:

- each profile to ``user-profiles`` (+ suffix), keyed by userId, as the producer publishes them
  (profiles are upserted: one missing from the file stays as it is on the topic);
- the lists and markets, as ONE ``RiskReference`` record with a version, to ``risk-reference``
  (+ suffix) under the key ``reference``: it replaces the active lists as a whole (a list the file
  leaves out becomes empty), like the file replaces them in a replay.

The version is ``--version N``, or else the version the workers have active (the highest valid
version on the topic, read from it; 0 when there is none) plus one. A version not above the
active one is refused (exit 2): the workers would ignore it. The producer service versions what it
publishes with its start time in epoch milliseconds (see :mod:`riskengine.producer.api`), so the
next ``reference publish`` after a producer start continues from there.

Exit codes: 0 published; 1 Kafka or the schema registry unreachable or refusing (one line naming
the setting; nothing is published when the failure comes before the first send); 2 a bad file,
version or setting.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, KafkaTimeoutError

from riskengine.connections import client_options
from riskengine.contracts.avro_codec import RegistryError, SchemaCatalog
from riskengine.contracts.reference_record import (
    RECORD_NAME,
    REFERENCE_KEY,
    active_version,
    profile_record,
    reference_record,
)
from riskengine.contracts.topics import (
    TopicLayoutError,
    ensure_topics,
    topic_names,
    topic_specs,
)
from riskengine.core import ReferenceData
from riskengine.errors import CommandError
from riskengine.settings import Settings

from .replay_command import ReplayError, load_reference

#: How long reading the risk-reference topic up to its end may take.
READ_TIMEOUT_S = 30.0


class ReferencePublishError(CommandError):
    """The reference data cannot be published as asked (a bad file or version)."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``reference`` command."""
    parser = subparsers.add_parser(
        "reference", help="publish reference data (profiles, sanctions, countries, markets) to the workers"
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    publish = actions.add_parser(
        "publish",
        help="validate a reference file and publish it: profiles to user-profiles, the lists and "
        "markets as one versioned record to risk-reference",
        description="Validate FILE (the JSON riskengine replay --reference reads) and publish it: each "
        "profile to user-profiles keyed by userId, the sanctioned users and countries, restricted "
        "countries and markets as one versioned RiskReference record to risk-reference. Nothing is "
        "published when the file has a bad entry.",
    )
    publish.add_argument("file", type=Path, metavar="FILE", help="reference data JSON")
    publish.add_argument(
        "--version",
        type=_version,
        metavar="N",
        help="version of the record (default: the workers' active version + 1, read from the topic); "
        "must be above the active version",
    )
    publish.set_defaults(handler=publish_reference)


def _version(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def publish_reference(args: argparse.Namespace, settings: Settings) -> int:
    """Validate the file, then publish it; one line on stderr and a non-zero exit on failure."""
    path: Path = args.file
    try:
        # The loader of replay --reference: one format, one validation (ReferenceData.from_document).
        data = load_reference(path)
    except ReplayError as exc:
        print(f"riskengine reference: {exc}; nothing published", file=sys.stderr)
        return 2
    if settings.log_level != "debug":
        # The command reports a failure in one line of its own; aiokafka would add its own, and
        # httpx one line per registry request.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        lines = asyncio.run(_publish(settings, data, args.version, f"riskengine reference publish {path}"))
    except ReferencePublishError as exc:
        print(f"riskengine reference: {exc}; nothing published", file=sys.stderr)
        return 2
    except (KafkaError, RegistryError, TopicLayoutError, OSError) as exc:
        print(f"riskengine reference: {unreachable(settings, exc)}", file=sys.stderr)
        return 1
    print(f"published {path}:")
    for line in lines:
        print(f"  {line}")
    return 0


def unreachable(settings: Settings, exc: BaseException) -> str:
    """One line for a failure of Kafka or the registry, naming the setting that points at it."""
    if isinstance(exc, RegistryError):
        return f"schema registry at {settings.schema_registry_url} (RISKENGINE_SCHEMA_REGISTRY_URL): {exc}"
    if isinstance(exc, TopicLayoutError):
        return str(exc)
    detail = str(exc) or type(exc).__name__
    return (
        f"Kafka at {settings.kafka_bootstrap_servers} (RISKENGINE_KAFKA_BOOTSTRAP_SERVERS) is unreachable "
        f"or refused: {detail}"
    )


async def _publish(
    settings: Settings, data: ReferenceData, version: int | None, updated_by: str
) -> list[str]:
    names = topic_names(settings)
    await ensure_topics(settings, topic_specs(settings, (names.user_profiles, names.risk_reference)))
    catalog = SchemaCatalog.for_settings(settings)
    await catalog.register(["UserProfile", RECORD_NAME])
    # Every registered version of the record, so the versions already on the topic decode.
    await catalog.warm([catalog.subjects[RECORD_NAME]])
    values = await _read_topic(settings, names.risk_reference)
    active = active_version(catalog, values)
    chosen = active + 1 if version is None else version
    if chosen <= active:
        raise ReferencePublishError(
            f"version {chosen} is not above the active version {active}: the workers would ignore it"
        )
    profiles = [profile_record(profile) for profile in data.profiles.values()]
    record = reference_record(data, chosen, time.time_ns() // 1_000_000, updated_by)
    # Encoded before the first send, so a record that does not fit publishes nothing.
    messages = [
        (names.user_profiles, p["userId"].encode(), catalog.encode("UserProfile", p)) for p in profiles
    ]
    messages.append((names.risk_reference, REFERENCE_KEY, catalog.encode(RECORD_NAME, record)))
    producer = AIOKafkaProducer(**client_options(settings), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        # Profiles first: a worker that activates the lists has the profiles they apply to.
        acks: list[Awaitable[Any]] = [
            await producer.send(topic, value, key=key) for topic, key, value in messages[:-1]
        ]
        await asyncio.gather(*acks)
        topic, key, value = messages[-1]
        await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()
    return [
        f"{names.user_profiles:32} {len(profiles)} profile(s), keyed by userId",
        f"{names.risk_reference:32} version {chosen} (active was {active}): "
        f"{len(data.sanctioned_users)} sanctioned user(s), {len(data.sanctioned_countries)} sanctioned "
        f"country(ies), {len(data.restricted_countries)} restricted country(ies), {len(data.markets)} "
        "market(s)",
    ]


async def _read_topic(settings: Settings, topic: str) -> list[bytes | None]:
    """Every value on ``topic`` now, read from the beginning of each partition (no consumer group)."""
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False)
    await consumer.start()
    try:
        # ensure_topics has just checked that the topic has exactly this many partitions.
        tps = [TopicPartition(topic, partition) for partition in range(settings.topic_partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        values: list[bytes | None] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READ_TIMEOUT_S
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            if loop.time() > deadline:
                raise KafkaTimeoutError(f"could not read {topic} to its end within {READ_TIMEOUT_S:.0f} s")
            for records in (await consumer.getmany(timeout_ms=500)).values():
                values.extend(record.value for record in records)
        return values
    finally:
        await consumer.stop()
