"""Per-user state: bounded by time and by count, pruned by event time, compactly serialized.

What a :class:`UserState` holds, and its bounds:

- ``watermark``: the latest event time seen for the user (-1 before the first trade).
- Running aggregates over every trade: ``count``, EWMA mean and variance of notional, and a
  :class:`~riskengine.core.sketch.QuantileSketch` (at most 164 counters).
- ``recent``: the trades that can still join a short pattern window (volume spike, wash trading,
  flash crash), ordered by event time, with their ids (they may become evidence). Kept while their
  event time is ``>= watermark - recent_horizon`` (the longest short window plus the allowed
  lateness) and at most :data:`~riskengine.core.rules.MAX_RECENT_TRADES` of them.
- ``symbols``: the user's EWMA reference price per symbol, at most :data:`MAX_SYMBOLS` symbols
  (the least recently traded is dropped first).
- Structuring candidates (trades in the band below the reporting threshold) with ids, within the
  structuring window plus lateness and at most ``MAX_STRUCTURING_CANDIDATES``.
- The 24 h notional for the KYC daily limit, as sums per :data:`DAY_BUCKET_MS` bucket (at most 98
  buckets): no ids are kept for 24 h, which is what keeps a busy user's state small.
- ``fired``: for alert suppression, the event time of the last evidence event of the last alert per
  (pattern, key). Whenever an entry is added, entries that can no longer merge anything (older than
  their merge window plus the lateness) are dropped, so it holds the live entries plus one.
- ``alert_heat`` / ``alert_heat_at``: the account's earlier alerts as a decayed count and the
  event time it was last updated (the repeat part of the alert priority, :mod:`.priority`).
- ``orders``: the account's order flow (:class:`~riskengine.core.order_book.OrderBook`: orders and
  their lives, size history, quote cycles), with its own bounds.

:func:`encode_state` writes one table value: a format-version byte, then fixed fields and
``struct``/``array``-packed columns (no JSON, ids stored once, times as offsets). Encoding is
lossless, so a state that goes through the table behaves exactly like one kept in memory.
A user with 1,000 trades inside 24 h encodes to a few KB (under 16 KB even when all 1,000 fall
in one minute); see ``tests/unit/core/test_state.py``. The order book follows as a section of its
own (8 bytes when empty; an order that did not change keeps its encoded row).

:func:`decode_state` reads the current version and older ones through :data:`MIGRATIONS`, a map
from an old version to a function that rewrites its bytes as the next version; a version newer
than :data:`FORMAT_VERSION` raises :class:`StateFormatError` (roll the worker forward instead).
"""

from __future__ import annotations

import struct
import sys
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping, Sequence

from riskengine.errors import CoreError

from .models import PatternType
from .order_book import (
    OrderBook,
    OrderBookFormatError,
    decode_columnar_order_book,
    decode_order_book,
    encode_order_book,
)
from .rules import MAX_RECENT_TRADES, MAX_STRUCTURING_CANDIDATES
from .sketch import BINS, QuantileSketch

#: Current encoding version (the first byte of every encoded state). 2 added the order book,
#: 3 the alert heat and the recent trades' counterparties, 4 wrote the order book's orders row
#: by row (so an order that did not change is not encoded again).
FORMAT_VERSION = 4
#: Symbols with a reference price kept per user.
MAX_SYMBOLS = 16
#: Width of one bucket of the 24 h notional.
DAY_BUCKET_MS = 15 * 60_000
#: The KYC daily window.
DAY_MS = 24 * 60 * 60_000

_PATTERNS = list(PatternType)
_PATTERN_INDEX = {pattern: index for index, pattern in enumerate(_PATTERNS)}
_HEADER = struct.Struct("<BqQdd")
_COUNT = struct.Struct("<H")
_SPAN = struct.Struct("<BB")
_BASE = struct.Struct("<qH")
_DAY = struct.Struct("<Hd")
_HEAT = struct.Struct("<dq")
_SWAP = sys.byteorder == "big"


