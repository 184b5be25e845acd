"""The per-user agent's analysis with the commit protocol and the pipeline, on in-process fakes.

The real detection core, the real Avro codec (a schema catalog filled without a registry) and the
real envelope format; only the broker, the store, the stream and the consumer positions are fakes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import struct
import time
from collections.abc import Sequence
from types import SimpleNamespace

import pytest
from faust.types import TP

from riskengine.contracts.avro_codec import RegistryError, SchemaCatalog
from riskengine.core import (
    DEFAULT_RULES,
    EMPTY_REFERENCE,
    Evaluation,
    OrderEvent,
    ReferenceData,
    Rules,
    Trade,
    UserState,
    decode_state,
    encode_state,
    evaluate_trade,
)
from riskengine.core.event_order import merge_in_event_time
from riskengine.core.market import MarketContext
from riskengine.settings import Settings
from riskengine.worker.agents import user_agent
from riskengine.worker.agents.user_agent import InputPositions, UserAnalysis
from riskengine.worker.commit import Batch, CommitProtocol, DeliveryFailed, DeliveryProgress, Fence
from riskengine.worker.context import WorkerContext
from riskengine.worker.faust_compat import TransportApp, stop_fetching
from riskengine.worker.metrics import Metrics
from riskengine.worker.pipeline import BatchPipeline
from riskengine.worker.repartition import CLOCK_KEY, IDLE_AFTER_S, Marker, unframe
from riskengine.worker.repartition import decode as decode_repartitioned
from riskengine.worker.tables.user_state import ALERT, ANALYZED, JOURNAL_KEY, UserStateTable, decode_envelope
from riskengine_devtools import bench_analysis
from tests.unit.core.builders import MINUTE, SECOND, order, run_flow, trade
from tests.unit.worker.worker_fakes import (
    FakeEvent,
    FakeMessage,
    FakeProducer,
    FakeStore,
    FakeStream,
    Journal,
    paused_partitions,
    unconnected_fetcher,
)

CHANGELOG = "riskengine-user-state-changelog"
OUTPUT_TOPICS = ("risk-analyzed-trades", "risk-alerts", "crypto-trades-dlq", "crypto-orders-dlq")


def worker_context(checkpoint_interval: float | None = None) -> WorkerContext:
    """A worker context whose schema catalog holds every contract under ids 1, 2, ... (no registry);
    ``checkpoint_interval``: the setting's value (None: its default)."""
    environ = (
        {}
        if checkpoint_interval is None
        else {"RISKENGINE_WORKER_CHECKPOINT_INTERVAL": str(checkpoint_interval)}
    )
    # No market agent here: every market partition is past any trade (no context is awaited).
    return bench_analysis.worker_context(Settings.from_env(environ), [])


def wash_trades(user: str, start: int = 0) -> list[Trade]:
    """BUY 1000 -> SELL 950 -> BUY 1050 within a minute, then two quiet trades: a WASH_TRADING alert."""
    return [
        trade(start, "BUY", 1_000, quantity=1_000, user=user),
        trade(start + 10 * SECOND, "SELL", 950, quantity=950, user=user),
        trade(start + 20 * SECOND, "BUY", 1_050, quantity=1_050, user=user),
        trade(start + 5 * MINUTE, "BUY", 500, quantity=500, user=user),
        trade(start + 6 * MINUTE, "SELL", 20, quantity=20, user=user),
    ]


def spoof_flow(user: str) -> list[Trade | OrderEvent]:
    """Five filled orders of 100 with their trades, a SELL bait of 1,000, a BUY fill, the bait cancelled."""
    flow: list[Trade | OrderEvent] = []
    for i in range(5):
        at = i * 10 * SECOND
        flow += [
            order(at, "PLACED", f"{user}-h{i}", "BUY", 100, user=user),
            order(at, "FILLED", f"{user}-h{i}", "BUY", 100, user=user),
            trade(at, "BUY", 100, quantity=100, user=user),
        ]
    flow.append(order(60 * SECOND, "PLACED", f"{user}-bait", "SELL", 1_000, price=1.02, user=user))
    flow.append(trade(65 * SECOND, "BUY", 100, quantity=100, user=user))
    flow.append(order(80 * SECOND, "CANCELLED", f"{user}-bait", "SELL", 1_000, price=1.02, user=user))
    return flow


def events_of(catalog: SchemaCatalog, items: Sequence[tuple[int, Trade | OrderEvent]]) -> list[FakeEvent]:
    """Wire-format events of (partition, trade or order event), offsets counting per topic partition."""
    offsets: dict[tuple[str, int], int] = {}
    made = []
    for partition, item in items:
        topic, name = (
            ("crypto-trades", "CryptoTrade") if isinstance(item, Trade) else ("crypto-orders", "OrderEvent")
        )
        offset = offsets.get((topic, partition), 0)
        offsets[(topic, partition)] = offset + 1
        value = catalog.encode(name, item.to_record())
        made.append(FakeEvent(FakeMessage(topic, partition, offset, item.user_id.encode(), value)))
    return made


def trade_events(catalog: SchemaCatalog, trades: list[tuple[int, Trade]]) -> list[FakeEvent]:
    return events_of(catalog, list(trades))


def outputs_of(producer: FakeProducer, attempted: bool = False) -> list[tuple[str, int, bytes | None, bytes]]:
    """The analyzed trades, alerts and dead letters sent (or only attempted), sorted."""
    records = producer.attempted if attempted else [r for t in OUTPUT_TOPICS for r in producer.records(t)]
    return sorted((t, p, k, v) for t, p, k, v, _h in records if t in OUTPUT_TOPICS)


class Inputs:
    """Input positions under the test's control: every partition caught up unless listed."""

    def __init__(self) -> None:
        #: (topic, partition) -> events waiting on the broker (None: not known)
        self.behind: dict[tuple[str, int], int | None] = {}

    def lag(self, topic: str, partition: int, since_ms: int) -> int | None:
        return self.behind.get((topic, partition), 0)

    def fetched_ms(self, topic: str, partition: int) -> int | None:
        return None


