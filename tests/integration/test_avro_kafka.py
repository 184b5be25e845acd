"""Avro through the real registry and the real broker: round trip, evolution, bad input."""

import asyncio
import copy
import dataclasses
import os
import struct
from typing import Any

import pytest

from riskengine.contracts.avro_codec import (
    DecodeError,
    InvalidRecord,
    MalformedFrame,
    RegistryError,
    SchemaCatalog,
    UnknownSchemaId,
    registry_client,
)
from riskengine.contracts.schema_files import expanded_schema
from riskengine.contracts.topics import (
    RECORD_TOPICS,
    TOPICS,
    TopicLayoutError,
    TopicSpec,
    compatibility,
    ensure_topics,
    topic_specs,
    value_subject,
)
from riskengine.core import Trade

from .kafka_io import consume, end_offsets, produce


def trade(n: int, **changes):
    return {
        "tradeId": f"t-{n}",
        "userId": f"u-{n % 3}",
        "customerId": f"c-{n % 3}",
        "symbol": "ETH/USDT",
        "side": "SELL" if n % 2 else "BUY",
        "quantity": 1.0 + n,
        "price": 3000.0,
        "notional": 3000.0 * (1.0 + n),
        "timestamp": 1_764_000_000_000 + n,
        "exchange": "KRAKEN",
        "orderType": "LIMIT",
        "riskLevel": None,
        "counterpartyUserId": None,
        "orderId": None,
        **changes,
    }


async def test_topics_are_created_with_the_configured_layout(settings, unique):
    names = (f"layout-{unique}",)
    spec = topic_specs(settings, names)
    assert await ensure_topics(settings, spec) == {names[0]: "created"}
    assert await ensure_topics(settings, spec) == {names[0]: "exists"}
    assert len(await end_offsets(settings, names[0])) == settings.topic_partitions
    with pytest.raises(TopicLayoutError, match="expected 3"):
        await ensure_topics(settings, [TopicSpec(names[0], 3, 1, {})])


async def test_engine_topics_and_subjects_exist_after_setup(settings):
    await ensure_topics(settings, topic_specs(settings))
    ids = await SchemaCatalog(registry_client(settings)).register()
    assert set(ids) == set(RECORD_TOPICS)
    subjects = await registry_client(settings).get_subjects()
    assert {value_subject(t) for t in RECORD_TOPICS.values()} <= set(subjects)
    assert len(await end_offsets(settings, TOPICS.trades)) == settings.topic_partitions


async def test_workers_starting_together_on_new_subjects_all_register(settings, unique):
    # Three catalogs setting the same new subjects' compatibility at once: the registry refused all
    # but one ("Unable to update level") in 10 of 10 tries, and a worker's start-up failed on it.
    fresh = dataclasses.replace(settings, worker_topic_suffix=f"-together-{unique}")
    catalogs = [SchemaCatalog.for_settings(fresh) for _ in range(3)]
    ids = await asyncio.gather(*(catalog.register() for catalog in catalogs))
    assert ids[0] == ids[1] == ids[2]
    client = registry_client(fresh)
    for name, subject in catalogs[0].subjects.items():
        assert await client.get_compatibility(subject) == compatibility(name)


async def test_avro_round_trip_through_kafka_with_the_registry(settings, unique):
    topic = f"roundtrip-{unique}"
    await ensure_topics(settings, topic_specs(settings, (topic,)))
    writer = SchemaCatalog(registry_client(settings))
    await writer.register(["CryptoTrade"])
    sent = [trade(n) for n in range(20)]
    await produce(settings, topic, [(t["userId"].encode(), writer.encode("CryptoTrade", t)) for t in sent])

    # A separate process's view: nothing shared with the writer but the registry.
    reader = SchemaCatalog(registry_client(settings))
    assert await reader.warm([value_subject(TOPICS.trades)]) >= 1
    records = await consume(settings, topic, len(sent))
    assert sorted(
        (reader.decode(r.value, "CryptoTrade") for r in records), key=lambda t: t["tradeId"]
    ) == sorted(sent, key=lambda t: t["tradeId"])
    assert struct.unpack(">bI", records[0].value[:5]) == (0, writer.writer_id("CryptoTrade"))


def _v2(schema: dict[str, Any]) -> dict[str, Any]:
    evolved = copy.deepcopy(schema)
    evolved["fields"].append({"name": "venueRegion", "type": ["null", "string"], "default": None})
    return evolved


