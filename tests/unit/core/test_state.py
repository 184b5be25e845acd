"""The per-user state: bounds, compact lossless encoding, format version and migration."""

from __future__ import annotations

import struct
import uuid
from pathlib import Path

import pytest

from riskengine.core import (
    DEFAULT_RULES,
    FORMAT_VERSION,
    MIGRATIONS,
    StateFormatError,
    UserState,
    decode_state,
    encode_state,
    evaluate_order,
    evaluate_trade,
)
from riskengine.core.order_book import _ROW, CANCELLED, OPEN, _encode_order
from riskengine.core.rules import MAX_RECENT_TRADES, MAX_STRUCTURING_CANDIDATES
from riskengine.core.state import MAX_SYMBOLS

from .builders import HOUR, MINUTE, REFERENCE, SECOND, order, order_flow_state, trade

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "ADA/USDT", "XRP/USDT"]


def busy_state(count: int, spacing_ms: int, notional=lambda i: 500.0 + 37.0 * (i % 50)) -> UserState:
    state = UserState()
    for i in range(count):
        item = trade(
            i * spacing_ms,
            "SELL" if i % 3 else "BUY",
            notional(i),
            symbol=SYMBOLS[i % len(SYMBOLS)],
            quantity=1.0 + i % 7,
            counterparty="u-2" if i % 4 == 0 else None,
            trade_id=str(uuid.uuid4()),  # 36-character ids, as real venues send
        )
        state = evaluate_trade(state, item, REFERENCE, DEFAULT_RULES).state
    return state


@pytest.mark.parametrize(
    ("label", "spacing"),
    [("1,000 trades over 24 h", 86 * SECOND), ("1,000 trades in 100 s", 100), ("1,000 in one ms", 0)],
)
def test_1000_trades_inside_the_window_encode_under_16_kb(label, spacing):
    state = busy_state(1_000, spacing, notional=lambda i: [8_500.0, 1_200.0, 40.0][i % 3])
    encoded = encode_state(state)
    assert len(encoded) < 16 * 1024, label
    assert decode_state(encoded) == state


def test_bounds_hold_for_a_long_busy_history():
    state = busy_state(3_000, 2 * SECOND, notional=lambda i: 9_000.0 if i % 2 else 100.0)
    assert len(state.recent) <= MAX_RECENT_TRADES
    assert len(state.structuring_times) <= MAX_STRUCTURING_CANDIDATES
    assert len(state.symbols) <= MAX_SYMBOLS
    assert len(state.day_buckets) <= 98
    assert state.sketch.total <= 1_024


def test_recent_window_is_pruned_by_event_time():
    state = busy_state(50, SECOND)
    # Far later trade: everything older than the horizon (5 min + 60 s lateness) leaves the window.
    state = evaluate_trade(state, trade(HOUR, trade_id="late-one"), REFERENCE, DEFAULT_RULES).state
    assert state.recent.ids == ["late-one"]


def test_symbols_beyond_the_bound_drop_the_least_recent():
    state = UserState()
    for i in range(MAX_SYMBOLS + 3):
        state = evaluate_trade(state, trade(i * MINUTE, symbol=f"C{i}/USDT"), REFERENCE, DEFAULT_RULES).state
    assert len(state.symbols) == MAX_SYMBOLS
    assert "C0/USDT" not in state.symbols and f"C{MAX_SYMBOLS + 2}/USDT" in state.symbols


def test_encoding_starts_with_the_format_version_and_is_lossless():
    state = busy_state(40, 3 * SECOND)
    encoded = encode_state(state)
    assert encoded[0] == FORMAT_VERSION
    decoded = decode_state(encoded)
    assert decoded == state
    assert encode_state(decoded) == encoded
    assert decode_state(encode_state(UserState())) == UserState()


def test_decoded_state_evaluates_exactly_like_the_original():
    state = busy_state(60, 5 * SECOND)
    copy = decode_state(encode_state(state))
    following = [trade(300 * SECOND + i * SECOND, "SELL", 1_000.0 * (i + 1)) for i in range(12)]
    for item in following:
        a = evaluate_trade(state, item, REFERENCE, DEFAULT_RULES)
        b = evaluate_trade(copy, item, REFERENCE, DEFAULT_RULES)
        assert a.analyzed == b.analyzed and a.alerts == b.alerts
    assert state == copy


def test_newer_and_broken_payloads_are_refused():
    encoded = encode_state(busy_state(5, SECOND))
    with pytest.raises(StateFormatError, match="newer"):
        decode_state(bytes([FORMAT_VERSION + 1]) + encoded[1:])
    with pytest.raises(StateFormatError, match="empty"):
        decode_state(b"")
    with pytest.raises(StateFormatError, match="truncated"):
        decode_state(encoded[:-3])
    with pytest.raises(StateFormatError, match="trailing"):
        decode_state(encoded + b"\x00")
    with pytest.raises(StateFormatError, match="no migration"):
        decode_state(b"\x00")


#: Version 3 appended the alert heat (16 bytes; none: 0.0 at -1) and the recent trades'
#: counterparties (a 2-byte length each, then the text; busy_state's trades have none).
NO_HEAT = struct.pack("<dq", 0.0, -1)


def version_3_tail(state: UserState) -> int:
    return 16 + 2 * len(state.recent) + sum(len(c.encode()) for c in state.recent.counterparties)


