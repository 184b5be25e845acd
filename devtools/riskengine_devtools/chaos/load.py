"""Steady load for the chaos scenarios: the generated flow produced at a fixed rate, in event time.

The producer is idempotent with acks from every replica and a long request timeout, so while the
broker is down it keeps the batches and retries them, instead of failing or writing them twice;
the load pauses (the acks are awaited at each switch of topic) and resumes when the broker is back,
catching up on the events it is behind. Every acknowledged message is recorded (:class:`Sent`):
where it landed and when, so the verifier knows exactly what the engine was given.

With ``garbage_ratio``, that share of the messages is garbage (random bytes, truncated Avro, Avro
with an unknown schema id, JSON), keyed by a user like the real events and mixed into both input
topics: each must become exactly one dead letter.
"""

from __future__ import annotations

import asyncio
import json
import random
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from riskengine.connections import client_options
from riskengine.contracts.avro_codec import SchemaCatalog
from riskengine.core import OrderEvent, Trade
from riskengine.settings import Settings
from riskengine_devtools.chaos.flow import USERS, Message, encoded, send_in_order

#: Events sent per pacing step at most (a catch-up after an outage goes out in such steps).
STEP = 200
#: Seconds between pacing steps.
TICK = 0.2


@dataclass(frozen=True)
class Sent:
    """One acknowledged input message."""

    #: ``trade``, ``order`` or ``garbage``
    kind: str
    #: the trade id or order event id; for garbage, empty
    ident: str
    topic: str
    partition: int
    offset: int
    #: the record's timestamp (the producer's wall clock when it was sent), epoch ms
    sent_ms: int


def garbage(rng: random.Random, catalog: SchemaCatalog, template: bytes) -> bytes:
    """One poison message: what a broken or hostile producer might write to an input topic."""
    kind = rng.randrange(4)
    if kind == 0:  # noise
        return rng.randbytes(rng.randint(1, 64))
    if kind == 1:  # a real event cut short: the Avro decoder runs out of bytes
        return template[: rng.randint(5, max(6, len(template) // 2))]
    if kind == 2:  # the registry's wire format with a schema id nobody registered
        return b"\x00" + struct.pack(">i", 900_000 + rng.randrange(1000)) + template[5:]
    return json.dumps({"tradeId": "poison", "price": "NaN"}).encode()  # JSON, not Avro


class SteadyLoad:
    """Produces ``items`` (in event time) at ``rate`` events/s; :meth:`run` returns what was acked."""

    def __init__(
        self,
        settings: Settings,
        catalog: SchemaCatalog,
        items: list[Trade | OrderEvent],
        rate: float,
        garbage_ratio: float = 0.0,
        seed: int = 1,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.items = items
        self.rate = rate
        self.garbage_ratio = garbage_ratio
        self.rng = random.Random(seed)
        self.sent: list[Sent] = []
        #: sends that failed and were retried (each may have written its messages twice)
        self.retries = 0
        #: events of ``items`` acknowledged so far
        self.position = 0
        #: monotonic time the load started at; ``started`` is set then
        self.started_at = 0.0
        self.started = asyncio.Event()

    @property
    def duration(self) -> float:
        """Seconds the load lasts at its rate, without outages."""
        return len(self.items) / self.rate

    def progress(self) -> str:
        """Events acknowledged so far, for the progress line."""
        return f"sent {len(self.sent)}/{len(self.items) + self._garbage_planned()}"

    def _garbage_planned(self) -> int:
        return (
            round(len(self.items) * self.garbage_ratio / (1 - self.garbage_ratio))
            if self.garbage_ratio
            else 0
        )

    def _messages(self, chunk: list[Trade | OrderEvent]) -> list[tuple[str, str, Message]]:
        """(kind, ident, message) for ``chunk``, garbage mixed in before good events."""
        # Garbage before a good event with probability p/(1-p): p of all messages are garbage.
        odds = self.garbage_ratio / (1 - self.garbage_ratio) if self.garbage_ratio else 0.0
        out: list[tuple[str, str, Message]] = []
        for item in chunk:
            message = encoded(self.settings, self.catalog, item)
            if odds and self.rng.random() < odds:
                key = f"crash-u{self.rng.randrange(USERS)}".encode()
                out.append(("garbage", "", (message[0], key, garbage(self.rng, self.catalog, message[2]))))
            kind, ident = ("trade", item.trade_id) if isinstance(item, Trade) else ("order", item.event_id)
            out.append((kind, ident, message))
        return out

    async def run(self, say: Callable[[str], None]) -> list[Sent]:
        """Produce everything, paced; returns every acknowledged message in order."""
        producer = AIOKafkaProducer(
            **client_options(self.settings),
            acks="all",
            enable_idempotence=True,
            # Long enough to ride out a broker restart without failing the batches.
            request_timeout_ms=180_000,
            retry_backoff_ms=500,
        )
        await producer.start()
        self.started_at = time.monotonic()
        self.started.set()
        try:
            while self.position < len(self.items):
                due = min(len(self.items), int(self.rate * (time.monotonic() - self.started_at)) + 1)
                if due <= self.position:
                    await asyncio.sleep(TICK)
                    continue
                chunk = self.items[self.position : min(due, self.position + STEP)]
                labelled = self._messages(chunk)
                while True:
                    try:
                        acked = await send_in_order(producer, [m for _, _, m in labelled])
                        break
                    except KafkaError as exc:
                        # Rare with the idempotent producer; counted, since a retried chunk may be
                        # on the broker twice (the verifier reads the inputs back and would show it).
                        self.retries += 1
                        say(f"load: send failed ({type(exc).__name__}: {exc}); retrying the chunk")
                        await asyncio.sleep(1.0)
                for (kind, ident, _), meta in zip(labelled, acked, strict=True):
                    self.sent.append(
                        Sent(kind, ident, meta.topic, meta.partition, meta.offset, meta.timestamp)
                    )
                self.position += len(chunk)
        finally:
            await producer.stop()
        return self.sent
