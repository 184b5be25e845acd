"""The per-user agent: crypto-trades and crypto-orders -> core -> analyzed trades, alerts, dead letters.

Where a trade and an order event are scored in the worker. :class:`UserAgent` is the Faust side:
one agent reads both topics (co-partitioned by userId, so one worker owns each user) and its loop
only collects events into batches (:mod:`riskengine.worker.pipeline`). :meth:`UserAnalysis.analyze`
then handles a batch in one tight loop, without Faust:

1. decode every event (``CryptoTrade`` or ``OrderEvent`` by its topic); a rejected one becomes a
   dead letter at once (``crypto-trades-dlq`` / ``crypto-orders-dlq``);
2. per partition, interleave the two inputs head by head in event time, order events first on ties
   (:mod:`riskengine.core.event_order`, as ``riskengine replay`` does). When one input has nothing
   in the batch, the other's events wait for it unless the agent has read that input to the
   broker's end (:class:`InputPositions`); when that end is not known yet, they wait at most
   :data:`MAX_HOLD_S`. Held events go back to the pipeline, unacked, ahead of the next batch. Faust
   reads its partitions round robin by record count, not by event time, so while one input runs
   ahead its partition is paused (:data:`PAUSE_AT` held events) until the other has caught up
   (:data:`RESUME_AT`), as Kafka Streams pauses a partition with a full buffer;
3. per event, take the user's state envelope (from memory, else the batch, else the RocksDB table),
   run :func:`riskengine.core.evaluate_trade` or :func:`riskengine.core.evaluate_order` with the
   active rules and the reference data, encode the analyzed trade (``processedAt`` stamped) and the
   alerts, and add the new envelope and the outputs to the batch.

The commit protocol (:mod:`riskengine.worker.commit`) then makes the batch durable. Anything that
rejects one event (:class:`~riskengine.errors.EventRejected`: decoding, validation, a key that is
not the event's userId; or any unexpected exception, wrapped as :class:`ProcessingFailed`) becomes a
dead letter with headers ``reason``, ``exception``, ``detail``, ``source-topic``,
``source-partition``, ``source-offset``; it is counted, and the batch goes on. An order event the
order book finds inconsistent is counted by kind (``/stats`` ``orderIssues``), changes nothing and
is acked. Outputs are co-partitioned with their input (the partition murmur2 of the userId key
gives, when the producer uses Kafka's default partitioner).

Re-delivery: an envelope carries, per input, the offset of the last event applied and the encoded
bytes of the outputs not yet known to be delivered (the "pending outputs"). An event at or below
its input's applied offset is already in the state: it is not applied again, its envelope goes to
the changelog again and its stored output bytes are sent again when still pending, so a duplicate
is byte-identical (same ``processedAt``). An event whose state never reached the changelog had no
outputs sent, so it is processed as new.

Rules: the active version comes from the risk-rules topic, read by every worker (see
:mod:`riskengine.worker.tables.reference_feed`); analyzed trades and alerts carry the
``ruleVersion`` that produced them.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

import faust
from aiokafka import AIOKafkaProducer
from faust.types import TP

from riskengine.connections import client_options
from riskengine.contracts.avro_codec import RegistryError, UnknownSchemaId
from riskengine.core import (
    OrderEvent,
    RiskAlert,
    Trade,
    UserState,
    decode_state,
    encode_state,
    evaluate_order,
    evaluate_trade,
)
from riskengine.core.event_order import order_event_first
from riskengine.errors import EventRejected, WorkerError
from riskengine.worker.commit import Batch, CommitProtocol, DeliveryProgress, Record, StateWriter
from riskengine.worker.context import WorkerContext
from riskengine.worker.faust_compat import committed_offset, resume_fetching, stop_fetching
from riskengine.worker.pipeline import BatchPipeline
from riskengine.worker.tables.user_state import (
    ALERT,
    ANALYZED,
    ORDERS,
    TRADES,
    Envelope,
    Pending,
    UserStateTable,
    decode_envelope,
    encode_envelope,
    with_pending,
)

log = logging.getLogger(__name__)

#: Longest exception text copied into the ``detail`` header.
MAX_DETAIL = 1000
#: Users whose decoded state is kept in memory (least recently used ones are dropped first).
STATE_CACHE_SIZE = 50_000
#: Longest an event waits for the other input of its partition when that input's end is unknown.
MAX_HOLD_S = 2.0
#: Held events of one input partition from which it is paused, and below which it is resumed.
PAUSE_AT = 1_000
RESUME_AT = 200

#: (event, the stream that acks it, what it decoded to)
Queued = tuple[Any, Any, Trade | OrderEvent]


class KeyMismatch(WorkerError, EventRejected):
    """The message key is not the event's userId (it would land on another user's state)."""

    reason = "key-mismatch"


class ProcessingFailed(WorkerError, EventRejected):
    """An unexpected exception while processing one event; ``__cause__`` is that exception."""

    reason = "processing-error"


def dead_letter_headers(
    rejected: EventRejected, topic: str, partition: int, offset: int
) -> list[tuple[str, bytes]]:
    """The headers of a dead letter: why, what raised, and where the original message was."""
    cause = rejected.__cause__ if isinstance(rejected, ProcessingFailed) and rejected.__cause__ else rejected
    return [
        ("reason", rejected.reason.encode()),
        ("exception", type(cause).__name__.encode()),
        ("detail", str(cause)[:MAX_DETAIL].encode("utf-8", "replace")),
        ("source-topic", topic.encode()),
        ("source-partition", str(partition).encode()),
        ("source-offset", str(offset).encode()),
    ]


class StateStore(StateWriter, Protocol):
    """The state table as the analysis uses it: reads by key, and the commit protocol's writes."""

    def get(self, partition: int, key: bytes) -> bytes | None:
        """The stored envelope of ``key`` in ``partition``."""
        ...


