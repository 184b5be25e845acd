"""Property tests: bounds, determinism, replay, per-user independence, lossless state."""

from __future__ import annotations

import contextlib
import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from riskengine.core import (
    DEFAULT_RULES,
    EMPTY_REFERENCE,
    Evaluation,
    ReferenceData,
    RiskAlert,
    RiskAnalyzedTrade,
    Side,
    StateFormatError,
    Trade,
    UserProfile,
    UserState,
    decode_state,
    encode_state,
    evaluate_many,
    evaluate_trade,
    parse_trade,
)
from riskengine.core.models import MAX_NOTIONAL, MAX_PRICE, MIN_POSITIVE
from riskengine.core.rules import MAX_RECENT_TRADES, MAX_STRUCTURING_CANDIDATES
from riskengine.core.state import DAY_BUCKET_MS, DAY_MS, MAX_SYMBOLS

from .builders import T0

USERS = ["u-a", "u-b", "u-c"]
SYMBOLS = ["BTC/USDT", "ETH/USDT", "ADA/USDT", "SOL/USDT"]
REFERENCE = ReferenceData(
    profiles={
        "u-a": UserProfile("u-a", "c-1", 1, "DE"),
        "u-b": UserProfile("u-b", "c-1", 2, "IR", linked_accounts=frozenset({"u-a"})),
        "u-c": UserProfile("u-c", "c-3", 3, "KP", sanctioned=False),
    },
    sanctioned_countries=frozenset({"KP"}),
    restricted_countries=frozenset({"IR"}),
)


@st.composite
def trade_lists(draw, max_size=120, users=("u-a",)):
    """Trades with mostly increasing event times, jitter (late ones), repeats, bursts and gaps."""
    count = draw(st.integers(min_value=0, max_value=max_size))
    clock = T0
    trades = []
    for number in range(count):
        clock += draw(st.sampled_from([0, 1, 500, 5_000, 20_000, 61_000, 400_000, 3_600_000]))
        jitter = draw(st.sampled_from([0, 0, 0, 0, 30_000, 90_000, 7_200_000]))
        notional = draw(
            st.sampled_from([10.0, 999.0, 1_000.0, 1_500.0, 2_250.0, 8_500.0, 9_999.0, 150_000.0, 600_000.0])
        )
        quantity = draw(st.sampled_from([1.0, 0.95, 1.05, 2.0]))
        user = draw(st.sampled_from(users))
        trades.append(
            Trade(
                trade_id=f"{user}-{number}" if draw(st.integers(0, 20)) else f"{user}-{max(number - 1, 0)}",
                user_id=user,
                customer_id="c-1",
                symbol=draw(st.sampled_from(SYMBOLS)),
                side=draw(st.sampled_from([Side.BUY, Side.SELL])),
                quantity=quantity,
                price=notional / quantity,
                notional=notional,
                timestamp=max(0, clock - jitter),
                exchange="X",
                order_type="LIMIT",
                counterparty_user_id=draw(st.sampled_from([None, None, "u-a", "u-b", "u-c"])),
            )
        )
    return trades


def outputs(results: list[Evaluation]) -> list[tuple[RiskAnalyzedTrade, tuple[RiskAlert, ...]]]:
    return [(r.analyzed, r.alerts) for r in results]


@settings(max_examples=50, deadline=None)
@given(trade_lists(max_size=250))
def test_state_stays_within_its_bounds(trades):
    state = UserState()
    rules = DEFAULT_RULES
    for item in trades:
        state = evaluate_trade(state, item, REFERENCE, rules).state
        assert len(state.recent) <= MAX_RECENT_TRADES
        assert state.recent.times == sorted(state.recent.times)
        if state.recent.times:
            assert state.recent.times[0] >= state.watermark - rules.recent_horizon_ms
        assert len(state.structuring_times) <= MAX_STRUCTURING_CANDIDATES
        assert state.structuring_times == sorted(state.structuring_times)
        assert len(state.symbols) <= MAX_SYMBOLS
        assert len(state.day_buckets) <= DAY_MS // DAY_BUCKET_MS + 2
        assert state.sketch.total <= 1_024 and state.sketch.total == sum(state.sketch.counts)
        assert all(last <= state.watermark for last in state.fired.values())
    assert len(encode_state(state)) < 16 * 1024


