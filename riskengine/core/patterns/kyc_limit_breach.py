"""KYC_LIMIT_BREACH: notional per trade or per 24 h above the limit of the user's KYC tier.

Limits are rule parameters ``kyc.tier<N>.trade.limit`` / ``kyc.tier<N>.daily.limit``; a user
without a profile gets tier ``kyc.default.tier`` (0, unverified). "Above" is strict. The 24 h
total includes this trade and is kept in 15-minute buckets (see ``UserState.add_day_notional``):
it covers at least the 24 h before the user's latest event time and at most 15 minutes more.
Keyed by account; breaches within ``kyc.merge.minutes`` (24 h) after the last alert's trade merge
into it (every breaching trade still carries KYC_TRADE_LIMIT / KYC_DAILY_LIMIT and BLOCK_TRADE).
"""

from __future__ import annotations

from ..models import Feature, PatternType, Severity
from ..rules import Rules
from .base import Detector, Match, TradeContext


class KycLimitBreach(Detector):
    """Per-trade or 24 h notional above the KYC tier's limit."""

    pattern = PatternType.KYC_LIMIT_BREACH
    severity = Severity.HIGH
    description = "Trading above the limits of the user's KYC verification tier"
    recommended_action = "Block trades above the limit and request enhanced verification"

    def merge_window_ms(self, rules: Rules) -> int | None:
        """``kyc.merge.minutes``."""
        return rules.kyc_merge_ms

    def detect(self, context: TradeContext) -> Match | None:
        """Match when the evaluation found either limit exceeded."""
        if not (context.kyc_trade_breach or context.kyc_daily_breach):
            return None
        trade = context.trade
        return Match(
            key="",
            evidence=(trade.trade_id,),
            timestamp=trade.timestamp,
            symbol=trade.symbol,
            features=(
                Feature("kycTier", context.kyc_tier),
                Feature("notional", trade.notional, context.trade_limit, ">"),
                Feature("notional24h", context.day_total, context.daily_limit, ">"),
            ),
        )


DETECTOR = KycLimitBreach()
