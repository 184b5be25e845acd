"""The trade agent's analysis with the commit protocol and the pipeline, on in-process fakes.

The real detection core, the real Avro codec (a schema catalog filled without a registry) and the
real envelope format; only the broker, the store and the stream are fakes.
"""

from __future__ import annotations

import asyncio
import struct
import time

import pytest

from riskengine.contracts.avro_codec import RegistryError, SchemaCatalog
from riskengine.contracts.schema_files import expanded_schema
from riskengine.contracts.topics import RECORD_TOPICS
from riskengine.core import Trade
from riskengine.settings import Settings
from riskengine.worker.agents.trade_analysis import TradeAnalysis
from riskengine.worker.commit import Batch, CommitProtocol, DeliveryFailed, DeliveryProgress
from riskengine.worker.context import WorkerContext
from riskengine.worker.metrics import Metrics
from riskengine.worker.pipeline import BatchPipeline
from riskengine.worker.tables.user_state import decode_envelope
from tests.unit.core.builders import MINUTE, SECOND, trade
from tests.unit.worker.worker_fakes import (
    FakeEvent,
    FakeMessage,
    FakeProducer,
    FakeStore,
    FakeStream,
    Journal,
)

CHANGELOG = "riskengine-user-state-changelog"


def worker_context() -> WorkerContext:
    """A worker context whose schema catalog holds every contract under ids 1, 2, ... (no registry)."""
    context = WorkerContext.from_settings(Settings.from_env({}))
    for schema_id, name in enumerate(RECORD_TOPICS, start=1):
        context.catalog.add(schema_id, expanded_schema(name), writes=name)
    return context


def wash_trades(user: str, start: int = 0) -> list[Trade]:
    """BUY 1000 -> SELL 950 -> BUY 1050 within a minute, then two quiet trades: a WASH_TRADING alert."""
    return [
        trade(start, "BUY", 1_000, quantity=1_000, user=user),
        trade(start + 10 * SECOND, "SELL", 950, quantity=950, user=user),
        trade(start + 20 * SECOND, "BUY", 1_050, quantity=1_050, user=user),
        trade(start + 5 * MINUTE, "BUY", 500, quantity=500, user=user),
        trade(start + 6 * MINUTE, "SELL", 20, quantity=20, user=user),
    ]


def trade_events(catalog: SchemaCatalog, trades: list[tuple[int, Trade]]) -> list[FakeEvent]:
    """Wire-format events of (partition, trade), offsets counting per partition."""
    offsets: dict[int, int] = {}
    made = []
    for partition, t in trades:
        offset = offsets.get(partition, 0)
        offsets[partition] = offset + 1
        value = catalog.encode("CryptoTrade", t.to_record())
        made.append(FakeEvent(FakeMessage("crypto-trades", partition, offset, t.user_id.encode(), value)))
    return made


def outputs_of(producer: FakeProducer, attempted: bool = False) -> list[tuple[str, int, bytes | None, bytes]]:
    """The analyzed trades, alerts and dead letters sent (or only attempted), sorted."""
    records = producer.attempted if attempted else [r for t in OUTPUT_TOPICS for r in producer.records(t)]
    return sorted((t, p, k, v) for t, p, k, v, _h in records if t in OUTPUT_TOPICS)


OUTPUT_TOPICS = ("risk-analyzed-trades", "risk-alerts", "crypto-trades-dlq")


class Worker:
    """One incarnation of a worker: its analysis and commit protocol over a store and a broker."""

    def __init__(self, store: FakeStore, producer: FakeProducer) -> None:
        self.context = worker_context()
        self.store = store
        self.producer = producer
        self.progress = DeliveryProgress()
        self.analysis = TradeAnalysis(self.context, store, self.progress)
        self.commit = CommitProtocol(store, producer, CHANGELOG, self.progress)

    async def process(self, taken: list[FakeEvent], stream: FakeStream) -> Batch:
        batch = Batch(events=[(event, stream) for event in taken])
        await self.analysis.analyze(batch)
        await self.commit.persist(batch)
        await self.commit.publish(batch)
        return batch


def input_trades() -> list[tuple[int, Trade]]:
    trades = [(0, t) for t in wash_trades("u-1")] + [(1, t) for t in wash_trades("u-2")]
    trades.sort(key=lambda pair: pair[1].timestamp)
    return trades


async def test_redelivery_after_an_output_failure_sends_byte_identical_outputs(monkeypatch):
    journal = Journal()
    first = Worker(FakeStore(journal, {0, 1}, CHANGELOG), FakeProducer(journal))
    taken = trade_events(first.context.catalog, input_trades())
    first.producer.failing.update(OUTPUT_TOPICS)
    stream = FakeStream(journal)
    with pytest.raises(DeliveryFailed):
        await first.process(taken, stream)
    assert stream.acked == []
    tried = outputs_of(first.producer, attempted=True)
    assert any(t == "risk-alerts" for t, *_rest in tried)  # the wash trades raised alerts

    # The worker died. Its successor restores the table from the changelog and re-reads the trades a
    # second later: processing them anew would stamp another processedAt.
    later = time.time() + 1.0
    monkeypatch.setattr(time, "time", lambda: later)
    restored = FakeStore(journal, {0, 1}, CHANGELOG)
    for (partition, key), value in first.producer.latest_values(CHANGELOG).items():
        restored.values.setdefault(partition, {})[key] = value
    second = Worker(restored, FakeProducer(journal))
    again = FakeStream(journal)
    await second.process(taken, again)

    assert outputs_of(second.producer) == tried
    assert second.context.metrics.redelivered == len(taken)
    assert len(again.acked) == len(taken)


