"""The per-user state: bounds, compact lossless encoding, format version and migration."""

from __future__ import annotations

import struct
import uuid

import pytest

from riskengine.core import (
    DEFAULT_RULES,
    FORMAT_VERSION,
    MIGRATIONS,
    StateFormatError,
    UserState,
    decode_state,
    encode_state,
    evaluate_trade,
)
from riskengine.core.rules import MAX_RECENT_TRADES, MAX_STRUCTURING_CANDIDATES
from riskengine.core.state import MAX_SYMBOLS

from .builders import HOUR, MINUTE, REFERENCE, SECOND, trade

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


def test_a_version_1_state_reads_with_an_empty_order_book():
    state = without_counterparties(busy_state(5, SECOND))
    current = encode_state(state)
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
    current = encode_state(state)
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
    current = encode_state(without_counterparties(busy_state(5, SECOND)))

    def from_zero(payload: bytes) -> bytes:
        # Pretend format 0 was format 1 with a leading marker byte after the version.
        assert payload[1:2] == b"\xff"
        return bytes([1]) + payload[2:]

    monkeypatch.setitem(MIGRATIONS, 0, from_zero)
    old = bytes([0, 0xFF]) + current[1 : -version_3_tail(decode_state(current)) - 4]
    assert decode_state(old) == decode_state(current)
