"""The chaos scenarios: steady load, a fault injected mid-load, then the verifier.

Each scenario runs on its own app id and topic suffix (``riskengine-chaos-<name>-<token>``), starts
its worker processes under a :class:`Supervisor` (a worker that exits is started again, as
Kubernetes restarts a pod; every restart is counted and shown), produces the generated flow at a
steady rate (:class:`~riskengine_devtools.chaos.load.SteadyLoad`) while its ``inject`` coroutine
injects the faults, and then reads every topic back and checks it
(:func:`verify`). A restart never hides a loss: the verifier compares what came out with what was
acknowledged on the inputs, whatever happened in between.

Recovery time (see :func:`~riskengine_devtools.chaos.verifier.recovery_times`): from the fault until
the last analyzed trade held up by it came out, i.e. until every trade sent before the next fault is
again answered within the normal latency (3 x the p95 end-to-end latency before the first fault, at
least 2 s). It includes the supervisor's restarts and the time the worker takes to rejoin and
restore its tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import elastic_transport
from elasticsearch import ApiError, AsyncElasticsearch

from riskengine.contracts.avro_codec import SchemaCatalog
from riskengine.core import OrderEvent, Trade, decode_state
from riskengine.core.account_pairs import encode_pair_state
from riskengine.core.market import encode_market_state
from riskengine.search.reporting import Indices, elasticsearch_client
from riskengine.search.sink_connector import delete, deploy
from riskengine.settings import Settings
from riskengine.worker.repartition import CLOCK_KEY
from riskengine.worker.snapshots import snapshot_store
from riskengine.worker.tables.user_state import (
    JOURNAL_KEY,
    MARKET_TABLE_NAME,
    PAIR_TABLE_NAME,
    TABLE_NAME,
    decode_envelope,
)
from riskengine_devtools import DevtoolsError
from riskengine_devtools.chaos.flow import generated_flow, in_event_time, one_process
from riskengine_devtools.chaos.kafka_io import collect, delete_topics, read_all
from riskengine_devtools.chaos.load import Sent, SteadyLoad
from riskengine_devtools.chaos.verifier import (
    Check,
    DeadLetter,
    Recovery,
    StateCheck,
    Verification,
    check_dead_letters,
    check_delivery,
    check_states,
    last_values,
    recovery_times,
)
from riskengine_devtools.chaos.workers import WorkerProcess, isolated, prepare
from riskengine_devtools.stack import build_services
from riskengine_devtools.stack.procs import is_alive, owns, read_pid_file
from riskengine_devtools.stack.runner import stack_lock, up
from riskengine_devtools.stack.service import Say, Service, StackPaths

#: Seconds the verifier waits for the outputs after the load ended (then reports what is missing).
OUTPUT_WAIT_S = 240.0
#: Attempts at starting a stack service again after its fault.
START_ATTEMPTS = 3
#: Seconds between progress lines.
PROGRESS_EVERY_S = 10.0


class ChaosError(DevtoolsError):
    """A scenario could not run (a service would not come back, a worker never got ready)."""


def why_exited(log: str) -> str:
    """The last error line of a worker's log (Faust logs the exception that ended it), else its last line."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    errors = [line for line in lines if "[ERROR]" in line or "[CRITICAL]" in line]
    return (errors or lines or ["empty log"])[-1][:300]


