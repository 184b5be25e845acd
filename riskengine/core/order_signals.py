"""Order-flow set-ups visible at a fill: what SPOOFING and LAYERING look like before the cancel.

SPOOFING and LAYERING are only complete when the bait or the layers are cancelled after the
account's fill, so at the fill itself no pattern matches yet. The set-up is already there, in the
account's own order book, and a trade executed against it is riskier than the same trade without
it. Two signals, computed for every trade of an account that has orders in the trade's symbol:

- ``RESTING_BAIT``: an order of the account on the opposite side, resting at the trade's time,
  at least ``spoofing.size.ratio`` x the account's median order size in the symbol when it was
  placed (SPOOFING's size test, on an order not yet cancelled).
- ``ONE_SIDED_LAYERS``: at least ``layering.min.orders`` resting orders on the opposite side at
  ``layering.min.levels`` or more prices, and none on the trade's own side (LAYERING's book at
  the fill; a market maker quoting both sides does not show it).

They feed the behavioral component (:mod:`riskengine.core.scoring`) and are listed in
``behavioralAnalysis.orderFlowSignals``; they raise no alert on their own.
"""

from __future__ import annotations

from .models import Trade
from .order_book import OrderBook
from .rules import Rules

RESTING_BAIT = "RESTING_BAIT"
ONE_SIDED_LAYERS = "ONE_SIDED_LAYERS"


def order_flow_signals(book: OrderBook, trade: Trade, rules: Rules) -> tuple[str, ...]:
    """The set-ups of ``book`` that ``trade`` executed against (see the module docstring)."""
    sell = trade.side.value == "SELL"
    symbol = trade.symbol
    timestamp = trade.timestamp
    bait = False
    two_sided = False
    opposite = 0
    prices: set[float] = set()
    for order in book.orders.values():
        if order.symbol != symbol or not order.open_at(timestamp) or order.order_id == trade.order_id:
            continue
        if order.sell == sell:
            two_sided = True
            continue
        opposite += 1
        prices.add(order.price)
        if order.baseline > 0.0 and order.placed_quantity >= rules.spoof_ratio * order.baseline:
            bait = True
    signals: tuple[str, ...] = (RESTING_BAIT,) if bait else ()
    if not two_sided and opposite >= rules.layering_min_orders and len(prices) >= rules.layering_levels:
        signals += (ONE_SIDED_LAYERS,)
    return signals
