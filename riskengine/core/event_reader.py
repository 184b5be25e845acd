"""The two input events read straight from their Avro bodies, for the common case.

Every trade and order event is decoded on the hot path. The general way (fastavro into a dict of
camelCase fields, then :func:`~riskengine.core.models.parse_trade` or
:func:`~riskengine.core.models.parse_order_event` on it) took 10-11 us per event; these readers
take the body as written with this process's own ``riskengine.CryptoTrade`` or
``riskengine.OrderEvent`` schema and build the event in one pass.

They only ever accept: any body they do not read as a valid event (truncated, trailing bytes, an
index out of range, a field the parsers would reject, ...) gives None, and the caller takes the
general way, which names what is wrong. So a result, when there is one, is the event the general
way would build from the same bytes (``tests/unit/core/test_event_reader.py`` checks that on
generated, mutated and extreme bodies, and the field layout against the schema files).

Avro's binary encoding: a record is its fields in order; ``long`` and ``int`` are zig-zag varints;
``string`` a length and UTF-8 bytes; ``double`` 8 bytes little-endian; an enum its symbol's index;
a union its branch's index, then the value.
"""

from __future__ import annotations

import struct
from typing import Final

from riskengine.errors import CoreError

from .models import (
    MAX_ID_LENGTH,
    MAX_NOTIONAL,
    MAX_PRICE,
    MAX_QUANTITY,
    MAX_TIMESTAMP_MS,
    MIN_POSITIVE,
    MIN_TIMESTAMP_MS,
    NOTIONAL_TOLERANCE,
    OrderEvent,
    OrderEventType,
    RiskLevel,
    Side,
    Trade,
    is_symbol,
)

#: The enums' symbols in their schemas' order (pinned against the schema files by the test).
SIDES: Final = tuple(Side)
RISK_LEVELS: Final = tuple(RiskLevel)
ORDER_EVENT_TYPES: Final = tuple(OrderEventType)

_THREE_DOUBLES: Final = struct.Struct("<3d")
#: A varint longer than this is no 64-bit long.
_MAX_VARINT_BYTES: Final = 10


class _Unread(CoreError):
    """The body is not read here (the general way decides what it is); never leaves this module."""


class _Body:
    """A cursor over one Avro body."""

    def __init__(self, data: bytes, position: int) -> None:
        self.data = data
        self.position = position

    def long(self) -> int:
        data = self.data
        position = self.position
        end = len(data)
        shift = 0
        value = 0
        while True:
            if position >= end or shift >= 7 * _MAX_VARINT_BYTES:
                raise _Unread
            byte = data[position]
            position += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
        self.position = position
        return (value >> 1) ^ -(value & 1)

    def identifier(self) -> str:
        """A string the parsers take as an id: non-empty, no surrounding spaces, not too long."""
        length = self.long()
        start = self.position
        end = start + length
        if length <= 0 or end > len(self.data):
            raise _Unread
        try:
            text = self.data[start:end].decode()
        except UnicodeDecodeError:
            raise _Unread from None
        if len(text) > MAX_ID_LENGTH or text.strip() != text:
            raise _Unread
        self.position = end
        return text

    def present(self) -> bool:
        """The branch of a ``["null", T]`` union: whether a T follows."""
        branch = self.long()
        if branch not in (0, 1):
            raise _Unread
        return branch == 1

    def optional_identifier(self) -> str | None:
        return self.identifier() if self.present() else None

    def symbol(self) -> str:
        """A ``BASE/QUOTE`` symbol."""
        text = self.identifier()
        if not is_symbol(text):
            raise _Unread
        return text

    def index(self, size: int) -> int:
        """An enum's index among ``size`` symbols."""
        value = self.long()
        if not 0 <= value < size:
            raise _Unread
        return value

    def three_doubles(self) -> tuple[float, float, float]:
        start = self.position
        if start + 24 > len(self.data):
            raise _Unread
        self.position = start + 24
        first, second, third = _THREE_DOUBLES.unpack_from(self.data, start)
        return first, second, third

    def timestamp(self) -> int:
        value = self.long()
        if not MIN_TIMESTAMP_MS <= value <= MAX_TIMESTAMP_MS:
            raise _Unread
        return value

    def finish(self) -> None:
        if self.position != len(self.data):
            raise _Unread


def _positive(value: float, high: float) -> bool:
    # False for NaN too.
    return MIN_POSITIVE <= value <= high


def read_trade(data: bytes, start: int) -> Trade | None:
    """The :class:`Trade` in the ``CryptoTrade`` body at ``data[start:]``; None: take the general way."""
    body = _Body(data, start)
    try:
        trade_id = body.identifier()
        user_id = body.identifier()
        customer_id = body.identifier()
        symbol = body.symbol()
        side = SIDES[body.index(len(SIDES))]
        quantity, price, notional = body.three_doubles()
        if not (
            _positive(quantity, MAX_QUANTITY)
            and _positive(price, MAX_PRICE)
            and _positive(notional, MAX_NOTIONAL)
            and abs(notional - quantity * price) <= NOTIONAL_TOLERANCE * notional
        ):
            return None
        timestamp = body.timestamp()
        exchange = body.identifier()
        order_type = body.identifier()
        risk_level = RISK_LEVELS[body.index(len(RISK_LEVELS))] if body.present() else None
        counterparty = body.optional_identifier()
        order_id = body.optional_identifier()
        body.finish()
    except _Unread:
        return None
    return Trade(
        trade_id=trade_id,
        user_id=user_id,
        customer_id=customer_id,
        symbol=symbol,
        side=side,
        quantity=quantity,
        price=price,
        notional=notional,
        timestamp=timestamp,
        exchange=exchange,
        order_type=order_type,
        risk_level=risk_level,
        counterparty_user_id=counterparty,
        order_id=order_id,
    )


def read_order_event(data: bytes, start: int) -> OrderEvent | None:
    """The :class:`OrderEvent` in the ``OrderEvent`` body at ``data[start:]``; None: take the general
    way."""
    body = _Body(data, start)
    try:
        event_id = body.identifier()
        order_id = body.identifier()
        user_id = body.identifier()
        symbol = body.symbol()
        side = SIDES[body.index(len(SIDES))]
        event_type = ORDER_EVENT_TYPES[body.index(len(ORDER_EVENT_TYPES))]
        price, quantity, remaining = body.three_doubles()
        if not (
            _positive(price, MAX_PRICE)
            and _positive(quantity, MAX_QUANTITY)
            and -MAX_QUANTITY <= remaining <= MAX_QUANTITY
        ):
            return None
        timestamp = body.timestamp()
        exchange = body.optional_identifier()
        body.finish()
    except _Unread:
        return None
    return OrderEvent(
        event_id=event_id,
        order_id=order_id,
        user_id=user_id,
        symbol=symbol,
        side=side,
        event_type=event_type,
        price=price,
        quantity=quantity,
        remaining_quantity=remaining,
        timestamp=timestamp,
        exchange=exchange,
    )
