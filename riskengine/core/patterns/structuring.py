"""STRUCTURING: several trades just below the reporting threshold within a day.

Keyed by account. A candidate is a trade with notional in ``[structuring.lower.ratio x T, T)``,
T = ``structuring.reporting.threshold`` (8,000 <= notional < 10,000 by default). A match is
``structuring.min.trades`` (3) or more candidates within ``structuring.window.hours`` (24) of the
matched one, inclusive. The evidence is every candidate in that window (at most 32 are kept).

Unlike the minute-scale windows, candidates are taken even when they arrive beyond the allowed
lateness, as long as their event time is inside the retained window: a report delayed by minutes
must not hide a trade from a 24 h count. Matches are merged for one structuring window after the
last alert's evidence.
"""

from __future__ import annotations

from bisect import bisect_left

from ..models import Feature, PatternType, Severity
from ..rules import HOUR_MS, Rules
from .base import Detector, Match, TradeContext


class Structuring(Detector):
    """N candidates in the band below the reporting threshold within the window."""

    pattern = PatternType.STRUCTURING
    severity = Severity.HIGH
    description = "Repeated trades just below the reporting threshold, a possible attempt to avoid reporting"
    recommended_action = (
        "Review the user's trades of the period and file a suspicious activity report if confirmed"
    )

    def merge_window_ms(self, rules: Rules) -> int | None:
        """``structuring.window.hours``."""
        return rules.structuring_window_ms

    def detect(self, context: TradeContext) -> Match | None:
        """End-anchored like the windowed detectors, over the structuring candidates."""
        position = context.structuring_position
        if position < 0:
            return None
        rules = context.rules
        state = context.state
        times = state.structuring_times
        window = rules.structuring_window_ms
        horizon = times[position] + window
        for end in range(position, len(times)):
            if times[end] > horizon:
                break
            start = bisect_left(times, times[end] - window, 0, end + 1)
            if end - start + 1 >= rules.structuring_min_trades and start <= position:
                return Match(
                    key="",
                    evidence=tuple(state.structuring_ids[start : end + 1]),
                    timestamp=times[end],
                    symbol=None,
                    features=(
                        Feature("tradesInBand", end - start + 1, rules.structuring_min_trades, ">="),
                        Feature("bandLower", rules.structuring_lower),
                        Feature("reportingThreshold", rules.structuring_threshold),
                        Feature("spanHours", (times[end] - times[start]) / HOUR_MS, window / HOUR_MS, "<="),
                    ),
                )
        return None


DETECTOR = Structuring()
