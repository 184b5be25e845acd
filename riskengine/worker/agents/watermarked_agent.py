"""The market and account-pair agents: repartitioned executions, released in event time, per-key state.

Where a symbol's market and an owner pair's round trips are evaluated in the worker. Both agents
are one :class:`WatermarkedAgent` over a repartition topic (:mod:`riskengine.worker.repartition`),
with a state table of their own (changelog, recovery and standbys by Faust) and a
:class:`KeyedCore` that says how a key's state is read, written and evaluated:
:data:`MARKET` (by symbol, :func:`riskengine.core.market.evaluate_market_trade`) and :data:`PAIRS`
(by owner pair, :func:`riskengine.core.account_pairs.evaluate_pair_trade`).

:meth:`WatermarkedAnalysis.analyze` handles a batch without Faust:

1. per target partition, every record in arrival order: a marker updates its source's promise; an
   execution updates it too and waits in the partition's buffer, unless it is behind what the
   partition already released (late: counted, acked, no effect) or already buffered (a duplicate);
2. the partition's watermark is the smallest promise of all :data:`sources` input partitions
   (none before every source has spoken; idle sources do not count; all idle: everything goes);
   the buffered executions before it are released in (timestamp, tradeId) order, each applied to
   its key's state by the core, whose alerts become outputs (keyed by symbol, or by owner pair).
   A source is idle only while its trades partition still ends where its idle marker said (the
   broker is asked, one request per batch for the sources idle anywhere): a trade written there
   since holds the watermark until the source speaks again, so a hung owner or a takeover does not
   make that trade late;
3. the records are acked in offset order as far as every earlier one is done (a held execution
   holds back the acks after it, so a crash re-delivers it); the changed states are encoded once.

The commit protocol runs *outputs first* (see :mod:`riskengine.worker.commit`): the core's
outputs depend only on state and input, and an execution at or before its key's last applied one
changes nothing (a re-delivery re-sends its key's state to the changelog). So after a crash the
states and the alerts are those of a run without it: what replay computes from the same input.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from riskengine.core import RiskAlert, Rules
from riskengine.core.account_pairs import PairState, decode_pair_state, encode_pair_state, evaluate_pair_trade
from riskengine.core.market import (
    MarketContext,
    MarketState,
    close_minute,
    decode_market_state,
    encode_market_state,
    evaluate_market_trade,
)
from riskengine.core.rules import MINUTE_MS
from riskengine.settings import Settings
from riskengine.worker.commit import Batch, CommitProtocol, DeliveryProgress, Record, batch_producer
from riskengine.worker.context import WorkerContext
from riskengine.worker.faust_compat import Acks, Delivery, TransportApp, untrack
from riskengine.worker.pipeline import BatchPipeline
from riskengine.worker.repartition import Execution, Marker, RepartitionError, decode
from riskengine.worker.tables.user_state import StateTable

log = logging.getLogger(__name__)

S = TypeVar("S")
#: Keys whose decoded state is kept in memory.
STATE_CACHE_SIZE = 20_000
#: The key of a market partition's progress records on risk-market-context (no symbol has spaces).
PROGRESS_KEY = b" progress"
#: the end of a trades partition the broker did not give: beyond any idle marker's
_UNKNOWN = 2**63


@dataclass(frozen=True)
class KeyedCore(Generic[S]):
    """How one agent keys, stores and evaluates its states."""

    #: "market" or "pair": the agent's name in metrics and logs
    name: str
    #: the key of an execution (None: not for this agent)
    key_of: Callable[[Execution], str | None]
    new_state: Callable[[], S]
    decode: Callable[[bytes], S]
    encode: Callable[[S], bytes]
    #: (state, execution, rules) -> (applied: not a re-delivery, alerts, market contexts)
    evaluate: Callable[[S, Execution, Rules], Outcome]
    #: whether the agent publishes market contexts and its partitions' progress
    publishes_context: bool = False
    #: (state, key, time before which everything is applied, rules) -> the context that time closes
    close: Callable[[S, str, float, Rules], MarketContext | None] = lambda state, key, until, rules: None


Outcome = tuple[bool, tuple[RiskAlert, ...], tuple[MarketContext, ...]]
#: trades partitions -> their end offsets on the broker now (missing: not known)
TradeEnds = Callable[[Sequence[int]], Awaitable[dict[int, int]]]


def _evaluate_market(state: MarketState, execution: Execution, rules: Rules) -> Outcome:
    outcome = evaluate_market_trade(state, execution.trade, rules)
    return outcome.applied, outcome.alerts, outcome.contexts


def _evaluate_pair(state: PairState, execution: Execution, rules: Rules) -> Outcome:
    outcome = evaluate_pair_trade(state, execution.trade, execution.owner or "", execution.pair or "", rules)
    return outcome.applied, outcome.alerts, ()


MARKET: KeyedCore[MarketState] = KeyedCore(
    "market",
    lambda execution: execution.trade.symbol,
    MarketState,
    decode_market_state,
    encode_market_state,
    _evaluate_market,
    publishes_context=True,
    close=close_minute,
)
PAIRS: KeyedCore[PairState] = KeyedCore(
    "pair",
    lambda execution: execution.pair,
    PairState,
    decode_pair_state,
    encode_pair_state,
    _evaluate_pair,
)


class StateStore(Protocol):
    """The agent's table as the analysis uses it."""

    def get(self, partition: int, key: bytes) -> bytes | None:
        """The stored value of ``key`` in ``partition``."""
        ...


