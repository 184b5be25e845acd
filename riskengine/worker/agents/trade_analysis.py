"""The trade-analysis agent: crypto-trades -> core -> risk-analyzed-trades, risk-alerts, dead letters.

Where a trade is scored in the worker. :class:`TradeAgent` is the Faust side: its loop only
collects events into batches (:mod:`riskengine.worker.pipeline`); :meth:`TradeAnalysis.analyze`
then handles a batch in one tight loop, without Faust. Per trade (partitioned by userId, so one
worker owns each user): decode the Avro value, take the user's state envelope (from memory, else
the batch, else the RocksDB table), run :func:`riskengine.core.evaluate_trade` with the active
rules and the reference data, encode the analyzed trade (``processedAt`` stamped) and the alerts,
and add the new envelope and the outputs to the batch. The commit protocol
(:mod:`riskengine.worker.commit`) makes the batch durable.

Anything that rejects one trade (:class:`~riskengine.errors.EventRejected`: decoding, validation,
a key that is not the trade's userId; or any unexpected exception, wrapped as
:class:`ProcessingFailed`) becomes a dead letter in the same batch, at the trade's place: the
original bytes go to the dead-letter topic with headers ``reason``, ``exception``, ``detail``,
``source-topic``, ``source-partition``, ``source-offset``; it is counted, and the batch goes on.
Outputs are co-partitioned with their input: an analyzed trade or alert goes to the partition its
trade came from (the one murmur2 of the userId key gives, when the trade's producer uses Kafka's
default partitioner).

Re-delivery: an envelope carries the source partition/offset of its last trade and the encoded
bytes of the outputs not yet known to be delivered (the "pending outputs"). A trade at or below
the envelope's applied offset is already in the state: it is not applied again, its envelope goes
to the changelog again and its stored output bytes are sent again when still pending, so a
duplicate is byte-identical (same ``processedAt``). A trade whose state never reached the
changelog had no outputs sent, so it is processed as new.

Rules: the active version comes from the risk-rules topic, read by every worker (see
:mod:`riskengine.worker.tables.reference_feed`); analyzed trades and alerts carry the
``ruleVersion`` that produced them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

import faust
from aiokafka import AIOKafkaProducer

from riskengine.connections import client_options
from riskengine.contracts.avro_codec import RegistryError, UnknownSchemaId
from riskengine.core import Trade, UserState, decode_state, encode_state, evaluate_trade
from riskengine.errors import EventRejected, WorkerError
from riskengine.worker.commit import Batch, CommitProtocol, DeliveryProgress, Record, StateWriter
from riskengine.worker.context import WorkerContext
from riskengine.worker.pipeline import BatchPipeline
from riskengine.worker.tables.user_state import (
    ALERT,
    ANALYZED,
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


class KeyMismatch(WorkerError, EventRejected):
    """The message key is not the trade's userId (the trade would land on another user's state)."""

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


class TradeAnalysis:
    """Analyzes batches of trades against the users' states; no Faust, no I/O but the state reads."""

    def __init__(self, context: WorkerContext, user_state: StateStore, progress: DeliveryProgress) -> None:
        self.catalog = context.catalog
        self.metrics = context.metrics
        self.reference = context.reference
        self.names = context.names
        self.user_state = user_state
        self.progress = progress
        self._unknown_ids: set[int] = set()
        # key -> (table value, its envelope, its decoded state): reading and decoding the state is a
        # third of the work per trade. Valid while this worker owns the user's partition without
        # interruption, so it is cleared at every rebalance (another worker may have written since).
        # Insertion order is recency: hits are re-inserted.
        self._states: dict[bytes, tuple[bytes, Envelope, UserState]] = {}

    def forget_states(self) -> None:
        """Drop the decoded states kept in memory (at every rebalance)."""
        self._states.clear()

    async def analyze(self, batch: Batch) -> None:
        """Analyze ``batch``'s events in order, adding envelopes, outputs and dead letters to it.

        Never raises for one bad trade: its dead letter takes its place in the batch's outputs.
        Running a whole batch in one tight loop (rather than one trade per event between Faust's
        own per-event work) keeps the detection code hot in the CPU caches.
        """
        processed_at = int(time.time() * 1000)
        metrics = self.metrics
        for event, _stream in batch.events:
            message = event.message
            metrics.trades_in += 1
            metrics.positions[message.partition] = message.offset
            try:
                try:
                    trade = self.catalog.decode_trade(message.value)
                except UnknownSchemaId as unknown:
                    await self._fetch_schema(unknown)
                    trade = self.catalog.decode_trade(message.value)
                if message.key is None or message.key != trade.user_id.encode():
                    raise KeyMismatch(f"message key {message.key!r} is not the trade's userId")
                self._apply(trade, message, processed_at, batch)
            except EventRejected as rejected:
                batch.outputs.append(self._dead_letter(message, rejected))
            except Exception as exc:  # Any failure of one trade must become a dead letter, never a loss.
                log.exception("trade at %s/%s failed", message.partition, message.offset)
                failed = ProcessingFailed(f"{type(exc).__name__}: {exc}")
                failed.__cause__ = exc
                batch.outputs.append(self._dead_letter(message, failed))

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

    def _apply(self, trade: Trade, message: Any, processed_at: int, batch: Batch) -> None:
        """Evaluate ``trade``, add its envelope (the changelog record) and its outputs to ``batch``."""
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
        if raw is not None and envelope is not None and envelope.applied(partition, offset):
            # A re-delivery after a crash: the state already has this trade. Its changelog record
            # goes out again (the local write may never have reached the broker), then any outputs
            # still pending.
            self.metrics.redelivered += 1
            batch.changelog[(partition, key)] = raw
            entry = envelope.pending_for(offset)
            if entry is not None:
                self.metrics.resent += 1
                batch.outputs.extend(self._records(partition, key, entry.outputs))
            return
        if cached is not None:
            state = cached[2]
        else:
            state = UserState() if envelope is None else decode_state(envelope.state)
        evaluation = evaluate_trade(state, trade, self.reference.data, self.reference.rules.current)
        analyzed = evaluation.analyzed._replace(processed_at=processed_at)
        outputs: list[tuple[int, bytes]] = [(ANALYZED, self.catalog.encode_analyzed(analyzed, message.value))]
        alert_records = [alert.to_record() for alert in evaluation.alerts]
        outputs.extend((ALERT, self.catalog.encode("RiskAlert", record)) for record in alert_records)
        previous = () if envelope is None else envelope.pending
        delivered = self.progress.delivered(partition)
        pending = with_pending(
            previous, Pending(offset, tuple(outputs)), None if delivered is None else delivered + 1
        )
        written = Envelope(partition, offset, encode_state(evaluation.state), pending)
        stored = encode_envelope(written)
        batch.changelog[(partition, key)] = stored
        batch.outputs.extend(self._records(partition, key, outputs))
        self._states[key] = (stored, written, evaluation.state)
        if len(self._states) > STATE_CACHE_SIZE:
            del self._states[next(iter(self._states))]
        batch.analyzed += 1
        for record in alert_records:
            self.metrics.alerts_by_pattern[record["patternType"]] += 1
            self.metrics.recent_alerts.append(record)

    def _records(self, partition: int, key: bytes, outputs: Sequence[tuple[int, bytes]]) -> list[Record]:
        names = self.names
        return [
            (names.analyzed_trades if kind == ANALYZED else names.alerts, partition, key, data, None)
            for kind, data in outputs
        ]

    def _dead_letter(self, message: Any, rejected: EventRejected) -> Record:
        self.metrics.dead_letters_by_reason[rejected.reason] += 1
        headers = dead_letter_headers(rejected, message.topic, message.partition, message.offset)
        log.warning("dead letter %s/%s/%s: %s", message.topic, message.partition, message.offset, rejected)
        value = message.value if message.value is not None else b""
        return (self.names.trades_dlq, message.partition, message.key, value, headers)


class TradeAgent:
    """The Faust side: the trades topic, the agent that collects its events, the pipeline."""

    def __init__(self, app: faust.App, context: WorkerContext, user_state: UserStateTable) -> None:
        self.app = app
        self.context = context
        self.user_state = user_state
        self.topic = app.topic(
            context.names.trades,
            key_type=bytes,
            value_type=bytes,
            partitions=context.settings.topic_partitions,
        )
        self.progress = DeliveryProgress()
        self.analysis = TradeAnalysis(context, user_state, self.progress)
        app.on_partitions_revoked.connect(self._forget_states)
        app.on_partitions_assigned.connect(self._forget_states)

        @app.agent(self.topic, name="trade-analysis")
        async def trade_analysis(stream: Any) -> None:
            await self.run(stream)

    def _forget_states(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        self.analysis.forget_states()

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
        pipeline = BatchPipeline(commit, self.analysis.analyze, self.app.crash, self.context.metrics)
        pipeline.start()
        consumer = self.app.consumer
        try:
            async for event in manual.events():
                await pipeline.room()
                message = event.message
                highwater = consumer.highwater(message.tp)
                pipeline.add(event, manual, highwater is not None and message.offset + 1 < highwater)
        finally:
            await pipeline.stop()
            await producer.stop()