class StateFormatError(CoreError):
    """Bytes that are not an encoded user state this version can read."""


def _find(times: list[int], ids: list[str], timestamp: int, trade_id: str) -> int:
    position = bisect_left(times, timestamp)
    while position < len(times) and times[position] == timestamp:
        if ids[position] == trade_id:
            return position
        position += 1
    return -1


#: RecentTrades' columns: its slots and what its equality compares (a module constant: a class
#: compiled by mypyc has no ``__slots__`` attribute to read).
_RECENT_COLUMNS = (
    "aggressive",
    "counterparties",
    "ids",
    "notionals",
    "quantities",
    "sells",
    "symbols",
    "times",
)


class RecentTrades:
    """The short-window trades as parallel lists ordered by event time (stable for equal times).

    Parallel lists let the detectors find window edges with ``bisect`` and count sells with one
    ``sum`` over a slice, both in C.
    """

    __slots__ = _RECENT_COLUMNS

    def __init__(self) -> None:
        self.times: list[int] = []
        self.ids: list[str] = []
        self.sells: list[bool] = []
        #: the trade took liquidity (a market, IOC or FOK order)
        self.aggressive: list[bool] = []
        self.symbols: list[str] = []
        self.quantities: list[float] = []
        self.notionals: list[float] = []
        #: the trade's counterparty ("" when not known)
        self.counterparties: list[str] = []

    def __len__(self) -> int:
        return len(self.times)

    def insert(
        self,
        timestamp: int,
        trade_id: str,
        sell: bool,
        symbol: str,
        quantity: float,
        notional: float,
        aggressive: bool = False,
        counterparty: str = "",
    ) -> int:
        """Insert after every trade with the same or an earlier time; return its position."""
        times = self.times
        if not times or timestamp >= times[-1]:
            times.append(timestamp)
            self.ids.append(trade_id)
            self.sells.append(sell)
            self.aggressive.append(aggressive)
            self.symbols.append(symbol)
            self.quantities.append(quantity)
            self.notionals.append(notional)
            self.counterparties.append(counterparty)
            return len(times) - 1
        position = bisect_right(times, timestamp)
        times.insert(position, timestamp)
        self.ids.insert(position, trade_id)
        self.sells.insert(position, sell)
        self.aggressive.insert(position, aggressive)
        self.symbols.insert(position, symbol)
        self.quantities.insert(position, quantity)
        self.notionals.insert(position, notional)
        self.counterparties.insert(position, counterparty)
        return position

    def find(self, timestamp: int, trade_id: str) -> int:
        """Position of the trade with this id and event time, or -1."""
        return _find(self.times, self.ids, timestamp, trade_id)

    def prune(self, oldest: int, keep: int) -> int:
        """Drop trades older than ``oldest``, then the oldest beyond ``keep``; return how many went."""
        times = self.times
        drop = bisect_left(times, oldest) if times and times[0] < oldest else 0
        if len(times) - drop > keep:
            drop = len(times) - keep
        if drop:
            columns = (
                times,
                self.ids,
                self.sells,
                self.aggressive,
                self.symbols,
                self.quantities,
                self.notionals,
                self.counterparties,
            )
            for column in columns:
                del column[:drop]
        return drop

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RecentTrades) and all(
            getattr(self, name) == getattr(other, name) for name in _RECENT_COLUMNS
        )

    __hash__ = None  # type: ignore[assignment]


class SymbolStats:
    """The user's EWMA reference price in one symbol and when they last traded it."""

    __slots__ = ("last_seen", "price")

    def __init__(self, price: float, last_seen: int) -> None:
        self.price = price
        self.last_seen = last_seen

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SymbolStats) and (other.price, other.last_seen) == (
            self.price,
            self.last_seen,
        )

    __hash__ = None  # type: ignore[assignment]


