"""The internal repartition topics: their records, and the watermark promises they carry.

The per-user agent republishes each execution it analyzed (unless it is late for the market, see
:mod:`riskengine.core.market_feed`) to ``risk-market-events`` keyed by symbol and, when the
execution is between two owners, to ``risk-pair-events`` keyed by the owner pair, as outputs of
its batch (step 4 of :mod:`riskengine.worker.commit`, kept among the envelope's pending outputs,
so none is lost to a crash). Values are compact JSON: these topics are written and read by the
worker alone.

- an execution: ``{"trade": <CryptoTrade record>, "source": p, "promise": w}``, on the pair topic
  with ``"owner"`` (the buying owner) and ``"pair"``;
- a progress marker: ``{"source": p, "promise": w}``, to every partition of both topics, at most
  every :data:`MARKER_INTERVAL_S` per source partition while it has trades;
- an idle marker: ``{"source": p, "idle": true}``, every :data:`IDLE_MARKER_S` while a source
  partition has been read to its end and had no trade for :data:`IDLE_AFTER_S`.

``promise`` is the source partition's clock (the latest admitted trade time) minus
``market.allowed.lateness.seconds``: no later execution from that partition has an earlier event
time. A source partition's records reach each target partition in the order sent, so a target
knows every execution before the smallest promise of all sources (its watermark; idle sources do
not count) and can release them in (timestamp, tradeId) order. An execution from a source that was
idle and arrives behind the watermark is late at the target: counted, kept out of the state.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

from riskengine.core import Trade, parse_trade
from riskengine.core.market_feed import kafka_partition
from riskengine.errors import WorkerError

#: Shortest time between two progress markers of one source partition.
MARKER_INTERVAL_S = 0.2
#: A source partition read to its end and without a trade this long is idle.
IDLE_AFTER_S = 2.0
#: How often an idle source says so again (a restarted market agent must hear it).
IDLE_MARKER_S = 2.0
#: The key under which a partition's market clock is kept in the user-state table. No userId can be
#: it: ids have no surrounding spaces.
CLOCK_KEY = b" market-clock"
_CLOCK = struct.Struct("<q")


class RepartitionError(WorkerError):
    """A record on a repartition topic that the worker did not write."""


@dataclass(frozen=True, slots=True)
class Execution:
    """An execution record: the trade, its source partition, the source's promise, pair fields."""

    trade: Trade
    source: int
    promise: int
    owner: str | None = None
    pair: str | None = None


@dataclass(frozen=True, slots=True)
class Marker:
    """A progress marker (``promise`` set) or an idle marker (``promise`` None)."""

    source: int
    promise: int | None


def execution_value(
    trade: Trade, source: int, promise: int, owner: str | None = None, pair: str | None = None
) -> bytes:
    """The value of an execution record."""
    document: dict[str, Any] = {"trade": trade.to_record(), "source": source, "promise": promise}
    if pair is not None:
        document["owner"] = owner
        document["pair"] = pair
    return json.dumps(document, separators=(",", ":")).encode()


def marker_value(source: int, promise: int | None) -> bytes:
    """The value of a progress marker, or of an idle marker when ``promise`` is None."""
    document: dict[str, Any] = (
        {"source": source, "idle": True} if promise is None else {"source": source, "promise": promise}
    )
    return json.dumps(document, separators=(",", ":")).encode()


def decode(value: bytes | None) -> Execution | Marker:
    """Read a repartition record; :class:`RepartitionError` when it is not one."""
    try:
        document = json.loads(value or b"")
        source = int(document["source"])
        if "trade" not in document:
            return Marker(source, None if document.get("idle") else int(document["promise"]))
        return Execution(
            parse_trade(document["trade"]),
            source,
            int(document["promise"]),
            document.get("owner"),
            document.get("pair"),
        )
    except RepartitionError:
        raise
    except Exception as exc:
        raise RepartitionError(f"not a repartition record: {type(exc).__name__}: {exc}") from exc


def target_partition(key: bytes, partitions: int) -> int:
    """The partition of a keyed repartition record (Kafka's default partitioner)."""
    return kafka_partition(key, partitions)


def frame(key: bytes, value: bytes) -> bytes:
    """A keyed record as one pending output (the envelope stores one byte string per output)."""
    return struct.pack("<H", len(key)) + key + value


def unframe(data: bytes) -> tuple[bytes, bytes]:
    """The (key, value) :func:`frame` packed."""
    (length,) = struct.unpack_from("<H", data)
    return data[2 : 2 + length], data[2 + length :]


def encode_clock(clock: int) -> bytes:
    """A partition clock as its table value."""
    return _CLOCK.pack(clock)


def decode_clock(data: bytes | None) -> int:
    """A partition clock from its table value (-1: none yet)."""
    return -1 if data is None else int(_CLOCK.unpack(data)[0])
