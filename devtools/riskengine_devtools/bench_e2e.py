"""``riskengine bench-e2e``: one worker against the local Kafka, end to end, three paths in one run.

1. Isolated topics (a unique suffix and app ids, deleted at the end), the generator's profiles on
   ``user-profiles`` and ``--trades`` Avro trades of ``riskengine bench core``'s seeded generator on
   ``crypto-trades``, produced before anything is timed.
2. For each event loop asked for (``--event-loop``), three subprocesses consume the same pre-produced
   trades from the beginning, each in its own consumer group, and forward to their own topic:

   - ``raw``: an aiokafka consume -> produce loop that forwards the bytes (no decoding, no commits);
   - ``passthrough``: a Faust agent on an app with the worker's exact configuration
     (:func:`riskengine.worker.app.app_options`, and the same garbage-collector tuning) that sends each
     event's key and value to an output topic, so its cost per event includes the send the engine
     also makes, but no table and no logic;
   - ``engine``: ``faust -A riskengine worker``, output ``risk-analyzed-trades``.

   This process consumes each output topic and times from the first output record's arrival to the
   N-th (start-up and group join are outside the window): trades/s = (N - 1) / elapsed.
3. Order flow (``--order-flow-trades``, per loop): the engine on its own topics holding a simulator
   run (``riskengine generate``'s generator: trades with their order events, about 2.6 per trade,
   and the accounts' profiles), timed from the first analyzed trade to the last; events/s counts
   trades and order events (an order event has no output of its own). Compared with the passthrough
   agent's events/s, since Faust's cost is per event whatever its topic.
4. Latency, with the engine still running and caught up: trades produced at a steady ``--rate`` for
   ``--seconds``, each stamped with its send time; latency = arrival of its analyzed trade here
   minus that timestamp (one clock: producer and consumer are this process). It is split at the
   analyzed trade's ``processedAt`` (stamped by the worker when it starts analyzing the trade's
   batch, same machine clock): *in* = trade timestamp to processedAt (produce, fetch, Faust's consumer
   path, batching), *out* = processedAt to arrival (analysis, changelog and output round trips, fetch).

``--profile DIR`` runs the engine worker under cProfile and writes ``DIR/engine-<loop>.prof``;
``--logs DIR`` keeps every stage's log there.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from riskengine.cli.unreachable import ServiceUnreachable, reaching, report
from riskengine.connections import client_options
from riskengine.contracts.avro_codec import SchemaCatalog
from riskengine.contracts.topics import TOPICS, TopicSpec, ensure_topics, topic_names, topic_specs
from riskengine.core import Trade
from riskengine.producer.events import EventKind
from riskengine.producer.simulator import SimulationConfig, Simulator
from riskengine.settings import Settings
from riskengine.worker.faust_compat import refresh_metadata
from riskengine_devtools import DevtoolsError
from riskengine_devtools.bench_core import build_stream
from riskengine_devtools.chaos.kafka_io import delete_topics

FAUST = Path(sys.executable).parent / "faust"
#: Faust's names for the event loops (``faust --loop``), in the order they are run.
LOOPS = ("aio", "uvloop")
#: Give up on a stage when no output arrived for this long.
STALL_S = 90.0


def output_topic(path: str, settings: Settings) -> str:
    """The topic the raw or passthrough stage forwards to (named after the run's topic suffix)."""
    return f"bench-{path}-out{settings.worker_topic_suffix}"


@dataclass(frozen=True)
class Latency:
    """One analyzed trade of the latency phase, in ms from its trade's timestamp."""

    total: float
    #: to the worker's processedAt stamp
    to_processed: float


@dataclass
class Outcome:
    """One timed path: trades/s over the window from the first to the last output."""

    loop: str
    path: str
    rate: float
    trades: int


@dataclass
class FlowOutcome:
    """The order-flow row of one loop: the engine over a simulator run's trades and order events."""

    loop: str
    trades: int
    order_events: int
    #: trades and order events per second over the window of the analyzed trades
    rate: float


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``bench-e2e`` command."""
    parser = subparsers.add_parser(
        "bench-e2e",
        help="end to end on the local Kafka: raw aiokafka vs passthrough Faust agent vs engine, latency",
    )
    parser.add_argument("--trades", type=int, default=100_000, help="pre-produced trades (default 100,000)")
    parser.add_argument("--users", type=int, default=10_000, help="users (default 10,000)")
    parser.add_argument("--seed", type=int, default=7, help="generator seed (default 7)")
    # Not "--loop": importing faust reads --loop (and anything starting with it) from sys.argv and
    # installs that event loop in this process; "both" is no loop at all and failed the import.
    parser.add_argument(
        "--event-loop",
        choices=(*LOOPS, "both"),
        default="both",
        help="event loop of the subprocesses (default both)",
    )
    parser.add_argument(
        "--order-flow-trades",
        type=int,
        default=20_000,
        help="order-flow row: simulator trades, with their order events (default 20,000; 0: no row)",
    )
    parser.add_argument("--rate", type=int, default=1_000, help="latency phase: trades/s (default 1,000)")
    parser.add_argument("--seconds", type=float, default=20.0, help="latency phase: duration (default 20)")
    parser.add_argument("--profile", type=Path, help="run the engine under cProfile, .prof files into DIR")
    parser.add_argument("--logs", type=Path, help="keep each stage's log (<path>-<loop>.log) in DIR")
    parser.set_defaults(handler=bench_e2e)


def bench_e2e(args: argparse.Namespace, settings: Settings) -> int:
    """Run the benchmark (see the module doc) and print the throughput and latency tables."""
    if args.trades < 2 or args.users < 1 or args.rate < 1 or args.seconds <= 0:
        print(
            "riskengine bench-e2e: --trades >= 2, --users, --rate and --seconds must be positive",
            file=sys.stderr,
        )
        return 2
    if args.order_flow_trades != 0 and args.order_flow_trades < 2:
        print("riskengine bench-e2e: --order-flow-trades must be 0 or at least 2", file=sys.stderr)
        return 2
    loops = LOOPS if args.event_loop == "both" else (args.event_loop,)
    try:
        reaching(_run(args, settings, loops), settings)
    except ServiceUnreachable as exc:
        return report("bench-e2e", exc)
    except StageFailed as exc:
        print(f"riskengine bench-e2e: {exc}", file=sys.stderr)
        return 1
    return 0


class StageFailed(DevtoolsError):
    """A subprocess died or stopped producing output."""


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


async def _run(args: argparse.Namespace, settings: Settings, loops: tuple[str, ...]) -> None:
    token = secrets.token_hex(4)
    base = replace(settings, worker_app_id=f"riskengine-bench-{token}", worker_topic_suffix=f"-bench-{token}")

    names = topic_names(base)
    # The order-flow row's own topics: the other rows' stages must not see its events.
    flow = replace(base, worker_topic_suffix=f"-bench-{token}-flow")
    outputs = {path: output_topic(path, base) for path in ("raw", "passthrough")}
    specs = topic_specs(base) + [
        TopicSpec(name, base.topic_partitions, base.topic_replication_factor, {}) for name in outputs.values()
    ]
    if args.order_flow_trades:
        specs += topic_specs(flow)
    results: list[Outcome] = []
    flows: list[FlowOutcome] = []
    flow_counts = (0, 0)
    children: list[Child] = []
    latencies: dict[str, list[Latency]] = {}
    with tempfile.TemporaryDirectory(prefix="riskengine-bench-") as scratch:
        try:
            await ensure_topics(base, specs)
            catalog = SchemaCatalog.for_settings(base)
            await catalog.register()
            stream = build_stream(
                args.users, args.trades + int(args.rate * args.seconds) * len(loops), args.seed
            )
            trades = iter(stream)
            await _produce_reference(base, catalog, stream.reference.profiles, names.user_profiles)
            await _preproduce(base, catalog, trades, args.trades, names.trades)
            if args.order_flow_trades:
                flow_counts = await _preproduce_flow(flow, catalog, args.order_flow_trades, args.seed)
            # Each stage reads the whole trades topic in a new group: after a loop's latency phase
            # that topic holds those trades too, and the next loop's stages process them as well.
            inputs = args.trades
            for loop in loops:
                stages = [(path, outputs[path]) for path in ("raw", "passthrough")]
                stages.append(("engine", names.analyzed_trades))
                for path, out in stages:

                    def launch(path: str = path, out: str = out, loop: str = loop) -> Child:
                        child = _launch(base, path, path, loop, Path(scratch), token, args.profile, args.logs)
                        children.append(child)
                        return child

                    rate, child = await _measure(base, out, inputs, f"{path}[{loop}]", launch)
                    results.append(Outcome(loop, path, rate, inputs))
                    if path == "engine":
                        latencies[loop] = await _latency(
                            base, catalog, trades, names, args.rate, args.seconds, loop
                        )
                        inputs += int(args.rate * args.seconds)
                    child.stop()
                if args.order_flow_trades:

                    def launch_flow(loop: str = loop) -> Child:
                        child = _launch(
                            flow, "order-flow", "engine", loop, Path(scratch), token, None, args.logs
                        )
                        children.append(child)
                        return child

                    flow_trades, flow_orders = flow_counts
                    rate, child = await _measure(
                        flow,
                        topic_names(flow).analyzed_trades,
                        flow_trades,
                        f"order-flow[{loop}]",
                        launch_flow,
                    )
                    events_rate = rate * (flow_trades + flow_orders) / flow_trades
                    flows.append(FlowOutcome(loop, flow_trades, flow_orders, events_rate))
                    child.stop()
        finally:
            for child in children:
                child.stop()
            _say(f"deleted {await delete_topics(base, token)} topics of this run")
    _report(args, results, flows, latencies)


def _report(
    args: argparse.Namespace,
    results: list[Outcome],
    flows: list[FlowOutcome],
    latencies: dict[str, list[Latency]],
) -> None:
    labels = {
        "raw": "raw aiokafka consume->produce (bytes)",
        "passthrough": "Faust passthrough agent (forwards)",
        "engine": "full engine (faust -A riskengine)",
    }
    print()
    print(f"throughput: {args.trades:,} pre-produced trades, {args.users:,} users, one worker")
    print(f"{'loop':<8} {'path':<40} {'trades':>8} {'trades/s':>10} {'vs passthrough':>15}")
    for outcome in results:
        passthrough = next(r.rate for r in results if r.loop == outcome.loop and r.path == "passthrough")
        print(
            f"{outcome.loop:<8} {labels[outcome.path]:<40} {outcome.trades:>8,} {outcome.rate:>10,.0f} "
            f"{outcome.rate / passthrough:>14.0%}"
        )
    if flows:
        print()
        print(
            f"order flow: a simulator run of {flows[0].trades:,} trades and {flows[0].order_events:,} "
            "order events, full engine, one worker"
        )
        print(f"{'loop':<8} {'events/s':>10} {'trades/s':>10} {'vs passthrough':>15}")
        for row in flows:
            passthrough = next(r.rate for r in results if r.loop == row.loop and r.path == "passthrough")
            trades_rate = row.rate * row.trades / (row.trades + row.order_events)
            print(f"{row.loop:<8} {row.rate:>10,.0f} {trades_rate:>10,.0f} {row.rate / passthrough:>14.0%}")
    print()
    print(
        f"latency: engine at a steady {args.rate:,} trades/s for {args.seconds:g} s "
        "(trade timestamp -> analyzed trade received)"
    )
    print(
        f"{'loop':<8} {'received':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}"
        f"   {'in p50':>7} {'in p99':>7} {'out p50':>8} {'out p99':>8}"
    )
    for loop, values in latencies.items():
        total = [value.total for value in values]
        p50, p95, p99 = _percentiles(total, 50, 95, 99)
        in50, in99 = _percentiles([value.to_processed for value in values], 50, 99)
        out50, out99 = _percentiles([value.total - value.to_processed for value in values], 50, 99)
        print(
            f"{loop:<8} {len(values):>9,} {p50:>8.1f} {p95:>8.1f} {p99:>8.1f} {max(total):>8.1f}"
            f"   {in50:>7.1f} {in99:>7.1f} {out50:>8.1f} {out99:>8.1f}"
        )


def _percentiles(values: list[float], *which: int) -> list[float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return [cuts[p - 1] for p in which]


async def _produce_reference(settings: Settings, catalog: SchemaCatalog, profiles: Any, topic: str) -> None:
    """The generator's profiles on the (compacted) profiles topic, as a venue would have them."""
    producer = AIOKafkaProducer(**client_options(settings), acks="all", linger_ms=20)
    await producer.start()
    try:
        for profile in profiles.values():
            record = {
                "userId": profile.user_id,
                "customerId": profile.customer_id,
                "kycTier": profile.kyc_tier,
                "country": profile.country,
                "sanctioned": profile.sanctioned,
                "linkedAccounts": sorted(profile.linked_accounts),
                "updatedAt": 0,
            }
            await producer.send(topic, catalog.encode("UserProfile", record), key=profile.user_id.encode())
        await producer.flush()
    finally:
        await producer.stop()
    _say(f"produced {len(profiles):,} profiles")


async def _preproduce(
    settings: Settings, catalog: SchemaCatalog, trades: Iterator[Trade], count: int, topic: str
) -> None:
    """``count`` trades of the generator, encoded and acknowledged before anything is timed."""
    producer = AIOKafkaProducer(
        **client_options(settings), acks="all", linger_ms=20, max_batch_size=256 * 1024
    )
    await producer.start()
    try:
        for number in range(1, count + 1):
            trade = next(trades)
            await producer.send(
                topic, catalog.encode("CryptoTrade", trade.to_record()), key=trade.user_id.encode()
            )
            if number % 20_000 == 0:
                _say(f"pre-produced {number:,}/{count:,} trades")
        await producer.flush()
    finally:
        await producer.stop()
    _say(f"pre-produced {count:,} trades on {topic}")


async def _preproduce_flow(
    settings: Settings, catalog: SchemaCatalog, trades: int, seed: int
) -> tuple[int, int]:
    """A simulator run of ``trades`` trades on ``settings``' topics: profiles, trades, order events.

    Returns (trades, order events) produced.
    """
    names = topic_names(settings)
    simulator = Simulator(SimulationConfig(seed=seed))
    producer = AIOKafkaProducer(
        **client_options(settings), acks="all", linger_ms=20, max_batch_size=256 * 1024
    )
    await producer.start()
    counts = {EventKind.TRADE: 0, EventKind.ORDER: 0}
    topics = {EventKind.TRADE: names.trades, EventKind.ORDER: names.orders}
    try:
        for profile in simulator.profiles():
            value = catalog.encode("UserProfile", profile)
            await producer.send(names.user_profiles, value, key=profile["userId"].encode())
        for event in simulator.events(trades):
            value = catalog.encode(event.kind.record_name, event.record)
            await producer.send(topics[event.kind], value, key=event.user_id.encode())
            counts[event.kind] += 1
            if event.kind is EventKind.TRADE and counts[event.kind] % 10_000 == 0:
                _say(f"order flow: pre-produced {counts[EventKind.TRADE]:,}/{trades:,} trades")
        await producer.flush()
    finally:
        await producer.stop()
    made = counts[EventKind.TRADE], counts[EventKind.ORDER]
    _say(f"order flow: pre-produced {made[0]:,} trades, {made[1]:,} order events")
    return made


class Child:
    """A stage's subprocess; :meth:`stop` always ends it (SIGTERM, then SIGKILL after 30 s)."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path, keep: Path | None) -> None:
        self.log_path = log_path
        self.keep = keep
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)

    def check(self, label: str) -> None:
        """Raise StageFailed with the log tail if the process has exited."""
        if self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise StageFailed(f"{label} exited with {self.process.returncode}:\n{tail}")

    def stop(self) -> None:
        """End the process and wait for it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.keep is not None:
            self.keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(self.log_path, self.keep / self.log_path.name)


def _launch(
    base: Settings,
    stage: str,
    path: str,
    loop: str,
    scratch: Path,
    token: str,
    profile: Path | None,
    logs: Path | None,
) -> Child:
    """Start ``stage`` (its own group and data): the raw loop, the passthrough app or the engine."""
    env = dict(os.environ)
    env["RISKENGINE_WORKER_APP_ID"] = f"riskengine-bench-{token}-{stage}-{loop}"
    env["RISKENGINE_WORKER_TOPIC_SUFFIX"] = base.worker_topic_suffix
    env["RISKENGINE_TOPIC_PARTITIONS"] = str(base.topic_partitions)
    # The snapshot timer is not part of what is measured.
    env["RISKENGINE_WORKER_SNAPSHOT_INTERVAL"] = "0"
    datadir = scratch / f"{stage}-{loop}"
    if path == "raw":
        argv = [sys.executable, "-m", "riskengine_devtools.bench_e2e", loop]
    else:
        app = "riskengine" if path == "engine" else "riskengine_devtools.bench_e2e:passthrough"
        argv = [str(FAUST), "-A", app, "--datadir", str(datadir), "-l", "info", "--loop", loop, "worker"]
        argv += ["--web-port", str(_free_port()), "--web-host", "127.0.0.1"]
        if path == "engine" and profile is not None:
            profile.mkdir(parents=True, exist_ok=True)
            argv = [sys.executable, "-m", "cProfile", "-o", str(profile / f"{stage}-{loop}.prof"), *argv]
    _say(f"{stage}[{loop}]: starting")
    return Child(argv, env, scratch / f"{stage}-{loop}.log", logs)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _output_consumer(settings: Settings, topic: str) -> AIOKafkaConsumer:
    """A group-less consumer of every partition of ``topic`` from its current end, fetching eagerly."""
    consumer = AIOKafkaConsumer(
        **client_options(settings),
        enable_auto_commit=False,
        fetch_max_wait_ms=5,
        max_partition_fetch_bytes=4 << 20,
    )
    await consumer.start()
    partitions = consumer.partitions_for_topic(topic) or set()
    if not partitions:
        await refresh_metadata(consumer)
        partitions = consumer.partitions_for_topic(topic) or set()
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:  # resolve the positions now, before the stage writes anything
        await consumer.position(tp)
    return consumer


async def _measure(
    settings: Settings, topic: str, count: int, label: str, launch: Callable[[], Child]
) -> tuple[float, Child]:
    """Launch a stage, wait for ``count`` new records on ``topic``; trades/s from first to last arrival."""
    consumer = await _output_consumer(settings, topic)
    try:
        child = launch()
        seen = 0
        first = last = 0.0
        loop = asyncio.get_running_loop()
        progress_at = loop.time() + 5.0
        stalled_at = loop.time() + STALL_S
        while seen < count:
            batches = await consumer.getmany(timeout_ms=200, max_records=10_000)
            now = loop.time()
            received = sum(len(records) for records in batches.values())
            if received:
                if seen == 0:
                    first = time.perf_counter()
                    _say(f"{label}: first output")
                seen += received
                last = time.perf_counter()
                stalled_at = now + STALL_S
            elif now > stalled_at:
                raise StageFailed(f"{label}: no output for {STALL_S:.0f} s after {seen:,} records")
            child.check(label)
            if now > progress_at and seen:
                _say(f"{label}: {seen:,}/{count:,} outputs, {seen / max(last - first, 1e-9):,.0f}/s so far")
                progress_at = now + 5.0
    finally:
        await consumer.stop()
    rate = (count - 1) / (last - first)
    _say(f"{label}: {count:,} outputs, {rate:,.0f} trades/s")
    return rate, child


async def _latency(
    settings: Settings,
    catalog: SchemaCatalog,
    trades: Iterator[Trade],
    names: Any,
    rate: int,
    seconds: float,
    loop_name: str,
) -> list[Latency]:
    """Produce at ``rate`` for ``seconds`` (timestamp = send time); latencies in ms of the outputs."""
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False, fetch_max_wait_ms=5)
    await consumer.start()
    tps = [TopicPartition(names.analyzed_trades, p) for p in range(settings.topic_partitions)]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:  # resolve the end positions now: only outputs of this phase count
        await consumer.position(tp)
    producer = AIOKafkaProducer(**client_options(settings), acks="all")
    await producer.start()
    total = int(rate * seconds)
    latencies: list[Latency] = []

    async def collect() -> None:
        while len(latencies) < total:
            batches = await consumer.getmany(timeout_ms=100)
            arrived = time.time() * 1000
            for records in batches.values():
                for record in records:
                    analyzed = catalog.decode(record.value, "RiskAnalyzedTrade")
                    sent_at = analyzed["eventTimestamp"]
                    processed_at = analyzed["processedAt"]
                    latencies.append(Latency(arrived - sent_at, processed_at - sent_at))

    collector = asyncio.ensure_future(collect())
    _say(f"latency[{loop_name}]: {total:,} trades at {rate:,}/s")
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for sent in range(total):
            # Paced against the start time, so a slow iteration does not lower the mean rate.
            delay = start + sent / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            record = next(trades).to_record()
            record["timestamp"] = int(time.time() * 1000)
            await producer.send(
                names.trades, catalog.encode("CryptoTrade", record), key=record["userId"].encode()
            )
            if sent and sent % (rate * 5) == 0:
                _say(f"latency[{loop_name}]: sent {sent:,}, received {len(latencies):,}")
        await asyncio.wait_for(asyncio.shield(collector), timeout=30.0)
    except TimeoutError:
        _say(f"latency[{loop_name}]: only {len(latencies):,} of {total:,} outputs within 30 s")
    finally:
        collector.cancel()
        await producer.stop()
        await consumer.stop()
    return latencies


