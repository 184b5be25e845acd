"""VOLUME_SPIKE (seed): a run of rising trades of one account.

Keyed by account. A match is ``volume.spike.min.trades`` (3) or more consecutive trades of the
account (all symbols, in event-time order), each with notional ``>= volume.spike.threshold``
(1.5) x the previous trade's notional, the first and the last at most
``volume.spike.window.minutes`` (2) apart (inclusive). The evidence is the longest such run ending
at the matched trade. Seed example: $1K -> $2.5K -> $6K within 2 minutes.
"""

from __future__ import annotations

from ..models import Feature, PatternType, Severity
from ..rules import MINUTE_MS, Rules
from ..state import RecentTrades
from .base import Match, TradeContext, WindowedDetector


class VolumeSpike(WindowedDetector):
    """Consecutive trades each >= threshold x the previous, within the window."""

    pattern = PatternType.VOLUME_SPIKE
    severity = Severity.HIGH
    description = "User exhibited abnormal trading volume spike within short period"
    recommended_action = "Temporarily limit user's trading limits and require manual review"

    def window_ms(self, rules: Rules) -> int:
        """``volume.spike.window.minutes``."""
        return rules.spike_window_ms

    def match_at(self, window: RecentTrades, end: int, include: int, context: TradeContext) -> Match | None:
        """Walk back from ``end`` while each step rises by the threshold and stays in the window."""
        rules = context.rules
        notionals = window.notionals
        times = window.times
        threshold = rules.spike_threshold
        earliest = times[end] - rules.spike_window_ms
        start = end
        while (
            start > 0
            and times[start - 1] >= earliest
            and notionals[start] >= threshold * notionals[start - 1]
        ):
            start -= 1
        if end - start + 1 < rules.spike_min_trades or start > include:
            return None
        ratios = [notionals[k] / notionals[k - 1] for k in range(start + 1, end + 1)]
        return Match(
            key="",
            evidence=tuple(window.ids[start : end + 1]),
            timestamp=times[end],
            symbol=None,
            features=(
                Feature("tradesInRun", end - start + 1, rules.spike_min_trades, ">="),
                Feature("minStepRatio", min(ratios), threshold, ">="),
                Feature(
                    "runMinutes",
                    (times[end] - times[start]) / MINUTE_MS,
                    rules.spike_window_ms / MINUTE_MS,
                    "<=",
                ),
                Feature("firstNotional", notionals[start]),
                Feature("lastNotional", notionals[end]),
            ),
        )


DETECTOR = VolumeSpike()
