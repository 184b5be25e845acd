"""The trade patterns: the seed's examples, and near misses that prove each boundary."""

from __future__ import annotations

import pytest

from riskengine.core import (
    DEFAULT_RULES,
    REGISTRY,
    AccountType,
    PatternType,
    ReferenceData,
    Rules,
    Severity,
    Trade,
    UserProfile,
)

from .builders import HOUR, MINUTE, SECOND, alerts_of, patterns_of, profile, reference, run, trade


def test_registry_holds_every_pattern_in_contract_order():
    assert list(REGISTRY) == [
        PatternType.VOLUME_SPIKE,
        PatternType.WASH_TRADING,
        PatternType.LARGE_ORDER,
        PatternType.FLASH_CRASH,
        PatternType.SELF_TRADE,
        PatternType.SPOOFING,
        PatternType.LAYERING,
        PatternType.QUOTE_STUFFING,
        PatternType.MOMENTUM_IGNITION,
        PatternType.STRUCTURING,
        PatternType.SANCTIONS_HIT,
        PatternType.KYC_LIMIT_BREACH,
    ]


def test_seed_severities():
    assert REGISTRY[PatternType.VOLUME_SPIKE].severity is Severity.HIGH
    assert REGISTRY[PatternType.WASH_TRADING].severity is Severity.CRITICAL
    assert REGISTRY[PatternType.LARGE_ORDER].severity is Severity.HIGH
    assert REGISTRY[PatternType.FLASH_CRASH].severity is Severity.HIGH


# -- VOLUME_SPIKE -------------------------------------------------------------------------------


def test_volume_spike_seed_example_1k_2_5k_6k_within_2_minutes():
    results = run(
        [trade(0, notional=1_000), trade(MINUTE, notional=2_500), trade(2 * MINUTE, notional=6_000)]
    )
    assert patterns_of(results) == [set(), set(), {"VOLUME_SPIKE"}]
    (alert,) = alerts_of(results)
    assert alert.evidence == tuple(r.analyzed.trade.trade_id for r in results)
    assert alert.description == "User exhibited abnormal trading volume spike within short period"
    assert alert.recommended_action == "Temporarily limit user's trading limits and require manual review"
    assert alert.timestamp == results[-1].analyzed.trade.timestamp
    features = {f.name: f for f in alert.features}
    assert features["minStepRatio"].threshold == 1.5
    assert features["runMinutes"].value == 2.0
    assert results[-1].analyzed.volume.volume_spike


def test_volume_spike_needs_the_run_within_the_window():
    results = run(
        [trade(0, notional=1_000), trade(MINUTE, notional=2_500), trade(2 * MINUTE + 1, notional=6_000)]
    )
    assert alerts_of(results) == []


def test_volume_spike_needs_each_step_at_the_ratio():
    # 1,000 -> 1,499 is just below 1.5x; exactly 1.5x counts (>=).
    assert (
        alerts_of(
            run([trade(0, notional=1_000), trade(SECOND, notional=1_499), trade(2 * SECOND, notional=6_000)])
        )
        == []
    )
    results = run(
        [trade(0, notional=1_000), trade(SECOND, notional=1_500), trade(2 * SECOND, notional=2_250)]
    )
    assert len(alerts_of(results, "VOLUME_SPIKE")) == 1


def test_volume_spike_needs_three_trades():
    assert alerts_of(run([trade(0, notional=1_000), trade(SECOND, notional=5_000)])) == []


def test_volume_spike_counts_consecutive_trades_across_symbols():
    results = run(
        [
            trade(0, notional=1_000, symbol="BTC/USDT"),
            trade(SECOND, notional=2_000, symbol="ETH/USDT"),
            trade(2 * SECOND, notional=4_000, symbol="SOL/USDT"),
        ]
    )
    assert len(alerts_of(results, "VOLUME_SPIKE")) == 1


# -- WASH_TRADING -------------------------------------------------------------------------------


def wash(
    sell_quantity: float = 950.0,
    second_buy: float = 1050.0,
    last_at: int = 45 * SECOND,
    symbols: tuple[str, str, str] = ("ADA/USDT",) * 3,
) -> list[Trade]:
    return [
        trade(0, "BUY", 1000.0, quantity=1000.0, symbol=symbols[0]),
        trade(20 * SECOND, "SELL", sell_quantity, quantity=sell_quantity, symbol=symbols[1]),
        trade(last_at, "BUY", second_buy, quantity=second_buy, symbol=symbols[2]),
    ]


