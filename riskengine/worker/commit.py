"""The commit protocol: the one place that orders what a batch of events makes durable.

An agent analyzes a :class:`Batch` of source events and fills it with the users' new state
envelopes (the table's changelog records) and the records to send (analyzed trades, alerts, dead
letters). :class:`CommitProtocol` then makes the batch durable in five steps, each started only
when the one before it has completed for the whole batch:

1. **State written.** The envelopes go to the local RocksDB store, one write per partition.
2. **Changelog acknowledged.** The same envelopes are sent to the table's changelog topic and
   acknowledged by the broker (``acks=all``).
3. **Stored changelog offset advanced.** Each partition database records the highest acknowledged
   changelog offset (as Faust does after its own writes), so recovery replays only what follows.
4. **Outputs and dead letters acknowledged.** The analyzed trades, alerts and dead letters are sent
   and acknowledged.
5. **Events acked.** The batch's source events are acked; Faust commits their offsets from then on.
   (The user agent acks an event only once its user's state with it is written, which may be in a
   later batch: see "Checkpoints" in :mod:`riskengine.worker.agents.user_agent`.)

Steps 1-3 are :meth:`CommitProtocol.persist`, steps 4-5 :meth:`CommitProtocol.publish`; the
pipeline (:mod:`riskengine.worker.pipeline`) persists batches one at a time and publishes them in
the same order, so one batch's publish overlaps the next one's persist.

Outputs first (``outputs_first=True``: the market and account-pair agents): step 4 comes before
step 1, so ``persist`` is 4, 1, 2, 3 and ``publish`` is 5. Those agents' outputs are a pure function
of the stored state and the events (no processing time is stamped), so a batch re-processed after a
crash from the state before it sends byte-identical outputs again, and a state that reached the
store is never ahead of its outputs: no pending outputs need to be kept in the state. An event the
state already holds (at or before its last applied one) is a re-delivery: it sends the state to the
changelog again and nothing else.

Why this order, and what a crash at each point leaves:

- An envelope carries, next to the state, the offset of its last event and the exact bytes of the
  outputs not yet known to be delivered (see :mod:`riskengine.worker.tables.user_state`). After a
  crash the partition's next owner restores the table from the changelog and re-reads the events
  from the last committed offset; an event at or below its user's envelope offset is already in
  the state, so it is not applied again and its stored outputs are sent again, byte for byte.
- Crash before step 2: nothing of the batch left the worker but its local store. The events are
  re-read; if the same worker's store already holds their state, the re-read treats them as
  re-deliveries and sends the envelope to the changelog again before their outputs.
- Crash after step 2, before step 5: the changelog holds the state and the pending outputs; the
  outputs are sent again on re-delivery (duplicates are byte-identical, so downstream upserts by
  id deduplicate).
- A failure to write or to get an acknowledgement at any step raises :class:`DeliveryFailed`:
  nothing of the batch is acked, and the worker stops (the pipeline crashes the app), so whoever
  owns the partitions next processes the batch again.

Rebalance fencing: every rebalance starts a new *generation* (:class:`Fence`), before Faust revokes
anything. A batch belongs to the generation it was started in; the protocol checks that generation
before every step, so a batch from before the rebalance stops at its next step boundary with
:class:`Fenced`: the step in flight completes (a send cannot be recalled) and nothing after it is
written, sent or acked. The pipeline then lets go of the batch's events, unacked: Faust's revocation
waits for every event handed out until it is acked or let go, so the revocation completes only after
each batch in flight has reached a step boundary, and nothing of a revoked partition is written
after it. After the rebalance Faust seeks every partition to its committed offset, so the events
come again, to whoever owns them now; what the stopped batch did make durable is handled as after a
crash at the same point (above). While the rebalance lasts, arriving events are let go at once. A
store that does not hold a partition of a batch of the current generation is a fault
(:class:`DeliveryFailed`), never a reason to skip the write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer

from riskengine.connections import client_options
from riskengine.errors import FatalError, WorkerError
from riskengine.settings import Settings

Headers = list[tuple[str, bytes]]
#: (topic, partition, key, value, headers) of one record to send.
Record = tuple[str, int, bytes | None, bytes, Headers | None]


class DeliveryFailed(WorkerError, FatalError):
    """A write or a send of the commit protocol failed; the message names the step."""


class Fenced(WorkerError):
    """The batch is from before the current rebalance: it stops here and its events come again."""


class Fence:
    """The rebalance generation, and whether a rebalance is under way.

    :meth:`begin_rebalance` is called from Faust's consumer thread as a rebalance starts, before
    anything is revoked; only that thread changes the generation, so an int is enough.
    """

    def __init__(self) -> None:
        self.generation = 0
        self.rebalancing = False

    def begin_rebalance(self) -> None:
        """A rebalance starts: batches started before now are fenced, arriving events let go."""
        self.rebalancing = True
        self.generation += 1

    def end_rebalance(self) -> None:
        """The new assignment is in place: events are taken again."""
        self.rebalancing = False

    def stale(self, batch: Batch) -> bool:
        """True when ``batch`` was started before the current rebalance."""
        return batch.generation != self.generation

    def check(self, batch: Batch, step: str) -> None:
        """Raise :class:`Fenced` before ``step`` of a stale batch."""
        if self.stale(batch):
            raise Fenced(f"a rebalance started: the batch stops before {step}")


@dataclass
class Batch:
    """A run of source events and what analyzing them produced, made durable together."""

    #: (event, what acks it: ``ack(event)``, see faust_compat.Acks), in arrival order (offset order
    #: per partition); after the analysis, the events it applied: their outputs are this batch's
    events: list[tuple[Any, Any]] = field(default_factory=list)
    #: the events step 5 acks, when not ``events`` (the user agent: those, of this batch or earlier
    #: ones, whose users' states are written; see riskengine.worker.agents.user_agent)
    acks: list[tuple[Any, Any]] | None = None
    #: (partition, key) -> the newest envelope of that user in this batch (a changelog record)
    changelog: dict[tuple[int, bytes], bytes] = field(default_factory=dict)
    #: analyzed trades, alerts and dead letters, in event order
    outputs: list[Record] = field(default_factory=list)
    #: trades analyzed (not dead-lettered, not re-deliveries)
    analyzed: int = 0
    #: the analyzed trades' own timestamps (epoch ms), for the event-time lag at output
    event_times: list[int] = field(default_factory=list)
    #: the rebalance generation the batch was started in (see :class:`Fence`)
    generation: int = 0

    def to_ack(self) -> list[tuple[Any, Any]]:
        """The events step 5 acks."""
        return self.events if self.acks is None else self.acks

    def offsets(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> highest offset of the batch's events from it."""
        highest: dict[tuple[str, int], int] = {}
        for event, _stream in self.events:
            message = event.message
            where = (message.topic, message.partition)
            if message.offset > highest.get(where, -1):
                highest[where] = message.offset
        return highest


