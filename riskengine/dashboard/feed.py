"""Live alerts for the dashboard: one group-less consumer of ``risk-alerts``, fanned out to browsers.

:class:`AlertFeed` assigns itself every partition of the alerts topic (no consumer group, nothing
committed: the dashboard only watches, like :class:`riskengine.worker.tables.reference_feed.ReferenceReader`),
starts at the end, decodes each message with the project's :class:`SchemaCatalog`, and publishes
it to a :class:`Broadcaster`. There is one consumer per dashboard process however many browsers
are connected. A schema id the catalog has not seen is fetched as the worker fetches it
(:func:`riskengine.contracts.avro_codec.fetch_schema`): a registry that gives no answer is asked
again with backoff, and only its 404 is remembered, for a while (:class:`NotFoundIds`).

Each browser gets a :class:`Subscription` with a bounded queue. Publishing never waits: when a
subscriber's queue is full the alert is dropped *for that subscriber* and counted, and the SSE
handler tells the browser how many it missed. A slow browser therefore loses alerts, and nobody
else is slowed down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from riskengine.connections import client_options
from riskengine.contracts.avro_codec import (
    DecodeError,
    NotFoundIds,
    SchemaCatalog,
    UnknownSchemaId,
    fetch_schema,
)
from riskengine.settings import Settings

log = logging.getLogger(__name__)

#: Alerts kept for a browser that connects (or reconnects) after they arrived.
BACKLOG = 50
#: Alerts a browser may be behind before it starts missing some.
QUEUE_SIZE = 256
#: Seconds between attempts after the consumer or the registry failed.
RETRY_S = 2.0


class Closed:
    """The item a subscription yields once the broadcaster is closed (the app is stopping)."""


CLOSED = Closed()


class Subscription:
    """One subscriber's bounded queue of alerts, and how many it missed while full."""

    def __init__(self, size: int) -> None:
        self._queue: asyncio.Queue[dict[str, Any] | Closed] = asyncio.Queue(size)
        self.dropped = 0

    def offer(self, alert: dict[str, Any]) -> None:
        """Queue ``alert`` without waiting; count it as dropped when the queue is full."""
        try:
            self._queue.put_nowait(alert)
        except asyncio.QueueFull:
            self.dropped += 1

    def close(self) -> None:
        """Make the next :meth:`get` return :data:`CLOSED`, whatever is still queued."""
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(CLOSED)

    async def get(self, wait_s: float) -> dict[str, Any] | Closed | None:
        """The next alert, :data:`CLOSED`, or None when nothing came within ``wait_s`` seconds."""
        try:
            async with asyncio.timeout(wait_s):
                return await self._queue.get()
        except TimeoutError:
            return None

    def take_dropped(self) -> int:
        """Alerts dropped since the last call."""
        dropped, self.dropped = self.dropped, 0
        return dropped


