"""The market core: executions counted once, PRICE_CRASH and PUMP_AND_DUMP at their thresholds."""

from __future__ import annotations

import itertools

import pytest

from riskengine.core import DEFAULT_RULES, PatternType, RiskAlert, Rules, Trade, UserState, evaluate_trade
from riskengine.core.market import (
    MarketContext,
    MarketState,
    MarketStateFormatError,
    context_final_after,
    context_minute,
    decode_market_state,
    encode_market_state,
    evaluate_market_trade,
    market_context,
)
from riskengine.core.market_feed import MarketContexts

from .builders import HOUR, MINUTE, REFERENCE, SECOND, T0, trade

_users = itertools.cycle([f"u-{n}" for n in range(20)])


def at_price(
    at: int, price: float, quantity: float = 10.0, *, side: str = "BUY", user: str | None = None, **kw: object
) -> Trade:
    """A trade of ``quantity`` at ``price``."""
    return trade(at, side, notional=price * quantity, quantity=quantity, user=user or next(_users), **kw)  # type: ignore[arg-type]


def feed(
    trades: list[Trade], rules: Rules = DEFAULT_RULES, state: MarketState | None = None
) -> tuple[MarketState, list[RiskAlert]]:
    state = state or MarketState()
    alerts: list[RiskAlert] = []
    for t in trades:
        alerts.extend(evaluate_market_trade(state, t, rules).alerts)
    return state, alerts


