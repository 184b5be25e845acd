"""LAYERING: resting orders at several price levels on one side, a fill on the other, most cancelled.

Keyed by (account, symbol, fill). A match is a fill of the account (one of its trades) and the
account's orders in the symbol on the opposite side that were resting when it happened (placed
before it, not closed before it), such that

- there are at least ``layering.min.orders`` (3) of these layers, at at least
  ``layering.min.levels`` (3) distinct prices,
- and more than ``layering.cancel.ratio`` (0.5: most) of them were cancelled within
  ``layering.cancel.window.seconds`` (30, inclusive) after the fill.

The match is found at the cancel that makes the cancelled layers a majority (or at the fill, when
it arrives after those cancels). Its evidence is the same either way: every layer's PLACED event
id, the fill's trade id, and the CANCELLED event ids of the first cancels, in time order, that
make the majority; its time is the last of those cancels.
"""

from __future__ import annotations

from ..models import Feature, OrderEventType, PatternType, Severity
from ..order_book import CANCELLED, OrderLife
from ..rules import Rules
from ..state import UserState
from .base import Match, OrderContext, OrderFlowDetector, TradeContext
from .order_flow import fills, story


class Layering(OrderFlowDetector):
    """Several resting layers on one side, an opposite fill, most layers cancelled soon after."""

    pattern = PatternType.LAYERING
    severity = Severity.HIGH
    description = (
        "Potential layering: orders at several price levels on one side, a fill on the other, "
        "the layers cancelled"
    )
    recommended_action = "Review the account's order flow and report to compliance"

    def merge_window_ms(self, rules: Rules) -> int | None:
        """Later cancels of the same layers merge into the alert."""
        return rules.layering_window_ms

    def detect_order(self, context: OrderContext) -> Match | None:
        """At a layer's cancel: try the opposite fills it followed, latest first."""
        order = context.order
        if context.event.event_type is not OrderEventType.CANCELLED:
            return None
        state, rules = context.state, context.rules
        window = state.recent
        earliest = max(order.placed_at + 1, order.closed_at - rules.layering_window_ms)
        for fill in reversed(fills(window, order.symbol, not order.sell, earliest, order.closed_at)):
            found = self._match(fill, order.symbol, order.sell, state, rules)
            if found is not None:
                return found
        return None

    def detect(self, context: TradeContext) -> Match | None:
        """At a fill that arrived after the layers' cancels."""
        if context.position < 0:
            return None
        trade = context.trade
        return self._match(
            context.position, trade.symbol, trade.side.value != "SELL", context.state, context.rules
        )

    def _match(
        self, fill: int, symbol: str, layer_sell: bool, state: UserState, rules: Rules
    ) -> Match | None:
        window = state.recent
        fill_at = window.times[fill]
        layers = [
            o
            for o in state.orders.in_symbol(symbol, layer_sell)
            if o.placed_at < fill_at and o.open_at(fill_at)
        ]
        if len(layers) < rules.layering_min_orders:
            return None
        levels = len({o.price for o in layers})
        if levels < rules.layering_levels:
            return None
        deadline = fill_at + rules.layering_window_ms
        cancelled = sorted(
            (o for o in layers if o.status == CANCELLED and fill_at <= o.closed_at <= deadline),
            key=lambda o: (o.closed_at, o.order_id),
        )
        needed = int(len(layers) * rules.layering_ratio) + 1
        if len(cancelled) < needed:
            return None
        majority: list[OrderLife] = cancelled[:needed]
        last = majority[-1].closed_at
        cancel_ids = tuple(o.closed_event_id or "" for o in majority)
        return Match(
            key=f"{symbol}/{window.ids[fill]}",
            evidence=(*(o.placed_event_id for o in layers), window.ids[fill], *cancel_ids),
            timestamp=last,
            symbol=symbol,
            features=(
                Feature("layers", len(layers), rules.layering_min_orders, ">="),
                Feature("priceLevels", levels, rules.layering_levels, ">="),
                Feature("cancelledShare", needed / len(layers), rules.layering_ratio, ">"),
                Feature(
                    "secondsFromFillToCancels", (last - fill_at) / 1000, rules.layering_window_ms / 1000, "<="
                ),
            ),
            activity=story(layers, window, symbol, min(o.placed_at for o in layers), last),
        )


DETECTOR = Layering()
