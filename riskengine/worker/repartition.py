"""The internal repartition topics: their records, and the watermark promises they carry.

The per-user agent republishes each execution it analyzed (unless it is late for the market, see
:mod:`riskengine.core.market_feed`) to ``risk-market-events`` keyed by symbol and, when the
execution is between two owners, to ``risk-pair-events`` keyed by the owner pair, as outputs of
its batch (step 4 of :mod:`riskengine.worker.commit`, kept among the envelope's pending outputs,
so none is lost to a crash). These topics are written and read by the worker alone, two records
per trade, so their values are packed binary (:data:`FORMAT`; JSON cost a fifth of a trade's
processing, writing and reading it back): a format byte, the record kind, the source partition and
its promise, then per kind:

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
from dataclasses import dataclass
from typing import Any, cast

from riskengine.core import Trade, parse_trade
from riskengine.core.market_feed import kafka_partition
from riskengine.core.models import RiskLevel, Side
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
    #: of an idle marker: the trades partition's end offset then (every trade before it applied);
    #: 0 in the records of older workers, which did not say (so trusted only on an empty partition)
    end: int = 0


#: The first byte of a packed record (a JSON record starts with ``{``).
FORMAT = 1
_HEADER = struct.Struct("<Bciq")
_EXECUTION = struct.Struct("<qdddBB")
_LENGTH = struct.Struct("<H")
#: The length that stands for None in an optional string.
_NONE = 0xFFFF
_SIDES = tuple(Side)
_SIDE_CODES = {side: code for code, side in enumerate(_SIDES)}
_LEVELS = (None, *RiskLevel)
_LEVEL_CODES = {level: code for code, level in enumerate(_LEVELS)}


def execution_value(
    trade: Trade, source: int, promise: int, owner: str | None = None, pair: str | None = None
) -> bytes:
    """The value of an execution record."""
    parts = [
        _HEADER.pack(FORMAT, b"E", source, promise),
        _EXECUTION.pack(
            trade.timestamp,
            trade.quantity,
            trade.price,
            trade.notional,
            _SIDE_CODES[trade.side],
            _LEVEL_CODES[trade.risk_level],
        ),
    ]
    for text in (
        trade.trade_id,
        trade.user_id,
        trade.customer_id,
        trade.symbol,
        trade.exchange,
        trade.order_type,
        trade.counterparty_user_id,
        trade.order_id,
        owner,
        pair,
    ):
        if text is None:
            parts.append(_LENGTH.pack(_NONE))
        else:
            data = text.encode()
            parts.append(_LENGTH.pack(len(data)))
            parts.append(data)
    return b"".join(parts)


def marker_value(source: int, promise: int) -> bytes:
    """The value of a progress marker."""
    return _HEADER.pack(FORMAT, b"P", source, promise)


def idle_marker_value(source: int, end: int) -> bytes:
    """The value of an idle marker: every trade of partition ``source`` before offset ``end`` is
    applied (the field of a progress marker's promise holds the end)."""
    return _HEADER.pack(FORMAT, b"I", source, end)


def decode(value: bytes | None) -> Execution | Marker:
    """Read a repartition record; :class:`RepartitionError` when it is not one."""
    try:
        if value and value[0] == FORMAT:
            return _unpack(value)
        return _decode_json(value)
    except RepartitionError:
        raise
    except Exception as exc:
        raise RepartitionError(f"not a repartition record: {type(exc).__name__}: {exc}") from exc


def _unpack(value: bytes) -> Execution | Marker:
    _format, kind, source, promise = _HEADER.unpack_from(value)
    if kind == b"P":
        _exact(value, _HEADER.size)
        return Marker(source, promise)
    if kind == b"I":
        _exact(value, _HEADER.size)
        return Marker(source, None, promise)
    if kind != b"E":
        raise RepartitionError(f"not a repartition record: unknown kind {kind!r}")
    at = _HEADER.size
    timestamp, quantity, price, notional, side, level = _EXECUTION.unpack_from(value, at)
    at += _EXECUTION.size
    texts: list[str | None] = []
    for _ in range(10):
        (length,) = _LENGTH.unpack_from(value, at)
        at += _LENGTH.size
        if length == _NONE:
            texts.append(None)
            continue
        end = at + length
        if end > len(value):
            raise RepartitionError("not a repartition record: truncated")
        texts.append(value[at:end].decode())
        at = end
    _exact(value, at)
    trade_id, user_id, customer_id, symbol, exchange, order_type, counterparty, order_id, owner, pair = texts
    if None in (trade_id, user_id, customer_id, symbol, exchange, order_type):
        raise RepartitionError("not a repartition record: a required trade field is missing")
    # The agent built these fields from a validated trade: no validation again.
    trade = Trade(
        trade_id=cast(str, trade_id),
        user_id=cast(str, user_id),
        customer_id=cast(str, customer_id),
        symbol=cast(str, symbol),
        side=_SIDES[side],
        quantity=quantity,
        price=price,
        notional=notional,
        timestamp=timestamp,
        exchange=cast(str, exchange),
        order_type=cast(str, order_type),
        risk_level=_LEVELS[level],
        counterparty_user_id=counterparty,
        order_id=order_id,
    )
    return Execution(trade, source, promise, owner, pair)


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


def _exact(value: bytes, length: int) -> None:
    if len(value) != length:
        raise RepartitionError(f"not a repartition record: {len(value)} bytes where {length} were expected")


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
