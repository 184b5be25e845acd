"""Evaluate one trade against the user's state, the reference data and the rules.

:func:`evaluate_trade` is the whole detection core: synchronous, deterministic, no I/O and no
clock. A user's results depend only on that user's own trade sequence, the reference data and the
rules, which is what lets Kafka partition the work by userId and lets replay, benchmark, property
tests and the Faust worker agree. For speed the state passed in is updated in place and returned
in the :class:`Evaluation` (the caller hands it over; encode it first to keep the old one).

Event time (``event.allowed.lateness.seconds``, default 60 s; the watermark is the latest event
time seen for the user):

- A trade at or after ``watermark - lateness`` joins the short pattern windows at its event-time
  position (after trades with the same time). Detectors match over the event-time order, and a
  trade that arrived out of order is also tried as part of matches ending at later trades (see
  :mod:`riskengine.core.patterns.base`), so it is detected as if it had come in order.
- A trade before ``watermark - lateness`` is still analyzed (volume, market impact, compliance,
  trade-level patterns: LARGE_ORDER, SELF_TRADE, SANCTIONS_HIT, KYC_LIMIT_BREACH), flagged
  ``LATE_EVENT`` with ``behavioralAnalysis.lateArrival`` true, and kept out of the short pattern
  windows (VOLUME_SPIKE, WASH_TRADING, FLASH_CRASH never see it). The 24 h aggregates (KYC daily
  total, structuring candidates) still take it if its event time is inside what they retain.
- A trade whose id is already in the recent window at the same event time is a redelivery
  (at-least-once input): it is analyzed against the current state without changing it, flagged
  ``DUPLICATE_EVENT``, and raises no alerts (the first delivery raised them, with the same ids).

Alerts: ``alertId`` is the first 32 hex digits of SHA-256 over pattern, key and evidence ids, each
length-prefixed (key = userId, userId/symbol for WASH_TRADING, userId/tradeId for trade-keyed
patterns), so the same match gets the same
id on any machine and downstream upserts deduplicate. Suppression: for each (pattern, key) the
state remembers the event time L of the last evidence of the last alert; a new match of the same
key ending at or before L + the pattern's merge window (its own window for windowed patterns,
``sanctions.merge.minutes`` / ``kyc.merge.minutes`` for those) is merged into that alert: no new
alert, but the trade still lists the pattern in ``triggeredPatterns``. A pattern that keeps
matching thus alerts at most once per window, and each new alert's evidence is disjoint from the
previous one's. Trade-keyed patterns (LARGE_ORDER, SELF_TRADE) alert on every matching trade.

Market impact, from the symbol's market context when the caller passes one (``market``: the
market state's figures as of a minute before the trade, see :mod:`riskengine.core.market`), else
from static ``ReferenceData.markets``, else from the user's own data: the reference price is the
context's (or the static entry's) or else the EWMA (``market.price.ewma.alpha``) of the user's
prices in the symbol before this trade (none for the first trade: deviation 0); liquidity
consumption is notional over the context's last-hour notional, the static ``recent_volume``, or
``liquidity.<base asset>`` / ``liquidity.default`` from the rules; the context's volatility widens
the price deviation that counts as high (:mod:`riskengine.core.scoring`).

Compliance flags: SANCTIONED_USER / SANCTIONED_COUNTERPARTY / SANCTIONED_COUNTRY,
RESTRICTED_COUNTRY (profile country in ``restricted_countries``), KYC_TRADE_LIMIT /
KYC_DAILY_LIMIT (above the tier's limits), NO_PROFILE (no profile: tier ``kyc.default.tier``),
STRUCTURING_SUSPECTED (STRUCTURING matched), TRAVEL_RULE (notional >=
``reporting.travel.rule.threshold``, 1,000), TAX_REPORTING_REQUIRED (notional >=
``reporting.tax.threshold``, 10,000), LATE_EVENT, DUPLICATE_EVENT. Scores, levels and actions:
:mod:`riskengine.core.scoring`.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Mapping
from math import sqrt
from typing import NamedTuple

from .early_signals import SIGNAL_SCORE, early_signals
from .market import MarketContext
from .models import (
    AccountType,
    BehavioralAnalysis,
    ComplianceFlag,
    MarketImpactAnalysis,
    OrderEvent,
    PatternType,
    RiskAlert,
    RiskAnalyzedTrade,
    ScoreBreakdown,
    Side,
    Trade,
    VolumeAnalysis,
    alert_id,
)
from .patterns import REGISTRY, Detector, Match, OrderContext, OrderFlowDetector, TradeContext
from .priority import alert_priority, decayed_heat
from .reference import ReferenceData
from .rules import MAX_RECENT_TRADES, Rules
from .scoring import (
    BEHAVIORAL_PATTERNS,
    FLAG_SCORE,
    SEVERITY_SCORE,
    combine,
    market_impact_component,
    match_strength,
    mitigation_actions,
    risk_level,
    volume_component,
)
from .state import RecentTrades, UserState

_SELL = Side.SELL
_MARKET_MAKER = AccountType.MARKET_MAKER
#: Order types that take liquidity: their trades are "aggressive" (MOMENTUM_IGNITION's bursts).
AGGRESSIVE_ORDER_TYPES = frozenset({"MARKET", "IOC", "FOK"})
_VOLUME_SPIKE = PatternType.VOLUME_SPIKE
_new = tuple.__new__
_STRUCTURING = PatternType.STRUCTURING
_F = ComplianceFlag
SANCTIONED_USER = _F.SANCTIONED_USER.value
SANCTIONED_COUNTERPARTY = _F.SANCTIONED_COUNTERPARTY.value
SANCTIONED_COUNTRY = _F.SANCTIONED_COUNTRY.value
RESTRICTED_COUNTRY = _F.RESTRICTED_COUNTRY.value
KYC_TRADE_LIMIT = _F.KYC_TRADE_LIMIT.value
KYC_DAILY_LIMIT = _F.KYC_DAILY_LIMIT.value
NO_PROFILE = _F.NO_PROFILE.value
STRUCTURING_SUSPECTED = _F.STRUCTURING_SUSPECTED.value
TRAVEL_RULE = _F.TRAVEL_RULE.value
TAX_REPORTING_REQUIRED = _F.TAX_REPORTING_REQUIRED.value
LATE_EVENT = _F.LATE_EVENT.value
DUPLICATE_EVENT = _F.DUPLICATE_EVENT.value


class Evaluation(NamedTuple):
    """The result of one trade: the updated state, the analyzed trade, and new alerts."""

    state: UserState
    analyzed: RiskAnalyzedTrade
    alerts: tuple[RiskAlert, ...]


class OrderEvaluation(NamedTuple):
    """The result of one order event: the updated state, new alerts, and what was odd about it.

    ``issue`` names an inconsistency (see :mod:`riskengine.core.order_book`; the event changed
    nothing), ``late`` is true for an event beyond the allowed lateness (applied to the order
    book, kept out of the patterns).
    """

    state: UserState
    alerts: tuple[RiskAlert, ...]
    issue: str | None
    late: bool


class _Plan:
    """What the rules imply for the detector loop, computed once per Rules object."""

    __slots__ = (
        "behavioral",
        "detectors",
        "fired_windows",
        "maker_detectors",
        "maker_order_detectors",
        "merge_windows",
        "order_detectors",
        "rules",
    )

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self.detectors: tuple[Detector, ...] = tuple(
            detector for pattern, detector in REGISTRY.items() if pattern not in rules.disabled
        )
        self.order_detectors: tuple[OrderFlowDetector, ...] = tuple(
            detector for detector in self.detectors if isinstance(detector, OrderFlowDetector)
        )
        # Accounts designated MARKET_MAKER skip the patterns of market.maker.exempt.
        exempt = rules.market_maker_exempt
        self.maker_detectors = tuple(d for d in self.detectors if d.pattern not in exempt)
        self.maker_order_detectors = tuple(d for d in self.order_detectors if d.pattern not in exempt)
        self.merge_windows: dict[PatternType, int | None] = {
            detector.pattern: detector.merge_window_ms(rules) for detector in self.detectors
        }
        self.fired_windows: dict[PatternType, int] = {
            pattern: window for pattern, window in self.merge_windows.items() if window is not None
        }
        self.behavioral: dict[PatternType, float] = {
            detector.pattern: SEVERITY_SCORE[detector.severity]
            if detector.pattern in BEHAVIORAL_PATTERNS
            else 0.0
            for detector in self.detectors
        }


# One-entry cache: the worker uses one Rules object until the next risk-rules message.
_plans: list[_Plan] = []


def _plan(rules: Rules) -> _Plan:
    if _plans and _plans[0].rules is rules:
        return _plans[0]
    plan = _Plan(rules)
    _plans[:] = [plan]
    return plan


def evaluate_trade(
    state: UserState,
    trade: Trade,
    reference: ReferenceData,
    rules: Rules,
    market: MarketContext | None = None,
) -> Evaluation:
    """Analyze ``trade`` of ``state``'s user; see the module docstring for the semantics.

    ``state`` must be the state of ``trade.user_id`` (a fresh ``UserState()`` for a new user); it
    is updated in place and returned as ``Evaluation.state``. ``market``: the symbol's market
    context to score the trade's market impact against (see :mod:`riskengine.core.market`).
    """
    plan = _plan(rules)
    timestamp = trade.timestamp
    notional = trade.notional
    symbol = trade.symbol
    user_id = trade.user_id
    watermark = state.watermark
    recent = state.recent
    too_late = timestamp < watermark - rules.allowed_lateness_ms
    position = -1
    duplicate = False
    if timestamp <= watermark and not too_late:
        position = recent.find(timestamp, trade.trade_id)
        duplicate = position >= 0

    # Volume: against the history before this trade.
    history = state.count
    mean = state.mean
    std = sqrt(state.variance)
    floor = rules.volume_std_floor * mean
    if std < floor:
        std = floor
    z_score = (notional - mean) / std if std > 0.0 and history >= rules.volume_min_history else 0.0

    if duplicate:
        rank = state.sketch.rank(notional)
        stats = state.symbols.get(symbol)
        user_price = None if stats is None else stats.price
        structuring_position = state.find_structuring_candidate(timestamp, trade.trade_id)
    else:
        rank = state.observe_notional(notional, rules.volume_alpha)
        user_price = state.observe_price(symbol, trade.price, timestamp, rules.price_alpha)
        if timestamp > watermark:
            state.watermark = watermark = timestamp
            # Trades move the order horizon too, so a user's order book ends up the same however
            # the two inputs interleaved.
            if state.orders.orders:
                state.orders.prune(watermark - rules.order_horizon_ms)
        state.add_day_notional(timestamp, notional)
        if not too_late:
            position = recent.insert(
                timestamp,
                trade.trade_id,
                trade.side is _SELL,
                symbol,
                trade.quantity,
                notional,
                trade.order_type.upper() in AGGRESSIVE_ORDER_TYPES,
                trade.counterparty_user_id or "",
            )
            position -= recent.prune(watermark - rules.recent_horizon_ms, MAX_RECENT_TRADES)
            if position < 0:
                position = -1
        structuring_position = -1
        if rules.structuring_lower <= notional < rules.structuring_threshold:
            structuring_position = state.add_structuring_candidate(
                timestamp, trade.trade_id, watermark - rules.structuring_window_ms - rules.allowed_lateness_ms
            )

    # Market impact.
    static = reference.markets.get(symbol) if reference.markets else None
    reference_price = user_price
    liquidity = 0.0
    if static is not None:
        if static.reference_price is not None:
            reference_price = static.reference_price
        if static.recent_volume is not None:
            liquidity = static.recent_volume
    volatility = None
    as_of = None
    if market is not None:
        if market.reference_price is not None:
            reference_price = market.reference_price
        if market.recent_volume > 0:
            liquidity = market.recent_volume
        volatility = market.volatility
        as_of = market.as_of
    if not liquidity:
        liquidity = rules.liquidity(symbol)
    deviation = 0.0
    off_market = False
    if reference_price:
        deviation = abs(trade.price - reference_price) / reference_price
        off_market = (
            trade.price <= rules.price_crash_low * reference_price
            or trade.price >= rules.price_crash_high * reference_price
        )
    consumption = notional / liquidity
    large_threshold = rules.large_order_threshold(symbol)

    # Compliance facts.
    profile = reference.profiles.get(user_id)
    context = TradeContext(trade, state, reference, rules, profile, position, structuring_position)
    context.large_order = large_order = notional > large_threshold
    context.large_order_threshold = large_threshold
    flags: list[str] = []
    hits: tuple[str, ...] = ()
    if reference.sanctioned_users or reference.profiles:
        if user_id in reference.sanctioned_users or (profile is not None and profile.sanctioned):
            hits = ("user",)
            flags.append(SANCTIONED_USER)
        counterparty = trade.counterparty_user_id
        if counterparty is not None and reference.is_sanctioned(counterparty):
            hits += ("counterparty",)
            flags.append(SANCTIONED_COUNTERPARTY)
    if profile is not None:
        tier = profile.kyc_tier
        if profile.country in reference.sanctioned_countries:
            hits += ("country",)
            flags.append(SANCTIONED_COUNTRY)
        if profile.country in reference.restricted_countries:
            flags.append(RESTRICTED_COUNTRY)
    else:
        tier = rules.kyc_default_tier
    context.sanction_hits = hits
    context.kyc_tier = tier
    context.trade_limit = trade_limit = rules.trade_limits[tier]
    context.daily_limit = daily_limit = rules.daily_limits[tier]
    context.day_total = day_total = state.day_total
    if notional > trade_limit:
        context.kyc_trade_breach = True
        flags.append(KYC_TRADE_LIMIT)
    if day_total > daily_limit:
        context.kyc_daily_breach = True
        flags.append(KYC_DAILY_LIMIT)
    if profile is None:
        flags.append(NO_PROFILE)

    # Patterns, suppression, alerts.
    matched: list[PatternType] = []
    matches: list[Match] = []
    alerts: list[RiskAlert] = []
    behavioral = 0.0
    account_type = None if profile is None else profile.account_type
    detectors = plan.maker_detectors if account_type is _MARKET_MAKER else plan.detectors
    for detector in detectors:
        found = detector.detect(context)
        if found is None:
            continue
        pattern = detector.pattern
        matched.append(pattern)
        matches.append(found)
        if duplicate:
            continue
        window = plan.merge_windows[pattern]
        if window is not None:
            key = (pattern, found.key)
            last = state.fired.get(key)
            if last is not None and found.timestamp <= last + window:
                continue
            # Pruning only when an entry is added keeps the per-trade cost at zero and still bounds
            # the map: at most the entries alive within their windows, plus this one.
            state.prune_fired(rules.allowed_lateness_ms, plan.fired_windows)
            state.fired[key] = found.timestamp
        alerts.append(
            _alert(detector, found, user_id, rules, state, _stake(found, recent, notional), account_type)
        )
    triggered = tuple(matched)

    # Window counts for the analyses (0 when kept out of the windows).
    if position >= 0:
        times = recent.times
        # In-order arrivals are last; only an out-of-order one can have equal times after it.
        end = len(times) if position == len(times) - 1 else bisect_right(times, timestamp)
        in_spike_window = end - bisect_left(times, timestamp - rules.spike_window_ms, 0, end)
        start = bisect_left(times, timestamp - rules.flash_window_ms, 0, end)
        in_flash_window = end - start
        sells_in_window = sum(recent.sells[start:end])
    else:
        in_spike_window = in_flash_window = sells_in_window = 0

    structuring = 0.0
    for pattern, found in zip(matched, matches, strict=True):
        strength = match_strength(pattern, found.features, sells_in_window, in_flash_window)
        score = plan.behavioral[pattern] * strength
        if score > behavioral:
            behavioral = score
        if pattern is _STRUCTURING:
            structuring = strength
    signals = () if too_late or duplicate else early_signals(state, trade, position, rules)
    for signal in signals:
        score = SIGNAL_SCORE[signal]
        if score > behavioral:
            behavioral = score

    if structuring:
        flags.append(STRUCTURING_SUSPECTED)
    if notional >= rules.travel_rule_threshold:
        flags.append(TRAVEL_RULE)
        if notional >= rules.tax_threshold:
            flags.append(TAX_REPORTING_REQUIRED)
    if too_late:
        flags.append(LATE_EVENT)
    if duplicate:
        flags.append(DUPLICATE_EVENT)
    compliance = 0.0
    for flag in flags:
        score = FLAG_SCORE.get(flag, 0.0)
        if flag == STRUCTURING_SUSPECTED:
            score *= structuring
        if score > compliance:
            compliance = score

    volume = volume_component(z_score, rank, history, rules)
    market_impact = market_impact_component(
        large_order, consumption, deviation, rules, volatility, off_market
    )
    risk_score = combine(volume, behavioral, market_impact, compliance, rules)
    level = risk_level(risk_score, rules)
    compliance_flags = tuple(flags)
    # The records are NamedTuples built with tuple.__new__ and every field given in declaration
    # order: it skips the generated __new__ frame, ~1 us per trade over six records.
    analyzed = _new(
        RiskAnalyzedTrade,
        (
            trade,
            risk_score,
            level,
            triggered,
            _new(
                VolumeAnalysis,
                (notional, z_score, rank, mean, std, in_spike_window, _VOLUME_SPIKE in matched),
            ),
            _new(BehavioralAnalysis, (triggered, in_flash_window, sells_in_window, too_late, signals)),
            _new(
                MarketImpactAnalysis,
                (consumption, deviation, reference_price, large_order, large_threshold, volatility, as_of),
            ),
            compliance_flags,
            mitigation_actions(level, compliance_flags, triggered),
            _new(ScoreBreakdown, (volume, behavioral, market_impact, compliance, rules.weights)),
            rules.version,
            None,
        ),
    )
    return _new(Evaluation, (state, analyzed, tuple(alerts) if alerts else ()))


def _stake(match: Match, recent: RecentTrades, notional: float) -> float:
    """The notional at stake in a match: its evidence trades still in the window, else ``notional``."""
    if match.activity:
        return max(a.price * a.quantity for a in match.activity)
    if len(match.evidence) < 2:
        return notional
    wanted = set(match.evidence)
    total = sum(n for trade_id, n in zip(recent.ids, recent.notionals, strict=True) if trade_id in wanted)
    return total or notional


def _alert(
    detector: Detector,
    match: Match,
    user_id: str,
    rules: Rules,
    state: UserState,
    stake: float,
    account_type: AccountType | None,
) -> RiskAlert:
    key = f"{user_id}/{match.key}" if match.key else user_id
    # The account's earlier alerts raise the priority; this one counts for the next.
    heat = decayed_heat(state.alert_heat, state.alert_heat_at, match.timestamp)
    state.alert_heat = heat + 1.0
    if match.timestamp > state.alert_heat_at:
        state.alert_heat_at = match.timestamp
    return RiskAlert(
        alert_id=alert_id(detector.pattern, key, match.evidence),
        pattern=detector.pattern,
        user_id=user_id,
        symbol=match.symbol,
        severity=detector.severity,
        description=detector.description,
        recommended_action=detector.recommended_action,
        timestamp=match.timestamp,
        evidence=match.evidence,
        features=match.features,
        rule_version=rules.version,
        activity=match.activity,
        priority=alert_priority(
            detector.severity,
            match.features,
            stake,
            heat,
            account_type,
            rules.priority_weights.get(detector.pattern, 1.0),
        ),
    )


def evaluate_order(
    state: UserState, event: OrderEvent, reference: ReferenceData, rules: Rules
) -> OrderEvaluation:
    """Apply one order event of ``state``'s user and run the order-flow patterns on it.

    The event moves the user's watermark like a trade. An event beyond the allowed lateness is
    still applied to the order book (the orders' lives must stay consistent) but raises nothing.
    Suppression and alert ids work as for trades (see the module docstring).
    """
    plan = _plan(rules)
    timestamp = event.timestamp
    too_late = timestamp < state.watermark - rules.allowed_lateness_ms
    book = state.orders
    order, issue = book.apply(
        event, rules.spoof_min_history, rules.quote_cycle_ms, rules.quote_fast_cancel_ms
    )
    if timestamp > state.watermark:
        state.watermark = timestamp
    book.prune(state.watermark - rules.order_horizon_ms)
    if issue is not None or order is None or too_late:
        return OrderEvaluation(state, (), issue, too_late)
    context = OrderContext(event, order, state, reference, rules)
    alerts: list[RiskAlert] = []
    profile = reference.profiles.get(event.user_id)
    account_type = None if profile is None else profile.account_type
    detectors = plan.maker_order_detectors if account_type is _MARKET_MAKER else plan.order_detectors
    for detector in detectors:
        found = detector.detect_order(context)
        if found is None:
            continue
        pattern = detector.pattern
        window = plan.merge_windows[pattern]
        if window is not None:
            key = (pattern, found.key)
            last = state.fired.get(key)
            if last is not None and found.timestamp <= last + window:
                continue
            state.prune_fired(rules.allowed_lateness_ms, plan.fired_windows)
            state.fired[key] = found.timestamp
        stake = _stake(found, state.recent, event.price * event.quantity)
        alerts.append(_alert(detector, found, event.user_id, rules, state, stake, account_type))
    return OrderEvaluation(state, tuple(alerts), None, False)


def evaluate_many(
    trades: list[Trade], reference: ReferenceData, rules: Rules, states: Mapping[str, UserState] | None = None
) -> tuple[dict[str, UserState], list[Evaluation]]:
    """Evaluate trades in the given order with one state per user (replay, tests, benchmarks)."""
    by_user: dict[str, UserState] = dict(states or {})
    results = []
    for trade in trades:
        state = by_user.get(trade.user_id)
        if state is None:
            state = by_user[trade.user_id] = UserState()
        results.append(evaluate_trade(state, trade, reference, rules))
    return by_user, results
