"""Producing with an audit trail: encode, record, send, and retry until the broker acknowledges.

:meth:`Publisher.submit` encodes the record (Confluent wire format), records the attempt, and
hands the message to the transport *in submission order* (so one account's events keep their
order on its partition); a background task then waits for the acknowledgement. A failure is
recorded and retried with exponential backoff (0.5 s doubling to 30 s) for as long as the process
runs; what is still unacknowledged at shutdown stays ``failed``/``pending`` in the audit trail and
is sent again by :meth:`Publisher.recover` at the next start. The number of messages in flight
is bounded, so a slow broker slows the simulation down instead of filling memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer

from riskengine.connections import client_options
from riskengine.contracts.avro_codec import SchemaCache
from riskengine.settings import Settings

from .audit import AuditLog, Outgoing

log = logging.getLogger(__name__)

RATE_WINDOW_S = 10.0


class Transport(Protocol):
    """Where messages go. ``send`` queues one in order and returns an awaitable of (partition, offset)."""

    async def send(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> Awaitable[tuple[int, int]]:
        """Queue the message; the returned awaitable resolves on the broker's ack or raises."""

    async def close(self) -> None:
        """Flush and release the connection."""


class KafkaTransport:
    """An idempotent aiokafka producer with ``acks=all`` (retries cannot duplicate within a session)."""

    def __init__(self, settings: Settings) -> None:
        self._producer = AIOKafkaProducer(
            **client_options(settings), acks="all", enable_idempotence=True, linger_ms=5
        )

    async def start(self) -> None:
        """Connect to the cluster."""
        await self._producer.start()

    async def send(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> Awaitable[tuple[int, int]]:
        """Append to the producer's batch (in call order); the result resolves on the ack."""
        delivery = await self._producer.send(topic, value, key=key, headers=headers)

        async def acknowledged() -> tuple[int, int]:
            metadata = await delivery
            return metadata.partition, metadata.offset

        return acknowledged()

    async def close(self) -> None:
        """Flush pending batches and disconnect."""
        await self._producer.stop()


@dataclass(frozen=True)
class Delivery:
    """Where the broker put a message."""

    topic: str
    partition: int
    offset: int


@dataclass
class PublisherStats:
    """Counters for ``GET /api/admin/stats``."""

    acked: Counter[str] = field(default_factory=Counter)
    by_scenario: Counter[str] = field(default_factory=Counter)
    failed_attempts: int = 0
    retries: int = 0
    last_error: str | None = None
    trade_topic: str = ""
    _trade_acks: deque[float] = field(default_factory=deque)

    def trade_rate(self) -> float:
        """Trades acknowledged per second over the last 10 s."""
        self._prune(time.monotonic())
        return len(self._trade_acks) / RATE_WINDOW_S

    def _prune(self, now: float) -> None:
        while self._trade_acks and self._trade_acks[0] < now - RATE_WINDOW_S:
            self._trade_acks.popleft()

    def record_ack(self, message: Outgoing) -> None:
        """Count an acknowledged message."""
        self.acked[message.topic] += 1
        if message.scenario is not None:
            self.by_scenario[message.scenario] += 1
        if message.topic == self.trade_topic:
            now = time.monotonic()
            self._trade_acks.append(now)
            self._prune(now)


class Publisher:
    """Encode, audit, send and retry (see the module docstring)."""

    def __init__(
        self,
        transport: Transport,
        catalog: SchemaCache,
        audit: AuditLog,
        trade_topic: str,
        max_in_flight: int = 10_000,
        retry_base_s: float = 0.5,
        retry_max_s: float = 30.0,
    ) -> None:
        self._transport = transport
        self._catalog = catalog
        self._audit = audit
        self._slots = asyncio.Semaphore(max_in_flight)
        self._retry_base_s = retry_base_s
        self._retry_max_s = retry_max_s
        self._tasks: set[asyncio.Task[Delivery]] = set()
        self.stats = PublisherStats(trade_topic=trade_topic)

    @property
    def in_flight(self) -> int:
        """Messages submitted and not acknowledged yet."""
        return len(self._tasks)

    async def submit(self, message: Outgoing) -> asyncio.Task[Delivery]:
        """Send ``message``; the task resolves once the broker acknowledged it (after any retries).

        Raises ValueError, before anything is recorded, if the record does not fit its contract.
        """
        value = self._catalog.encode(message.record_name, message.record)
        await self._slots.acquire()
        self._audit.attempt(message)
        pending: Awaitable[tuple[int, int]] | None = None
        error: Exception | None = None
        try:
            pending = await self._send(message, value)
        except Exception as exc:
            error = exc
        task = asyncio.create_task(self._deliver(message, value, pending, error))
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Delivery]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    async def _send(self, message: Outgoing, value: bytes) -> Awaitable[tuple[int, int]]:
        return await self._transport.send(message.topic, message.key.encode(), value, message.headers())

    async def _deliver(
        self,
        message: Outgoing,
        value: bytes,
        pending: Awaitable[tuple[int, int]] | None,
        error: Exception | None,
    ) -> Delivery:
        attempt = 1
        while True:
            if pending is not None:
                try:
                    partition, offset = await pending
                except Exception as exc:
                    error = exc
                else:
                    self._audit.acked(message, partition, offset)
                    self.stats.record_ack(message)
                    return Delivery(message.topic, partition, offset)
            assert error is not None
            reason = f"{type(error).__name__}: {error}"
            self._audit.failed(message, reason)
            self.stats.failed_attempts += 1
            self.stats.last_error = reason
            log.warning(
                "produce of %s to %s failed (attempt %d): %s",
                message.event_id,
                message.topic,
                attempt,
                reason,
            )
            await asyncio.sleep(min(self._retry_max_s, self._retry_base_s * 2 ** (attempt - 1)))
            attempt += 1
            self.stats.retries += 1
            self._audit.attempt(message)
            pending, error = None, None
            try:
                pending = await self._send(message, value)
            except Exception as exc:
                error = exc

    async def recover(self) -> int:
        """Send again every message the audit trail holds as unacknowledged; returns how many."""
        messages = await self._audit.unacked()
        for message in messages:
            await self.submit(message)
        if messages:
            log.info("re-sending %d unacknowledged message(s) from the audit trail", len(messages))
        return len(messages)

    async def close(self, grace_s: float = 10.0) -> None:
        """Wait up to ``grace_s`` for acks, then stop retrying (the audit trail keeps the rest)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace_s)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def snapshot(self) -> dict[str, Any]:
        """The counters as JSON."""
        return {
            "producedPerTopic": dict(sorted(self.stats.acked.items())),
            "producedByScenario": dict(sorted(self.stats.by_scenario.items())),
            "failedAttempts": self.stats.failed_attempts,
            "retries": self.stats.retries,
            "inFlight": self.in_flight,
            "lastError": self.stats.last_error,
            "tradesPerSecond": round(self.stats.trade_rate(), 2),
        }
