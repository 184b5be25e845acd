"""What the order-flow patterns share: the account's fills around its orders, and their story.

Not a pattern module (it is in the registry's ``SHARED_MODULES``). A *fill* here is one of
the account's own trades (``UserState.recent``): the execution the order-flow patterns look for
on the other side of the book from the bait.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable

from ..models import OrderActivity, Side
from ..order_book import OrderLife
from ..state import RecentTrades


def fills(window: RecentTrades, symbol: str, sell: bool, earliest: int, latest: int) -> list[int]:
    """Positions of the account's trades in ``symbol`` on side ``sell`` with time in [earliest, latest]."""
    times = window.times
    sells, symbols = window.sells, window.symbols
    return [
        position
        for position in range(bisect_left(times, earliest), bisect_right(times, latest))
        if sells[position] == sell and symbols[position] == symbol
    ]


def trade_activity(window: RecentTrades, positions: Iterable[int]) -> list[OrderActivity]:
    """The trades at ``positions`` as alert activity (kind TRADE)."""
    return [
        OrderActivity(
            window.ids[p],
            None,
            "TRADE",
            Side.SELL if window.sells[p] else Side.BUY,
            window.notionals[p] / window.quantities[p],
            window.quantities[p],
            None,
            window.times[p],
        )
        for p in positions
    ]


def story(
    orders: Iterable[OrderLife], window: RecentTrades, symbol: str, start: int, end: int
) -> tuple[OrderActivity, ...]:
    """The orders' lives and the account's trades in ``symbol`` between ``start`` and ``end``, by time.

    Nothing after ``end`` (the match's time): the story is the same whichever event completed it.
    """
    activity = [entry for order in orders for entry in order.activity() if entry.timestamp <= end]
    times = window.times
    traded = [p for p in range(len(times)) if start <= times[p] <= end and window.symbols[p] == symbol]
    activity.extend(trade_activity(window, traded))
    activity.sort(key=lambda entry: (entry.timestamp, entry.event_id))
    return tuple(activity)
