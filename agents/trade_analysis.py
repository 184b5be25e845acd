"""The trade-analysis agent: crypto-trades -> core -> risk-analyzed-trades, risk-alerts, dead letters.

Per trade (partitioned by userId, so one worker owns each user): decode the Avro value, read the
user's state envelope from the RocksDB table, run :func:`riskengine.core.evaluate_trade` with the
active rules and the profiles global table, encode the analyzed trade (``processedAt`` stamped) and
the alerts, write the new envelope, send the outputs keyed by userId. Anything that fails for one
trade (decoding, validation, a key that is not the trade's userId, an exception in the core,
encoding) sends the original bytes to the dead-letter topic with headers ``reason``,
``exception``, ``detail``, ``source-topic``, ``source-partition``, ``source-offset``, is counted,
and processing continues.

Delivery semantics (at-least-once input, identical duplicates only):

- The stream is consumed with manual acks. An event is acked only after everything it produced
  (outputs or dead letter) has been handed to the producer, and Faust flushes the producer before
  it commits an offset, so a committed offset never covers an event whose output could be lost.
- A trade's state write (changelog record) carries, next to the new state, the source
  partition/offset of the trade and the encoded bytes of its outputs (the "pending outputs",
  see :mod:`riskengine.tables.user_state`). Its outputs are sent only once that changelog record is
  acknowledged by the broker (a FIFO completion task awaits it; the agent loop does not wait).
- After a crash the new owner restores the table from the changelog and re-reads from the last
  committed offset. For a trade whose offset is at or below the envelope's last applied offset,
  the state already contains it: it is not applied again, and its stored output bytes are sent
  again when still pending, so a duplicate is byte-identical (same ``processedAt``). A trade whose
  state write never became durable had no outputs sent, so it is processed as new.
- Pending entries below the consumer's committed offset are dropped at the user's next write
  (they can never be re-delivered); at most ``MAX_PENDING`` are kept per user.

Rules: the active version comes from the risk-rules topic, read by every worker (see
:mod:`riskengine.tables.reference`) and activated as soon as a valid, newer message arrives;
analyzed trades and alerts carry the ``ruleVersion`` that produced them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from riskengine.codecs import DecodeError, RegistryError, UnknownSchemaId
from riskengine.core import (
    ReferenceData,
    Rules,
    Trade,
    UserState,
    decode_state,
    encode_state,
    evaluate_trade,
)
from riskengine.tables.reference import ProfileView, ReferenceReader, RulesHolder
from riskengine.tables.user_state import (
    ALERT,
    ANALYZED,
    Envelope,
    Pending,
    decode_envelope,
    define_state_table,
    encode_envelope,
    with_pending,
)

if TYPE_CHECKING:
    from riskengine.app import RiskApp

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
    """The agent's work per event, and the completion task that sends outputs and acks in order."""

    def __init__(self, app: RiskApp) -> None:
        self.app = app
        self.catalog = app.catalog
        self.metrics = app.metrics
        self.table = define_state_table(app)
        names = app.names
        self.reader = ReferenceReader(app.settings, names.user_profiles, names.risk_rules)
        self.profiles = ProfileView(self.reader.profiles, app.catalog, self._invalid_profile)
        self.reference = ReferenceData(profiles=self.profiles)
        self.rules = RulesHolder(app.catalog, Rules.default())
        self.reader.on_rules = self.rules.offer
        partitions = app.settings.topic_partitions
        self.trades = app.topic(names.trades, key_type=bytes, value_type=bytes, partitions=partitions)
        self.analyzed = app.topic(
            names.analyzed_trades, key_type=bytes, value_type=bytes, partitions=partitions
        )
        self.alerts = app.topic(names.alerts, key_type=bytes, value_type=bytes, partitions=partitions)
        self.dlq = app.topic(names.trades_dlq, key_type=bytes, value_type=bytes, partitions=partitions)
        self._unknown_ids: set[int] = set()
        # key -> (table value, its envelope, its decoded state): decoding the state is a third of
        # the work per trade. The table stays the source of truth: an entry is used only while the
        # table still holds exactly the bytes it was made from (a restore or another worker's
        # writes after a rebalance change them). Insertion order is recency: hits are re-inserted.
        self._states: dict[bytes, tuple[bytes, Envelope, UserState]] = {}
        # (event, changelog future or None, [(topic, key, value, headers)], stream)
        self._done: asyncio.Queue[tuple[Any, Any, list[tuple[Any, bytes | None, bytes, Any]], Any]] | None
        self._done = None

    def _invalid_profile(self, user_id: str, exc: Exception) -> None:
        self.metrics.invalid_profiles += 1
        log.warning("profile of %s ignored: %s", user_id, exc)

    # -- the agent ---------------------------------------------------------------------------

    async def run(self, stream: Any) -> None:
        """Consume ``stream`` with manual acks; never raises for one bad trade."""
        manual = stream.noack()
        self._done = asyncio.Queue()
        completer = asyncio.ensure_future(self._complete(self._done))
        try:
            async for event in manual.events():
                await self._handle(event, manual)
        finally:
            completer.cancel()

    async def _handle(self, event: Any, stream: Any) -> None:
        assert self._done is not None
        message = event.message
        self.metrics.trades_in += 1
        self.metrics.positions[message.partition] = message.offset
        try:
            trade = await self._decode(message.value)
            key = message.key
            if key is None or key != trade.user_id.encode():
                raise DeadLetter("key-mismatch", ValueError(f"message key {key!r} is not the trade's userId"))
            sends = self._apply(trade, message.partition, message.offset)
        except DeadLetter as failed:
            self._done.put_nowait((event, None, [self._dead_letter(message, failed)], stream))
            return
        except Exception as exc:  # Any failure of one trade must become a dead letter, never a loss.
            log.exception("trade at %s/%s failed", message.partition, message.offset)
            error = DeadLetter("processing-error", exc)
            self._done.put_nowait((event, None, [self._dead_letter(message, error)], stream))
            return
        changelog, outputs = sends
        self._done.put_nowait((event, changelog, outputs, stream))

    async def _decode(self, value: bytes | None) -> Trade:
        try:
            return self.catalog.decode_trade(value)
        except UnknownSchemaId as exc:
            # A writer with a schema this worker has not seen: fetch it once (async), then retry.
            if exc.schema_id in self._unknown_ids:
                raise DeadLetter(exc.reason, exc) from exc
            try:
                await self.catalog.fetch(exc.schema_id)
            except (UnknownSchemaId, RegistryError) as missing:
                self._unknown_ids.add(exc.schema_id)
                raise DeadLetter(exc.reason, missing) from exc
            try:
                return self.catalog.decode_trade(value)
            except DecodeError as again:
                raise DeadLetter(again.reason, again) from again
        except DecodeError as exc:
            raise DeadLetter(exc.reason, exc) from exc

    def _apply(
        self, trade: Trade, partition: int, offset: int
    ) -> tuple[Any, list[tuple[Any, bytes | None, bytes, Any]]]:
        """Evaluate ``trade``, write the envelope; returns (changelog future, outputs to send)."""
        key = trade.user_id.encode()
        raw = self.table.get(key)
        # Popped: the core updates the state in place, so after a failure it must not be reused.
        cached = self._states.pop(key, None)
        if cached is not None and cached[0] != raw:
            cached = None
        envelope = None if raw is None else cached[1] if cached is not None else decode_envelope(raw)
        if envelope is not None and envelope.applied(partition, offset):
            # A re-delivery after a crash: the state already has this trade.
            self.metrics.redelivered += 1
            entry = envelope.pending_for(offset)
            if entry is None:
                return None, []
            self.metrics.resent += 1
            return None, self._sends(key, entry.outputs)
        if cached is not None:
            state = cached[2]
        else:
            state = UserState() if envelope is None else decode_state(envelope.state)
        evaluation = evaluate_trade(state, trade, self.reference, self.rules.current)
        analyzed = evaluation.analyzed._replace(processed_at=int(time.time() * 1000))
        outputs: list[tuple[int, bytes]] = [
            (ANALYZED, self.catalog.encode("RiskAnalyzedTrade", analyzed.to_record()))
        ]
        alert_records = [alert.to_record() for alert in evaluation.alerts]
        outputs.extend((ALERT, self.catalog.encode("RiskAlert", record)) for record in alert_records)
        previous = () if envelope is None else envelope.pending
        pending = with_pending(previous, Pending(offset, tuple(outputs)), self._committed(partition))
        written = Envelope(partition, offset, encode_state(evaluation.state), pending)
        value = encode_envelope(written)
        self.table[key] = value
        changelog = self.table.last_sent
        self._states[key] = (value, written, evaluation.state)
        if len(self._states) > STATE_CACHE_SIZE:
            del self._states[next(iter(self._states))]
        self.metrics.count_analyzed()
        for record in alert_records:
            self.metrics.alerts_by_pattern[record["patternType"]] += 1
            self.metrics.recent_alerts.append(record)
        return changelog, self._sends(key, tuple(outputs))

    def _sends(
        self, key: bytes, outputs: Sequence[tuple[int, bytes]]
    ) -> list[tuple[Any, bytes | None, bytes, Any]]:
        return [
            (self.analyzed if kind == ANALYZED else self.alerts, key, data, None) for kind, data in outputs
        ]

    def _committed(self, partition: int) -> int | None:
        """The consumer's committed offset of the trades partition, or None when unknown."""
        try:
            from faust.types import TP

            # Faust keeps the committed offsets privately; without them, MAX_PENDING bounds the list.
            committed = getattr(self.app.consumer, "_committed_offset", {}).get(
                TP(self.trades.get_topic_name(), partition)
            )
        except (AttributeError, KeyError, RuntimeError):
            return None
        return committed if isinstance(committed, int) else None

    def _dead_letter(self, message: Any, failed: DeadLetter) -> tuple[Any, bytes | None, bytes, Any]:
        self.metrics.dead_letters_by_reason[failed.reason] += 1
        headers = dead_letter_headers(
            failed.reason, failed.cause, message.topic, message.partition, message.offset
        )
        log.warning("dead letter %s/%s/%s: %s", message.topic, message.partition, message.offset, failed)
        return (self.dlq, message.key, message.value if message.value is not None else b"", headers)

    async def _complete(
        self, queue: asyncio.Queue[tuple[Any, Any, list[tuple[Any, bytes | None, bytes, Any]], Any]]
    ) -> None:
        """In arrival order: wait for the state write, hand the outputs to the producer, ack."""
        while True:
            event, changelog, sends, stream = await queue.get()
            try:
                if changelog is not None:
                    # Outputs go out only once the state holding their bytes is durable.
                    await changelog
                for topic, key, value, headers in sends:
                    topic.send_soon(key=key, value=value, headers=headers)
            except Exception:  # The producer failed: do not ack; Faust re-delivers after restart.
                log.exception("could not complete the event at offset %s", event.message.offset)
                continue
            await stream.ack(event)


def register_trade_analysis(app: RiskApp) -> TradeAnalysis:
    """Declare the tables and the agent on ``app``."""
    analysis = TradeAnalysis(app)
    app.analysis = analysis

    @app.agent(analysis.trades, name="trade-analysis")
    async def trade_analysis(stream: Any) -> None:
        await analysis.run(stream)

    return analysis