def test_wash_trading_seed_example_buy_1000_sell_950_buy_1050_within_1_minute():
    results = run(wash())
    assert patterns_of(results)[2] == {"WASH_TRADING"}
    (alert,) = alerts_of(results)
    assert alert.severity is Severity.CRITICAL
    assert alert.symbol == "ADA/USDT"
    assert alert.evidence == tuple(r.analyzed.trade.trade_id for r in results)
    assert alert.description == "Potential wash trading detected with rapid buy-sell cycles"
    assert alert.recommended_action == "Freeze account for investigation and report to compliance"
    actions = results[2].analyzed.mitigation_actions
    assert "FREEZE_ACCOUNT" in actions and "REPORT_TO_COMPLIANCE" in actions


def test_wash_trading_window_edge_is_inclusive():
    assert len(alerts_of(run(wash(last_at=MINUTE)))) == 1
    assert alerts_of(run(wash(last_at=MINUTE + 1))) == []


@pytest.mark.parametrize(("sell", "buy"), [(899.0, 1050.0), (950.0, 1101.0), (1101.0, 1000.0)])
def test_wash_trading_quantities_just_beyond_the_tolerance(sell, buy):
    assert alerts_of(run(wash(sell_quantity=sell, second_buy=buy))) == []


def test_wash_trading_quantities_at_the_tolerance():
    assert len(alerts_of(run(wash(sell_quantity=900.0, second_buy=1100.0)))) == 1


def test_wash_trading_needs_one_symbol():
    assert alerts_of(run(wash(symbols=("ADA/USDT", "XRP/USDT", "ADA/USDT")))) == []


WINDOW_CONTIGUITY = Rules.from_parameters(1, {"wash.trading.contiguity": "window"})
MARKET_MAKER = reference(profile(account_type=AccountType.MARKET_MAKER))


def test_wash_trading_in_window_mode_sees_through_an_unrelated_trade_in_between():
    trades = wash()
    trades.insert(2, trade(30 * SECOND, "BUY", 5.0, quantity=5.0, symbol="ADA/USDT"))
    assert len(alerts_of(run(trades, WINDOW_CONTIGUITY), "WASH_TRADING")) == 1


def test_wash_trading_by_default_needs_consecutive_trades_in_the_symbol():
    trades = wash()
    trades.insert(2, trade(30 * SECOND, "BUY", 5.0, quantity=5.0, symbol="ADA/USDT"))
    assert alerts_of(run(trades), "WASH_TRADING") == []
    # The account's trades in other symbols do not break the cycle.
    trades = wash()
    trades.insert(2, trade(30 * SECOND, "SELL", 5.0, quantity=5.0, symbol="XRP/USDT"))
    (alert,) = alerts_of(run(trades), "WASH_TRADING")
    assert alert.evidence == (trades[0].trade_id, trades[1].trade_id, trades[3].trade_id)


@pytest.mark.parametrize("rules", [DEFAULT_RULES, WINDOW_CONTIGUITY])
def test_wash_trading_contiguity_keeps_the_seed_example(rules):
    assert len(alerts_of(run(wash(), rules), "WASH_TRADING")) == 1


def test_a_designated_market_maker_is_exempt_from_the_default_exempt_patterns():
    assert alerts_of(run(wash(), ref=MARKET_MAKER)) == []
    assert alerts_of(run(wash(), ref=reference(profile(account_type=AccountType.PROFESSIONAL))))
    sells = [trade(i * 10 * SECOND, "SELL", 1_000.0) for i in range(10)]
    assert alerts_of(run(sells), "FLASH_CRASH")
    assert alerts_of(run(sells, ref=MARKET_MAKER)) == []


def test_market_maker_exemptions_are_a_rule_parameter():
    rules = Rules.from_parameters(1, {"market.maker.exempt": "FLASH_CRASH"})
    assert alerts_of(run(wash(), rules, MARKET_MAKER), "WASH_TRADING")
    # Patterns not exempted still apply to a market maker, LARGE_ORDER for one.
    (result,) = run([trade(0, notional=600_000, quantity=5.0, symbol="BTC/USDT")], ref=MARKET_MAKER)
    assert patterns_of([result]) == [{"LARGE_ORDER"}]


# -- LARGE_ORDER ----------------------------------------------------------------------------------


