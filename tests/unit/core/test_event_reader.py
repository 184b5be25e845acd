"""The core's readers of the two input events make of every body what the general way makes of it.

The general way is fastavro with the schema files, then :func:`parse_trade` or
:func:`parse_order_event`. On bodies fastavro writes from any record (valid or not), the reader
gives the same event, or None exactly when the general way refuses; on any other bytes (mutated,
truncated, extended) it gives the same event or None, never an event the general way would not.
"""

from __future__ import annotations

import io
import math
import random
import struct
from collections.abc import Callable
from typing import Any

import fastavro
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from riskengine.contracts.avro_codec import SchemaCache
from riskengine.contracts.schema_files import expanded_schema
from riskengine.core import (
    InvalidOrderEvent,
    InvalidTrade,
    OrderEvent,
    Trade,
    parse_order_event,
    parse_trade,
    read_order_event,
    read_trade,
)
from riskengine.core.event_reader import ORDER_EVENT_TYPES, RISK_LEVELS, SIDES
from riskengine.core.models import MAX_ID_LENGTH, MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS
from riskengine.producer.events import EventKind
from riskengine.producer.simulator import SimulationConfig, Simulator
from tests.unit.core.test_analyzed_writer import TRADE_SCHEMA, fastavro_body

ORDER_SCHEMA = fastavro.parse_schema(expanded_schema("OrderEvent"))
#: A wire-format header (magic byte, schema id 7): the readers start after it.
HEADER = b"\x00" + struct.pack(">I", 7)

Reader = Callable[[bytes, int], Trade | OrderEvent | None]
Parser = Callable[[Any], Trade | OrderEvent]


def general(schema: Any, parse: Parser, data: bytes) -> Trade | OrderEvent | None:
    """What fastavro and the parser make of ``data``: the event, or None when either refuses it."""
    stream = io.BytesIO(data)
    try:
        record = fastavro.schemaless_reader(stream, schema, None)
    except Exception:  # any refusal of the general way: the reader must refuse too
        return None
    if stream.tell() != len(data):
        return None
    try:
        return parse(record)
    except (InvalidTrade, InvalidOrderEvent):
        return None


KINDS: dict[str, tuple[Any, Parser, Reader]] = {
    "trade": (TRADE_SCHEMA, parse_trade, read_trade),
    "order": (ORDER_SCHEMA, parse_order_event, read_order_event),
}


def read(kind: str, data: bytes) -> Trade | OrderEvent | None:
    return KINDS[kind][2](HEADER + data, len(HEADER))


def expected(kind: str, data: bytes) -> Trade | OrderEvent | None:
    schema, parse, _ = KINDS[kind]
    return general(schema, parse, data)


def test_the_enums_are_read_in_the_schema_files_order() -> None:
    for values, name in ((SIDES, "Side"), (RISK_LEVELS, "RiskLevel"), (ORDER_EVENT_TYPES, "OrderEventType")):
        assert [value.value for value in values] == expanded_schema(name)["symbols"]


def simulated_records(trades: int) -> list[tuple[str, dict[str, Any]]]:
    """The simulator's venue (market makers, HFT, TWAP, retail, the scenarios): both kinds of record."""
    simulator = Simulator(SimulationConfig(seed=5, users=200))
    return [
        ("trade" if event.kind is EventKind.TRADE else "order", event.record)
        for event in simulator.events(trades)
    ]


def test_every_simulated_event_is_read_as_the_general_way_reads_it() -> None:
    records = simulated_records(2_000)
    kinds = {kind for kind, _ in records}
    assert kinds == {"trade", "order"}
    for kind, record in records:
        data = fastavro_body(KINDS[kind][0], record)
        event = read(kind, data)
        assert event is not None, record
        assert event == expected(kind, data)


ids = st.one_of(
    st.sampled_from(
        ["u-1", "BTC", "x" * MAX_ID_LENGTH, "x" * (MAX_ID_LENGTH + 1), "", " u-1", "u-1\n", "ünï"]
    ),
    st.text(max_size=8),
)
symbols = st.one_of(
    st.sampled_from(["BTC/USDT", "ETH/USDT", "BTCUSDT", "/USDT", "BTC/", "A/B/C", " BTC/USDT", "B/Q"]),
    st.text(max_size=6),
)
numbers = st.one_of(
    st.sampled_from(
        [0.0, -0.0, 1e-13, 1e-12, 1.0, 0.25, 43000.5, 1e9, 1e9 * (1 + 1e-15), 1e12, 1e15, 1e16, 1e300, -1.0]
    ),
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.floats(allow_nan=False, allow_infinity=False),
)
timestamps = st.one_of(
    st.sampled_from(
        [
            MIN_TIMESTAMP_MS - 1,
            MIN_TIMESTAMP_MS,
            1_733_300_000_000,
            MAX_TIMESTAMP_MS,
            MAX_TIMESTAMP_MS + 1,
            2**62,
        ]
    ),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
)


