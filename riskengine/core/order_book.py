"""One account's order flow: its orders' lives, size history and quote cycles, bounded.

An :class:`OrderBook` is part of a :class:`~riskengine.core.state.UserState` and is changed only by
:func:`riskengine.core.evaluate.evaluate_order`. What it holds, and its bounds:

- ``orders``: order id -> :class:`OrderLife` (symbol, side, current price and quantities, when it
  was placed and closed, the size baseline at placement, and its last :data:`MAX_ORDER_EVENTS`
  events), in the order the orders were placed. An open order stays however old it is; a closed
  one (cancelled, or filled to 0) stays while ``closed_at >= watermark - retention`` (the longest
  order-flow window plus the allowed lateness), so a late fill can still complete a pattern.
  Beyond :data:`MAX_ORDERS` the oldest closed orders go first, then the oldest open ones.
- ``sizes``: per symbol, the quantities of the last :data:`SIZE_HISTORY` orders placed (the
  SPOOFING baseline is their median), at most :data:`MAX_SYMBOLS` symbols (least recently used
  dropped).
- ``cycles``: per symbol, the counters of the current and the previous quote cycle
  (QUOTE_STUFFING), each with the event ids of its first :data:`CYCLE_SAMPLE` orders.
- ``issues``: the last :data:`MAX_ISSUES` inconsistent events (kind, event id, time).

Inconsistent events change nothing but ``issues`` and are reported by :meth:`OrderBook.apply`:
an AMENDED, CANCELLED or FILLED event for an order the book does not hold (``unknown-order``), any
event for an order already cancelled or filled to 0 (``after-terminal``), a PLACED event for an
order it holds (``placed-twice``), an event whose symbol or side differ from its order's
(``changed-instrument``), a remaining quantity below 0 or above the order quantity
(``remaining-out-of-range``), and an event id the order has already seen (``duplicate-event``).

:func:`encode_order_book` / :func:`decode_order_book` write the book as one self-contained section
of the user's state (its own string table, packed columns).
"""

from __future__ import annotations

import heapq
import struct
import sys
from array import array
from collections.abc import Iterable, Iterator, Sequence

from riskengine.errors import CoreError

from .models import OrderActivity, OrderEvent, OrderEventType, Side

#: Orders (open and recently closed) kept per user.
MAX_ORDERS = 512
#: Events kept per order (its PLACED event and the latest ones).
MAX_ORDER_EVENTS = 16
#: Placement sizes kept per symbol for the SPOOFING baseline.
SIZE_HISTORY = 32
#: Symbols with a size history or quote cycles per user.
MAX_SYMBOLS = 16
#: Placement event ids kept per quote cycle as its evidence.
CYCLE_SAMPLE = 10
#: Inconsistent events remembered per user.
MAX_ISSUES = 16

OPEN, CANCELLED, FILLED = 0, 1, 2
_KINDS = tuple(OrderEventType)
_KIND_INDEX = {kind: index for index, kind in enumerate(_KINDS)}
ISSUE_KINDS = (
    "unknown-order",
    "after-terminal",
    "placed-twice",
    "changed-instrument",
    "remaining-out-of-range",
    "duplicate-event",
)
_SWAP = sys.byteorder == "big"


#: What an order is: its slots but ``_encoded`` (the cache of its bytes in the book's encoding),
#: and what its equality compares (module constants here: a class compiled by mypyc has no class
#: attributes to read).
_ORDER_CONTENT = (
    "baseline",
    "closed_at",
    "event_ids",
    "event_kinds",
    "event_prices",
    "event_quantities",
    "event_remaining",
    "event_times",
    "filled",
    "order_id",
    "placed_at",
    "placed_quantity",
    "price",
    "quantity",
    "remaining",
    "sell",
    "status",
    "symbol",
)


