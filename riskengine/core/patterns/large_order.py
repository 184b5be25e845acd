"""LARGE_ORDER (seed): one trade whose notional is above its asset's threshold.

Keyed by trade (every large trade alerts). The threshold is ``threshold.<base asset>`` of the
symbol (``threshold.btc`` 500,000, ``threshold.eth`` 250,000, ``threshold.sol`` 100,000) or
``threshold.default`` (100,000) for other assets; "above" is strict: exactly the threshold does
not match. The evaluation computes the test once (``TradeContext.large_order``), since the
market-impact analysis reports it too.
"""

from __future__ import annotations

from ..models import Feature, PatternType, Severity
from .base import Detector, Match, TradeContext


class LargeOrder(Detector):
    """Notional above the per-asset threshold."""

    pattern = PatternType.LARGE_ORDER
    severity = Severity.HIGH
    description = "Single trade with a notional above the large-order threshold for its asset"
    recommended_action = "Review the trade's market impact and the user's source of funds"

    def detect(self, context: TradeContext) -> Match | None:
        """Match when the context's large-order test holds."""
        if not context.large_order:
            return None
        trade = context.trade
        return Match(
            key=trade.trade_id,
            evidence=(trade.trade_id,),
            timestamp=trade.timestamp,
            symbol=trade.symbol,
            features=(Feature("notional", trade.notional, context.large_order_threshold, ">"),),
        )


DETECTOR = LargeOrder()