@st.composite
def trade_records(draw: st.DrawFn) -> dict[str, Any]:
    quantity, price = draw(numbers), draw(numbers)
    # Mostly a notional near quantity x price (within and past the 1 % tolerance), sometimes any.
    try:
        near = quantity * price * draw(st.sampled_from([1.0, 1.009, 0.991, 1.011, 0.98]))
    except OverflowError:
        near = math.inf
    return {
        "tradeId": draw(ids),
        "userId": draw(ids),
        "customerId": draw(ids),
        "symbol": draw(symbols),
        "side": draw(st.sampled_from(["BUY", "SELL"])),
        "quantity": quantity,
        "price": price,
        "notional": draw(st.one_of(st.just(near), numbers)),
        "timestamp": draw(timestamps),
        "exchange": draw(ids),
        "orderType": draw(ids),
        "riskLevel": draw(st.one_of(st.none(), st.sampled_from(["LOW", "MEDIUM", "HIGH", "CRITICAL"]))),
        "counterpartyUserId": draw(st.one_of(st.none(), ids)),
        "orderId": draw(st.one_of(st.none(), ids)),
    }


@st.composite
def order_records(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "eventId": draw(ids),
        "orderId": draw(ids),
        "userId": draw(ids),
        "symbol": draw(symbols),
        "side": draw(st.sampled_from(["BUY", "SELL"])),
        "eventType": draw(st.sampled_from(["PLACED", "AMENDED", "CANCELLED", "FILLED"])),
        "price": draw(numbers),
        "quantity": draw(numbers),
        "remainingQuantity": draw(numbers),
        "timestamp": draw(timestamps),
        "exchange": draw(st.one_of(st.none(), ids)),
    }


VALID_TRADE = {
    "tradeId": "t-1",
    "userId": "u-1",
    "customerId": "c-1",
    "symbol": "BTC/USDT",
    "side": "BUY",
    "quantity": 0.25,
    "price": 43000.5,
    "notional": 0.25 * 43000.5,
    "timestamp": 1_733_300_000_000,
    "exchange": "BINANCE",
    "orderType": "LIMIT",
    "riskLevel": "HIGH",
    "counterpartyUserId": "u-2",
    "orderId": "o-1",
}
VALID_ORDER = {
    "eventId": "e-1",
    "orderId": "o-1",
    "userId": "u-1",
    "symbol": "BTC/USDT",
    "side": "SELL",
    "eventType": "FILLED",
    "price": 43000.5,
    "quantity": 0.25,
    "remainingQuantity": 0.0,
    "timestamp": 1_733_300_000_000,
    "exchange": None,
}


@settings(max_examples=1500, deadline=None)
@given(trade_records())
@example({**VALID_TRADE, "quantity": 1e300, "notional": 1e300 * 43000.5})
@example({**VALID_TRADE, "price": math.nan})
@example({**VALID_TRADE, "timestamp": 2**62})
@example({**VALID_TRADE, "symbol": "BTC/USDT/X"})
@example({**VALID_TRADE, "tradeId": "t-1 "})
@example({**VALID_TRADE, "counterpartyUserId": ""})
def test_a_trade_body_is_read_exactly_as_the_general_way_reads_it(record: dict[str, Any]) -> None:
    data = fastavro_body(TRADE_SCHEMA, record)
    assert read("trade", data) == expected("trade", data)


@settings(max_examples=1500, deadline=None)
@given(order_records())
@example({**VALID_ORDER, "remainingQuantity": -1e15})
@example({**VALID_ORDER, "remainingQuantity": -1e16})
@example({**VALID_ORDER, "remainingQuantity": math.inf})
@example({**VALID_ORDER, "exchange": "x" * (MAX_ID_LENGTH + 1)})
def test_an_order_event_body_is_read_exactly_as_the_general_way_reads_it(record: dict[str, Any]) -> None:
    data = fastavro_body(ORDER_SCHEMA, record)
    assert read("order", data) == expected("order", data)


