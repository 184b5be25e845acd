"""Fuzzing the Avro decoder (issue 15): whatever the bytes, a value or a :class:`DecodeError`.

Every decoding entry point of :class:`SchemaCache` gets arbitrary bytes, frames built from Avro's
own pieces (zig-zag varints up to 2**63, lengths of 2**60, strings, raw bytes) under known and
random schema ids, and valid frames truncated, overwritten or with a huge varint spliced in. Each
call must return or raise a ``DecodeError`` (an ``EventRejected``: one dead letter), within a time
and memory budget: a length that claims 2**60 bytes must be refused, not honoured. No registry:
the cache holds the engine's contracts under local ids.
"""

from __future__ import annotations

import copy
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from riskengine.contracts.avro_codec import DecodeError, SchemaCache
from riskengine.contracts.schema_files import expanded_schema
from riskengine.contracts.topics import RECORD_TOPICS
from riskengine.errors import EventRejected

from .test_avro_codec import ORDER_EVENT, TRADE

NAMES = tuple(RECORD_TOPICS)
#: CryptoTrade as a later producer writes it: decoding it as CryptoTrade goes through resolution.
NEWER_TRADE_ID = len(NAMES) + 1
#: Generous on purpose: a decode of these payloads takes well under a millisecond; a length that
#: is honoured (2**60 bytes) or a loop over a 2**60-item block would blow both by far.
TIME_BUDGET_S = 1.0
MEMORY_BUDGET_BYTES = 8 * 1024 * 1024


def newer_trade_schema() -> dict[str, Any]:
    """CryptoTrade with one optional field more."""
    schema = copy.deepcopy(expanded_schema("CryptoTrade"))
    schema["fields"].append({"name": "venueRegion", "type": ["null", "string"], "default": None})
    return schema


def engine_cache() -> SchemaCache:
    """Every contract under ids 1..8 (this process writes them), the newer CryptoTrade under 9."""
    cache = SchemaCache()
    for schema_id, name in enumerate(NAMES, start=1):
        cache.add(schema_id, expanded_schema(name), writes=name)
    cache.add(NEWER_TRADE_ID, newer_trade_schema())
    return cache


CACHE = engine_cache()
VALID_FRAMES = (
    CACHE.encode("CryptoTrade", TRADE),
    CACHE.encode("OrderEvent", ORDER_EVENT),
)


def zigzag(value: int) -> bytes:
    """``value`` as Avro writes an int or long: zig-zag, then 7 bits a byte, low bits first."""
    encoded = ((value << 1) ^ (value >> 63)) & (2**64 - 1)
    out = bytearray()
    while encoded >= 0x80:
        out.append(encoded & 0x7F | 0x80)
        encoded >>= 7
    out.append(encoded)
    return bytes(out)


def frame(schema_id: int, body: bytes) -> bytes:
    """The Confluent wire format: magic byte 0, the schema id (4 bytes, big-endian), the body."""
    return b"\x00" + schema_id.to_bytes(4, "big") + body


HUGE = st.sampled_from([2**31 - 1, 2**31, 2**32, 2**60, 2**62, 2**63 - 1, -(2**60), -(2**63)])
#: What an Avro body is made of: longs (lengths, counts, union and enum indexes), strings, raw bytes.
PIECE = st.one_of(
    HUGE.map(zigzag),
    st.integers(-(2**63), 2**63 - 1).map(zigzag),
    st.integers(-3, 40).map(zigzag),
    st.text(max_size=12).map(lambda text: zigzag(len(text.encode())) + text.encode()),
    st.binary(max_size=12),
)
SCHEMA_ID = st.one_of(st.integers(1, NEWER_TRADE_ID), st.integers(0, 2**32 - 1))
BODY = st.lists(PIECE, max_size=30).map(b"".join)


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    """A valid frame truncated, with bytes overwritten, or with a huge varint spliced in."""
    payload = bytearray(draw(st.sampled_from(VALID_FRAMES)))
    at = draw(st.integers(0, len(payload)))
    how = draw(st.sampled_from(["truncate", "overwrite", "splice"]))
    if how == "truncate":
        return bytes(payload[:at])
    if how == "overwrite":
        patch = draw(st.binary(min_size=1, max_size=8))
        payload[at : at + len(patch)] = patch
        return bytes(payload)
    return bytes(payload[:at] + zigzag(draw(HUGE)) + payload[at:])


