"""``riskengine bench analysis``: the worker's analysis of a simulator run, in one process, no Kafka.

What the worker does per event in Python beyond Faust and the network: the per-user agent's
``UserAnalysis.analyze`` (decoding, the core, the outputs' encoding, the envelopes and journals,
the repartition records), then the market and pair agents' ``WatermarkedAnalysis.analyze`` over
the repartition records it made. The run is ``riskengine generate``'s simulator (trades with their
order events, and the accounts' profiles), Avro-encoded up front with a catalog that holds every
contract (no registry), fed in batches of ``--batch`` events per partition order as the worker
gets them. The users' states and the topics are in-memory stand-ins: a dict for the state table,
a producer whose every send is acknowledged at once (so each batch goes through the commit
protocol, and outputs count as delivered as they would). Only the ``analyze`` calls are timed
(process CPU time); each pass starts from empty states, and the best of ``--passes`` is printed.
The garbage collector is tuned as in a worker (:mod:`riskengine.worker.gc_tuning`: the run's
events frozen, the worker's thresholds): with CPython's defaults its collections took a quarter of
the detection core's time here, against 3 % of a worker's main thread.

It answers what ``riskengine bench-e2e`` cannot on a shared 2-core machine, whose runs of one
build differ by up to a sixth: whether a change to the worker's per-event code moved its cost, to
a few percent. The output counts (analyzed trades, alerts, repartition records) let two builds be
checked to do the same work.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from riskengine.contracts.schema_files import expanded_schema
from riskengine.contracts.topics import RECORD_TOPICS
from riskengine.core import BUILD
from riskengine.core.market_feed import kafka_partition
from riskengine.producer.events import EventKind
from riskengine.producer.population import PopulationError
from riskengine.producer.simulator import SimulationConfig, Simulator
from riskengine.settings import Settings
from riskengine.worker.agents.user_agent import UserAnalysis
from riskengine.worker.agents.watermarked_agent import MARKET, PAIRS, KeyedCore, WatermarkedAnalysis
from riskengine.worker.commit import Batch, CommitProtocol, DeliveryProgress, Fence, Record
from riskengine.worker.context import WorkerContext
from riskengine.worker.gc_tuning import GC_THRESHOLDS
from riskengine.worker.repartition import Execution, decode, idle_marker_value

#: The worker's partition count (every topic).
PARTITIONS = 6
#: When the run starts (2026-01-01 UTC): every event is past, none ahead of the worker's clock, and
#: every invocation gets the same events (the simulator's ids depend on its start).
RUN_START_MS = 1_767_225_600_000


@dataclass(frozen=True)
class Message:
    """What the analyses read of a consumed record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class Event:
    message: Message


class Acks:
    """Takes the acks (the analyses hand events to ``ack`` once done); nothing commits here."""

    def ack(self, event: Event) -> bool:
        return True


class Store:
    """A state table in memory: (partition, key) -> value."""

    def __init__(self) -> None:
        self.values: dict[tuple[int, bytes], bytes] = {}

    def get(self, partition: int, key: bytes) -> bytes | None:
        return self.values.get((partition, key))

    def write(self, values: Mapping[tuple[int, bytes], bytes]) -> None:
        self.values.update(values)

    def set_changelog_offset(self, partition: int, offset: int) -> None:
        """Nothing to record: no changelog is read back."""


@dataclass
class Sent:
    offset: int


class RecordBatch:
    """aiokafka's record batch builder, unbounded."""

    def __init__(self) -> None:
        self.count = 0

    def append(self, *, timestamp: int | None, key: bytes | None, value: bytes, headers: Any) -> object:
        self.count += 1
        return self


class Producer:
    """Acknowledges every batch at once, with offsets counted per partition."""

    def __init__(self) -> None:
        self.ends: dict[tuple[str, int], int] = {}

    def create_batch(self) -> RecordBatch:
        return RecordBatch()

    async def send_batch(self, batch: RecordBatch, topic: str, *, partition: int) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        end = self.ends.get((topic, partition), 0)
        self.ends[(topic, partition)] = end + batch.count
        future.set_result(Sent(end))
        return future


class CaughtUp:
    """Every input read to its end (nothing is held back for the other input)."""

    def lag(self, topic: str, partition: int, since_ms: int) -> int | None:
        return 0

    def fetched_ms(self, topic: str, partition: int) -> int | None:
        return None


