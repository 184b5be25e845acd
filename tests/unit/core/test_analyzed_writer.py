"""The hand-written RiskAnalyzedTrade writer produces exactly fastavro's bytes for the schema files."""

import dataclasses
import io
import itertools
from typing import Any

import fastavro
from hypothesis import given, settings
from hypothesis import strategies as st

from riskengine.contracts.avro_codec import SchemaCache
from riskengine.contracts.schema_files import expanded_schema
from riskengine.core import (
    BehavioralAnalysis,
    MarketImpactAnalysis,
    PatternType,
    ReferenceData,
    RiskAnalyzedTrade,
    RiskLevel,
    Rules,
    ScoreBreakdown,
    Side,
    Trade,
    UserState,
    VolumeAnalysis,
    evaluate_trade,
)
from riskengine.core.analyzed_writer import analyzed_body, trade_body
from riskengine_devtools.bench_core import build_stream

ANALYZED_SCHEMA = fastavro.parse_schema(expanded_schema("RiskAnalyzedTrade"))
TRADE_SCHEMA = fastavro.parse_schema(expanded_schema("CryptoTrade"))


def fastavro_body(schema: Any, record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, record)
    return out.getvalue()


def analyzed_trades(count: int) -> list[RiskAnalyzedTrade]:
    """What the core makes of the bench generator's stream (every seed pattern fires in it)."""
    stream = build_stream(500, count, 11)
    reference = ReferenceData(profiles=stream.reference.profiles)
    rules = Rules.default()
    states: dict[str, UserState] = {}
    analyzed = []
    for number, trade in enumerate(itertools.islice(iter(stream), count)):
        evaluation = evaluate_trade(states.get(trade.user_id) or UserState(), trade, reference, rules)
        states[trade.user_id] = evaluation.state
        stamped = None if number % 3 == 0 else 1_764_000_000_000 + number
        analyzed.append(evaluation.analyzed._replace(processed_at=stamped))
    return analyzed


def test_the_cores_analyzed_trades_encode_exactly_as_fastavro_does():
    analyzed = analyzed_trades(4000)
    # The sample must reach the writer's branches, or the comparison proves little.
    assert any(a.triggered_patterns for a in analyzed)
    assert any(a.behavioral.matched_patterns for a in analyzed)
    assert any(a.compliance_flags for a in analyzed)
    assert any(a.mitigation_actions for a in analyzed)
    assert any(a.market_impact.reference_price is None for a in analyzed)
    assert any(a.market_impact.reference_price is not None for a in analyzed)
    for item in analyzed:
        assert analyzed_body(item) == fastavro_body(ANALYZED_SCHEMA, item.to_record())
        assert trade_body(item.trade) == fastavro_body(TRADE_SCHEMA, item.trade.to_record())


def test_the_enums_it_writes_follow_the_contracts_symbol_order():
    # The writer numbers Side, RiskLevel and PatternType by the core's declaration order.
    for enum, name in ((Side, "Side"), (RiskLevel, "RiskLevel"), (PatternType, "PatternType")):
        assert [member.value for member in enum] == expanded_schema(name)["symbols"]


texts = st.text(min_size=1, max_size=40).filter(lambda text: text.strip() == text)
finite = st.floats(allow_nan=False, allow_infinity=False)
longs = st.integers(min_value=-(2**63), max_value=2**63 - 1)
ints = st.integers(min_value=-(2**31), max_value=2**31 - 1)
patterns = st.lists(st.sampled_from(list(PatternType)), max_size=4).map(tuple)
trades = st.builds(
    Trade,
    trade_id=texts,
    user_id=texts,
    customer_id=texts,
    symbol=texts,
    side=st.sampled_from(list(Side)),
    quantity=finite,
    price=finite,
    notional=finite,
    timestamp=longs,
    exchange=texts,
    order_type=texts,
    risk_level=st.none() | st.sampled_from(list(RiskLevel)),
    counterparty_user_id=st.none() | texts,
    order_id=st.none() | texts,
)
analyzed_values = st.builds(
    RiskAnalyzedTrade,
    trade=trades,
    risk_score=finite,
    final_risk_level=st.sampled_from(list(RiskLevel)),
    triggered_patterns=patterns,
    volume=st.builds(VolumeAnalysis, finite, finite, finite, finite, finite, ints, st.booleans()),
    behavioral=st.builds(
        BehavioralAnalysis, patterns, ints, ints, st.booleans(), st.lists(st.text(max_size=20)).map(tuple)
    ),
    market_impact=st.builds(
        MarketImpactAnalysis,
        finite,
        finite,
        st.none() | finite,
        st.booleans(),
        finite,
        st.none() | finite,
        st.none() | ints,
    ),
    compliance_flags=st.lists(texts, max_size=3).map(tuple),
    mitigation_actions=st.lists(texts, max_size=3).map(tuple),
    breakdown=st.builds(
        ScoreBreakdown, finite, finite, finite, finite, st.dictionaries(texts, finite, max_size=5)
    ),
    rule_version=longs,
    processed_at=st.none() | longs,
)


@settings(max_examples=300, deadline=None)
@given(analyzed_values)
def test_any_analyzed_trade_encodes_exactly_as_fastavro_does(analyzed):
    assert analyzed_body(analyzed) == fastavro_body(ANALYZED_SCHEMA, analyzed.to_record())


@settings(max_examples=100, deadline=None)
@given(analyzed_values, longs)
def test_a_processed_at_given_is_written_as_if_the_record_held_it(analyzed, processed_at):
    stamped = analyzed._replace(processed_at=processed_at)
    assert analyzed_body(analyzed, None, processed_at) == fastavro_body(ANALYZED_SCHEMA, stamped.to_record())


def catalog(trade_id: int) -> SchemaCache:
    cache = SchemaCache()
    cache.add(trade_id, expanded_schema("CryptoTrade"), writes="CryptoTrade")
    cache.add(21, expanded_schema("RiskAnalyzedTrade"), writes="RiskAnalyzedTrade")
    return cache


def test_the_trade_message_body_becomes_original_trade_when_written_with_the_same_schema():
    cache = catalog(7)
    analyzed = analyzed_trades(50)[-1]
    message = cache.encode("CryptoTrade", analyzed.trade.to_record())
    # A body that differs from re-encoding shows that it was spliced, not re-encoded.
    marked = message[:5] + trade_body(dataclasses.replace(analyzed.trade, order_id="o-spliced"))
    encoded = cache.encode_analyzed(analyzed, marked)
    assert encoded == cache.encode("RiskAnalyzedTrade", analyzed.to_record()).replace(
        trade_body(analyzed.trade), marked[5:]
    )
    assert cache.decode(encoded, "RiskAnalyzedTrade")["originalTrade"]["orderId"] == "o-spliced"


def test_a_trade_written_with_another_schema_is_re_encoded():
    cache = catalog(7)
    cache.add(8, expanded_schema("CryptoTrade"))  # the same text under another id: not spliced
    analyzed = analyzed_trades(50)[-1]
    other_writer = b"\x00\x00\x00\x00\x08" + b"not the trade's body"
    assert cache.encode_analyzed(analyzed, other_writer) == cache.encode(
        "RiskAnalyzedTrade", analyzed.to_record()
    )
    assert cache.encode_analyzed(analyzed) == cache.encode("RiskAnalyzedTrade", analyzed.to_record())
