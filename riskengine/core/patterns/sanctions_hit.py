"""SANCTIONS_HIT: the user, the counterparty or the user's country is sanctioned.

Sources: ``ReferenceData.sanctioned_users`` and the profiles' ``sanctioned`` flag (user and
counterparty), ``ReferenceData.sanctioned_countries`` (the user's profile country). Every such
trade carries the SANCTIONED_* compliance flags and BLOCK_TRADE; the alert is keyed by account and
merged for ``sanctions.merge.minutes`` (60) after the last alert's trade, so a sanctioned user's
trading raises one alert per hour rather than one per trade (each trade id stays in the analyzed
trades).
"""

from __future__ import annotations

from ..models import Feature, PatternType, Severity
from ..rules import Rules
from .base import Detector, Match, TradeContext


class SanctionsHit(Detector):
    """User, counterparty or country on the sanctions reference data."""

    pattern = PatternType.SANCTIONS_HIT
    severity = Severity.CRITICAL
    description = "Trade involves a sanctioned user, counterparty or jurisdiction"
    recommended_action = "Block the trade, freeze the account and report to compliance"

    def merge_window_ms(self, rules: Rules) -> int | None:
        """``sanctions.merge.minutes``."""
        return rules.sanctions_merge_ms

    def detect(self, context: TradeContext) -> Match | None:
        """Match when the evaluation found a sanctioned subject."""
        hits = context.sanction_hits
        if not hits:
            return None
        trade = context.trade
        return Match(
            key="",
            evidence=(trade.trade_id,),
            timestamp=trade.timestamp,
            symbol=trade.symbol,
            features=tuple(Feature(f"sanctioned{subject.title()}", 1.0, 1.0, ">=") for subject in hits),
        )


DETECTOR = SanctionsHit()
