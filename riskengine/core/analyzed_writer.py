"""The Avro body of a ``RiskAnalyzedTrade``, written straight from the core's model.

Every trade produces one analyzed trade, so its encoding is on the hot path. fastavro needs the
record as nested dicts (``to_record``) and dispatches on the schema for every field: about 25 µs
per analyzed trade, as much as the whole detection core. This writer is specialised to
``schemas/riskengine.RiskAnalyzedTrade.avsc`` and takes about a third of that interpreted; it lives
in the core so that it runs compiled with it (``make native``), like the event reader
(:mod:`.event_reader`), and takes the enums' symbol order from the core's models, which follow the
contract's:

- ``originalTrade`` is the incoming message's own Avro body when the trade was written with this
  process's ``CryptoTrade`` schema (Avro encodes a record as the concatenation of its fields, so the
  bytes are the same as re-encoding the decoded trade); otherwise the trade is encoded here;
- the fixed runs of doubles are packed with one ``struct`` call each.

Everything else (alerts, profiles, rules) goes through fastavro
(:mod:`riskengine.contracts.avro_codec`, which adds the wire-format header).
``tests/unit/core/test_analyzed_writer.py`` checks this writer byte for byte against fastavro and
the schema files, so a contract change that this module does not follow fails there.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from enum import StrEnum

from .models import PatternType, RiskAnalyzedTrade, RiskLevel, Side, Trade

_DOUBLE = struct.Struct("<d").pack
_TWO_DOUBLES = struct.Struct("<2d").pack
_THREE_DOUBLES = struct.Struct("<3d").pack
_FOUR_DOUBLES = struct.Struct("<4d").pack
_FIVE_DOUBLES = struct.Struct("<5d").pack
#: Zig-zag varints of 0..63 (the common small ints, counts and enum indexes).
_SMALL = [bytes([value << 1]) for value in range(64)]
_FALSE, _TRUE = b"\x00", b"\x01"
_NULL_BRANCH, _SECOND_BRANCH = b"\x00", b"\x02"
_EMPTY_BLOCK = b"\x00"


def _symbol_indexes(enum: type[StrEnum]) -> dict[str, bytes]:
    """Each symbol of ``enum`` (declared in the contract's order) -> its encoded index."""
    return {str(symbol): _long(index) for index, symbol in enumerate(enum)}


def _long(value: int) -> bytes:
    """Avro ``int``/``long``: zig-zag, then a little-endian base-128 varint."""
    if 0 <= value < 64:
        return _SMALL[value]
    number = (value << 1) ^ (value >> 63)
    out = bytearray()
    while number > 0x7F:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


def _string(value: str) -> bytes:
    data = value.encode()
    return _long(len(data)) + data


def _optional_string(value: str | None) -> bytes:
    return _NULL_BRANCH if value is None else _SECOND_BRANCH + _string(value)


def _block(items: list[bytes]) -> bytes:
    """An Avro array or map of encoded ``items``: one block (count, items), then the empty block."""
    if not items:
        return _EMPTY_BLOCK
    return _long(len(items)) + b"".join(items) + _EMPTY_BLOCK


def _strings(values: Iterable[str]) -> bytes:
    return _block([_string(value) for value in values])


_SIDES = _symbol_indexes(Side)
_RISK_LEVELS = _symbol_indexes(RiskLevel)
_PATTERNS = _symbol_indexes(PatternType)


def _patterns(values: Iterable[str]) -> bytes:
    return _block([_PATTERNS[value] for value in values])


def trade_body(trade: Trade) -> bytes:
    """The Avro body of ``trade`` as a ``CryptoTrade``."""
    level = trade.risk_level
    return b"".join(
        (
            _string(trade.trade_id),
            _string(trade.user_id),
            _string(trade.customer_id),
            _string(trade.symbol),
            _SIDES[trade.side],
            _THREE_DOUBLES(trade.quantity, trade.price, trade.notional),
            _long(trade.timestamp),
            _string(trade.exchange),
            _string(trade.order_type),
            _NULL_BRANCH if level is None else _SECOND_BRANCH + _RISK_LEVELS[level],
            _optional_string(trade.counterparty_user_id),
            _optional_string(trade.order_id),
        )
    )


def analyzed_body(
    analyzed: RiskAnalyzedTrade, original_trade: bytes | None = None, processed_at: int | None = None
) -> bytes:
    """The Avro body of ``analyzed``; ``original_trade``: the trade's own ``CryptoTrade`` body, if known;
    ``processed_at``: written in place of ``analyzed.processed_at`` when given (the worker stamps it
    here rather than copying the record)."""
    volume = analyzed.volume
    behavioral = analyzed.behavioral
    impact = analyzed.market_impact
    breakdown = analyzed.breakdown
    reference_price = impact.reference_price
    if processed_at is None:
        processed_at = analyzed.processed_at
    return b"".join(
        (
            trade_body(analyzed.trade) if original_trade is None else original_trade,
            _DOUBLE(analyzed.risk_score),
            _RISK_LEVELS[analyzed.final_risk_level],
            _patterns(analyzed.triggered_patterns),
            _FIVE_DOUBLES(
                volume.notional,
                volume.z_score,
                volume.percentile_rank,
                volume.mean_notional,
                volume.std_notional,
            ),
            _long(volume.trades_in_window),
            _TRUE if volume.volume_spike else _FALSE,
            _patterns(behavioral.matched_patterns),
            _long(behavioral.trades_in_window),
            _long(behavioral.sells_in_window),
            _TRUE if behavioral.late_arrival else _FALSE,
            _strings(behavioral.early_signals),
            _TWO_DOUBLES(impact.liquidity_consumption, impact.price_deviation),
            _NULL_BRANCH if reference_price is None else _SECOND_BRANCH + _DOUBLE(reference_price),
            _TRUE if impact.large_order else _FALSE,
            _DOUBLE(impact.large_order_threshold),
            _NULL_BRANCH if impact.volatility is None else _SECOND_BRANCH + _DOUBLE(impact.volatility),
            _NULL_BRANCH
            if impact.market_context_as_of is None
            else _SECOND_BRANCH + _long(impact.market_context_as_of),
            _strings(analyzed.compliance_flags),
            _strings(analyzed.mitigation_actions),
            _FOUR_DOUBLES(
                breakdown.volume, breakdown.behavioral, breakdown.market_impact, breakdown.compliance
            ),
            _block([_string(name) + _DOUBLE(weight) for name, weight in breakdown.weights.items()]),
            _long(analyzed.rule_version),
            _long(analyzed.trade.timestamp),
            _NULL_BRANCH if processed_at is None else _SECOND_BRANCH + _long(processed_at),
        )
    )
