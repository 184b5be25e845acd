"""Batches for an agent: the events it collects are analyzed, persisted and published in order.

Faust's per-event path (a queue put, a stream step, an ack and a send per message) cost more per
trade than the detection core, so an agent only collects events into the filling
:class:`~riskengine.worker.commit.Batch`, a fetched partition's list at a time (:meth:`extend`, fed
by the batch path of :mod:`riskengine.worker.faust_compat`); :class:`BatchPipeline` does the rest
with two tasks:

- *take*: take the filling batch when it is ready (below), have the agent analyze it (``analyze``
  fills in the envelopes and records, leaves in ``events`` only those it applied, sets what to ack,
  and returns how many events it holds back or leaves unacked for a later batch: while there are
  any, a batch is taken again within :data:`MAX_LINGER_S` even if nothing new arrived), then
  :meth:`CommitProtocol.persist` it (steps 1-3);
- *publish*: in batch order, :meth:`CommitProtocol.publish` it (steps 4-5) and count it.

Batches size themselves ("smart batching"). The filling batch is ready as soon as the agent has no
further event waiting (its partition's consumer lag is zero), or once it holds :data:`MIN_BATCH`
events; *take* takes it when the previous batch is persisted and at least :data:`BATCH_INTERVAL_S`
after the previous take (unless it already holds :data:`MIN_BATCH` events). With a backlog,
batches grow to hundreds of events, so the per-batch costs (produce requests above all) are shared;
at a low rate an event waits a few milliseconds at most. At most :data:`IN_FLIGHT` persisted
batches wait for *publish*.

Any exception in either task (analysis, the store, the broker) stops the pipeline and is handed to
``on_failure`` (the app crashes): nothing of the failed batch was acked, so it is re-delivered to
whoever owns its partitions next.

Rebalances (see "Rebalance fencing" in :mod:`riskengine.worker.commit`): a batch started before the
current rebalance is *fenced* at its next step, or before its analysis: its events are let go
unacked (``release``) and the agent drops what it derived from that generation (``on_fenced``).
That is no failure; the pipeline goes on. While a rebalance is under way, :meth:`BatchPipeline.add`
lets arriving events go at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from riskengine.worker.commit import Batch, CommitProtocol, Fenced
from riskengine.worker.metrics import Metrics

log = logging.getLogger(__name__)

#: Events a filling batch may hold before the agent waits for the pipeline (backpressure). Under load
#: a batch takes what came while the one before it was made durable, up to this; each changed user's
#: state is encoded once per batch, so larger batches let a loaded worker keep up. Measured at 1,000
#: trades/s with the simulator's order events (2.2 per trade), three 10 s runs, when a deep order
#: book still cost about 1.5 ms to encode (state format 3): with 2,000 the p50 latency grew run after
#: run (0.35, 1.6, 2.6 s: the worker fell behind for good); with 10,000 it levelled off (0.4, 1.6,
#: 1.0 s). Format 4 keeps unchanged orders' rows (about 0.2 ms for such a book).
MAX_BATCH = 10_000
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
#: Persisted batches waiting for the publish task.
IN_FLIGHT = 2


class BatchPipeline:
    """The filling batch and the two tasks that take and publish batches."""

    def __init__(
        self,
        commit: CommitProtocol,
        analyze: Callable[[Batch], Awaitable[int]],
        on_failure: Callable[[BaseException], Awaitable[Any]],
        metrics: Metrics,
        name: str = "user",
        *,
        release: Callable[[list[Any]], None] = lambda messages: None,
        on_fenced: Callable[[], None] = lambda: None,
    ) -> None:
        self.commit = commit
        self.fence = commit.fence
        self.analyze = analyze
        self.on_failure = on_failure
        #: lets go of messages handed out and never to be acked (Faust stops waiting for them)
        self.release = release
        #: drops what the agent derived from a fenced generation (held events, decoded states)
        self.on_fenced = on_fenced
        self.metrics = metrics
        histograms = metrics.histograms
        # Children bound once: a labels() lookup per batch is wasted work on the hot path.
        self._batch_seconds = histograms.batch_seconds.labels(name)
        self._batch_size = histograms.batch_size.labels(name)
        self._persist_seconds = histograms.delivery_seconds.labels(name, "persist")
        self._publish_seconds = histograms.delivery_seconds.labels(name, "publish")
        self._changelog_bytes = histograms.changelog_bytes.labels(name)
        #: monotonic time each taken batch was taken at, in batch order (for the batch histogram)
        self._taken_at: asyncio.Queue[float] = asyncio.Queue()
        self.filling = self._new_batch()
        #: the pending call that takes a batch again for the events the agent holds back
        self._retry_handle: asyncio.TimerHandle | None = None
        self._work = asyncio.Event()
        self._ready = asyncio.Event()
        self._taken = asyncio.Event()
        self._persisted: asyncio.Queue[Batch] = asyncio.Queue(maxsize=IN_FLIGHT)
        self._last_take = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        #: batches taken and not yet published
        self._in_flight = 0

    def start(self) -> None:
        """Start the take and publish tasks."""
        self._tasks = [asyncio.ensure_future(self._take()), asyncio.ensure_future(self._publish())]

    async def stop(self) -> None:
        """Stop both tasks; batches not yet acked are left to re-delivery."""
        if self._retry_handle is not None:
            self._retry_handle.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _new_batch(self) -> Batch:
        return Batch(generation=self.fence.generation)

    def add(self, event: Any, stream: Any, more_waiting: bool) -> None:
        """Put ``event`` (acked through ``stream``) into the filling batch; ``more_waiting``: more follow."""
        self.extend([event], stream, more_waiting)

    def extend(self, events: list[Any], stream: Any, more_waiting: bool) -> None:
        """Put ``events`` (acked through ``stream``) into the filling batch; ``more_waiting``: more
        follow.

        During a rebalance the events are let go instead: Faust seeks back to the committed offsets
        after it, so they come again, to whoever owns their partition then.
        """
        if self.fence.rebalancing:
            self.release([event.message for event in events])
            return
        filling = self.filling.events
        filling.extend([(event, stream) for event in events])
        self._work.set()
        if not more_waiting or len(filling) >= MIN_BATCH:
            self._ready.set()

    def discard_waiting(self) -> int:
        """Drop the filling batch's events (a rebalance: they come again); how many."""
        dropped = len(self.filling.events)
        self.filling = self._new_batch()
        self._work.clear()
        self._ready.clear()
        self._taken.set()
        return dropped

    def wake(self) -> None:
        """Take a batch now, for the held events (what they wait for may have changed)."""
        self._work.set()
        self._ready.set()

    def idle(self) -> bool:
        """True when no event waits in the filling batch and no batch is being made durable."""
        return not self.filling.events and self._in_flight == 0

    def _retry(self) -> None:
        self._retry_handle = None
        self.wake()

    async def room(self) -> None:
        """Wait while the filling batch is full (the pipeline is behind)."""
        while len(self.filling.events) >= MAX_BATCH:
            self._taken.clear()
            await self._taken.wait()

    async def _take(self) -> None:
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
                batch, self.filling = self.filling, self._new_batch()
                self._taken.set()
                self._in_flight += 1
                if self.fence.stale(batch):
                    self._fenced(batch, "before its analysis")
                    continue
                taken_at = time.monotonic()
                size = len(batch.events)
                try:
                    held = await self.analyze(batch)
                    if held and self._retry_handle is None:
                        self._retry_handle = loop.call_later(MAX_LINGER_S, self._retry)
                    if batch.events or batch.outputs or batch.changelog or batch.acks:
                        self._batch_size.observe(size)
                        persist_at = time.monotonic()
                        await self.commit.persist(batch)
                        self._persist_seconds.observe(time.monotonic() - persist_at)
                        self._changelog_bytes.observe(sum(map(len, batch.changelog.values())))
                    else:
                        self._in_flight -= 1
                        continue
                except Exception as exc:
                    # A stale batch's failure (its partition's database gone, say) is no failure.
                    if not isinstance(exc, Fenced) and not self.fence.stale(batch):
                        raise
                    self._fenced(batch, str(exc))
                    continue
                self._taken_at.put_nowait(taken_at)
                await self._persisted.put(batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Nothing of the batch was acked: stop, leave it to re-delivery.
            await self._fail(exc)

    async def _publish(self) -> None:
        try:
            while True:
                batch = await self._persisted.get()
                taken_at = self._taken_at.get_nowait()
                publish_at = time.monotonic()
                try:
                    await self.commit.publish(batch)
                except Fenced as fenced:
                    self._fenced(batch, str(fenced))
                    continue
                done = time.monotonic()
                self._publish_seconds.observe(done - publish_at)
                self._batch_seconds.observe(done - taken_at)
                self._in_flight -= 1
                self.metrics.count_analyzed(batch.analyzed)
                self.metrics.observe_delivered(batch.event_times)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # The broker did not acknowledge: nothing of the batch was acked.
            await self._fail(exc)

    def _fenced(self, batch: Batch, why: str) -> None:
        """Let go of a stale batch's events, unacked, and of what the agent derived meanwhile."""
        self._in_flight -= 1
        self.on_fenced()
        if not batch.events and not batch.acks:
            return
        self.metrics.fenced_batches += 1
        # A checkpoint acks its own events with the earlier batches' ones: each let go once.
        self.release(
            list(dict.fromkeys(event.message for event, _stream in [*batch.events, *(batch.acks or ())]))
        )
        batch.events, batch.acks = [], None
        log.info("rebalance: a batch was fenced (%s); its events will come again", why)

    async def _fail(self, exc: BaseException) -> None:
        log.critical("the worker cannot make its batches durable: %r", exc)
        await self.on_failure(exc)
