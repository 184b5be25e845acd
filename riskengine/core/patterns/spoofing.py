"""SPOOFING: a large order as bait on one side, a fill on the other, the bait cancelled unfilled.

Keyed by (account, symbol, bait order). A match is an order of the account that

- was at least ``spoofing.size.ratio`` (10) x the median size of the account's previous orders in
  the symbol when it was placed (the median of up to 32 earlier orders; at least
  ``spoofing.min.history`` (5) of them, else no baseline and no match),
- was cancelled without any fill,
- and was cancelled within ``spoofing.cancel.window.seconds`` (30, inclusive) after a fill of the
  account on the opposite side in the same symbol, that fill coming after the bait was placed.

When several fills qualify, the latest one is the evidence. The match is found at the bait's
cancel, or at the fill if that arrives later (out of order, within the allowed lateness), with the
same evidence either way: the bait's PLACED and CANCELLED event ids and the fill's trade id.
"""

from __future__ import annotations

from ..models import Feature, OrderEventType, PatternType, Severity
from ..order_book import CANCELLED, OrderLife
from ..rules import Rules
from ..state import UserState
from .base import Match, OrderContext, OrderFlowDetector, TradeContext
from .order_flow import fills, story


class Spoofing(OrderFlowDetector):
    """A large order cancelled unfilled soon after an opposite-side fill."""

    pattern = PatternType.SPOOFING
    severity = Severity.HIGH
    description = (
        "Potential spoofing: a large order placed as bait, a fill on the other side, the bait cancelled"
    )
    recommended_action = "Review the account's order flow and report to compliance"

    def merge_window_ms(self, rules: Rules) -> int | None:
        """Matches of one bait order merge (its cancel and a late fill find the same one)."""
        return rules.spoof_window_ms

    def detect_order(self, context: OrderContext) -> Match | None:
        """At the bait's cancel: look for the fill it followed."""
        if context.event.event_type is not OrderEventType.CANCELLED:
            return None
        return self._match(context.order, context.state, context.rules)

    def detect(self, context: TradeContext) -> Match | None:
        """At a fill that arrived after the bait's cancel."""
        if context.position < 0:
            return None
        trade = context.trade
        sell = trade.side.value == "SELL"
        timestamp = trade.timestamp
        rules = context.rules
        for order in context.state.orders.in_symbol(trade.symbol, not sell):
            if order.status == CANCELLED and order.placed_at < timestamp <= order.closed_at:
                found = self._match(order, context.state, rules)
                if found is not None:
                    return found
        return None

    def _match(self, order: OrderLife, state: UserState, rules: Rules) -> Match | None:
        if order.status != CANCELLED or order.filled > 0.0 or order.baseline <= 0.0:
            return None
        ratio = order.placed_quantity / order.baseline
        if ratio < rules.spoof_ratio:
            return None
        window = state.recent
        earliest = max(order.placed_at + 1, order.closed_at - rules.spoof_window_ms)
        found = fills(window, order.symbol, not order.sell, earliest, order.closed_at)
        if not found:
            return None
        fill = found[-1]
        fill_at = window.times[fill]
        cancel_id = order.closed_event_id
        assert cancel_id is not None
        return Match(
            key=f"{order.symbol}/{order.order_id}",
            evidence=(order.placed_event_id, cancel_id, window.ids[fill]),
            timestamp=order.closed_at,
            symbol=order.symbol,
            features=(
                Feature("sizeRatio", ratio, rules.spoof_ratio, ">="),
                Feature(
                    "secondsFromFillToCancel",
                    (order.closed_at - fill_at) / 1000,
                    rules.spoof_window_ms / 1000,
                    "<=",
                ),
                Feature("orderQuantity", order.placed_quantity),
                Feature("medianOrderQuantity", order.baseline),
                Feature("filledQuantity", order.filled, 0.0, "<="),
            ),
            activity=story((order,), window, order.symbol, order.placed_at, order.closed_at),
        )


DETECTOR = Spoofing()
