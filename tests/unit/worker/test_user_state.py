"""The state table's envelope: round trip, the migration from bare core states, pending pruning."""

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


def test_envelope_round_trip_keeps_state_offset_and_outputs():
    state = a_state()
    pending = (Pending(7, ((ANALYZED, b"analyzed"), (ALERT, b"alert"))), Pending(9, ((ANALYZED, b"x"),)))
    envelope = Envelope(3, 9, encode_state(state), pending)
    decoded = decode_envelope(encode_envelope(envelope))
    assert decoded == envelope
    assert decode_state(decoded.state) == state
    assert decoded.applied(3, 9) and decoded.applied(3, 2)
    assert not decoded.applied(3, 10) and not decoded.applied(4, 1)
    assert decoded.pending_for(7) == pending[0] and decoded.pending_for(8) is None


def test_a_bare_core_state_migrates_to_an_envelope_without_position():
    raw = encode_state(a_state())
    envelope = decode_envelope(raw)
    assert (envelope.partition, envelope.offset, envelope.pending) == (-1, -1, ())
    assert decode_state(envelope.state) == a_state()
    assert not envelope.applied(0, 0)


@pytest.mark.parametrize("raw", [b"", b"\xff\x00", b"\xe1\x00\x00"])
def test_unknown_or_truncated_values_are_rejected(raw):
    with pytest.raises(EnvelopeError):
        decode_envelope(raw)


def test_pending_drops_committed_entries_and_is_bounded():
    entries = tuple(Pending(n, ((ANALYZED, b"a"),)) for n in range(5))
    kept = with_pending(entries, Pending(5, ()), undelivered=3)
    assert [p.offset for p in kept] == [3, 4, 5]
    many = tuple(Pending(n, ()) for n in range(MAX_PENDING + 10))
    assert len(with_pending(many, Pending(999, ()), undelivered=None)) == MAX_PENDING
