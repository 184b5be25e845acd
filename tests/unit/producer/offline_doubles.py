"""Shared pieces of the producer's unit tests: an offline schema cache and an in-memory transport.

The transport stands in for Kafka only in unit tests; the integration tests use the real broker.
"""

import itertools
from collections import defaultdict
from typing import Any

from riskengine.contracts.avro_codec import SchemaCache
from riskengine.contracts.schema_files import expanded_schema
from riskengine.producer.simulator import SimulationConfig


def offline_catalog() -> SchemaCache:
    """A schema cache for the producer's four contracts, without a registry."""
    cache = SchemaCache()
    for schema_id, name in enumerate(("CryptoTrade", "OrderEvent", "UserProfile", "RiskReference"), 1):
        cache.add(schema_id, expanded_schema(name), writes=name)
    return cache


class BrokerDown(Exception):
    """What the in-memory transport raises while it is told to fail."""


class MemoryTransport:
    """Keeps what it is sent; ``fail_sends``/``fail_acks`` make the next N sends or acks fail."""

    def __init__(self, fail_sends: int = 0, fail_acks: int = 0) -> None:
        self.fail_sends = fail_sends
        self.fail_acks = fail_acks
        self.sent: list[tuple[str, bytes, bytes, list[tuple[str, bytes]], int]] = []
        self._offsets: dict[str, itertools.count[int]] = defaultdict(itertools.count)
        self.closed = False

    async def send(self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> Any:
        if self.fail_sends:
            self.fail_sends -= 1
            raise BrokerDown("send refused")
        fail = self.fail_acks > 0
        if fail:
            self.fail_acks -= 1
        else:
            offset = next(self._offsets[topic])
            self.sent.append((topic, key, value, headers, offset))

        async def ack() -> tuple[int, int]:
            if fail:
                raise BrokerDown("no ack")
            return 0, offset

        return ack()

    async def close(self) -> None:
        self.closed = True


def small_config(**changes: Any) -> SimulationConfig:
    """A quick simulation: 200 users, frequent scenarios."""
    values = {"seed": 11, "users": 200, "scenario_every": 60} | changes
    return SimulationConfig(**values)
