"""The typology definitions as the oracle checks them: the seed examples and the boundaries."""

import pytest

from riskengine.core import PARAMETERS
from riskengine.producer.oracle import KYC_LIMITS, SPEC, Limits, PatternOracle, Subject, TradeFacts

T0 = 1_767_225_600_000
SUBJECTS = {
    "a": Subject("a", "c-a", 3, "DE", False, frozenset()),
    "b": Subject("b", "c-b", 3, "DE", False, frozenset()),
    "a2": Subject("a2", "c-a", 3, "DE", False, frozenset()),
    "linked": Subject("linked", "c-l", 3, "DE", False, frozenset({"a"})),
    "flagged": Subject("flagged", "c-f", 1, "GB", True, frozenset()),
    "iran": Subject("iran", "c-i", 1, "IR", False, frozenset()),
    "tier0": Subject("tier0", "c-0", 0, "US", False, frozenset()),
}


def oracle() -> PatternOracle:
    return PatternOracle(SUBJECTS.get, {"IR", "KP"}.__contains__)


def trade(
    n: int,
    seconds: float,
    notional: float = 100.0,
    user: str = "a",
    sell: bool = False,
    symbol: str = "ADA/USDT",
    quantity: float | None = None,
    counterparty: str | None = None,
) -> TradeFacts:
    return TradeFacts(
        f"t{n}", user, symbol, sell, quantity or notional, notional, T0 + round(seconds * 1000), counterparty
    )


def patterns(o: PatternOracle, facts: TradeFacts, limits: Limits = SPEC) -> dict[str, tuple[str, ...]]:
    return {m.pattern: m.evidence for m in o.check(facts, limits)}


def feed(o: PatternOracle, *trades: TradeFacts) -> None:
    for t in trades:
        o.record(t)


def test_volume_spike_seed_example_and_window():
    o = oracle()
    feed(o, trade(1, 0, 1_000), trade(2, 30, 2_500))
    assert patterns(o, trade(3, 90, 6_000))["VOLUME_SPIKE"] == ("t1", "t2", "t3")
    assert "VOLUME_SPIKE" not in patterns(o, trade(3, 121, 6_000))  # first to last beyond 2 min
    assert "VOLUME_SPIKE" not in patterns(o, trade(3, 90, 3_700))  # 3,700 < 1.5 x 2,500


def test_wash_trading_seed_example_tolerance_and_window():
    o = oracle()
    feed(o, trade(1, 0, quantity=1_000, notional=450), trade(2, 20, quantity=950, notional=430, sell=True))
    assert patterns(o, trade(3, 50, quantity=1_050, notional=470))["WASH_TRADING"] == ("t1", "t2", "t3")
    assert "WASH_TRADING" not in patterns(o, trade(3, 61, quantity=1_050, notional=470))
    assert "WASH_TRADING" not in patterns(o, trade(3, 50, quantity=1_101, notional=470))
    assert "WASH_TRADING" not in patterns(o, trade(3, 50, quantity=1_050, notional=470, symbol="BTC/USDT"))


def test_flash_crash_needs_ten_sells_within_five_minutes():
    o = oracle()
    feed(o, *(trade(n, n * 30, sell=True) for n in range(9)))
    assert "FLASH_CRASH" in patterns(o, trade(9, 270, sell=True))
    assert "FLASH_CRASH" not in patterns(o, trade(9, 270, sell=False))
    assert "FLASH_CRASH" not in patterns(o, trade(9, 301, sell=True))


@pytest.mark.parametrize(
    ("symbol", "threshold"),
    [("BTC/USDT", 500_000), ("ETH/USDT", 250_000), ("SOL/USDT", 100_000), ("ADA/USDT", 100_000)],
)
def test_large_order_is_strictly_above_the_symbols_threshold(symbol, threshold):
    o = oracle()
    assert "LARGE_ORDER" not in patterns(o, trade(1, 0, threshold, symbol=symbol))
    assert "LARGE_ORDER" in patterns(o, trade(1, 0, threshold + 0.01, symbol=symbol))


