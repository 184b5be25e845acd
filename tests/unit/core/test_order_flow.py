"""The order-flow patterns (SPOOFING, LAYERING, QUOTE_STUFFING) and MOMENTUM_IGNITION, at each threshold.

Each boundary is tested with its near miss, and each order-flow pattern also with its fill
arriving after the order events it completes (the same alert, whichever comes last).
"""

from __future__ import annotations

import pytest

from riskengine.core import DEFAULT_RULES, OrderEvent, RiskAlert, Rules, Trade, UserState, evaluate_trade
from riskengine.core.early_signals import ONE_SIDED_LAYERS, RESTING_BAIT, SIGNAL_SCORE
from riskengine.core.order_book import MAX_ORDERS

from .builders import MINUTE, REFERENCE, SECOND, order, run_flow, trade

Flow = list[Trade | OrderEvent]


def alerts_of(flow: Flow, pattern: str, rules: Rules = DEFAULT_RULES) -> list[RiskAlert]:
    _state, alerts, _issues = run_flow(flow, rules)
    return [a for a in alerts if a.pattern.value == pattern]


# -- SPOOFING ---------------------------------------------------------------------------------


def spoof(
    *,
    history: int = 5,
    bait: float = 1_000.0,
    cancel_after_fill_s: float = 30.0,
    fill_side: str = "BUY",
    bait_fill: float = 0.0,
) -> tuple[Flow, Trade, OrderEvent]:
    """``history`` filled BUY orders of 100, a SELL bait of ``bait``, a fill, the bait cancelled."""
    flow: Flow = []
    for i in range(history):
        at = i * 10 * SECOND
        flow += [
            order(at, "PLACED", f"h{i}", "BUY", 100),
            order(at, "FILLED", f"h{i}", "BUY", 100),
            trade(at, "BUY", 100, quantity=100),
        ]
    flow.append(order(60 * SECOND, "PLACED", "bait", "SELL", bait, price=1.02))
    if bait_fill:
        flow.append(
            order(62 * SECOND, "FILLED", "bait", "SELL", bait, price=1.02, remaining=bait - bait_fill)
        )
    fill = trade(65 * SECOND, fill_side, 100, quantity=100)
    flow.append(fill)
    cancel = order(
        65 * SECOND + round(cancel_after_fill_s * 1000),
        "CANCELLED",
        "bait",
        "SELL",
        bait,
        price=1.02,
        remaining=bait - bait_fill,
    )
    flow.append(cancel)
    return flow, fill, cancel


def test_spoofing_a_bait_cancelled_30_s_after_the_opposite_fill():
    flow, fill, cancel = spoof(cancel_after_fill_s=30)
    [alert] = alerts_of(flow, "SPOOFING")
    assert alert.evidence[1:] == (cancel.event_id, fill.trade_id)
    assert alert.timestamp == cancel.timestamp and alert.symbol == "ADA/USDT"
    features = {f.name: f for f in alert.features}
    assert features["sizeRatio"].value == pytest.approx(10.0) and features["sizeRatio"].threshold == 10.0
    assert features["secondsFromFillToCancel"].value == 30.0
    kinds = [a.kind for a in alert.activity]
    assert kinds.count("PLACED") == 1 and "CANCELLED" in kinds and "TRADE" in kinds


def test_spoofing_not_when_cancelled_31_s_after_the_fill():
    flow, _fill, _cancel = spoof(cancel_after_fill_s=31)
    assert alerts_of(flow, "SPOOFING") == []


def test_spoofing_needs_ten_times_the_median_order_size():
    assert len(alerts_of(spoof(bait=1_000.0)[0], "SPOOFING")) == 1
    assert alerts_of(spoof(bait=999.0)[0], "SPOOFING") == []


def test_spoofing_needs_a_history_for_the_median():
    assert len(alerts_of(spoof(history=5)[0], "SPOOFING")) == 1
    assert alerts_of(spoof(history=4)[0], "SPOOFING") == []


def test_spoofing_needs_the_bait_unfilled_and_the_fill_on_the_other_side():
    assert alerts_of(spoof(bait_fill=1.0)[0], "SPOOFING") == []
    assert alerts_of(spoof(fill_side="SELL")[0], "SPOOFING") == []


def test_spoofing_found_when_the_fill_arrives_after_the_cancel():
    flow, fill, _cancel = spoof(cancel_after_fill_s=20)
    in_order = alerts_of(flow, "SPOOFING")
    late = [event for event in flow if event is not fill] + [fill]
    assert alerts_of(late, "SPOOFING") == in_order and len(in_order) == 1


# -- LAYERING ---------------------------------------------------------------------------------