class Worker:
    """One incarnation of a worker: its analysis and commit protocol over a store and a broker.

    ``checkpoint_interval`` 0 (unless given): every batch writes its users' states and acks its
    events, so a test about anything else sees them after one batch.
    """

    def __init__(self, store: FakeStore, producer: FakeProducer, *, checkpoint_interval: float = 0.0) -> None:
        self.context = worker_context(checkpoint_interval)
        self.store = store
        self.producer = producer
        self.progress = DeliveryProgress()
        self.inputs = Inputs()
        self.analysis = UserAnalysis(self.context, store, self.progress, self.inputs)
        self.commit = CommitProtocol(store, producer, CHANGELOG, self.progress, Fence())

    async def process(self, taken: list[FakeEvent], stream: FakeStream) -> Batch:
        batch = Batch(events=[(event, stream) for event in taken])
        await self.analysis.analyze(batch)
        assert self.analysis.held() == {}
        await self.commit.persist(batch)
        await self.commit.publish(batch)
        return batch


def running_pipeline(worker: Worker) -> tuple[BatchPipeline, list[BaseException]]:
    """The worker's analysis and commit protocol in a started pipeline, and the failures it reports."""
    failures: list[BaseException] = []

    async def on_failure(exc: BaseException) -> None:
        failures.append(exc)

    pipeline = BatchPipeline(worker.commit, worker.analysis.analyze, on_failure, Metrics())
    pipeline.start()
    return pipeline, failures


async def acked(stream: FakeStream, count: int) -> None:
    """Wait (at most a second) until ``stream`` has ``count`` acks."""
    for _ in range(100):
        if len(stream.acked) >= count:
            return
        await asyncio.sleep(0.01)


def input_trades() -> list[tuple[int, Trade | OrderEvent]]:
    items: list[tuple[int, Trade | OrderEvent]] = [(0, t) for t in wash_trades("u-1")]
    items += [(1, t) for t in wash_trades("u-2")] + [(1, e) for e in spoof_flow("u-3")]
    items.sort(key=lambda pair: pair[1].timestamp)
    return items


async def test_redelivery_after_an_output_failure_sends_byte_identical_outputs(monkeypatch):
    journal = Journal()
    first = Worker(FakeStore(journal, {0, 1}, CHANGELOG), FakeProducer(journal))
    taken = events_of(first.context.catalog, input_trades())
    first.producer.failing.update(OUTPUT_TOPICS)
    stream = FakeStream(journal)
    with pytest.raises(DeliveryFailed):
        await first.process(taken, stream)
    assert stream.acked == []
    tried = outputs_of(first.producer, attempted=True)
    catalog = first.context.catalog
    alerts = {catalog.decode(v, "RiskAlert")["patternType"] for t, _p, _k, v in tried if t == "risk-alerts"}
    assert {"SPOOFING", "WASH_TRADING"} <= alerts  # order-flow and trade alerts alike

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


def where(message: FakeMessage) -> tuple[str, int, int]:
    return message.topic, message.partition, message.offset


def restored_from_changelog(journal: Journal, producer: FakeProducer, held: set[int]) -> FakeStore:
    """A successor's store: the table as Faust restores it from the changelog."""
    restored = FakeStore(journal, held, CHANGELOG)
    for (partition, key), value in producer.latest_values(CHANGELOG).items():
        restored.values.setdefault(partition, {})[key] = value
    return restored


def checkpointing_worker(monkeypatch) -> tuple[Journal, Worker, list[float], list[FakeEvent]]:
    """A worker whose busy users' states wait a second to be written, on a clock the test moves
    (``clock[0]``; 2033: after every test event, none is ahead of it), and the input events."""
    journal = Journal()
    worker = Worker(FakeStore(journal, {0, 1}, CHANGELOG), FakeProducer(journal), checkpoint_interval=1.0)
    clock = [2_000_000_000.0]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    return journal, worker, clock, events_of(worker.context.catalog, input_trades())


@pytest.mark.parametrize("reread", ["unacked", "all"])
async def test_a_crash_between_checkpoints_resends_the_journals_bytes_and_rebuilds_the_state(
    monkeypatch, reread
):
    journal, first, clock, taken = checkpointing_worker(monkeypatch)
    parts = [taken[:4], taken[4:10], taken[10:16], taken[16:]]
    stream = FakeStream(journal)
    batches = []
    start = clock[0]
    # The first batch writes its users (each one's first change); the second defers those it changes
    # again, which come due in the third; the last batch is within the interval again.
    for part, at in zip(parts[:-1], (0.0, 0.5, 1.6), strict=True):
        clock[0] = start + at
        batches.append(await first.process(part, stream))
    written = [{key for _p, key in batch.changelog} - {CLOCK_KEY} for batch in batches]
    assert JOURNAL_KEY not in written[0] and len(batches[0].to_ack()) == len(parts[0])
    assert JOURNAL_KEY in written[1] and len(batches[1].to_ack()) < len(parts[1])
    assert written[2] - {JOURNAL_KEY}
    first.producer.failing.update(OUTPUT_TOPICS)
    before = len(first.producer.attempted)
    clock[0] += 0.1
    with pytest.raises(DeliveryFailed):
        await first.process(parts[-1], stream)
    lost = sorted((t, p, k, v) for t, p, k, v, _h in first.producer.attempted[before:] if t in OUTPUT_TOPICS)
    assert any(t == "risk-analyzed-trades" for t, _p, _k, _v in lost)

    # The worker died. Its successor restores the table from the changelog (some users' envelopes,
    # the partitions' journals) and a second later re-reads the events after the committed offsets
    # (or all of them: Faust commits acked offsets only every few seconds). Whatever it sends must be
    # bytes the first one sent (same processedAt), and all of the last batch's outputs, never
    # acknowledged, must go out.
    clock[0] += 1.0
    second = Worker(restored_from_changelog(journal, first.producer, {0, 1}), FakeProducer(journal))
    acked = set(stream.events)
    rest = [event for event in taken if reread == "all" or event not in acked]
    assert 0 < len(rest) < len(taken) or reread == "all"
    again = FakeStream(journal)
    await second.process(rest, again)
    resent = outputs_of(second.producer)
    assert set(lost) <= set(resent) <= set(outputs_of(first.producer, attempted=True))
    assert second.context.metrics.redelivered == len(rest)
    assert sorted(again.acked) == sorted((e.message.partition, e.message.offset) for e in rest)
    assert late_for_the_market(second.producer, second.context.names.market_events) == []

    # The states are those of one uninterrupted run.
    one = Worker(FakeStore(journal, {0, 1}, CHANGELOG), FakeProducer(journal))
    await one.process(taken, FakeStream(journal))
    for user in (b"u-1", b"u-2", b"u-3"):
        partition = 0 if user == b"u-1" else 1
        assert (
            decode_envelope(second.store.values[partition][user]).state
            == decode_envelope(one.store.values[partition][user]).state
        )