async def raw_forward(settings: Settings, source: str, out: str) -> None:
    """The raw path: consume ``source`` in the app id's group, forward key and value bytes to ``out``."""
    consumer = AIOKafkaConsumer(
        source,
        **client_options(settings),
        group_id=settings.worker_app_id,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 << 20,
    )
    producer = AIOKafkaProducer(**client_options(settings), acks="all")
    await consumer.start()
    await producer.start()
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=5_000)
            for records in batches.values():
                for record in records:
                    await producer.send(out, record.value, key=record.key)
    finally:
        await producer.stop()
        await consumer.stop()


def __getattr__(name: str) -> Any:
    # ``faust -A riskengine_devtools.bench_e2e:passthrough`` looks the app up here; building it lazily
    # keeps ``riskengine --help`` free of Faust.
    if name == "passthrough":
        app = _passthrough_app(Settings.from_env())
        globals()["passthrough"] = app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _passthrough_app(settings: Settings) -> Any:
    """A Faust app with the worker's configuration and one agent that forwards every event."""
    import faust

    from riskengine.worker.app import app_options
    from riskengine.worker.gc_tuning import tune_garbage_collector

    app = faust.App(settings.worker_app_id, **app_options(settings))
    tune_garbage_collector(app)
    partitions = settings.topic_partitions
    source = app.topic(topic_names(settings).trades, key_type=bytes, value_type=bytes, partitions=partitions)
    out = app.topic(
        output_topic("passthrough", settings), key_type=bytes, value_type=bytes, partitions=partitions
    )

    @app.agent(source, name="passthrough")
    async def forward(stream: Any) -> None:
        async for event in stream.events():
            await out.send(key=event.key, value=event.value)

    return app


if __name__ == "__main__":
    # ``python -m riskengine_devtools.bench_e2e LOOP``: the raw stage's subprocess.
    _settings = Settings.from_env()
    _runner = asyncio.run
    if sys.argv[1] == "uvloop":
        import uvloop

        _runner = uvloop.run
    _source = TOPICS.trades + _settings.worker_topic_suffix
    # SIGTERM ends it: there is nothing to commit or flush that the benchmark needs.
    _runner(raw_forward(_settings, _source, output_topic("raw", _settings)))