class Broadcaster:
    """Fan-out of alerts to every subscription, keeping the most recent ones for newcomers."""

    def __init__(self, queue_size: int = QUEUE_SIZE, backlog: int = BACKLOG) -> None:
        self._queue_size = max(queue_size, backlog + 1)
        self.recent: deque[dict[str, Any]] = deque(maxlen=backlog)
        self.subscriptions: set[Subscription] = set()
        self.closed = False

    def subscribe(self, last_seen: str | None = None) -> Subscription:
        """A new subscription, pre-filled with the recent alerts after ``last_seen`` (an alertId).

        An unknown or missing ``last_seen`` replays the whole backlog; browsers drop duplicates by
        alertId.
        """
        subscription = Subscription(self._queue_size)
        if self.closed:
            subscription.close()
            return subscription
        backlog = list(self.recent)
        ids = [alert.get("alertId") for alert in backlog]
        if last_seen is not None and last_seen in ids:
            backlog = backlog[len(ids) - ids[::-1].index(last_seen) :]
        for alert in backlog:
            subscription.offer(alert)
        self.subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Forget ``subscription`` (its browser went away)."""
        self.subscriptions.discard(subscription)

    def publish(self, alert: dict[str, Any]) -> None:
        """Offer ``alert`` to every subscription; never waits."""
        self.recent.append(alert)
        for subscription in self.subscriptions:
            subscription.offer(alert)

    def close(self) -> None:
        """End every subscription (the SSE responses finish) and refuse new ones."""
        self.closed = True
        for subscription in self.subscriptions:
            subscription.close()
        self.subscriptions.clear()


class AlertFeed:
    """The one consumer of the alerts topic; ``state`` is ``starting``, ``live`` or the last error."""

    def __init__(self, settings: Settings, topic: str, broadcaster: Broadcaster) -> None:
        self._settings = settings
        self.topic = topic
        self.broadcaster = broadcaster
        self.state = "starting"
        self.received = 0
        self.undecodable = 0
        #: Set once the consumer sits at the end of every partition: alerts from then on arrive.
        self.live = asyncio.Event()
        # Where to resume after a reconnect, so a broker hiccup loses no alert.
        self._positions: dict[TopicPartition, int] = {}
        #: schema ids the registry answered 404 for (bounded, expiring: see NotFoundIds); kept
        #: across reconnects, so a storm of alerts with a bogus id costs one request per period.
        self._not_found = NotFoundIds()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start consuming in the background (reconnecting after failures)."""
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Stop consuming and close the consumer."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # The broker or the registry failed: report, wait, reconnect.
                self.live.clear()
                self.state = f"error: {exc}"
                log.warning("alert feed of %s failed, retrying in %.0fs: %s", self.topic, RETRY_S, exc)
                await asyncio.sleep(RETRY_S)

    async def _partitions(self) -> list[TopicPartition]:
        """Every partition of the topic, waiting until it exists (the workers create it)."""
        admin = AIOKafkaAdminClient(**client_options(self._settings))
        await admin.start()
        try:
            while True:
                # Listing first: a metadata request naming a missing topic lets the broker
                # auto-create it with its default partition count, which the workers would reject.
                if self.topic in await admin.list_topics():
                    (described,) = await admin.describe_topics([self.topic])
                    found = [TopicPartition(self.topic, int(p["partition"])) for p in described["partitions"]]
                    if found:
                        return sorted(found)
                self.state = f"waiting for topic {self.topic}"
                await asyncio.sleep(RETRY_S)
        finally:
            await admin.close()

    async def _consume(self) -> None:
        catalog = SchemaCatalog.for_settings(self._settings)
        # Every registered version of the contracts, so decoding rarely needs the registry.
        await catalog.warm()
        consumer = AIOKafkaConsumer(**client_options(self._settings), enable_auto_commit=False)
        await consumer.start()
        try:
            tps = await self._partitions()
            consumer.assign(tps)
            resumed = [tp for tp in tps if tp in self._positions]
            for tp in resumed:
                consumer.seek(tp, self._positions[tp])
            fresh = [tp for tp in tps if tp not in self._positions]
            if fresh:
                await consumer.seek_to_end(*fresh)
            # seek_to_end is lazy; resolving the positions now makes "live" mean "nothing missed from here".
            for tp in tps:
                self._positions[tp] = await consumer.position(tp)
            self.state = "live"
            self.live.set()
            log.info("alert feed live on %s (%d partitions)", self.topic, len(tps))
            while True:
                batches = await consumer.getmany(timeout_ms=1000)
                for tp, records in batches.items():
                    for record in records:
                        await self._deliver(catalog, record.value)
                        self._positions[tp] = record.offset + 1
        finally:
            await consumer.stop()

    async def _deliver(self, catalog: SchemaCatalog, value: bytes | None) -> None:
        """Decode ``value`` and publish it; an undecodable one is counted and skipped.

        A registry that stays unreachable through :func:`fetch_schema`'s attempts (a
        RegistryError) ends :meth:`_consume`: the feed reconnects and reads this alert again.
        """
        if value is None:
            return
        try:
            try:
                alert = catalog.decode(value, "RiskAlert")
            except UnknownSchemaId as exc:
                await fetch_schema(catalog, exc.schema_id, self._not_found)
                alert = catalog.decode(value, "RiskAlert")
        except DecodeError as exc:
            self.undecodable += 1
            log.warning("skipped an undecodable alert on %s: %s", self.topic, exc)
            return
        self.received += 1
        self.broadcaster.publish(alert)