async def test_schema_evolution_both_directions_and_an_incompatible_change_is_rejected(settings, unique):
    topic = f"evolution-{unique}"
    subject = value_subject(topic)
    await ensure_topics(settings, topic_specs(settings, (topic,)))
    client = registry_client(settings)
    await client.update_compatibility("BACKWARD", subject)
    assert (await client.get_compatibility(subject)) == "BACKWARD"
    v1, v2 = expanded_schema("CryptoTrade"), _v2(expanded_schema("CryptoTrade"))
    v1_id = await client.register(subject, v1)
    v2_id = await client.register(subject, v2)
    assert v1_id != v2_id

    old, new = SchemaCatalog(registry_client(settings)), SchemaCatalog(registry_client(settings))
    old.add(v1_id, v1, writes="CryptoTrade")
    new.add(v2_id, v2, writes="CryptoTrade")
    await produce(
        settings,
        topic,
        [
            (b"u", old.encode("CryptoTrade", trade(1))),
            (b"u", new.encode("CryptoTrade", {**trade(2), "venueRegion": "EU"})),
        ],
    )
    records = await consume(settings, topic, 2)
    for reader in (old, new):
        # Each reader learns the other version's schema by id from the registry, as a worker would.
        await reader.warm([subject])
    by_id = {r.value: r for r in records}
    payload_v1 = next(v for v in by_id if struct.unpack(">I", v[1:5])[0] == v1_id)
    payload_v2 = next(v for v in by_id if struct.unpack(">I", v[1:5])[0] == v2_id)
    assert new.decode(payload_v1, "CryptoTrade") == {**trade(1), "venueRegion": None}
    assert old.decode(payload_v2, "CryptoTrade") == trade(2)

    incompatible = copy.deepcopy(v2)
    incompatible["fields"].append({"name": "mandatoryWithoutDefault", "type": "string"})
    catalog = SchemaCatalog(client)
    with pytest.raises(RegistryError, match="Incompatible"):
        await catalog.register_schema(subject, incompatible)


async def test_malformed_messages_on_the_trades_topic_give_typed_errors_and_never_stop_the_consumer(
    settings, unique
):
    await ensure_topics(settings, topic_specs(settings, (TOPICS.trades,)))
    catalog = SchemaCatalog(registry_client(settings))
    await catalog.register(["CryptoTrade"])
    wider = copy.deepcopy(expanded_schema("CryptoTrade"))
    next(f for f in wider["fields"] if f["name"] == "side")["type"]["symbols"].append("HOLD")
    # A producer on a schema the engine does not accept, registered under its own subject.
    rogue = SchemaCatalog(registry_client(settings))
    rogue.add(
        await rogue.register_schema(value_subject(f"rogue-{unique}"), wider), wider, writes="CryptoTrade"
    )

    good = [trade(n, tradeId=f"good-{unique}-{n}") for n in range(3)]
    messages = [
        catalog.encode("CryptoTrade", good[0]),
        b"\x7f" + os.urandom(63),  # random bytes (the first one is never the magic byte)
        b"\x00" + struct.pack(">I", 2_000_000_000) + b"\x02x",
        catalog.encode("CryptoTrade", good[1]),
        catalog.encode("CryptoTrade", trade(9, quantity=-5.0, notional=-15000.0)),
        rogue.encode("CryptoTrade", trade(10, side="HOLD")),
        catalog.encode("CryptoTrade", good[2]),
    ]
    start = await end_offsets(settings, TOPICS.trades)
    await produce(settings, TOPICS.trades, [(f"key-{unique}".encode(), m) for m in messages])
    records = sorted(await consume(settings, TOPICS.trades, len(messages), start), key=lambda r: r.offset)
    assert len(records) == len(messages)

    outcomes: list[Trade | DecodeError] = []
    for record in records:
        try:
            try:
                outcomes.append(catalog.decode_trade(record.value))
            except UnknownSchemaId as exc:
                await catalog.fetch(exc.schema_id)  # a real worker's async path for new writers
                outcomes.append(catalog.decode_trade(record.value))
        except DecodeError as exc:
            outcomes.append(exc)

    assert [o.trade_id for o in outcomes if not isinstance(o, DecodeError)] == [t["tradeId"] for t in good]
    errors = [o for o in outcomes if isinstance(o, DecodeError)]
    assert isinstance(errors[0], MalformedFrame) and "magic byte" in str(errors[0])
    assert isinstance(errors[1], UnknownSchemaId) and "2000000000" in str(errors[1])
    assert isinstance(errors[2], InvalidRecord) and errors[2].field == "quantity"
    assert isinstance(errors[3], InvalidRecord) and errors[3].field == "side" and "HOLD" in str(errors[3])