def layers(
    prices: tuple[float, ...] = (1.01, 1.02, 1.03),
    cancels_after_fill_s: tuple[float | None, ...] = (5, 7, 9),
) -> tuple[Flow, Trade]:
    """SELL layers at ``prices``, a BUY fill at 10 s, each layer cancelled that long after it (None: kept)."""
    flow: Flow = [
        order(i * SECOND, "PLACED", f"l{i}", "SELL", 100, price=price) for i, price in enumerate(prices)
    ]
    fill = trade(10 * SECOND, "BUY", 100, quantity=100)
    flow.append(fill)
    cancels = [
        order(10 * SECOND + round(after * 1000), "CANCELLED", f"l{i}", "SELL", 100, price=prices[i])
        for i, after in enumerate(cancels_after_fill_s)
        if after is not None
    ]
    return flow + sorted(cancels, key=lambda event: event.timestamp), fill


def test_layering_three_layers_at_three_levels_most_cancelled():
    flow, fill = layers()
    [alert] = alerts_of(flow, "LAYERING")
    assert fill.trade_id in alert.evidence
    assert alert.timestamp == fill.timestamp + 7 * SECOND  # the second cancel makes the majority
    features = {f.name: f.value for f in alert.features}
    assert features["layers"] == 3 and features["priceLevels"] == 3


def test_layering_not_with_two_price_levels():
    assert alerts_of(layers(prices=(1.01, 1.01, 1.02))[0], "LAYERING") == []


def test_layering_not_with_two_layers():
    assert alerts_of(layers(prices=(1.01, 1.02), cancels_after_fill_s=(5, 7))[0], "LAYERING") == []


def test_layering_needs_most_layers_cancelled_within_30_s():
    assert len(alerts_of(layers(cancels_after_fill_s=(5, 30, None))[0], "LAYERING")) == 1
    assert alerts_of(layers(cancels_after_fill_s=(5, 31, None))[0], "LAYERING") == []
    assert alerts_of(layers(cancels_after_fill_s=(5, None, None))[0], "LAYERING") == []


def test_layering_found_when_the_fill_arrives_after_the_cancels():
    flow, fill = layers()
    in_order = alerts_of(flow, "LAYERING")
    late = [event for event in flow if event is not fill] + [fill]
    assert alerts_of(late, "LAYERING") == in_order and len(in_order) == 1


# -- QUOTE_STUFFING ---------------------------------------------------------------------------


def stuffing(orders: int, fast: int, slow_filled: bool = True) -> Flow:
    """``orders`` SELL orders 1 s apart in one cycle; ``fast`` cancelled after 0.5 s, the rest after
    6 s, those partly filled first (so they count as neither fast nor unfilled)."""
    flow: list[OrderEvent] = []
    for i in range(orders):
        at = i * SECOND
        flow.append(order(at, "PLACED", f"q{i}", "SELL", 10))
        if i < fast:
            flow.append(order(at + 500, "CANCELLED", f"q{i}", "SELL", 10))
        else:
            if slow_filled:
                flow.append(order(at + 3 * SECOND, "FILLED", f"q{i}", "SELL", 10, remaining=5))
            flow.append(
                order(at + 6 * SECOND, "CANCELLED", f"q{i}", "SELL", 10, remaining=5 if slow_filled else 10)
            )
    flow.sort(key=lambda event: event.timestamp)
    return list(flow)


def test_quote_stuffing_500_orders_all_cancelled_at_once():
    [alert] = alerts_of(stuffing(500, 500), "QUOTE_STUFFING")
    features = {f.name: f for f in alert.features}
    assert features["orders"].value == 500 and features["orders"].threshold == 500
    assert len(alert.evidence) == 10


def test_quote_stuffing_not_with_499_orders():
    assert alerts_of(stuffing(499, 499), "QUOTE_STUFFING") == []


def test_quote_stuffing_needs_a_share_of_99_percent():
    assert len(alerts_of(stuffing(500, 495), "QUOTE_STUFFING")) == 1  # 0.99
    assert alerts_of(stuffing(500, 490), "QUOTE_STUFFING") == []  # 0.98


def test_quote_stuffing_unfilled_share_alone_is_enough():
    # 490 fast cancels (0.98), but no order is ever filled: unfilled share 1.0.
    assert len(alerts_of(stuffing(500, 490, slow_filled=False), "QUOTE_STUFFING")) == 1


def test_quote_stuffing_counts_orders_by_their_cycle():
    # 300 orders in one cycle and 300 in the next: neither cycle reaches 500.
    first = stuffing(300, 300)
    second: Flow = [
        order(
            event.timestamp - first[0].timestamp + 10 * MINUTE,
            event.event_type.value,
            "n" + event.order_id,
            "SELL",
            10,
        )
        for event in first
        if isinstance(event, OrderEvent)
    ]
    assert alerts_of(first + second, "QUOTE_STUFFING") == []


