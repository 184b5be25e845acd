"""The per-user agent: crypto-trades and crypto-orders -> core -> analyzed trades, alerts, dead letters.

Where a trade and an order event are scored in the worker. :class:`UserAgent` is the Faust side:
it takes both topics (co-partitioned by userId, so one worker owns each user) through the batch
path (:class:`riskengine.worker.faust_compat.Consumer`: each fetched partition's events as one
list) into the filling batch of its pipeline (:mod:`riskengine.worker.pipeline`).
:meth:`UserAnalysis.analyze` then handles a batch in one tight loop, without Faust:

1. decode every event (``CryptoTrade`` or ``OrderEvent`` by its topic) into its partition's queue
   of that input; a rejected one waits there too, as a dead letter to be (``crypto-trades-dlq`` /
   ``crypto-orders-dlq``), so no event is acked while an earlier one of its partition is not
   (Faust commits the first run of acked offsets, even one after a gap, when nothing was committed
   before);
2. per partition, apply the queues' heads in event time, order events first on ties
   (:mod:`riskengine.core.event_order`, as ``riskengine replay`` does). When one input's queue is
   empty, the other's events wait unless the agent has read that input to the end it had on the
   broker after they arrived (:class:`InputPositions` asks the broker when no fetch told it); if
   the broker does not answer, they wait at most :data:`MAX_HOLD_S`. Held events stay in the
   queues, unacked, for a later batch (a held event costs nothing per batch). Faust reads its
   partitions round robin by record count, not by event time, so while one input runs ahead its
   partition is paused (:data:`PAUSE_AT` held events) until the other has caught up
   (:data:`RESUME_AT`), as Kafka Streams pauses a partition with a full buffer;
3. per event, take the user's state (from memory, else the batch, else the RocksDB table), run
   :func:`riskengine.core.evaluate_trade` or :func:`riskengine.core.evaluate_order` with the
   active rules and the reference data, and add the analyzed trade (``processedAt`` stamped) and
   the alerts to the batch; at the batch's end, add each changed user's envelope, encoded once.

The commit protocol (:mod:`riskengine.worker.commit`) then makes the batch durable. Anything that
rejects one event (:class:`~riskengine.errors.EventRejected`: decoding, validation, a key that is
not the event's userId; or any unexpected exception, wrapped as :class:`ProcessingFailed`) becomes a
dead letter with headers ``reason``, ``exception``, ``detail``, ``source-topic``,
``source-partition``, ``source-offset``; it is counted, and the batch goes on. An order event the
order book finds inconsistent is counted by kind (``/stats`` ``orderIssues``), changes nothing and
is acked. Outputs are co-partitioned with their input (the partition murmur2 of the userId key
gives, when the producer uses Kafka's default partitioner).

Checkpoints: a changed user's envelope is written with the batch that changes it only when it was
not written for ``RISKENGINE_WORKER_CHECKPOINT_INTERVAL``, else once that change is an interval
old (for every changed user when the agent runs out of events, :data:`RAN_OUT_AFTER_S` after it
applied its last one, when :data:`MAX_UNACKED` events wait or a journal would pass
:data:`MAX_JOURNAL_BYTES`), and an event is acked only once its user's state
with it is written (in offset order per partition). Until then, each partition's
:class:`~riskengine.worker.tables.user_state.OutputJournal` (written with every batch that leaves a
state unwritten, before the batch's outputs are sent) records the offsets applied and the bytes of
the outputs not yet known to be delivered.

Re-delivery: an envelope carries, per input, the offset of the last event applied and the encoded
bytes of the outputs not yet known to be delivered (the "pending outputs"). An event at or below
its input's applied offset is already in the state: it is not applied again, its envelope goes to
the changelog again and its stored output bytes are sent again when still pending, so a duplicate
is byte-identical (same ``processedAt``). An event past it but within its partition's journal was
applied by a worker whose state of the user is lost: it is applied again (every later event of the
user comes again too, none being acked) and sends the journal's bytes, or nothing when they were
delivered. Any other event had no outputs sent, so it is processed as new.

Rules: the active version comes from the risk-rules topic, read by every worker (see
:mod:`riskengine.worker.tables.reference_feed`); analyzed trades and alerts carry the
``ruleVersion`` that produced them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast, overload

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import TP

from riskengine.connections import client_options
from riskengine.contracts.avro_codec import NotFoundIds, RegistryError, UnknownSchemaId, fetch_schema
from riskengine.core import (
    Evaluation,
    OrderEvaluation,
    OrderEvent,
    Trade,
    UserState,
    ahead_of_clock,
    decode_state,
    encode_state,
    evaluate_order,
    evaluate_trade,
)
from riskengine.core.account_pairs import owner_of, pair_key
from riskengine.core.event_order import order_event_first
from riskengine.core.executions import buyer_and_seller
from riskengine.core.market import MarketContext
from riskengine.core.market_feed import PartitionClocks
from riskengine.core.rules import MINUTE_MS
from riskengine.errors import EventRejected, WorkerError
from riskengine.settings import Settings
from riskengine.worker.commit import (
    Batch,
    CommitProtocol,
    DeliveryProgress,
    Record,
    StateWriter,
    batch_producer,
)
from riskengine.worker.context import WorkerContext
from riskengine.worker.faust_compat import (
    Acks,
    Delivery,
    TransportApp,
    committed_offset,
    last_fetch_ms,
    resume_fetching,
    stop_fetching,
    untrack,
)
from riskengine.worker.pipeline import BatchPipeline
from riskengine.worker.repartition import (
    CLOCK_KEY,
    IDLE_AFTER_S,
    IDLE_MARKER_S,
    MARKER_INTERVAL_S,
    decode_clock,
    encode_clock,
    execution_value,
    frame,
    idle_marker_value,
    marker_value,
    target_partition,
    unframe,
)
from riskengine.worker.tables.user_state import (
    ALERT,
    ANALYZED,
    JOURNAL_KEY,
    MARKET,
    ORDERS,
    PAIR,
    TRADES,
    AppliedEvents,
    Envelope,
    EnvelopeError,
    OutputJournal,
    PartitionNotHeld,
    Pending,
    UserStateTable,
    decode_envelope,
    decode_journal,
    encode_envelope,
    encode_journal,
    with_pending,
)

log = logging.getLogger(__name__)

#: Longest exception text copied into the ``detail`` header.
MAX_DETAIL = 1000
#: Users whose decoded state is kept in memory (least recently used ones are dropped first).
STATE_CACHE_SIZE = 50_000
#: Longest an event waits for the other input of its partition while that input's end is unknown.
MAX_HOLD_S = 2.0
#: Longest a trade waits for its symbol's market context to be final (see riskengine.core.market).
MAX_CONTEXT_WAIT_S = 120.0
#: Held events of one input partition from which it is paused, and below which it is resumed.
PAUSE_AT = 1_000
RESUME_AT = 200
#: Events applied and not acked from which every changed user is stored, whatever the interval
#: (they are processed again after a crash, and their decoded events are kept for a rebuild).
MAX_UNACKED = 20_000
#: The agent has run out of events once a batch applies none and none was applied for this long:
#: every changed user is then written. One empty batch is not enough: under a steady load at 1,000
#: trades/s (with 2,275 order events/s) two or three batches a second applied nothing (a retry
#: taken just after a batch), and each such flush wrote 100-260 users' states at once: 15-48 ms of
#: encoding and 30-85 ms to persist, during which every event waited (p99 latency 160-420 ms).
RAN_OUT_AFTER_S = 0.25
#: Largest output journal written: a batch whose journals would be larger writes every changed
#: user's state instead (one record may hold at most 1 MiB, the producer's and the broker's limit).
#: A journal holds a batch's outputs of one partition: at 256 KiB the large batches of a worker
#: behind at 5,000 trades/s (10,000 events) passed it and wrote every changed user in each batch,
#: a quarter more state bytes per event than with this bound.
MAX_JOURNAL_BYTES = 768 * 1024

#: (event, the stream that acks it, what it decoded to or why it was rejected, wall-clock arrival)
#: and the wall-clock ms of the last fetch response for its partition when it was queued
Queued = tuple[Any, Any, "Trade | OrderEvent | EventRejected", float, int]
#: (event, the stream that acks it, the key of the user whose state holds it (None: a dead letter),
#: its number in application order)
Unacked = tuple[Any, Any, bytes | None, int]


class KeyMismatch(WorkerError, EventRejected):
    """The message key is not the event's userId (it would land on another user's state)."""

    reason = "key-mismatch"


class AheadOfClock(WorkerError, EventRejected):
    """The event's time is further ahead of the worker's clock than the rules allow."""

    reason = "ahead-of-clock"


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

    def lag(self, topic: str, partition: int, since_ms: int) -> int | None:
        """Events of ``topic``/``partition`` on the broker the agent has not received, as known from
        the broker at ``since_ms`` (wall clock) or later; None: not known (yet)."""
        ...

    def fetched_ms(self, topic: str, partition: int) -> int | None:
        """Wall-clock ms of the last fetch response for ``topic``/``partition`` (None: unknown)."""
        ...


class CachedUser(AppliedEvents):
    """A user's table value kept in memory: the envelope's fields, the core state decoded.

    ``stored`` is the value last encoded for it (None: none yet); ``since`` the events applied after
    it (with the market context each trade was scored against), from which a state left
    half-updated by a failed evaluation is rebuilt. ``stored_at`` is when ``stored`` was encoded
    (0: not by this worker), ``dirty_at`` and ``dirty_from`` the time and the application number of
    its first change since (while it has one).
    """

    __slots__ = (
        "dirty_at",
        "dirty_from",
        "offsets",
        "partition",
        "pending",
        "since",
        "state",
        "stored",
        "stored_at",
    )

    def __init__(
        self,
        partition: int,
        offsets: tuple[int, int],
        pending: tuple[Pending, ...],
        state: UserState,
        stored: bytes | None,
    ) -> None:
        self.partition = partition
        self.offsets = offsets
        self.pending = pending
        self.state = state
        self.stored = stored
        self.since: list[tuple[Trade | OrderEvent, MarketContext | None]] = []
        self.stored_at = 0.0
        self.dirty_at = 0.0
        self.dirty_from = 0


def _envelope_of(user: CachedUser) -> bytes:
    """The table value of ``user`` as it is now."""
    return encode_envelope(Envelope(user.partition, user.offsets, encode_state(user.state), user.pending))


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
        self._trade_seconds = context.metrics.histograms.trade_seconds
        self.reference = context.reference
        self.names = context.names
        self.user_state = user_state
        self.progress = progress
        self.inputs = inputs
        self._sources = {context.names.trades: TRADES, context.names.orders: ORDERS}
        self._topics = (context.names.trades, context.names.orders)
        self._dead_letter_topics = (context.names.trades_dlq, context.names.orders_dlq)
        #: schema ids the registry answered 404 for (bounded, expiring: see NotFoundIds)
        self._unknown_ids = NotFoundIds()
        #: partition -> (trades, order events) received and not yet applied, in offset order
        self._queues: dict[int, tuple[deque[Queued], deque[Queued]]] = {}
        # key -> the user's envelope with its state decoded: reading and decoding the state is a
        # third of the work per trade. Valid while this worker owns the user's partition without
        # interruption, so it is cleared at every rebalance (another worker may have written since).
        # Insertion order is recency: hits are re-inserted.
        self._states: dict[bytes, CachedUser] = {}
        # key -> user changed since its envelope was last encoded, the first changed first: encoded
        # once its first change is the checkpoint interval old (encoding a state costs more than
        # evaluating an event, and its bytes are most of what a batch writes).
        self._dirty: dict[bytes, CachedUser] = {}
        #: changed users not written for an interval before their change: written at the batch's end
        self._quiet: list[bytes] = []
        #: the current batch's time (wall clock, s): when its changed users were changed or written
        self._now = 0.0
        self._checkpoint_interval = context.settings.worker_checkpoint_interval
        #: per input partition, the events applied and not acked yet, in application order: an event
        #: is acked once its user's state with it is written (and the ones before it are acked)
        self._unacked: dict[int, deque[Unacked]] = {}
        self._unacked_count = 0
        #: events applied so far (the last one's number)
        self._applied_count = 0
        #: wall-clock time of the last batch that applied an event (0: none yet)
        self._applied_at = 0.0
        #: partition -> its output journal (read from the table once per assignment: a journal
        #: written before a crash covers events that will come again)
        self._journals: dict[int, OutputJournal] = {}
        #: partitions whose journal gained entries in the current batch
        self._journals_changed: set[int] = set()
        #: per trades partition, the latest trade time admitted to the market (kept in the table
        #: under CLOCK_KEY, so the lateness rule survives a restart or a move to another worker)
        self._clocks = PartitionClocks()
        self._clocks_loaded: set[int] = set()
        self._clocks_changed: set[int] = set()
        #: per trades partition, the clock its promises may use: that of the trades applied or
        #: re-delivered since the last rebalance. The stored clock may be ahead of it after a crash or
        #: a fenced batch (its trades' executions wait in pending outputs for their re-delivery), and a
        #: promise from it would make those executions late for the market.
        self._promise_clocks: dict[int, int] = {}
        self._target_partitions = context.settings.topic_partitions
        #: per trades partition: wall-clock time of its last trade, of its last progress marker and
        #: of its last idle marker
        self._last_trade_at: dict[int, float] = {}
        self._last_marker_at: dict[int, float] = {}
        self._last_idle_at: dict[int, float] = {}
        #: per trades partition, the last promise announced
        self._last_promise: dict[int, int] = {}
        #: per trades partition, the offset after the last trade applied since the last rebalance
        self._applied_through: dict[int, int] = {}
        #: (other input, partition, fetch time) read to its end, known in this analysis pass
        self._lags: dict[tuple[int, int, int], bool] = {}
        #: partition -> :meth:`_undelivered` of both inputs, while a batch is applied and checkpointed
        #: (nothing is delivered meanwhile: neither waits for anything)
        self._undelivered_now: dict[int, tuple[int | None, int | None]] = {}

    def forget_states(self) -> None:
        """Drop the decoded states and the held events (at every rebalance).

        Faust seeks every assigned partition back to its committed offset after a rebalance, so the
        held events, never acked, come again.
        """
        self._states.clear()
        self._queues.clear()
        self._dirty = {}
        self._quiet = []
        self._unacked = {}
        self._unacked_count = 0
        self._journals.clear()
        self._journals_changed.clear()
        self._clocks = PartitionClocks()
        self._clocks_loaded.clear()
        self._clocks_changed.clear()
        self._promise_clocks.clear()
        self._last_marker_at.clear()
        self._last_promise.clear()
        self._applied_through.clear()

    def held_messages(self) -> list[Any]:
        """The messages of the held events and of the applied ones not acked yet."""
        held = [item[0].message for queues in self._queues.values() for queue in queues for item in queue]
        return held + [item[0].message for unacked in self._unacked.values() for item in unacked]

    def live_value(self, key: bytes) -> bytes | None:
        """``key``'s envelope as it is now, when changed since it was last written (else None: the
        table has it)."""
        user = self._dirty.get(key)
        return None if user is None else _envelope_of(user)

    def held(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> events received from it and held back, for those holding any."""
        counts: dict[tuple[str, int], int] = {}
        for partition, queues in self._queues.items():
            for topic, queue in zip(self._topics, queues, strict=True):
                if queue:
                    counts[(topic, partition)] = len(queue)
        return counts

    async def analyze(self, batch: Batch) -> int:
        """Analyze ``batch`` and the events held from earlier ones; return how many events wait for a
        later batch: held, or applied and not acked yet.

        ``batch.events`` becomes the events applied or dead-lettered, in offset order per input
        partition. Never raises for one bad event: its dead letter takes its place in the batch's
        outputs. Running a whole batch in one tight loop (rather than one event between Faust's own
        per-event work) keeps the detection code hot in the CPU caches.

        Users' envelopes are written at checkpoints (:meth:`_checkpoint`), the output journals of
        the partitions whose events sent outputs with every batch that leaves a user's state
        unwritten; ``batch.acks`` becomes the events whose users' states are written.
        """
        now = time.time()
        processed_at = int(now * 1000)
        queues = self._queues
        self._lags = {}
        self._now = now
        now_ms = int(now * 1000)
        fetched: dict[tuple[str, int], int] = {}
        for event, stream in batch.events:
            message = event.message
            where = (message.topic, message.partition)
            fetched_ms = fetched.get(where)
            if fetched_ms is None:
                # A response no earlier than the one that brought the event (unknown: now).
                fetched_ms = fetched[where] = self.inputs.fetched_ms(*where) or now_ms
            source = self._sources.get(message.topic, TRADES)
            item: Trade | OrderEvent | EventRejected
            try:
                try:
                    item = self._decode_known(message, source, now_ms)
                except UnknownSchemaId:
                    item = await self._decode(message, source, now_ms)
            except EventRejected as rejected:
                item = rejected
            partition_queues = queues.get(message.partition)
            if partition_queues is None:
                partition_queues = queues[message.partition] = (deque(), deque())
            partition_queues[source].append((event, stream, item, now, fetched_ms))
        done: list[tuple[Any, Any]] = []
        held = 0
        self._journals_changed.clear()
        self._undelivered_now.clear()
        metrics = self.metrics
        taken = [0, 0]  # events taken per source, counted in
        for partition, (trades, orders) in queues.items():
            # The last event taken from each input: its offset is the position /stats shows, and the
            # last trade's is how far the trades partition is applied.
            last_trade = last_order = None
            while trades or orders:
                queue = self._next_queue(partition, trades, orders, now)
                if queue is None:
                    break
                event, stream, item, _arrived, _fetched = queue.popleft()
                self._applied_count += 1
                source = TRADES if queue is trades else ORDERS
                taken[source] += 1
                key: bytes | None = None
                if isinstance(item, EventRejected):
                    batch.outputs.append(self._dead_letter(event.message, source, item))
                else:
                    key = self._apply(event.message, source, item, processed_at, batch)
                if source == TRADES:
                    last_trade = event.message
                else:
                    last_order = event.message
                done.append((event, stream))
                unacked = self._unacked.get(partition)
                if unacked is None:
                    unacked = self._unacked[partition] = deque()
                unacked.append((event, stream, key, self._applied_count))
            if last_trade is not None:
                self._applied_through[partition] = last_trade.offset + 1
            for message in (last_trade, last_order):
                if message is not None:
                    metrics.positions[(message.topic, message.partition)] = message.offset
            held += len(trades) + len(orders)
        metrics.trades_in += taken[TRADES]
        metrics.order_events_in += taken[ORDERS]
        self._unacked_count += len(done)
        if done:
            self._applied_at = now
        ran_out = not done and now - self._applied_at >= RAN_OUT_AFTER_S
        batch.acks = self._checkpoint(batch, now, everyone=ran_out or self._unacked_count >= MAX_UNACKED)
        self._undelivered_now.clear()
        self._announce(batch, now)
        batch.events = done
        self.metrics.held_events = held
        return held + self._unacked_count

    def _checkpoint(self, batch: Batch, now: float, everyone: bool) -> list[tuple[Any, Any]]:
        """Write the envelopes of the users first changed the checkpoint interval ago or earlier
        (``everyone``: of every changed user; so when the worker ran out of events, too many events
        wait for their ack, or a journal would be over :data:`MAX_JOURNAL_BYTES`) and of those not
        written for an interval (the first change after a quiet spell is written at once: a user
        changed once costs one write and no journal), the journals an unwritten state needs;
        return the events to ack.

        So a user's envelope is written at most about twice per interval whatever its event rate,
        and the deferred writes spread over the batches (users come due in the order they were
        first changed).
        """
        dirty = self._dirty
        for key in self._quiet:
            quiet = dirty.pop(key, None)
            if quiet is not None:
                self._store(key, quiet, batch)
        self._quiet = []
        due = now - self._checkpoint_interval
        while dirty:
            key = next(iter(dirty))
            user = dirty[key]
            if not everyone and user.dirty_at > due:
                break
            del dirty[key]
            self._store(key, user, batch)
        if dirty:
            journals = {}
            for partition in sorted(self._journals_changed):
                journal = self._journals[partition]
                journal.prune(self._undelivered_in(partition), dirty)
                journals[(partition, JOURNAL_KEY)] = encode_journal(journal)
            if any(len(value) > MAX_JOURNAL_BYTES for value in journals.values()):
                for key, user in dirty.items():
                    self._store(key, user, batch)
                dirty.clear()
            else:
                batch.changelog.update(journals)
        if not dirty:
            # Every event applied is in a written state, whose envelope keeps its pending outputs.
            for journal in self._journals.values():
                journal.entries.clear()
        acks: list[tuple[Any, Any]] = []
        for unacked in self._unacked.values():
            while unacked:
                event, stream, holder, number = unacked[0]
                if holder is not None:
                    unwritten = dirty.get(holder)
                    if unwritten is not None and unwritten.dirty_from <= number:
                        break  # its user's state with it is not written yet
                unacked.popleft()
                acks.append((event, stream))
        self._unacked_count -= len(acks)
        return acks

    def _next_queue(
        self, partition: int, trades: deque[Queued], orders: deque[Queued], now: float
    ) -> deque[Queued] | None:
        """The queue whose head goes next in event time; None while both must wait.

        A rejected head goes at once (it has no event time and changes no state). Otherwise the
        earlier head of the two, order events first on ties; a head alone only when it may go
        without the other input (:meth:`_may_go_alone`).
        """
        for queue in (trades, orders):
            if queue and isinstance(queue[0][2], EventRejected):
                return queue
        if trades and orders:
            trade = cast(Trade, trades[0][2])
            order_event = cast(OrderEvent, orders[0][2])
            if order_event_first(order_event.timestamp, trade.timestamp):
                return orders
            return trades if self._market_known(trades[0], now) else None
        if trades:
            if not self._may_go_alone(ORDERS, partition, trades, now):
                return None
            return trades if self._market_known(trades[0], now) else None
        return orders if self._may_go_alone(TRADES, partition, orders, now) else None

    def _market_known(self, head: Queued, now: float) -> bool:
        """May the trade ``head`` be scored: its market context is final, or it has waited
        :data:`MAX_CONTEXT_WAIT_S` (the market agent is down or far behind: the newest context known
        is used, and counted)."""
        trade = cast(Trade, head[2])
        lateness = self.reference.rules.current.market_lateness_ms
        if self.reference.markets.ready(trade.symbol, trade.timestamp, lateness):
            return True
        if now - head[3] >= MAX_CONTEXT_WAIT_S:
            self.metrics.market_context_stale += 1
            return True
        return False

    def _may_go_alone(self, other: int, partition: int, queue: deque[Queued], now: float) -> bool:
        """May ``queue``'s head be applied while the other input of its partition has nothing here?

        Yes once the agent has read the other input to the end the broker gave no earlier than the
        fetch response that brought the head; no while events of it are known to be waiting; when
        that is not known (it is asked for), once the head has waited :data:`MAX_HOLD_S` since it
        arrived.
        """
        since_ms = queue[0][4]
        known = self._lags.get((other, partition, since_ms))
        if known is not None:
            return True
        lag = self.inputs.lag(self._topics[other], partition, since_ms)
        if lag == 0:
            # Read to the end as of since_ms: so for every later head of this pass fetched then.
            self._lags[(other, partition, since_ms)] = True
            return True
        if lag is not None:
            return False
        return now - queue[0][3] >= MAX_HOLD_S

    async def _decode(self, message: Any, source: int, now_ms: int) -> Trade | OrderEvent:
        """The event ``message`` holds; EventRejected when it cannot be processed (or is dated more
        than the rules allow ahead of ``now_ms``, the worker's clock). A writer schema this worker
        has not seen is fetched first."""
        try:
            return self._decode_known(message, source, now_ms)
        except UnknownSchemaId as unknown:
            await self._fetch_schema(unknown)
            return self._decode_known(message, source, now_ms)

    def _decode_known(self, message: Any, source: int, now_ms: int) -> Trade | OrderEvent:
        """:meth:`_decode` with the schemas known: UnknownSchemaId for a writer schema not among them
        (most events decode here, without a coroutine of their own)."""
        try:
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
        ahead = ahead_of_clock(item.timestamp, now_ms, self.reference.rules.current.max_future_skew_ms)
        if ahead is not None:
            raise AheadOfClock(ahead)
        return item

    def _decode_value(self, value: bytes | None, source: int) -> Trade | OrderEvent:
        if source == TRADES:
            return self.catalog.decode_trade(value)
        return self.catalog.decode_order_event(value)

    async def _fetch_schema(self, unknown: UnknownSchemaId) -> None:
        """A writer with a schema this worker has not seen: fetch it; UnknownSchemaId if that fails.

        A registry that gives no answer is asked again with backoff (the batch waits, at most
        avro_codec.FETCH_RETRY_DELAYS_S); only its definite 404 is remembered, for a while
        (NotFoundIds), so a brief outage dead-letters at most the events met during it and an id
        registered later is found.
        """
        try:
            await fetch_schema(self.catalog, unknown.schema_id, self._unknown_ids)
        except (UnknownSchemaId, RegistryError) as missing:
            raise UnknownSchemaId(unknown.schema_id, f"{type(missing).__name__}: {missing}") from missing

    def _apply(
        self, message: Any, source: int, item: Trade | OrderEvent, processed_at: int, batch: Batch
    ) -> bytes | None:
        """Evaluate ``item`` (from input ``source``) into its user's state and its outputs into
        ``batch``; the user's key (None: it became a dead letter)."""
        try:
            self._evaluate(message, source, item, processed_at, batch)
            key: bytes = message.key
            return key
        except PartitionNotHeld:
            raise  # not the event's fault: the batch is fenced (or the worker stops)
        except Exception as exc:  # Any failure of one event must become a dead letter, never a loss.
            trade_id = item.trade_id if isinstance(item, Trade) else None
            log.exception(
                "event at %s/%s/%s failed",
                message.topic,
                message.partition,
                message.offset,
                extra={
                    "topic": message.topic,
                    "partition": message.partition,
                    "offset": message.offset,
                    "tradeId": trade_id,
                    "userId": item.user_id,
                },
            )
            failed = ProcessingFailed(f"{type(exc).__name__}: {exc}")
            failed.__cause__ = exc
            batch.outputs.append(self._dead_letter(message, source, failed))
            return None

    def _evaluate(
        self, message: Any, source: int, item: Trade | OrderEvent, processed_at: int, batch: Batch
    ) -> None:
        partition = message.partition
        offset = message.offset
        key = message.key
        user = self._user(partition, key, batch)
        if user.applied(source, partition, offset):
            # A re-delivery after a crash: the state already has this event. Its changelog record
            # goes out again (the local write may never have reached the broker), then any outputs
            # still pending.
            self.metrics.redelivered += 1
            self._changed(key, user)
            if source == TRADES:
                self._trade_again(partition, cast(Trade, item))
            entry = user.pending_for(source, offset)
            if entry is not None:
                self.metrics.resent += 1
                batch.outputs.extend(self._records(partition, key, entry.outputs))
            return
        journal = self._journal_of(partition)
        # Applied before by a worker that did not live to write this user's state with it: its
        # outputs went out from a state that is lost. Apply it again, send the journal's bytes.
        replayed = journal.covers(source, offset)
        outputs: list[tuple[int, bytes]] = []
        alert_records: list[dict[str, Any]] = []
        try:
            if isinstance(item, Trade):
                started = time.perf_counter()
                lateness = self.reference.rules.current.market_lateness_ms
                market = self.reference.markets.for_trade(item.symbol, item.timestamp, lateness)
                evaluation = self._run(user.state, item, market)
                if not replayed:
                    encoded = self.catalog.encode_analyzed(evaluation.analyzed, message.value, processed_at)
                    outputs.append((ANALYZED, encoded))
                    if evaluation.alerts:
                        alert_records = [alert.to_record() for alert in evaluation.alerts]
                    batch.analyzed += 1
                    batch.event_times.append(item.timestamp)
                    self._trade_seconds.observe(time.perf_counter() - started)
                    outputs.extend(self._repartitioned(partition, item))
                self._last_trade_at[partition] = time.time()
            else:
                outcome = self._run(user.state, item)
                if not replayed:
                    if outcome.alerts:
                        alert_records = [alert.to_record() for alert in outcome.alerts]
                    if outcome.issue is not None:
                        self.metrics.order_issues[outcome.issue] += 1
                    if outcome.late:
                        self.metrics.late_order_events += 1
            if alert_records:
                outputs.extend((ALERT, self.catalog.encode("RiskAlert", record)) for record in alert_records)
        except Exception:
            # The core updates the state in place: rebuild it as it was before this event.
            user.state = self._rebuilt(user)
            raise
        if replayed:
            self.metrics.redelivered += 1
            if source == TRADES:
                self._trade_again(partition, cast(Trade, item))
            kept = journal.entries.get((source, offset))
            if kept is not None:
                self.metrics.resent += 1
                outputs = list(kept[1])
        else:
            journal.record(source, offset, key, tuple(outputs))
            if outputs:
                self._journals_changed.add(partition)
        user.since.append((item, market if isinstance(item, Trade) else None))
        user.partition = partition
        offsets = list(user.offsets)
        offsets[source] = offset
        user.offsets = (offsets[0], offsets[1])
        entry = Pending(source, offset, tuple(outputs)) if outputs else None
        user.pending = with_pending(user.pending, entry, self._undelivered_in(partition))
        self._changed(key, user)
        if outputs:
            batch.outputs.extend(self._records(partition, key, outputs))
        for record in alert_records:
            self.metrics.alerts_by_pattern[record["patternType"]] += 1
            self.metrics.recent_alerts.append(record)

    def _changed(self, key: bytes, user: CachedUser) -> None:
        """``user``'s state holds the event just applied: its envelope is to be written, at this
        batch's end if it was not written for an interval, else an interval after this change."""
        if key not in self._dirty:
            user.dirty_at = self._now
            user.dirty_from = self._applied_count
            self._dirty[key] = user
            if self._now - user.stored_at >= self._checkpoint_interval:
                self._quiet.append(key)

    def _trade_again(self, partition: int, trade: Trade) -> None:
        """A trade applied before (re-delivered): the stored market clock of its partition may
        already be past it, so its promise is only as far as its time."""
        self._clock_of(partition)
        self._clocks_changed.add(partition)
        # Its clock was at least its time: later executions are no earlier than that, less the
        # lateness (the clock after it may be ahead: its value is not stored per trade).
        promised = self._promise_clocks.get(partition, -(2**62))
        self._promise_clocks[partition] = max(promised, trade.timestamp)

    def _journal_of(self, partition: int) -> OutputJournal:
        """``partition``'s output journal, read from the table once per assignment."""
        journal = self._journals.get(partition)
        if journal is None:
            raw = self.user_state.get(partition, JOURNAL_KEY)
            journal = OutputJournal(partition)
            if raw is not None:
                try:
                    journal = decode_journal(raw)
                except EnvelopeError as exc:
                    # Scoring goes on: a re-delivered event it covered is processed as new, so its
                    # duplicate may differ (processedAt), but nothing is lost.
                    log.error(
                        "the output journal of partition %d is unreadable (%s); ignored", partition, exc
                    )
            self._journals[partition] = journal
        return journal

    @overload
    def _run(self, state: UserState, item: Trade, market: MarketContext | None = None) -> Evaluation: ...

    @overload
    def _run(
        self, state: UserState, item: OrderEvent, market: MarketContext | None = None
    ) -> OrderEvaluation: ...

    def _run(
        self, state: UserState, item: Trade | OrderEvent, market: MarketContext | None = None
    ) -> Evaluation | OrderEvaluation:
        """The core on one event, with the active rules, the reference data and (a trade) its
        symbol's market context."""
        rules = self.reference.rules.current
        if isinstance(item, Trade):
            return evaluate_trade(state, item, self.reference.data, rules, market)
        return evaluate_order(state, item, self.reference.data, rules)

    def _rebuilt(self, user: CachedUser) -> UserState:
        """``user``'s state from its last stored value and the events applied since (the core is
        deterministic, so this is the state those events left)."""
        envelope = None if user.stored is None else decode_envelope(user.stored)
        state = UserState() if envelope is None else decode_state(envelope.state)
        for item, market in user.since:
            if isinstance(item, Trade):
                self._run(state, item, market)
            else:
                self._run(state, item)
        return state

    def _user(self, partition: int, key: bytes, batch: Batch) -> CachedUser:
        """``key``'s state: from memory, else this batch's changelog, else the table."""
        states = self._states
        user = states.pop(key, None)
        if user is None:
            raw = batch.changelog.get((partition, key))
            if raw is None:
                raw = self.user_state.get(partition, key)
            if raw is None:
                user = CachedUser(partition, (-1, -1), (), UserState(), None)
            else:
                envelope = decode_envelope(raw)
                user = CachedUser(
                    envelope.partition, envelope.offsets, envelope.pending, decode_state(envelope.state), raw
                )
        states[key] = user  # the most recently used
        if len(states) > STATE_CACHE_SIZE:
            oldest = next(iter(states))
            evicted = states.pop(oldest)
            if self._dirty.pop(oldest, None) is not None:
                self._store(oldest, evicted, batch)
        return user

    def _store(self, key: bytes, user: CachedUser, batch: Batch) -> None:
        """Encode ``user``'s envelope into ``batch``'s changelog (once per user and batch)."""
        user.stored = _envelope_of(user)
        user.stored_at = self._now
        user.since.clear()
        batch.changelog[(user.partition, key)] = user.stored

    def _undelivered_in(self, partition: int) -> tuple[int | None, int | None]:
        """:meth:`_undelivered` of both inputs of ``partition``, asked once per batch."""
        undelivered = self._undelivered_now.get(partition)
        if undelivered is None:
            undelivered = (self._undelivered(TRADES, partition), self._undelivered(ORDERS, partition))
            self._undelivered_now[partition] = undelivered
        return undelivered

    def _undelivered(self, source: int, partition: int) -> int | None:
        delivered = self.progress.delivered(self._topics[source], partition)
        return None if delivered is None else delivered + 1

    def _records(self, partition: int, key: bytes, outputs: Sequence[tuple[int, bytes]]) -> list[Record]:
        names = self.names
        records: list[Record] = []
        for kind, data in outputs:
            if kind in (ANALYZED, ALERT):
                records.append(
                    (names.analyzed_trades if kind == ANALYZED else names.alerts, partition, key, data, None)
                )
            else:
                target_key, value = unframe(data)
                topic = names.market_events if kind == MARKET else names.pair_events
                records.append(
                    (topic, target_partition(target_key, self._target_partitions), target_key, value, None)
                )
        return records

    def _clock_of(self, partition: int) -> PartitionClocks:
        """The clocks, with ``partition``'s read from the table once per assignment."""
        if partition not in self._clocks_loaded:
            self._clocks.clocks[partition] = decode_clock(self.user_state.get(partition, CLOCK_KEY))
            self._clocks_loaded.add(partition)
        return self._clocks

    def _repartitioned(self, partition: int, trade: Trade) -> list[tuple[int, bytes]]:
        """The trade's records for the market and pair agents, unless it is late for the market."""
        lateness = self.reference.rules.current.market_lateness_ms
        clocks = self._clock_of(partition)
        if not clocks.admit(partition, trade.timestamp, lateness):
            self.metrics.late_for_market += 1
            return []
        self._clocks_changed.add(partition)
        self._promise_clocks[partition] = clocks.clocks[partition]
        promise = clocks.clocks[partition] - lateness
        outputs = [(MARKET, frame(trade.symbol.encode(), execution_value(trade, partition, promise)))]
        reference = self.reference.data
        pair = pair_key(reference, trade, self.reference.rules.current)
        if pair is not None:
            owner = owner_of(reference, buyer_and_seller(trade)[0] or "")
            value = execution_value(trade, partition, promise, owner, pair)
            outputs.append((PAIR, frame(pair.encode(), value)))
        return outputs

    def _announce(self, batch: Batch, now: float) -> None:
        """Store the clocks that moved; send each partition's promise when it advanced (at most every
        MARKER_INTERVAL_S). A partition holding trades (waiting for their market context) promises
        from its first held trade on: nothing it admits later is earlier than that trade or its
        clock, less the lateness; without that, a market waiting for this partition and this
        partition waiting for the market would wait for each other.
        """
        lateness = self.reference.rules.current.market_lateness_ms
        for partition in sorted(self._clocks_changed):
            batch.changelog[(partition, CLOCK_KEY)] = encode_clock(self._clocks.clocks[partition])
        holding = {partition for partition, (trades, _orders) in self._queues.items() if trades}
        for partition in sorted(self._clocks_changed | holding):
            clock = self._promise_clocks.get(partition, -1)
            head = self._first_held_trade(partition)
            if clock < 0 and head is None:
                continue  # nothing processed since the rebalance: nothing known to promise
            promise = max(clock, -1 if head is None else head.timestamp) - lateness
            last = self._last_promise.get(partition, -(2**62))
            if promise <= last:
                continue
            # A new minute may be what a market partition waits for (contexts are by the minute):
            # say it at once; otherwise at most every MARKER_INTERVAL_S.
            new_minute = promise // MINUTE_MS > last // MINUTE_MS
            if not new_minute and now - self._last_marker_at.get(partition, 0.0) < MARKER_INTERVAL_S:
                continue
            self._last_marker_at[partition] = now
            self._last_promise[partition] = promise
            batch.outputs.extend(self._markers(marker_value(partition, promise)))
        self._clocks_changed.clear()

    def _first_held_trade(self, partition: int) -> Trade | None:
        queues = self._queues.get(partition)
        if queues is None:
            return None
        return next((item[2] for item in queues[0] if isinstance(item[2], Trade)), None)

    def _markers(self, value: bytes) -> list[Record]:
        """A marker for every partition of both repartition topics."""
        names = self.names
        return [
            (topic, target, None, value, None)
            for topic in (names.market_events, names.pair_events)
            for target in range(self._target_partitions)
        ]

    def idle_markers(
        self, assigned: Sequence[int], ends: Callable[[int], tuple[int | None, int | None]], now: float
    ) -> list[Record]:
        """Idle markers for the trades partitions of ``assigned`` that are idle, each every
        IDLE_MARKER_S: every trade up to the partition's end is applied (``ends(partition)``: its
        fetched end and its committed offset), nothing is held, and no trade came for IDLE_AFTER_S.
        Applied, not merely received: after a rebalance the received ones were dropped, and a source
        declared idle behind its own trades would make them late for the market. The marker carries
        the offset applied through, which the market and pair agents hold against the partition's
        end."""
        records: list[Record] = []
        for partition in assigned:
            queues = self._queues.get(partition)
            if queues is not None and (queues[0] or queues[1]):
                continue
            if now - self._last_trade_at.get(partition, 0.0) < IDLE_AFTER_S:
                continue
            if now - self._last_idle_at.get(partition, 0.0) < IDLE_MARKER_S:
                continue
            end, committed = ends(partition)
            applied = self._applied_through.get(partition, committed or 0)
            if end is None or applied < end:
                continue
            self._last_idle_at[partition] = now
            records.extend(self._markers(idle_marker_value(partition, applied)))
        return records

    def _dead_letter(self, message: Any, source: int, rejected: EventRejected) -> Record:
        self.metrics.dead_letters_by_reason[rejected.reason] += 1
        headers = dead_letter_headers(rejected, message.topic, message.partition, message.offset)
        # The context fields become JSON fields with RISKENGINE_LOG_FORMAT=json (riskengine.logs).
        where = {"topic": message.topic, "partition": message.partition, "offset": message.offset}
        log.warning(
            "dead letter %s/%s/%s: %s",
            message.topic,
            message.partition,
            message.offset,
            rejected,
            extra={**where, "reason": rejected.reason},
        )
        value = message.value if message.value is not None else b""
        return (self._dead_letter_topics[source], message.partition, message.key, value, headers)


