"""A platform engineer's standard clients against the engine, on the real stack.

confluent-kafka's Producer with its AvroSerializer, handed the file `riskengine schemas export`
writes, produces trades the worker analyzes; its Consumer with the AvroDeserializer reads the
analyzed trades and alerts. Subjects follow the topics' suffixed names (Confluent's
TopicNameStrategy finds them with auto-registration off), the input subjects are FULL_TRANSITIVE
(a schema dropping the required customerId is refused by the registry), and `riskengine tail`
prints the outputs as JSON lines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from riskengine.cli import main
from riskengine.cli.schemas_command import export_schemas
from riskengine.contracts.topics import topic_names
from riskengine.settings import Settings

from .conftest import remove_leftovers
from .kafka_io import produce
from .worker_harness import WorkerProcess, isolated, publish_sample_profiles, running, sample_trades


def registry(settings: Settings) -> SchemaRegistryClient:
    # With no timeout (the client's default) a response lost on a kept-alive connection hung a CI run
    # for good (the registry had logged its 404 answer); a timed-out request is retried by the client.
    return SchemaRegistryClient({"url": settings.schema_registry_url, "timeout": 10})


def produce_with_confluent(settings: Settings, schema_file: Path, trades: list[dict[str, Any]]) -> None:
    """Confluent's producer and serializer: the exported file as it is, keys as UTF-8 userIds."""
    topic = topic_names(settings).trades
    serializer = AvroSerializer(
        registry(settings),
        schema_file.read_text(),
        # No registration: the serializer must find the subject the engine registered under the
        # topic's name (TopicNameStrategy), suffix included.
        conf={"auto.register.schemas": False, "use.latest.version": True},
    )
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "acks": "all"})
    context = SerializationContext(topic, MessageField.VALUE)
    for trade in trades:
        producer.produce(topic, key=trade["userId"].encode(), value=serializer(trade, context))
    assert producer.flush(30) == 0


def consume_with_confluent(settings: Settings, topic: str, count: int, wait_s: float = 90.0) -> list[Any]:
    """Confluent's consumer and deserializer (writer schemas fetched by id) from the beginning."""
    deserializer = AvroDeserializer(registry(settings))
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"interop-{topic}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    records: list[Any] = []
    try:
        deadline = time.monotonic() + wait_s
        while len(records) < count:
            assert time.monotonic() < deadline, f"{len(records)} of {count} records from {topic}"
            message = consumer.poll(1.0)
            if message is None or message.error():
                continue
            key = message.key()
            value = deserializer(message.value(), SerializationContext(topic, MessageField.VALUE))
            records.append((key.decode() if key is not None else None, value))
    finally:
        consumer.close()
    return records


@pytest.fixture
async def worker(settings, unique, tmp_path):
    own = isolated(settings, unique)
    process = WorkerProcess(own, tmp_path / "data")
    async with running([process]):
        yield own


async def test_standard_clients_produce_and_consume_with_the_exported_contracts(worker, tmp_path, capsys):
    settings: Settings = worker
    names = topic_names(settings)
    client = registry(settings)
    # The worker registered every contract under the suffixed topics' subjects.
    subjects = set(client.get_subjects())
    assert f"{names.trades}-value" in subjects and f"{names.alerts}-value" in subjects
    assert client.get_compatibility(f"{names.trades}-value") == "FULL_TRANSITIVE"
    assert client.get_compatibility(f"{names.alerts}-value") == "BACKWARD"

    export_schemas(argparse.Namespace(dir=tmp_path / "avsc"), settings)
    index = json.loads((tmp_path / "avsc" / "subjects.json").read_text())
    assert index["riskengine.CryptoTrade.avsc"]["subject"] == f"{names.trades}-value"

    from riskengine.contracts.avro_codec import SchemaCatalog

    catalog = SchemaCatalog.for_settings(settings)
    await catalog.register(["UserProfile"])
    await publish_sample_profiles(settings, catalog)
    trades = [t.to_record() for t in sample_trades()]
    await asyncio.to_thread(
        produce_with_confluent, settings, tmp_path / "avsc" / "riskengine.CryptoTrade.avsc", trades
    )

    analyzed = await asyncio.to_thread(consume_with_confluent, settings, names.analyzed_trades, len(trades))
    assert {value["originalTrade"]["tradeId"] for _key, value in analyzed} == {t["tradeId"] for t in trades}
    assert all(key == value["originalTrade"]["userId"] for key, value in analyzed)  # keys: UTF-8 userIds
    alerts = await asyncio.to_thread(consume_with_confluent, settings, names.alerts, 1)
    assert alerts[0][1]["alertId"] and alerts[0][1]["patternType"]

    # riskengine tail: the same records, decoded, as JSON lines.
    capsys.readouterr()
    environment = {"RISKENGINE_WORKER_TOPIC_SUFFIX": settings.worker_topic_suffix}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            patch.setenv(name, value)
        code = await asyncio.to_thread(
            main, ["tail", "risk-analyzed-trades", "--from-beginning", "--max", "3", "--idle", "20"]
        )
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 3
    assert all(line["topic"] == names.analyzed_trades for line in lines)
    assert {line["value"]["originalTrade"]["tradeId"] for line in lines} <= {t["tradeId"] for t in trades}


async def test_input_subjects_refuse_a_schema_that_drops_a_required_field(worker, tmp_path):
    settings: Settings = worker
    subject = f"{topic_names(settings).trades}-value"
    export_schemas(argparse.Namespace(dir=tmp_path), settings)
    contract = json.loads((tmp_path / "riskengine.CryptoTrade.avsc").read_text())
    client = registry(settings)
    without_customer = {**contract, "fields": [f for f in contract["fields"] if f["name"] != "customerId"]}
    with pytest.raises(SchemaRegistryError) as refused:
        client.register_schema(subject, Schema(json.dumps(without_customer), "AVRO"))
    assert refused.value.http_status_code == 409
    # An optional field with a default is the compatible way to evolve an input.
    with_venue = {
        **contract,
        "fields": [*contract["fields"], {"name": "venueNote", "type": ["null", "string"], "default": None}],
    }
    assert client.register_schema(subject, Schema(json.dumps(with_venue), "AVRO")) > 0


async def test_the_session_cleanup_removes_a_tests_topics_and_subjects(settings, unique):
    topic = f"cleanup-{unique}"
    await produce(settings, topic, [(b"k", b"v")])
    client = registry(settings)
    client.register_schema(f"{topic}-value", Schema(json.dumps({"type": "string"}), "AVRO"))
    topics, subjects = await remove_leftovers(settings, [unique])
    assert topic in topics and f"{topic}-value" in subjects
    assert f"{topic}-value" not in client.get_subjects()