@dataclass
class _Feed:
    """One target partition: the sources' promises, the buffer, the records in offset order."""

    #: source partition -> its promise (None: idle)
    promises: dict[int, int | None] = field(default_factory=dict)
    #: idle source partition -> the trades partition's end its last idle marker carried
    idle_ends: dict[int, int] = field(default_factory=dict)
    #: an idle source's trades partition has grown since its marker (as asked for this batch)
    idle_moved: bool = False
    #: (timestamp, tradeId, arrival number, execution, its queue entry)
    buffer: list[tuple[int, str, int, Execution, list[Any]]] = field(default_factory=list)
    buffered: set[tuple[int, str]] = field(default_factory=set)
    #: [event, stream, done] in offset order
    queue: deque[list[Any]] = field(default_factory=deque)
    #: executions before this time were released (or are late)
    released_until: int = -1
    arrivals: int = 0
    #: the minute of the last progress record published
    progress_minute: int = -1
    #: the latest execution time released
    last_released: int = -1
    #: keys applied here since the last rebalance
    keys: set[bytes] = field(default_factory=set)


class WatermarkedAnalysis(Generic[S]):
    """Buffers, releases and applies repartitioned executions; see the module docstring. No Faust."""

    def __init__(
        self,
        core: KeyedCore[S],
        context: WorkerContext,
        table: StateStore,
        sources: int,
        trade_ends: TradeEnds,
        untrack: Callable[[list[Any]], None] = lambda messages: None,
    ) -> None:
        self.core = core
        #: asks the broker for trades partitions' ends (riskengine.worker.agents.user_agent.OffsetsReader)
        self.trade_ends = trade_ends
        #: tells Faust to stop waiting for messages dropped unacked (riskengine.worker.faust_compat)
        self.untrack = untrack
        self.context = context
        self.table = table
        self.sources = sources
        self.counters = context.metrics.keyed[core.name]
        self._feeds: dict[int, _Feed] = {}
        self._states: dict[bytes, S] = {}
        self._dirty: dict[tuple[int, bytes], S] = {}

    def forget(self) -> None:
        """Drop the buffers and decoded states (a rebalance: the unacked records come again)."""
        self.untrack([entry[0].message for feed in self._feeds.values() for entry in feed.queue])
        self._feeds.clear()
        self._states.clear()

    def held(self) -> int:
        """Executions waiting in the buffers."""
        return sum(len(feed.buffer) for feed in self._feeds.values())

    def watermark(self, feed: _Feed) -> float:
        """The smallest promise of all sources (see the module docstring)."""
        if len(feed.promises) < self.sources or feed.idle_moved:
            return float("-inf")
        active = [promise for promise in feed.promises.values() if promise is not None]
        return min(active) if active else float("inf")

    async def _check_idle_sources(self) -> None:
        """Ask the broker for the ends of the trades partitions some target partition holds idle
        (one request), and mark the target partitions where one of them has moved since."""
        feeds = self._feeds.values()
        idle = sorted({s for feed in feeds for s, promise in feed.promises.items() if promise is None})
        ends = await self.trade_ends(idle) if idle else {}
        for feed in feeds:
            feed.idle_moved = any(
                promise is None and ends.get(source, _UNKNOWN) > feed.idle_ends.get(source, 0)
                for source, promise in feed.promises.items()
            )
            self.counters["idle_held"] += feed.idle_moved

    async def analyze(self, batch: Batch) -> int:
        """Buffer the batch's records, release what the watermarks allow; return how many wait."""
        feeds = self._feeds
        self._dirty = {}
        counters = self.counters
        for event, stream in batch.events:
            message = event.message
            feed = feeds.get(message.partition)
            if feed is None:
                feed = feeds[message.partition] = _Feed()
            entry = [event, stream, False]
            feed.queue.append(entry)
            try:
                record = decode(message.value)
            except RepartitionError as exc:
                counters["rejected"] += 1
                log.error("%s/%s/%s: %s", message.topic, message.partition, message.offset, exc)
                entry[2] = True
                continue
            if isinstance(record, Marker):
                feed.promises[record.source] = record.promise
                if record.promise is None:
                    feed.idle_ends[record.source] = record.end
                entry[2] = True
                continue
            known = feed.promises.get(record.source)
            feed.promises[record.source] = record.promise if known is None else max(known, record.promise)
            trade = record.trade
            order = (trade.timestamp, trade.trade_id)
            if trade.timestamp < feed.released_until or order in feed.buffered:
                counters["late" if trade.timestamp < feed.released_until else "duplicates"] += 1
                entry[2] = True
                continue
            feed.arrivals += 1
            heapq.heappush(feed.buffer, (trade.timestamp, trade.trade_id, feed.arrivals, record, entry))
            feed.buffered.add(order)
        await self._check_idle_sources()
        outputs: list[Record] = []
        done: list[tuple[Any, Any]] = []
        for partition, feed in feeds.items():
            self._release(partition, feed, outputs)
            self._close_minutes(partition, feed, outputs)
            self._progress(partition, feed, outputs)
            queue = feed.queue
            while queue and queue[0][2]:
                event, stream, _done = queue.popleft()
                done.append((event, stream))
        encode = self.core.encode
        for where, state in self._dirty.items():
            batch.changelog[where] = encode(state)
        self._dirty = {}
        batch.outputs.extend(outputs)
        batch.events = done
        # Held executions wait for records that will come (markers at least): no retry is needed.
        counters["held"] = self.held()
        return 0

    def _release(self, partition: int, feed: _Feed, outputs: list[Record]) -> None:
        watermark = self.watermark(feed)
        buffer = feed.buffer
        rules = self.context.reference.rules.current
        while buffer and buffer[0][0] < watermark:
            timestamp, trade_id, _arrival, execution, entry = heapq.heappop(buffer)
            feed.buffered.discard((timestamp, trade_id))
            feed.last_released = max(feed.last_released, timestamp)
            entry[2] = True
            self._apply(partition, execution, rules, outputs)
            key = self.core.key_of(execution)
            if key is not None:
                feed.keys.add(key.encode())
        if watermark == float("inf"):
            # Every source is idle: everything received is applied.
            feed.released_until = max(feed.released_until, feed.last_released + 1)
        elif watermark > feed.released_until:
            feed.released_until = int(watermark)

    def _close_minutes(self, partition: int, feed: _Feed, outputs: list[Record]) -> None:
        """The contexts the watermark made final for keys that did not trade since (see
        :func:`riskengine.core.market.close_minute`)."""
        if not self.core.publishes_context or feed.released_until < 0:
            return
        rules = self.context.reference.rules.current
        # Every source idle: everything sent is applied, and each key's last minute is closed (as
        # at the end of a replay).
        until = float("inf") if self.watermark(feed) == float("inf") else feed.released_until
        for key in sorted(feed.keys):
            state = self._state(partition, key)
            market = self.core.close(state, key.decode(), until, rules)
            if market is not None:
                self._dirty[(partition, key)] = state
                outputs.append(self._context_record(partition, key, market))

    def _context_record(self, partition: int, key: bytes, market: MarketContext) -> Record:
        record = {
            "symbol": market.symbol,
            "asOf": market.as_of,
            "referencePrice": market.reference_price,
            "recentVolume": market.recent_volume,
            "volatility": market.volatility,
            "partition": partition,
        }
        context = self.context
        return (
            context.names.market_context,
            partition,
            key,
            context.catalog.encode("MarketContext", record),
            None,
        )

    def _progress(self, partition: int, feed: _Feed, outputs: list[Record]) -> None:
        """Tell the per-user agents how far this partition is, once per minute of event time: the
        market context a trade uses is final once its symbol's partition has passed its minute."""
        if not self.core.publishes_context or feed.released_until < 0:
            return
        minute = feed.released_until - feed.released_until % MINUTE_MS
        if minute <= feed.progress_minute:
            return
        feed.progress_minute = minute
        record = {
            "symbol": None,
            "asOf": feed.released_until,
            "referencePrice": None,
            "recentVolume": None,
            "volatility": None,
            "partition": partition,
        }
        context = self.context
        value = context.catalog.encode("MarketContext", record)
        outputs.append((context.names.market_context, partition, PROGRESS_KEY, value, None))

    def _apply(self, partition: int, execution: Execution, rules: Rules, outputs: list[Record]) -> None:
        key_text = self.core.key_of(execution)
        if key_text is None:
            self.counters["rejected"] += 1
            return
        key = key_text.encode()
        state = self._state(partition, key)
        applied, alerts, markets = self.core.evaluate(state, execution, rules)
        self._dirty[(partition, key)] = state
        self.counters["released" if applied else "redelivered"] += 1
        context = self.context
        for market in markets:
            outputs.append(self._context_record(partition, key, market))
        if not alerts:
            return
        metrics = context.metrics
        for alert in alerts:
            record = alert.to_record()
            outputs.append(
                (context.names.alerts, partition, key, context.catalog.encode("RiskAlert", record), None)
            )
            metrics.alerts_by_pattern[record["patternType"]] += 1
            metrics.recent_alerts.append(record)

    def _state(self, partition: int, key: bytes) -> S:
        states = self._states
        state = states.pop(key, None)
        if state is None:
            raw = self.table.get(partition, key)
            state = self.core.new_state() if raw is None else self.core.decode(raw)
        states[key] = state  # the most recently used; a dirty one evicted is still encoded from _dirty
        if len(states) > STATE_CACHE_SIZE:
            del states[next(iter(states))]
        return state