class InputPositions:
    """:class:`InputProgress` from the consumer: the offsets received against each partition's end.

    The end a fetch response brought (the consumer's highwater) is enough to know that events are
    still to come. That none are is only known from an end the broker gave after the event that
    waits arrived: a partition the fetcher skipped (its last records not handed out yet) keeps an
    old highwater while newer events, produced before the waiting one, sit on the broker. So the
    highwater counts only if it came in the fetch response that brought the waiting event or a
    later one (:func:`last_fetch_ms`; with several brokers, "later" is the time this consumer
    processed the responses, and a waiting fetch returns as soon as an event is appended, so an
    end older than an event appended before the waiting one would have to be overtaken on the
    wire); otherwise the end is asked for, in one request (:meth:`refresh`) for every partition
    :meth:`lag` needed.
    """

    def __init__(self, app: faust.App, offsets: OffsetsReader) -> None:
        self._app = app
        self._offsets = offsets
        #: (topic, partition) -> the next offset the agent expects
        self._next: dict[tuple[str, int], int] = {}
        #: (topic, partition) -> (end offset asked for, wall-clock ms the request was sent)
        self._ends: dict[tuple[str, int], tuple[int, int]] = {}
        #: (topic, partition) -> first offset on the broker (for partitions nothing was read from)
        self._starts: dict[tuple[str, int], int] = {}
        #: partitions whose end :meth:`lag` needed as of a later time than known
        self.wanted: set[tuple[str, int]] = set()

    def received(self, topic: str, partition: int, offset: int) -> None:
        """The agent has the event at ``offset``."""
        self._next[(topic, partition)] = offset + 1

    def forget(self) -> None:
        """Positions restart from the committed offsets (after a rebalance)."""
        self._next.clear()
        self._ends.clear()
        self._starts.clear()
        self.wanted.clear()

    def lag(self, topic: str, partition: int, since_ms: int) -> int | None:
        """Events of the partition on the broker not received yet, as of ``since_ms`` (wall clock)
        or later; None while that is not known (the end is then wanted)."""
        consumer = self._app.consumer
        tp = TP(topic, partition)
        key = (topic, partition)
        try:
            highwater = consumer.highwater(tp)
        except Exception:  # Not assigned here (any more): nothing to wait for.
            return 0
        expected = self._next.get(key)
        if expected is None:
            expected = committed_offset(consumer, tp)
            if expected is None:
                expected = self._starts.get(key)
        if expected is None:
            self.wanted.add(key)
            return None
        if highwater is not None:
            if highwater > expected:
                return int(highwater) - expected
            fetched = last_fetch_ms(consumer, tp)
            if fetched is not None and fetched >= since_ms:
                return 0
        end = self._ends.get(key)
        if end is not None and end[1] >= since_ms:
            return max(0, end[0] - expected)
        self.wanted.add(key)
        return None

    def fetched_ms(self, topic: str, partition: int) -> int | None:
        """Wall-clock ms of the last fetch response for the partition (None: unknown)."""
        return last_fetch_ms(self._app.consumer, TP(topic, partition))

    def end_and_committed(self, topic: str, partition: int) -> tuple[int | None, int | None]:
        """The partition's end as last fetched, and its committed offset (None: not known)."""
        consumer = self._app.consumer
        tp = TP(topic, partition)
        try:
            highwater = consumer.highwater(tp)
        except Exception:  # Not assigned here (any more).
            return None, None
        return (None if highwater is None else int(highwater)), committed_offset(consumer, tp)

    async def refresh(self) -> None:
        """Ask the broker for the ends (and, where needed, the starts) of the wanted partitions."""
        wanted, self.wanted = self.wanted, set()
        if not wanted:
            return
        consumer = self._app.consumer
        asked_at = int(time.time() * 1000)
        for key, end in (await self._offsets.ends(sorted(wanted))).items():
            self._ends[key] = (end, asked_at)
        unread = [
            key
            for key in sorted(wanted)
            if key not in self._next and committed_offset(consumer, TP(*key)) is None
        ]
        if unread:
            self._starts.update(await self._offsets.starts(unread))