async def test_a_batch_whose_journal_would_be_too_large_writes_the_states_instead(monkeypatch):
    journal, worker, clock, taken = checkpointing_worker(monkeypatch)
    await worker.process(taken[:4], FakeStream(journal))  # the users' first changes, written
    clock[0] += 0.1
    small = await worker.process(taken[4:6], FakeStream(journal))
    assert JOURNAL_KEY in {key for _p, key in small.changelog}
    # A backlog's batch: one partition's outputs over the bound (the broker's limit is 1 MiB).
    monkeypatch.setattr(user_agent, "MAX_JOURNAL_BYTES", 1_000)
    clock[0] += 0.1
    large = await worker.process(taken[6:], FakeStream(journal))
    written = {key for _p, key in large.changelog}
    assert JOURNAL_KEY not in written and {b"u-1", b"u-2", b"u-3"} <= written
    assert sorted(where(e.message) for e, _s in large.to_ack()) == sorted(where(e.message) for e in taken[4:])


def test_the_largest_journal_is_one_record_the_producer_and_the_broker_take():
    """A journal is one changelog record: with its key, headers and batch framing it must stay under
    the producer's max_request_size and the broker's message.max.bytes (1,048,588 by default)."""
    from aiokafka import AIOKafkaProducer

    producer_limit = inspect.signature(AIOKafkaProducer).parameters["max_request_size"].default
    framing = 64 * 1024
    assert user_agent.MAX_JOURNAL_BYTES + framing <= min(producer_limit, 1_048_588)


async def test_an_unreadable_journal_is_logged_and_scoring_goes_on(caplog):
    journal = Journal()
    store = FakeStore(journal, {0, 1}, CHANGELOG)
    store.values[0] = {JOURNAL_KEY: b"\xe3 truncated"}
    worker = Worker(store, FakeProducer(journal))
    taken = events_of(worker.context.catalog, input_trades())
    await worker.process(taken, FakeStream(journal))
    assert len(worker.producer.records("risk-analyzed-trades")) == sum(
        isinstance(i, Trade) for _p, i in input_trades()
    )
    assert worker.producer.records("crypto-trades-dlq") == []
    assert "output journal of partition 0 is unreadable" in caplog.text


def user_of(event: FakeEvent) -> bytes:
    assert event.message.key is not None
    return event.message.key


async def test_a_users_state_is_written_once_per_interval_and_its_events_acked_with_it(monkeypatch):
    journal, worker, clock, taken = checkpointing_worker(monkeypatch)
    stream = FakeStream(journal)
    users = {b"u-1", b"u-2", b"u-3"}
    first = await worker.process(taken[:4], stream)
    # Each user's first change is written at once, and its events acked.
    assert {user_of(e) for e in taken[:4]} == users <= {key for _p, key in first.changelog}
    assert len(first.to_ack()) == 4 and JOURNAL_KEY not in {key for _p, key in first.changelog}
    clock[0] += 0.5
    # Within the interval: the outputs go out with the partitions' journals, no state, no ack.
    second = await worker.process(taken[4:12], stream)
    assert second.to_ack() == [] and len(second.events) == 8 and second.outputs
    assert {key for _p, key in second.changelog} == {JOURNAL_KEY, CLOCK_KEY}
    # Let go at a rebalance, as held events are: they come again.
    assert sorted(map(where, worker.analysis.held_messages())) == sorted(
        where(e.message) for e in taken[4:12]
    )
    assert worker.analysis.live_value(b"u-1") is not None  # the views show the state as it is now
    clock[0] += 0.4
    third = await worker.process(taken[12:14], stream)
    assert third.to_ack() == []
    clock[0] += 0.6  # an interval after their first deferred change: written, their events acked
    fourth = await worker.process(taken[14:16], stream)
    assert users <= {key for _p, key in fourth.changelog}
    acked = [event for event, _s in fourth.to_ack()]
    assert set(taken[4:14]) <= set(acked)
    clock[0] += 0.1
    fifth = await worker.process(taken[16:18], stream)  # changed again within the interval
    unwritten = {user for user in users if worker.analysis.live_value(user) is not None}
    assert unwritten and fifth.to_ack() == []
    # A batch that applies nothing right after one that did is no sign of running out of events
    # (under load, a retry taken just after a batch): it writes no state that is not due.
    between = Batch()
    await worker.analysis.analyze(between)
    assert between.changelog == {} and between.to_ack() == []
    assert {user for user in users if worker.analysis.live_value(user) is not None} == unwritten
    # Out of events (nothing applied for a while): every changed user is written, every event acked.
    clock[0] += user_agent.RAN_OUT_AFTER_S
    last = Batch()
    await worker.analysis.analyze(last)
    assert worker.analysis.held_messages() == []
    assert all(worker.analysis.live_value(user) is None for user in users)
    batches = (first, second, third, fourth, fifth, between, last)
    every_ack = [event for batch in batches for event, _s in batch.to_ack()]
    assert sorted(where(e.message) for e in every_ack) == sorted(where(e.message) for e in taken[:18])
    # Every state written: the journals keep no outputs in memory (they would grow for ever).
    assert all(not kept.entries for kept in worker.analysis._journals.values())


