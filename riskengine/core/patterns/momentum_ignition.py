"""MOMENTUM_IGNITION: a burst of same-side trades that moves the price, then the other side.

Keyed by (account, symbol). A match is, in one symbol and event-time order:

- a burst: at least ``momentum.min.trades`` (3) consecutive aggressive trades of the account on one
  side (market, IOC or FOK orders, which take liquidity; no trade of the other side and no passive
  one between them), the first and the last at most ``momentum.burst.seconds`` (30, inclusive)
  apart, whose prices move by at least ``momentum.price.move`` (1 %, relative to the first) in the
  burst's direction: up for buys, down for sells (the aggressive side pushes the price);
- then, at most ``momentum.reversal.minutes`` (2, inclusive) after the burst's last trade, a trade
  of the account on the other side: it trades against the move it started.

The burst is the longest such run ending right before the reversal's side changed. Evidence: the
burst's trade ids and the reversal's; time: the reversal. Matches within one pattern window
(burst plus reversal) of an alert merge into it.
"""

from __future__ import annotations

from ..models import Feature, PatternType, Severity
from ..rules import Rules
from ..state import RecentTrades
from .base import Match, TradeContext, WindowedDetector


class MomentumIgnition(WindowedDetector):
    """A price-moving burst on one side, then a trade on the other."""

    pattern = PatternType.MOMENTUM_IGNITION
    severity = Severity.HIGH
    description = (
        "Potential momentum ignition: a burst of trades moved the price, "
        "then the account traded the other way"
    )
    recommended_action = "Review the account's trades around the move and report to compliance"

    def window_ms(self, rules: Rules) -> int:
        """The burst plus the reversal window."""
        return rules.momentum_burst_ms + rules.momentum_reversal_ms

    def match_at(self, window: RecentTrades, end: int, include: int, context: TradeContext) -> Match | None:
        """The reversal at ``end``: find the burst before it."""
        rules = context.rules
        times, sells, symbols = window.times, window.sells, window.symbols
        symbol = symbols[end]
        reversal_sell = sells[end]
        # The last trade in the symbol on the other side before the reversal ends the burst.
        last = end - 1
        while last >= 0 and (symbols[last] != symbol or sells[last] == reversal_sell):
            if times[end] - times[last] > rules.momentum_reversal_ms:
                return None
            last -= 1
        if last < 0 or times[end] - times[last] > rules.momentum_reversal_ms:
            return None
        aggressive = window.aggressive
        if not aggressive[last]:
            return None
        burst = [last]
        position = last - 1
        while position >= 0 and times[last] - times[position] <= rules.momentum_burst_ms:
            if symbols[position] == symbol:
                if sells[position] == reversal_sell or not aggressive[position]:
                    break
                burst.append(position)
            position -= 1
        burst.reverse()
        if len(burst) < rules.momentum_min_trades or (include != end and include not in burst):
            return None
        first_price = window.notionals[burst[0]] / window.quantities[burst[0]]
        last_price = window.notionals[last] / window.quantities[last]
        move = (
            (first_price - last_price) / first_price
            if not reversal_sell
            else (last_price - first_price) / first_price
        )
        if move < rules.momentum_move:
            return None
        return Match(
            key=symbol,
            evidence=(*(window.ids[p] for p in burst), window.ids[end]),
            timestamp=times[end],
            symbol=symbol,
            features=(
                Feature("burstTrades", len(burst), rules.momentum_min_trades, ">="),
                Feature("priceMove", move, rules.momentum_move, ">="),
                Feature(
                    "burstSeconds",
                    (times[last] - times[burst[0]]) / 1000,
                    rules.momentum_burst_ms / 1000,
                    "<=",
                ),
                Feature(
                    "secondsToReversal",
                    (times[end] - times[last]) / 1000,
                    rules.momentum_reversal_ms / 1000,
                    "<=",
                ),
            ),
        )


DETECTOR = MomentumIgnition()