PAYLOADS = st.one_of(
    st.binary(max_size=300),
    st.builds(frame, SCHEMA_ID, BODY),
    st.builds(frame, SCHEMA_ID, st.binary(max_size=200)),
    mutated_frames(),
)


def decoders(cache: SchemaCache) -> list[Callable[[bytes], Any]]:
    """Every way a payload is decoded: as each contract, validated as a trade or an order event,
    and as written (``riskengine tail``)."""
    as_contract = [lambda payload, name=name: cache.decode(payload, name) for name in NAMES]
    return [*as_contract, cache.decode_trade, cache.decode_order_event, cache.decode_as_written]


def decode_or_reject(decode: Callable[[bytes], Any], payload: bytes) -> None:
    """Decode; only a DecodeError may escape, and within :data:`TIME_BUDGET_S`."""
    started = time.perf_counter()
    try:
        decode(payload)
    except DecodeError as exc:
        # The worker dead-letters an EventRejected with its reason header; nothing else is caught.
        assert isinstance(exc, EventRejected) and exc.reason
    elapsed = time.perf_counter() - started
    assert elapsed < TIME_BUDGET_S, f"{elapsed:.2f} s decoding {payload[:40]!r}"


def peak_allocations(decodes: list[Callable[[bytes], Any]], payload: bytes) -> list[int]:
    """For each of ``decodes``, the most memory (bytes) Python held at once while
    :func:`decode_or_reject` ran it on ``payload``."""
    # Traced only around the calls: tracing hypothesis's own work too would triple the time.
    tracemalloc.start()
    try:
        peaks = []
        for decode in decodes:
            tracemalloc.reset_peak()
            decode_or_reject(decode, payload)
            peaks.append(tracemalloc.get_traced_memory()[1])
        return peaks
    finally:
        tracemalloc.stop()


# deadline=None here and below: decode_or_reject's budget is the timing check (hypothesis's
# deadline would also count a first resolution's set-up and tracemalloc on a busy machine).
@settings(max_examples=400, deadline=None)
@given(payload=PAYLOADS)
def test_any_payload_decodes_or_is_rejected_quickly(payload):
    for decode in decoders(CACHE):
        decode_or_reject(decode, payload)


#: A RiskAlert (schema id 7) up to its evidence array: alertId "a", four enum or null-union
#: indexes 0, description "d", recommendedAction "r", timestamp 0.
ALERT_HEAD = b"\x02a\x00\x00\x00\x00\x02d\x02r\x00"
#: Frames whose lengths and counts claim far more than the payload holds.
CLAIMING_TOO_MUCH = st.one_of(
    st.builds(
        frame,
        st.integers(1, NEWER_TRADE_ID),
        st.lists(HUGE.map(zigzag), min_size=1, max_size=40).map(b"".join),
    ),
    st.builds(
        lambda payload, at, huge: payload[:at] + zigzag(huge) + payload[at:],
        st.sampled_from(VALID_FRAMES),
        st.integers(5, 60),
        HUGE,
    ),
)


@settings(max_examples=60, deadline=None)
@given(payload=CLAIMING_TOO_MUCH)
# A string length of 2**60 right after the header, and a block count of 2**60 in an array of
# strings (RiskAlert.evidence) whose items are then missing, in both of Avro's block forms.
@example(payload=frame(1, zigzag(2**60) + b"t-1"))
@example(payload=frame(7, ALERT_HEAD + zigzag(2**60)))
@example(payload=frame(7, ALERT_HEAD + zigzag(-(2**60)) + zigzag(2**60)))
def test_a_huge_length_is_refused_without_allocating_it(payload):
    peaks = peak_allocations(decoders(CACHE), payload)
    assert max(peaks) < MEMORY_BUDGET_BYTES, f"{peaks} bytes allocated decoding {payload[:40]!r}"


def test_the_memory_check_catches_a_decoder_that_honours_a_huge_length():
    """The check above can fail: a decoder allocating what a length claims (capped at 64 MiB) is seen."""

    def honours(payload: bytes) -> Any:
        return bytearray(min(int.from_bytes(payload[5:13], "big"), 64 * 1024 * 1024))

    assert peak_allocations([honours], frame(1, (2**60).to_bytes(8, "big")))[0] >= 64 * 1024 * 1024
