"""The state table's envelope: round trip, the migrations from older layouts, pending pruning."""

import struct

import pytest

from riskengine.core import (
    DEFAULT_RULES,
    EMPTY_REFERENCE,
    Side,
    Trade,
    UserState,
    decode_state,
    encode_state,
    evaluate_trade,
)
from riskengine.worker.tables.user_state import (
    ALERT,
    ANALYZED,
    MAX_PENDING,
    ORDERS,
    TRADES,
    Envelope,
    EnvelopeError,
    Pending,
    decode_envelope,
    encode_envelope,
    with_pending,
)


def a_state() -> UserState:
    trade = Trade(
        "t1", "u1", "c1", "BTC/USDT", Side.BUY, 1.0, 50_000.0, 50_000.0, 1_764_000_000_000, "X", "LIMIT"
    )
    return evaluate_trade(UserState(), trade, EMPTY_REFERENCE, DEFAULT_RULES).state


def test_envelope_round_trip_keeps_state_offsets_and_outputs():
    state = a_state()
    pending = (
        Pending(TRADES, 7, ((ANALYZED, b"analyzed"), (ALERT, b"alert"))),
        Pending(ORDERS, 7, ((ALERT, b"spoofing"),)),
        Pending(TRADES, 9, ((ANALYZED, b"x"),)),
    )
    envelope = Envelope(3, (9, 12), encode_state(state), pending)
    decoded = decode_envelope(encode_envelope(envelope))
    assert decoded == envelope
    assert decode_state(decoded.state) == state
    assert decoded.applied(TRADES, 3, 9) and decoded.applied(TRADES, 3, 2) and decoded.applied(ORDERS, 3, 12)
    assert not decoded.applied(TRADES, 3, 10) and not decoded.applied(ORDERS, 3, 13)
    assert not decoded.applied(TRADES, 4, 1)
    assert decoded.pending_for(TRADES, 7) == pending[0] and decoded.pending_for(ORDERS, 7) == pending[1]
    assert decoded.pending_for(TRADES, 8) is None


def test_a_bare_core_state_migrates_to_an_envelope_without_position():
    raw = encode_state(a_state())
    envelope = decode_envelope(raw)
    assert (envelope.partition, envelope.offsets, envelope.pending) == (-1, (-1, -1), ())
    assert decode_state(envelope.state) == a_state()
    assert not envelope.applied(TRADES, 0, 0)


def test_a_version_1_envelope_reads_as_trades_only():
    # Layout 1: magic 0xE1, partition, one offset (trades), pending entries without a source.
    state = encode_state(a_state())
    version_1 = (
        struct.pack("<BiqH", 0xE1, 3, 41, 1)
        + struct.pack("<qH", 41, 1)
        + struct.pack("<BI", ANALYZED, 3)
        + b"abc"
        + state
    )
    envelope = decode_envelope(version_1)
    assert envelope == Envelope(3, (41, -1), state, (Pending(TRADES, 41, ((ANALYZED, b"abc"),)),))
    assert envelope.applied(TRADES, 3, 41) and not envelope.applied(ORDERS, 3, 0)


@pytest.mark.parametrize("raw", [b"", b"\xff\x00", b"\xe1\x00\x00", b"\xe2\x00\x00\x00"])
def test_unknown_or_truncated_values_are_rejected(raw):
    with pytest.raises(EnvelopeError):
        decode_envelope(raw)


def test_pending_drops_delivered_entries_per_source_and_is_bounded():
    entries = tuple(Pending(TRADES, n, ((ANALYZED, b"a"),)) for n in range(5)) + tuple(
        Pending(ORDERS, n, ((ALERT, b"a"),)) for n in range(5)
    )
    kept = with_pending(entries, Pending(TRADES, 5, ()), undelivered=(3, 1))
    assert [(p.source, p.offset) for p in kept] == [(0, 3), (0, 4), (1, 1), (1, 2), (1, 3), (1, 4), (0, 5)]
    assert with_pending(entries, None, undelivered=(None, None)) == entries
    many = tuple(Pending(TRADES, n, ()) for n in range(MAX_PENDING + 10))
    assert len(with_pending(many, Pending(TRADES, 999, ()), undelivered=(None, None))) == MAX_PENDING