def test_the_examples_reach_both_outcomes() -> None:
    """The property tests above mean something only if both readings happen among the inputs."""
    assert read("trade", fastavro_body(TRADE_SCHEMA, VALID_TRADE)) is not None
    assert read("order", fastavro_body(ORDER_SCHEMA, VALID_ORDER)) is not None
    assert read("trade", fastavro_body(TRADE_SCHEMA, {**VALID_TRADE, "price": math.nan})) is None
    assert read("order", fastavro_body(ORDER_SCHEMA, {**VALID_ORDER, "remainingQuantity": -1e16})) is None


@settings(max_examples=1500, deadline=None)
@given(
    st.sampled_from(["trade", "order"]),
    st.lists(st.tuples(st.integers(min_value=0, max_value=200), st.integers(0, 255)), max_size=4),
    st.integers(min_value=-3, max_value=3),
    st.binary(max_size=12),
)
def test_bytes_that_are_not_a_written_body_are_never_read_as_another_event(
    kind: str, changes: list[tuple[int, int]], cut: int, tail: bytes
) -> None:
    """Overwritten bytes, a body cut short or extended, spliced varints: the reader gives the general
    way's event or None (then the general way names the fault), never an event of its own."""
    data = bytearray(fastavro_body(KINDS[kind][0], VALID_TRADE if kind == "trade" else VALID_ORDER))
    for position, value in changes:
        data[position % len(data)] = value
    mutated = bytes(data[: len(data) + cut] if cut < 0 else data + tail[:cut])
    event = read(kind, mutated)
    assert event is None or event == expected(kind, mutated)


@pytest.mark.parametrize(
    "kind, data",
    [
        # a varint of eleven bytes where the tradeId's length belongs
        ("trade", b"\x80" * 10 + b"\x01" + fastavro_body(TRADE_SCHEMA, VALID_TRADE)[1:]),
        # a length of 2**60 bytes
        ("trade", b"\x80\x80\x80\x80\x80\x80\x80\x80\x20" + b"t"),
        ("order", b""),
        ("order", fastavro_body(ORDER_SCHEMA, VALID_ORDER) + b"\x00"),
        ("order", fastavro_body(ORDER_SCHEMA, VALID_ORDER)[:-1]),
    ],
    ids=["long-varint", "huge-length", "empty", "trailing-byte", "truncated"],
)
def test_a_malformed_body_is_left_to_the_general_way(kind: str, data: bytes) -> None:
    assert read(kind, data) is None


def test_the_codec_reads_its_own_schemas_events_with_the_core_and_others_the_general_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The schema cache takes the readers for bodies of this process's own schema id only, and
    its results are the general way's on the simulator's events."""
    cache = SchemaCache()
    cache.add(7, expanded_schema("CryptoTrade"), writes="CryptoTrade")
    cache.add(8, expanded_schema("OrderEvent"), writes="OrderEvent")
    cache.add(9, expanded_schema("CryptoTrade"))
    calls: list[str] = []

    def counted(name: str, reader: Reader) -> Reader:
        def counting(data: bytes, start: int) -> Trade | OrderEvent | None:
            calls.append(name)
            return reader(data, start)

        return counting

    monkeypatch.setattr("riskengine.contracts.avro_codec.read_trade", counted("trade", read_trade))
    monkeypatch.setattr(
        "riskengine.contracts.avro_codec.read_order_event", counted("order", read_order_event)
    )
    rng = random.Random(3)
    for kind, record in simulated_records(300):
        if kind == "trade":
            own = b"\x00" + struct.pack(">I", 7) + fastavro_body(TRADE_SCHEMA, record)
            assert cache.decode_trade(own) == parse_trade(record)
            assert calls.pop() == "trade"
            if rng.random() < 0.2:
                other = b"\x00" + struct.pack(">I", 9) + fastavro_body(TRADE_SCHEMA, record)
                assert cache.decode_trade(other) == parse_trade(record)
                assert not calls
        else:
            own = b"\x00" + struct.pack(">I", 8) + fastavro_body(ORDER_SCHEMA, record)
            assert cache.decode_order_event(own) == parse_order_event(record)
            assert calls.pop() == "order"
