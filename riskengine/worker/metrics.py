"""The worker's counters, reported by the web views (/stats, /metrics) and updated on the event loop."""

from __future__ import annotations

import time
from collections import Counter, deque
from typing import Any

#: Recent alerts kept in memory per worker for the /alerts view.
RECENT_ALERTS = 1000


class Metrics:
    """Counters the web views report; updated by the agents on the event loop (no locks needed)."""

    def __init__(self) -> None:
        self.started = time.time()
        self.trades_in = 0
        self.order_events_in = 0
        #: order events the order book found inconsistent, by kind (they changed nothing)
        self.order_issues: Counter[str] = Counter()
        #: order events beyond the allowed lateness (applied to the book, kept out of the patterns)
        self.late_order_events = 0
        #: events held back at the last batch, waiting for the other input of their partition
        self.held_events = 0
        self.analyzed = 0
        self.redelivered = 0
        self.resent = 0
        self.invalid_profiles = 0
        #: trades more than market.allowed.lateness behind their partition (kept out of the market)
        self.late_for_market = 0
        #: trades scored with a market context that was not final after MAX_CONTEXT_WAIT_S
        self.market_context_stale = 0
        #: per watermarked agent ("market", "pair"): records released, late, re-delivered, rejected,
        #: and held at the last batch
        self.keyed: dict[str, Counter[str]] = {"market": Counter(), "pair": Counter()}
        self.alerts_by_pattern: Counter[str] = Counter()
        self.dead_letters_by_reason: Counter[str] = Counter()
        self.recent_alerts: deque[dict[str, Any]] = deque(maxlen=RECENT_ALERTS)
        #: (topic, partition) -> last offset processed (for consumer lag)
        self.positions: dict[tuple[str, int], int] = {}
        # (monotonic second, trades analyzed in it) for a 10 s throughput figure
        self._seconds: deque[list[float]] = deque(maxlen=11)

    def count_analyzed(self, count: int) -> None:
        """``count`` more analyzed trades (delivered), for the totals and the throughput window."""
        self.analyzed += count
        second = float(int(time.monotonic()))
        if self._seconds and self._seconds[-1][0] == second:
            self._seconds[-1][1] += count
        else:
            self._seconds.append([second, float(count)])

    def throughput(self) -> float:
        """Analyzed trades per second over the last ten complete seconds."""
        now = int(time.monotonic())
        done = [count for second, count in self._seconds if now - 10 <= second < now]
        return sum(done) / 10.0