#: What a UserState holds: its slots and what its equality compares (see :data:`_RECENT_COLUMNS`).
_STATE_FIELDS = (
    "alert_heat",
    "alert_heat_at",
    "count",
    "day_buckets",
    "day_sums",
    "day_total",
    "fired",
    "mean",
    "orders",
    "recent",
    "sketch",
    "structuring_ids",
    "structuring_times",
    "symbols",
    "variance",
    "watermark",
)


class UserState:
    """Everything the core remembers about one user; see the module docstring for the bounds."""

    __slots__ = _STATE_FIELDS

    def __init__(self) -> None:
        self.watermark = -1
        self.count = 0
        self.mean = 0.0
        self.variance = 0.0
        self.sketch = QuantileSketch()
        self.recent = RecentTrades()
        self.symbols: dict[str, SymbolStats] = {}
        self.structuring_times: list[int] = []
        self.structuring_ids: list[str] = []
        self.day_buckets: list[int] = []
        self.day_sums: list[float] = []
        self.day_total = 0.0
        self.fired: dict[tuple[PatternType, str], int] = {}
        self.orders = OrderBook()
        self.alert_heat = 0.0
        self.alert_heat_at = -1

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UserState) and all(
            getattr(self, name) == getattr(other, name) for name in _STATE_FIELDS
        )

    __hash__ = None  # type: ignore[assignment]

    # -- running aggregates -------------------------------------------------------------------

    def observe_notional(self, notional: float, alpha: float) -> float:
        """Update count, EWMA mean/variance (West's incremental form) and the sketch.

        Returns the notional's percentile rank in the sketch from before this update.
        """
        if self.count == 0:
            self.mean = notional
            self.variance = 0.0
        else:
            diff = notional - self.mean
            increment = alpha * diff
            self.mean += increment
            self.variance = (1.0 - alpha) * (self.variance + diff * increment)
        self.count += 1
        return self.sketch.rank_and_add(notional)

    def observe_price(self, symbol: str, price: float, timestamp: int, alpha: float) -> float | None:
        """Update the symbol's EWMA price; return the reference price from *before* this trade."""
        stats = self.symbols.get(symbol)
        if stats is None:
            if len(self.symbols) >= MAX_SYMBOLS:
                stale = min(self.symbols, key=lambda name: self.symbols[name].last_seen)
                del self.symbols[stale]
            self.symbols[symbol] = SymbolStats(price, timestamp)
            return None
        previous = stats.price
        stats.price = previous + alpha * (price - previous)
        if timestamp > stats.last_seen:
            stats.last_seen = timestamp
        return previous

    # -- 24 h notional ---------------------------------------------------------------------------

    def add_day_notional(self, timestamp: int, notional: float) -> None:
        """Add to the trade's bucket if it is inside the retained 24 h; drop expired buckets.

        Buckets with index ``>= (watermark - 24 h) // DAY_BUCKET_MS`` are kept, so ``day_total``
        covers at least the 24 h ending at the watermark and at most one bucket more: the daily
        limit errs on the side of flagging.
        """
        first = (self.watermark - DAY_MS) // DAY_BUCKET_MS
        buckets = self.day_buckets
        sums = self.day_sums
        if buckets and buckets[0] < first:
            drop = bisect_left(buckets, first)
            self.day_total -= sum(sums[:drop])
            del buckets[:drop]
            del sums[:drop]
            if not buckets:
                # Resetting whenever the window empties keeps float error from accumulating.
                self.day_total = 0.0
        bucket = timestamp // DAY_BUCKET_MS
        if bucket < first:
            return
        if buckets and buckets[-1] == bucket:
            sums[-1] += notional
        elif not buckets or buckets[-1] < bucket:
            buckets.append(bucket)
            sums.append(notional)
        else:
            position = bisect_left(buckets, bucket)
            if buckets[position] == bucket:
                sums[position] += notional
            else:
                buckets.insert(position, bucket)
                sums.insert(position, notional)
        self.day_total += notional

    # -- structuring candidates ----------------------------------------------------------------

    def find_structuring_candidate(self, timestamp: int, trade_id: str) -> int:
        """Position of the candidate with this id and event time, or -1."""
        return _find(self.structuring_times, self.structuring_ids, timestamp, trade_id)

    def add_structuring_candidate(self, timestamp: int, trade_id: str, oldest: int) -> int:
        """Insert a candidate in event-time order, prune, and return its position (-1 if too old)."""
        times = self.structuring_times
        ids = self.structuring_ids
        if times and times[0] < oldest:
            drop = bisect_left(times, oldest)
            del times[:drop]
            del ids[:drop]
        if timestamp < oldest:
            return -1
        position = bisect_right(times, timestamp)
        times.insert(position, timestamp)
        ids.insert(position, trade_id)
        if len(times) > MAX_STRUCTURING_CANDIDATES:
            del times[0]
            del ids[0]
            position -= 1
        return position

    # -- suppression memory ----------------------------------------------------------------------

    def prune_fired(self, lateness_ms: int, windows: Mapping[PatternType, int]) -> None:
        """Forget suppression entries that can no longer merge anything.

        An entry merges matches ending at or before ``last + window``; no match can end before
        ``watermark - lateness``, so an entry older than that is dead.
        """
        horizon = self.watermark - lateness_ms
        stale = [key for key, last in self.fired.items() if last + windows.get(key[0], 0) < horizon]
        for key in stale:
            del self.fired[key]


