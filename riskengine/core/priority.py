"""Alert priority: a number from 0 to 100 that says which alert an analyst should read first.

Severity says what kind of finding an alert is; priority ranks the alerts of a day so the queue
starts with the ones most likely to be abuse and most costly if they are. Four parts, each in
[0, 1], combined as a probabilistic OR (one strong part carries an alert, weak parts add up) and
scaled by the account's designation::

    priority = round(100 x weight x designation x (1 - (1 - s)(1 - m)(1 - n)(1 - r)))

- ``s`` severity: LOW 0.10, MEDIUM 0.25, HIGH 0.40, CRITICAL 0.55.
- ``m`` margin, how far past its thresholds the alert fired: the mean over the alert's features
  that carry a threshold of the relative distance beyond it (for ``>``/``>=``:
  ``value / threshold - 1``; for ``<``/``<=``: ``1 - value / threshold``), each clamped to [0, 1];
  times :data:`MARGIN_WEIGHT`. A wash cycle with identical quantities, or sells at twice the
  FLASH_CRASH count, is far past its thresholds; one that only just qualifies is not.
- ``n`` notional at stake: ``log10(stake / 1,000) / 4`` clamped to [0, 1] (1,000 USD gives 0,
  10 M gives 1), times :data:`NOTIONAL_WEIGHT`; the stake is the evidence trades' notional where
  the alert cites trades the engine still holds, else the triggering trade's.
- ``r`` repeat behaviour: ``1 - exp(-heat / 2)`` times :data:`REPEAT_WEIGHT`, where ``heat`` is
  the account's earlier alerts, each decaying with a half-life of :data:`REPEAT_HALF_LIFE_MS`
  (one alert yesterday counts 0.5, three today about 3). Market-level alerts have no account.
- ``weight``: the pattern's weight from ``priority.pattern.weights``, what past decisions say of
  its alerts (the share that were true, tuned on labelled runs: README, "Alert priority"); a
  pattern whose definition fires on routine flow (VOLUME_SPIKE, FLASH_CRASH) ranks below one that
  rarely fires without abuse (SANCTIONS_HIT, SPOOFING).
- ``designation`` (the profile's ``accountType``): MARKET_MAKER 0.5 (a designated liquidity
  provider's alerts are mostly its job showing), PROFESSIONAL and INSTITUTIONAL 0.8, none or
  RETAIL 1.0.

Every part is the alert's own (no clock, no other accounts), so the same match gets the same
priority in the worker and in replay.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final

from .models import AccountType, Feature, Severity

SEVERITY_BASE: Final = {
    Severity.LOW: 0.10,
    Severity.MEDIUM: 0.25,
    Severity.HIGH: 0.40,
    Severity.CRITICAL: 0.55,
}
MARGIN_WEIGHT: Final = 0.35
NOTIONAL_WEIGHT: Final = 0.30
REPEAT_WEIGHT: Final = 0.30
REPEAT_HALF_LIFE_MS: Final = 24 * 60 * 60_000
DESIGNATION_FACTOR: Final = {
    AccountType.MARKET_MAKER: 0.5,
    AccountType.PROFESSIONAL: 0.8,
    AccountType.INSTITUTIONAL: 0.8,
}
_ABOVE = frozenset({">", ">="})
_BELOW = frozenset({"<", "<="})


def margin(features: Iterable[Feature]) -> float:
    """The mean relative distance past the thresholds of ``features``, in [0, 1] (0: none carry one)."""
    total = 0.0
    counted = 0
    for feature in features:
        threshold = feature.threshold
        if threshold is None or not 0.0 < threshold < math.inf or not math.isfinite(feature.value):
            continue
        if feature.comparison in _ABOVE:
            beyond = feature.value / threshold - 1.0
        elif feature.comparison in _BELOW:
            beyond = 1.0 - feature.value / threshold
        else:
            continue
        total += 0.0 if beyond < 0.0 else (1.0 if beyond > 1.0 else beyond)
        counted += 1
    return total / counted if counted else 0.0


def decayed_heat(heat: float, since: int, now: int) -> float:
    """``heat`` recorded at ``since``, decayed to ``now`` (no decay backwards in event time)."""
    if heat <= 0.0 or now <= since:
        return heat
    return heat * math.pow(0.5, (now - since) / REPEAT_HALF_LIFE_MS)


def alert_priority(
    severity: Severity,
    features: Iterable[Feature],
    stake: float,
    heat: float = 0.0,
    account_type: AccountType | None = None,
    weight: float = 1.0,
) -> int:
    """The priority of an alert (see the module docstring)."""
    s = SEVERITY_BASE[severity]
    m = MARGIN_WEIGHT * margin(features)
    n = 0.0
    if stake > 1_000.0 and math.isfinite(stake):
        n = NOTIONAL_WEIGHT * min(1.0, math.log10(stake / 1_000.0) / 4.0)
    r = REPEAT_WEIGHT * (1.0 - math.exp(-heat / 2.0)) if heat > 0.0 else 0.0
    combined = 1.0 - (1.0 - s) * (1.0 - m) * (1.0 - n) * (1.0 - r)
    factor = DESIGNATION_FACTOR.get(account_type, 1.0) if account_type is not None else 1.0
    return round(100.0 * weight * factor * combined)
