"""The internal repartition topics: their records, and the watermark promises they carry.

The per-user agent republishes each execution it analyzed (unless it is late for the market, see
:mod:`riskengine.core.market_feed`) to ``risk-market-events`` keyed by symbol and, when the
execution is between two owners, to ``risk-pair-events`` keyed by the owner pair, as outputs of
its batch (step 4 of :mod:`riskengine.worker.commit`, kept among the envelope's pending outputs,
so none is lost to a crash). These topics are written and read by the worker alone, two records
per trade, so their values are packed binary (:data:`FORMAT`; JSON cost a fifth of a trade's
processing, writing and reading it back; the codec, :mod:`riskengine.core.execution_record`, runs
compiled with the core): a format byte, the record kind, the source partition and its promise, then
per kind:

- an execution (``E``): the trade's fields (the ``CryptoTrade`` record's), on the pair topic with
  the buying owner and the pair;
- a progress marker (``P``): nothing more; to every partition of both topics, at most every
  :data:`MARKER_INTERVAL_S` per source partition while it has trades;
- an idle marker (``I``): in place of the promise, the trades partition's end offset (every trade
  before it applied); every :data:`IDLE_MARKER_S` while a source partition has been read to its
  end and had no trade for :data:`IDLE_AFTER_S`.

Records of the JSON format before it (``{"trade": ..., "source": p, "promise": w}``,
``{"source": p, "promise": w}``, ``{"source": p, "idle": true}``) are still read: a user's stored
pending outputs may hold them, and they are re-sent as stored.

``promise`` is the source partition's clock (the latest admitted trade time) minus
``market.allowed.lateness.seconds``: no later execution from that partition has an earlier event
time. A source partition's records reach each target partition in the order sent, so a target
knows every execution before the smallest promise of all sources (its watermark; idle sources do
not count) and can release them in (timestamp, tradeId) order.

An idle source promises nothing, so it counts only while its trades partition's end is still the
one its marker carried: a trade written there since (its owner hung, or its execution still on the
way) holds the watermark until the source speaks again. Only a trade written after the target
last asked can still arrive behind the watermark: late at the target, counted, kept out of the
state.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from riskengine.core import parse_trade
from riskengine.core.execution_record import (
    FORMAT,
    Execution,
    ExecutionRecordError,
    Marker,
    execution_value,
    idle_marker_value,
    marker_value,
    read_record,
)
from riskengine.core.market_feed import kafka_partition
from riskengine.errors import WorkerError

__all__ = [
    "CLOCK_KEY",
    "FORMAT",
    "IDLE_AFTER_S",
    "IDLE_MARKER_S",
    "MARKER_INTERVAL_S",
    "Execution",
    "Marker",
    "RepartitionError",
    "decode",
    "decode_clock",
    "document",
    "encode_clock",
    "execution_value",
    "frame",
    "idle_marker_value",
    "marker_value",
    "target_partition",
    "unframe",
]

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


def decode(value: bytes | None) -> Execution | Marker:
    """Read a repartition record; :class:`RepartitionError` when it is not one."""
    try:
        if value and value[0] == FORMAT:
            return read_record(value)
        return _decode_json(value)
    except ExecutionRecordError as exc:
        raise RepartitionError(f"not a repartition record: {exc}") from exc
    except Exception as exc:
        raise RepartitionError(f"not a repartition record: {type(exc).__name__}: {exc}") from exc


def document(record: Execution | Marker) -> dict[str, Any]:
    """``record`` as the JSON document of the format before :data:`FORMAT` (for ``riskengine tail``)."""
    if isinstance(record, Marker):
        if record.promise is None:
            return {"source": record.source, "idle": True, "end": record.end}
        return {"source": record.source, "promise": record.promise}
    found: dict[str, Any] = {
        "trade": record.trade.to_record(),
        "source": record.source,
        "promise": record.promise,
    }
    if record.pair is not None:
        found["owner"] = record.owner
        found["pair"] = record.pair
    return found


def _decode_json(value: bytes | None) -> Execution | Marker:
    """A record of the JSON format before :data:`FORMAT`."""
    document = json.loads(value or b"")
    source = int(document["source"])
    if "trade" not in document:
        if document.get("idle"):
            return Marker(source, None, int(document.get("end", 0)))
        return Marker(source, int(document["promise"]))
    return Execution(
        parse_trade(document["trade"]),
        source,
        int(document["promise"]),
        document.get("owner"),
        document.get("pair"),
    )


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
