"""FLASH_CRASH (seed): many sells by one account in a short window.

Keyed by account. A match is ``flash.crash.min.sells`` (10) or more SELL trades of the account
(all symbols) whose event times lie within ``flash.crash.window.minutes`` (5) of the matched SELL,
inclusive: ``[t - W, t]``. The evidence is every SELL in that window. Nine sells do not match.
"""

from __future__ import annotations

from bisect import bisect_left

from ..models import Feature, PatternType, Severity
from ..rules import MINUTE_MS, Rules
from ..state import RecentTrades
from .base import Match, TradeContext, WindowedDetector


class FlashCrash(WindowedDetector):
    """At least N sells within the window ending at a sell."""

    pattern = PatternType.FLASH_CRASH
    severity = Severity.HIGH
    description = "User placed a burst of sell trades within minutes, a possible flash-crash attempt"
    recommended_action = "Limit the user's selling and review the sell burst manually"

    def window_ms(self, rules: Rules) -> int:
        """``flash.crash.window.minutes``."""
        return rules.flash_window_ms

    def match_at(self, window: RecentTrades, end: int, include: int, context: TradeContext) -> Match | None:
        """Count sells in ``[t_end - W, t_end]`` with one bisect and one C-level sum."""
        sells = window.sells
        if not sells[end] or not sells[include]:
            return None
        rules = context.rules
        times = window.times
        start = bisect_left(times, times[end] - rules.flash_window_ms, 0, end + 1)
        count = sum(sells[start : end + 1])
        if count < rules.flash_min_sells or include < start:
            return None
        ids = window.ids
        evidence = tuple(ids[k] for k in range(start, end + 1) if sells[k])
        first = next(k for k in range(start, end + 1) if sells[k])
        return Match(
            key="",
            evidence=evidence,
            timestamp=times[end],
            symbol=None,
            features=(
                Feature("sellsInWindow", count, rules.flash_min_sells, ">="),
                Feature(
                    "spanMinutes",
                    (times[end] - times[first]) / MINUTE_MS,
                    rules.flash_window_ms / MINUTE_MS,
                    "<=",
                ),
                Feature("soldNotional", sum(window.notionals[k] for k in range(start, end + 1) if sells[k])),
                # Market, IOC and FOK sells take liquidity: what crashes a price (match strength).
                Feature(
                    "aggressiveSellShare",
                    sum(1 for k in range(start, end + 1) if sells[k] and window.aggressive[k]) / count,
                ),
            ),
        )


DETECTOR = FlashCrash()
