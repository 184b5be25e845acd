"""What a pattern detector is, what it sees, and what it returns.

A detector looks at one trade in the context the evaluation prepared (:class:`TradeContext`) and
returns at most one :class:`Match`. It does not build alerts, suppress repeats or touch state: the
evaluation does that uniformly (see :mod:`riskengine.core.evaluate`).

Keys: ``Match.key`` is the part of the alert key after the user id ("" for patterns keyed by the
account, the symbol for (account, symbol) patterns, the trade id for trade-level ones). Detectors
whose :meth:`Detector.merge_window_ms` is ``None`` are keyed by trade and never merged.

Order-flow detectors (:class:`OrderFlowDetector`) also see every order event of the account
(:class:`OrderContext`), after the order book applied it; their :meth:`Detector.detect` on a
trade answers for a fill that arrived after the order events it completes, so a match is found
whichever of its events arrives last, with the same evidence.

Windowed detectors (:class:`WindowedDetector`) are written "end-anchored": ``match_at(j, i)``
answers "is there a match whose last trade is at position ``j`` of the event-time-ordered window
and which includes position ``i``". For a trade that arrived in order, ``j == i`` is the last
position; for an out-of-order trade within the allowed lateness, every later position within one
window of it is tried too, so the late trade is matched exactly as if it had arrived in event-time
order. Trades beyond the allowed lateness have no position (they are kept out of the windows).
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

from ..models import Feature, OrderActivity, OrderEvent, PatternType, Severity, Trade, UserProfile
from ..order_book import OrderLife
from ..reference import ReferenceData
from ..rules import Rules
from ..state import RecentTrades, UserState


class Match(NamedTuple):
    """One pattern instance: its key, evidence ids, the event time of its last evidence, features.

    ``activity``: the order flow behind an order-flow match (the alert's ``orderActivity``).
    """

    key: str
    evidence: tuple[str, ...]
    timestamp: int
    symbol: str | None
    features: tuple[Feature, ...]
    activity: tuple[OrderActivity, ...] = ()


class TradeContext:
    """Everything detectors may read about the trade being evaluated; computed once per trade."""

    __slots__ = (
        "daily_limit",
        "day_total",
        "kyc_daily_breach",
        "kyc_tier",
        "kyc_trade_breach",
        "large_order",
        "large_order_threshold",
        "position",
        "profile",
        "reference",
        "rules",
        "sanction_hits",
        "state",
        "structuring_position",
        "trade",
        "trade_limit",
    )

    def __init__(
        self,
        trade: Trade,
        state: UserState,
        reference: ReferenceData,
        rules: Rules,
        profile: UserProfile | None,
        position: int,
        structuring_position: int,
    ) -> None:
        self.trade = trade
        self.state = state
        self.reference = reference
        self.rules = rules
        self.profile = profile
        #: Position of the trade in ``state.recent``; -1 when it is kept out (too late).
        self.position = position
        #: Position in the structuring candidates; -1 when it is not one.
        self.structuring_position = structuring_position
        # Compliance facts, filled by the evaluation before detectors run.
        self.large_order = False
        self.large_order_threshold = 0.0
        self.kyc_tier = 0
        self.trade_limit = 0.0
        self.daily_limit = 0.0
        self.day_total = 0.0
        self.kyc_trade_breach = False
        self.kyc_daily_breach = False
        #: Names of the sanctioned subjects ("user", "counterparty", "country"), in that order.
        self.sanction_hits: tuple[str, ...] = ()


class Detector:
    """One pattern. Subclasses set the class attributes and implement :meth:`detect`."""

    pattern: ClassVar[PatternType]
    severity: ClassVar[Severity]
    description: ClassVar[str]
    recommended_action: ClassVar[str]

    def merge_window_ms(self, rules: Rules) -> int | None:
        """After an alert whose last evidence is at L, matches of the same key ending at or before
        L + this are merged into it (no new alert). ``None``: keyed by trade, every match alerts."""
        return None

    def detect(self, context: TradeContext) -> Match | None:
        """The match this trade takes part in, if any."""
        raise NotImplementedError


class WindowedDetector(Detector):
    """A detector over the event-time-ordered recent trades; see the module docstring."""

    def window_ms(self, rules: Rules) -> int:
        """The pattern's event-time window."""
        raise NotImplementedError

    def merge_window_ms(self, rules: Rules) -> int | None:
        """Matches within one pattern window after the last alert's evidence are merged into it."""
        return self.window_ms(rules)

    def match_at(self, window: RecentTrades, end: int, include: int, context: TradeContext) -> Match | None:
        """A match whose last trade is at ``end`` and that includes position ``include``."""
        raise NotImplementedError

    def detect(self, context: TradeContext) -> Match | None:
        """Try the trade's own position, then (out-of-order arrival) later ones within the window."""
        position = context.position
        if position < 0:
            return None
        window = context.state.recent
        last = len(window.times) - 1
        if position == last:
            return self.match_at(window, position, position, context)
        times = window.times
        horizon = times[position] + self.window_ms(context.rules)
        for end in range(position, last + 1):
            if times[end] > horizon:
                break
            found = self.match_at(window, end, position, context)
            if found is not None:
                return found
        return None


class OrderContext:
    """What order-flow detectors may read about the order event being evaluated."""

    __slots__ = ("event", "order", "reference", "rules", "state")

    def __init__(
        self, event: OrderEvent, order: OrderLife, state: UserState, reference: ReferenceData, rules: Rules
    ) -> None:
        self.event = event
        #: The event's order, after the event was applied.
        self.order = order
        self.state = state
        self.reference = reference
        self.rules = rules


class OrderFlowDetector(Detector):
    """A pattern over the account's order events (and its fills); see the module docstring."""

    def detect_order(self, context: OrderContext) -> Match | None:
        """The match this order event completes, if any."""
        raise NotImplementedError

    def detect(self, context: TradeContext) -> Match | None:
        """The match a (late) fill completes; none by default."""
        return None