@settings(max_examples=60, deadline=None)
@given(trade_lists())
def test_evaluation_is_deterministic_and_a_replay_gives_identical_outputs(trades):
    _, first = evaluate_many(trades, REFERENCE, DEFAULT_RULES)
    _, second = evaluate_many(trades, REFERENCE, DEFAULT_RULES)
    assert outputs(first) == outputs(second)
    assert [r.analyzed.to_record() for r in first] == [r.analyzed.to_record() for r in second]


@settings(max_examples=60, deadline=None)
@given(trade_lists(max_size=150, users=tuple(USERS)), st.randoms(use_true_random=False))
def test_interleaving_users_differently_changes_no_users_results(trades, rng):
    _, together = evaluate_many(trades, REFERENCE, DEFAULT_RULES)
    # Same per-user order, users interleaved at random.
    queues = {user: [t for t in trades if t.user_id == user] for user in USERS}
    shuffled = []
    while any(queues.values()):
        user = rng.choice([u for u in USERS if queues[u]])
        shuffled.append(queues[user].pop(0))
    _, apart = evaluate_many(shuffled, REFERENCE, DEFAULT_RULES)
    for user in USERS:
        mine = [r for r in together if r.analyzed.trade.user_id == user]
        theirs = [r for r in apart if r.analyzed.trade.user_id == user]
        assert outputs(mine) == outputs(theirs)


@settings(max_examples=60, deadline=None)
@given(trade_lists(), st.integers(min_value=0, max_value=120))
def test_going_through_the_table_encoding_changes_nothing(trades, cut):
    direct = UserState()
    stored = encode_state(UserState())
    for number, item in enumerate(trades):
        a = evaluate_trade(direct, item, REFERENCE, DEFAULT_RULES)
        # Encode/decode around every trade after ``cut``, as a table round trip would.
        b = evaluate_trade(decode_state(stored) if number >= cut else direct, item, REFERENCE, DEFAULT_RULES)
        if number < cut:
            stored = encode_state(a.state)
            continue
        stored = encode_state(b.state)
        assert a.analyzed == b.analyzed and a.alerts == b.alerts
    assert decode_state(stored) == direct


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_decode_or_fail_with_a_state_format_error(payload):
    with contextlib.suppress(StateFormatError):
        decode_state(payload)


EXTREME = st.one_of(
    st.sampled_from([1e-12, 1e-9, 1.0, 1e9, 1e12, 1e15]),
    st.floats(min_value=1e-12, max_value=1e15, allow_nan=False, allow_infinity=False),
)


@st.composite
def extreme_trades(draw):
    """Valid trades at the edges of every bound: tiny and huge quantities, prices and notionals."""
    trades = []
    at = T0
    for i in range(draw(st.integers(min_value=1, max_value=40))):
        price = min(draw(EXTREME), MAX_PRICE)
        quantity = draw(EXTREME)
        if quantity * price > MAX_NOTIONAL:
            quantity = MAX_NOTIONAL / price * (1 - 1e-9)
        if quantity * price < MIN_POSITIVE:
            continue
        at += draw(st.integers(min_value=0, max_value=120_000))
        trades.append(
            parse_trade(
                {
                    "tradeId": f"x-{i}",
                    "userId": "u-x",
                    "customerId": "c-x",
                    "symbol": draw(st.sampled_from(["BTC/USDT", "SHIB/USDT"])),
                    "side": draw(st.sampled_from(["BUY", "SELL"])),
                    "quantity": quantity,
                    "price": price,
                    "notional": quantity * price,
                    "timestamp": at,
                    "exchange": "X",
                    "orderType": "MARKET",
                    "counterpartyUserId": draw(st.sampled_from([None, "u-y"])),
                }
            )
        )
    return trades


@given(extreme_trades())
@settings(max_examples=150)
def test_extreme_valid_values_never_put_inf_or_nan_in_state_or_outputs(trades):
    state = UserState()
    for item in trades:
        result = evaluate_trade(state, item, EMPTY_REFERENCE, DEFAULT_RULES)
        state = result.state
        json.dumps(result.analyzed.to_record(), allow_nan=False)
        for alert in result.alerts:
            json.dumps(alert.to_record(), allow_nan=False)
    numbers = [state.mean, state.variance, state.day_total, state.alert_heat, *state.day_sums]
    numbers += [s.price for s in state.symbols.values()] + state.recent.notionals + state.recent.quantities
    assert all(math.isfinite(n) for n in numbers)
    assert decode_state(encode_state(state)) == state
