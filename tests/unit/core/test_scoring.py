"""Score combination, level cut-offs, actions and the per-component breakdown."""

from __future__ import annotations

import pytest

from riskengine.core import DEFAULT_RULES, PatternType, RiskLevel, Rules
from riskengine.core.scoring import combine, mitigation_actions, risk_level, volume_component

from .builders import MINUTE, profile, reference, run, trade


@pytest.mark.parametrize(
    ("score", "level"),
    [
        (0.0, "LOW"),
        (0.2999, "LOW"),
        (0.3, "MEDIUM"),
        (0.5999, "MEDIUM"),
        (0.6, "HIGH"),
        (0.8499, "HIGH"),
        (0.85, "CRITICAL"),
        (1.0, "CRITICAL"),
    ],
)
def test_level_cut_offs_are_inclusive_for_the_higher_level(score, level):
    assert risk_level(score, DEFAULT_RULES) is RiskLevel(level)


def test_cut_offs_are_rule_parameters():
    rules = Rules.from_parameters(1, {"level.medium": 0.1, "level.high": 0.2, "level.critical": 0.3})
    assert risk_level(0.25, rules) is RiskLevel.HIGH


def test_combination_is_a_weighted_probabilistic_or():
    assert combine(0, 0, 0, 0, DEFAULT_RULES) == 0.0
    assert combine(0, 0.75, 0, 0, DEFAULT_RULES) == pytest.approx(0.75)
    assert combine(0, 0.75, 0.75, 0, DEFAULT_RULES) == pytest.approx(1 - 0.25 * 0.25)
    assert combine(1.0, 0, 0, 0, DEFAULT_RULES) == pytest.approx(0.5)  # volume weight 0.5


def test_volume_component_waits_for_history_and_saturates():
    assert volume_component(10.0, 1.0, 4, DEFAULT_RULES) == 0.0
    assert volume_component(10.0, 1.0, 5, DEFAULT_RULES) == 1.0
    assert volume_component(-3.0, 0.1, 50, DEFAULT_RULES) == 0.0


def test_actions_follow_level_flags_and_patterns_in_fixed_order():
    assert mitigation_actions(RiskLevel.LOW, ("TRAVEL_RULE",), ()) == ()
    assert mitigation_actions(RiskLevel.HIGH, (), ()) == ("MANUAL_REVIEW_REQUIRED", "LIMIT_TRADING")
    assert mitigation_actions(RiskLevel.LOW, ("KYC_TRADE_LIMIT",), ()) == ("BLOCK_TRADE",)
    assert mitigation_actions(RiskLevel.LOW, (), (PatternType.WASH_TRADING,)) == (
        "FREEZE_ACCOUNT",
        "REPORT_TO_COMPLIANCE",
    )


def test_one_high_pattern_makes_high_two_make_critical():
    (spike,) = run(
        [trade(0, notional=1_000), trade(MINUTE, notional=2_500), trade(2 * MINUTE, notional=6_000)]
    )[2:]
    assert spike.analyzed.final_risk_level is RiskLevel.HIGH
    assert spike.analyzed.breakdown.behavioral == 0.75
    big = run(
        [
            trade(0, notional=1_000, symbol="BTC/USDT"),
            trade(MINUTE, notional=2_500, symbol="BTC/USDT"),
            trade(2 * MINUTE, notional=600_000, symbol="BTC/USDT"),
        ]
    )[2]
    assert {p.value for p in big.analyzed.triggered_patterns} == {"VOLUME_SPIKE", "LARGE_ORDER"}
    assert big.analyzed.final_risk_level is RiskLevel.CRITICAL


def test_reporting_flags_and_breakdown_of_an_ordinary_trade():
    (result,) = run([trade(0, notional=12_000)], ref=reference(profile()))
    analyzed = result.analyzed
    assert analyzed.compliance_flags == ("TRAVEL_RULE", "TAX_REPORTING_REQUIRED")
    assert analyzed.final_risk_level is RiskLevel.LOW
    assert analyzed.breakdown.compliance == 0.0 and analyzed.mitigation_actions == ()
    assert analyzed.market_impact.liquidity_consumption == pytest.approx(12_000 / 1_000_000)
    (small,) = run([trade(0, notional=999.99)])
    assert small.analyzed.compliance_flags == ()


def test_market_reference_data_is_used_when_supplied():
    from riskengine.core import MarketReference

    ref = reference(
        profile(), markets={"ADA/USDT": MarketReference(reference_price=0.5, recent_volume=10_000.0)}
    )
    (result,) = run([trade(0, notional=1_100, quantity=1_000)], ref=ref)
    impact = result.analyzed.market_impact
    assert impact.reference_price == 0.5 and impact.price_deviation == pytest.approx(1.2)
    assert impact.liquidity_consumption == pytest.approx(0.11)
    # 120 % above the reference price: an off-market execution, HIGH on its own.
    assert result.analyzed.breakdown.market_impact == 0.75


@pytest.mark.parametrize(
    ("price", "component"),
    [(0.71, 0.5), (0.70, 0.75), (0.40, 0.75), (1.29, 0.5), (1.30, 0.75), (1.02, 0.5 * 0.02 / 0.05)],
)
def test_an_off_market_execution_is_high_on_its_own(price, component):
    from riskengine.core import MarketReference

    ref = reference(profile(), markets={"ADA/USDT": MarketReference(reference_price=1.0, recent_volume=1e12)})
    (result,) = run([trade(0, notional=1_000 * price, quantity=1_000)], ref=ref)
    assert result.analyzed.breakdown.market_impact == pytest.approx(component)


def test_reference_price_is_the_users_ewma_in_the_symbol():
    first, second = run([trade(0, notional=100, quantity=100), trade(MINUTE, notional=110, quantity=100)])
    assert first.analyzed.market_impact.reference_price is None
    assert second.analyzed.market_impact.reference_price == 1.0
    assert second.analyzed.market_impact.price_deviation == pytest.approx(0.1)