def test_structuring_counts_trades_in_the_band_within_a_day():
    o = oracle()
    feed(o, trade(1, 0, 8_000), trade(2, 3_600, 9_999.99), trade(3, 7_200, 10_000))
    assert patterns(o, trade(4, 86_400, 8_500))["STRUCTURING"] == ("t1", "t2", "t4")
    assert "STRUCTURING" not in patterns(o, trade(4, 86_401, 8_500))
    assert "STRUCTURING" not in patterns(o, trade(4, 80_000, 7_999))


def test_kyc_limits_per_trade_and_per_day():
    o = oracle()
    assert "KYC_LIMIT_BREACH" not in patterns(o, trade(1, 0, 1_000, user="tier0"))
    assert "KYC_LIMIT_BREACH" in patterns(o, trade(1, 0, 1_000.01, user="tier0"))
    feed(o, trade(1, 0, 900, user="tier0"), trade(2, 60, 900, user="tier0"))
    assert "KYC_LIMIT_BREACH" in patterns(o, trade(3, 120, 300, user="tier0"))
    assert "KYC_LIMIT_BREACH" not in patterns(o, trade(3, 86_461, 300, user="tier0"))


def test_self_trade_with_itself_a_linked_account_or_the_same_customer():
    o = oracle()
    for counterparty in ("a", "linked", "a2"):
        assert "SELF_TRADE" in patterns(o, trade(1, 0, counterparty=counterparty))
    assert "SELF_TRADE" not in patterns(o, trade(1, 0, counterparty="b"))


def test_sanctions_by_profile_flag_or_country_of_either_party():
    o = oracle()
    assert "SANCTIONS_HIT" in patterns(o, trade(1, 0, user="flagged"))
    assert "SANCTIONS_HIT" in patterns(o, trade(1, 0, user="iran"))
    assert "SANCTIONS_HIT" in patterns(o, trade(1, 0, counterparty="flagged"))
    assert "SANCTIONS_HIT" not in patterns(o, trade(1, 0, counterparty="b"))


def test_round_trip_wash_needs_three_round_trips_within_an_hour():
    o = oracle()
    n = 0
    for start in (0, 900):
        feed(
            o,
            trade(n, start, quantity=100, counterparty="b"),
            trade(n + 1, start + 60, user="b", quantity=100.5, counterparty="a"),
        )
        n += 2
    o.record(trade(n, 1_800, quantity=100, counterparty="b"))
    found = patterns(o, trade(n + 1, 1_860, user="b", quantity=99.5, counterparty="a"))
    assert found["ROUND_TRIP_WASH"] == ("t0", "t1", "t2", "t3", "t4", "t5")
    assert "ROUND_TRIP_WASH" not in patterns(o, trade(n + 1, 1_860, user="b", quantity=98, counterparty="a"))
    assert "ROUND_TRIP_WASH" not in patterns(o, trade(n + 1, 1_921, user="b", quantity=100, counterparty="a"))


def test_the_daily_notional_is_the_last_24_hours_exactly():
    o = oracle()
    feed(o, trade(1, 0, 1_500, user="b"), trade(2, 3_600, 500, user="b"))
    assert o.day_notional("b") == 2_000
    assert o.day_notional("b", T0 + 86_400_000) == 2_000  # the first trade is exactly 24 h old
    assert o.day_notional("b", T0 + 86_400_001) == 500
    assert o.day_notional("b", T0 + 90_000_001) == 0


def test_venue_kyc_limits_equal_the_engines_default_rules():
    for tier, (per_trade, per_day) in KYC_LIMITS.items():
        assert PARAMETERS[f"kyc.tier{tier}.trade.limit"].default == per_trade
        assert PARAMETERS[f"kyc.tier{tier}.daily.limit"].default == per_day
