"""WASH_TRADING (seed): BUY -> SELL -> BUY of similar size in one symbol, in a short window.

Keyed by (account, symbol). A match is three trades of the account in the symbol, in event-time
order a BUY, a SELL and a BUY, with the first and the last at most ``wash.trading.window.minutes``
(1) apart (inclusive), and the SELL's and the second BUY's quantities each within
``wash.trading.quantity.tolerance`` (0.1, relative, inclusive) of the first BUY's. Seed example:
BUY 1000 ADA -> SELL 950 -> BUY 1050 within 1 minute.

``wash.trading.contiguity`` says which three trades: ``consecutive`` (default) the account's
consecutive trades in the symbol (its trades in other symbols may come between); ``window`` any
three in the window, other trades of the symbol between them too, and when several triples end
at the same BUY the one with the latest SELL, then the latest first BUY, is reported. Why
``consecutive`` is the default: README, "Choosing the wash-trading contiguity" (a two-sided
market maker or HFT account alternates sides all day, so some BUY, SELL, BUY of similar size
falls in almost any minute of it; a cycle that nothing interrupts is the wash signature).

The ``window`` search is quadratic in the trades inside one window (at most
``MAX_RECENT_TRADES``), and linear for the usual handful; ``consecutive`` is linear.
"""

from __future__ import annotations

from ..models import Feature, PatternType, Severity
from ..rules import MINUTE_MS, Rules
from ..state import RecentTrades
from .base import Match, TradeContext, WindowedDetector


class WashTrading(WindowedDetector):
    """BUY -> SELL -> BUY in one symbol within the window, quantities within the tolerance."""

    pattern = PatternType.WASH_TRADING
    severity = Severity.CRITICAL
    description = "Potential wash trading detected with rapid buy-sell cycles"
    recommended_action = "Freeze account for investigation and report to compliance"

    def window_ms(self, rules: Rules) -> int:
        """``wash.trading.window.minutes``."""
        return rules.wash_window_ms

    def match_at(self, window: RecentTrades, end: int, include: int, context: TradeContext) -> Match | None:
        """Find the SELL and the first BUY before the closing BUY at ``end``."""
        sells = window.sells
        if sells[end]:
            return None
        rules = context.rules
        if rules.wash_consecutive:
            return self._consecutive_at(window, end, include, context)
        times = window.times
        symbols = window.symbols
        quantities = window.quantities
        symbol = symbols[end]
        closing = quantities[end]
        tolerance = rules.wash_tolerance
        earliest = times[end] - rules.wash_window_ms
        middle = end - 1
        while middle > 0 and times[middle] >= earliest:
            if sells[middle] and symbols[middle] == symbol:
                selling = quantities[middle]
                first = middle - 1
                while first >= 0 and times[first] >= earliest:
                    if not sells[first] and symbols[first] == symbol:
                        opening = quantities[first]
                        bound = tolerance * opening
                        if (
                            abs(selling - opening) <= bound
                            and abs(closing - opening) <= bound
                            and include in (first, middle, end)
                        ):
                            return self._match(window, first, middle, end, context)
                    first -= 1
            middle -= 1
        return None

    def _consecutive_at(
        self, window: RecentTrades, end: int, include: int, context: TradeContext
    ) -> Match | None:
        """The account's two previous trades in the symbol must be a SELL and, before it, a BUY."""
        rules = context.rules
        times = window.times
        symbols = window.symbols
        symbol = symbols[end]
        earliest = times[end] - rules.wash_window_ms
        middle = end - 1
        while middle >= 0 and symbols[middle] != symbol:
            middle -= 1
        if middle < 1 or not window.sells[middle] or times[middle] < earliest:
            return None
        first = middle - 1
        while first >= 0 and symbols[first] != symbol:
            first -= 1
        if first < 0 or window.sells[first] or times[first] < earliest or include not in (first, middle, end):
            return None
        quantities = window.quantities
        opening = quantities[first]
        bound = rules.wash_tolerance * opening
        if abs(quantities[middle] - opening) > bound or abs(quantities[end] - opening) > bound:
            return None
        return self._match(window, first, middle, end, context)

    def _match(self, window: RecentTrades, first: int, middle: int, end: int, context: TradeContext) -> Match:
        rules = context.rules
        opening = window.quantities[first]
        times = window.times
        return Match(
            key=window.symbols[end],
            evidence=(window.ids[first], window.ids[middle], window.ids[end]),
            timestamp=times[end],
            symbol=window.symbols[end],
            features=(
                Feature(
                    "sellQuantityDeviation",
                    abs(window.quantities[middle] - opening) / opening,
                    rules.wash_tolerance,
                    "<=",
                ),
                Feature(
                    "buyQuantityDeviation",
                    abs(window.quantities[end] - opening) / opening,
                    rules.wash_tolerance,
                    "<=",
                ),
                Feature(
                    "cycleMinutes",
                    (times[end] - times[first]) / MINUTE_MS,
                    rules.wash_window_ms / MINUTE_MS,
                    "<=",
                ),
                Feature("firstQuantity", opening),
            ),
        )


DETECTOR = WashTrading()