async def test_the_pipeline_acks_events_between_checkpoints_once_it_runs_out_of_events():
    journal = Journal()
    worker = Worker(FakeStore(journal, {0, 1}, CHANGELOG), FakeProducer(journal), checkpoint_interval=60)
    taken = events_of(worker.context.catalog, input_trades())
    stream = FakeStream(journal)
    pipeline, failures = running_pipeline(worker)
    for event in taken:
        pipeline.add(event, stream, more_waiting=event is not taken[-1])
    await acked(stream, len(taken))
    await pipeline.stop()
    assert failures == [] and sorted(stream.acked) == sorted(
        (e.message.partition, e.message.offset) for e in taken
    )
    assert {b"u-1", b"u-2", b"u-3"} <= {key for values in worker.store.values.values() for key in values}


async def test_redelivery_after_a_changelog_failure_resends_what_the_local_store_holds(monkeypatch):
    journal = Journal()
    store = FakeStore(journal, {0, 1}, CHANGELOG)
    first = Worker(store, FakeProducer(journal))
    taken = events_of(first.context.catalog, input_trades())
    first.producer.failing.add(CHANGELOG)
    with pytest.raises(DeliveryFailed, match="step 2"):
        await first.process(taken, FakeStream(journal))
    assert outputs_of(first.producer, attempted=True) == []  # nothing left the worker but step 1
    pending = sorted(
        output if kind in (ANALYZED, ALERT) else unframe(output)[1]
        for values in store.values.values()
        for key, value in values.items()
        if key not in (CLOCK_KEY, JOURNAL_KEY)
        for entry in decode_envelope(value).pending
        for kind, output in entry.outputs
    )

    # The same worker restarts on its datadir: the store is ahead of the changelog.
    later = time.time() + 1.0
    monkeypatch.setattr(time, "time", lambda: later)
    second = Worker(store, FakeProducer(journal))
    await second.process(taken, FakeStream(journal))

    repartitioned = [
        r[3]
        for t in ("risk-market-events", "risk-pair-events")
        for r in second.producer.records(t)
        if not isinstance(decode_repartitioned(r[3]), Marker)
    ]
    assert sorted([*(v for _t, _p, _k, v in outputs_of(second.producer)), *repartitioned]) == pending
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

    async def analyze(batch: Batch) -> int:
        held = await worker.analysis.analyze(batch)
        batches.append(batch)
        return held

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
    # The dead letter is acknowledged before its event is acked, and it is in its event's batch with
    # the analyzed trades of the events around it; the trades that arrived during the wait went to a
    # later batch.
    assert journal.first("acked", "crypto-trades-dlq") < journal.first("ack", (0, stranger.message.offset))
    assert [e.message.offset for e, _s in batches[0].events] == [0, 1, 2]
    first_outputs = sorted(
        r[0] for r in batches[0].outputs if r[0] in ("crypto-trades-dlq", "risk-analyzed-trades")
    )
    assert first_outputs == ["crypto-trades-dlq", "risk-analyzed-trades", "risk-analyzed-trades"]
    assert all(e.message.offset >= 3 for batch in batches[1:] for e, _s in batch.events)


async def test_an_analysis_failure_stops_the_pipeline_and_acks_nothing():
    journal = Journal()
    worker = Worker(FakeStore(journal, {0}, CHANGELOG), FakeProducer(journal))
    stream = FakeStream(journal)
    failures: list[BaseException] = []

    async def broken(batch: Batch) -> int:
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


def alert_patterns(producer: FakeProducer, catalog: SchemaCatalog) -> list[str]:
    return sorted(catalog.decode(r[3], "RiskAlert")["patternType"] for r in producer.records("risk-alerts"))


async def test_the_two_inputs_are_interleaved_in_event_time_whatever_their_arrival():
    journal = Journal()
    worker = Worker(FakeStore(journal, {0}, CHANGELOG), FakeProducer(journal))
    flow = spoof_flow("u-1")
    # Every order event arrives before every trade (another topic, fetched first).
    trades = [e for e in flow if isinstance(e, Trade)]
    orders = [e for e in flow if isinstance(e, OrderEvent)]
    arrival: list[Trade | OrderEvent] = [*orders, *trades]
    catalog = worker.context.catalog
    await worker.process(events_of(catalog, [(0, item) for item in arrival]), FakeStream(journal))

    merged = list(merge_in_event_time(trades, orders, lambda t: t.timestamp, lambda o: o.timestamp))
    state, _alerts, _issues = run_flow(merged, DEFAULT_RULES, EMPTY_REFERENCE)
    stored = decode_envelope(worker.store.values[0][b"u-1"]).state
    assert stored == encode_state(state)
    assert "SPOOFING" in alert_patterns(worker.producer, catalog)
    records = worker.producer.records("risk-analyzed-trades")
    analyzed = [catalog.decode(r[3], "RiskAnalyzedTrade") for r in records]
    assert not any("LATE_EVENT" in a["complianceFlags"] for a in analyzed)
    # Applied in arrival order instead, the trades would come after the bait's cancel, the first
    # ones beyond the allowed lateness.
    late_state, _alerts, _issues = run_flow(arrival, DEFAULT_RULES, EMPTY_REFERENCE)
    assert encode_state(late_state) != stored