# -- encoding ------------------------------------------------------------------------------------


def _column(code: str, values: Sequence[int] | Sequence[float]) -> bytes:
    packed = array(code, values)
    if _SWAP:
        packed.byteswap()
    return packed.tobytes()


def _strings(values: Sequence[str]) -> bytes:
    encoded = [value.encode() for value in values]
    return _column("H", [len(item) for item in encoded]) + b"".join(encoded)


def encode_state(state: UserState) -> bytes:
    """The state as compact bytes: version byte, header, then packed columns (see module doc)."""
    table: dict[str, int] = {}

    def index(text: str) -> int:
        found = table.get(text)
        if found is None:
            found = table[text] = len(table)
        return found

    recent = state.recent
    recent_symbols = [index(symbol) for symbol in recent.symbols]
    symbol_names = [index(symbol) for symbol in state.symbols]
    fired_keys = [index(key) for _, key in state.fired]
    parts = [_HEADER.pack(FORMAT_VERSION, state.watermark, state.count, state.mean, state.variance)]
    parts.append(_COUNT.pack(len(table)))
    parts.append(_strings(list(table)))
    first, span = state.sketch.span()
    parts.append(_SPAN.pack(first, len(span)))
    parts.append(_column("H", span))
    stats = list(state.symbols.values())
    parts.append(_COUNT.pack(len(stats)))
    parts.append(_column("H", symbol_names))
    parts.append(_column("d", [s.price for s in stats]))
    parts.append(_column("q", [s.last_seen for s in stats]))
    base = recent.times[0] if recent.times else 0
    parts.append(_BASE.pack(base, len(recent)))
    parts.append(_column("I", [t - base for t in recent.times]))
    # Side and aggressiveness share a byte (bit 0: sell, bit 1: aggressive; version 1 had bit 0 only).
    parts.append(
        bytes(
            sell | aggressive << 1 for sell, aggressive in zip(recent.sells, recent.aggressive, strict=True)
        )
    )
    parts.append(_column("H", recent_symbols))
    parts.append(_column("d", recent.quantities))
    parts.append(_column("d", recent.notionals))
    parts.append(_strings(recent.ids))
    base = state.structuring_times[0] if state.structuring_times else 0
    parts.append(_BASE.pack(base, len(state.structuring_times)))
    parts.append(_column("I", [t - base for t in state.structuring_times]))
    parts.append(_strings(state.structuring_ids))
    parts.append(_DAY.pack(len(state.day_buckets), state.day_total))
    parts.append(_column("I", state.day_buckets))
    parts.append(_column("d", state.day_sums))
    parts.append(_COUNT.pack(len(state.fired)))
    parts.append(bytes(_PATTERN_INDEX[pattern] for pattern, _ in state.fired))
    parts.append(_column("H", fired_keys))
    parts.append(_column("q", list(state.fired.values())))
    parts.append(encode_order_book(state.orders))
    parts.append(_HEAT.pack(state.alert_heat, state.alert_heat_at))
    parts.append(_strings(recent.counterparties))
    return b"".join(parts)


