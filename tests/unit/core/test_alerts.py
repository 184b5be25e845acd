"""Alert ids, explanations and the suppression (merge) rule."""

from __future__ import annotations

from riskengine.core import PatternType, Rules, Trade, alert_id

from .builders import HOUR, MINUTE, SECOND, alerts_of, profile, reference, run, trade

# sha256 of b"12:WASH_TRADING12:u-1/ADA/USDT1:a1:b1:c", first 32 hex digits.
PINNED = "67df365ef3010b4a4d37edee1e11cd48"


def test_alert_id_is_32_hex_and_stable_across_runs():
    value = alert_id(PatternType.WASH_TRADING, "u-1/ADA/USDT", ("a", "b", "c"))
    assert len(value) == 32 and int(value, 16) >= 0
    # Pinned: the same input gives the same id on any machine and release.
    assert value == alert_id(PatternType.WASH_TRADING, "u-1/ADA/USDT", ("a", "b", "c"))
    assert value == PINNED


def test_alert_id_depends_on_pattern_key_and_every_evidence_id():
    base = alert_id(PatternType.WASH_TRADING, "u-1", ("a", "b"))
    assert alert_id(PatternType.FLASH_CRASH, "u-1", ("a", "b")) != base
    assert alert_id(PatternType.WASH_TRADING, "u-2", ("a", "b")) != base
    assert alert_id(PatternType.WASH_TRADING, "u-1", ("a", "c")) != base
    assert alert_id(PatternType.WASH_TRADING, "u-1", ("b", "a")) != base
    # Separators inside ids cannot make two inputs collide.
    assert alert_id(PatternType.WASH_TRADING, "u-1", ("a,b",)) != base
    assert alert_id(PatternType.WASH_TRADING, "u-1", ("ab",)) != alert_id(
        PatternType.WASH_TRADING, "u-1", ("a", "b")
    )


def test_same_input_same_alerts():
    trades = [trade(i * 10 * SECOND, "SELL", 1_000, trade_id=f"s-{i}") for i in range(12)]
    assert alerts_of(run(trades)) == alerts_of(run(trades))


def test_alerts_carry_rule_version_and_features_with_thresholds():
    rules = Rules.from_parameters(42, {"flash.crash.min.sells": "3"})
    (alert,) = alerts_of(run([trade(i * SECOND, "SELL", 1_000) for i in range(3)], rules=rules))
    assert alert.rule_version == 42
    sells = next(f for f in alert.features if f.name == "sellsInWindow")
    assert (sells.value, sells.threshold, sells.comparison) == (3, 3, ">=")


def test_a_continuing_sell_burst_alerts_once_per_window_with_disjoint_evidence():
    # 40 sells 15 s apart: 10 minutes of selling, always >= 10 sells in any 5 minutes.
    results = run([trade(i * 15 * SECOND, "SELL", 1_000) for i in range(40)])
    alerts = alerts_of(results, "FLASH_CRASH")
    assert sum("FLASH_CRASH" in {p.value for p in r.analyzed.triggered_patterns} for r in results) == 31
    assert len(alerts) == 2
    first, second = alerts
    assert set(first.evidence).isdisjoint(second.evidence)
    assert second.timestamp > first.timestamp + 5 * MINUTE


def test_a_continuing_volume_spike_is_merged_into_its_alert():
    results = run([trade(i * 10 * SECOND, notional=1_000 * 2**i) for i in range(6)])
    assert len(alerts_of(results, "VOLUME_SPIKE")) == 1
    assert all("VOLUME_SPIKE" in {p.value for p in r.analyzed.triggered_patterns} for r in results[2:])


def test_wash_trading_is_suppressed_per_symbol():
    def cycle(start: int, symbol: str) -> list[Trade]:
        return [
            trade(start, "BUY", 100.0, quantity=100.0, symbol=symbol),
            trade(start + SECOND, "SELL", 100.0, quantity=100.0, symbol=symbol),
            trade(start + 2 * SECOND, "BUY", 100.0, quantity=100.0, symbol=symbol),
        ]

    results = run(cycle(0, "ADA/USDT") + cycle(10 * SECOND, "ADA/USDT") + cycle(20 * SECOND, "XRP/USDT"))
    assert [a.symbol for a in alerts_of(results, "WASH_TRADING")] == ["ADA/USDT", "XRP/USDT"]
    # After the window has passed the next cycle alerts again.
    again = run(cycle(2 * MINUTE, "ADA/USDT"), state=results[-1].state)
    assert len(alerts_of(again, "WASH_TRADING")) == 1


def test_sanctions_alerts_are_merged_for_an_hour():
    ref = reference(profile(sanctioned=True))
    results = run([trade(i * 10 * MINUTE) for i in range(8)], ref=ref)
    # At 0 minutes, then merged up to and including 60 minutes, then again at 70.
    hits = alerts_of(results, "SANCTIONS_HIT")
    assert [a.timestamp - results[0].analyzed.trade.timestamp for a in hits] == [0, 70 * MINUTE]
    assert all("SANCTIONED_USER" in r.analyzed.compliance_flags for r in results)


def test_suppression_memory_is_pruned_by_event_time():
    results = run([trade(i * SECOND, "SELL", 1_000) for i in range(10)])
    state = results[-1].state
    assert (PatternType.FLASH_CRASH, "") in state.fired
    later = run([trade(2 * HOUR + i * SECOND, "SELL", 1_000) for i in range(10)], state=state)
    assert len(alerts_of(later)) == 1
    assert list(later[-1].state.fired.values()) == [later[-1].analyzed.trade.timestamp]
