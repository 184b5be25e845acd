"""The typology definitions (README, "Detection core"), checked trade by trade on the simulated stream.

The simulator feeds one :class:`PatternOracle` every trade record (both records of every
execution) and uses it as a *checker*, never as a filter:

- **Witness.** Every scenario trade record is checked with the exact :data:`SPEC` limits. The
  scenario's own pattern must be among the matches (the label is *verified*); any other pattern it
  completes (say a volume spike formed by a large order after two rising trades) becomes an extra,
  *incidental* label, because by definition it is an instance of that pattern too.
- **Count.** Every benign trade record is checked with the same limits, and each pattern it
  completes is counted (``SimulationStats.benign_instances``): the instances the realistic benign
  flow holds (a market maker's BUY, SELL, BUY of similar size within a minute is a WASH_TRADING
  instance by definition). They are reported, not removed; alerts on them are what the engine's
  precision is measured against.

Covered here: the trade-level typologies (VOLUME_SPIKE, WASH_TRADING, LARGE_ORDER, FLASH_CRASH,
STRUCTURING, KYC_LIMIT_BREACH, SELF_TRADE, SANCTIONS_HIT, ROUND_TRIP_WASH). Order-event typologies
(SPOOFING, LAYERING, QUOTE_STUFFING) and the market-level PUMP_AND_DUMP, PRICE_CRASH and
MOMENTUM_IGNITION are not checked (their labels are unverified, ``verified`` None).

Windows are inclusive at both ends, as in the engine's rules. The oracle sees trades in event-time
order (the simulator generates them that way) and keeps only what its longest window needs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS

#: LARGE_ORDER thresholds by base asset, and the documented default for others.
LARGE_ORDER_THRESHOLDS: dict[str, float] = {"BTC": 500_000.0, "ETH": 250_000.0, "SOL": 100_000.0}
LARGE_ORDER_DEFAULT = 100_000.0

#: KYC tier -> (notional per trade, notional per 24 h). The venue's pre-trade limits; they equal the
#: engine's default ``kyc.tier<N>.trade.limit`` / ``kyc.tier<N>.daily.limit`` rule parameters.
KYC_LIMITS: dict[int, tuple[float, float]] = {
    0: (1_000.0, 2_000.0),
    1: (10_000.0, 50_000.0),
    2: (250_000.0, 1_000_000.0),
    3: (10_000_000.0, 100_000_000.0),
}

#: The AML reporting threshold (USD) STRUCTURING trades stay under.
REPORTING_THRESHOLD = 10_000.0


def large_order_threshold(symbol: str) -> float:
    """The LARGE_ORDER notional threshold of ``symbol``'s base asset."""
    return LARGE_ORDER_THRESHOLDS.get(symbol.partition("/")[0], LARGE_ORDER_DEFAULT)


@dataclass(frozen=True)
class Limits:
    """Every parameter of the checked definitions; :data:`SPEC` holds the definitions verbatim."""

    spike_ratio: float = 1.5
    spike_window_ms: int = 2 * MINUTE_MS
    spike_min_trades: int = 3
    wash_window_ms: int = MINUTE_MS
    wash_tolerance: float = 0.1
    flash_window_ms: int = 5 * MINUTE_MS
    flash_min_sells: int = 10
    large_order_factor: float = 1.0
    band_lower: float = 0.8 * REPORTING_THRESHOLD
    band_upper: float = REPORTING_THRESHOLD
    structuring_window_ms: int = 24 * HOUR_MS
    structuring_min_trades: int = 3
    kyc_factor: float = 1.0
    round_trip_leg_ms: int = 2 * MINUTE_MS
    round_trip_tolerance: float = 0.01
    round_trip_window_ms: int = HOUR_MS
    round_trip_min: int = 3


SPEC = Limits()


@dataclass(frozen=True, slots=True)
class TradeFacts:
    """What the oracle needs of a trade."""

    trade_id: str
    user_id: str
    symbol: str
    sell: bool
    quantity: float
    notional: float
    timestamp: int
    counterparty: str | None


@dataclass(frozen=True, slots=True)
class Subject:
    """What the oracle needs of an account's profile."""

    user_id: str
    customer_id: str
    kyc_tier: int
    country: str
    sanctioned: bool
    linked_accounts: frozenset[str]


@dataclass(frozen=True, slots=True)
class PatternMatch:
    """A definition the trade completes, with the ids of the trades that make it up."""

    pattern: str
    evidence: tuple[str, ...]


@dataclass
class _Tape:
    recent: deque[TradeFacts] = field(default_factory=deque)
    band: deque[TradeFacts] = field(default_factory=deque)
    day: deque[TradeFacts] = field(default_factory=deque)
    day_total: float = 0.0


@dataclass
class _Legs:
    # "buyer bought from seller" legs not yet paired, and the completed round trips.
    open_legs: deque[TradeFacts] = field(default_factory=deque)
    trips: deque[tuple[int, tuple[str, str]]] = field(default_factory=deque)


