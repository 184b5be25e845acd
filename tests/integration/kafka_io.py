"""Small async helpers shared by the integration tests (real Kafka, no mocks)."""

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from riskengine.connections import client_options
from riskengine.settings import Settings
from riskengine_devtools.chaos.kafka_io import partitions


async def produce(settings: Settings, topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    """Send (key, value) pairs and wait until the broker acknowledged every one."""
    producer = AIOKafkaProducer(**client_options(settings), acks="all")
    await producer.start()
    try:
        for key, value in messages:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def end_offsets(settings: Settings, topic: str) -> dict[TopicPartition, int]:
    """The current end offset of every partition of ``topic``."""
    consumer = AIOKafkaConsumer(**client_options(settings))
    await consumer.start()
    try:
        offsets: dict[TopicPartition, int] = await consumer.end_offsets(await partitions(settings, topic))
        return offsets
    finally:
        await consumer.stop()


async def committed_to_the_end(
    settings: Settings, group: str, topic: str, wait_s: float = 30.0
) -> tuple[dict[int, int], dict[int, int]]:
    """Wait (at most ``wait_s``) until ``group`` committed every non-empty partition of ``topic`` to
    its end: the committed offsets and the ends, by partition, for the caller to compare."""
    ends = {tp.partition: end for tp, end in (await end_offsets(settings, topic)).items() if end > 0}
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        committed: dict[int, int] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while loop.time() < deadline:
            offsets = await admin.list_consumer_group_offsets(group)
            committed = {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}
            if committed == ends:
                break
            await asyncio.sleep(0.5)
        return committed, ends
    finally:
        await admin.close()


async def consume(
    settings: Settings,
    topic: str,
    count: int,
    start: dict[TopicPartition, int] | None = None,
    wait_s: float = 20.0,
) -> list[Any]:
    """Read up to ``count`` records of ``topic`` from ``start`` offsets (default: the beginning)."""
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False)
    await consumer.start()
    try:
        positions = start or dict.fromkeys(await partitions(settings, topic), 0)
        consumer.assign(list(positions))
        for tp, offset in positions.items():
            consumer.seek(tp, offset)
        records: list[Any] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while len(records) < count and loop.time() < deadline:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(messages)
        return records
    finally:
        await consumer.stop()