class InputProgress(Protocol):
    """How far the agent is behind the broker's end of an input partition."""

    def lag(self, topic: str, partition: int) -> int | None:
        """Events of ``topic``/``partition`` on the broker the agent has not received; None: unknown."""
        ...


class UserAnalysis:
    """Analyzes batches of trades and order events against the users' states; no Faust."""

    def __init__(
        self,
        context: WorkerContext,
        user_state: StateStore,
        progress: DeliveryProgress,
        inputs: InputProgress,
    ) -> None:
        self.catalog = context.catalog
        self.metrics = context.metrics
        self.reference = context.reference
        self.names = context.names
        self.user_state = user_state
        self.progress = progress
        self.inputs = inputs
        self._sources = {context.names.trades: TRADES, context.names.orders: ORDERS}
        self._topics = (context.names.trades, context.names.orders)
        self._dead_letter_topics = (context.names.trades_dlq, context.names.orders_dlq)
        self._unknown_ids: set[int] = set()
        #: (topic, partition, offset) -> monotonic time an event was first held back
        self._held_since: dict[tuple[str, int, int], float] = {}
        #: (topic, partition, offset) -> what a held event decoded to (decoded once)
        self._held_items: dict[tuple[str, int, int], Trade | OrderEvent] = {}
        # key -> (table value, its envelope, its decoded state): reading and decoding the state is a
        # third of the work per trade. Valid while this worker owns the user's partition without
        # interruption, so it is cleared at every rebalance (another worker may have written since).
        # Insertion order is recency: hits are re-inserted.
        self._states: dict[bytes, tuple[bytes, Envelope, UserState]] = {}

    def forget_states(self) -> None:
        """Drop the decoded states kept in memory (at every rebalance)."""
        self._states.clear()
        self._held_since.clear()
        self._held_items.clear()

    async def analyze(self, batch: Batch) -> list[tuple[Any, Any]]:
        """Analyze ``batch``; return the events held back for the next batch (removed from it).

        Never raises for one bad event: its dead letter takes its place in the batch's outputs.
        Running a whole batch in one tight loop (rather than one event between Faust's own
        per-event work) keeps the detection code hot in the CPU caches.
        """
        processed_at = int(time.time() * 1000)
        metrics = self.metrics
        done: list[tuple[Any, Any]] = []  # dead letters and applied events
        queues: dict[int, tuple[deque[Queued], deque[Queued]]] = {}
        held_items = self._held_items
        for event, stream in batch.events:
            message = event.message
            source = self._sources.get(message.topic, TRADES)
            try:
                item = held_items.pop((message.topic, message.partition, message.offset), None)
                if item is None:
                    item = await self._decode(message, source)
            except EventRejected as rejected:
                self._count_in(message, source)
                batch.outputs.append(self._dead_letter(message, source, rejected))
                done.append((event, stream))
                continue
            partition_queues = queues.get(message.partition)
            if partition_queues is None:
                partition_queues = queues[message.partition] = (deque(), deque())
            partition_queues[source].append((event, stream, item))
        held: list[tuple[Any, Any]] = []
        now = time.monotonic()
        for partition, (trades, orders) in queues.items():
            while trades or orders:
                if trades and orders:
                    first_order = order_event_first(orders[0][2].timestamp, trades[0][2].timestamp)
                    queue = orders if first_order else trades
                elif trades:
                    queue = trades
                    if not self._may_go_alone(ORDERS, partition, trades, now):
                        break
                else:
                    queue = orders
                    if not self._may_go_alone(TRADES, partition, orders, now):
                        break
                event, stream, item = queue.popleft()
                self._apply(event.message, item, processed_at, batch)
                done.append((event, stream))
            for event, stream, item in (*trades, *orders):
                held.append((event, stream))
                message = event.message
                held_items[(message.topic, message.partition, message.offset)] = item
        for event, _stream in done:
            message = event.message
            self._held_since.pop((message.topic, message.partition, message.offset), None)
        # Acks in arrival order (offset order per input partition), without the held events.
        held_ids = {id(event) for event, _stream in held}
        batch.events = [pair for pair in batch.events if id(pair[0]) not in held_ids]
        metrics.held_events = len(held)
        return held

    def _may_go_alone(self, other: int, partition: int, queue: deque[Queued], now: float) -> bool:
        """May ``queue``'s head be applied while the other input of its partition has nothing here?

        Yes once the agent has read the other input to its end; no while events of it are known to
        be waiting; when that is unknown, once the head has waited :data:`MAX_HOLD_S` (every event
        of ``queue`` starts waiting now, if not already).
        """
        lag = self.inputs.lag(self._topics[other], partition)
        if lag == 0:
            return True
        if lag is not None:
            return False
        held_since = self._held_since
        for event, _stream, _item in queue:
            message = event.message
            held_since.setdefault((message.topic, message.partition, message.offset), now)
        head = queue[0][0].message
        return now - held_since[(head.topic, head.partition, head.offset)] >= MAX_HOLD_S

    def _count_in(self, message: Any, source: int) -> None:
        metrics = self.metrics
        if source == TRADES:
            metrics.trades_in += 1
        else:
            metrics.order_events_in += 1
        metrics.positions[(message.topic, message.partition)] = message.offset

    async def _decode(self, message: Any, source: int) -> Trade | OrderEvent:
        """The event ``message`` holds; EventRejected when it cannot be processed."""
        try:
            try:
                item = self._decode_value(message.value, source)
            except UnknownSchemaId as unknown:
                await self._fetch_schema(unknown)
                item = self._decode_value(message.value, source)
        except EventRejected:
            raise
        except Exception as exc:  # An unexpected decoder failure is one event's dead letter too.
            log.exception(
                "event at %s/%s/%s failed to decode", message.topic, message.partition, message.offset
            )
            failed = ProcessingFailed(f"{type(exc).__name__}: {exc}")
            failed.__cause__ = exc
            raise failed from exc
        if message.key is None or message.key != item.user_id.encode():
            raise KeyMismatch(f"message key {message.key!r} is not the event's userId")
        return item

    def _decode_value(self, value: bytes | None, source: int) -> Trade | OrderEvent:
        if source == TRADES:
            return self.catalog.decode_trade(value)
        return self.catalog.decode_order_event(value)

    async def _fetch_schema(self, unknown: UnknownSchemaId) -> None:
        """A writer with a schema this worker has not seen: fetch it once; UnknownSchemaId if that fails.

        An id the registry failed to give is not asked for again.
        """
        if unknown.schema_id in self._unknown_ids:
            raise unknown
        try:
            await self.catalog.fetch(unknown.schema_id)
        except (UnknownSchemaId, RegistryError) as missing:
            self._unknown_ids.add(unknown.schema_id)
            raise UnknownSchemaId(unknown.schema_id, f"{type(missing).__name__}: {missing}") from missing

    def _apply(self, message: Any, item: Trade | OrderEvent, processed_at: int, batch: Batch) -> None:
        """Evaluate ``item``; add its envelope (the changelog record) and its outputs to ``batch``."""
        source = TRADES if isinstance(item, Trade) else ORDERS
        self._count_in(message, source)
        try:
            self._evaluate(message, source, item, processed_at, batch)
        except Exception as exc:  # Any failure of one event must become a dead letter, never a loss.
            log.exception("event at %s/%s/%s failed", message.topic, message.partition, message.offset)
            failed = ProcessingFailed(f"{type(exc).__name__}: {exc}")
            failed.__cause__ = exc
            batch.outputs.append(self._dead_letter(message, source, failed))

    def _evaluate(
        self, message: Any, source: int, item: Trade | OrderEvent, processed_at: int, batch: Batch
    ) -> None:
        partition = message.partition
        offset = message.offset
        key = message.key
        # Popped: the core updates the state in place, so after a failure it must not be reused.
        cached = self._states.pop(key, None)
        if cached is not None:
            raw: bytes | None = cached[0]
            envelope: Envelope | None = cached[1]
        else:
            raw = batch.changelog.get((partition, key))
            if raw is None:
                raw = self.user_state.get(partition, key)
            envelope = None if raw is None else decode_envelope(raw)
        if raw is not None and envelope is not None and envelope.applied(source, partition, offset):
            # A re-delivery after a crash: the state already has this event. Its changelog record
            # goes out again (the local write may never have reached the broker), then any outputs
            # still pending.
            self.metrics.redelivered += 1
            batch.changelog[(partition, key)] = raw
            entry = envelope.pending_for(source, offset)
            if entry is not None:
                self.metrics.resent += 1
                batch.outputs.extend(self._records(partition, key, entry.outputs))
            return
        if cached is not None:
            state = cached[2]
        else:
            state = UserState() if envelope is None else decode_state(envelope.state)
        outputs: list[tuple[int, bytes]] = []
        alerts: tuple[RiskAlert, ...]
        rules = self.reference.rules.current
        if isinstance(item, Trade):
            evaluation = evaluate_trade(state, item, self.reference.data, rules)
            analyzed = evaluation.analyzed._replace(processed_at=processed_at)
            outputs.append((ANALYZED, self.catalog.encode_analyzed(analyzed, message.value)))
            alerts = evaluation.alerts
            state = evaluation.state
            batch.analyzed += 1
        else:
            outcome = evaluate_order(state, item, self.reference.data, rules)
            alerts = outcome.alerts
            state = outcome.state
            if outcome.issue is not None:
                self.metrics.order_issues[outcome.issue] += 1
            if outcome.late:
                self.metrics.late_order_events += 1
        alert_records = [alert.to_record() for alert in alerts]
        outputs.extend((ALERT, self.catalog.encode("RiskAlert", record)) for record in alert_records)
        previous = () if envelope is None else envelope.pending
        offsets = [-1, -1] if envelope is None else list(envelope.offsets)
        offsets[source] = offset
        undelivered = (self._undelivered(TRADES, partition), self._undelivered(ORDERS, partition))
        entry = Pending(source, offset, tuple(outputs)) if outputs else None
        pending = with_pending(previous, entry, undelivered)
        written = Envelope(partition, (offsets[0], offsets[1]), encode_state(state), pending)
        stored = encode_envelope(written)
        batch.changelog[(partition, key)] = stored
        batch.outputs.extend(self._records(partition, key, outputs))
        self._states[key] = (stored, written, state)
        if len(self._states) > STATE_CACHE_SIZE:
            del self._states[next(iter(self._states))]
        for record in alert_records:
            self.metrics.alerts_by_pattern[record["patternType"]] += 1
            self.metrics.recent_alerts.append(record)

    def _undelivered(self, source: int, partition: int) -> int | None:
        delivered = self.progress.delivered(self._topics[source], partition)
        return None if delivered is None else delivered + 1

    def _records(self, partition: int, key: bytes, outputs: Sequence[tuple[int, bytes]]) -> list[Record]:
        names = self.names
        return [
            (names.analyzed_trades if kind == ANALYZED else names.alerts, partition, key, data, None)
            for kind, data in outputs
        ]

    def _dead_letter(self, message: Any, source: int, rejected: EventRejected) -> Record:
        self.metrics.dead_letters_by_reason[rejected.reason] += 1
        headers = dead_letter_headers(rejected, message.topic, message.partition, message.offset)
        log.warning("dead letter %s/%s/%s: %s", message.topic, message.partition, message.offset, rejected)
        value = message.value if message.value is not None else b""
        return (self._dead_letter_topics[source], message.partition, message.key, value, headers)


