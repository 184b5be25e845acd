"""In-process fakes for the worker's commit protocol: a broker and its producer, a state store, a stream;
and an unconnected aiokafka consumer standing in for the one on Faust's consumer thread.

They keep one shared :class:`Journal` of what became durable when, so a test can check the order of
the protocol's steps. The producer's acknowledgements can be immediate, held back and released in
any order, or failed per topic; offsets are assigned in send order per (topic, partition), as a
broker does, whatever order the acknowledgements arrive in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaTimeoutError

from riskengine.worker.commit import Headers
from riskengine.worker.tables.user_state import PartitionNotHeld

#: (topic, partition, key, value, headers)
Landed = tuple[str, int, bytes | None, bytes, Headers]


@dataclass
class Journal:
    """What happened, in order: ("state", partition), ("sent", topic), ("acked", topic), ..."""

    entries: list[tuple[str, Any]] = field(default_factory=list)

    def add(self, kind: str, what: Any) -> None:
        self.entries.append((kind, what))

    def first(self, kind: str, what: Any = None) -> int:
        """Index of the first entry of ``kind`` (about ``what``, if given)."""
        return next(i for i, (k, w) in enumerate(self.entries) if k == kind and (what is None or w == what))

    def last(self, kind: str, what: Any = None) -> int:
        """Index of the last entry of ``kind`` (about ``what``, if given)."""
        return max(i for i, (k, w) in enumerate(self.entries) if k == kind and (what is None or w == what))

    def kinds(self) -> list[str]:
        return [k for k, _w in self.entries]


class FakeBuilder:
    """aiokafka's record batch builder: accepts up to ``capacity`` records."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.records: list[tuple[bytes | None, bytes, Headers]] = []

    def append(self, *, timestamp: int | None, key: bytes | None, value: bytes, headers: Headers) -> Any:
        if len(self.records) >= self.capacity:
            return None
        self.records.append((key, value, list(headers)))
        return object()


@dataclass
class Metadata:
    offset: int


class FakeProducer:
    """An idempotent producer on a fake broker (see the module docstring for the ack modes)."""

    def __init__(self, journal: Journal, *, batch_capacity: int = 3) -> None:
        self.journal = journal
        self.batch_capacity = batch_capacity
        #: (topic, partition) -> records the broker holds, in offset order
        self.logs: dict[tuple[str, int], list[tuple[bytes | None, bytes, Headers]]] = {}
        #: every record ever handed to send_batch, landed or not
        self.attempted: list[Landed] = []
        self.failing: set[str] = set()
        self.hold = False
        self.held: list[tuple[asyncio.Future[Any], Metadata | BaseException, str]] = []

    def create_batch(self) -> FakeBuilder:
        return FakeBuilder(self.batch_capacity)

    async def send_batch(self, batch: FakeBuilder, topic: str, *, partition: int) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.attempted.extend((topic, partition, k, v, h) for k, v, h in batch.records)
        self.journal.add("sent", topic)
        outcome: Metadata | BaseException
        if topic in self.failing:
            outcome = KafkaTimeoutError(f"no acknowledgement from {topic}/{partition}")
        else:
            log = self.logs.setdefault((topic, partition), [])
            outcome = Metadata(len(log))
            log.extend(batch.records)
        if self.hold:
            self.held.append((future, outcome, topic))
        else:
            self._resolve(future, outcome, topic)
        return future

    def _resolve(self, future: asyncio.Future[Any], outcome: Metadata | BaseException, topic: str) -> None:
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            self.journal.add("acked", topic)
            future.set_result(outcome)

    def release(self, order: str = "reverse") -> int:
        """Resolve the held acknowledgements (``reverse`` or ``forward`` order); how many."""
        held, self.held = self.held, []
        for future, outcome, topic in reversed(held) if order == "reverse" else held:
            self._resolve(future, outcome, topic)
        return len(held)

    def records(self, topic: str) -> list[Landed]:
        """Every record the broker holds for ``topic``, by partition then offset."""
        return [(t, p, k, v, h) for (t, p), log in sorted(self.logs.items()) if t == topic for k, v, h in log]

    def latest_values(self, topic: str) -> dict[tuple[int, bytes], bytes]:
        """(partition, key) -> the last value of ``topic`` (what a compacted changelog restores)."""
        latest: dict[tuple[int, bytes], bytes] = {}
        for _t, partition, key, value, _h in self.records(topic):
            assert key is not None
            latest[(partition, key)] = value
        return latest