def without_counterparties(state: UserState) -> UserState:
    """What a state from before format 3 comes back as: no counterparty known."""
    state.recent.counterparties = [""] * len(state.recent)
    return state


def as_version_3(state: UserState) -> bytes:
    """``state``, whose order book is empty, in format 3: its empty order book was 4 zero bytes
    (format 4 writes 8: no orders, no history)."""
    current = encode_state(state)
    tail = version_3_tail(state)
    assert current[0] == 4 and current[-tail - 8 : -tail + 16] == bytes(8) + current[-tail:][:16]
    return bytes([3]) + current[1 : -tail - 8] + bytes(4) + current[-tail:]


def test_a_version_1_state_reads_with_an_empty_order_book():
    state = without_counterparties(busy_state(5, SECOND))
    current = as_version_3(state)
    tail = version_3_tail(state)
    # An empty order book is 4 zero bytes, then the alert heat.
    assert current[0] == 3 and current[-tail - 4 : -tail + 16] == bytes(4) + NO_HEAT
    # Version 1 was the version 2 layout without the order book section.
    version_1 = bytes([1]) + current[1 : -tail - 4]
    migrated = decode_state(version_1)
    assert migrated == decode_state(current)
    assert not migrated.orders


def test_a_version_2_state_reads_without_alert_heat_or_counterparties():
    state = busy_state(5, SECOND)
    state.alert_heat, state.alert_heat_at = 2.5, 1_000
    state.recent.counterparties = [f"cp-{i}" for i in range(len(state.recent))]
    current = as_version_3(state)
    tail = version_3_tail(state)
    assert current[-tail:][:16] == struct.pack("<dq", 2.5, 1_000)
    version_2 = bytes([2]) + current[1:-tail]
    migrated = decode_state(version_2)
    assert (migrated.alert_heat, migrated.alert_heat_at) == (0.0, -1)
    assert migrated.recent.counterparties == [""] * len(state.recent)
    migrated.alert_heat, migrated.alert_heat_at = 2.5, 1_000
    migrated.recent.counterparties = state.recent.counterparties
    assert migrated == decode_state(current)


def test_older_versions_go_through_the_migration_hook(monkeypatch):
    current = as_version_3(without_counterparties(busy_state(5, SECOND)))

    def from_zero(payload: bytes) -> bytes:
        # Pretend format 0 was format 1 with a leading marker byte after the version.
        assert payload[1:2] == b"\xff"
        return bytes([1]) + payload[2:]

    monkeypatch.setitem(MIGRATIONS, 0, from_zero)
    old = bytes([0, 0xFF]) + current[1 : -version_3_tail(decode_state(current)) - 4]
    assert decode_state(old) == decode_state(current)


#: A state with every part of the order book in use (builders.order_flow_state), written by the
#: format 3 encoder (the code before format 4, 28a6ca7): the order book as one string table and
#: packed columns.
FORMAT_3_STATE = Path(__file__).parent / "data" / "state-format-3.bin"


def test_a_version_3_state_with_an_order_book_reads_as_the_same_state():
    old = FORMAT_3_STATE.read_bytes()
    assert old[0] == 3
    expected = order_flow_state()
    assert len(expected.orders.orders) == 60 and expected.orders.issues and expected.orders.cycles
    migrated = decode_state(old)
    assert migrated == expected
    assert encode_state(migrated) == encode_state(expected)
    # The index by symbol is rebuilt too.
    assert migrated.orders.in_symbol("BTC/USDT", True) == expected.orders.in_symbol("BTC/USDT", True)


def test_an_order_is_encoded_again_only_when_it_changed():
    state = order_flow_state()
    decoded = decode_state(encode_state(state))
    rows = {key: order._encoded for key, order in decoded.orders.orders.items()}
    # Each decoded order keeps the exact bytes its row would be written as.
    assert all(row == _encode_order(decoded.orders.orders[key]) for key, row in rows.items())
    resting = next(o for o in decoded.orders.orders.values() if o.status == OPEN)
    cancel = order(
        60_000,
        "CANCELLED",
        resting.order_id,
        resting.side.value,
        resting.quantity,
        price=resting.price,
        symbol=resting.symbol,
        event_id="c-late",
    )
    changed = evaluate_order(decoded, cancel, REFERENCE, DEFAULT_RULES).state
    # Only the cancelled order lost its row; the state is written as if nothing had been cached.
    assert [key for key, o in changed.orders.orders.items() if o._encoded is None] == [resting.order_id]
    fresh = evaluate_order(order_flow_state(), cancel, REFERENCE, DEFAULT_RULES).state
    assert encode_state(changed) == encode_state(fresh)
    assert decode_state(encode_state(changed)).orders.orders[resting.order_id].status == CANCELLED


def test_a_corrupt_order_row_is_refused():
    data = encode_state(order_flow_state())
    first_row = data.index(b"o-000") - _ROW.size
    for corrupt in (
        data[:first_row] + bytes([0x07]) + data[first_row + 1 :],  # status 3
        data[: first_row + 1] + bytes([17]) + data[first_row + 2 :],  # 17 events
        data[: first_row + _ROW.size + 3],  # cut inside the order id
    ):
        with pytest.raises(StateFormatError):
            decode_state(corrupt)