class InputPositions:
    """:class:`InputProgress` from the consumer: the offsets received against each partition's end."""

    def __init__(self, app: faust.App) -> None:
        self._app = app
        #: (topic, partition) -> the next offset the agent expects
        self._next: dict[tuple[str, int], int] = {}

    def received(self, topic: str, partition: int, offset: int) -> None:
        """The agent has the event at ``offset``."""
        self._next[(topic, partition)] = offset + 1

    def forget(self) -> None:
        """Positions restart from the committed offsets (after a rebalance)."""
        self._next.clear()

    def lag(self, topic: str, partition: int) -> int | None:
        """Offsets below the partition's end (highwater) not received yet; None before its first fetch."""
        consumer = self._app.consumer
        tp = TP(topic, partition)
        try:
            highwater = consumer.highwater(tp)
        except Exception:  # Not assigned here (any more): nothing to wait for.
            return 0
        if highwater is None:
            return None
        expected = self._next.get((topic, partition))
        if expected is None:
            expected = committed_offset(consumer, tp) or 0
        return max(0, int(highwater) - expected)


def _names(tps: set[TP]) -> str:
    return ", ".join(f"{tp.topic}/{tp.partition}" for tp in sorted(tps))


class UserAgent:
    """The Faust side: both input topics, the agent that collects their events, the pipeline."""

    def __init__(self, app: faust.App, context: WorkerContext, user_state: UserStateTable) -> None:
        self.app = app
        self.context = context
        self.user_state = user_state
        names = context.names
        partitions = context.settings.topic_partitions
        self.trades = app.topic(names.trades, key_type=bytes, value_type=bytes, partitions=partitions)
        self.inputs = app.topic(
            names.trades, names.orders, key_type=bytes, value_type=bytes, partitions=partitions
        )
        self.progress = DeliveryProgress()
        self.positions = InputPositions(app)
        self.analysis = UserAnalysis(context, user_state, self.progress, self.positions)
        #: input partitions this agent paused because their events ran ahead
        self._paused: set[TP] = set()
        app.on_partitions_revoked.connect(self._forget)
        app.on_partitions_assigned.connect(self._forget)

        @app.agent(self.inputs, name="user-events")
        async def user_events(stream: Any) -> None:
            await self.run(stream)

    def _forget(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # Faust resumes every assigned partition after a rebalance; the holds start afresh.
        self.analysis.forget_states()
        self.positions.forget()
        self._paused.clear()

    async def analyze(self, batch: Batch) -> list[tuple[Any, Any]]:
        """The analysis, then pause input partitions running ahead and resume caught-up ones."""
        held = await self.analysis.analyze(batch)
        counts: dict[TP, int] = {}
        for event, _stream in held:
            tp = TP(event.message.topic, event.message.partition)
            counts[tp] = counts.get(tp, 0) + 1
        consumer = self.app.consumer
        ahead = {tp for tp, count in counts.items() if count >= PAUSE_AT} - self._paused
        if ahead:
            stop_fetching(consumer, ahead)
            self._paused |= ahead
            log.info("paused %s: ahead of the other input in event time", _names(ahead))
        behind = {tp for tp in self._paused if counts.get(tp, 0) < RESUME_AT}
        if behind:
            self._paused -= behind
            resume_fetching(consumer, behind & consumer.assignment())
            log.info("resumed %s", _names(behind))
        return held

    async def run(self, stream: Any) -> None:
        """Consume ``stream`` with manual acks: collect events; the pipeline takes them in batches."""
        manual = stream.noack()
        producer = AIOKafkaProducer(
            **client_options(self.context.settings),
            acks="all",
            enable_idempotence=True,
            max_batch_size=128 * 1024,
        )
        await producer.start()
        commit = CommitProtocol(self.user_state, producer, self.user_state.changelog_topic, self.progress)
        pipeline = BatchPipeline(commit, self.analyze, self.app.crash, self.context.metrics)
        pipeline.start()
        consumer = self.app.consumer
        positions = self.positions
        try:
            async for event in manual.events():
                await pipeline.room()
                message = event.message
                positions.received(message.topic, message.partition, message.offset)
                highwater = consumer.highwater(message.tp)
                pipeline.add(event, manual, highwater is not None and message.offset + 1 < highwater)
        finally:
            await pipeline.stop()
            await producer.stop()
