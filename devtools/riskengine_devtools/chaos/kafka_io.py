"""Reading topics back from the beginning (what the verifier and the integration tests check), and
deleting a run's topics."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from riskengine.connections import client_options
from riskengine.settings import Settings


async def partitions(settings: Settings, topic: str) -> list[TopicPartition]:
    """Every partition of ``topic``, from the broker's metadata."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        return sorted(TopicPartition(topic, int(p["partition"])) for p in described["partitions"])
    finally:
        await admin.close()


async def collect(
    settings: Settings, topic: str, done: Callable[[list[Any]], bool], wait_s: float = 60.0
) -> list[Any]:
    """Read ``topic`` from the beginning until ``done(records)`` or ``wait_s`` seconds."""
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False)
    await consumer.start()
    records: list[Any] = []
    try:
        tps = await partitions(settings, topic)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while not done(records) and loop.time() < deadline:
            for batch in (await consumer.getmany(timeout_ms=300)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


async def read_all(settings: Settings, topic: str, wait_s: float = 60.0) -> list[Any]:
    """Every record of ``topic`` up to its end offsets as of now (read from the beginning)."""
    consumer = AIOKafkaConsumer(
        **client_options(settings), enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    records: list[Any] = []
    try:
        tps = await partitions(settings, topic)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while loop.time() < deadline:
            positions = [await consumer.position(tp) for tp in ends]
            if all(position >= end for position, end in zip(positions, ends.values(), strict=True)):
                break
            for batch in (await consumer.getmany(timeout_ms=300)).values():
                records.extend(batch)
        else:
            raise TimeoutError(f"{topic}: not read to its end offsets within {wait_s:.0f} s")
        return records
    finally:
        await consumer.stop()


async def delete_topics(settings: Settings, token: str) -> int:
    """Delete every topic whose name holds ``token`` (the scenario's inputs, outputs, changelogs)."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        mine = [name for name in await admin.list_topics() if token in name]
        if mine:
            await admin.delete_topics(mine)
        return len(mine)
    finally:
        await admin.close()
