"""From per-trade findings to riskScore, finalRiskLevel and riskMitigationActions.

Components, each in [0, 1]:

- volume: ``0.75 x clamp(z / volume.zscore.high) + 0.25 x clamp((rank - volume.percentile.high) /
  (1 - volume.percentile.high))``, from the z-score and percentile rank against the user's history
  (clamp to [0, 1]); 0 until the user has ``volume.min.history`` trades. A new personal maximum
  alone (rank 1, modest z) stays LOW; a size far outside the user's spread reaches MEDIUM.
- behavioral: the highest severity score (below) x match strength of the matched behavioral
  patterns (VOLUME_SPIKE, WASH_TRADING, FLASH_CRASH, SELF_TRADE, STRUCTURING, MOMENTUM_IGNITION,
  and SPOOFING or LAYERING when a fill completes them), and the score of each early signal the
  trade shows (a SPOOFING or LAYERING set-up at the fill 0.75, one round trip with the same
  counterparty 0.45; :mod:`riskengine.core.early_signals`).
- marketImpact: ``max(0.75 if largeOrder, 0.75 if off-market, 0.5 x min(1, consumption /
  market.liquidity.consumption.high), 0.5 x min(1, deviation / max(market.price.deviation.high, 3 x
  volatility)))``: size against liquidity and slippage alone reach MEDIUM at most; a large order is
  HIGH, and so is an off-market execution, one priced at or beyond PRICE_CRASH's band around the
  reference price (``<= price.crash.low.ratio x`` or ``>= price.crash.high.ratio x``: 30 %), the
  trade that makes a crash. The volatility is the symbol's, from its market
  context (none: the rule alone).
- compliance: the highest flag score: SANCTIONED_* 1.0; KYC_TRADE_LIMIT, KYC_DAILY_LIMIT,
  STRUCTURING_SUSPECTED and RESTRICTED_COUNTRY 0.75; NO_PROFILE 0.15; reporting flags
  (TRAVEL_RULE, TAX_REPORTING_REQUIRED) and LATE_EVENT / DUPLICATE_EVENT 0.

Match strength (:func:`match_strength`, in [0, 1]; 1 for every pattern not listed) is how much a
match says about *this* account, calibrated on a realistic benign market (README, "Score
calibration"), where the bare definitions fire on routine flow:

- FLASH_CRASH: ``(sells / trades in the window)² x (0.5 + 0.5 x aggressive share of the sells)``:
  ten sells among ten trades is a one-sided dump, ten among twenty a two-sided trader (HFT,
  arbitrage) at work; market orders crash a price, a TWAP's resting limit children do not.
- VOLUME_SPIKE: ``min(1, (r - 1) / (2 (t - 1)))`` for the run's smallest step ratio ``r`` and
  the threshold ``t`` (1.5): a run that only just clears the ratio is 0.5, steps of 2x are 1.
- STRUCTURING: ``min(1, 2 m / n)`` for ``n`` trades in the band within the window and the
  minimum ``m`` (3): a handful of just-below-threshold trades is structuring; dozens among a busy
  account's flow are its ordinary sizes. The STRUCTURING_SUSPECTED flag scores with the same
  strength.

Severity scores are the middles of the level bands (LOW 0.15, MEDIUM 0.45, HIGH 0.75,
CRITICAL 1.0), so one finding of a severity gives that level on its own.

Combination (``score.weight.*``, defaults volume 0.5, the others 1.0)::

    riskScore = 1 - (1 - w_v c_v)(1 - w_b c_b)(1 - w_m c_m)(1 - w_c c_c)

a probabilistic OR: one strong component is enough to reach its level, and independent moderate
findings compound (two HIGH findings make CRITICAL). ``finalRiskLevel`` uses ``level.medium`` /
``level.high`` / ``level.critical`` (0.3 / 0.6 / 0.85), each cut-off inclusive for the higher level.

Actions: MEDIUM adds MANUAL_REVIEW_REQUIRED; HIGH adds LIMIT_TRADING; CRITICAL adds FREEZE_ACCOUNT
and REPORT_TO_COMPLIANCE; flags and patterns add their own (see ``FLAG_ACTIONS`` and
``PATTERN_ACTIONS``). The list is in :class:`MitigationAction` order without repeats.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import compress

from .models import ComplianceFlag, Feature, MitigationAction, PatternType, RiskLevel, Severity
from .rules import Rules

#: A price deviation of this many times the symbol's volatility puts the deviation sub-score at its cap.
VOLATILITY_MULTIPLE = 3.0

# The tables below are plain dicts typed as read-only Mappings: dict lookups are the cheapest on
# the per-trade path (a MappingProxyType adds a layer to every get).

SEVERITY_SCORE: Mapping[Severity, float] = {
    Severity.LOW: 0.15,
    Severity.MEDIUM: 0.45,
    Severity.HIGH: 0.75,
    Severity.CRITICAL: 1.0,
}

#: Patterns whose severity feeds the behavioral component.
BEHAVIORAL_PATTERNS = frozenset(
    {
        PatternType.VOLUME_SPIKE,
        PatternType.WASH_TRADING,
        PatternType.FLASH_CRASH,
        PatternType.SELF_TRADE,
        PatternType.STRUCTURING,
        PatternType.MOMENTUM_IGNITION,
        PatternType.SPOOFING,
        PatternType.LAYERING,
    }
)

FLAG_SCORE: Mapping[str, float] = {
    ComplianceFlag.SANCTIONED_USER: 1.0,
    ComplianceFlag.SANCTIONED_COUNTERPARTY: 1.0,
    ComplianceFlag.SANCTIONED_COUNTRY: 1.0,
    ComplianceFlag.KYC_TRADE_LIMIT: 0.75,
    ComplianceFlag.KYC_DAILY_LIMIT: 0.75,
    ComplianceFlag.STRUCTURING_SUSPECTED: 0.75,
    ComplianceFlag.RESTRICTED_COUNTRY: 0.75,
    ComplianceFlag.NO_PROFILE: 0.15,
}

_A = MitigationAction
_ACTIONS = tuple(MitigationAction)
_BIT = {action: 1 << index for index, action in enumerate(_ACTIONS)}


def _mask(*actions: MitigationAction) -> int:
    mask = 0
    for action in actions:
        mask |= _BIT[action]
    return mask


LEVEL_ACTIONS: Mapping[RiskLevel, int] = {
    RiskLevel.LOW: 0,
    RiskLevel.MEDIUM: _mask(_A.MANUAL_REVIEW_REQUIRED),
    RiskLevel.HIGH: _mask(_A.MANUAL_REVIEW_REQUIRED, _A.LIMIT_TRADING),
    RiskLevel.CRITICAL: _mask(
        _A.MANUAL_REVIEW_REQUIRED, _A.LIMIT_TRADING, _A.FREEZE_ACCOUNT, _A.REPORT_TO_COMPLIANCE
    ),
}
FLAG_ACTIONS: Mapping[str, int] = {
    ComplianceFlag.SANCTIONED_USER: _mask(_A.BLOCK_TRADE, _A.FREEZE_ACCOUNT, _A.REPORT_TO_COMPLIANCE),
    ComplianceFlag.SANCTIONED_COUNTRY: _mask(_A.BLOCK_TRADE, _A.FREEZE_ACCOUNT, _A.REPORT_TO_COMPLIANCE),
    ComplianceFlag.SANCTIONED_COUNTERPARTY: _mask(_A.BLOCK_TRADE, _A.REPORT_TO_COMPLIANCE),
    ComplianceFlag.RESTRICTED_COUNTRY: _mask(_A.BLOCK_TRADE),
    ComplianceFlag.KYC_TRADE_LIMIT: _mask(_A.BLOCK_TRADE),
    ComplianceFlag.KYC_DAILY_LIMIT: _mask(_A.BLOCK_TRADE, _A.LIMIT_TRADING),
    ComplianceFlag.STRUCTURING_SUSPECTED: _mask(_A.REPORT_TO_COMPLIANCE),
}
PATTERN_ACTIONS: Mapping[PatternType, int] = {
    # Seed: "Temporarily limit user's trading limits and require manual review".
    PatternType.VOLUME_SPIKE: _mask(_A.LIMIT_TRADING, _A.MANUAL_REVIEW_REQUIRED),
    # Seed: "Freeze account for investigation and report to compliance".
    PatternType.WASH_TRADING: _mask(_A.FREEZE_ACCOUNT, _A.REPORT_TO_COMPLIANCE),
    PatternType.FLASH_CRASH: _mask(_A.LIMIT_TRADING, _A.MANUAL_REVIEW_REQUIRED),
    PatternType.LARGE_ORDER: _mask(_A.MANUAL_REVIEW_REQUIRED),
    PatternType.SELF_TRADE: _mask(_A.MANUAL_REVIEW_REQUIRED, _A.REPORT_TO_COMPLIANCE),
}
# Every subset of actions as an ordered tuple, so building the list is one index.
_ACTION_TUPLES = tuple(
    tuple(action.value for action in compress(_ACTIONS, [(mask >> bit) & 1 for bit in range(len(_ACTIONS))]))
    for mask in range(1 << len(_ACTIONS))
)


def volume_component(z_score: float, percentile_rank: float, history: int, rules: Rules) -> float:
    """The volume component (see the module docstring)."""
    if history < rules.volume_min_history:
        return 0.0
    by_z = z_score / rules.volume_zscore_high
    high = rules.volume_percentile_high
    by_rank = (percentile_rank - high) / (1.0 - high)
    by_z = 0.0 if by_z < 0.0 else (1.0 if by_z > 1.0 else by_z)
    by_rank = 0.0 if by_rank < 0.0 else by_rank
    return 0.75 * by_z + 0.25 * by_rank


def market_impact_component(
    large_order: bool,
    consumption: float,
    deviation: float,
    rules: Rules,
    volatility: float | None = None,
    off_market: bool = False,
) -> float:
    """The market-impact component (see the module docstring)."""
    if off_market:
        return 0.75
    by_liquidity = consumption / rules.liquidity_high
    deviation_high = rules.price_deviation_high
    if volatility is not None and VOLATILITY_MULTIPLE * volatility > deviation_high:
        # In a market that moves a lot, the same deviation is less unusual.
        deviation_high = VOLATILITY_MULTIPLE * volatility
    by_deviation = deviation / deviation_high
    partial = by_liquidity if by_liquidity > by_deviation else by_deviation
    score = 0.5 * (partial if partial < 1.0 else 1.0)
    return 0.75 if large_order and score < 0.75 else score


def match_strength(
    pattern: PatternType, features: tuple[Feature, ...], sells_in_window: int, trades_in_window: int
) -> float:
    """How much a match of ``pattern`` says about the account, in [0, 1] (see the module docstring)."""
    if pattern is PatternType.FLASH_CRASH:
        if trades_in_window <= 0:
            return 1.0
        share = sells_in_window / trades_in_window
        aggressive = _feature(features, "aggressiveSellShare")
        return share * share * (0.5 + 0.5 * (1.0 if aggressive is None else aggressive.value))
    if pattern is PatternType.VOLUME_SPIKE:
        step = _feature(features, "minStepRatio")
        if step is None or step.threshold is None or step.threshold <= 1.0:
            return 1.0
        return min(1.0, (step.value - 1.0) / (2.0 * (step.threshold - 1.0)))
    if pattern is PatternType.STRUCTURING:
        band = _feature(features, "tradesInBand")
        if band is None or band.threshold is None or band.value <= 0:
            return 1.0
        return min(1.0, 2.0 * band.threshold / band.value)
    return 1.0


def _feature(features: tuple[Feature, ...], name: str) -> Feature | None:
    for feature in features:
        if feature.name == name:
            return feature
    return None


def risk_level(score: float, rules: Rules) -> RiskLevel:
    """The level of a score under the rules' cut-offs (each inclusive for the higher level)."""
    if score < rules.level_medium:
        return RiskLevel.LOW
    if score < rules.level_high:
        return RiskLevel.MEDIUM
    if score < rules.level_critical:
        return RiskLevel.HIGH
    return RiskLevel.CRITICAL


def combine(volume: float, behavioral: float, market_impact: float, compliance: float, rules: Rules) -> float:
    """riskScore as the weighted probabilistic OR of the components."""
    return 1.0 - (
        (1.0 - rules.weight_volume * volume)
        * (1.0 - rules.weight_behavioral * behavioral)
        * (1.0 - rules.weight_market_impact * market_impact)
        * (1.0 - rules.weight_compliance * compliance)
    )


def mitigation_actions(
    level: RiskLevel, flags: tuple[str, ...], patterns: tuple[PatternType, ...]
) -> tuple[str, ...]:
    """The actions for a level, flags and matched patterns, in MitigationAction order."""
    mask = LEVEL_ACTIONS[level]
    for flag in flags:
        mask |= FLAG_ACTIONS.get(flag, 0)
    for pattern in patterns:
        mask |= PATTERN_ACTIONS.get(pattern, 0)
    return _ACTION_TUPLES[mask]