# -- MOMENTUM_IGNITION ------------------------------------------------------------------------


def momentum(
    prices: tuple[float, ...] = (1.0, 1.005, 1.0101),
    spacing_s: float = 10.0,
    reversal_after_s: float = 60.0,
    order_types: tuple[str, ...] = (),
) -> Flow:
    """Market BUY trades at ``prices`` every ``spacing_s`` (or of ``order_types``), then a SELL
    ``reversal_after_s`` after the last."""
    types = order_types or ("MARKET",) * len(prices)
    flow: Flow = [
        trade(round(i * spacing_s * 1000), "BUY", 100 * price, quantity=100, order_type=kind)
        for i, (price, kind) in enumerate(zip(prices, types, strict=True))
    ]
    last = round((len(prices) - 1) * spacing_s * 1000)
    flow.append(trade(last + round(reversal_after_s * 1000), "SELL", 101, quantity=100))
    return flow


def test_momentum_ignition_a_one_percent_burst_then_the_other_side():
    [alert] = alerts_of(momentum(), "MOMENTUM_IGNITION")
    assert len(alert.evidence) == 4
    features = {f.name: f.value for f in alert.features}
    assert features["burstTrades"] == 3 and features["priceMove"] >= 0.01


def test_momentum_ignition_not_below_a_one_percent_move():
    assert alerts_of(momentum(prices=(1.0, 1.005, 1.0099)), "MOMENTUM_IGNITION") == []


def test_momentum_ignition_needs_three_trades_within_30_s():
    assert len(alerts_of(momentum(spacing_s=15.0), "MOMENTUM_IGNITION")) == 1
    assert alerts_of(momentum(spacing_s=15.5), "MOMENTUM_IGNITION") == []
    assert alerts_of(momentum(prices=(1.0, 1.0101)), "MOMENTUM_IGNITION") == []


def test_momentum_ignition_needs_aggressive_trades():
    assert len(alerts_of(momentum(order_types=("IOC", "MARKET", "fok")), "MOMENTUM_IGNITION")) == 1
    assert alerts_of(momentum(order_types=("MARKET", "LIMIT", "MARKET")), "MOMENTUM_IGNITION") == []


def test_momentum_ignition_needs_the_reversal_within_2_minutes():
    assert len(alerts_of(momentum(reversal_after_s=120.0), "MOMENTUM_IGNITION")) == 1
    assert alerts_of(momentum(reversal_after_s=121.0), "MOMENTUM_IGNITION") == []


def test_momentum_ignition_a_selling_burst_must_push_the_price_down():
    flow: Flow = [
        trade(i * 10 * SECOND, "SELL", 100 * p, quantity=100, order_type="MARKET")
        for i, p in enumerate((1.0, 0.995, 0.99))
    ]
    flow.append(trade(80 * SECOND, "BUY", 99, quantity=100))
    assert len(alerts_of(flow, "MOMENTUM_IGNITION")) == 1
    rising: Flow = [
        trade(i * 10 * SECOND, "SELL", 100 * p, quantity=100, order_type="MARKET")
        for i, p in enumerate((1.0, 1.005, 1.011))
    ]
    rising.append(trade(80 * SECOND, "BUY", 99, quantity=100))
    assert alerts_of(rising, "MOMENTUM_IGNITION") == []


# -- inconsistent events ----------------------------------------------------------------------


def test_inconsistent_order_events_are_flagged_and_change_nothing():
    flow: Flow = [
        order(0, "FILLED", "ghost", "BUY", 10),
        order(SECOND, "PLACED", "a", "BUY", 10),
        order(2 * SECOND, "FILLED", "a", "BUY", 10, remaining=11),
        order(3 * SECOND, "FILLED", "a", "BUY", 10, remaining=-1),
        order(4 * SECOND, "CANCELLED", "a", "SELL", 10),
        order(5 * SECOND, "CANCELLED", "a", "BUY", 10),
        order(6 * SECOND, "CANCELLED", "a", "BUY", 10),
        order(7 * SECOND, "PLACED", "a", "BUY", 10),
        order(8 * SECOND, "PLACED", "b", "BUY", 10),
    ]
    state, _alerts, issues = run_flow(flow)
    assert issues == [
        "unknown-order",
        None,
        "remaining-out-of-range",
        "remaining-out-of-range",
        "changed-instrument",
        None,
        "after-terminal",
        "placed-twice",
        None,
    ]
    assert [kind for _at, kind, _id in state.orders.issue_list()] == [i for i in issues if i]
    assert state.orders.orders["a"].status == 1 and state.orders.orders["a"].closed_at == flow[5].timestamp
    assert state.orders.orders["b"].status == 0  # the user's later events still apply


