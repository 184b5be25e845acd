"""QUOTE_STUFFING: floods of orders that are cancelled at once or never filled.

Keyed by (account, symbol, cycle). Event time is cut into aligned cycles of
``quote.stuffing.cycle.minutes`` (10); an order belongs to the cycle it was placed in. A cycle
matches once it holds at least ``quote.stuffing.min.orders`` (500) orders and either share reaches
``quote.stuffing.ratio`` (0.99):

- fast-cancelled: orders cancelled within ``quote.stuffing.fast.cancel.seconds`` (5, inclusive) of
  their placement, over the cycle's orders;
- unfilled: orders cancelled without any fill, over the cycle's orders.

The shares are evaluated at every order event of the cycle, over the orders placed so far (an
order still resting counts in neither numerator), so the alert comes at the first event at which
the cycle qualifies. Evidence: the PLACED event ids of the cycle's first 10 orders.
"""

from __future__ import annotations

from ..models import Feature, PatternType, Severity
from ..rules import Rules
from .base import Match, OrderContext, OrderFlowDetector


class QuoteStuffing(OrderFlowDetector):
    """A cycle of many orders, nearly all cancelled at once or never filled."""

    pattern = PatternType.QUOTE_STUFFING
    severity = Severity.MEDIUM
    description = "Potential quote stuffing: a flood of orders cancelled almost at once or never filled"
    recommended_action = "Review the account's order-to-trade ratio and throttle its order entry"

    def merge_window_ms(self, rules: Rules) -> int | None:
        """One alert per cycle."""
        return rules.quote_cycle_ms

    def detect_order(self, context: OrderContext) -> Match | None:
        """Check the cycle of the event's order."""
        rules = context.rules
        book = context.state.orders
        cycle = book.cycle_of(context.order, rules.quote_cycle_ms)
        if cycle is None or cycle.placed < rules.quote_min_orders:
            return None
        fast = cycle.fast_cancels / cycle.placed
        unfilled = cycle.unfilled_cancels / cycle.placed
        if fast < rules.quote_ratio and unfilled < rules.quote_ratio:
            return None
        symbol = context.order.symbol
        sampled = set(cycle.sample)
        # The sampled orders still kept (closed ones go after the order horizon).
        orders = [o for o in book.of_symbol(symbol) if o.placed_event_id in sampled]
        return Match(
            key=f"{symbol}/{cycle.start}",
            evidence=tuple(cycle.sample),
            timestamp=context.event.timestamp,
            symbol=symbol,
            features=(
                Feature("orders", cycle.placed, rules.quote_min_orders, ">="),
                Feature("fastCancelShare", fast, rules.quote_ratio, ">="),
                Feature("unfilledShare", unfilled, rules.quote_ratio, ">="),
                Feature("cycleStart", cycle.start),
                Feature("fastCancelSeconds", rules.quote_fast_cancel_ms / 1000),
            ),
            activity=tuple(
                sorted((a for o in orders for a in o.activity()), key=lambda a: (a.timestamp, a.event_id))
            ),
        )


DETECTOR = QuoteStuffing()