class FakeStore:
    """A state table's local side: partition -> key -> value, the partitions held, stored offsets."""

    def __init__(
        self, journal: Journal, held: set[int], changelog_topic: str = "user-state-changelog"
    ) -> None:
        self.journal = journal
        self.held = set(held)
        self.changelog_topic = changelog_topic
        self.values: dict[int, dict[bytes, bytes]] = {}
        self.offsets: dict[int, int] = {}
        self.fail_writes = False

    def _require(self, partitions: set[int]) -> None:
        # As the real table: a partition not held is never opened again.
        missing = partitions - self.held
        if missing:
            raise PartitionNotHeld(f"partitions {sorted(missing)} are not held")

    def get(self, partition: int, key: bytes) -> bytes | None:
        self._require({partition})
        return self.values.get(partition, {}).get(key)

    def write(self, values: Mapping[tuple[int, bytes], bytes]) -> None:
        if self.fail_writes:
            raise OSError("disk full")
        self._require({partition for partition, _key in values})
        for (partition, key), value in values.items():
            self.values.setdefault(partition, {})[key] = value
        for partition in sorted({partition for partition, _key in values}):
            self.journal.add("state", partition)

    def set_changelog_offset(self, partition: int, offset: int) -> None:
        self._require({partition})
        self.offsets[partition] = offset
        self.journal.add("offset", partition)


@dataclass(frozen=True)
class FakeMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class FakeEvent:
    message: FakeMessage


class FakeStream:
    """Acks events as :class:`riskengine.worker.faust_compat.Acks` does; remembers (partition, offset)
    and the events, in ack order."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.acked: list[tuple[int, int]] = []
        self.events: list[FakeEvent] = []

    def ack(self, event: FakeEvent) -> bool:
        where = (event.message.partition, event.message.offset)
        self.acked.append(where)
        self.events.append(event)
        self.journal.add("ack", where)
        return True


def events(topic: str, values: list[tuple[int, bytes, bytes]], first_offset: int = 0) -> list[FakeEvent]:
    """Events of ``topic`` from (partition, key, value), offsets counting per partition."""
    next_offset: dict[int, int] = {}
    made = []
    for partition, key, value in values:
        offset = next_offset.get(partition, first_offset)
        next_offset[partition] = offset + 1
        made.append(FakeEvent(FakeMessage(topic, partition, offset, key, value)))
    return made


@dataclass
class FakeTradeEnds:
    """The trades partitions' ends as the broker gives them to the market and pair agents: 0 (an
    empty partition) unless set in ``ends``; ``None`` in ``ends``: the broker does not answer."""

    ends: dict[int, int | None] = field(default_factory=dict)
    #: the partitions of each request
    asked: list[list[int]] = field(default_factory=list)

    async def __call__(self, partitions: Any) -> dict[int, int]:
        self.asked.append(list(partitions))
        found = {partition: self.ends.get(partition, 0) for partition in partitions}
        return {partition: end for partition, end in found.items() if end is not None}


def unconnected_fetcher(consumer: Any, monkeypatch: pytest.MonkeyPatch, tps: list[Any]) -> AIOKafkaConsumer:
    """A real aiokafka consumer (never started) assigned ``tps``, as the one on Faust's consumer
    thread behind ``consumer``, with the running event loop as that thread's."""
    kafka = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1")
    kafka.assign([TopicPartition(tp.topic, tp.partition) for tp in tps])
    monkeypatch.setattr(consumer._thread, "_consumer", kafka)
    monkeypatch.setattr(consumer._thread, "thread_loop", asyncio.get_running_loop())
    return kafka


def paused_partitions(kafka: AIOKafkaConsumer) -> set[tuple[str, int]]:
    """(topic, partition) of what ``kafka``'s fetcher has paused."""
    return {(tp.topic, tp.partition) for tp in kafka.paused()}
