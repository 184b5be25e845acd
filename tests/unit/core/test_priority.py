"""Alert priority: the documented formula, its bounds, and where the engine fills it in."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from riskengine.core import AccountType, Severity
from riskengine.core.models import Feature, Trade
from riskengine.core.priority import REPEAT_HALF_LIFE_MS, alert_priority, decayed_heat, margin

from .builders import MINUTE, SECOND, alerts_of, profile, reference, run, trade


def test_margin_is_the_mean_distance_past_each_threshold():
    features = [
        Feature("sells", 15, 10, ">="),  # 50 % past
        Feature("deviation", 0.025, 0.1, "<="),  # 75 % inside the tolerance
        Feature("firstQuantity", 1_000.0),  # no threshold: not counted
    ]
    assert margin(features) == (0.5 + 0.75) / 2
    assert margin([Feature("sells", 100, 10, ">=")]) == 1.0  # clamped
    assert margin([Feature("x", 5, 10, ">=")]) == 0.0  # not past: 0, never negative
    assert margin([]) == 0.0
    assert margin([Feature("x", 5, math.nan, ">="), Feature("y", math.inf, 1, ">=")]) == 0.0


def test_priority_follows_the_documented_formula():
    features = [Feature("sells", 15, 10, ">=")]
    expected = 1 - (1 - 0.40) * (1 - 0.35 * 0.5) * (1 - 0.30 * math.log10(100) / 4) * (
        1 - 0.30 * (1 - math.exp(-0.5))
    )
    assert alert_priority(Severity.HIGH, features, 100_000.0, heat=1.0) == round(100 * expected)
    designated = alert_priority(Severity.HIGH, features, 100_000.0, 1.0, AccountType.MARKET_MAKER)
    assert designated == round(50 * expected)


def test_each_part_raises_the_priority():
    base = alert_priority(Severity.HIGH, [Feature("n", 11, 10, ">=")], 2_000.0)
    assert alert_priority(Severity.CRITICAL, [Feature("n", 11, 10, ">=")], 2_000.0) > base
    assert alert_priority(Severity.HIGH, [Feature("n", 20, 10, ">=")], 2_000.0) > base
    assert alert_priority(Severity.HIGH, [Feature("n", 11, 10, ">=")], 2_000_000.0) > base
    assert alert_priority(Severity.HIGH, [Feature("n", 11, 10, ">=")], 2_000.0, heat=3.0) > base
    assert (
        alert_priority(Severity.HIGH, [Feature("n", 11, 10, ">=")], 2_000.0, 0.0, AccountType.PROFESSIONAL)
        < base
    )


def test_heat_halves_per_half_life_and_never_grows_backwards():
    assert decayed_heat(4.0, 0, REPEAT_HALF_LIFE_MS) == 2.0
    assert decayed_heat(4.0, 10, 5) == 4.0


@given(
    severity=st.sampled_from(list(Severity)),
    values=st.lists(
        st.tuples(
            st.floats(allow_nan=True, allow_infinity=True),
            st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
            st.sampled_from([">", ">=", "<", "<=", None]),
        ),
        max_size=5,
    ),
    stake=st.floats(allow_nan=True, allow_infinity=True),
    heat=st.floats(min_value=0.0, max_value=1e300),
    account_type=st.one_of(st.none(), st.sampled_from(list(AccountType))),
)
def test_priority_is_an_integer_from_0_to_100_for_any_input(severity, values, stake, heat, account_type):
    features = [Feature("f", value, threshold, comparison) for value, threshold, comparison in values]
    priority = alert_priority(severity, features, stake, heat, account_type)
    assert isinstance(priority, int) and 0 <= priority <= 100


def wash(start: int, user: str = "u-1") -> list[Trade]:
    return [
        trade(start, "BUY", 1000.0, quantity=1000.0, user=user),
        trade(start + 20 * SECOND, "SELL", 990.0, quantity=990.0, user=user),
        trade(start + 40 * SECOND, "BUY", 1010.0, quantity=1010.0, user=user),
    ]


def test_every_alert_of_the_core_carries_a_priority_and_repeats_raise_it():
    results = run(wash(0) + wash(10 * MINUTE))
    first, second = alerts_of(results, "WASH_TRADING")
    assert first.priority is not None and second.priority is not None
    assert second.priority > first.priority
    assert results[-1].state.alert_heat > 1.0


def test_a_designated_market_makers_alerts_rank_lower():
    plain = alerts_of(run([trade(0, notional=600_000, quantity=5.0, symbol="BTC/USDT")]), "LARGE_ORDER")
    maker = reference(profile(account_type=AccountType.MARKET_MAKER))
    designated = alerts_of(
        run([trade(0, notional=600_000, quantity=5.0, symbol="BTC/USDT")], ref=maker), "LARGE_ORDER"
    )
    assert plain[0].priority is not None and designated[0].priority is not None
    assert designated[0].priority < plain[0].priority