async def test_events_wait_for_the_other_input_until_it_has_caught_up():
    journal = Journal()
    worker = Worker(FakeStore(journal, {0}, CHANGELOG), FakeProducer(journal))
    flow = spoof_flow("u-1")
    trades = events_of(worker.context.catalog, [(0, e) for e in flow if isinstance(e, Trade)])
    worker.inputs.behind[("crypto-orders", 0)] = 40
    stream = FakeStream(journal)
    batch = Batch(events=[(event, stream) for event in trades])
    assert await worker.analysis.analyze(batch) == len(trades)
    assert worker.analysis.held() == {("crypto-trades", 0): len(trades)}
    assert batch.events == [] and batch.changelog == {} and worker.context.metrics.held_events == len(trades)

    worker.inputs.behind.clear()
    batch = Batch()
    assert await worker.analysis.analyze(batch) == 0
    assert [e.message.offset for e, _s in batch.events] == [e.message.offset for e in trades]
    assert worker.context.metrics.trades_in == len(trades) and worker.analysis.held() == {}


async def test_held_events_go_alone_after_the_longest_hold(monkeypatch):
    journal = Journal()
    worker = Worker(FakeStore(journal, {0}, CHANGELOG), FakeProducer(journal))
    trades = trade_events(worker.context.catalog, [(0, t) for t in wash_trades("u-1")])
    worker.inputs.behind[("crypto-orders", 0)] = None  # its end not known yet
    clock = [2_000_000_000.0]  # 2033: after every test event (none is ahead of the clock)
    monkeypatch.setattr("riskengine.worker.agents.user_agent.time.time", lambda: clock[0])
    stream = FakeStream(journal)
    assert await worker.analysis.analyze(Batch(events=[(event, stream) for event in trades])) == len(trades)
    clock[0] += user_agent.MAX_HOLD_S - 0.01
    assert await worker.analysis.analyze(Batch()) == len(trades)
    clock[0] += 0.01
    batch = Batch()
    assert await worker.analysis.analyze(batch) == 0
    assert len(batch.events) == len(trades)


async def test_order_events_that_do_not_decode_or_do_not_fit_the_book_lose_nothing():
    journal = Journal()
    worker = Worker(FakeStore(journal, {0}, CHANGELOG), FakeProducer(journal))
    catalog = worker.context.catalog
    placed = order(0, "PLACED", "a", "BUY", 10)
    ghost = order(SECOND, "FILLED", "ghost", "BUY", 10)
    later = order(2 * SECOND, "CANCELLED", "a", "BUY", 10)
    events = events_of(catalog, [(0, placed), (0, ghost), (0, later)])
    garbage = FakeEvent(FakeMessage("crypto-orders", 0, 3, b"u-1", b"\x00\x00\x00\x00\x02garbage"))
    stream = FakeStream(journal)
    await worker.process([*events, garbage], stream)

    [dead] = worker.producer.records("crypto-orders-dlq")
    assert dict(dead[4])["reason"] == b"unreadable-record" and dead[3] == garbage.message.value
    assert worker.context.metrics.order_issues == {"unknown-order": 1}
    assert sorted(stream.acked) == [(0, 0), (0, 1), (0, 2), (0, 3)]
    state = worker.store.values[0][b"u-1"]
    envelope = decode_envelope(state)
    assert envelope.offsets == (-1, 2)  # the order events after the odd one were applied


async def test_events_wait_as_long_as_the_other_input_is_known_to_be_behind(monkeypatch):
    journal = Journal()
    worker = Worker(FakeStore(journal, {0}, CHANGELOG), FakeProducer(journal))
    trades = trade_events(worker.context.catalog, [(0, t) for t in wash_trades("u-1")])
    worker.inputs.behind[("crypto-orders", 0)] = 3
    clock = [2_000_000_000.0]  # 2033: after every test event (none is ahead of the clock)
    monkeypatch.setattr("riskengine.worker.agents.user_agent.time.time", lambda: clock[0])
    await worker.analysis.analyze(Batch(events=[(event, FakeStream(journal)) for event in trades]))
    clock[0] += 10 * user_agent.MAX_HOLD_S
    assert await worker.analysis.analyze(Batch()) == len(trades)


async def test_a_rejected_event_is_not_acked_before_the_held_events_ahead_of_it():
    # Faust commits the first run of acked offsets even after a gap when nothing was committed yet,
    # so an acked dead letter behind held trades would commit past them.
    journal = Journal()
    worker = Worker(FakeStore(journal, {0}, CHANGELOG), FakeProducer(journal))
    trades = trade_events(worker.context.catalog, [(0, t) for t in wash_trades("u-1")])
    garbage = FakeEvent(FakeMessage("crypto-trades", 0, len(trades), b"u-1", b"\x00\x00\x00\x00\x01garbage"))
    worker.inputs.behind[("crypto-orders", 0)] = 5
    stream = FakeStream(journal)
    batch = Batch(events=[(event, stream) for event in [*trades, garbage]])
    assert await worker.analysis.analyze(batch) == len(trades) + 1
    # Nothing is acked or sent but the partition's promise to the market and pair agents.
    assert batch.events == [] and {r[0] for r in batch.outputs} <= {"risk-market-events", "risk-pair-events"}
    assert all(r[2] is None and decode_repartitioned(r[3]).promise is not None for r in batch.outputs)

    worker.inputs.behind.clear()
    batch = Batch()
    assert await worker.analysis.analyze(batch) == 0
    assert [e.message.offset for e, _s in batch.events] == list(range(len(trades) + 1))
    assert [r[0] for r in batch.outputs if r[0] == "crypto-trades-dlq"] == ["crypto-trades-dlq"]


async def test_the_pipeline_takes_held_events_again_without_new_arrivals():
    journal = Journal()
    worker = Worker(FakeStore(journal, {0}, CHANGELOG), FakeProducer(journal))
    trades = trade_events(worker.context.catalog, [(0, t) for t in wash_trades("u-1")])
    worker.inputs.behind[("crypto-orders", 0)] = 5
    stream = FakeStream(journal)
    pipeline, failures = running_pipeline(worker)
    for event in trades:
        pipeline.add(event, stream, more_waiting=False)
    await asyncio.sleep(0.2)
    assert stream.acked == [] and worker.analysis.held() == {("crypto-trades", 0): len(trades)}
    worker.inputs.behind.clear()  # the order events caught up: nothing new for this agent arrives
    await acked(stream, len(trades))
    await pipeline.stop()
    assert failures == []
    assert stream.acked == [(0, offset) for offset in range(len(trades))]


