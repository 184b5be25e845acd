"""The repartition records: packed, read back as written, the JSON format before them still read."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from riskengine.core.models import RiskLevel
from riskengine.worker import repartition
from riskengine.worker.repartition import (
    Execution,
    Marker,
    RepartitionError,
    decode,
    execution_value,
    idle_marker_value,
    marker_value,
)
from riskengine_devtools.bench_core import build_stream


def _json_execution(
    trade: Any, source: int, promise: int, owner: str | None = None, pair: str | None = None
) -> bytes:
    """An execution as the JSON format before the packed one wrote it."""
    document: dict[str, Any] = {"trade": trade.to_record(), "source": source, "promise": promise}
    if pair is not None:
        document["owner"] = owner
        document["pair"] = pair
    return json.dumps(document, separators=(",", ":")).encode()


def test_a_packed_execution_reads_back_as_the_json_one_did_for_every_generated_trade():
    trades = [
        # Every risk level, and none, across the run.
        dataclasses.replace(trade, risk_level=(None, *RiskLevel)[number % 5])
        for number, trade in zip(range(3_000), build_stream(500, 3_000), strict=False)
    ]
    assert any(trade.counterparty_user_id for trade in trades) and any(trade.risk_level for trade in trades)
    for number, trade in enumerate(trades):
        pair = ("owner-ü", "c-1|c-2") if number % 3 == 0 else ()
        args = (trade, number % 6, trade.timestamp - 5_000, *pair)
        packed = execution_value(*args)
        assert packed[0] == repartition.FORMAT
        assert decode(packed) == decode(_json_execution(*args))


def test_markers_read_back_including_negative_promises_and_idle_ones():
    assert decode(marker_value(5, -5_000)) == Marker(5, -5_000)
    assert decode(marker_value(0, 1_767_225_600_000)) == Marker(0, 1_767_225_600_000)
    assert decode(idle_marker_value(2, 1_234)) == Marker(2, None, 1_234)
    assert decode(idle_marker_value(2, 2**63 - 1)) == Marker(2, None, 2**63 - 1)
    # The JSON records an older worker wrote (pending outputs re-sent as stored): an idle one says
    # no end, which counts as 0 (trusted only while its trades partition is empty).
    assert decode(b'{"source":3,"promise":7}') == Marker(3, 7)
    assert decode(b'{"source":3,"idle":true}') == Marker(3, None, 0)


def test_a_truncated_or_padded_packed_record_is_refused():
    trade = next(iter(build_stream(10, 10)))
    packed = execution_value(trade, 1, 2, "o", "p")
    assert isinstance(decode(packed), Execution)
    for broken in (
        packed[:-1],
        packed + b"x",
        packed[:20],
        marker_value(1, 2) + b"\x00",
        b"\x01Z" + packed[2:],
    ):
        with pytest.raises(RepartitionError):
            decode(broken)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_give_a_record_or_a_repartition_error(data: bytes):
    with contextlib.suppress(RepartitionError):
        decode(data)
    with pytest.raises(RepartitionError):
        decode(bytes([repartition.FORMAT]) + b"E" + data[:10])