def test_an_amend_up_after_a_partial_fill_is_applied_and_an_impossible_one_flagged():
    # Venues let an order's size be raised (it loses its time priority): not an inconsistency.
    placed = order(0, "PLACED", "a", "SELL", 10)
    partial = order(SECOND, "FILLED", "a", "SELL", 10, remaining=4)
    amend_up = order(2 * SECOND, "AMENDED", "a", "SELL", 30, remaining=24)
    # Remaining above the new quantity cannot be.
    impossible = order(3 * SECOND, "AMENDED", "a", "SELL", 30, remaining=31)
    state, _alerts, issues = run_flow([placed, partial, amend_up, impossible])
    assert issues == [None, None, None, "remaining-out-of-range"]
    kept = state.orders.orders["a"]
    assert (kept.quantity, kept.remaining, kept.filled, kept.status) == (30, 24, 6, 0)
    assert kept.placed_quantity == 10  # the size it was placed with, as the spoofing baseline saw it


def test_a_redelivered_order_event_changes_nothing():
    placed = order(0, "PLACED", "a", "BUY", 10)
    fill = order(SECOND, "FILLED", "a", "BUY", 10, remaining=4)
    state, _alerts, issues = run_flow([placed, fill, fill])
    assert issues == [None, None, "duplicate-event"]
    assert state.orders.orders["a"].filled == 6


def test_the_order_book_is_bounded():
    flow: Flow = [order(i, "PLACED", f"o{i}", "BUY", 1) for i in range(MAX_ORDERS + 50)]
    state, _alerts, _issues = run_flow(flow)
    assert len(state.orders.orders) == MAX_ORDERS
    assert "o0" not in state.orders.orders and f"o{MAX_ORDERS + 49}" in state.orders.orders


def test_closed_orders_are_forgotten_after_the_order_horizon():
    flow: Flow = [order(0, "PLACED", "a", "BUY", 1), order(SECOND, "CANCELLED", "a", "BUY", 1)]
    flow.append(order(SECOND + DEFAULT_RULES.order_horizon_ms + 1, "PLACED", "b", "BUY", 1))
    state, _alerts, _issues = run_flow(flow)
    assert list(state.orders.orders) == ["b"]


def test_order_events_share_the_users_lateness_policy():
    state = UserState()
    late_cancel = order(0, "CANCELLED", "bait", "SELL", 1_000)
    flow, _fill, _cancel = spoof()
    state, alerts, _issues = run_flow(flow[:-1], state=state)
    # A trade 5 minutes later moves the watermark; the bait's cancel is then beyond the lateness.
    state, alerts, issues = run_flow([trade(7 * MINUTE, "BUY", 100, quantity=100)], state=state)
    late = order(70 * SECOND, "CANCELLED", "bait", "SELL", 1_000, price=1.02, event_id=late_cancel.event_id)
    state, alerts, issues = run_flow([late], state=state)
    assert alerts == [] and issues == [None]
    # Applied to the book all the same: the bait is closed (and, being older than the order
    # horizon, forgotten at once) rather than left open.
    assert "bait" not in state.orders.orders


# -- order-flow set-ups at the fill (scoring signals, no alert) -------------------------------


def analyzed_fill(flow: Flow, fill: Trade) -> tuple[tuple[str, ...], float]:
    """The fill's earlySignals and behavioral score, with only what came before it applied."""
    before = flow[: flow.index(fill)]
    state, _alerts, _issues = run_flow(before)
    result = evaluate_trade(state, fill, REFERENCE, DEFAULT_RULES)
    return result.analyzed.behavioral.early_signals, result.analyzed.breakdown.behavioral


def test_a_fill_against_a_resting_bait_scores_high_before_the_cancel():
    flow, fill, _cancel = spoof()
    assert analyzed_fill(flow, fill) == ((RESTING_BAIT,), SIGNAL_SCORE[RESTING_BAIT])
    small, small_fill, _ = spoof(bait=999.0)  # below 10x the median: no bait
    assert analyzed_fill(small, small_fill) == ((), 0.0)
    same_side, same_fill, _ = spoof(fill_side="SELL")
    assert analyzed_fill(same_side, same_fill)[0] == ()


def test_a_fill_against_one_sided_layers_scores_high_before_the_cancels():
    flow, fill = layers()
    assert analyzed_fill(flow, fill) == ((ONE_SIDED_LAYERS,), SIGNAL_SCORE[ONE_SIDED_LAYERS])
    two_levels, fill_2 = layers(prices=(1.01, 1.01, 1.02))
    assert analyzed_fill(two_levels, fill_2)[0] == ()


def test_a_two_sided_book_is_no_layering_set_up():
    flow, fill = layers()
    # The account also rests a bid: a market maker's ladder, not layers.
    flow.insert(0, order(0, "PLACED", "bid", "BUY", 100, price=0.99))
    assert analyzed_fill(flow, fill)[0] == ()
