"""The packed repartition records' codec: its layout, and that it refuses what it did not write."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from riskengine.core import Side, Trade
from riskengine.core.execution_record import (
    FORMAT,
    Execution,
    ExecutionRecordError,
    Marker,
    execution_value,
    idle_marker_value,
    marker_value,
    read_record,
)
from riskengine.core.models import RiskLevel
from riskengine.errors import CoreError

TRADE = Trade(
    trade_id="t-1",
    user_id="u-ü",
    customer_id="c-1",
    symbol="BTC/USDT",
    side=Side.SELL,
    quantity=0.5,
    price=43_000.0,
    notional=21_500.0,
    timestamp=1_767_225_600_000,
    exchange="X",
    order_type="LIMIT",
    risk_level=RiskLevel.HIGH,
)


def test_the_layout_is_little_endian_header_fields_then_length_prefixed_strings():
    value = execution_value(TRADE, 4, -7, "owner", None)
    assert value[:14] == struct.pack("<Bciq", FORMAT, b"E", 4, -7)
    timestamp, quantity, price, notional, side, level = struct.unpack_from("<qdddBB", value, 14)
    assert (timestamp, quantity, price, notional) == (1_767_225_600_000, 0.5, 43_000.0, 21_500.0)
    assert (side, level) == (list(Side).index(Side.SELL), 1 + list(RiskLevel).index(RiskLevel.HIGH))
    strings = value[14 + 34 :]
    assert strings.startswith(b"\x03\x00t-1\x04\x00u-\xc3\xbc")
    # counterparty and order id absent, the owner, the pair absent
    assert strings.endswith(b"\xff\xff\xff\xff\x05\x00owner\xff\xff")
    assert marker_value(2, 9) == struct.pack("<Bciq", FORMAT, b"P", 2, 9)
    assert idle_marker_value(2, 9) == struct.pack("<Bciq", FORMAT, b"I", 2, 9)


def test_each_record_reads_back_as_written():
    pair = ("owner", "a|b")
    assert read_record(execution_value(TRADE, 4, -7, *pair)) == Execution(TRADE, 4, -7, *pair)
    assert read_record(execution_value(TRADE, 0, 0)) == Execution(TRADE, 0, 0)
    assert read_record(marker_value(5, -5_000)) == Marker(5, -5_000)
    assert read_record(idle_marker_value(1, 2**63 - 1)) == Marker(1, None, 2**63 - 1)


def test_codes_out_of_range_and_missing_required_fields_are_refused_by_name():
    value = bytearray(execution_value(TRADE, 1, 2))
    value[14 + 32] = len(Side)
    with pytest.raises(ExecutionRecordError, match="side or risk level"):
        read_record(bytes(value))
    value = bytearray(execution_value(TRADE, 1, 2))
    value[14 + 33] = len(RiskLevel) + 1
    with pytest.raises(ExecutionRecordError, match="side or risk level"):
        read_record(bytes(value))
    # tradeId replaced by a None
    header = execution_value(TRADE, 1, 2)[: 14 + 34]
    rest = execution_value(TRADE, 1, 2)[14 + 34 + 2 + 3 :]
    with pytest.raises(ExecutionRecordError, match="required"):
        read_record(header + b"\xff\xff" + rest)
    # the pair (the last string) with a byte that is no UTF-8
    broken = execution_value(TRADE, 1, 2, "o", "p")
    with pytest.raises(ExecutionRecordError, match="not UTF-8"):
        read_record(broken[:-1] + b"\xff")
    with pytest.raises(ExecutionRecordError, match="unknown kind"):
        read_record(struct.pack("<Bciq", FORMAT, b"Z", 1, 2))


@given(st.binary(max_size=200))
def test_any_bytes_give_a_record_or_the_codecs_own_error(data: bytes):
    for value in (data, bytes([FORMAT]) + b"E" + data, execution_value(TRADE, 1, 2)[: len(data)]):
        try:
            record = read_record(value)
        except ExecutionRecordError as exc:
            assert isinstance(exc, CoreError)
        else:
            assert isinstance(record, Execution | Marker)