class OffsetsReader:
    """A consumer of the worker's own that only asks for partitions' first and end offsets.

    Faust's consumer answers such requests in its fetcher thread once the fetch in flight returns
    (up to 1.5 s when the inputs are idle; measured 0.2-2.6 s), which would hold events that long.
    This one has the input partitions assigned and paused: it never fetches records.
    """

    def __init__(self, settings: Settings, topics: Sequence[str]) -> None:
        self._settings = settings
        self._topics = topics
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        """Connect, with every partition of the topics assigned and paused."""
        consumer = AIOKafkaConsumer(**client_options(self._settings), enable_auto_commit=False)
        await consumer.start()
        partitions = [
            TopicPartition(t, p) for t in self._topics for p in range(self._settings.topic_partitions)
        ]
        consumer.assign(partitions)
        consumer.pause(*partitions)
        self._consumer = consumer

    async def stop(self) -> None:
        """Disconnect."""
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def ends(self, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """(topic, partition) -> the offset the next event written to it gets."""
        found = await self._started().end_offsets([TopicPartition(t, p) for t, p in partitions])
        return {(tp.topic, tp.partition): int(offset) for tp, offset in found.items()}

    @property
    def started(self) -> bool:
        """Whether requests can be sent (between :meth:`start` and :meth:`stop`)."""
        return self._consumer is not None

    async def starts(self, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """(topic, partition) -> the offset of its first event on the broker."""
        found = await self._started().beginning_offsets([TopicPartition(t, p) for t, p in partitions])
        return {(tp.topic, tp.partition): int(offset) for tp, offset in found.items()}

    def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise WorkerError("the offsets reader is not started")
        return self._consumer


def _names(tps: set[TP]) -> str:
    return ", ".join(f"{tp.topic}/{tp.partition}" for tp in sorted(tps))


class UserAgent:
    """The Faust side: both input topics, the agent that collects their events, the pipeline."""

    def __init__(self, app: TransportApp, context: WorkerContext, user_state: UserStateTable) -> None:
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
        self.offsets = OffsetsReader(context.settings, (names.trades, names.orders))
        self.positions = InputPositions(app, self.offsets)
        self.analysis = UserAnalysis(context, user_state, self.progress, self.positions)
        #: input partitions this agent paused because their events ran ahead
        self._paused: set[TP] = set()
        self._pipeline: BatchPipeline | None = None
        self._commit: CommitProtocol | None = None
        # A market partition's progress may be what held trades wait for.
        context.reference.markets.on_progress.append(self._wake)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._refreshing: asyncio.Future[None] | None = None
        app.rebalance_started.append(self._on_rebalance_start)
        app.on_partitions_revoked.connect(self._forget)
        app.on_partitions_assigned.connect(self._forget)

        self._acks = Acks(app)
        self._started = asyncio.Event()
        app.route_batches(self.inputs, self)

        # The agent runs the pipeline; the events come through the batch path, not its stream.
        @app.agent(app.channel(), name="user-events")
        async def user_events(stream: Any) -> None:
            await self.run()

        app.timer(1.0, name="idle-markers")(self.send_idle_markers)

    async def send_idle_markers(self) -> None:
        """Tell the market and pair agents which of this worker's trades partitions are idle (see
        :mod:`riskengine.worker.repartition`); only while no batch is in flight, so a marker never
        overtakes an execution."""
        pipeline, commit = self._pipeline, self._commit
        if pipeline is None or commit is None or not pipeline.idle() or self.app.fence.rebalancing:
            return
        trades = self.context.names.trades
        assigned = sorted(tp.partition for tp in self.app.consumer.assignment() if tp.topic == trades)
        records = self.analysis.idle_markers(
            assigned, lambda partition: self.positions.end_and_committed(trades, partition), time.time()
        )
        if records:
            try:
                await commit.send(records)
            except WorkerError as exc:  # Best effort: the next tick says it again.
                log.warning("could not send idle markers: %s", exc)

    async def trade_ends(self, partitions: Sequence[int]) -> dict[int, int]:
        """The trades partitions' ends on the broker now, which the market and pair agents hold the
        idle markers against; {} while that is not known (not started, or the request failed)."""
        if not self.offsets.started:
            return {}
        trades = self.context.names.trades
        try:
            found = await self.offsets.ends([(trades, partition) for partition in partitions])
        except Exception as exc:  # The idle sources are not trusted until a later batch asks again.
            log.warning("could not ask the broker for the trades partitions' ends: %r", exc)
            return {}
        return {partition: end for (_topic, partition), end in found.items()}

    def _forget(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # The holds start afresh. A new assignment starts unpaused in the fetcher, but a batch
        # analyzed as the partitions moved may have paused one of them there after it: resumed here
        # (on_partitions_assigned comes after the new assignment), or by the next batch's analysis
        # (the pause came after this).
        self.analysis.forget_states()
        self.positions.forget()
        if self._paused:
            resume_fetching(self.app.consumer, self._paused)
        self._paused.clear()

    def _wake(self) -> None:
        if self._pipeline is not None:
            self._pipeline.wake()

    def _on_rebalance_start(self) -> None:
        # Called in Faust's consumer thread; the agent's state belongs to its own loop.
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._let_go)

    def _let_go(self) -> None:
        """Drop the events not in a batch being made durable (held, or waiting for the next batch),
        and the decoded states; again whenever a batch of the generation before is fenced (its
        analysis may have held events and decoded states since).

        Faust lets the partitions go only once every event handed to the agent is acked or gone;
        these never acked ones come again after the rebalance (Faust seeks to the committed offsets).
        """
        dropped_messages = self.analysis.held_messages()
        if self._pipeline is not None:
            dropped_messages += [event.message for event, _stream in self._pipeline.filling.events]
        untrack(self.app.consumer, dropped_messages)
        self.analysis.forget_states()
        if self._pipeline is not None:
            dropped = self._pipeline.discard_waiting()
            log.info("rebalance: %d events not yet in a batch will come again", dropped)

    async def _refresh(self) -> None:
        """Ask for the inputs' ends the held events wait for, then take a batch for them."""
        try:
            await self.positions.refresh()
        except Exception as exc:  # The held events fall back to MAX_HOLD_S.
            log.warning("could not ask the broker for the inputs' end offsets: %r", exc)
            return
        if self._pipeline is not None:
            self._pipeline.wake()

    async def analyze(self, batch: Batch) -> int:
        """The analysis, then pause input partitions running ahead and resume caught-up ones; how many
        events wait for a later batch (see :meth:`UserAnalysis.analyze`)."""
        held = await self.analysis.analyze(batch)
        if self.positions.wanted and (self._refreshing is None or self._refreshing.done()):
            self._refreshing = asyncio.ensure_future(self._refresh())
        counts = {TP(topic, partition): count for (topic, partition), count in self.analysis.held().items()}
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

    async def room(self) -> None:
        """Wait until the pipeline runs and its filling batch has room (the batch path's back-pressure)."""
        await self._started.wait()
        if self._pipeline is not None:
            await self._pipeline.room()

    def deliver(self, events: list[Delivery], more_waiting: bool) -> None:
        """One input partition's fetched events, in offset order, into the filling batch."""
        pipeline = self._pipeline
        if pipeline is None:  # stopping: never acked, they come again
            untrack(self.app.consumer, [event.message for event in events])
            return
        last = events[-1].message
        self.positions.received(last.topic, last.partition, last.offset)
        pipeline.extend(events, self._acks, more_waiting)

    async def run(self) -> None:
        """Start the pipeline, take the inputs' events from the batch path until the agent stops."""
        producer = batch_producer(self.context.settings)
        await producer.start()
        await self.offsets.start()
        commit = CommitProtocol(
            self.user_state, producer, self.user_state.changelog_topic, self.progress, self.app.fence
        )
        pipeline = BatchPipeline(
            commit,
            self.analyze,
            self.app.crash,
            self.context.metrics,
            release=lambda messages: untrack(self.app.consumer, messages),
            on_fenced=self._let_go,
        )
        pipeline.start()
        self._pipeline = pipeline
        self._commit = commit
        self._loop = asyncio.get_running_loop()
        self._started.set()
        try:
            await asyncio.Future()  # until the agent is cancelled, as the app stops
        finally:
            self._pipeline = None
            self._commit = None
            self._started.clear()
            if self._refreshing is not None:
                self._refreshing.cancel()
            await pipeline.stop()
            await self.offsets.stop()
            await producer.stop()