class Supervisor:
    """Keeps the scenario's workers running as Kubernetes would: one that exits is started again.

    A worker exits on purpose when it cannot make a batch durable (see ``riskengine.worker.commit``);
    the supervisor counts every restart, tells those it caused (a SIGKILL of the scenario) from
    unplanned exits, and logs the exit code and log tail of the unplanned ones.
    """

    def __init__(self, workers: list[WorkerProcess], say: Say) -> None:
        self.workers = workers
        self.say = say
        #: workers that should be running (a stopped one is left alone)
        self.wanted: set[int] = set()
        self.restarts = 0
        self.unplanned = 0
        self._planned: set[int] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self, index: int) -> None:
        """Start worker ``index`` and keep it running."""
        self.wanted.add(index)
        self.workers[index].start()

    def stop(self, index: int) -> None:
        """Stop worker ``index`` gracefully (SIGTERM) and leave it stopped."""
        self.wanted.discard(index)
        self.workers[index].stop()

    def kill(self, index: int) -> None:
        """SIGKILL worker ``index``; the supervisor restarts it like any exited worker."""
        self._planned.add(index)
        self.workers[index].kill()

    async def watch(self) -> None:
        """Restart exited wanted workers, twice a second, until cancelled."""
        while True:
            for index in sorted(self.wanted):
                worker = self.workers[index]
                if worker.alive:
                    continue
                assert worker.process is not None
                code = worker.process.returncode
                self.restarts += 1
                if index in self._planned:
                    self._planned.discard(index)
                    self.say(f"supervisor: w{index + 1} killed (exit {code}); restarting it")
                else:
                    self.unplanned += 1
                    reason = why_exited(worker.log())
                    self.say(f"supervisor: w{index + 1} EXITED with {code} ({reason}); restarting it")
                worker.start()
            await asyncio.sleep(0.5)

    def __enter__(self) -> Supervisor:
        self._task = asyncio.create_task(self.watch())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        for index in list(self.wanted):
            self.stop(index)