def test_large_order_btc_above_500k():
    (result,) = run([trade(0, notional=500_001, quantity=5.0, symbol="BTC/USDT")])
    assert patterns_of([result]) == [{"LARGE_ORDER"}]
    assert result.analyzed.market_impact.large_order
    assert result.analyzed.market_impact.large_order_threshold == 500_000
    (alert,) = result.alerts
    assert alert.features[0].threshold == 500_000 and alert.features[0].comparison == ">"


def test_large_order_exactly_at_the_threshold_is_not_above_it():
    (result,) = run([trade(0, notional=500_000, quantity=5.0, symbol="BTC/USDT")])
    assert result.alerts == () and not result.analyzed.market_impact.large_order


@pytest.mark.parametrize(
    ("symbol", "threshold"),
    [("ETH/USDT", 250_000), ("SOL/USDT", 100_000), ("ADA/USDT", 100_000), ("BTC/EUR", 500_000)],
)
def test_large_order_threshold_follows_the_base_asset(symbol, threshold):
    below, above = run(
        [trade(0, notional=threshold, symbol=symbol), trade(HOUR, notional=threshold + 1, symbol=symbol)]
    )
    assert not below.analyzed.market_impact.large_order
    assert [a.pattern.value for a in above.alerts] == ["LARGE_ORDER"]


def test_every_large_order_alerts_they_are_keyed_by_trade():
    results = run([trade(i * SECOND, notional=600_000, symbol="BTC/USDT") for i in range(3)])
    alerts = alerts_of(results, "LARGE_ORDER")
    assert len(alerts) == 3 and len({a.alert_id for a in alerts}) == 3


# -- FLASH_CRASH ----------------------------------------------------------------------------------


def sells(count: int, spacing: int = 30 * SECOND) -> list[Trade]:
    return [trade(i * spacing, "SELL", 1_000) for i in range(count)]


def test_flash_crash_ten_sells_in_five_minutes():
    results = run(sells(10))
    assert patterns_of(results)[-1] == {"FLASH_CRASH"}
    assert all(p == set() for p in patterns_of(results)[:-1])
    (alert,) = alerts_of(results)
    assert len(alert.evidence) == 10
    assert results[-1].analyzed.behavioral.sells_in_window == 10


def test_flash_crash_nine_sells_do_not_match():
    assert alerts_of(run(sells(9))) == []


def test_flash_crash_window_is_five_minutes_inclusive():
    exactly = [trade(i * 30 * SECOND + (1 if i == 9 else 0) * 30 * SECOND, "SELL", 1_000) for i in range(10)]
    assert exactly[-1].timestamp - exactly[0].timestamp == 5 * MINUTE
    assert len(alerts_of(run(exactly))) == 1
    beyond = [*exactly[:-1], trade(5 * MINUTE + 1, "SELL", 1_000)]
    assert alerts_of(run(beyond)) == []


def test_flash_crash_counts_sells_only():
    trades = [*sells(9), trade(9 * 30 * SECOND, "BUY", 1_000)]
    assert alerts_of(run(trades)) == []


# -- SELF_TRADE -----------------------------------------------------------------------------------


def test_self_trade_with_own_account():
    (result,) = run([trade(0, counterparty="u-1")])
    assert [a.pattern.value for a in result.alerts] == ["SELF_TRADE"]


def test_self_trade_with_a_linked_account_or_the_same_customer():
    ref = ReferenceData(
        profiles={
            "u-1": profile("u-1", linked_accounts=frozenset({"u-2"})),
            "u-3": UserProfile("u-3", "c-u-1", 2, "DE"),  # same customerId as u-1's trades
            "u-4": UserProfile("u-4", "c-other", 2, "DE"),
        }
    )
    results = run(
        [
            trade(0, counterparty="u-2"),
            trade(MINUTE, counterparty="u-3"),
            trade(2 * MINUTE, counterparty="u-4"),
        ],
        ref=ref,
    )
    assert patterns_of(results) == [{"SELF_TRADE"}, {"SELF_TRADE"}, set()]


def test_no_counterparty_no_self_trade():
    assert alerts_of(run([trade(0)])) == []


# -- STRUCTURING ----------------------------------------------------------------------------------


def test_structuring_three_trades_in_the_band_within_24h():
    results = run(
        [trade(0, notional=9_500), trade(8 * HOUR, notional=8_000), trade(24 * HOUR, notional=9_999.99)]
    )
    assert patterns_of(results)[-1] == {"STRUCTURING"}
    assert "STRUCTURING_SUSPECTED" in results[-1].analyzed.compliance_flags
    (alert,) = alerts_of(results)
    assert len(alert.evidence) == 3


