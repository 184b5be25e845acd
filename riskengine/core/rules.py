"""Rules as data: every threshold and window of the detection core, with defaults and a version.

A :class:`Rules` object is built from ``(version, {name: value})`` — the shape of the
``RiskRules`` record on the compacted ``risk-rules`` topic — by :meth:`Rules.from_parameters`.
Values may be strings (as on the wire) or numbers; names not given keep their defaults. Every
value is validated on load and a bad one raises :class:`InvalidRule` naming the parameter; an
unknown name is rejected too (a typo must not silently leave a default in force).

Names follow the seed (``volume.spike.threshold``, ``threshold.btc``, ...). Two families take the
base asset as their last part: ``threshold.<asset>`` (large-order notional, e.g. ``threshold.ada``)
and ``liquidity.<asset>`` (the notional a trade is compared with for liquidity consumption);
assets without their own entry use ``threshold.default`` / ``liquidity.default``.

Windows are inclusive at both ends: trades at ``t`` and ``t + W`` are within ``W`` of each other.
Limits and thresholds called "above" compare with ``>``, bands with ``lower <= x < upper``.

The object precomputes what the core needs per trade (windows in ms, per-tier limits, weights),
so evaluation does no parsing or dict churn. Treat it as immutable.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from riskengine.errors import CoreError

from .models import PatternType

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
#: Trades with ids kept per user for the short pattern windows; see state.py (size bound).
MAX_RECENT_TRADES = 128
#: Structuring candidates (with ids) kept per user.
MAX_STRUCTURING_CANDIDATES = 32
#: Upper bound of every short pattern window and of the allowed lateness (state encodes time
#: offsets in the recent window as unsigned 32-bit milliseconds).
MAX_SHORT_WINDOW_MINUTES = 24 * 60


class InvalidRule(CoreError):
    """A rule parameter is unknown or has a bad value; ``parameter`` names it."""

    def __init__(self, parameter: str, reason: str) -> None:
        super().__init__(f"rule parameter {parameter}: {reason}")
        self.parameter = parameter
        self.reason = reason


Number = float | int


@dataclass(frozen=True, slots=True)
class Parameter:
    """One rule parameter: its default, how its value is checked, and what it means."""

    name: str
    default: Number | str
    check: Callable[[str, Any], Number | str]
    doc: str


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise InvalidRule(name, f"must be a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise InvalidRule(name, f"must be a number, got {value!r}") from None
    if not isinstance(value, (int, float)):
        raise InvalidRule(name, f"must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidRule(name, f"must be finite, got {value!r}")
    return number


def _range(
    low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> Callable[[str, Any], float]:
    def check(name: str, value: Any) -> float:
        number = _number(name, value)
        if number < low or number > high or (low_open and number == low) or (high_open and number == high):
            left = "(" if low_open else "["
            right = ")" if high_open else "]"
            raise InvalidRule(name, f"must be in {left}{low:g}, {high:g}{right}, got {value!r}")
        return number

    return check


def _positive(name: str, value: Any) -> float:
    number = _number(name, value)
    if number <= 0:
        raise InvalidRule(name, f"must be > 0, got {value!r}")
    return number


def _integer(low: int, high: int) -> Callable[[str, Any], int]:
    def check(name: str, value: Any) -> int:
        number = _number(name, value)
        if not number.is_integer():
            raise InvalidRule(name, f"must be an integer, got {value!r}")
        if not low <= number <= high:
            raise InvalidRule(name, f"must be an integer in [{low}, {high}], got {value!r}")
        return int(number)

    return check


def _pattern_list(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidRule(name, f"must be a comma-separated list of pattern names, got {value!r}")
    names = [part.strip() for part in value.split(",") if part.strip()]
    for pattern in names:
        if pattern not in PatternType.__members__ or pattern == "UNKNOWN":
            raise InvalidRule(name, f"unknown pattern {pattern!r}")
    return ",".join(sorted(set(names), key=lambda p: list(PatternType.__members__).index(p)))


def _pattern_weights(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidRule(name, f"must be PATTERN:weight pairs separated by commas, got {value!r}")
    weights: dict[str, float] = {}
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        pattern, colon, number = part.partition(":")
        pattern = pattern.strip()
        if not colon or pattern not in PatternType.__members__ or pattern == "UNKNOWN":
            raise InvalidRule(name, f"expected PATTERN:weight with a known pattern, got {part!r}")
        weight = _range(0.0, 1.0, low_open=True)(name, number)
        weights[pattern] = weight
    order = list(PatternType.__members__)
    return ",".join(f"{p}:{weights[p]:g}" for p in sorted(weights, key=order.index))


def _choice(*options: str) -> Callable[[str, Any], str]:
    def check(name: str, value: Any) -> str:
        if not isinstance(value, str) or value.strip() not in options:
            raise InvalidRule(name, f"must be one of {', '.join(options)}, got {value!r}")
        return value.strip()

    return check


#: WASH_TRADING contiguity: the BUY, SELL and BUY are consecutive trades of the account in the
#: symbol, or any three of its trades in the symbol within the window (others may come between).
WASH_CONSECUTIVE = "consecutive"
WASH_WINDOW = "window"

_MINUTES = _range(0.0, MAX_SHORT_WINDOW_MINUTES, low_open=True)
_FRACTION = _range(0.0, 1.0)
_WEIGHT = _range(0.0, 1.0)

_SPECS: tuple[Parameter, ...] = (
    # Seed patterns.
    Parameter("volume.spike.window.minutes", 2.0, _MINUTES, "VOLUME_SPIKE: the whole run lies within it"),
    Parameter(
        "volume.spike.threshold", 1.5, _range(1.0, 1000.0), "VOLUME_SPIKE: notional >= this x the previous"
    ),
    Parameter(
        "volume.spike.min.trades", 3, _integer(2, MAX_RECENT_TRADES), "VOLUME_SPIKE: trades in the run"
    ),
    Parameter("wash.trading.window.minutes", 1.0, _MINUTES, "WASH_TRADING: BUY -> SELL -> BUY within it"),
    Parameter(
        "wash.trading.quantity.tolerance",
        0.1,
        _range(0.0, 1.0, high_open=True),
        "WASH_TRADING: |q - q_first| <= tolerance x q_first",
    ),
    Parameter(
        "wash.trading.contiguity",
        WASH_CONSECUTIVE,
        _choice(WASH_CONSECUTIVE, WASH_WINDOW),
        "WASH_TRADING: consecutive = BUY, SELL, BUY are consecutive trades of the account in the symbol; "
        "window = any three within the window (README, Choosing the wash-trading contiguity)",
    ),
    Parameter("threshold.btc", 500_000.0, _positive, "LARGE_ORDER: notional above it, BTC pairs"),
    Parameter("threshold.eth", 250_000.0, _positive, "LARGE_ORDER: notional above it, ETH pairs"),
    Parameter("threshold.sol", 100_000.0, _positive, "LARGE_ORDER: notional above it, SOL pairs"),
    Parameter("threshold.default", 100_000.0, _positive, "LARGE_ORDER: assets without threshold.<asset>"),
    Parameter("flash.crash.window.minutes", 5.0, _MINUTES, "FLASH_CRASH: sells within it"),
    Parameter(
        "flash.crash.min.sells", 10, _integer(2, MAX_RECENT_TRADES), "FLASH_CRASH: sells needed in the window"
    ),
    # Order flow and momentum.
    Parameter(
        "spoofing.size.ratio",
        10.0,
        _range(1.0, 1_000_000.0),
        "SPOOFING: the order's size >= this x the account's median order size in the symbol",
    ),
    Parameter(
        "spoofing.min.history",
        5,
        _integer(1, 32),
        "SPOOFING: earlier orders in the symbol needed for a median order size",
    ),
    Parameter(
        "spoofing.cancel.window.seconds",
        30.0,
        _range(0.0, 3600.0, low_open=True),
        "SPOOFING: the large order is cancelled within this after the opposite-side fill",
    ),
    Parameter("layering.min.orders", 3, _integer(2, 512), "LAYERING: resting orders on one side at the fill"),
    Parameter("layering.min.levels", 3, _integer(2, 512), "LAYERING: distinct prices of those orders"),
    Parameter(
        "layering.cancel.window.seconds",
        30.0,
        _range(0.0, 3600.0, low_open=True),
        "LAYERING: layers cancelled within this after the opposite-side fill",
    ),
    Parameter(
        "layering.cancel.ratio",
        0.5,
        _range(0.0, 1.0, high_open=True),
        "LAYERING: more than this share of the layers is cancelled (most)",
    ),
    Parameter("quote.stuffing.cycle.minutes", 10.0, _range(1.0, 24 * 60.0), "QUOTE_STUFFING: aligned cycle"),
    Parameter("quote.stuffing.min.orders", 500, _integer(1, 10_000_000), "QUOTE_STUFFING: orders in a cycle"),
    Parameter(
        "quote.stuffing.fast.cancel.seconds",
        5.0,
        _range(0.0, 3600.0, low_open=True),
        "QUOTE_STUFFING: a cancel within this after placement counts as fast",
    ),
    Parameter(
        "quote.stuffing.ratio",
        0.99,
        _range(0.0, 1.0, low_open=True),
        "QUOTE_STUFFING: fast-cancelled or unfilled share of the cycle's orders",
    ),
    Parameter(
        "momentum.burst.seconds", 30.0, _range(0.0, 3600.0, low_open=True), "MOMENTUM_IGNITION: burst span"
    ),
    Parameter(
        "momentum.min.trades", 3, _integer(2, MAX_RECENT_TRADES), "MOMENTUM_IGNITION: same-side trades in it"
    ),
    Parameter(
        "momentum.price.move",
        0.01,
        _range(0.0, 10.0, low_open=True),
        "MOMENTUM_IGNITION: relative price move of the burst, in its direction",
    ),
    Parameter(
        "momentum.reversal.minutes",
        2.0,
        _MINUTES,
        "MOMENTUM_IGNITION: the opposite-side trade follows the burst within this",
    ),
    # Market level (per symbol) and account pairs.
    Parameter(
        "market.allowed.lateness.seconds",
        5.0,
        _range(0.0, 3600.0),
        "market state: a trade this much older than the latest of its input partition still counts",
    ),
    Parameter(
        "price.crash.window.minutes", 5.0, _MINUTES, "PRICE_CRASH: the average price is over this window"
    ),
    Parameter(
        "price.crash.low.ratio",
        0.7,
        _range(0.0, 1.0, low_open=True, high_open=True),
        "PRICE_CRASH: price <= this x the average price",
    ),
    Parameter(
        "price.crash.high.ratio",
        1.3,
        _range(1.0, 1000.0, low_open=True),
        "PRICE_CRASH: price >= this x the average price",
    ),
    Parameter(
        "price.crash.min.trades",
        5,
        _integer(1, 1_000_000),
        "PRICE_CRASH: executions in the window needed for an average price",
    ),
    Parameter(
        "pump.rise.ratio", 0.2, _range(0.0, 100.0, low_open=True), "PUMP_AND_DUMP: price rise from the low"
    ),
    Parameter(
        "pump.rise.hours", 4.0, _range(0.0, 24.0, low_open=True), "PUMP_AND_DUMP: the rise lies within"
    ),
    Parameter("pump.volume.zscore", 3.0, _range(0.0, 1000.0), "PUMP_AND_DUMP: volume z-score of the rise"),
    Parameter(
        "pump.dump.ratio",
        0.15,
        _range(0.0, 1.0, low_open=True, high_open=True),
        "PUMP_AND_DUMP: fall from the peak",
    ),
    Parameter(
        "pump.dump.hours",
        12.0,
        _range(0.0, 24.0, low_open=True),
        "PUMP_AND_DUMP: the fall follows the peak within",
    ),
    Parameter(
        "round.trip.leg.minutes",
        2.0,
        _MINUTES,
        "ROUND_TRIP_WASH: the buy back follows the first leg within this",
    ),
    Parameter(
        "round.trip.quantity.tolerance",
        0.01,
        _range(0.0, 1.0, high_open=True),
        "ROUND_TRIP_WASH: |q_back - q_first| <= tolerance x q_first",
    ),
    Parameter(
        "round.trip.window.hours",
        1.0,
        _range(0.0, 24.0, low_open=True),
        "ROUND_TRIP_WASH: trips counted within",
    ),
    Parameter("round.trip.min.trips", 3, _integer(1, 1000), "ROUND_TRIP_WASH: round trips in the window"),
    # Beyond the seed.
    Parameter(
        "structuring.reporting.threshold", 10_000.0, _positive, "STRUCTURING: the reporting threshold (USD)"
    ),
    Parameter(
        "structuring.lower.ratio",
        0.8,
        _range(0.0, 1.0, low_open=True, high_open=True),
        "STRUCTURING: band is [ratio x threshold, threshold)",
    ),
    Parameter(
        "structuring.min.trades",
        3,
        _integer(2, MAX_STRUCTURING_CANDIDATES),
        "STRUCTURING: trades in the band within the window",
    ),
    Parameter("structuring.window.hours", 24.0, _range(0.0, 24.0, low_open=True), "STRUCTURING: window"),
    Parameter("kyc.tier0.trade.limit", 1_000.0, _positive, "KYC tier 0 (unverified): notional per trade"),
    Parameter("kyc.tier0.daily.limit", 2_000.0, _positive, "KYC tier 0: notional per 24 h"),
    Parameter("kyc.tier1.trade.limit", 10_000.0, _positive, "KYC tier 1: notional per trade"),
    Parameter("kyc.tier1.daily.limit", 50_000.0, _positive, "KYC tier 1: notional per 24 h"),
    Parameter("kyc.tier2.trade.limit", 250_000.0, _positive, "KYC tier 2: notional per trade"),
    Parameter("kyc.tier2.daily.limit", 1_000_000.0, _positive, "KYC tier 2: notional per 24 h"),
    Parameter("kyc.tier3.trade.limit", 10_000_000.0, _positive, "KYC tier 3 (institutional): per trade"),
    Parameter("kyc.tier3.daily.limit", 100_000_000.0, _positive, "KYC tier 3: notional per 24 h"),
    Parameter("kyc.default.tier", 0, _integer(0, 3), "KYC tier assumed for a user without a profile"),
    Parameter(
        "sanctions.merge.minutes",
        60.0,
        _MINUTES,
        "SANCTIONS_HIT: hits of one user within this long after an alert merge into it",
    ),
    Parameter(
        "kyc.merge.minutes",
        24 * 60.0,
        _MINUTES,
        "KYC_LIMIT_BREACH: breaches of one user within this long after an alert merge into it",
    ),
    Parameter("patterns.disabled", "", _pattern_list, "comma-separated patterns that raise nothing"),
    Parameter(
        "priority.pattern.weights",
        "VOLUME_SPIKE:0.4,WASH_TRADING:0.6,FLASH_CRASH:0.4,LAYERING:0.5,MOMENTUM_IGNITION:0.6,STRUCTURING:0.6",
        _pattern_weights,
        "PATTERN:weight pairs (0-1] scaling an alert's priority: how often past alerts of the pattern were "
        "true (tuned against labelled decisions; `riskengine evaluate` suggests them); unlisted: 1",
    ),
    Parameter(
        "market.maker.exempt",
        "VOLUME_SPIKE,WASH_TRADING,FLASH_CRASH,ROUND_TRIP_WASH,STRUCTURING",
        _pattern_list,
        "patterns not applied to accounts designated MARKET_MAKER (their profile's accountType); "
        "the other patterns apply to them as to anyone, with a lower alert priority",
    ),
    # Event time.
    Parameter(
        "event.allowed.lateness.seconds",
        60.0,
        _range(0.0, MAX_SHORT_WINDOW_MINUTES * 60.0),
        "out-of-order trades up to this much older than the user's latest are still windowed",
    ),
    Parameter(
        "event.max.future.skew.seconds",
        300.0,
        _range(0.0, 7 * 24 * 3600.0),
        "a trade or order event more than this ahead of the worker's clock (replay: the wall clock "
        "too) is rejected: it would move the account's event time for good",
    ),
    # Per-trade analysis.
    Parameter("volume.ewma.alpha", 0.05, _range(0.0, 1.0, low_open=True), "weight of a trade in the EWMA"),
    Parameter(
        "volume.std.floor.ratio",
        0.5,
        _range(0.0, 100.0),
        "z-scores divide by max(EWMA std, this x EWMA mean): a short or steady history is no outlier",
    ),
    Parameter("volume.zscore.high", 4.0, _positive, "z-score at which the volume component is 1"),
    Parameter(
        "volume.percentile.high",
        0.95,
        _range(0.0, 1.0, high_open=True),
        "percentile rank from which the volume component rises",
    ),
    Parameter(
        "volume.min.history", 5, _integer(0, 1_000_000), "trades of history before z-score and rank count"
    ),
    Parameter(
        "market.price.ewma.alpha",
        0.2,
        _range(0.0, 1.0, low_open=True),
        "weight of a trade in the user's reference price per symbol",
    ),
    Parameter(
        "market.price.deviation.high", 0.05, _positive, "price deviation at which its sub-score is at its cap"
    ),
    Parameter(
        "market.liquidity.consumption.high",
        0.1,
        _positive,
        "liquidity consumption at which its sub-score is at its cap",
    ),
    Parameter("liquidity.default", 1_000_000.0, _positive, "liquidity of assets without liquidity.<asset>"),
    Parameter("liquidity.btc", 50_000_000.0, _positive, "liquidity figure of BTC pairs (notional)"),
    Parameter("liquidity.eth", 20_000_000.0, _positive, "liquidity figure of ETH pairs (notional)"),
    Parameter("reporting.travel.rule.threshold", 1_000.0, _positive, "TRAVEL_RULE flag at notional >= it"),
    Parameter(
        "reporting.tax.threshold", 10_000.0, _positive, "TAX_REPORTING_REQUIRED flag at notional >= it"
    ),
    # Score.
    Parameter("score.weight.volume", 0.5, _WEIGHT, "weight of the volume component"),
    Parameter("score.weight.behavioral", 1.0, _WEIGHT, "weight of the behavioral component"),
    Parameter("score.weight.market.impact", 1.0, _WEIGHT, "weight of the market-impact component"),
    Parameter("score.weight.compliance", 1.0, _WEIGHT, "weight of the compliance component"),
    Parameter("level.medium", 0.3, _FRACTION, "riskScore from which the level is MEDIUM"),
    Parameter("level.high", 0.6, _FRACTION, "riskScore from which the level is HIGH"),
    Parameter("level.critical", 0.85, _FRACTION, "riskScore from which the level is CRITICAL"),
)

#: Every fixed-name parameter, by name.
PARAMETERS: Mapping[str, Parameter] = MappingProxyType({spec.name: spec for spec in _SPECS})
#: Families whose last name part is a base asset (lower case letters and digits).
_ASSET_FAMILIES = {"threshold": _positive, "liquidity": _positive}
_ASSET_NAME = re.compile(r"^(threshold|liquidity)\.([a-z0-9]{1,20})$")


def _parse(name: str, value: Any) -> Number | str:
    spec = PARAMETERS.get(name)
    if spec is not None:
        return spec.check(name, value)
    match = _ASSET_NAME.match(name)
    if match is None:
        raise InvalidRule(name, "unknown parameter")
    return _ASSET_FAMILIES[match.group(1)](name, value)


class Rules:
    """A validated, versioned set of rule parameters with the values the core uses precomputed."""

    __slots__ = (
        "_asset_liquidity",
        "_asset_thresholds",
        "_symbol_liquidity",
        "_symbol_thresholds",
        "allowed_lateness_ms",
        "daily_limits",
        "disabled",
        "flash_min_sells",
        "flash_window_ms",
        "kyc_default_tier",
        "kyc_merge_ms",
        "layering_levels",
        "layering_min_orders",
        "layering_ratio",
        "layering_window_ms",
        "level_critical",
        "level_high",
        "level_medium",
        "liquidity_high",
        "market_lateness_ms",
        "market_maker_exempt",
        "max_future_skew_ms",
        "momentum_burst_ms",
        "momentum_min_trades",
        "momentum_move",
        "momentum_reversal_ms",
        "order_horizon_ms",
        "price_alpha",
        "price_crash_high",
        "price_crash_low",
        "price_crash_min_trades",
        "price_crash_window_ms",
        "price_deviation_high",
        "priority_weights",
        "pump_dump_ms",
        "pump_dump_ratio",
        "pump_rise_ms",
        "pump_rise_ratio",
        "pump_zscore",
        "quote_cycle_ms",
        "quote_fast_cancel_ms",
        "quote_min_orders",
        "quote_ratio",
        "recent_horizon_ms",
        "round_trip_leg_ms",
        "round_trip_min",
        "round_trip_tolerance",
        "round_trip_window_ms",
        "sanctions_merge_ms",
        "spike_min_trades",
        "spike_threshold",
        "spike_window_ms",
        "spoof_min_history",
        "spoof_ratio",
        "spoof_window_ms",
        "structuring_lower",
        "structuring_min_trades",
        "structuring_threshold",
        "structuring_window_ms",
        "tax_threshold",
        "trade_limits",
        "travel_rule_threshold",
        "values",
        "version",
        "volume_alpha",
        "volume_min_history",
        "volume_percentile_high",
        "volume_std_floor",
        "volume_zscore_high",
        "wash_consecutive",
        "wash_tolerance",
        "wash_window_ms",
        "weight_behavioral",
        "weight_compliance",
        "weight_market_impact",
        "weight_volume",
        "weights",
    )

    def __init__(self, version: int, values: Mapping[str, Number | str]) -> None:
        """Use :meth:`from_parameters` or :meth:`default`; ``values`` must already be validated."""
        self.version = version
        self.values: Mapping[str, Number | str] = MappingProxyType(dict(values))

        def num(name: str) -> float:
            return float(values[name])

        def whole(name: str) -> int:
            return int(values[name])

        def minutes(name: str) -> int:
            return round(num(name) * MINUTE_MS)

        self.spike_window_ms = minutes("volume.spike.window.minutes")
        self.spike_threshold = num("volume.spike.threshold")
        self.spike_min_trades = whole("volume.spike.min.trades")
        self.wash_window_ms = minutes("wash.trading.window.minutes")
        self.wash_tolerance = num("wash.trading.quantity.tolerance")
        self.wash_consecutive = values["wash.trading.contiguity"] == WASH_CONSECUTIVE
        self.flash_window_ms = minutes("flash.crash.window.minutes")
        self.flash_min_sells = whole("flash.crash.min.sells")
        self.spoof_ratio = num("spoofing.size.ratio")
        self.spoof_min_history = whole("spoofing.min.history")
        self.spoof_window_ms = round(num("spoofing.cancel.window.seconds") * 1000)
        self.layering_min_orders = whole("layering.min.orders")
        self.layering_levels = whole("layering.min.levels")
        self.layering_window_ms = round(num("layering.cancel.window.seconds") * 1000)
        self.layering_ratio = num("layering.cancel.ratio")
        self.quote_cycle_ms = minutes("quote.stuffing.cycle.minutes")
        self.quote_min_orders = whole("quote.stuffing.min.orders")
        self.quote_fast_cancel_ms = round(num("quote.stuffing.fast.cancel.seconds") * 1000)
        self.quote_ratio = num("quote.stuffing.ratio")
        self.momentum_burst_ms = round(num("momentum.burst.seconds") * 1000)
        self.momentum_min_trades = whole("momentum.min.trades")
        self.momentum_move = num("momentum.price.move")
        self.momentum_reversal_ms = minutes("momentum.reversal.minutes")
        self.market_lateness_ms = round(num("market.allowed.lateness.seconds") * 1000)
        self.price_crash_window_ms = minutes("price.crash.window.minutes")
        self.price_crash_low = num("price.crash.low.ratio")
        self.price_crash_high = num("price.crash.high.ratio")
        self.price_crash_min_trades = whole("price.crash.min.trades")
        self.pump_rise_ratio = num("pump.rise.ratio")
        self.pump_rise_ms = round(num("pump.rise.hours") * HOUR_MS)
        self.pump_zscore = num("pump.volume.zscore")
        self.pump_dump_ratio = num("pump.dump.ratio")
        self.pump_dump_ms = round(num("pump.dump.hours") * HOUR_MS)
        self.round_trip_leg_ms = minutes("round.trip.leg.minutes")
        self.round_trip_tolerance = num("round.trip.quantity.tolerance")
        self.round_trip_window_ms = round(num("round.trip.window.hours") * HOUR_MS)
        self.round_trip_min = whole("round.trip.min.trips")
        self.structuring_threshold = num("structuring.reporting.threshold")
        self.structuring_lower = num("structuring.lower.ratio") * self.structuring_threshold
        self.structuring_min_trades = whole("structuring.min.trades")
        self.structuring_window_ms = round(num("structuring.window.hours") * HOUR_MS)
        self.trade_limits = tuple(num(f"kyc.tier{tier}.trade.limit") for tier in range(4))
        self.daily_limits = tuple(num(f"kyc.tier{tier}.daily.limit") for tier in range(4))
        self.kyc_default_tier = whole("kyc.default.tier")
        self.sanctions_merge_ms = minutes("sanctions.merge.minutes")
        self.kyc_merge_ms = minutes("kyc.merge.minutes")
        self.disabled = frozenset(
            PatternType(name) for name in str(values["patterns.disabled"]).split(",") if name
        )
        self.market_maker_exempt = frozenset(
            PatternType(name) for name in str(values["market.maker.exempt"]).split(",") if name
        )
        self.priority_weights: Mapping[PatternType, float] = MappingProxyType(
            {
                PatternType(pattern): float(weight)
                for pattern, _, weight in (
                    pair.partition(":") for pair in str(values["priority.pattern.weights"]).split(",") if pair
                )
            }
        )
        self.allowed_lateness_ms = round(num("event.allowed.lateness.seconds") * 1000)
        self.max_future_skew_ms = round(num("event.max.future.skew.seconds") * 1000)
        self.volume_alpha = num("volume.ewma.alpha")
        self.volume_std_floor = num("volume.std.floor.ratio")
        self.volume_zscore_high = num("volume.zscore.high")
        self.volume_percentile_high = num("volume.percentile.high")
        self.volume_min_history = whole("volume.min.history")
        self.price_alpha = num("market.price.ewma.alpha")
        self.price_deviation_high = num("market.price.deviation.high")
        self.liquidity_high = num("market.liquidity.consumption.high")
        self.travel_rule_threshold = num("reporting.travel.rule.threshold")
        self.tax_threshold = num("reporting.tax.threshold")
        self.weight_volume = num("score.weight.volume")
        self.weight_behavioral = num("score.weight.behavioral")
        self.weight_market_impact = num("score.weight.market.impact")
        self.weight_compliance = num("score.weight.compliance")
        # One shared mapping for every ScoreBreakdown: no per-trade dict.
        self.weights: Mapping[str, float] = MappingProxyType(
            {
                "volume": self.weight_volume,
                "behavioral": self.weight_behavioral,
                "marketImpact": self.weight_market_impact,
                "compliance": self.weight_compliance,
            }
        )
        self.level_medium = num("level.medium")
        self.level_high = num("level.high")
        self.level_critical = num("level.critical")
        # Trades this far behind the user's latest event time can still join a pattern window (the
        # order-flow patterns look back at fills within their cancel windows).
        self.recent_horizon_ms = (
            max(
                self.spike_window_ms,
                self.wash_window_ms,
                self.flash_window_ms,
                self.momentum_burst_ms + self.momentum_reversal_ms,
                self.spoof_window_ms,
                self.layering_window_ms,
            )
            + self.allowed_lateness_ms
        )
        # Closed orders this far behind the latest event time can still complete an order pattern.
        self.order_horizon_ms = max(self.spoof_window_ms, self.layering_window_ms) + self.allowed_lateness_ms
        self._asset_thresholds = self._family("threshold")
        self._asset_liquidity = self._family("liquidity")
        # Per-symbol memo of the two lookups above (bounded by _MEMO_LIMIT).
        self._symbol_thresholds: dict[str, float] = {}
        self._symbol_liquidity: dict[str, float] = {}

    def _family(self, prefix: str) -> dict[str, float]:
        return {
            name[len(prefix) + 1 :]: float(value)
            for name, value in self.values.items()
            if name.startswith(prefix + ".") and name != prefix + ".default"
        } | {"": float(self.values[prefix + ".default"])}

    @classmethod
    def from_parameters(cls, version: object, parameters: Mapping[str, Any]) -> Rules:
        """Validate ``parameters`` (name -> string or number) over the defaults.

        Raises :class:`InvalidRule` naming the parameter for an unknown name or a bad value, and
        ``level.*`` cut-offs that are not increasing, or a version that is not a non-negative int.
        ``version`` is typed ``object`` because it comes from outside (a manifest); the compiled
        core would otherwise refuse a wrong type with a bare TypeError before this check.
        """
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise InvalidRule("version", f"must be a non-negative integer, got {version!r}")
        values: dict[str, Number | str] = {spec.name: spec.default for spec in _SPECS}
        for name in sorted(parameters):
            if not isinstance(name, str):
                raise InvalidRule(repr(name), "parameter names must be strings")
            values[name] = _parse(name, parameters[name])
        if not float(values["level.medium"]) < float(values["level.high"]) < float(values["level.critical"]):
            raise InvalidRule(
                "level.high",
                "level.medium < level.high < level.critical must hold, got "
                f"{values['level.medium']} / {values['level.high']} / {values['level.critical']}",
            )
        if float(values["kyc.default.tier"]) not in (0, 1, 2, 3):
            raise InvalidRule("kyc.default.tier", "must be 0..3")
        return cls(version, values)

    @classmethod
    def default(cls) -> Rules:
        """The defaults (version 0)."""
        return cls.from_parameters(0, {})

    def parameters(self) -> dict[str, str]:
        """Every parameter as strings: the ``parameters`` map of a ``RiskRules`` record."""
        return {name: _format(value) for name, value in sorted(self.values.items())}

    def large_order_threshold(self, symbol: str) -> float:
        """LARGE_ORDER notional threshold for ``symbol`` (``threshold.<base asset>`` or the default)."""
        found = self._symbol_thresholds.get(symbol)
        if found is None:
            found = self._by_asset(self._asset_thresholds, symbol)
            _remember(self._symbol_thresholds, symbol, found)
        return found

    def liquidity(self, symbol: str) -> float:
        """Liquidity figure (notional) for ``symbol`` (``liquidity.<base asset>`` or the default)."""
        found = self._symbol_liquidity.get(symbol)
        if found is None:
            found = self._by_asset(self._asset_liquidity, symbol)
            _remember(self._symbol_liquidity, symbol, found)
        return found

    @staticmethod
    def _by_asset(table: dict[str, float], symbol: str) -> float:
        base = symbol.partition("/")[0].lower()
        return table.get(base, table[""])

    def __repr__(self) -> str:
        return f"Rules(version={self.version}, {len(self.values)} parameters)"


#: Symbols memoized per lookup table; a stream of garbage symbols must not grow memory without bound.
_MEMO_LIMIT = 10_000


def _remember(memo: dict[str, float], symbol: str, value: float) -> None:
    if len(memo) >= _MEMO_LIMIT:
        memo.clear()
    memo[symbol] = value


def _format(value: Number | str) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


#: The defaults, shared (rules are immutable).
DEFAULT_RULES = Rules.default()