@dataclass
class Context:
    """What a scenario's fault injector works with."""

    name: str
    base: Settings
    settings: Settings
    catalog: SchemaCatalog
    workdir: Path
    workers: list[WorkerProcess]
    supervisor: Supervisor
    load: SteadyLoad
    say: Say
    rng: random.Random
    #: wall-clock ms of each fault, for the recovery times
    faults_ms: list[int] = field(default_factory=list)
    #: scenario-specific facts for the extra checks (restart moments ...)
    notes: dict[str, Any] = field(default_factory=dict)

    def fault(self, what: str) -> None:
        """Record a fault at this moment, and say what it is."""
        self.faults_ms.append(int(time.time() * 1000))
        self.say(f"FAULT {len(self.faults_ms)}: {what}")

    async def at(self, share: float) -> None:
        """Sleep until ``share`` (0..1) of the load's nominal duration has passed since it started
        and that share of its events has been sent (a fault is not injected into a load that an
        earlier fault still holds up, e.g. while the broker restarts)."""
        await self.load.started.wait()
        delay = self.load.started_at + share * self.load.duration - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        # A counter the load advances; polled, as each fault waits for a threshold of its own.
        while self.load.position < share * len(self.load.items):  # noqa: ASYNC110
            await asyncio.sleep(0.2)

    def service(self, name: str) -> Service:
        """The stack service ``name`` (kafka, registry, s3, elastic, connect)."""
        (service,) = build_services(self.base, only=[name])
        return service

    async def hard_kill(self, name: str) -> None:
        """SIGKILL the stack service's process group: no shutdown, no flush."""
        service = self.service(name)
        record = read_pid_file(service.pid_file)
        if record is None or not owns(record):
            raise ChaosError(f"{name}: not running from this stack ({service.pid_file})")
        # Started in a session of its own, the server leads its process group (the JVM and helpers).
        os.killpg(record.pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while is_alive(record.pid):
            if time.monotonic() > deadline:
                raise ChaosError(f"{name}: pid {record.pid} survived SIGKILL")
            await asyncio.sleep(0.1)

    async def start_service(self, name: str) -> float:
        """Start the stack service again through the stack's own code; returns its start-up seconds."""
        started = time.monotonic()
        lines: list[str] = []
        # A server just started on a busy machine may answer its probe and still time out in the
        # stack's set-up step (the registry replaying its Kafka journal): `up` again re-uses the
        # running process and repeats only the set-up.
        for _ in range(START_ATTEMPTS):
            with stack_lock(StackPaths.from_settings(self.base), lines.append):
                code = await up([self.service(name)], self.base.stack_start_timeout, lines.append)
            if code == 0:
                break
            await asyncio.sleep(5)
        else:
            raise ChaosError(f"{name} did not start again:\n" + "\n".join(lines))
        seconds = time.monotonic() - started
        self.say(f"{name} is back ({seconds:.1f} s to start)")
        return seconds


Inject = Callable[[Context], Coroutine[Any, Any, None]]
ExtraCheck = Callable[[Context, "Outputs"], Awaitable[list[Check]]]


@dataclass(frozen=True)
class Scenario:
    """One chaos scenario."""

    name: str
    summary: str
    inject: Inject
    #: workers started before the load (the injector may start more)
    workers: int = 2
    #: extra worker processes the injector may start (indices after ``workers``)
    spare_workers: int = 0
    garbage_ratio: float = 0.0
    #: extra settings of the workers (RISKENGINE_ names without the prefix, lower case)
    worker_env: dict[str, str] = field(default_factory=dict)
    extra_checks: ExtraCheck | None = None
    #: runs before the workers start (connector deployment ...) and its clean-up after
    setup: Callable[[Context], Awaitable[None]] | None = None
    teardown: Callable[[Context], Awaitable[None]] | None = None


@dataclass
class Outputs:
    """What the verifier read back: decoded ids and raw bytes of each output."""

    analyzed: list[tuple[str, bytes, int]]
    alerts: list[tuple[str, bytes]]
    inputs: list[tuple[str, bytes]]
    dead_letters: list[DeadLetter]


@dataclass(frozen=True)
class Result:
    """One row of the results table."""

    scenario: str
    inputs: int
    outputs: int
    lost: int
    duplicated: int
    verdict: str
    recovery: Recovery
    restarts: int
    unplanned: int
    seconds: float
    lines: tuple[str, ...]
    #: what else the recovery column says (the index catching up after an Elasticsearch outage)
    note: str = ""

    @property
    def recovery_text(self) -> str:
        """The recovery column: the worst recovery time (per fault when several), and the note."""
        text = format_recovery(self.recovery)
        return f"{text}; {self.note}" if self.note else text


async def _analyzed(
    settings: Settings, catalog: SchemaCatalog, trade_ids: set[str]
) -> list[tuple[str, bytes, int]]:
    """(tradeId, value, record timestamp ms) of risk-analyzed-trades, once every trade has one or after
    :data:`OUTPUT_WAIT_S`."""

    def ident(record: Any) -> str:
        trade_id: str = catalog.decode(record.value, "RiskAnalyzedTrade")["originalTrade"]["tradeId"]
        return trade_id

    seen: set[str] = set()
    count = 0

    def done(records: list[Any]) -> bool:
        nonlocal count
        seen.update(ident(r) for r in records[count:])
        count = len(records)
        return seen >= trade_ids

    topic = f"risk-analyzed-trades{settings.worker_topic_suffix}"
    records = await collect(settings, topic, done, wait_s=OUTPUT_WAIT_S)
    return [(ident(r), r.value, r.timestamp) for r in records]


async def _alerts(settings: Settings, catalog: SchemaCatalog, alert_ids: set[str]) -> list[tuple[str, bytes]]:
    """(alertId, value) of risk-alerts, once every expected alert is there or after 60 s."""

    def ident(record: Any) -> str:
        alert_id: str = catalog.decode(record.value, "RiskAlert")["alertId"]
        return alert_id

    records = await collect(
        settings,
        f"risk-alerts{settings.worker_topic_suffix}",
        lambda rs: {ident(r) for r in rs} >= alert_ids,
        wait_s=60.0,
    )
    return [(ident(r), r.value) for r in records]


async def _inputs(settings: Settings, catalog: SchemaCatalog) -> tuple[list[tuple[str, bytes]], int]:
    """(event id, value) of every decodable input on the broker, and how many did not decode."""
    found: list[tuple[str, bytes]] = []
    undecodable = 0
    for topic, contract, key in (
        ("crypto-trades", "CryptoTrade", "tradeId"),
        ("crypto-orders", "OrderEvent", "eventId"),
    ):
        for record in await read_all(settings, topic + settings.worker_topic_suffix):
            try:
                found.append((catalog.decode(record.value, contract)[key], record.value))
            except Exception:  # garbage of the poison storm: checked against the dead letters
                undecodable += 1
    return found, undecodable


async def _dead_letters(settings: Settings) -> list[DeadLetter]:
    letters = []
    for topic in ("crypto-trades-dlq", "crypto-orders-dlq"):
        for record in await read_all(settings, topic + settings.worker_topic_suffix):
            headers = {k: v.decode() for k, v in record.headers}
            content = record.value + repr(sorted(record.headers)).encode()
            letters.append(
                DeadLetter(
                    headers.get("source-topic", "?"),
                    int(headers.get("source-partition", -1)),
                    int(headers.get("source-offset", -1)),
                    content,
                )
            )
    return letters


async def final_states(settings: Settings) -> dict[str, dict[str, bytes]]:
    """The last changelog value per key of the three tables (user, market, pair), by table name."""
    tables = {}
    for table in (TABLE_NAME, MARKET_TABLE_NAME, PAIR_TABLE_NAME):
        records = await read_all(settings, f"{settings.worker_app_id}-{table}-changelog")
        tables[table] = last_values(
            ((r.partition, r.offset, r.key, r.value) for r in records), skip=(CLOCK_KEY, JOURNAL_KEY)
        )
    return tables


def state_checks(
    tables: dict[str, dict[str, bytes]], trades: list[Trade], orders: list[OrderEvent], partitions: int
) -> list[StateCheck]:
    """The final user, market and pair states (see :func:`final_states`) against one process's."""
    states, _, cross = one_process(trades, orders, partitions)
    users = {user: decode_state(decode_envelope(value).state) for user, value in tables[TABLE_NAME].items()}
    return [
        check_states("user states", states, users),
        check_states(
            "market states",
            {k: encode_market_state(v) for k, v in cross.markets.items()},
            tables[MARKET_TABLE_NAME],
        ),
        check_states(
            "pair states", {k: encode_pair_state(v) for k, v in cross.pairs.items()}, tables[PAIR_TABLE_NAME]
        ),
    ]


async def settled_state_checks(
    settings: Settings, trades: list[Trade], orders: list[OrderEvent], wait_s: float = 60.0
) -> list[StateCheck]:
    """:func:`state_checks`, repeated until every check passes or ``wait_s`` passed (the last result).

    The last order events (cancels after the last trade) have no output of their own to wait for,
    and the market agent releases the last executions only once the trades partitions are idle.
    """
    deadline = time.monotonic() + wait_s
    while True:
        states = state_checks(await final_states(settings), trades, orders, settings.topic_partitions)
        if all(s.ok for s in states) or time.monotonic() > deadline:
            return states
        await asyncio.sleep(3)


async def verify(
    ctx: Context, trades: list[Trade], orders: list[OrderEvent], sent: list[Sent], scenario: Scenario
) -> tuple[Verification, Outputs, Recovery]:
    """Read every topic back and check it (see :mod:`riskengine_devtools.chaos.verifier`)."""
    settings, catalog, say = ctx.settings, ctx.catalog, ctx.say
    _, expected_alerts, _ = one_process(trades, orders, settings.topic_partitions)
    result = Verification()

    inputs, undecodable = await _inputs(settings, catalog)
    result.deliveries.append(
        check_delivery(
            "inputs on the broker (the load's events, read back)",
            [t.trade_id for t in trades] + [o.event_id for o in orders],
            inputs,
        )
    )
    say(result.deliveries[-1].line())

    analyzed = await _analyzed(settings, catalog, {t.trade_id for t in trades})
    result.deliveries.append(
        check_delivery("analyzed trades", [t.trade_id for t in trades], [(i, v) for i, v, _ in analyzed])
    )
    say(result.deliveries[-1].line())
    alerts = await _alerts(settings, catalog, {a.alert_id for a in expected_alerts})
    result.deliveries.append(
        check_delivery("alerts (ids of the one-process run)", [a.alert_id for a in expected_alerts], alerts)
    )
    say(result.deliveries[-1].line())

    letters = await _dead_letters(settings)
    garbage = [(s.topic, s.partition, s.offset) for s in sent if s.kind == "garbage"]
    result.deliveries.append(check_dead_letters(garbage, letters))
    say(result.deliveries[-1].line())
    result.checks.append(
        Check(
            "garbage on the inputs = garbage the load sent",
            undecodable == len(garbage),
            f"{undecodable} undecodable input records, {len(garbage)} sent",
            loss=False,
        )
    )
    say(result.checks[-1].line())

    states = await settled_state_checks(settings, trades, orders)
    result.states.extend(states)
    for state in states:
        say(state.line())

    outputs = Outputs(analyzed, alerts, inputs, letters)
    if scenario.extra_checks is not None:
        for check in await scenario.extra_checks(ctx, outputs):
            result.checks.append(check)
            say(check.line())

    sent_at = {s.ident: s.sent_ms for s in sent if s.kind == "trade"}
    first_out: dict[str, int] = {}
    for ident, _, stamp in analyzed:
        first_out[ident] = min(stamp, first_out.get(ident, stamp))
    recovery = recovery_times({i: (ms, first_out.get(i)) for i, ms in sent_at.items()}, ctx.faults_ms)
    return result, outputs, recovery


async def _progress(ctx: Context) -> None:
    started = time.monotonic()
    while True:
        await asyncio.sleep(PROGRESS_EVERY_S)
        alive = sum(w.alive for w in ctx.workers)
        ctx.say(
            f"progress {time.monotonic() - started:5.0f} s: {ctx.load.progress()}, workers alive {alive}, "
            f"restarts {ctx.supervisor.restarts} ({ctx.supervisor.unplanned} unplanned)"
        )


async def _wait_ready(ctx: Context, indices: list[int]) -> None:
    for index in indices:
        try:
            await ctx.workers[index].wait_ready(120.0)
        except AssertionError as exc:
            raise ChaosError(f"w{index + 1} never got ready: {exc}") from None


async def wait_group_stable(workers: list[WorkerProcess], partitions: int, wait_s: float = 90.0) -> None:
    """Wait until the running workers together own every trades partition, each exactly once."""
    deadline = time.monotonic() + wait_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while time.monotonic() < deadline:
            owned: list[set[str]] = []
            for worker in workers:
                if not worker.alive:
                    continue
                try:
                    async with session.get(f"{worker.url}/stats") as response:
                        stats = await response.json() if response.status == 200 else {}
                except (aiohttp.ClientError, TimeoutError):
                    stats = {}
                owned.append(set(stats.get("consumerLag", {})))
            union = set().union(*owned) if owned else set()
            if owned and all(owned) and len(union) == partitions and sum(map(len, owned)) == partitions:
                return
            await asyncio.sleep(0.5)
    raise ChaosError("the workers never split the partitions between them")


async def run_scenario(
    scenario: Scenario, base: Settings, workroot: Path, rate: float, seconds: float, say: Say, seed: int
) -> Result:
    """Run one scenario end to end and return its row of the results table."""
    started = time.monotonic()
    token = secrets.token_hex(3)
    unique = f"chaos-{scenario.name}-{token}"
    settings = isolated(base, unique, prefix="riskengine")
    workdir = workroot / unique
    workdir.mkdir(parents=True, exist_ok=True)
    say(f"=== {scenario.name}: {scenario.summary}")
    say(f"app id {settings.worker_app_id}, topic suffix {settings.worker_topic_suffix}, logs in {workdir}")
    catalog = await prepare(settings)
    # About 3.6 events per trade (each trade's order placed and filled, resting orders, cancels).
    trades, orders = generated_flow(max(200, int(rate * seconds / 3.6)))
    items = in_event_time(trades, orders)
    load = SteadyLoad(settings, catalog, items, rate, scenario.garbage_ratio, seed=seed)
    workers = [
        WorkerProcess(
            settings, workdir / f"data-w{n}", name=f"w{n}", worker_session_timeout="6", **scenario.worker_env
        )
        for n in range(1, scenario.workers + scenario.spare_workers + 1)
    ]
    supervisor = Supervisor(workers, say)
    ctx = Context(
        scenario.name, base, settings, catalog, workdir, workers, supervisor, load, say, random.Random(seed)
    )
    say(
        f"load: {len(trades)} trades + {len(orders)} order events at {rate:.0f} events/s "
        f"(~{load.duration:.0f} s), garbage {scenario.garbage_ratio:.0%}"
    )
    try:
        if scenario.setup is not None:
            await scenario.setup(ctx)
        with supervisor:
            for index in range(scenario.workers):
                supervisor.start(index)
            await _wait_ready(ctx, list(range(scenario.workers)))
            await wait_group_stable(workers[: scenario.workers], settings.topic_partitions)
            say(f"{scenario.workers} worker(s) ready; load starts")
            progress = asyncio.create_task(_progress(ctx))
            try:
                injector = asyncio.create_task(scenario.inject(ctx))
                sent = await load.run(say)
                say(f"load done: {len(sent)} messages acknowledged, {load.retries} chunk retries")
                await injector
            finally:
                progress.cancel()
            say("verifying ...")
            verification, outputs, recovery = await verify(ctx, trades, orders, sent, scenario)
    finally:
        if scenario.teardown is not None:
            await scenario.teardown(ctx)
    verdict = verification.verdict
    lost = sum(len(d.lost) for d in verification.deliveries) + sum(
        len(s.missing) for s in verification.states
    )
    duplicated = sum(d.duplicated for d in verification.deliveries[1:])
    total_out = len(outputs.analyzed) + len(outputs.alerts) + len(outputs.dead_letters)
    say(
        f"{verdict}: {scenario.name}: inputs {len(sent)}, outputs {total_out}, lost {lost}, "
        f"duplicated {duplicated}, recovery {format_recovery(recovery)}, "
        f"restarts {supervisor.restarts} ({supervisor.unplanned} unplanned)"
    )
    if verdict == "ALL-RECORDS-DELIVERED":
        say(f"deleted {await delete_topics(base, settings.worker_topic_suffix[1:])} topics of this run")
    else:
        say(
            f"topics of this run kept for inspection (suffix {settings.worker_topic_suffix}); "
            f"logs in {workdir}"
        )
    return Result(
        scenario.name,
        len(sent),
        total_out,
        lost,
        duplicated,
        verdict,
        recovery,
        supervisor.restarts,
        supervisor.unplanned,
        time.monotonic() - started,
        tuple(verification.lines()),
        str(ctx.notes.get("recovery", "")),
    )


def format_recovery(recovery: Recovery) -> str:
    """The worst recovery time, with the per-fault ones (``-`` without faults)."""
    if not recovery.per_fault:
        return "-"
    worst = recovery.worst
    each = ", ".join("never" if r is None else f"{r:.1f}" for r in recovery.per_fault)
    return ("never" if worst is None else f"{worst:.1f} s") + (
        f" (each: {each})" if len(recovery.per_fault) > 1 else ""
    )


# -- the scenarios' fault injectors ------------------------------------------------------------------


async def sigkill_five(ctx: Context) -> None:
    """SIGKILL a random worker at five random moments of the load; the supervisor restarts it."""
    moments = sorted(ctx.rng.uniform(0.1, 0.85) for _ in range(5))
    ctx.say("SIGKILL moments (share of the load): " + ", ".join(f"{m:.2f}" for m in moments))
    for moment in moments:
        await ctx.at(moment)
        victim = ctx.rng.choice(sorted(ctx.supervisor.wanted))
        process = ctx.workers[victim].process
        ctx.fault(f"SIGKILL w{victim + 1} (pid {process.pid if process else '?'})")
        ctx.supervisor.kill(victim)


async def three_in_sequence(ctx: Context) -> None:
    """w1 runs; w2 and w3 join one after the other, then w1 and w2 leave (SIGTERM): five rebalances."""
    for share, action, index in ((0.15, "start", 1), (0.3, "start", 2), (0.45, "stop", 0), (0.6, "stop", 1)):
        await ctx.at(share)
        ctx.fault(f"{action} w{index + 1}")
        if action == "start":
            ctx.supervisor.start(index)
        else:
            await asyncio.to_thread(ctx.supervisor.stop, index)


async def no_fault(ctx: Context) -> None:
    """Nothing but the load (the poison storm is in the load itself)."""


async def broker_kill_three(ctx: Context) -> None:
    """SIGKILL the broker three times mid-load; each time it is started again through the stack."""
    for share in (0.2, 0.45, 0.7):
        await ctx.at(share)
        ctx.fault("SIGKILL kafka")
        await ctx.hard_kill("kafka")
        await asyncio.sleep(3)
        await ctx.start_service("kafka")


async def registry_restart(ctx: Context) -> None:
    """SIGKILL the schema registry mid-load and start it again (it keeps its schemas in Kafka).

    Running workers have the schemas they need cached; to make the outage matter, a worker is also
    SIGKILLed while the registry is down, so its replacement starts without any schema.
    """
    await ctx.at(0.3)
    ctx.fault("SIGKILL schema registry")
    await ctx.hard_kill("registry")
    await asyncio.sleep(5)
    ctx.fault("SIGKILL w1 while the registry is down")
    ctx.supervisor.kill(0)
    await ctx.start_service("registry")


async def _indexed_ids(es: AsyncElasticsearch, index: str, field: str) -> set[str] | None:
    """The distinct values of ``field`` (dotted) in ``index``; None while it cannot answer."""
    try:
        await es.indices.refresh(index=index, ignore_unavailable=True)
        response = await es.search(
            index=index, size=10_000, source_includes=[field], ignore_unavailable=True, allow_no_indices=True
        )
    except (ApiError, elastic_transport.TransportError):
        return None  # down, or its shards not yet recovered after the restart
    ids = set()
    for hit in response["hits"]["hits"]:
        node = hit["_source"]
        for step in field.split("."):
            node = node.get(step, {})
        if isinstance(node, str):
            ids.add(node)
    return ids


async def connector_setup(ctx: Context) -> None:
    """Deploy an Elasticsearch sink connector of the scenario's own on its topics."""
    status = await deploy(ctx.settings, name=ctx.settings.worker_app_id)
    if not status.running:
        raise ChaosError(f"connector not running: {status.describe()}")
    ctx.say(f"connector {ctx.settings.worker_app_id} running on the scenario's topics")


async def connector_teardown(ctx: Context) -> None:
    """Remove the scenario's connector and its indices (the connector first: it would recreate them)."""
    with contextlib.suppress(Exception):
        await delete(ctx.settings, ctx.settings.worker_app_id)
    indices = Indices.from_settings(ctx.settings)
    async with elasticsearch_client(ctx.settings) as es:
        with contextlib.suppress(Exception):
            await es.indices.delete(index=[indices.alerts, indices.trades], ignore_unavailable=True)


async def elasticsearch_down(ctx: Context) -> None:
    """SIGKILL Elasticsearch mid-load, leave it down 60 s, start it again."""
    await ctx.at(0.3)
    ctx.fault("SIGKILL elasticsearch (down for 60 s)")
    await ctx.hard_kill("elastic")
    await asyncio.sleep(60)
    await ctx.start_service("elastic")
    ctx.notes["back_at"] = time.monotonic()


async def elasticsearch_complete(ctx: Context, outputs: Outputs) -> list[Check]:
    """After the outage the indices hold every analyzed trade and alert id (distinct ids counted)."""
    indices = Indices.from_settings(ctx.settings)
    trade_ids = {ident for ident, _, _ in outputs.analyzed}
    alert_ids = {ident for ident, _ in outputs.alerts}
    deadline = time.monotonic() + 180
    trades: set[str] | None = None
    alerts: set[str] | None = None
    async with elasticsearch_client(ctx.settings) as es:
        while time.monotonic() < deadline:
            trades = await _indexed_ids(es, indices.trades, "originalTrade.tradeId")
            alerts = await _indexed_ids(es, indices.alerts, "alertId")
            if trades == trade_ids and alerts == alert_ids:
                break
            await asyncio.sleep(2)
    caught_up = time.monotonic() - ctx.notes.get("back_at", time.monotonic())
    checks = []
    for name, index, wanted, found in (
        ("analyzed trades", indices.trades, trade_ids, trades),
        ("alerts", indices.alerts, alert_ids, alerts),
    ):
        found = found or set()
        checks.append(
            Check(
                f"Elasticsearch index {index}: every {name} id",
                found == wanted,
                f"{len(found & wanted)}/{len(wanted)} distinct ids, {len(wanted - found)} missing, "
                f"{len(found - wanted)} unknown",
            )
        )
    ctx.notes["recovery"] = f"index complete {caught_up:.0f} s after ES was back"
    return checks


async def object_store_down(ctx: Context) -> None:
    """SIGKILL the S3 server while the workers snapshot every few seconds; start it after 25 s."""
    await ctx.at(0.3)
    ctx.fault("SIGKILL S3 (down for 25 s, snapshots every 5 s)")
    await ctx.hard_kill("s3")
    ctx.notes["down_at_ms"] = int(time.time() * 1000)
    await asyncio.sleep(25)
    await ctx.start_service("s3")
    ctx.notes["back_at_ms"] = int(time.time() * 1000)


async def snapshots_resume(ctx: Context, outputs: Outputs) -> list[Check]:
    """Snapshots failed while S3 was down (logged, the worker went on) and succeeded after it."""
    failed = sum(w.log_path.read_text(errors="replace").count("snapshot failed") for w in ctx.workers)
    store = snapshot_store(ctx.settings)
    back = ctx.notes.get("back_at_ms", 0)
    later: list[Any] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        manifests = await store.manifests(ctx.settings.worker_app_id)
        later = [m for m in manifests if m.created_at_ms > back]
        if later:
            break
        await asyncio.sleep(2)
    before = [m for m in manifests if m.created_at_ms < ctx.notes.get("down_at_ms", 0)]
    return [
        Check(
            "snapshots attempted while S3 was down failed and were logged", failed > 0, f"{failed} failures"
        ),
        Check(
            "no worker exited because of S3",
            ctx.supervisor.unplanned == 0,
            f"{ctx.supervisor.unplanned} unplanned exits",
            loss=False,
        ),
        Check(
            "a snapshot succeeded after S3 was back (snapshot listing)",
            bool(later),
            f"{len(before)} manifests before the outage, {len(later)} after it",
            loss=False,
        ),
    ]


#: Every scenario, in the order ``riskengine chaos`` runs them.
SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("sigkill", "SIGKILL of a worker (of two) at five random moments", sigkill_five),
        Scenario(
            "sequence",
            "three workers started and stopped in sequence (w2, w3 join; w1, w2 leave)",
            three_in_sequence,
            workers=1,
            spare_workers=2,
        ),
        Scenario(
            "poison", "poison-message storm: 10% of the input messages garbage", no_fault, garbage_ratio=0.1
        ),
        Scenario("broker", "broker hard kill (SIGKILL) and restart, three times", broker_kill_three),
        Scenario(
            "registry",
            "schema registry hard kill and restart; a worker SIGKILLed while it is down",
            registry_restart,
        ),
        Scenario(
            "elastic",
            "Elasticsearch down for 60 s (SIGKILL, restart); the sink connector catches up",
            elasticsearch_down,
            extra_checks=elasticsearch_complete,
            setup=connector_setup,
            teardown=connector_teardown,
        ),
        Scenario(
            "s3",
            "S3 down during snapshots (SIGKILL for 25 s, snapshots every 5 s)",
            object_store_down,
            worker_env={"worker_snapshot_interval": "5"},
            extra_checks=snapshots_resume,
        ),
    )
}
