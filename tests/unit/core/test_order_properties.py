"""Properties of the order flow: determinism, per-user independence, bounds, lossless state."""

from __future__ import annotations

import statistics

from hypothesis import given, settings
from hypothesis import strategies as st

from riskengine.core import (
    DEFAULT_RULES,
    OrderEvent,
    OrderEventType,
    ReferenceData,
    RiskAlert,
    Side,
    Trade,
    UserState,
    decode_state,
    encode_state,
    evaluate_order,
    evaluate_trade,
)
from riskengine.core.order_book import (
    MAX_ISSUES,
    MAX_ORDER_EVENTS,
    MAX_ORDERS,
    MAX_SYMBOLS,
    SIZE_HISTORY,
    _median,
)

from .builders import T0

SYMBOLS = ["BTC/USDT", "ADA/USDT", "SOL/USDT"]
REFERENCE = ReferenceData()
Item = Trade | OrderEvent


@st.composite
def flows(draw, user: str = "u-a", max_size: int = 150) -> list[Item]:
    """One user's trades and order events: mostly in time order, with jitter, bursts and odd events."""
    count = draw(st.integers(min_value=0, max_value=max_size))
    clock = T0
    items: list[Item] = []
    for number in range(count):
        clock += draw(st.sampled_from([0, 1, 300, 2_000, 10_000, 31_000, 200_000, 700_000]))
        at = max(0, clock - draw(st.sampled_from([0, 0, 0, 20_000, 120_000])))
        symbol = draw(st.sampled_from(SYMBOLS))
        side = draw(st.sampled_from([Side.BUY, Side.SELL]))
        price = draw(st.sampled_from([0.98, 1.0, 1.005, 1.01, 1.02, 1.05]))
        if draw(st.integers(0, 3)) == 0:
            quantity = draw(st.sampled_from([1.0, 10.0, 100.0]))
            items.append(
                Trade(
                    f"{user}-t{number}",
                    user,
                    "c",
                    symbol,
                    side,
                    quantity,
                    price,
                    quantity * price,
                    at,
                    "X",
                    "LIMIT",
                )
            )
            continue
        kind = draw(st.sampled_from(list(OrderEventType)))
        quantity = draw(st.sampled_from([1.0, 10.0, 100.0, 1_000.0, 5_000.0]))
        remaining = draw(st.sampled_from([quantity, quantity / 2, 0.0, quantity + 1, -1.0]))
        items.append(
            OrderEvent(
                event_id=f"{user}-e{number}" if draw(st.integers(0, 15)) else f"{user}-e{max(number - 1, 0)}",
                order_id=f"{user}-o{draw(st.integers(0, 40))}",
                user_id=user,
                symbol=symbol,
                side=side,
                event_type=kind,
                price=price,
                quantity=quantity,
                remaining_quantity=remaining,
                timestamp=at,
            )
        )
    return items


def apply(state: UserState, item: Item) -> tuple[RiskAlert, ...]:
    if isinstance(item, Trade):
        return evaluate_trade(state, item, REFERENCE, DEFAULT_RULES).alerts
    return evaluate_order(state, item, REFERENCE, DEFAULT_RULES).alerts


def run(items: list[Item]) -> tuple[dict[str, UserState], list[RiskAlert]]:
    states: dict[str, UserState] = {}
    alerts: list[RiskAlert] = []
    for item in items:
        alerts.extend(apply(states.setdefault(item.user_id, UserState()), item))
    return states, alerts


@settings(max_examples=60, deadline=None)
@given(flows())
def test_the_same_flow_gives_the_same_alerts_and_state(items):
    first_states, first_alerts = run(items)
    second_states, second_alerts = run(items)
    assert first_alerts == second_alerts
    assert {u: encode_state(s) for u, s in first_states.items()} == {
        u: encode_state(s) for u, s in second_states.items()
    }


@settings(max_examples=60, deadline=None)
@given(flows("u-a", 80), flows("u-b", 80), st.randoms(use_true_random=False))
def test_interleaving_users_changes_no_users_results(first, second, rng):
    # Any merge that keeps each user's own order gives each user the same alerts and state.
    merged: list[Item] = []
    a, b = list(first), list(second)
    while a or b:
        source = a if (a and (not b or rng.random() < 0.5)) else b
        merged.append(source.pop(0))
    alone_a, alerts_a = run(first)
    alone_b, alerts_b = run(second)
    together, alerts = run(merged)
    assert [x for x in alerts if x.user_id == "u-a"] == alerts_a
    assert [x for x in alerts if x.user_id == "u-b"] == alerts_b
    for user, state in {**alone_a, **alone_b}.items():
        assert together[user] == state


@settings(max_examples=60, deadline=None)
@given(flows(max_size=300))
def test_the_order_book_stays_within_its_bounds(items):
    state = UserState()
    for item in items:
        apply(state, item)
        book = state.orders
        assert len(book.orders) <= MAX_ORDERS
        assert all(len(order.event_ids) <= MAX_ORDER_EVENTS for order in book.orders.values())
        assert len(book.sizes) <= MAX_SYMBOLS and all(len(h) <= SIZE_HISTORY for h in book.sizes.values())
        assert len(book.cycles) <= MAX_SYMBOLS and all(len(c) <= 2 for c in book.cycles.values())
        assert len(book.issues) <= MAX_ISSUES


@settings(max_examples=60, deadline=None)
@given(flows(), st.integers(min_value=0, max_value=150))
def test_a_state_through_its_encoding_behaves_like_the_one_in_memory(items, cut):
    kept = UserState()
    for item in items[:cut]:
        apply(kept, item)
    restored = decode_state(encode_state(kept))
    assert restored == kept
    for item in items[cut:]:
        assert apply(restored, item) == apply(kept, item)
    assert encode_state(restored) == encode_state(kept)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(min_value=1e-9, max_value=1e12), min_size=1, max_size=SIZE_HISTORY))
def test_the_spoofing_baseline_median_is_the_standard_librarys(sizes: list[float]) -> None:
    # The order book's own median (compiled) must give statistics.median's float, bit for bit.
    assert _median(sizes) == float(statistics.median(sizes))