class OrderLife:
    """One order: what it is now, when it was placed and closed, and its recent events."""

    __slots__ = ("_encoded", *_ORDER_CONTENT)

    def __init__(
        self,
        order_id: str,
        symbol: str,
        sell: bool,
        price: float,
        quantity: float,
        remaining: float,
        placed_at: int,
        baseline: float,
    ) -> None:
        self.order_id = order_id
        self.symbol = symbol
        self.sell = sell
        self.price = price
        self.quantity = quantity
        self.remaining = remaining
        self.placed_at = placed_at
        self.placed_quantity = quantity
        #: Median size of the account's previous orders in the symbol when this one was placed
        #: (0: too little history).
        self.baseline = baseline
        self.filled = 0.0
        self.status = OPEN
        self.closed_at = -1
        self.event_times: list[int] = []
        self.event_kinds: list[int] = []
        self.event_prices: list[float] = []
        self.event_quantities: list[float] = []
        self.event_remaining: list[float] = []
        self.event_ids: list[str] = []
        #: The order's row in the book's encoding, None once it changed (see encode_order_book).
        self._encoded: bytes | None = None

    @classmethod
    def placed(cls, event: OrderEvent, baseline: float) -> OrderLife:
        """The order its PLACED ``event`` opens (the event not recorded yet)."""
        return cls(
            event.order_id,
            event.symbol,
            event.side is Side.SELL,
            event.price,
            event.quantity,
            event.remaining_quantity,
            event.timestamp,
            baseline,
        )

    @property
    def side(self) -> Side:
        """The order's side."""
        return Side.SELL if self.sell else Side.BUY

    @property
    def placed_event_id(self) -> str:
        """The id of the order's PLACED event (its first kept event)."""
        return self.event_ids[0]

    @property
    def closed_event_id(self) -> str | None:
        """The id of the event that cancelled or filled the order, if closed."""
        return self.event_ids[-1] if self.status != OPEN else None

    def open_at(self, timestamp: int) -> bool:
        """True if the order was resting at ``timestamp`` (placed before, not closed before)."""
        return self.placed_at <= timestamp and (self.closed_at < 0 or self.closed_at >= timestamp)

    def record(self, event: OrderEvent) -> None:
        """Remember ``event`` among the order's events (first and latest kept).

        Every change to an order starts here (:meth:`OrderBook.apply`), so this is where its
        encoded row is dropped.
        """
        self._encoded = None
        self.event_times.append(event.timestamp)
        self.event_kinds.append(_KIND_INDEX[event.event_type])
        self.event_prices.append(event.price)
        self.event_quantities.append(event.quantity)
        self.event_remaining.append(event.remaining_quantity)
        self.event_ids.append(event.event_id)
        if len(self.event_ids) > MAX_ORDER_EVENTS:
            for column in self._event_columns():
                del column[1]

    def _event_columns(self) -> tuple[list[int] | list[float] | list[str], ...]:
        return (
            self.event_times,
            self.event_kinds,
            self.event_prices,
            self.event_quantities,
            self.event_remaining,
            self.event_ids,
        )

    def activity(self) -> Iterator[OrderActivity]:
        """The order's kept events as alert activity, oldest first."""
        side = self.side
        for timestamp, kind, price, quantity, remaining, event_id in zip(
            self.event_times,
            self.event_kinds,
            self.event_prices,
            self.event_quantities,
            self.event_remaining,
            self.event_ids,
            strict=True,
        ):
            yield OrderActivity(
                event_id, self.order_id, _KINDS[kind].value, side, price, quantity, remaining, timestamp
            )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OrderLife) and all(
            getattr(self, name) == getattr(other, name) for name in _ORDER_CONTENT
        )

    __hash__ = None  # type: ignore[assignment]


#: A QuoteCycle's slots and what its equality compares.
_CYCLE_FIELDS = ("fast_cancels", "placed", "sample", "start", "unfilled_cancels")


class QuoteCycle:
    """QUOTE_STUFFING counters of one aligned cycle of one symbol, by the orders' placement time."""

    __slots__ = _CYCLE_FIELDS

    def __init__(self, start: int) -> None:
        self.start = start
        #: Orders placed in the cycle.
        self.placed = 0
        #: Of those, cancelled within ``quote.stuffing.fast.cancel.seconds`` of placement.
        self.fast_cancels = 0
        #: Of those, cancelled without any fill.
        self.unfilled_cancels = 0
        #: PLACED event ids of the cycle's first orders (evidence).
        self.sample: list[str] = []

    def __eq__(self, other: object) -> bool:
        return isinstance(other, QuoteCycle) and all(
            getattr(self, name) == getattr(other, name) for name in _CYCLE_FIELDS
        )

    __hash__ = None  # type: ignore[assignment]


