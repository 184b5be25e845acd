"""The worker's fetch of a schema id it has not seen, on a fake registry: an outage is retried and
not remembered; only a 404 is, for a while (riskengine.contracts.avro_codec.fetch_schema)."""

from __future__ import annotations

import copy
from typing import Any, cast

import pytest

from riskengine.contracts import avro_codec
from riskengine.contracts.avro_codec import RegistryUnavailable, SchemaNotFound, UnknownSchemaId
from riskengine.contracts.schema_files import expanded_schema
from riskengine.contracts.topics import RECORD_TOPICS
from riskengine.settings import Settings
from riskengine.worker.agents.user_agent import UserAnalysis
from riskengine.worker.commit import Batch, DeliveryProgress
from riskengine.worker.context import WorkerContext
from riskengine.worker.tables.user_state import TRADES
from tests.unit.core.builders import T0, trade
from tests.unit.worker.test_user_agent import Inputs
from tests.unit.worker.worker_fakes import FakeEvent, FakeMessage, FakeStore, FakeStream, Journal

NEW_ID = 999


def newer_trade_schema() -> dict[str, Any]:
    """CryptoTrade as a later producer release writes it (one optional field more)."""
    schema = copy.deepcopy(expanded_schema("CryptoTrade"))
    schema["fields"].append({"name": "venueRegion", "type": ["null", "string"], "default": None})
    return schema


class FakeRegistry:
    """The catalog's ``fetch`` against a registry scripted as 'down', 'missing' or 'up', one per call."""

    def __init__(self, catalog: avro_codec.SchemaCatalog, *script: str) -> None:
        self.catalog = catalog
        self.script = list(script)
        self.calls = 0

    async def fetch(self, schema_id: int) -> None:
        self.calls += 1
        state = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if state == "down":
            raise RegistryUnavailable(f"schema registry unreachable while fetching id {schema_id}")
        if state == "missing":
            raise SchemaNotFound(schema_id, "the schema registry has no schema with this id (HTTP 404)")
        self.catalog.add(schema_id, newer_trade_schema())


def an_analysis(*script: str) -> tuple[UserAnalysis, FakeRegistry]:
    context = WorkerContext.from_settings(Settings.from_env({}))
    for schema_id, name in enumerate(RECORD_TOPICS, start=1):
        context.catalog.add(schema_id, expanded_schema(name), writes=name)
    registry = FakeRegistry(context.catalog, *script)
    context.catalog.fetch = registry.fetch  # type: ignore[method-assign]
    analysis = UserAnalysis(context, cast(Any, None), DeliveryProgress(), cast(Any, None))
    return analysis, registry


def written_by_a_newer_producer(offset: int) -> FakeMessage:
    record = trade(offset, user="u-1").to_record() | {"venueRegion": "eu"}
    cache = avro_codec.SchemaCache()
    cache.add(NEW_ID, newer_trade_schema(), writes="CryptoTrade")
    return FakeMessage("crypto-trades", 0, offset, b"u-1", cache.encode("CryptoTrade", record))


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    monkeypatch.setattr(avro_codec, "FETCH_RETRY_DELAYS_S", (0.0, 0.0, 0.0))


async def test_a_brief_registry_outage_is_retried_within_one_event():
    analysis, registry = an_analysis("down", "down", "up")
    item = await analysis._decode(written_by_a_newer_producer(0), TRADES, T0 + 60_000)
    assert item.user_id == "u-1" and registry.calls == 3


async def test_an_outage_longer_than_the_retries_does_not_poison_the_schema_id():
    analysis, registry = an_analysis("down", "down", "down", "down", "up")
    with pytest.raises(UnknownSchemaId, match=r"RegistryUnavailable.*4 attempts"):
        await analysis._decode(written_by_a_newer_producer(0), TRADES, T0 + 60_000)
    # The registry is back: the next event with that schema id decodes (it used to be dead-lettered
    # until the worker restarted).
    item = await analysis._decode(written_by_a_newer_producer(1), TRADES, T0 + 60_000)
    assert item.user_id == "u-1" and registry.calls == 5


async def test_a_registry_error_is_not_remembered_either():
    analysis, registry = an_analysis("up")

    async def refused(schema_id: int) -> None:
        registry.calls += 1
        raise avro_codec.RegistryError(f"schema registry refused fetching id {schema_id} (HTTP 401)")

    analysis.catalog.fetch = refused  # type: ignore[method-assign]
    with pytest.raises(UnknownSchemaId, match="401"):
        await analysis._decode(written_by_a_newer_producer(0), TRADES, T0 + 60_000)
    analysis.catalog.fetch = FakeRegistry(analysis.catalog, "up").fetch  # type: ignore[method-assign]
    assert (await analysis._decode(written_by_a_newer_producer(1), TRADES, T0 + 60_000)).user_id == "u-1"


async def test_only_a_not_found_is_remembered_and_only_for_a_while():
    now = [0.0]
    analysis, registry = an_analysis("missing", "up")
    analysis._unknown_ids = avro_codec.NotFoundIds(clock=lambda: now[0])
    with pytest.raises(UnknownSchemaId, match="HTTP 404"):
        await analysis._decode(written_by_a_newer_producer(0), TRADES, T0 + 60_000)
    with pytest.raises(UnknownSchemaId, match="moments ago"):
        await analysis._decode(written_by_a_newer_producer(1), TRADES, T0 + 60_000)
    assert registry.calls == 1
    now[0] += avro_codec.NOT_FOUND_TTL_S
    # Registered since: found once the 404 is forgotten.
    assert (await analysis._decode(written_by_a_newer_producer(2), TRADES, T0 + 60_000)).user_id == "u-1"
    assert registry.calls == 2


def test_the_worker_remembers_not_found_ids_in_a_bounded_expiring_set():
    analysis, _registry = an_analysis("up")
    assert isinstance(analysis._unknown_ids, avro_codec.NotFoundIds)
    assert analysis._unknown_ids.capacity == avro_codec.NOT_FOUND_CAPACITY


@pytest.mark.parametrize(("registry_says", "dead_letters"), [("up", 0), ("missing", 2)])
async def test_a_batch_fetches_the_schema_of_an_event_no_schema_known_here_decodes(
    registry_says: str, dead_letters: int
) -> None:
    # Most events decode without a coroutine of their own; one written with an unknown schema
    # must still make the batch fetch it (once), or become a dead letter when it does not exist.
    analysis, registry = an_analysis(registry_says)
    analysis.user_state = FakeStore(Journal(), {0})
    analysis.inputs = Inputs()
    # No market agent here: every market partition is past any trade (no context is awaited).
    analysis.reference.markets.progress.update({partition: 2**62 for partition in range(6)})
    stream = FakeStream(Journal())
    batch = Batch(events=[(FakeEvent(written_by_a_newer_producer(n)), stream) for n in range(2)])
    await analysis.analyze(batch)
    topics = [record[0] for record in batch.outputs]
    names = analysis.names
    assert topics.count(names.trades_dlq) == dead_letters
    assert topics.count(names.analyzed_trades) == 2 - dead_letters
    # Found: fetched once for both; missing: remembered after the first 404.
    assert registry.calls == 1