class _Reader:
    __slots__ = ("book_span", "data", "offset")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0
        #: where the order book section starts and ends (once read)
        self.book_span = (0, 0)

    def take(self, size: int) -> bytes:
        end = self.offset + size
        if end > len(self.data):
            raise StateFormatError(f"truncated at byte {self.offset} (wanted {size} more)")
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def unpack(self, layout: struct.Struct) -> tuple[int | float, ...]:
        values: tuple[int | float, ...] = layout.unpack(self.take(layout.size))
        return values

    def count(self) -> int:
        return int(self.unpack(_COUNT)[0])

    def ints(self, code: str, length: int) -> list[int]:
        packed: array[int] = array(code)
        packed.frombytes(self.take(length * packed.itemsize))
        if _SWAP:
            packed.byteswap()
        return packed.tolist()

    def floats(self, length: int) -> list[float]:
        packed: array[float] = array("d")
        packed.frombytes(self.take(length * packed.itemsize))
        if _SWAP:
            packed.byteswap()
        return packed.tolist()

    def strings(self, length: int) -> list[str]:
        sizes = self.ints("H", length)
        try:
            return [self.take(size).decode() for size in sizes]
        except UnicodeDecodeError as exc:
            raise StateFormatError(f"bad UTF-8 in a stored string: {exc}") from None


def _lookup(table: list[str], indexes: list[int]) -> list[str]:
    try:
        return [table[i] for i in indexes]
    except IndexError:
        raise StateFormatError("string index out of range") from None


def _decode_current(data: bytes) -> UserState:
    reader = _Reader(data)
    state = _decode_version_2_sections(reader, decode_order_book)
    _decode_version_3_sections(reader, state)
    return state


def _decode_version_3_sections(reader: _Reader, state: UserState) -> None:
    """What format 3 appended after the format 2 sections: the alert heat, the counterparties."""
    data = reader.data
    heat, heat_at = reader.unpack(_HEAT)
    state.alert_heat = float(heat)
    state.alert_heat_at = int(heat_at)
    state.recent.counterparties = reader.strings(len(state.recent))
    if reader.offset != len(data):
        raise StateFormatError(f"{len(data) - reader.offset} trailing bytes")