def steady(
    start: int, minutes: int, price: float = 100.0, every: int = 20 * SECOND, quantity: float = 10.0
) -> list[Trade]:
    """Trades at ``price`` every ``every`` ms for ``minutes`` from ``start``."""
    return [at_price(start + k * every, price, quantity) for k in range(minutes * MINUTE // every)]


@pytest.mark.parametrize(
    ("ratio", "fires"),
    [(0.71, False), (0.70, True), (1.29, False), (1.30, True)],
)
def test_price_crash_at_its_ratios(ratio: float, fires: bool) -> None:
    history = steady(0, 5)
    odd = at_price(5 * MINUTE + 10 * SECOND, 100.0 * ratio, user="u-fat")
    _state, alerts = feed([*history, odd])
    crashes = [a for a in alerts if a.pattern is PatternType.PRICE_CRASH]
    assert bool(crashes) is fires
    if fires:
        (alert,) = crashes
        assert alert.user_id is None and alert.symbol == "ADA/USDT"
        assert alert.evidence == (odd.trade_id,)
        names = {f.name: f for f in alert.features}
        assert names["averagePrice"].value == pytest.approx(100.0)
        assert names["priceToAverage"].value == pytest.approx(ratio)
        assert "buyer:u-fat" in names


def test_price_crash_needs_enough_executions_in_the_window() -> None:
    few = [at_price(k * MINUTE, 100.0) for k in range(4)]
    _state, alerts = feed([*few, at_price(4 * MINUTE + 30 * SECOND, 50.0)])
    assert alerts == []
    enough = [at_price(k * MINUTE, 100.0) for k in range(5)]
    _state, alerts = feed([*enough, at_price(4 * MINUTE + 30 * SECOND, 50.0)])
    assert [a.pattern for a in alerts] == [PatternType.PRICE_CRASH]


def test_price_crash_window_forgets_trades_older_than_five_minutes() -> None:
    old = steady(0, 2, price=100.0)
    recent = steady(10 * MINUTE, 5, price=60.0)
    _state, alerts = feed([*old, *recent, at_price(15 * MINUTE + 20 * SECOND, 60.0)])
    assert alerts == []


def test_second_crash_within_the_window_merges() -> None:
    history = steady(0, 5)
    crashes = [at_price(5 * MINUTE + 10 * SECOND, 50.0), at_price(5 * MINUTE + 40 * SECOND, 50.0)]
    _state, alerts = feed([*history, *crashes])
    assert len(alerts) == 1


def test_both_records_of_an_execution_count_once() -> None:
    buy = at_price(0, 100.0, user="u-a", counterparty="u-b")
    state, _ = feed(sorted([buy, _twin(buy)], key=lambda t: t.trade_id))
    assert state.executions == 1 and state.twins == 1
    assert market_context(state, "ADA/USDT", T0 + 5 * MINUTE, DEFAULT_RULES).recent_volume == pytest.approx(
        1_000.0
    )
    alone, _ = feed(
        [
            at_price(0, 100.0, user="u-a", counterparty="u-c"),
            at_price(0, 100.0, user="u-b", counterparty="u-a", side="SELL"),
        ]
    )
    assert alone.executions == 2, "a SELL of u-b to u-a is not the twin of u-a buying from u-c"


def _twin(record: Trade) -> Trade:
    """The other side's record of ``record``'s execution."""
    assert record.counterparty_user_id is not None
    return Trade(
        trade_id=record.trade_id + "-twin",
        user_id=record.counterparty_user_id,
        customer_id="c-" + record.counterparty_user_id,
        symbol=record.symbol,
        side=type(record.side)("SELL" if record.side.value == "BUY" else "BUY"),
        quantity=record.quantity,
        price=record.price,
        notional=record.notional,
        timestamp=record.timestamp,
        exchange=record.exchange,
        order_type=record.order_type,
        counterparty_user_id=record.user_id,
    )


def test_two_identical_executions_at_one_millisecond_count_twice() -> None:
    first = at_price(0, 100.0, user="u-a", counterparty="u-b", trade_id="t1")
    second = at_price(0, 100.0, user="u-a", counterparty="u-b", trade_id="t2")
    state, _ = feed(sorted([first, second, _twin(first), _twin(second)], key=lambda t: t.trade_id))
    assert state.executions == 2 and state.twins == 2


def test_a_redelivered_record_changes_nothing() -> None:
    record = at_price(0, 100.0)
    state = MarketState()
    assert evaluate_market_trade(state, record, DEFAULT_RULES).applied
    before = encode_market_state(state)
    again = evaluate_market_trade(state, record, DEFAULT_RULES)
    assert not again.applied and encode_market_state(state) == before


def pump(rise: float, *, dump: float = 0.2, baseline_hours: int = 2, volume: float = 30.0) -> list[Trade]:
    """A baseline at 100, a 60-minute climb to 100 x (1 + rise) on ``volume`` x quantity, then a fall."""
    trades = steady(0, baseline_hours * 60, every=30 * SECOND)
    start = baseline_hours * HOUR
    steps = 60
    for k in range(steps + 1):
        price = 100.0 * (1 + rise) ** (k / steps)
        trades.append(at_price(start + k * MINUTE, price, quantity=volume, side="BUY", user=f"ring-{k % 3}"))
    peak_price = 100.0 * (1 + rise)
    top = start + 70 * MINUTE
    for k in range(1, 61):
        price = peak_price * (1 - dump * k / 60)
        trades.append(at_price(top + k * MINUTE, price, quantity=volume, side="SELL", user=f"ring-{k % 3}"))
    return trades


@pytest.mark.parametrize(("rise", "fires"), [(0.19, False), (0.20, True)])
def test_pump_and_dump_at_the_rise_threshold(rise: float, fires: bool) -> None:
    _state, alerts = feed(pump(rise))
    pumps = [a for a in alerts if a.pattern is PatternType.PUMP_AND_DUMP]
    assert bool(pumps) is fires
    if fires:
        (alert,) = pumps
        names = {f.name: f.value for f in alert.features}
        assert names["priceRise"] == pytest.approx(0.20)
        assert names["priceFall"] >= 0.15
        assert names["volumeZScore"] >= 3
        assert {"boughtIntoRise:ring-0", "soldIntoFall:ring-1"} <= set(names)
        assert alert.user_id is None and alert.symbol == "ADA/USDT"


def test_pump_needs_the_fall() -> None:
    _state, alerts = feed(pump(0.3, dump=0.14))
    assert alerts == []
    _state, alerts = feed(pump(0.3, dump=0.16))
    assert [a.pattern for a in alerts] == [PatternType.PUMP_AND_DUMP]


def test_pump_needs_abnormal_volume() -> None:
    _state, alerts = feed(pump(0.3, volume=10.0))
    assert alerts == []


def test_pump_needs_a_volume_baseline() -> None:
    trades = [t for t in pump(0.3) if t.timestamp >= pump(0.3)[0].timestamp + 90 * MINUTE]
    _state, alerts = feed(trades)
    assert alerts == []


def test_state_round_trips_and_stays_bounded() -> None:
    trades = pump(0.3)
    state, _ = feed(trades)
    data = encode_market_state(state)
    assert encode_market_state(decode_market_state(data)) == data
    # A day of trading every 5 s keeps the state within its windows.
    day, _ = feed(steady(0, 24 * 60, every=5 * SECOND))
    assert len(day.bars) <= (16 * 60) // 5 + 1
    assert len(day.buckets) <= 31
    assert len(encode_market_state(day)) < 64_000


def test_garbage_is_not_a_market_state() -> None:
    with pytest.raises(MarketStateFormatError):
        decode_market_state(b"\x01not json")
    with pytest.raises(MarketStateFormatError):
        decode_market_state(b"\x09")


def test_rules_change_the_thresholds() -> None:
    rules = Rules.from_parameters(1, {"price.crash.low.ratio": "0.8"})
    _state, alerts = feed([*steady(0, 5), at_price(5 * MINUTE + 10 * SECOND, 79.0)], rules)
    assert [a.rule_version for a in alerts] == [1]


def test_a_context_is_given_when_a_new_minute_opens_and_holds_only_earlier_executions() -> None:
    state = MarketState()
    contexts: list[MarketContext] = []
    for record in [*steady(0, 3, price=100.0), at_price(3 * MINUTE + 5 * SECOND, 200.0)]:
        outcome = evaluate_market_trade(state, record, DEFAULT_RULES)
        contexts.extend(outcome.contexts)
    assert [c.as_of - T0 for c in contexts] == [MINUTE, 2 * MINUTE, 3 * MINUTE]
    last = contexts[-1]
    assert last.symbol == "ADA/USDT" and last.reference_price == pytest.approx(100.0), "not the 200 trade"
    assert last.recent_volume == pytest.approx(9 * 1_000.0)


def test_a_trade_uses_the_context_of_a_minute_ending_at_least_the_lateness_before_it() -> None:
    lateness = DEFAULT_RULES.market_lateness_ms
    # A minute of slack beyond the lateness: final once the market is past 8:00, as of 7:00 at most.
    assert context_final_after(T0 + 10 * MINUTE + 4 * SECOND, lateness) == T0 + 8 * MINUTE
    assert context_minute(T0 + 10 * MINUTE + 4 * SECOND, lateness) == T0 + 7 * MINUTE
    assert context_minute(T0 + 10 * MINUTE + 5 * SECOND, lateness) == T0 + 8 * MINUTE
    contexts = MarketContexts()
    for minute in (2, 5, 8):
        contexts.add(MarketContext("ADA/USDT", T0 + minute * MINUTE, 100.0 + minute, 1.0, None))
    chosen = contexts.for_trade("ADA/USDT", T0 + 10 * MINUTE + 4 * SECOND, lateness)
    assert chosen is not None and chosen.as_of == T0 + 5 * MINUTE
    assert contexts.for_trade("ADA/USDT", T0 + 4 * MINUTE, lateness) is None
    assert contexts.for_trade("SOL/USDT", T0 + 30 * MINUTE, lateness) is None


def test_market_impact_is_scored_against_the_context() -> None:
    context = MarketContext("ADA/USDT", T0, 100.0, 1_000_000.0, 0.05)
    record = at_price(MINUTE, 110.0, quantity=1_000.0, user="u-1")
    analyzed = evaluate_trade(UserState(), record, REFERENCE, DEFAULT_RULES, context).analyzed
    impact = analyzed.market_impact
    assert impact.reference_price == 100.0 and impact.price_deviation == pytest.approx(0.1)
    assert impact.liquidity_consumption == pytest.approx(110_000.0 / 1_000_000.0)
    assert impact.volatility == 0.05 and impact.market_context_as_of == T0
    calm = evaluate_trade(UserState(), record, REFERENCE, DEFAULT_RULES, context._replace(volatility=0.001))
    assert calm.analyzed.breakdown.market_impact >= analyzed.breakdown.market_impact