def worker_context(settings: Settings, profiles: list[dict[str, Any]]) -> WorkerContext:
    """The worker's context with every contract in its catalog (ids 1, 2, ...) and ``profiles``
    loaded; every market partition past any trade (no market context is awaited)."""
    context = WorkerContext.from_settings(settings)
    for schema_id, name in enumerate(RECORD_TOPICS, start=1):
        context.catalog.add(schema_id, expanded_schema(name), writes=name)
    for profile in profiles:
        encoded = context.catalog.encode("UserProfile", profile)
        context.reference.reader.profiles[str(profile["userId"]).encode()] = encoded
    markets = context.reference.markets
    markets.progress.update({partition: 2**62 for partition in range(settings.topic_partitions)})
    return context


def simulator_events(
    context: WorkerContext, simulator: Simulator, trades: int, rate: int | None = None
) -> list[Event]:
    """The run's events as the worker consumes them, Avro-encoded, offsets counted per partition.

    With ``rate`` (trades/s), each event is stamped as ``bench-e2e``'s latency phase stamps it
    (the time it is due at that rate from the simulator's start, an order event with the trade
    after it); else it keeps the simulator's own time.
    """
    names = context.names
    offsets: dict[tuple[str, int], int] = {}
    events = []
    start_ms = simulator.config.start_ms
    stamped = 0
    for event in simulator.events(trades):
        topic = names.trades if event.kind is EventKind.TRADE else names.orders
        key = event.user_id.encode()
        partition = kafka_partition(key, PARTITIONS)
        offset = offsets.get((topic, partition), 0)
        offsets[(topic, partition)] = offset + 1
        record = event.record
        if rate is not None:
            record = dict(record, timestamp=start_ms + stamped * 1000 // rate)
            stamped += event.kind is EventKind.TRADE
        value = context.catalog.encode(event.kind.record_name, record)
        events.append(Event(Message(topic, partition, offset, key, value)))
    return events


@dataclass
class Pass:
    """One pass over the run: CPU seconds in each analysis, and what came out."""

    user_s: float = 0.0
    market_s: float = 0.0
    pair_s: float = 0.0
    analyzed: int = 0
    alerts: int = 0
    #: execution records the per-user agent republished to the market and pair agents
    executions: int = 0
    #: executions the market and pair agents applied (all of them, once released)
    applied: int = 0


async def user_pass(
    context: WorkerContext, events: list[Event], batch_size: int, result: Pass
) -> list[Record]:
    """The per-user analysis over ``events``; the repartition records it made."""
    store = Store()
    progress = DeliveryProgress()
    analysis = UserAnalysis(context, store, progress, CaughtUp())
    commit = CommitProtocol(store, Producer(), "user-state-changelog", progress, Fence())
    acks = Acks()
    names = context.names
    internal = (names.market_events, names.pair_events)
    repartitioned: list[Record] = []
    for start in range(0, len(events), batch_size):
        batch = Batch(events=[(event, acks) for event in events[start : start + batch_size]])
        began = time.process_time()
        await analysis.analyze(batch)
        result.user_s += time.process_time() - began
        await commit.persist(batch)
        await commit.publish(batch)
        for record in batch.outputs:
            topic = record[0]
            if topic in internal:
                repartitioned.append(record)
            elif topic == names.analyzed_trades:
                result.analyzed += 1
            elif topic == names.alerts:
                result.alerts += 1
    result.executions = sum(1 for record in repartitioned if isinstance(decode(record[3]), Execution))
    return repartitioned


def keyed_events(topic: str, records: list[Record]) -> list[Event]:
    """The records of ``topic`` among ``records`` as a market or pair agent consumes them (offsets
    counted per partition), then an idle marker from every source to every partition (so that
    everything left is released)."""
    offsets: dict[int, int] = {}
    events = []
    idle = [
        (topic, target, None, idle_marker_value(source, 0), None)
        for source in range(PARTITIONS)
        for target in range(PARTITIONS)
    ]
    for record_topic, partition, key, value, _headers in [*records, *idle]:
        if record_topic != topic:
            continue
        offset = offsets.get(partition, 0)
        offsets[partition] = offset + 1
        events.append(Event(Message(topic, partition, offset, key, value)))
    return events


async def keyed_pass(
    context: WorkerContext, core: KeyedCore[Any], topic: str, records: list[Record], batch_size: int
) -> tuple[float, int, int]:
    """A market or pair analysis over ``topic``'s records, then every source idle (which releases
    what is left): (CPU seconds, alerts, executions applied)."""

    async def trade_ends(partitions: Any) -> dict[int, int]:
        # Each trades partition still ends where its idle marker said (0): the idle sources count.
        return dict.fromkeys(partitions, 0)

    analysis = WatermarkedAnalysis(core, context, Store(), PARTITIONS, trade_ends)
    acks = Acks()
    events = [(event, acks) for event in keyed_events(topic, records)]
    spent = 0.0
    alerts = 0
    for start in range(0, len(events), batch_size):
        batch = Batch(events=events[start : start + batch_size])
        began = time.process_time()
        await analysis.analyze(batch)
        spent += time.process_time() - began
        alerts += sum(1 for record in batch.outputs if record[0] == context.names.alerts)
    return spent, alerts, analysis.counters["released"]


async def one_pass(settings: Settings, args: argparse.Namespace) -> tuple[Pass, int]:
    """A pass from empty states; (its figures, the run's events)."""
    simulator = Simulator(SimulationConfig(seed=args.seed, start_ms=RUN_START_MS, users=args.users))
    context = worker_context(settings, simulator.profiles())
    events = simulator_events(context, simulator, args.trades, args.rate)
    # As a worker freezes what it holds (its start-up objects, then its survivors every 10 s).
    gc.collect()
    gc.freeze()
    result = Pass()
    repartitioned = await user_pass(context, events, args.batch, result)
    names = context.names
    result.market_s, market_alerts, market_applied = await keyed_pass(
        context, MARKET, names.market_events, repartitioned, args.batch
    )
    result.pair_s, pair_alerts, pair_applied = await keyed_pass(
        context, PAIRS, names.pair_events, repartitioned, args.batch
    )
    result.alerts += market_alerts + pair_alerts
    result.applied = market_applied + pair_applied
    return result, len(events)


def bench_analysis(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``--passes`` passes and print the best one's CPU time per trade and per event."""
    sizes = (args.trades, args.users, args.batch, args.passes, 1 if args.rate is None else args.rate)
    if min(sizes) < 1:
        raise SystemExit(
            "riskengine bench analysis: --trades, --users, --batch, --passes and --rate must be >= 1"
        )
    print(
        f"bench analysis: {args.trades:,} simulator trades of {args.users:,} users (seed {args.seed}), "
        f"{'simulator time' if args.rate is None else f'stamped at {args.rate:,} trades/s'}, "
        f"batches of {args.batch:,}, checkpoint interval {settings.worker_checkpoint_interval:g} s, "
        f"core {BUILD}",
        flush=True,
    )
    best: Pass | None = None
    thresholds = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        for number in range(1, args.passes + 1):
            try:
                result, events = asyncio.run(one_pass(settings, args))
            except PopulationError as exc:
                raise SystemExit(f"riskengine bench analysis: --users: {exc}") from exc
            finally:
                gc.unfreeze()
            total = result.user_s + result.market_s + result.pair_s
            print(
                f"  pass {number}: {events:,} events, {1e6 * total / args.trades:.1f} us per trade "
                f"({result.analyzed:,} analyzed trades, {result.alerts:,} alerts, "
                f"{result.executions:,} executions republished, {result.applied:,} applied)",
                flush=True,
            )
            if best is None or total < best.user_s + best.market_s + best.pair_s:
                best = result
    finally:
        gc.set_threshold(*thresholds)
    assert best is not None
    per_trade = {"user": best.user_s, "market": best.market_s, "pair": best.pair_s}
    total = sum(per_trade.values())
    print(f"best of {args.passes}, CPU us per trade (per event: trades and order events):")
    for name, spent in [*per_trade.items(), ("total", total)]:
        print(f"  {name:<7} {1e6 * spent / args.trades:8.1f}   ({1e6 * spent / events:6.1f} per event)")
    return 0


def add_parser(targets: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bench analysis`` to the ``bench`` command's targets."""
    parser = targets.add_parser(
        "analysis",
        help="the worker's per-user, market and pair analyses over a simulator run, no Kafka: CPU per trade",
    )
    parser.add_argument("--trades", type=int, default=5_000, help="simulator trades (default 5,000)")
    parser.add_argument("--users", type=int, default=500, help="users (default 500)")
    parser.add_argument("--seed", type=int, default=11, help="simulator seed (default 11)")
    parser.add_argument("--batch", type=int, default=500, help="events per batch (default 500)")
    parser.add_argument(
        "--rate",
        type=int,
        help="stamp the events as bench-e2e's latency phase does at this many trades/s "
        "(default: the simulator's time, about 10 trades/s)",
    )
    parser.add_argument("--passes", type=int, default=3, help="passes; the best is reported (default 3)")
    parser.set_defaults(handler=bench_analysis)