class StateWriter(Protocol):
    """The local side of a state table: which partitions it holds, batched writes, stored offsets."""

    def write(self, values: Mapping[tuple[int, bytes], bytes]) -> None:
        """Write ``(partition, key) -> value``, atomically per partition; raises when a partition is
        not held here (a revoked one is never opened again)."""
        ...

    def set_changelog_offset(self, partition: int, offset: int) -> None:
        """Record ``offset`` as the last changelog record applied to ``partition``."""
        ...


class BatchProducer(Protocol):
    """The part of :class:`aiokafka.AIOKafkaProducer` the protocol sends with."""

    def create_batch(self) -> Any:
        """An empty record batch builder."""
        ...

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> asyncio.Future[Any]:
        """Queue ``batch`` for ``topic``/``partition``; the future resolves to its RecordMetadata."""
        ...


def batch_producer(settings: Settings) -> AIOKafkaProducer:
    """The producer an agent's commit protocol sends with: every write acknowledged by all replicas,
    idempotent, large record batches."""
    return AIOKafkaProducer(
        **client_options(settings), acks="all", enable_idempotence=True, max_batch_size=128 * 1024
    )


class DeliveryProgress:
    """Per source (topic, partition), the highest offset whose outputs the broker acknowledged (step 4).

    The agent reads it to drop delivered outputs from the envelopes' pending outputs.
    """

    def __init__(self) -> None:
        self._delivered: dict[tuple[str, int], int] = {}

    def delivered(self, topic: str, partition: int) -> int | None:
        """The highest offset of ``topic``'s ``partition`` whose outputs are acknowledged, if any."""
        return self._delivered.get((topic, partition))

    def advance(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Outputs up to ``offsets`` ((topic, partition) -> offset) are acknowledged."""
        for where, offset in offsets.items():
            if offset > self._delivered.get(where, -1):
                self._delivered[where] = offset


class CommitProtocol:
    """Makes a batch durable in the order of the module docstring; raises :class:`DeliveryFailed`."""

    def __init__(
        self,
        store: StateWriter,
        producer: BatchProducer,
        changelog_topic: str,
        progress: DeliveryProgress,
        fence: Fence,
        *,
        outputs_first: bool = False,
    ) -> None:
        self.store = store
        self.producer = producer
        self.changelog_topic = changelog_topic
        self.progress = progress
        self.fence = fence
        self.outputs_first = outputs_first

    async def persist(self, batch: Batch) -> None:
        """Steps 1-3 (outputs first: 4, then 1-3): state written, changelog acknowledged, stored
        changelog offset advanced. :class:`Fenced` before any step of a stale batch."""
        fence = self.fence
        if self.outputs_first:
            fence.check(batch, "step 4")
            await self._send(batch.outputs, "step 4, the outputs")
            self.progress.advance(batch.offsets())
        store = self.store
        # 1. State written.
        fence.check(batch, "step 1")
        try:
            store.write(batch.changelog)
        except Exception as exc:
            raise DeliveryFailed(f"step 1, writing the state store: {exc!r}") from exc
        # 2. Changelog acknowledged.
        fence.check(batch, "step 2")
        records: list[Record] = [
            (self.changelog_topic, partition, key, value, None)
            for (partition, key), value in batch.changelog.items()
        ]
        highest = await self._send(records, "step 2, the changelog")
        # 3. Stored changelog offset advanced.
        fence.check(batch, "step 3")
        try:
            for (_topic, partition), offset in highest.items():
                store.set_changelog_offset(partition, offset)
        except Exception as exc:
            raise DeliveryFailed(f"step 3, storing the changelog offset: {exc!r}") from exc

    async def publish(self, batch: Batch) -> None:
        """Steps 4-5 (outputs first: 5): outputs and dead letters acknowledged, then the events acked.
        :class:`Fenced` before any step of a stale batch."""
        fence = self.fence
        # 4. Outputs and dead letters acknowledged.
        if not self.outputs_first:
            fence.check(batch, "step 4")
            await self._send(batch.outputs, "step 4, the outputs")
            self.progress.advance(batch.offsets())
        # 5. Events acked.
        fence.check(batch, "step 5")
        for event, stream in batch.to_ack():
            stream.ack(event)

    async def send(self, records: list[Record]) -> None:
        """Send records outside a batch (idle markers, when no batch is in flight); DeliveryFailed."""
        await self._send(records, "a send outside the batches")

    async def _send(self, records: list[Record], step: str) -> dict[tuple[str, int], int]:
        """Send ``records`` as one record batch per (topic, partition), wait for every acknowledgement.

        Returns the highest acknowledged offset per (topic, partition). Acknowledgements may arrive
        in any order; the step is complete only when all have.
        """
        producer = self.producer
        groups: dict[tuple[str, int], list[tuple[bytes | None, bytes, Headers | None]]] = {}
        for topic, partition, key, value, headers in records:
            groups.setdefault((topic, partition), []).append((key, value, headers))
        sent: list[tuple[tuple[str, int], int, asyncio.Future[Any]]] = []
        try:
            for (topic, partition), group in groups.items():
                builder, count = producer.create_batch(), 0
                for key, value, headers in group:
                    if builder.append(timestamp=None, key=key, value=value, headers=headers or []) is None:
                        future = await producer.send_batch(builder, topic, partition=partition)
                        sent.append(((topic, partition), count, future))
                        builder, count = producer.create_batch(), 0
                        # The first record of an empty batch is always accepted, whatever its size.
                        builder.append(timestamp=None, key=key, value=value, headers=headers or [])
                    count += 1
                future = await producer.send_batch(builder, topic, partition=partition)
                sent.append(((topic, partition), count, future))
            highest: dict[tuple[str, int], int] = {}
            for where, count, future in sent:
                metadata = await future
                highest[where] = max(metadata.offset + count - 1, highest.get(where, -1))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The batch failed: the other batches' outcomes no longer matter (nor their errors).
            for _where, _count, future in sent:
                future.add_done_callback(_forget_outcome)
            raise DeliveryFailed(f"{step} was not acknowledged: {exc!r}") from exc
        return highest


def _forget_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
