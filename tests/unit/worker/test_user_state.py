"""The state table's envelope: round trip, the migrations from older layouts, pending pruning; the
partitions' output journals."""

import random
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
    OutputJournal,
    Pending,
    decode_envelope,
    decode_journal,
    encode_envelope,
    encode_journal,
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


def test_pending_keeps_exactly_the_undelivered_entries_whatever_is_dropped():
    # with_pending skips its copy when nothing is dropped: both ways must give the definition.
    rng = random.Random(7)
    for _ in range(2_000):
        previous = tuple(
            Pending(rng.choice((TRADES, ORDERS)), rng.randrange(20), ())
            for _ in range(rng.choice((0, 1, 3, MAX_PENDING - 1, MAX_PENDING, MAX_PENDING + 2)))
        )
        entry = rng.choice((None, Pending(TRADES, 20, ((ANALYZED, b"a"),))))
        undelivered = (rng.choice((None, 0, 5, 19)), rng.choice((None, 0, 5, 19)))
        expected = [
            p for p in previous if undelivered[p.source] is None or p.offset >= (undelivered[p.source] or 0)
        ]
        if entry is not None:
            expected.append(entry)
        assert with_pending(previous, entry, undelivered) == tuple(expected[-MAX_PENDING:])


def a_journal() -> OutputJournal:
    journal = OutputJournal(4)
    journal.record(TRADES, 10, b"u-1", ((ANALYZED, b"analyzed"), (ALERT, b"alert")))
    journal.record(ORDERS, 3, b"u-2", ())  # applied, nothing sent
    journal.record(ORDERS, 5, "ü-3".encode(), ((ALERT, b"spoofing"),))
    journal.record(TRADES, 12, b"u-1", ((ANALYZED, b""),))
    return journal


def test_a_journal_round_trip_keeps_offsets_and_outputs_with_their_users():
    journal = a_journal()
    decoded = decode_journal(encode_journal(journal))
    assert decoded == journal
    assert decoded.offsets == [12, 5]
    assert decoded.entries[(ORDERS, 5)] == ("ü-3".encode(), ((ALERT, b"spoofing"),))
    assert (ORDERS, 3) not in decoded.entries  # nothing to send again
    assert decoded.covers(TRADES, 12) and decoded.covers(TRADES, 0) and decoded.covers(ORDERS, 3)
    assert not decoded.covers(TRADES, 13) and not decoded.covers(ORDERS, 6)
    assert not OutputJournal(4).covers(TRADES, 0)


def test_a_journal_drops_delivered_entries_per_source_and_those_of_written_users():
    everyone = {b"u-1", b"u-2", "ü-3".encode()}
    journal = a_journal()
    journal.prune((11, None), everyone)
    assert list(journal.entries) == [(ORDERS, 5), (TRADES, 12)]
    journal.prune((None, None), {b"u-1"})  # ü-3's state is written: its envelope has its outputs
    assert list(journal.entries) == [(TRADES, 12)]
    journal.prune((13, 6), everyone)
    assert journal.entries == {} and journal.offsets == [12, 5]  # still covers what it applied


@pytest.mark.parametrize("cut", [0, 1, 10, 26, 30, 45, -1])
def test_a_truncated_or_foreign_journal_is_rejected(cut):
    raw = encode_journal(a_journal())
    with pytest.raises(EnvelopeError):
        decode_journal(raw[:cut] if cut >= 0 else raw + b"x")
    with pytest.raises(EnvelopeError):
        decode_journal(encode_envelope(Envelope(1, (1, 1), b"")))


def test_a_journal_is_not_an_envelope():
    with pytest.raises(EnvelopeError, match="unknown table value format"):
        decode_envelope(encode_journal(a_journal()))