async def test_a_core_failure_mid_batch_dead_letters_its_event_and_keeps_the_others_effects(monkeypatch):
    journal = Journal()
    worker = Worker(FakeStore(journal, {0}, CHANGELOG), FakeProducer(journal))
    flow = spoof_flow("u-1")
    failing = flow[8]
    assert isinstance(failing, Trade)

    def half_done(
        state: UserState,
        item: Trade,
        reference: ReferenceData,
        rules: Rules,
        market: MarketContext | None = None,
    ) -> Evaluation:
        if item.trade_id == failing.trade_id:
            state.watermark = 10**15  # the state is left half-updated, then the core fails
            raise ArithmeticError("a bug in a detector")
        return evaluate_trade(state, item, reference, rules, market)

    monkeypatch.setattr(user_agent, "evaluate_trade", half_done)
    stream = FakeStream(journal)
    events = events_of(worker.context.catalog, [(0, item) for item in flow])
    await worker.process(events, stream)

    [dead] = worker.producer.records("crypto-trades-dlq")
    assert dict(dead[4])["reason"] == b"processing-error"
    assert len(stream.acked) == len(flow)
    expected, _alerts, _issues = run_flow(
        [item for item in flow if item is not failing], DEFAULT_RULES, EMPTY_REFERENCE
    )
    assert decode_envelope(worker.store.values[0][b"u-1"]).state == encode_state(expected)
    assert "SPOOFING" in alert_patterns(worker.producer, worker.context.catalog)


async def test_a_users_state_is_encoded_once_per_batch_even_when_evicted_from_memory(monkeypatch):
    encodings: list[str] = []

    def counted(state: UserState) -> bytes:
        encodings.append("state")
        return encode_state(state)

    monkeypatch.setattr(user_agent, "encode_state", counted)
    journal = Journal()
    worker = Worker(FakeStore(journal, {0}, CHANGELOG), FakeProducer(journal))
    items = [(0, t) for t in wash_trades("u-1")]
    await worker.process(events_of(worker.context.catalog, items), FakeStream(journal))
    assert encodings == ["state"]
    expected, _alerts, _issues = run_flow([t for _p, t in items], DEFAULT_RULES, EMPTY_REFERENCE)
    envelope = decode_envelope(worker.store.values[0][b"u-1"])
    assert envelope.state == encode_state(expected) and envelope.offsets == (4, -1)

    # Two users taking turns with room for one state in memory: each eviction stores the evicted one.
    monkeypatch.setattr(user_agent, "STATE_CACHE_SIZE", 1)
    encodings.clear()
    journal = Journal()
    worker = Worker(FakeStore(journal, {0}, CHANGELOG), FakeProducer(journal))
    a, b = wash_trades("u-a"), wash_trades("u-b")
    items = [(0, t) for pair in zip(a, b, strict=True) for t in pair]
    await worker.process(events_of(worker.context.catalog, items), FakeStream(journal))
    assert len(encodings) == len(items)
    for user, trades in ((b"u-a", a), (b"u-b", b)):
        expected, _alerts, _issues = run_flow(list(trades), DEFAULT_RULES, EMPTY_REFERENCE)
        assert decode_envelope(worker.store.values[0][user]).state == encode_state(expected)


async def test_a_rebalance_drops_held_and_waiting_events_and_their_redelivery_is_applied_in_order():
    journal = Journal()
    worker = Worker(FakeStore(journal, {0}, CHANGELOG), FakeProducer(journal))
    made = wash_trades("u-1")
    trades = trade_events(worker.context.catalog, [(0, t) for t in made])
    worker.inputs.behind[("crypto-orders", 0)] = 5
    stream = FakeStream(journal)
    pipeline, failures = running_pipeline(worker)
    for event in trades[:3]:
        pipeline.add(event, stream, more_waiting=False)
    await asyncio.sleep(0.1)
    assert worker.analysis.held() == {("crypto-trades", 0): 3}
    pipeline.add(trades[3], stream, more_waiting=True)  # not taken yet

    # The rebalance starts: what is held or waiting is let go, never acked.
    worker.analysis.forget_states()
    assert pipeline.discard_waiting() == 1
    assert worker.analysis.held() == {} and stream.acked == []

    # After the seek to the committed offset every trade comes again, the other input caught up.
    worker.inputs.behind.clear()
    for event in trades:
        pipeline.add(event, stream, more_waiting=False)
    await acked(stream, len(trades))
    await pipeline.stop()
    assert failures == []
    assert stream.acked == [(0, offset) for offset in range(len(trades))]
    expected, _alerts, _issues = run_flow(list(made), DEFAULT_RULES, EMPTY_REFERENCE)
    assert decode_envelope(worker.store.values[0][b"u-1"]).state == encode_state(expected)


