"""Batched, ordered delivery of what the trade-analysis agent produces: changelog, outputs, acks.

Faust's own send path (a buffer task, a future and callbacks per record) cost more per trade than
the detection core, so the agent hands its records to :class:`Delivery`, which owns an aiokafka
producer and sends whole record batches (``send_batch``). Two tasks form a pipeline:

1. *collect*: take the filling :class:`Batch` of events when it is ready (see below), hand it to
   ``on_taken`` (the agent analyzes its events, adding the envelopes it writes, the outputs and the
   dead letters to the batch), send those envelopes (the last one per user) to the table's changelog
   topic, wait for their acknowledgement (``acks=all``) and report the offsets (``on_changelog``);
2. *deliver*, in batch order: send the outputs and dead letters, wait for their acknowledgement,
   report the batch (``on_delivered``), then ack the batch's events, so Faust commits their offsets
   only after all of that.

Batches size themselves ("smart batching"). The filling batch is ready as soon as the agent has no
further event waiting (its partition's consumer lag is zero), or once it holds :data:`MIN_BATCH`
events; collect takes it when the previous batch's changelog is acknowledged and at least
:data:`BATCH_INTERVAL_S` after the previous take (unless it already holds :data:`MIN_BATCH`
events). With a backlog, batches grow to hundreds of events, so the per-batch costs (produce
requests above all) are shared; at a low rate a trade waits a few milliseconds at most. At most
:data:`IN_FLIGHT` analyzed batches wait for the deliver stage.

A producer failure (after its own retries) crashes the worker through ``on_failure``: nothing of the
failed batch was acked, so it is re-delivered to whoever owns the partitions next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer

from riskengine.connections import client_options
from riskengine.settings import Settings

log = logging.getLogger(__name__)

#: Events a filling batch may hold before the agent waits for delivery (backpressure).
MAX_BATCH = 2_000
#: A batch is ready at this size even while more events are waiting on the broker.
MIN_BATCH = 500
#: Longest a non-empty batch waits to become ready: the lag the agent sees comes from the consumer's
#: last fetch and may be stale (during a rebalance, for instance), which must not hold a batch back.
MAX_LINGER_S = 0.050
#: Shortest time between two batches below MIN_BATCH. At 1,000 trades/s batches were otherwise
#: taken some 450 times a second with 2 trades each; their produce requests and Faust's fetch cycle
#: kept the event loop busy enough to delay the next fetch. Measured at 1,000 trades/s (p99 of the
#: end-to-end latency, two runs each): 26.6 and 26.0 ms with 5 ms, 35.8 and 29.6 ms without,
#: 39.9 and 35.6 ms with 8 ms.
BATCH_INTERVAL_S = 0.005
#: Analyzed batches (changelog acknowledged) waiting for the deliver stage.
IN_FLIGHT = 2

Headers = list[tuple[str, bytes]]
#: (topic, partition, key, value, headers) of one record to send.
Record = tuple[str, int, bytes | None, bytes, Headers | None]


@dataclass
class Batch:
    """What a run of events produced, delivered together."""

    #: (event, the stream that acks it) in arrival order
    events: list[tuple[Any, Any]] = field(default_factory=list)
    #: (partition, key) -> the last envelope written in this batch
    changelog: dict[tuple[int, bytes], bytes] = field(default_factory=dict)
    outputs: list[Record] = field(default_factory=list)
    #: trades analyzed (not dead-lettered, not re-deliveries) in this batch
    analyzed: int = 0

    def offsets(self) -> dict[int, int]:
        """Source partition -> highest offset in this batch (events arrive in offset order)."""
        return {event.message.partition: event.message.offset for event, _stream in self.events}


#: (partition, records in the batch, future of the batch's RecordMetadata)
Sent = tuple[int, int, "asyncio.Future[Any]"]


class Delivery:
    """The producer and the two pipeline tasks; the agent fills :attr:`filling`."""

    def __init__(
        self,
        settings: Settings,
        changelog_topic: str,
        *,
        on_taken: Callable[[Batch], Awaitable[None]],
        on_changelog: Callable[[dict[int, int]], None],
        on_delivered: Callable[[Batch], None],
        on_failure: Callable[[BaseException], Awaitable[None]],
    ) -> None:
        self.settings = settings
        self.changelog_topic = changelog_topic
        self.on_taken = on_taken
        self.on_changelog = on_changelog
        self.on_delivered = on_delivered
        self.on_failure = on_failure
        self.filling = Batch()
        self._work = asyncio.Event()
        self._ready = asyncio.Event()
        self._taken = asyncio.Event()
        self._analyzed: asyncio.Queue[Batch] = asyncio.Queue(maxsize=IN_FLIGHT)
        self._last_take = 0.0
        self._producer: AIOKafkaProducer | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start the producer and the pipeline tasks."""
        self._producer = AIOKafkaProducer(
            **client_options(self.settings),
            acks="all",
            enable_idempotence=True,
            max_batch_size=128 * 1024,
        )
        await self._producer.start()
        self._tasks = [asyncio.ensure_future(self._collect()), asyncio.ensure_future(self._deliver())]

    async def stop(self) -> None:
        """Stop; batches not yet acked are left to re-delivery."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._producer is not None:
            await self._producer.stop()

    def add(self, event: Any, stream: Any, more_waiting: bool) -> None:
        """Put ``event`` (acked through ``stream``) into the filling batch; ``more_waiting``: more follow."""
        self.filling.events.append((event, stream))
        self._work.set()
        if not more_waiting or len(self.filling.events) >= MIN_BATCH:
            self._ready.set()

    async def room(self) -> None:
        """Wait while the filling batch is full (delivery is behind)."""
        while len(self.filling.events) >= MAX_BATCH:
            self._taken.clear()
            await self._taken.wait()

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self._work.wait()
                if not self._ready.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._ready.wait(), MAX_LINGER_S)
                early = self._last_take + BATCH_INTERVAL_S - loop.time()
                if early > 0 and len(self.filling.events) < MIN_BATCH:
                    await asyncio.sleep(early)
                self._last_take = loop.time()
                self._work.clear()
                self._ready.clear()
                batch, self.filling = self.filling, Batch()
                self._taken.set()
                await self.on_taken(batch)
                changelog: list[Record] = [
                    (self.changelog_topic, partition, key, value, None)
                    for (partition, key), value in batch.changelog.items()
                ]
                self.on_changelog(await _highest_offsets(await self._send(changelog)))
                await self._analyzed.put(batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Analysis (RocksDB) or the producer failed: nothing of the batch was acked.
            await self._fail(exc)

    async def _deliver(self) -> None:
        try:
            while True:
                batch = await self._analyzed.get()
                await _highest_offsets(await self._send(batch.outputs))
                self.on_delivered(batch)
                for event, stream in batch.events:
                    await stream.ack(event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # The broker did not acknowledge: nothing of the batch was acked.
            await self._fail(exc)

    async def _fail(self, exc: BaseException) -> None:
        log.critical("could not deliver the worker's outputs: %r", exc)
        await self.on_failure(exc)

    async def _send(self, records: list[Record]) -> list[Sent]:
        """Send ``records`` as one record batch per (topic, partition); the futures, unawaited."""
        producer = self._producer
        assert producer is not None
        groups: dict[tuple[str, int], list[tuple[bytes | None, bytes, Headers | None]]] = {}
        for topic, partition, key, value, headers in records:
            groups.setdefault((topic, partition), []).append((key, value, headers))
        sent: list[Sent] = []
        for (topic, partition), group in groups.items():
            builder, count = producer.create_batch(), 0
            for key, value, headers in group:
                if builder.append(timestamp=None, key=key, value=value, headers=headers or []) is None:
                    sent.append(
                        (partition, count, await producer.send_batch(builder, topic, partition=partition))
                    )
                    builder, count = producer.create_batch(), 0
                    # The first record of an empty batch is always accepted, whatever its size.
                    builder.append(timestamp=None, key=key, value=value, headers=headers or [])
                count += 1
            sent.append((partition, count, await producer.send_batch(builder, topic, partition=partition)))
        return sent


async def _highest_offsets(sent: list[Sent]) -> dict[int, int]:
    """Wait for the batches; the highest acknowledged offset per partition."""
    highest: dict[int, int] = {}
    for partition, count, future in sent:
        metadata = await future
        highest[partition] = max(metadata.offset + count - 1, highest.get(partition, -1))
    return highest
