"""Real worker processes for the integration tests, and the inputs they are fed.

:class:`WorkerProcess`, :func:`isolated`, :func:`prepare` and :func:`running` come from
:mod:`riskengine_devtools.chaos.workers` (shared with the chaos suite): each test gets its own app id
(consumer group, changelog topics) and topic suffix, so runs never share state.
"""

from __future__ import annotations

import asyncio
import json
from importlib import resources
from typing import Any

from aiokafka import AIOKafkaProducer

from riskengine.connections import client_options
from riskengine.contracts.avro_codec import SchemaCatalog
from riskengine.core import ReferenceData, Trade, parse_profile, parse_trade
from riskengine.settings import Settings

# The worker processes live in the development tools (the chaos suite runs them too); the tests
# import them from here as before.
from riskengine_devtools.chaos.workers import (
    WorkerProcess as WorkerProcess,
)
from riskengine_devtools.chaos.workers import (
    free_port as free_port,
)
from riskengine_devtools.chaos.workers import (
    isolated as isolated,
)
from riskengine_devtools.chaos.workers import (
    prepare as prepare,
)
from riskengine_devtools.chaos.workers import (
    running as running,
)
from riskengine_devtools.chaos.workers import (
    worker_env as worker_env,
)


async def send(settings: Settings, topic: str, messages: list[tuple[bytes | None, bytes | None]]) -> None:
    """Produce (key, value) pairs in order (acks=all) and wait for every ack."""
    producer = AIOKafkaProducer(**client_options(settings), acks="all")
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def send_trades(settings: Settings, catalog: SchemaCatalog, trades: list[Trade]) -> None:
    """Produce ``trades`` (Avro, keyed by userId) to the test's crypto-trades topic, in order."""
    await send(
        settings,
        f"crypto-trades{settings.worker_topic_suffix}",
        [(t.user_id.encode(), catalog.encode("CryptoTrade", t.to_record())) for t in trades],
    )


def sample_trades() -> list[Trade]:
    """The bundled sample trades (every implemented pattern occurs in them)."""
    text = resources.files("riskengine").joinpath("data/sample-trades.jsonl").read_text()
    return [parse_trade(json.loads(line)) for line in text.splitlines() if line.strip()]


def sample_profiles() -> list[dict[str, Any]]:
    """The profiles of the bundled sample reference data."""
    document = json.loads(resources.files("riskengine").joinpath("data/sample-reference.json").read_text())
    profiles: list[dict[str, Any]] = document["profiles"]
    return profiles


def sample_reference() -> ReferenceData:
    """The sample profiles as the detection core's reference data."""
    return ReferenceData(profiles={p["userId"]: parse_profile(p) for p in sample_profiles()})


async def publish_sample_profiles(settings: Settings, catalog: SchemaCatalog) -> None:
    """Put the sample profiles on the (suffixed) user-profiles topic."""
    await send(
        settings,
        f"user-profiles{settings.worker_topic_suffix}",
        [(p["userId"].encode(), catalog.encode("UserProfile", p)) for p in sample_profiles()],
    )