async def test_a_rebalance_with_a_batch_in_flight_fences_it_and_its_redelivery_matches_one_process():
    journal = Journal()
    store = FakeStore(journal, {0, 1}, CHANGELOG)
    producer = FakeProducer(journal)
    worker = Worker(store, producer)
    fence = worker.commit.fence
    flows = {0: wash_trades("u-0"), 1: wash_trades("u-1", start=MINUTE)}
    stream = FakeStream(journal)
    first = trade_events(worker.context.catalog, [(p, t) for p in (0, 1) for t in flows[p][:3]])
    released: list[FakeMessage] = []
    failures: list[BaseException] = []

    def let_go() -> None:  # what the agent does as a rebalance starts and for a fenced batch
        worker.analysis.forget_states()
        pipeline.discard_waiting()

    async def on_failure(exc: BaseException) -> None:
        failures.append(exc)

    metrics = Metrics()
    pipeline = BatchPipeline(
        worker.commit, worker.analysis.analyze, on_failure, metrics, release=released.extend, on_fenced=let_go
    )
    pipeline.start()
    producer.hold = True
    for event in first:
        pipeline.add(event, stream, more_waiting=event is not first[-1])
    for _ in range(100):  # the batch's changelog is in flight
        if producer.held:
            break
        await asyncio.sleep(0.01)
    assert producer.held and set(store.values) == {0, 1}
    sent_before = len(producer.attempted)

    # The rebalance starts (Faust's consumer thread bumps the generation, the agent lets go), and
    # partition 1 will move to another worker. The sends in flight complete; nothing follows them.
    fence.begin_rebalance()
    let_go()
    producer.release()
    for _ in range(100):
        if released:
            break
        await asyncio.sleep(0.01)
    assert [m.offset for m in released] == [e.message.offset for e in first]
    assert stream.acked == [] and failures == [] and metrics.fenced_batches == 1
    assert len(producer.attempted) == sent_before and store.offsets == {}
    late = trade_events(worker.context.catalog, [(1, flows[1][3])])[0]
    pipeline.add(late, stream, more_waiting=False)  # arriving during the rebalance: let go at once
    assert released[-1] is late.message

    store.held.discard(1)
    fence.end_rebalance()
    producer.hold = False
    # After the seek to the committed offsets (none yet), partition 0's events come again, all five.
    again = trade_events(worker.context.catalog, [(0, t) for t in flows[0]])
    for event in again:
        pipeline.add(event, stream, more_waiting=event is not again[-1])
    await acked(stream, len(again))
    await pipeline.stop()

    assert failures == [] and stream.acked == [(0, offset) for offset in range(len(again))]
    expected, _alerts, _issues = run_flow(list(flows[0]), DEFAULT_RULES, EMPTY_REFERENCE)
    assert decode_envelope(store.values[0][b"u-0"]).state == encode_state(expected)
    # Partition 1: nothing written or sent after the rebalance began but what was in flight.
    partition_1 = [r for r in producer.attempted if r[1] == 1 and r[0] in (CHANGELOG, *OUTPUT_TOPICS)]
    assert partition_1 and all(producer.attempted.index(r) < sent_before for r in partition_1)
    assert {what for kind, what in journal.entries if kind == "offset"} == {0}  # in the new generation


def late_for_the_market(producer: FakeProducer, topic: str) -> list[tuple[str, int]]:
    """Executions sent to ``topic`` earlier than a promise their source sent there before them
    (the market agent drops those as late): (tradeId, the promise they fell behind)."""
    promised: dict[tuple[int, int], int] = {}
    late = []
    for record_topic, target, _key, value, _headers in producer.attempted:
        if record_topic != topic:
            continue
        record = decode_repartitioned(value)
        where = (target, record.source)
        if isinstance(record, Marker):
            if record.promise is not None:
                promised[where] = max(promised.get(where, -(2**62)), record.promise)
            continue
        if record.trade.timestamp < promised.get(where, -(2**62)):
            late.append((record.trade.trade_id, promised[where]))
        promised[where] = max(promised.get(where, -(2**62)), record.promise)
    return late


async def test_a_redelivery_split_across_batches_never_promises_past_executions_still_pending():
    journal = Journal()
    store, producer = FakeStore(journal, {0}, CHANGELOG), FakeProducer(journal)
    first = Worker(store, producer)
    # Three trades a minute apart: the partition's clock ends two minutes past the first.
    made = [trade(n * MINUTE, user=f"u-{n}", trade_id=f"t-{n}") for n in range(3)]
    taken = trade_events(first.context.catalog, [(0, t) for t in made])
    stream = FakeStream(journal)
    batch = Batch(events=[(event, stream) for event in taken])
    assert await first.analysis.analyze(batch) == 0
    await first.commit.persist(batch)  # state, changelog and clock stored; then fenced (or a crash)
    assert producer.records(first.context.names.market_events) == []  # no execution sent yet

    # Redelivered in two batches: the first holds only the first trade.
    again = Worker(store, producer)
    for part in (taken[:1], taken[1:]):
        await again.process(part, stream)
    market = again.context.names.market_events
    records = [decode_repartitioned(r[3]) for r in producer.records(market)]
    assert {r.trade.trade_id for r in records if not isinstance(r, Marker)} == {"t-0", "t-1", "t-2"}
    assert late_for_the_market(producer, market) == []


class PositionsConsumer:
    """The consumer as InputPositions reads it: fetched highwaters and committed offsets."""

    def __init__(self) -> None:
        self.highwaters_seen: dict[TP, int | None] = {}
        self._committed_offset: dict[TP, int] = {}
        #: TP -> wall-clock ms of the last fetch response that brought its highwater
        self.fetched_at: dict[TP, int] = {}
        self._thread = SimpleNamespace(_consumer=SimpleNamespace(last_poll_timestamp=self.fetched_at.get))

    def highwater(self, tp: TP) -> int | None:
        return self.highwaters_seen.get(tp)