async def test_redelivery_after_a_changelog_failure_resends_what_the_local_store_holds(monkeypatch):
    journal = Journal()
    store = FakeStore(journal, {0, 1}, CHANGELOG)
    first = Worker(store, FakeProducer(journal))
    taken = trade_events(first.context.catalog, input_trades())
    first.producer.failing.add(CHANGELOG)
    with pytest.raises(DeliveryFailed, match="step 2"):
        await first.process(taken, FakeStream(journal))
    assert outputs_of(first.producer, attempted=True) == []  # nothing left the worker but step 1
    pending = sorted(
        output
        for values in store.values.values()
        for value in values.values()
        for entry in decode_envelope(value).pending
        for _kind, output in entry.outputs
    )

    # The same worker restarts on its datadir: the store is ahead of the changelog.
    later = time.time() + 1.0
    monkeypatch.setattr(time, "time", lambda: later)
    second = Worker(store, FakeProducer(journal))
    await second.process(taken, FakeStream(journal))

    assert sorted(v for _t, _p, _k, v in outputs_of(second.producer)) == pending
    assert second.producer.latest_values(CHANGELOG) == {
        (p, k): v for p, values in store.values.items() for k, v in values.items()
    }


async def test_a_dead_letter_raised_after_an_await_stays_with_its_event():
    journal = Journal()
    worker = Worker(FakeStore(journal, {0}, CHANGELOG), FakeProducer(journal))
    catalog = worker.context.catalog
    trades = wash_trades("u-1")
    good = trade_events(catalog, [(0, t) for t in trades])
    # The second trade was written with a schema id nobody knows: the worker asks the registry.
    unknown = good[1].message
    body = unknown.value[5:] if unknown.value else b""
    stranger = FakeEvent(
        FakeMessage(unknown.topic, 0, unknown.offset, unknown.key, b"\x00" + struct.pack(">I", 999) + body)
    )
    first_batch = [good[0], stranger, good[2]]
    later_events = good[3:]
    stream = FakeStream(journal)
    failures: list[BaseException] = []

    async def on_failure(exc: BaseException) -> None:
        failures.append(exc)

    batches: list[Batch] = []

    async def analyze(batch: Batch) -> None:
        await worker.analysis.analyze(batch)
        batches.append(batch)

    pipeline = BatchPipeline(worker.commit, analyze, on_failure, Metrics())

    async def slow_registry(schema_id: int) -> None:
        # While the worker waits for the registry, more trades arrive.
        for event in later_events:
            pipeline.add(event, stream, more_waiting=False)
        await asyncio.sleep(0.02)
        raise RegistryError(f"registry unreachable while fetching id {schema_id}")

    catalog.fetch = slow_registry  # type: ignore[method-assign]
    pipeline.start()
    for event in first_batch:
        pipeline.add(event, stream, more_waiting=event is not first_batch[-1])
    for _ in range(200):
        if len(stream.acked) == len(good):
            break
        await asyncio.sleep(0.01)
    await pipeline.stop()

    assert failures == []
    assert stream.acked == [(0, offset) for offset in range(len(good))]
    dead = worker.producer.records("crypto-trades-dlq")
    assert len(dead) == 1
    headers = dict(dead[0][4])
    assert headers["reason"] == b"unknown-schema-id"
    assert headers["source-offset"] == str(stranger.message.offset).encode()
    assert b"registry unreachable" in headers["detail"]
    # The dead letter is acknowledged before its event is acked, and it sits in its own batch at its
    # event's place; the trades that arrived during the wait went to a later batch.
    assert journal.first("acked", "crypto-trades-dlq") < journal.first("ack", (0, stranger.message.offset))
    assert [e.message.offset for e, _s in batches[0].events] == [0, 1, 2]
    assert [r[0] for r in batches[0].outputs if r[0] != "risk-alerts"] == [
        "risk-analyzed-trades",
        "crypto-trades-dlq",
        "risk-analyzed-trades",
    ]
    assert all(e.message.offset >= 3 for batch in batches[1:] for e, _s in batch.events)


async def test_an_analysis_failure_stops_the_pipeline_and_acks_nothing():
    journal = Journal()
    worker = Worker(FakeStore(journal, {0}, CHANGELOG), FakeProducer(journal))
    stream = FakeStream(journal)
    failures: list[BaseException] = []

    async def broken(batch: Batch) -> None:
        raise OSError("state store unreadable")

    async def on_failure(exc: BaseException) -> None:
        failures.append(exc)

    pipeline = BatchPipeline(worker.commit, broken, on_failure, Metrics())
    pipeline.start()
    for event in trade_events(worker.context.catalog, [(0, t) for t in wash_trades("u-1")]):
        pipeline.add(event, stream, more_waiting=False)
    for _ in range(100):
        if failures:
            break
        await asyncio.sleep(0.01)
    await pipeline.stop()

    assert [type(f) for f in failures] == [OSError]
    assert stream.acked == [] and worker.producer.attempted == []