def _decode_version_2_sections(
    reader: _Reader, book_decoder: Callable[[bytes, int], tuple[OrderBook, int]]
) -> UserState:
    """Everything format 2 had (format 3 appends its sections after these); ``book_decoder`` reads
    the order book section of the format at hand."""
    data = reader.data
    _, watermark, count, mean, variance = reader.unpack(_HEADER)
    state = UserState()
    state.watermark = int(watermark)
    state.count = int(count)
    state.mean = float(mean)
    state.variance = float(variance)
    table = reader.strings(reader.count())
    first, size = (int(v) for v in reader.unpack(_SPAN))
    try:
        state.sketch = QuantileSketch.from_span(first, reader.ints("H", size))
    except ValueError as exc:
        raise StateFormatError(str(exc)) from None
    size = reader.count()
    names = _lookup(table, reader.ints("H", size))
    prices = reader.floats(size)
    seen = reader.ints("q", size)
    state.symbols = {name: SymbolStats(p, s) for name, p, s in zip(names, prices, seen, strict=True)}
    base, size = (int(v) for v in reader.unpack(_BASE))
    recent = state.recent
    recent.times = [base + t for t in reader.ints("I", size)]
    flags = reader.take(size)
    recent.sells = [bool(b & 1) for b in flags]
    recent.aggressive = [bool(b & 2) for b in flags]
    recent.symbols = _lookup(table, reader.ints("H", size))
    recent.quantities = reader.floats(size)
    recent.notionals = reader.floats(size)
    recent.ids = reader.strings(size)
    base, size = (int(v) for v in reader.unpack(_BASE))
    state.structuring_times = [base + t for t in reader.ints("I", size)]
    state.structuring_ids = reader.strings(size)
    day_size, total = reader.unpack(_DAY)
    state.day_buckets = reader.ints("I", int(day_size))
    state.day_sums = reader.floats(int(day_size))
    state.day_total = float(total)
    size = reader.count()
    try:
        patterns = [_PATTERNS[i] for i in reader.take(size)]
    except IndexError:
        raise StateFormatError("unknown pattern index") from None
    keys = _lookup(table, reader.ints("H", size))
    state.fired = dict(zip(zip(patterns, keys, strict=True), reader.ints("q", size), strict=True))
    try:
        start = reader.offset
        state.orders, reader.offset = book_decoder(data, start)
        reader.book_span = (start, reader.offset)
    except OrderBookFormatError as exc:
        raise StateFormatError(str(exc)) from None
    if len(recent) > MAX_RECENT_TRADES or len(state.sketch.counts) != BINS:
        raise StateFormatError("state exceeds its bounds")
    return state


def _add_order_book(data: bytes) -> bytes:
    """Version 1 -> 2: the same layout followed by an empty order book section (4 zero bytes)."""
    return bytes([2]) + data[1:] + bytes(4)


def _add_alert_heat(data: bytes) -> bytes:
    """Version 2 -> 3: no alert heat (0 at -1), no counterparties known for the recent trades."""
    reader = _Reader(data)
    state = _decode_version_2_sections(reader, decode_columnar_order_book)
    if reader.offset != len(data):
        raise StateFormatError(f"{len(data) - reader.offset} trailing bytes")
    return bytes([3]) + data[1:] + _HEAT.pack(0.0, -1) + _strings([""] * len(state.recent))


def _order_book_by_row(data: bytes) -> bytes:
    """Version 3 -> 4: the order book section rewritten row by row; everything else unchanged."""
    reader = _Reader(data)
    state = _decode_version_2_sections(reader, decode_columnar_order_book)
    _decode_version_3_sections(reader, state)
    start, end = reader.book_span
    return bytes([4]) + data[1:start] + encode_order_book(state.orders) + data[end:]


#: Old format version -> function rewriting bytes of that version as bytes of the next version.
#: decode_state applies them in a chain, so each format change adds one entry here and bumps
#: FORMAT_VERSION; nothing else has to know about old layouts.
MIGRATIONS: dict[int, Callable[[bytes], bytes]] = {
    1: _add_order_book,
    2: _add_alert_heat,
    3: _order_book_by_row,
}


def decode_state(data: bytes) -> UserState:
    """Read bytes written by :func:`encode_state` of this or an older version.

    Raises :class:`StateFormatError` for an empty, truncated, corrupt or newer-version payload.
    """
    if not data:
        raise StateFormatError("empty state")
    version = data[0]
    while version < FORMAT_VERSION:
        migrate = MIGRATIONS.get(version)
        if migrate is None:
            raise StateFormatError(f"no migration from state format {version}")
        data = migrate(data)
        if not data or data[0] != version + 1:
            raise StateFormatError(f"migration from state format {version} did not produce {version + 1}")
        version = data[0]
    if version != FORMAT_VERSION:
        raise StateFormatError(f"state format {version} is newer than this release's {FORMAT_VERSION}")
    return _decode_current(data)