class WatermarkedAgent(Generic[S]):
    """The Faust side: the repartition topic, the agent that collects its records, the pipeline."""

    def __init__(
        self,
        app: TransportApp,
        context: WorkerContext,
        table: StateTable,
        core: KeyedCore[S],
        topic: str,
        trade_ends: TradeEnds,
    ) -> None:
        self.app = app
        self.context = context
        self.table = table
        #: "market" or "pair": the histograms' agent label
        self.name = core.name
        settings: Settings = context.settings
        self.analysis = WatermarkedAnalysis(
            core,
            context,
            table,
            settings.topic_partitions,
            trade_ends,
            lambda messages: untrack(app.consumer, messages),
        )
        self.topic = app.topic(topic, key_type=bytes, value_type=bytes, partitions=settings.topic_partitions)
        self._pipeline: BatchPipeline | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        app.rebalance_started.append(self._on_rebalance_start)
        app.on_partitions_revoked.connect(self._forget)
        app.on_partitions_assigned.connect(self._forget)

        self._acks = Acks(app)
        self._started = asyncio.Event()
        app.route_batches(self.topic, self)

        # The agent runs the pipeline; the records come through the batch path, not its stream.
        @app.agent(app.channel(), name=f"{core.name}-events")
        async def keyed_events(stream: Any) -> None:
            await self.run()

    def _forget(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        self.analysis.forget()

    def _on_rebalance_start(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._let_go)

    def _let_go(self) -> None:
        """Drop what is buffered or waiting (never acked: it comes again after the rebalance); again
        whenever a batch of the generation before is fenced.

        From the start of a rebalance until the new assignment, records are let go unacked (the
        pipeline's fence): Faust waits for every record handed out before it lets partitions go, and
        a buffered one would wait for a watermark that cannot move meanwhile.
        """
        self.analysis.forget()
        if self._pipeline is not None:
            waiting = self._pipeline.filling.events
            self.analysis.untrack([event.message for event, _stream in waiting])
            self._pipeline.discard_waiting()

    async def room(self) -> None:
        """Wait until the pipeline runs and its filling batch has room (the batch path's back-pressure)."""
        await self._started.wait()
        if self._pipeline is not None:
            await self._pipeline.room()

    def deliver(self, events: list[Delivery], more_waiting: bool) -> None:
        """One partition's fetched records, in offset order, into the filling batch."""
        if self._pipeline is None:  # stopping: never acked, they come again
            self.analysis.untrack([event.message for event in events])
            return
        self._pipeline.extend(events, self._acks, more_waiting)

    async def run(self) -> None:
        """Start the pipeline; the records come through the batch path until the agent stops."""
        producer = batch_producer(self.context.settings)
        await producer.start()
        commit = CommitProtocol(
            self.table,
            producer,
            self.table.changelog_topic,
            DeliveryProgress(),
            self.app.fence,
            outputs_first=True,
        )
        pipeline = BatchPipeline(
            commit,
            self.analysis.analyze,
            self.app.crash,
            self.context.metrics,
            name=self.name,
            release=self.analysis.untrack,
            on_fenced=self._let_go,
        )
        pipeline.start()
        self._pipeline = pipeline
        self._loop = asyncio.get_running_loop()
        self._started.set()
        try:
            await asyncio.Future()  # until the agent is cancelled, as the app stops
        finally:
            self._pipeline = None
            self._started.clear()
            await pipeline.stop()
            await producer.stop()


def market_agent(
    app: TransportApp, context: WorkerContext, table: StateTable, trade_ends: TradeEnds
) -> WatermarkedAgent[MarketState]:
    """The per-symbol market agent."""
    return WatermarkedAgent(app, context, table, MARKET, context.names.market_events, trade_ends)


def pair_agent(
    app: TransportApp, context: WorkerContext, table: StateTable, trade_ends: TradeEnds
) -> WatermarkedAgent[PairState]:
    """The account-pair agent."""
    return WatermarkedAgent(app, context, table, PAIRS, context.names.pair_events, trade_ends)
