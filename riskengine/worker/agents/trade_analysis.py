"""The trade-analysis agent: crypto-trades -> core -> risk-analyzed-trades, risk-alerts, dead letters.

The agent's loop only collects events (see :class:`~riskengine.worker.commit.Delivery`, which
sizes the batches); each batch is analyzed when it is taken, in one tight loop. Per trade
(partitioned by userId, so one worker owns each user): decode the Avro value, take the user's state
envelope (from memory, else the batch, else the RocksDB table), run
:func:`riskengine.core.evaluate_trade` with the active rules and the profiles, encode the analyzed
trade (``processedAt`` stamped) and the alerts, and add the new envelope and the outputs to the
batch. Anything that fails for one trade (decoding, validation, a key that is not the trade's
userId, an exception in the core, encoding) becomes a dead letter: the original bytes go to the
dead-letter topic with headers ``reason``, ``exception``, ``detail``, ``source-topic``,
``source-partition``, ``source-offset``, it is counted, and processing continues.

Output path: after the batch is analyzed, its envelopes (the last one per user) are written to
RocksDB in one write per partition, then :class:`~riskengine.worker.commit.Delivery` sends them to
the changelog; the outputs follow once the changelog is acknowledged, and the events are acked last
(see that module). Outputs are co-partitioned with their input: an analyzed trade or alert goes to
the partition its trade came from (the one murmur2 of the userId key gives, when the trade's
producer uses Kafka's default partitioner).

An envelope carries, next to the new state, the source partition/offset of its last trade and the
encoded bytes of the outputs not yet known to be delivered (the "pending outputs", see
:mod:`riskengine.worker.tables.user_state`). After a crash the new owner restores the table from the
changelog and re-reads from the last committed offset. A trade at or below the envelope's applied
offset is already in the state: it is not applied again, and its stored output bytes are sent again
when still pending, so a duplicate is byte-identical (same ``processedAt``). A trade whose state
never reached the changelog had no outputs sent, so it is processed as new.

Rules: the active version comes from the risk-rules topic, read by every worker (see
:mod:`riskengine.worker.tables.reference_feed`) and activated as soon as a valid, newer message arrives;
analyzed trades and alerts carry the ``ruleVersion`` that produced them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from faust.types import TP

from riskengine.contracts.avro_codec import DecodeError, RegistryError, UnknownSchemaId
from riskengine.core import (
    ReferenceData,
    Rules,
    Trade,
    UserState,
    decode_state,
    encode_state,
    evaluate_trade,
)
from riskengine.worker.commit import Batch, Delivery, Record
from riskengine.worker.tables.reference_feed import ProfileView, ReferenceReader, RulesHolder
from riskengine.worker.tables.user_state import (
    ALERT,
    ANALYZED,
    Envelope,
    Pending,
    StateStore,
    decode_envelope,
    define_state_table,
    encode_envelope,
    with_pending,
)

if TYPE_CHECKING:
    from riskengine.worker.app import RiskApp

log = logging.getLogger(__name__)

#: Longest exception text copied into the ``detail`` header.
MAX_DETAIL = 1000
#: Users whose decoded state is kept in memory (least recently used ones are dropped first).
STATE_CACHE_SIZE = 50_000


class DeadLetter(Exception):
    """Processing of one trade failed; ``reason`` goes into the dead-letter headers."""

    def __init__(self, reason: str, cause: BaseException) -> None:
        super().__init__(f"{reason}: {cause}")
        self.reason = reason
        self.cause = cause


def dead_letter_headers(
    reason: str, cause: BaseException, topic: str, partition: int, offset: int
) -> list[tuple[str, bytes]]:
    """The headers of a dead letter: why, what raised, and where the original message was."""
    return [
        ("reason", reason.encode()),
        ("exception", type(cause).__name__.encode()),
        ("detail", str(cause)[:MAX_DETAIL].encode("utf-8", "replace")),
        ("source-topic", topic.encode()),
        ("source-partition", str(partition).encode()),
        ("source-offset", str(offset).encode()),
    ]


class TradeAnalysis:
    """The agent's work per event; a :class:`~riskengine.worker.commit.Delivery` sends what it produces."""

    def __init__(self, app: RiskApp) -> None:
        self.app = app
        self.catalog = app.catalog
        self.metrics = app.metrics
        self.table = define_state_table(app)
        self.store = StateStore(self.table)
        names = app.names
        self.reader = ReferenceReader(app.settings, names.user_profiles, names.risk_rules)
        self.profiles = ProfileView(self.reader.profiles, app.catalog, self._invalid_profile)
        self.reference = ReferenceData(profiles=self.profiles)
        self.rules = RulesHolder(app.catalog, Rules.default())
        self.reader.on_rules = self.rules.offer
        partitions = app.settings.topic_partitions
        self.trades = app.topic(names.trades, key_type=bytes, value_type=bytes, partitions=partitions)
        self.names = names
        self._unknown_ids: set[int] = set()
        # key -> (table value, its envelope, its decoded state): reading and decoding the state is a
        # third of the work per trade. Valid while this worker owns the user's partition without
        # interruption, so it is cleared at every rebalance (another worker may have written since).
        # Insertion order is recency: hits are re-inserted.
        self._states: dict[bytes, tuple[bytes, Envelope, UserState]] = {}
        #: source partition -> highest offset whose outputs the broker acknowledged
        self._delivered: dict[int, int] = {}
        app.on_partitions_revoked.connect(self._forget_states)
        app.on_partitions_assigned.connect(self._forget_states)

    def _forget_states(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        self._states.clear()

    def _invalid_profile(self, user_id: str, exc: Exception) -> None:
        self.metrics.invalid_profiles += 1
        log.warning("profile of %s ignored: %s", user_id, exc)

    # -- the agent ---------------------------------------------------------------------------

    async def run(self, stream: Any) -> None:
        """Consume ``stream`` with manual acks: collect events; :meth:`_analyze` handles each batch."""
        manual = stream.noack()
        delivery = Delivery(
            self.app.settings,
            self.table.changelog_topic.get_topic_name(),
            on_taken=self._analyze,
            on_changelog=self._changelog_persisted,
            on_delivered=self._delivered_up_to,
            on_failure=self.app.crash,
        )
        await delivery.start()
        consumer = self.app.consumer
        try:
            async for event in manual.events():
                await delivery.room()
                message = event.message
                highwater = consumer.highwater(message.tp)
                more_waiting = highwater is not None and message.offset + 1 < highwater
                delivery.add(event, manual, more_waiting)
        finally:
            await delivery.stop()

    async def _analyze(self, batch: Batch) -> None:
        """Analyze ``batch``'s events in order, then write the users' newest envelopes to RocksDB.

        Never raises for one bad trade. Running a whole batch in one tight loop (rather than one
        trade per event between Faust's own per-event work) keeps the detection code hot in the
        CPU caches; the local write comes before the batch's changelog is sent.
        """
        processed_at = int(time.time() * 1000)
        for event, _stream in batch.events:
            message = event.message
            decoded = self._decode(message)
            if isinstance(decoded, DeadLetter) and isinstance(decoded.cause, UnknownSchemaId):
                decoded = await self._decode_with_fetch(message, decoded.cause)
            self._handle(message, decoded, processed_at, batch)
        self.store.write(batch.changelog)

    def _handle(self, message: Any, decoded: Trade | DeadLetter, processed_at: int, batch: Batch) -> None:
        self.metrics.trades_in += 1
        self.metrics.positions[message.partition] = message.offset
        try:
            if isinstance(decoded, DeadLetter):
                raise decoded
            key = message.key
            if key is None or key != decoded.user_id.encode():
                raise DeadLetter("key-mismatch", ValueError(f"message key {key!r} is not the trade's userId"))
            self._apply(decoded, key, message, processed_at, batch)
        except DeadLetter as failed:
            batch.outputs.append(self._dead_letter(message, failed))
        except Exception as exc:  # Any failure of one trade must become a dead letter, never a loss.
            log.exception("trade at %s/%s failed", message.partition, message.offset)
            batch.outputs.append(self._dead_letter(message, DeadLetter("processing-error", exc)))

    def _decode(self, message: Any) -> Trade | DeadLetter:
        """The trade in ``message``, or the dead letter it becomes."""
        try:
            return self.catalog.decode_trade(message.value)
        except DecodeError as exc:
            return DeadLetter(exc.reason, exc)
        except Exception as exc:  # An unexpected decoder failure is one trade's dead letter too.
            log.exception("trade at %s/%s failed to decode", message.partition, message.offset)
            return DeadLetter("processing-error", exc)

    async def _decode_with_fetch(self, message: Any, unknown: UnknownSchemaId) -> Trade | DeadLetter:
        """A writer with a schema this worker has not seen: fetch it once, then decode again."""
        if unknown.schema_id in self._unknown_ids:
            return DeadLetter(unknown.reason, unknown)
        try:
            await self.catalog.fetch(unknown.schema_id)
        except (UnknownSchemaId, RegistryError) as missing:
            self._unknown_ids.add(unknown.schema_id)
            return DeadLetter(unknown.reason, missing)
        except Exception as exc:  # An unexpected registry failure is one trade's dead letter too.
            log.exception("trade at %s/%s: schema fetch failed", message.partition, message.offset)
            return DeadLetter("processing-error", exc)
        return self._decode(message)

    def _apply(self, trade: Trade, key: bytes, message: Any, processed_at: int, batch: Batch) -> None:
        """Evaluate ``trade``, add its envelope (the changelog record) and its outputs to ``batch``."""
        partition = message.partition
        offset = message.offset
        # Popped: the core updates the state in place, so after a failure it must not be reused.
        cached = self._states.pop(key, None)
        if cached is not None:
            raw: bytes | None = cached[0]
            envelope: Envelope | None = cached[1]
        else:
            raw = batch.changelog.get((partition, key))
            if raw is None:
                raw = self.store.get(partition, key)
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
        evaluation = evaluate_trade(state, trade, self.reference, self.rules.current)
        analyzed = evaluation.analyzed._replace(processed_at=processed_at)
        outputs: list[tuple[int, bytes]] = [(ANALYZED, self.catalog.encode_analyzed(analyzed, message.value))]
        alert_records = [alert.to_record() for alert in evaluation.alerts]
        outputs.extend((ALERT, self.catalog.encode("RiskAlert", record)) for record in alert_records)
        previous = () if envelope is None else envelope.pending
        delivered = self._delivered.get(partition)
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

    def _dead_letter(self, message: Any, failed: DeadLetter) -> Record:
        self.metrics.dead_letters_by_reason[failed.reason] += 1
        headers = dead_letter_headers(
            failed.reason, failed.cause, message.topic, message.partition, message.offset
        )
        log.warning("dead letter %s/%s/%s: %s", message.topic, message.partition, message.offset, failed)
        value = message.value if message.value is not None else b""
        return (self.names.trades_dlq, message.partition, message.key, value, headers)

    # -- called by the delivery tasks ----------------------------------------------------------

    def _changelog_persisted(self, highest: dict[int, int]) -> None:
        """Store the highest acknowledged changelog offset per partition, as Faust does after a write."""
        topic = self.table.changelog_topic.get_topic_name()
        for partition, offset in highest.items():
            try:
                self.table.data.set_persisted_offset(TP(topic, partition), offset)
            except Exception:  # The partition was revoked meanwhile; its new owner recovers it.
                log.debug("changelog offset of revoked partition %s not stored", partition)

    def _delivered_up_to(self, batch: Batch) -> None:
        """The outputs of ``batch`` are acknowledged: no longer pending, and counted."""
        self.metrics.count_analyzed(batch.analyzed)
        for partition, offset in batch.offsets().items():
            self._delivered[partition] = max(offset, self._delivered.get(partition, -1))


def register_trade_analysis(app: RiskApp) -> TradeAnalysis:
    """Declare the tables and the agent on ``app``."""
    analysis = TradeAnalysis(app)
    app.analysis = analysis

    @app.agent(analysis.trades, name="trade-analysis")
    async def trade_analysis(stream: Any) -> None:
        await analysis.run(stream)

    return analysis