@pytest.mark.parametrize(
    "third",
    [
        (24 * HOUR + 1, 9_500.0),  # just outside the window
        (HOUR, 7_999.99),  # just below the band
        (HOUR, 10_000.0),  # at the reporting threshold: reported, not structured
    ],
)
def test_structuring_near_misses(third):
    at, notional = third
    results = run(
        [trade(0, notional=9_500), trade(10 * MINUTE, notional=9_000), trade(at, notional=notional)]
    )
    assert alerts_of(results, "STRUCTURING") == []


# -- SANCTIONS_HIT ---------------------------------------------------------------------------------


def test_sanctions_hit_on_user_counterparty_and_country():
    ref = reference(
        profile("u-1", country="KP"),
        sanctioned_users=frozenset({"bad"}),
        sanctioned_countries=frozenset({"KP"}),
    )
    (result,) = run([trade(0, counterparty="bad")], ref=ref)
    (alert,) = result.alerts
    assert alert.pattern is PatternType.SANCTIONS_HIT and alert.severity is Severity.CRITICAL
    assert {f.name for f in alert.features} == {"sanctionedCounterparty", "sanctionedCountry"}
    flags = result.analyzed.compliance_flags
    assert "SANCTIONED_COUNTERPARTY" in flags and "SANCTIONED_COUNTRY" in flags
    assert "BLOCK_TRADE" in result.analyzed.mitigation_actions
    assert result.analyzed.final_risk_level.value == "CRITICAL"


def test_sanctioned_profile_flag_counts():
    (result,) = run([trade(0)], ref=reference(profile(sanctioned=True)))
    assert "SANCTIONED_USER" in result.analyzed.compliance_flags


def test_restricted_country_blocks_without_a_sanctions_alert():
    (result,) = run([trade(0)], ref=reference(profile(country="IR"), restricted_countries=frozenset({"IR"})))
    assert result.alerts == ()
    assert "RESTRICTED_COUNTRY" in result.analyzed.compliance_flags
    assert "BLOCK_TRADE" in result.analyzed.mitigation_actions


# -- KYC_LIMIT_BREACH ------------------------------------------------------------------------------


def test_kyc_trade_limit_of_the_tier():
    tier1 = reference(profile(tier=1))
    at_limit, above = run(
        [trade(0, notional=10_000), trade(MINUTE, notional=10_000.01)],
        ref=tier1,
        rules=Rules.from_parameters(1, {"kyc.tier1.daily.limit": 1e9}),
    )
    assert "KYC_TRADE_LIMIT" not in at_limit.analyzed.compliance_flags
    assert "KYC_TRADE_LIMIT" in above.analyzed.compliance_flags
    assert [a.pattern.value for a in above.alerts] == ["KYC_LIMIT_BREACH"]


def test_kyc_daily_limit_sums_the_last_24_hours():
    rules = Rules.from_parameters(1, {"kyc.tier1.daily.limit": 25_000})
    ref = reference(profile(tier=1))
    results = run(
        [trade(0, notional=9_000.0), trade(HOUR, notional=9_000.0), trade(2 * HOUR, notional=7_001.0)],
        ref=ref,
        rules=rules,
    )
    assert ["KYC_DAILY_LIMIT" in r.analyzed.compliance_flags for r in results] == [False, False, True]
    # Two days later the old trades have left the window.
    (later,) = run([trade(50 * HOUR, notional=9_000.0)], ref=ref, rules=rules, state=results[-1].state)
    assert "KYC_DAILY_LIMIT" not in later.analyzed.compliance_flags


def test_a_user_without_profile_gets_the_default_tier():
    (result,) = run([trade(0, notional=1_500)], ref=ReferenceData())
    assert {"NO_PROFILE", "KYC_TRADE_LIMIT"} <= set(result.analyzed.compliance_flags)


def test_disabled_patterns_raise_nothing():
    rules = Rules.from_parameters(2, {"patterns.disabled": "WASH_TRADING, LARGE_ORDER"})
    results = run([*wash(), trade(HOUR, notional=900_000, symbol="BTC/USDT")], rules=rules)
    assert alerts_of(results) == []
    assert DEFAULT_RULES.disabled == frozenset()