#: Longest window the per-user recent tape must cover (the widest short window of the definitions).
_RECENT_MS = max(SPEC.spike_window_ms, SPEC.wash_window_ms, SPEC.flash_window_ms)
_RECENT_MAX = 256
_DAY_MS = max(SPEC.structuring_window_ms, 24 * HOUR_MS)


def _prune_day(tape: _Tape, now: int) -> None:
    """Drop the day tape's trades older than 24 h before ``now`` (windows inclusive)."""
    earliest = now - 24 * HOUR_MS
    day = tape.day
    while day and day[0].timestamp < earliest:
        tape.day_total -= day.popleft().notional
    if not day:
        tape.day_total = 0.0


class PatternOracle:
    """Per-account trade tapes and the definitions above; feed it every trade in event-time order."""

    def __init__(
        self, subjects: Callable[[str], Subject | None], sanctioned_countries: Callable[[str], bool]
    ) -> None:
        self._subjects = subjects
        self._country_sanctioned = sanctioned_countries
        self._tapes: dict[str, _Tape] = {}
        self._pairs: dict[tuple[str, str, str], _Legs] = {}

    def check(self, trade: TradeFacts, limits: Limits) -> list[PatternMatch]:
        """The patterns ``trade`` would complete if it were recorded now (does not record it)."""
        tape = self._tapes.get(trade.user_id) or _Tape()
        matches: list[PatternMatch] = []
        for found in (
            self._volume_spike(tape, trade, limits),
            self._wash(tape, trade, limits),
            self._flash_crash(tape, trade, limits),
            self._large_order(trade, limits),
            self._structuring(tape, trade, limits),
            self._kyc(tape, trade, limits),
            self._self_trade(trade),
            self._sanctions(trade),
            self._round_trip(trade, limits),
        ):
            if found is not None:
                matches.append(found)
        return matches

    def record(self, trade: TradeFacts) -> None:
        """Add ``trade`` to its account's tapes (and its pair's round-trip legs)."""
        tape = self._tapes.setdefault(trade.user_id, _Tape())
        now = trade.timestamp
        tape.recent.append(trade)
        while tape.recent and (tape.recent[0].timestamp < now - _RECENT_MS or len(tape.recent) > _RECENT_MAX):
            tape.recent.popleft()
        if SPEC.band_lower <= trade.notional < SPEC.band_upper:
            tape.band.append(trade)
        while tape.band and tape.band[0].timestamp < now - _DAY_MS:
            tape.band.popleft()
        tape.day.append(trade)
        tape.day_total += trade.notional
        _prune_day(tape, now)
        if trade.counterparty is not None and not trade.sell and trade.counterparty != trade.user_id:
            legs = self._pairs.setdefault(self._pair_key(trade), _Legs())
            partner = self._partner_leg(legs, trade, SPEC)
            if partner is not None:
                legs.open_legs.remove(partner)
                legs.trips.append((now, (partner.trade_id, trade.trade_id)))
            else:
                legs.open_legs.append(trade)
            horizon = now - max(SPEC.round_trip_leg_ms, SPEC.round_trip_window_ms)
            while legs.open_legs and legs.open_legs[0].timestamp < horizon:
                legs.open_legs.popleft()
            while legs.trips and legs.trips[0][0] < horizon:
                legs.trips.popleft()

    def day_notional(self, user_id: str, now: int | None = None) -> float:
        """The account's traded notional over the 24 h up to ``now`` (default: its latest trade)."""
        tape = self._tapes.get(user_id)
        if tape is None:
            return 0.0
        if now is not None:
            _prune_day(tape, now)
        return tape.day_total

    # -- the definitions -------------------------------------------------------------------

    @staticmethod
    def _volume_spike(tape: _Tape, trade: TradeFacts, limits: Limits) -> PatternMatch | None:
        run = [trade]
        earliest = trade.timestamp - limits.spike_window_ms
        for previous in reversed(tape.recent):
            if previous.timestamp < earliest or run[-1].notional < limits.spike_ratio * previous.notional:
                break
            run.append(previous)
        if len(run) < limits.spike_min_trades:
            return None
        return PatternMatch("VOLUME_SPIKE", tuple(t.trade_id for t in reversed(run)))

    @staticmethod
    def _wash(tape: _Tape, trade: TradeFacts, limits: Limits) -> PatternMatch | None:
        if trade.sell:
            return None
        earliest = trade.timestamp - limits.wash_window_ms
        window = [t for t in tape.recent if t.timestamp >= earliest and t.symbol == trade.symbol]
        for middle in range(len(window) - 1, 0, -1):
            selling = window[middle]
            if not selling.sell:
                continue
            for first in range(middle - 1, -1, -1):
                opening = window[first]
                if opening.sell:
                    continue
                bound = limits.wash_tolerance * opening.quantity
                if (
                    abs(selling.quantity - opening.quantity) <= bound
                    and abs(trade.quantity - opening.quantity) <= bound
                ):
                    return PatternMatch("WASH_TRADING", (opening.trade_id, selling.trade_id, trade.trade_id))
        return None

    @staticmethod
    def _flash_crash(tape: _Tape, trade: TradeFacts, limits: Limits) -> PatternMatch | None:
        if not trade.sell:
            return None
        earliest = trade.timestamp - limits.flash_window_ms
        sells = [t.trade_id for t in tape.recent if t.sell and t.timestamp >= earliest]
        if len(sells) + 1 < limits.flash_min_sells:
            return None
        return PatternMatch("FLASH_CRASH", (*sells, trade.trade_id))

    @staticmethod
    def _large_order(trade: TradeFacts, limits: Limits) -> PatternMatch | None:
        if trade.notional > limits.large_order_factor * large_order_threshold(trade.symbol):
            return PatternMatch("LARGE_ORDER", (trade.trade_id,))
        return None

    @staticmethod
    def _structuring(tape: _Tape, trade: TradeFacts, limits: Limits) -> PatternMatch | None:
        if not limits.band_lower <= trade.notional < limits.band_upper:
            return None
        earliest = trade.timestamp - limits.structuring_window_ms
        band = [
            t.trade_id
            for t in tape.band
            if t.timestamp >= earliest and limits.band_lower <= t.notional < limits.band_upper
        ]
        if len(band) + 1 < limits.structuring_min_trades:
            return None
        return PatternMatch("STRUCTURING", (*band, trade.trade_id))

    def _kyc(self, tape: _Tape, trade: TradeFacts, limits: Limits) -> PatternMatch | None:
        subject = self._subjects(trade.user_id)
        trade_limit, daily_limit = KYC_LIMITS[0 if subject is None else subject.kyc_tier]
        # Trades come in event-time order, so dropping what left the window now changes no later check.
        _prune_day(tape, trade.timestamp)
        day = tape.day_total + trade.notional
        if trade.notional > limits.kyc_factor * trade_limit or day > limits.kyc_factor * daily_limit:
            return PatternMatch("KYC_LIMIT_BREACH", (trade.trade_id,))
        return None

    def linked(self, user_id: str, other_id: str) -> bool:
        """True if ``other_id`` is the account itself, a linked account, or of the same customer."""
        if user_id == other_id:
            return True
        subject, other = self._subjects(user_id), self._subjects(other_id)
        if subject is not None and other_id in subject.linked_accounts:
            return True
        if other is None:
            return False
        return user_id in other.linked_accounts or (
            subject is not None and subject.customer_id == other.customer_id
        )

    def _self_trade(self, trade: TradeFacts) -> PatternMatch | None:
        if trade.counterparty is not None and self.linked(trade.user_id, trade.counterparty):
            return PatternMatch("SELF_TRADE", (trade.trade_id,))
        return None

    def sanctioned(self, user_id: str) -> bool:
        """True if the account's profile is flagged or its country is on the sanctions list."""
        subject = self._subjects(user_id)
        return subject is not None and (subject.sanctioned or self._country_sanctioned(subject.country))

    def _sanctions(self, trade: TradeFacts) -> PatternMatch | None:
        for user in (trade.user_id, trade.counterparty):
            if user is not None and self.sanctioned(user):
                return PatternMatch("SANCTIONS_HIT", (trade.trade_id,))
        return None

    @staticmethod
    def _pair_key(trade: TradeFacts) -> tuple[str, str, str]:
        assert trade.counterparty is not None
        first, second = sorted((trade.user_id, trade.counterparty))
        return first, second, trade.symbol

    @staticmethod
    def _partner_leg(legs: _Legs, trade: TradeFacts, limits: Limits) -> TradeFacts | None:
        # The leg this BUY answers: the counterparty bought from this account shortly before.
        for leg in reversed(legs.open_legs):
            if trade.timestamp - leg.timestamp > limits.round_trip_leg_ms:
                break
            if (
                leg.user_id == trade.counterparty
                and abs(trade.quantity - leg.quantity) <= limits.round_trip_tolerance * leg.quantity
            ):
                return leg
        return None

    def _round_trip(self, trade: TradeFacts, limits: Limits) -> PatternMatch | None:
        if trade.sell or trade.counterparty is None or trade.counterparty == trade.user_id:
            return None
        legs = self._pairs.get(self._pair_key(trade))
        if legs is None:
            return None
        partner = self._partner_leg(legs, trade, limits)
        if partner is None:
            return None
        earliest = trade.timestamp - limits.round_trip_window_ms
        trips = [ids for ts, ids in legs.trips if ts >= earliest]
        if len(trips) + 1 < limits.round_trip_min:
            return None
        evidence = (*(i for ids in trips for i in ids), partner.trade_id, trade.trade_id)
        return PatternMatch("ROUND_TRIP_WASH", evidence)
