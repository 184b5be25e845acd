"""Early signals: a trade that is part of a pattern's set-up before the pattern is complete.

SPOOFING and LAYERING complete only when the bait or the layers are cancelled after the
account's fill, and ROUND_TRIP_WASH only at the third round trip, seen by the account-pair stage.
At the trade itself no pattern matches yet, but the set-up is already visible in the account's
own state, and a trade that is part of it is riskier than the same trade without it:

- ``RESTING_BAIT``: an order of the account on the opposite side, resting at the trade's time,
  at least ``spoofing.size.ratio`` x the account's median order size in the symbol when it was
  placed (SPOOFING's size test, on an order not cancelled yet).
- ``ONE_SIDED_LAYERS``: at least ``layering.min.orders`` resting orders on the opposite side at
  ``layering.min.levels`` or more prices, and none on the trade's own side (LAYERING's book at
  the fill; a market maker quoting both sides does not show it).
- ``ROUND_TRIP_LEG``: the trade reverses an earlier trade of the account with the same
  counterparty in the symbol (opposite side, quantity within ``round.trip.quantity.tolerance``,
  within ``round.trip.leg.minutes``): one round trip of ROUND_TRIP_WASH, seen from one side.

They feed the behavioral component with :data:`SIGNAL_SCORE` (:mod:`riskengine.core.scoring`)
and are listed in ``behavioralAnalysis.earlySignals``; they raise no alert on their own.
"""

from __future__ import annotations

from collections.abc import Mapping

from .models import Trade
from .rules import Rules
from .state import UserState

RESTING_BAIT = "RESTING_BAIT"
ONE_SIDED_LAYERS = "ONE_SIDED_LAYERS"
ROUND_TRIP_LEG = "ROUND_TRIP_LEG"

#: What each signal adds to the behavioral component: a bait or layers at the fill score like a
#: HIGH pattern (the set-up is the abuse; only the cancel is missing); one round trip is MEDIUM
#: (an account closing a position with the same market maker can do that innocently).
SIGNAL_SCORE: Mapping[str, float] = {RESTING_BAIT: 0.75, ONE_SIDED_LAYERS: 0.75, ROUND_TRIP_LEG: 0.45}


def early_signals(state: UserState, trade: Trade, position: int, rules: Rules) -> tuple[str, ...]:
    """The set-ups ``trade`` is part of (see the module docstring); ``position``: its place in
    ``state.recent`` (-1: kept out of the windows, no round-trip look-back)."""
    signals = _order_book_signals(state, trade, rules) if state.orders.orders else ()
    if position > 0 and trade.counterparty_user_id and _reverses_a_trade(state, position, rules):
        signals += (ROUND_TRIP_LEG,)
    return signals


def _order_book_signals(state: UserState, trade: Trade, rules: Rules) -> tuple[str, ...]:
    sell = trade.side.value == "SELL"
    symbol = trade.symbol
    timestamp = trade.timestamp
    bait = False
    two_sided = False
    opposite = 0
    prices: set[float] = set()
    for order in state.orders.of_symbol(symbol):
        if not order.open_at(timestamp) or order.order_id == trade.order_id:
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


def _reverses_a_trade(state: UserState, position: int, rules: Rules) -> bool:
    recent = state.recent
    times = recent.times
    symbol = recent.symbols[position]
    counterparty = recent.counterparties[position]
    sell = recent.sells[position]
    quantity = recent.quantities[position]
    earliest = times[position] - rules.round_trip_leg_ms
    earlier = position - 1
    while earlier >= 0 and times[earlier] >= earliest:
        if (
            recent.counterparties[earlier] == counterparty
            and recent.symbols[earlier] == symbol
            and recent.sells[earlier] != sell
        ):
            first = recent.quantities[earlier]
            if abs(quantity - first) <= rules.round_trip_tolerance * first:
                return True
        earlier -= 1
    return False