#: What an OrderBook is (equality, encoding); its other slots, ``_expiring`` and ``_by_symbol``, are
#: indexes derived from ``orders``.
_BOOK_CONTENT = ("cycles", "issues", "orders", "sizes")


class OrderBook:
    """The account's orders, size history, quote cycles and recent inconsistencies."""

    __slots__ = ("_by_symbol", "_expiring", *_BOOK_CONTENT)

    def __init__(self) -> None:
        self.orders: dict[str, OrderLife] = {}
        self.sizes: dict[str, list[float]] = {}
        self.cycles: dict[str, list[QuoteCycle]] = {}
        #: (event time, issue kind index, event id), oldest first
        self.issues: list[tuple[int, int, str]] = []
        #: (closed_at, order id) of the closed orders, a heap: pruning pops only what expired.
        self._expiring: list[tuple[int, str]] = []
        #: symbol -> its orders by id, in placement order: the detectors look at one symbol, and a
        #: market maker's book holds hundreds of orders over several.
        self._by_symbol: dict[str, dict[str, OrderLife]] = {}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OrderBook) and all(
            getattr(self, name) == getattr(other, name) for name in _BOOK_CONTENT
        )

    __hash__ = None  # type: ignore[assignment]

    def __bool__(self) -> bool:
        return bool(self.orders or self.sizes or self.cycles or self.issues)

    # -- applying events ------------------------------------------------------------------------

    def apply(
        self, event: OrderEvent, min_history: int, cycle_ms: int, fast_cancel_ms: int
    ) -> tuple[OrderLife | None, str | None]:
        """Apply ``event``; return its order and None, or None / the order and the issue kind.

        ``min_history`` orders in the symbol are needed for a size baseline; ``cycle_ms`` and
        ``fast_cancel_ms`` shape the quote cycles.
        """
        order = self.orders.get(event.order_id)
        kind = event.event_type
        if kind is OrderEventType.PLACED:
            if order is not None:
                return order, self._issue(event, "placed-twice")
            if not 0.0 <= event.remaining_quantity <= event.quantity:
                return None, self._issue(event, "remaining-out-of-range")
            order = OrderLife.placed(event, self._baseline(event.symbol, min_history))
            order.record(event)
            self._add(order)
            self._remember_size(event.symbol, event.quantity)
            cycle = self._cycle(event.symbol, event.timestamp // cycle_ms * cycle_ms)
            cycle.placed += 1
            if len(cycle.sample) < CYCLE_SAMPLE:
                cycle.sample.append(event.event_id)
            return order, None
        if order is None:
            return None, self._issue(event, "unknown-order")
        if order.status != OPEN:
            return order, self._issue(event, "after-terminal")
        if event.symbol != order.symbol or (event.side is Side.SELL) != order.sell:
            return order, self._issue(event, "changed-instrument")
        if not 0.0 <= event.remaining_quantity <= event.quantity:
            return order, self._issue(event, "remaining-out-of-range")
        if event.event_id in order.event_ids:
            return order, self._issue(event, "duplicate-event")
        order.record(event)
        if kind is OrderEventType.AMENDED:
            order.price = event.price
            order.quantity = event.quantity
            order.remaining = event.remaining_quantity
        elif kind is OrderEventType.FILLED:
            order.filled += max(0.0, order.remaining - event.remaining_quantity)
            order.quantity = event.quantity
            order.remaining = event.remaining_quantity
            if event.remaining_quantity == 0.0:
                order.status = FILLED
                order.closed_at = event.timestamp
                heapq.heappush(self._expiring, (order.closed_at, order.order_id))
        else:
            order.status = CANCELLED
            order.closed_at = event.timestamp
            order.remaining = event.remaining_quantity
            heapq.heappush(self._expiring, (order.closed_at, order.order_id))
            placed_in = self.cycle_of(order, cycle_ms)
            if placed_in is not None:
                if event.timestamp - order.placed_at <= fast_cancel_ms:
                    placed_in.fast_cancels += 1
                if order.filled == 0.0:
                    placed_in.unfilled_cancels += 1
        return order, None

    def _add(self, order: OrderLife) -> None:
        self.orders[order.order_id] = order
        of_symbol = self._by_symbol.get(order.symbol)
        if of_symbol is None:
            of_symbol = self._by_symbol[order.symbol] = {}
        of_symbol[order.order_id] = order

    def _remove(self, key: str) -> None:
        order = self.orders.pop(key)
        of_symbol = self._by_symbol[order.symbol]
        del of_symbol[key]
        if not of_symbol:
            del self._by_symbol[order.symbol]

    def _issue(self, event: OrderEvent, kind: str) -> str:
        self.issues.append((event.timestamp, ISSUE_KINDS.index(kind), event.event_id))
        if len(self.issues) > MAX_ISSUES:
            del self.issues[0]
        return kind

    def _baseline(self, symbol: str, min_history: int) -> float:
        history = self.sizes.get(symbol)
        if history is None or len(history) < min_history:
            return 0.0
        return _median(history)

    def _remember_size(self, symbol: str, quantity: float) -> None:
        history = self.sizes.pop(symbol, None)
        if history is None:
            history = []
            if len(self.sizes) >= MAX_SYMBOLS:
                del self.sizes[next(iter(self.sizes))]
        history.append(quantity)
        if len(history) > SIZE_HISTORY:
            del history[0]
        # Re-inserted: insertion order is recency.
        self.sizes[symbol] = history

    def _cycle(self, symbol: str, start: int) -> QuoteCycle:
        cycles = self.cycles.pop(symbol, None)
        if cycles is None:
            cycles = []
            if len(self.cycles) >= MAX_SYMBOLS:
                del self.cycles[next(iter(self.cycles))]
        self.cycles[symbol] = cycles
        for cycle in cycles:
            if cycle.start == start:
                return cycle
        cycle = QuoteCycle(start)
        cycles.append(cycle)
        cycles.sort(key=lambda c: c.start)
        # The current cycle and the one before: a late event can still reach the previous one.
        del cycles[:-2]
        return cycle

    def cycle_of(self, order: OrderLife, cycle_ms: int) -> QuoteCycle | None:
        """The quote cycle ``order`` was placed in, if still kept."""
        start = order.placed_at // cycle_ms * cycle_ms
        for cycle in self.cycles.get(order.symbol, ()):
            if cycle.start == start:
                return cycle
        return None

    # -- bounds ----------------------------------------------------------------------------------

    def prune(self, oldest: int) -> None:
        """Drop orders closed before ``oldest``, then the oldest beyond :data:`MAX_ORDERS`."""
        orders = self.orders
        expiring = self._expiring
        while expiring and expiring[0][0] < oldest:
            closed_at, key = heapq.heappop(expiring)
            order = orders.get(key)
            # The entry may be stale: the order evicted, or a later order with the same id.
            if order is not None and order.status != OPEN and order.closed_at == closed_at:
                self._remove(key)
        excess = len(orders) - MAX_ORDERS
        if excess > 0:
            closed = [key for key, order in orders.items() if order.status != OPEN][:excess]
            for key in closed:
                self._remove(key)
            excess -= len(closed)
            if excess > 0:
                for key in list(orders)[:excess]:
                    self._remove(key)

    # -- views -----------------------------------------------------------------------------------

    def of_symbol(self, symbol: str) -> Iterable[OrderLife]:
        """The kept orders of one symbol, in placement order."""
        of_symbol = self._by_symbol.get(symbol)
        return () if of_symbol is None else of_symbol.values()

    def in_symbol(self, symbol: str, sell: bool) -> list[OrderLife]:
        """The kept orders of one symbol and side, in placement order."""
        return [order for order in self.of_symbol(symbol) if order.sell == sell]

    def open_orders(self) -> list[OrderLife]:
        """The open orders, in placement order."""
        return [order for order in self.orders.values() if order.status == OPEN]

    def issue_list(self) -> list[tuple[int, str, str]]:
        """(event time, issue kind, event id) of the remembered inconsistencies, oldest first."""
        return [(at, ISSUE_KINDS[kind], event_id) for at, kind, event_id in self.issues]


# -- encoding ------------------------------------------------------------------------------------

_COUNT = struct.Struct("<I")
_CYCLE = struct.Struct("<qIIIB")
#: An order's row: flags (bit 0 sell, bits 1-2 status), event count, order id and symbol lengths,
#: price, quantity, remaining, placed quantity, baseline, filled, placed at, closed at.
_ROW = struct.Struct("<BBHH6d2q")
#: Its events, by count: times, kinds, prices, quantities, remaining, event id lengths.
_EVENTS = tuple(struct.Struct(f"<{n}q{n}B{n}d{n}d{n}d{n}H") for n in range(MAX_ORDER_EVENTS + 1))
_FLOAT_FIELDS = ("price", "quantity", "remaining", "placed_quantity", "baseline", "filled")


def _pack(code: str, values: Sequence[int] | Sequence[float]) -> bytes:
    packed = array(code, values)
    if _SWAP:
        packed.byteswap()
    return packed.tobytes()


def encode_order_book(book: OrderBook) -> bytes:
    """The book as a self-contained section: its orders row by row, then the size history, quote
    cycles and issues with a string table of their own.

    An order's row stays on the order until the order changes (:meth:`OrderLife.record`), so a
    book of hundreds of resting orders of which a few changed costs a join, not a re-encode: a
    market maker's state is written once per batch, and most of its orders did not change in it.
    """
    rows = []
    for order in book.orders.values():
        row = order._encoded
        if row is None:
            row = order._encoded = _encode_order(order)
        rows.append(row)
    return b"".join((_COUNT.pack(len(rows)), *rows, _encode_history(book)))


def _encode_order(order: OrderLife) -> bytes:
    order_id = order.order_id.encode()
    symbol = order.symbol.encode()
    event_ids = [event_id.encode() for event_id in order.event_ids]
    return b"".join(
        (
            _ROW.pack(
                order.sell | order.status << 1,
                len(event_ids),
                len(order_id),
                len(symbol),
                order.price,
                order.quantity,
                order.remaining,
                order.placed_quantity,
                order.baseline,
                order.filled,
                order.placed_at,
                order.closed_at,
            ),
            order_id,
            symbol,
            _EVENTS[len(event_ids)].pack(
                *order.event_times,
                *order.event_kinds,
                *order.event_prices,
                *order.event_quantities,
                *order.event_remaining,
                *map(len, event_ids),
            ),
            *event_ids,
        )
    )


def _encode_history(book: OrderBook) -> bytes:
    """Sizes, quote cycles and issues: a string table (4 zero bytes when they are empty), then
    packed columns."""
    if not (book.sizes or book.cycles or book.issues):
        return _COUNT.pack(0)
    table: dict[str, int] = {}

    def index(text: str) -> int:
        found = table.get(text)
        if found is None:
            found = table[text] = len(table)
        return found

    size_symbols = [index(symbol) for symbol in book.sizes]
    cycle_rows = [(index(symbol), cycle) for symbol, cycles in book.cycles.items() for cycle in cycles]
    sample_ids = [index(event_id) for _, cycle in cycle_rows for event_id in cycle.sample]
    issue_ids = [index(event_id) for _, _, event_id in book.issues]
    encoded = [text.encode() for text in table]
    parts = [_COUNT.pack(len(table)), _pack("H", [len(e) for e in encoded]), *encoded]
    parts.append(_COUNT.pack(len(book.sizes)))
    parts.append(_pack("I", size_symbols))
    parts.append(bytes(len(history) for history in book.sizes.values()))
    parts.append(_pack("d", [q for history in book.sizes.values() for q in history]))
    parts.append(_COUNT.pack(len(cycle_rows)))
    for symbol, cycle in cycle_rows:
        parts.append(_COUNT.pack(symbol))
        parts.append(
            _CYCLE.pack(
                cycle.start, cycle.placed, cycle.fast_cancels, cycle.unfilled_cancels, len(cycle.sample)
            )
        )
    parts.append(_pack("I", sample_ids))
    parts.append(_COUNT.pack(len(book.issues)))
    parts.append(_pack("q", [at for at, _, _ in book.issues]))
    parts.append(bytes(kind for _, kind, _ in book.issues))
    parts.append(_pack("I", issue_ids))
    return b"".join(parts)


class OrderBookFormatError(CoreError):
    """Bytes that are not an encoded order book."""


class _Cursor:
    __slots__ = ("data", "offset")

    def __init__(self, data: bytes, offset: int) -> None:
        self.data = data
        self.offset = offset

    def take(self, size: int) -> bytes:
        end = self.offset + size
        if end > len(self.data):
            raise OrderBookFormatError(f"order book truncated at byte {self.offset}")
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def count(self) -> int:
        return int(_COUNT.unpack(self.take(_COUNT.size))[0])

    def column(self, code: str, length: int) -> list[int] | list[float]:
        packed = array(code)
        packed.frombytes(self.take(length * packed.itemsize))
        if _SWAP:
            packed.byteswap()
        values: list[int] | list[float] = packed.tolist()
        return values

    def ints(self, code: str, length: int) -> list[int]:
        return [int(v) for v in self.column(code, length)]

    def floats(self, length: int) -> list[float]:
        return [float(v) for v in self.column("d", length)]

    def strings(self) -> list[str]:
        size = self.count()
        lengths = self.ints("H", size)
        try:
            return [self.take(length).decode() for length in lengths]
        except UnicodeDecodeError as exc:
            raise OrderBookFormatError(f"bad UTF-8 in the order book: {exc}") from None


def _lookup(table: list[str], indexes: list[int]) -> list[str]:
    try:
        return [table[i] for i in indexes]
    except IndexError:
        raise OrderBookFormatError("string index out of range") from None


def decode_order_book(data: bytes, offset: int = 0) -> tuple[OrderBook, int]:
    """Read a section written by :func:`encode_order_book` at ``offset``; the book and the end offset.

    Each order keeps its row's bytes, so writing the book back re-encodes only what changed.
    """
    book = OrderBook()
    cursor = _Cursor(data, offset)
    count = cursor.count()
    if count > MAX_ORDERS:
        raise OrderBookFormatError("order book exceeds its bounds")
    try:
        for _ in range(count):
            _add_decoded(book, _decode_order(cursor))
    except struct.error as exc:
        raise OrderBookFormatError(f"order book truncated: {exc}") from None
    except UnicodeDecodeError as exc:
        raise OrderBookFormatError(f"bad UTF-8 in the order book: {exc}") from None
    heapq.heapify(book._expiring)
    table = cursor.strings()
    if table:
        _decode_history(book, cursor, table)
    return book, cursor.offset


def _decode_order(cursor: _Cursor) -> OrderLife:
    data, start = cursor.data, cursor.offset
    (
        flags,
        events,
        id_length,
        symbol_length,
        price,
        quantity,
        remaining,
        placed_quantity,
        baseline,
        filled,
        placed_at,
        closed_at,
    ) = _ROW.unpack_from(data, start)
    if events > MAX_ORDER_EVENTS or flags >> 1 > FILLED:
        raise OrderBookFormatError("bad order in the order book")
    cursor.offset = start + _ROW.size
    order_id = cursor.take(id_length).decode()
    symbol = cursor.take(symbol_length).decode()
    order = OrderLife(order_id, symbol, bool(flags & 1), price, quantity, remaining, placed_at, baseline)
    order.placed_quantity, order.filled = placed_quantity, filled
    order.status, order.closed_at = flags >> 1, closed_at
    layout = _EVENTS[events]
    values = layout.unpack_from(data, cursor.offset)
    cursor.offset += layout.size
    order.event_times = list(values[:events])
    order.event_kinds = list(values[events : 2 * events])
    if any(kind >= len(_KINDS) for kind in order.event_kinds):
        raise OrderBookFormatError("bad order event in the order book")
    order.event_prices = list(values[2 * events : 3 * events])
    order.event_quantities = list(values[3 * events : 4 * events])
    order.event_remaining = list(values[4 * events : 5 * events])
    order.event_ids = [cursor.take(length).decode() for length in values[5 * events :]]
    order._encoded = data[start : cursor.offset]
    return order


def _add_decoded(book: OrderBook, order: OrderLife) -> None:
    if order.order_id in book.orders:
        raise OrderBookFormatError(f"order {order.order_id!r} twice in the order book")
    book._add(order)
    if order.status != OPEN:
        book._expiring.append((order.closed_at, order.order_id))


def _decode_history(book: OrderBook, cursor: _Cursor, table: list[str]) -> None:
    count = cursor.count()
    size_symbols = _lookup(table, cursor.ints("I", count))
    history_lengths = list(cursor.take(count))
    sizes = cursor.floats(sum(history_lengths))
    start = 0
    for symbol, length in zip(size_symbols, history_lengths, strict=True):
        book.sizes[symbol] = sizes[start : start + length]
        start += length
    count = cursor.count()
    rows: list[tuple[int, tuple[int, ...]]] = []
    for _ in range(count):
        symbol_index = cursor.count()
        rows.append((symbol_index, tuple(int(v) for v in _CYCLE.unpack(cursor.take(_CYCLE.size)))))
    samples = _lookup(table, cursor.ints("I", sum(values[4] for _, values in rows)))
    start = 0
    for symbol_index, (cycle_start, placed_count, fast, unfilled, sample) in rows:
        cycle = QuoteCycle(cycle_start)
        cycle.placed, cycle.fast_cancels, cycle.unfilled_cancels = placed_count, fast, unfilled
        cycle.sample = samples[start : start + sample]
        start += sample
        book.cycles.setdefault(_lookup(table, [symbol_index])[0], []).append(cycle)
    count = cursor.count()
    issue_times = cursor.ints("q", count)
    issue_kinds = list(cursor.take(count))
    if any(kind >= len(ISSUE_KINDS) for kind in issue_kinds):
        raise OrderBookFormatError("bad issue kind in the order book")
    issue_ids = _lookup(table, cursor.ints("I", count))
    book.issues = list(zip(issue_times, issue_kinds, issue_ids, strict=True))


def decode_columnar_order_book(data: bytes, offset: int = 0) -> tuple[OrderBook, int]:
    """Read the order book section of state formats 2 and 3 (one string table, every order's
    fields as packed columns); only the migration to format 4 reads it."""
    cursor = _Cursor(data, offset)
    book = OrderBook()
    table = cursor.strings()
    if not table:
        return book, cursor.offset
    count = cursor.count()
    if count > MAX_ORDERS:
        raise OrderBookFormatError("order book exceeds its bounds")
    order_ids = _lookup(table, cursor.ints("I", count))
    symbols = _lookup(table, cursor.ints("I", count))
    flags = cursor.take(count)
    floats = {name: cursor.floats(count) for name in _FLOAT_FIELDS}
    placed = cursor.ints("q", count)
    closed = cursor.ints("q", count)
    event_counts = list(cursor.take(count))
    total = sum(event_counts)
    times = cursor.ints("q", total)
    kinds = list(cursor.take(total))
    prices = cursor.floats(total)
    quantities = cursor.floats(total)
    remaining = cursor.floats(total)
    event_ids = _lookup(table, cursor.ints("I", total))
    if any(kind >= len(_KINDS) for kind in kinds) or any(c > MAX_ORDER_EVENTS for c in event_counts):
        raise OrderBookFormatError("bad order event in the order book")
    if any(flag >> 1 > FILLED for flag in flags):
        raise OrderBookFormatError("bad order status in the order book")
    start = 0
    for position in range(count):
        order = OrderLife(
            order_ids[position],
            symbols[position],
            bool(flags[position] & 1),
            floats["price"][position],
            floats["quantity"][position],
            floats["remaining"][position],
            placed[position],
            floats["baseline"][position],
        )
        order.placed_quantity = floats["placed_quantity"][position]
        order.filled = floats["filled"][position]
        order.status = flags[position] >> 1
        order.closed_at = closed[position]
        end = start + event_counts[position]
        order.event_times = times[start:end]
        order.event_kinds = kinds[start:end]
        order.event_prices = prices[start:end]
        order.event_quantities = quantities[start:end]
        order.event_remaining = remaining[start:end]
        order.event_ids = event_ids[start:end]
        start = end
        _add_decoded(book, order)
    heapq.heapify(book._expiring)
    _decode_history(book, cursor, table)
    return book, cursor.offset


def _median(values: list[float]) -> float:
    """``statistics.median`` of ``values`` (not empty), compiled: it runs for every order placed."""
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[middle])
    return float((ordered[middle - 1] + ordered[middle]) / 2)
