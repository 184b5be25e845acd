"""Out-of-order trades: within the allowed lateness they are matched in event-time order; beyond
it they are analyzed, flagged late and kept out of the pattern windows. Redeliveries are no-ops."""

from __future__ import annotations

from riskengine.core import Rules, Trade

from .builders import MINUTE, SECOND, alerts_of, patterns_of, run, trade


def wash_trades() -> list[Trade]:
    return [
        trade(0, "BUY", 1000.0, quantity=1000.0),
        trade(20 * SECOND, "SELL", 950.0, quantity=950.0),
        trade(45 * SECOND, "BUY", 1050.0, quantity=1050.0),
    ]


def test_a_late_middle_trade_within_lateness_completes_the_pattern_at_its_event_time_position():
    first, middle, last = wash_trades()
    results = run([first, last, middle])  # the SELL arrives 25 s after the later BUY
    assert patterns_of(results) == [set(), set(), {"WASH_TRADING"}]
    (alert,) = alerts_of(results)
    assert alert.evidence == (first.trade_id, middle.trade_id, last.trade_id)
    assert alert.timestamp == last.timestamp  # the last evidence in event time
    assert not results[2].analyzed.behavioral.late_arrival


def test_in_order_and_out_of_order_arrival_give_the_same_alert_id():
    first, middle, last = wash_trades()
    (in_order,) = alerts_of(run([first, middle, last]))
    (out_of_order,) = alerts_of(run([first, last, middle]))
    assert in_order.alert_id == out_of_order.alert_id


def test_a_late_sell_within_lateness_counts_for_the_flash_crash():
    sells = [trade(i * 20 * SECOND, "SELL", 1_000) for i in range(10)]
    late = sells.pop(8)  # arrives after the sell 20 s newer than it
    results = run([*sells, late])
    assert len(alerts_of(results, "FLASH_CRASH")) == 1
    assert late.trade_id in alerts_of(results)[0].evidence


def test_lateness_edge_is_inclusive():
    rules = Rules.from_parameters(1, {"event.allowed.lateness.seconds": 60})
    newest = trade(2 * MINUTE)
    at_edge = trade(MINUTE)
    beyond = trade(MINUTE - 1)
    results = run([newest, at_edge, beyond], rules=rules)
    assert [r.analyzed.behavioral.late_arrival for r in results] == [False, False, True]
    assert ["LATE_EVENT" in r.analyzed.compliance_flags for r in results] == [False, False, True]


def test_beyond_lateness_is_analyzed_flagged_and_kept_out_of_pattern_windows():
    first, middle, last = wash_trades()
    newer = trade(3 * MINUTE, "BUY", 10.0, quantity=10.0)
    results = run([first, last, newer, middle])  # the SELL arrives after a trade 2:40 newer
    late = results[-1].analyzed
    assert late.behavioral.late_arrival and "LATE_EVENT" in late.compliance_flags
    assert late.behavioral.trades_in_window == 0 and late.volume.trades_in_window == 0
    assert alerts_of(results, "WASH_TRADING") == []
    state = results[-1].state
    assert middle.trade_id not in state.recent.ids
    # It still counts for the running aggregates.
    assert state.count == 4
    # A later BUY cannot use the late SELL either.
    (after,) = run([trade(3 * MINUTE + SECOND, "BUY", 1000.0, quantity=1000.0)], state=state)
    assert after.alerts == ()


def test_trade_level_patterns_still_fire_for_a_late_trade():
    results = run([trade(10 * MINUTE), trade(0, notional=700_000, symbol="BTC/USDT")])
    assert results[1].analyzed.behavioral.late_arrival
    assert [a.pattern.value for a in results[1].alerts] == ["LARGE_ORDER"]


def test_a_redelivered_trade_changes_nothing_and_raises_nothing():
    first, middle, last = wash_trades()
    results = run([first, middle, last, last])
    duplicate = results[-1]
    assert "DUPLICATE_EVENT" in duplicate.analyzed.compliance_flags
    assert duplicate.alerts == ()
    assert {"WASH_TRADING"} == {p.value for p in duplicate.analyzed.triggered_patterns}
    assert duplicate.state.count == 3 and len(duplicate.state.recent) == 3


def test_same_timestamp_different_ids_are_two_trades():
    a = trade(0, "SELL")
    b = trade(0, "SELL")
    results = run([a, b])
    assert results[-1].state.count == 2
    assert results[-1].analyzed.behavioral.sells_in_window == 2
