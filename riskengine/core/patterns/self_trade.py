"""SELF_TRADE: the buyer and the seller are the same account or linked accounts.

Keyed by trade (every self trade alerts). A match is a trade whose ``counterpartyUserId`` is the
user, one of the user's ``linkedAccounts``, an account listing the user among its linked accounts,
or an account whose profile has the trade's ``customerId`` (one beneficial owner). Trades without a
counterparty never match.
"""

from __future__ import annotations

from ..models import Feature, PatternType, Severity
from .base import Detector, Match, TradeContext


class SelfTrade(Detector):
    """Counterparty is the user or a linked account."""

    pattern = PatternType.SELF_TRADE
    severity = Severity.HIGH
    description = "Trade between the same account or accounts of one beneficial owner"
    recommended_action = "Review the linked accounts and report the self-matched trades to compliance"

    def detect(self, context: TradeContext) -> Match | None:
        """Match when the counterparty is linked to the user (see the module docstring)."""
        trade = context.trade
        counterparty = trade.counterparty_user_id
        if counterparty is None or not context.reference.linked(
            trade.user_id, trade.customer_id, counterparty
        ):
            return None
        same = counterparty == trade.user_id
        return Match(
            key=trade.trade_id,
            evidence=(trade.trade_id,),
            timestamp=trade.timestamp,
            symbol=trade.symbol,
            features=(
                Feature("sameAccount", 1.0 if same else 0.0),
                Feature("linkedAccount", 0.0 if same else 1.0),
                Feature("notional", trade.notional),
            ),
        )


DETECTOR = SelfTrade()
