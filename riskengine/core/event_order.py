"""The order in which one account's trades and order events are applied: event time, orders first.

Trades and order events travel on two topics (or files). The worker and ``riskengine replay``
interleave them the same way, by a two-way merge of the heads: the head with the earlier event
time goes first, and on equal times the order event goes first (an order's fill is recorded before
the trade that reports it). Within each input the arrival order is kept; disorder within an input
is handled by the allowed lateness, as for trades alone.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
E = TypeVar("E")

#: Ties go to the input with the lower rank.
ORDER_RANK, TRADE_RANK = 0, 1


def order_event_first(order_time: int, trade_time: int) -> bool:
    """True if an order event at ``order_time`` goes before a trade at ``trade_time``."""
    return order_time <= trade_time


def merge_in_event_time(
    trades: Iterable[T], orders: Iterable[E], trade_time: Callable[[T], int], order_time: Callable[[E], int]
) -> Iterator[T | E]:
    """Trades and order events merged head by head (see the module docstring)."""
    tagged_orders = ((order_time(o), ORDER_RANK, o) for o in orders)
    tagged_trades = ((trade_time(t), TRADE_RANK, t) for t in trades)
    # heapq.merge compares only the inputs' current heads: a head-by-head merge, whether or not
    # each input is sorted.
    merged: Iterator[tuple[int, int, T | E]] = heapq.merge(
        tagged_orders, tagged_trades, key=lambda row: row[:2]
    )
    for _time, _rank, item in merged:
        yield item