class BrokerOffsets:
    """The offsets reader: the ends and starts the broker would answer, and what was asked."""

    def __init__(self) -> None:
        self.end: dict[tuple[str, int], int] = {}
        self.start: dict[tuple[str, int], int] = {}
        self.asked: list[str] = []

    async def ends(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        self.asked.append("ends")
        return {key: self.end[key] for key in partitions}

    async def starts(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        self.asked.append("starts")
        return {key: self.start[key] for key in partitions}


def positions_over(consumer: PositionsConsumer, broker: BrokerOffsets) -> InputPositions:
    return InputPositions(SimpleNamespace(consumer=consumer), broker)  # type: ignore[arg-type]


async def test_input_positions_trust_a_fetched_end_only_to_wait_and_ask_for_a_fresh_one_to_go():
    consumer, broker = PositionsConsumer(), BrokerOffsets()
    positions = positions_over(consumer, broker)
    orders = TP("crypto-orders", 0)
    consumer._committed_offset[orders] = 10
    consumer.highwaters_seen[orders] = 12
    assert positions.lag("crypto-orders", 0, since_ms=int(time.time() * 1000)) == 2  # known behind: wait
    positions.received("crypto-orders", 0, 11)
    # The fetched end says caught up, but it may be older than the event that waits.
    arrived = int(time.time() * 1000)
    assert positions.lag("crypto-orders", 0, since_ms=arrived) is None
    assert positions.wanted == {("crypto-orders", 0)}
    broker.end[("crypto-orders", 0)] = 14  # two more order events reached the broker meanwhile
    await positions.refresh()
    assert positions.wanted == set() and broker.asked == ["ends"]
    assert positions.lag("crypto-orders", 0, since_ms=arrived) == 2
    positions.received("crypto-orders", 0, 13)
    assert positions.lag("crypto-orders", 0, since_ms=arrived) == 0
    # An event that arrives after that answer needs a newer one.
    assert positions.lag("crypto-orders", 0, since_ms=int(time.time() * 1000) + 1000) is None


async def test_input_positions_of_a_partition_never_read_nor_committed_start_at_its_first_offset():
    consumer, broker = PositionsConsumer(), BrokerOffsets()
    positions = positions_over(consumer, broker)
    broker.start[("crypto-orders", 3)] = 500  # older records were deleted by retention
    broker.end[("crypto-orders", 3)] = 500
    arrived = int(time.time() * 1000)
    assert positions.lag("crypto-orders", 3, since_ms=arrived) is None
    await positions.refresh()
    assert broker.asked == ["ends", "starts"]
    assert positions.lag("crypto-orders", 3, since_ms=arrived) == 0


async def test_input_positions_trust_a_caught_up_highwater_fetched_with_or_after_the_event():
    consumer, broker = PositionsConsumer(), BrokerOffsets()
    positions = positions_over(consumer, broker)
    orders = TP("crypto-orders", 1)
    positions.received("crypto-orders", 1, 7)
    consumer.highwaters_seen[orders] = 8
    arrived = int(time.time() * 1000)
    consumer.fetched_at[orders] = arrived - 5  # a response before the one that brought the event
    assert positions.lag("crypto-orders", 1, since_ms=arrived) is None
    consumer.fetched_at[orders] = arrived + 3  # a later response
    assert positions.lag("crypto-orders", 1, since_ms=arrived) == 0
    assert broker.asked == []


async def test_an_event_far_ahead_of_the_clock_is_dead_lettered_and_moves_no_state(monkeypatch):
    journal = Journal()
    worker = Worker(FakeStore(journal, {0}, CHANGELOG), FakeProducer(journal))
    wash = wash_trades("u-1")
    future = dataclasses.replace(wash[0], trade_id="t-future", timestamp=99_999_999_999_999)
    now_s = wash[-1].timestamp / 1000
    monkeypatch.setattr("riskengine.worker.agents.user_agent.time.time", lambda: now_s)
    events = trade_events(worker.context.catalog, [(0, future), *((0, t) for t in wash)])
    stream = FakeStream(journal)
    await worker.process(events, stream)

    [dead] = worker.producer.records("crypto-trades-dlq")
    assert dict(dead[4])["reason"] == b"ahead-of-clock"
    assert len(stream.acked) == len(events)
    # The account's event time did not jump to the year 5138: the wash trades after it still alert.
    assert "WASH_TRADING" in alert_patterns(worker.producer, worker.context.catalog)
    state = decode_envelope(worker.store.values[0][b"u-1"]).state
    assert decode_state(state).watermark == wash[-1].timestamp


async def test_an_idle_marker_carries_the_offset_its_trades_partition_is_applied_through():
    journal = Journal()
    worker = Worker(FakeStore(journal, {0}, CHANGELOG), FakeProducer(journal))
    made = [trade(n * SECOND, user=f"u-{n}", trade_id=f"t-{n}") for n in range(3)]
    await worker.process(trade_events(worker.context.catalog, [(0, t) for t in made]), FakeStream(journal))
    quiet = time.time() + IDLE_AFTER_S + 1
    # A fourth trade on the broker, not applied: not idle.
    assert worker.analysis.idle_markers([0], lambda partition: (4, None), quiet) == []
    records = worker.analysis.idle_markers([0], lambda partition: (3, None), quiet)
    names, partitions = worker.context.names, worker.context.settings.topic_partitions
    assert {(topic, target) for topic, target, *_ in records} == {
        (topic, target) for topic in (names.market_events, names.pair_events) for target in range(partitions)
    }
    assert {decode_repartitioned(record[3]) for record in records} == {Marker(0, None, 3)}


async def test_a_rebalance_resumes_in_the_fetcher_the_inputs_the_agent_paused(tmp_path, monkeypatch):
    # A batch analyzed as the partitions moved may pause an input in the new assignment just before
    # the agent forgets its pauses: nothing would resume it until the next rebalance.
    app = TransportApp("user-agent-test", store="rocksdb://", datadir=str(tmp_path), autodiscover=False)
    context = worker_context()
    agent = user_agent.UserAgent(app, context, UserStateTable(app, context.settings))
    ahead = TP(context.names.orders, 2)
    kafka = unconnected_fetcher(app.consumer, monkeypatch, [ahead, TP(context.names.trades, 2)])
    stop_fetching(app.consumer, [ahead])  # what the agent's analysis does for an input running ahead
    agent._paused.add(ahead)
    await asyncio.sleep(0)  # the consumer thread's turn
    assert paused_partitions(kafka) == {(ahead.topic, 2)}
    agent._forget(app, signal=app.on_partitions_assigned)
    await asyncio.sleep(0)
    assert paused_partitions(kafka) == set()
    assert not agent._paused
    await kafka.stop()
