"""The simulated accounts: who trades how, with profiles.

Roles decide how an account trades and which scenarios may use it; the profile's ``accountType``
is only the venue's designation (what the engine is told), see :data:`ACCOUNT_TYPES`:

- ``RETAIL``: most accounts; KYC tier 0-2, heavy-tailed small sizes, trade now and then, sometimes
  in a short burst (scaling into a position). ``accountType`` RETAIL, or none for about 30%.
- ``MARKET_MAKER``: tier 3, designated liquidity providers (MARKET_MAKER): they quote two-sided
  in their books (symbol and exchange), 1-3 levels a side, and are the usual counterparty.
- ``HFT``: tier 3, PROFESSIONAL: frequent small taker trades in 1-3 symbols on both sides, keeping
  their inventory mean-reverting.
- ``ARBITRAGE``: tier 3, PROFESSIONAL: buy on one exchange and sell the same quantity on another
  a few seconds later (or the other way round), again and again.
- ``EXECUTION``: tier 3, INSTITUTIONAL: TWAP/VWAP parent orders sliced into child orders.
- ``DCA``: tier 1-2, RETAIL: a fixed notional of BTC or ETH bought at a fixed interval.
- ``WHALE``: tier 3, INSTITUTIONAL: rare large trades (below the LARGE_ORDER thresholds in normal
  flow); the large-order scenario uses them.
- Bad actors, reserved for scenarios (they also trade normally between them, except the
  sanctioned ones): ``ABUSER`` (tier 3: wash trading, spikes, spoofing, pump rings, ...),
  ``LINKED`` (pairs of accounts of one customer: self trades), ``TIER0`` (unverified: KYC breaches)
  and ``SANCTIONED`` (a sanctioned profile, or a country on :data:`SANCTIONED_COUNTRIES`; they
  only ever trade inside the sanctioned-user scenario). They look like ordinary accounts: RETAIL,
  PROFESSIONAL or no designation, never MARKET_MAKER (the engine exempts designated makers from
  some patterns).

Ids do not reveal the role (``U000123``); ``customerId`` is ``C`` plus the owner's number, shared by
linked accounts.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from riskengine.errors import ProducerError

from .market import SYMBOL_CATALOG
from .oracle import Subject

#: ISO 3166-1 alpha-2 codes under comprehensive sanctions (OFAC: Cuba, Iran, North Korea, Syria).
#: The engine's reference data should carry the same list (``sanctionedCountries``).
SANCTIONED_COUNTRIES: frozenset[str] = frozenset({"CU", "IR", "KP", "SY"})

#: Countries of the venue's regular customers, with weights.
_COUNTRIES: tuple[tuple[str, float], ...] = (
    ("US", 22),
    ("GB", 9),
    ("DE", 8),
    ("FR", 6),
    ("SG", 6),
    ("JP", 6),
    ("KR", 6),
    ("BR", 5),
    ("CA", 5),
    ("AU", 4),
    ("NL", 3),
    ("CH", 3),
    ("ES", 3),
    ("IT", 3),
    ("AE", 3),
    ("HK", 3),
    ("IN", 3),
    ("TR", 2),
)


class Role(StrEnum):
    """How an account behaves (see the module docstring)."""

    RETAIL = "RETAIL"
    MARKET_MAKER = "MARKET_MAKER"
    HFT = "HFT"
    ARBITRAGE = "ARBITRAGE"
    EXECUTION = "EXECUTION"
    DCA = "DCA"
    WHALE = "WHALE"
    ABUSER = "ABUSER"
    LINKED = "LINKED"
    TIER0 = "TIER0"
    SANCTIONED = "SANCTIONED"


#: Share of the taker arrivals each role draws (bad actors' camouflage included). Market makers
#: take no arrivals (they provide the liquidity), execution algorithms and DCA accounts trade on
#: their own schedules, and an ARBITRAGE arrival makes two executions (its two legs).
FLOW_SHARE: dict[Role, float] = {
    Role.RETAIL: 0.62,
    Role.HFT: 0.18,
    Role.ARBITRAGE: 0.04,
    Role.WHALE: 0.012,
    Role.ABUSER: 0.04,
    Role.LINKED: 0.02,
    Role.TIER0: 0.02,
}

#: Roles whose accounts may rest a limit order another account's order fills (the "other side"
#: when no market maker can take it): everyone trading normally but makers and DCA accounts.
RESTING_ROLES: tuple[Role, ...] = (
    Role.RETAIL,
    Role.HFT,
    Role.ARBITRAGE,
    Role.EXECUTION,
    Role.WHALE,
    Role.ABUSER,
    Role.LINKED,
    Role.TIER0,
)

#: The ``accountType`` designations by role (bad actors draw one of theirs; None: no designation).
ACCOUNT_TYPES: dict[Role, tuple[str | None, ...]] = {
    Role.MARKET_MAKER: ("MARKET_MAKER",),
    Role.HFT: ("PROFESSIONAL",),
    Role.ARBITRAGE: ("PROFESSIONAL",),
    Role.EXECUTION: ("INSTITUTIONAL",),
    Role.WHALE: ("INSTITUTIONAL",),
    Role.DCA: ("RETAIL",),
    Role.RETAIL: ("RETAIL", None),
    Role.ABUSER: ("RETAIL", "PROFESSIONAL", None),
    Role.LINKED: ("RETAIL", "PROFESSIONAL", None),
    Role.TIER0: ("RETAIL", None),
    Role.SANCTIONED: ("RETAIL", "PROFESSIONAL", None),
}
#: Share of RETAIL profiles without an ``accountType`` (profiles written before the field existed).
RETAIL_UNDESIGNATED = 0.3


@dataclass(frozen=True, slots=True)
class User:
    """One account and how it trades."""

    user_id: str
    customer_id: str
    role: Role
    kyc_tier: int
    country: str
    sanctioned: bool
    linked_accounts: tuple[str, ...]
    activity: float
    median_notional: float
    symbols: tuple[str, ...]
    symbol_weights: tuple[float, ...]
    exchange: str
    limit_share: float
    account_type: str | None = None
    #: DCA: the interval of the recurring buy (ms); 0 for other roles.
    interval_ms: int = 0

    def profile(self, updated_at: int) -> dict[str, Any]:
        """The ``UserProfile`` record."""
        return {
            "userId": self.user_id,
            "customerId": self.customer_id,
            "kycTier": self.kyc_tier,
            "country": self.country,
            "sanctioned": self.sanctioned,
            "linkedAccounts": list(self.linked_accounts),
            "updatedAt": updated_at,
            "accountType": self.account_type,
        }

    def subject(self) -> Subject:
        """The oracle's view of this account."""
        return Subject(
            self.user_id,
            self.customer_id,
            self.kyc_tier,
            self.country,
            self.sanctioned,
            frozenset(self.linked_accounts),
        )


class PopulationError(ProducerError, ValueError):
    """The requested population cannot be built (too few users for the roles)."""


def role_counts(users: int) -> dict[Role, int]:
    """How many accounts of each role ``users`` accounts have; PopulationError if too few."""
    bad = max(24, round(users * 0.08))
    counts = {
        Role.MARKET_MAKER: max(2, round(users * 0.02)),
        Role.HFT: max(2, round(users * 0.01)),
        Role.ARBITRAGE: max(2, round(users * 0.01)),
        Role.EXECUTION: max(2, round(users * 0.015)),
        Role.DCA: max(2, round(users * 0.04)),
        Role.WHALE: max(2, round(users * 0.02)),
        # Sanctioned and tier-0 accounts serve scenarios with long cooldowns (2 h, 25 h).
        Role.SANCTIONED: max(3, bad // 6),
        Role.LINKED: 2 * max(2, bad // 16),
        Role.TIER0: max(3, bad // 4),
    }
    counts[Role.ABUSER] = bad - counts[Role.SANCTIONED] - counts[Role.LINKED] - counts[Role.TIER0]
    counts[Role.RETAIL] = users - sum(counts.values())
    if counts[Role.RETAIL] < 10:
        minimum = sum(counts.values()) - counts[Role.RETAIL] + 10
        raise PopulationError(f"at least {minimum} users are needed for every role, got {users}")
    return counts


class Population:
    """Every account, by id and by role, with seeded weights for picking who trades next."""

    def __init__(self, users: Sequence[User]) -> None:
        self.users = tuple(users)
        self.by_id = {user.user_id: user for user in users}
        self.by_role: dict[Role, tuple[User, ...]] = {
            role: tuple(u for u in users if u.role is role) for role in Role
        }
        self._cumulative = {
            role: tuple(itertools.accumulate(u.activity for u in members))
            for role, members in self.by_role.items()
        }
        self.subjects = {user.user_id: user.subject() for user in users}
        self._roles = tuple(FLOW_SHARE)
        self._role_weights = tuple(itertools.accumulate(FLOW_SHARE[r] for r in self._roles))

    def pick_active(self, rng: random.Random, role: Role | None = None) -> User:
        """A normally trading account, by flow share and activity (never a sanctioned one)."""
        if role is None:
            role = self._roles[bisect.bisect(self._role_weights, rng.random() * self._role_weights[-1])]
        cumulative = self._cumulative[role]
        return self.by_role[role][bisect.bisect(cumulative, rng.random() * cumulative[-1])]

    def profiles(self, updated_at: int) -> list[dict[str, Any]]:
        """Every ``UserProfile`` record, in id order."""
        return [user.profile(updated_at) for user in self.users]


def _symbol_preferences(
    rng: random.Random, symbols: Sequence[str], favourites: int
) -> tuple[tuple[str, ...], tuple[float, ...]]:
    weights = [SYMBOL_CATALOG[s].weight for s in symbols]
    if favourites >= len(symbols):
        return tuple(symbols), tuple(itertools.accumulate(weights))
    chosen: list[str] = []
    while len(chosen) < favourites:
        pick = rng.choices(symbols, weights)[0]
        if pick not in chosen:
            chosen.append(pick)
    chosen_weights = [SYMBOL_CATALOG[s].weight for s in chosen]
    return tuple(chosen), tuple(itertools.accumulate(chosen_weights))


def build_population(
    users: int, symbols: Sequence[str], exchanges: Sequence[str], rng: random.Random
) -> Population:
    """``users`` accounts over ``symbols`` and ``exchanges``, drawn from ``rng``."""
    counts = role_counts(users)
    countries = [c for c, _ in _COUNTRIES]
    country_weights = [w for _, w in _COUNTRIES]
    exchange_weights = [1.0 / (rank + 1) for rank in range(len(exchanges))]
    sanctioned_countries = sorted(SANCTIONED_COUNTRIES)
    order = [
        role
        for role in (
            Role.RETAIL,
            Role.MARKET_MAKER,
            Role.HFT,
            Role.ARBITRAGE,
            Role.EXECUTION,
            Role.DCA,
            Role.WHALE,
            Role.ABUSER,
            Role.LINKED,
            Role.TIER0,
            Role.SANCTIONED,
        )
        for _ in range(counts[role])
    ]
    # Shuffle so that ids say nothing about roles.
    rng.shuffle(order)
    numbers = list(range(1, users + 1))
    linked_partner: dict[int, int] = {}
    linked_numbers = [n for n, role in zip(numbers, order, strict=True) if role is Role.LINKED]
    for first, second in zip(linked_numbers[::2], linked_numbers[1::2], strict=True):
        linked_partner[first], linked_partner[second] = second, first
    result: list[User] = []
    sanctioned_seen = 0
    for number, role in zip(numbers, order, strict=True):
        user_id = f"U{number:06d}"
        owner = min(number, linked_partner.get(number, number))
        country = rng.choices(countries, country_weights)[0]
        sanctioned = False
        interval_ms = 0
        if role is Role.RETAIL:
            tier = rng.choices((0, 1, 2), (10, 50, 40))[0]
            median = (60.0, 300.0, 1_500.0)[tier]
            favourites = rng.randint(1, 4)
        elif role is Role.MARKET_MAKER:
            # median: the notional of one quote level (scaled per symbol by the simulator).
            tier, median, favourites = 3, 4_000.0, len(symbols)
        elif role is Role.HFT:
            tier, median, favourites = 3, 1_500.0, rng.randint(1, 3)
        elif role is Role.ARBITRAGE:
            tier, median, favourites = 3, 8_000.0, rng.randint(1, 3)
        elif role is Role.EXECUTION:
            # median: the notional of a parent order's typical child.
            tier, median, favourites = 3, 5_000.0, rng.randint(1, 3)
        elif role is Role.DCA:
            tier, median, favourites = rng.choice((1, 2)), 150.0, 1
            interval_ms = rng.choice((15, 30, 60, 120)) * 60_000
        elif role is Role.WHALE:
            tier, median, favourites = 3, 120_000.0, rng.randint(1, 3)
        elif role is Role.ABUSER:
            tier, median, favourites = 3, 2_000.0, rng.randint(2, 5)
        elif role is Role.LINKED:
            tier, median, favourites = 2, 800.0, rng.randint(1, 4)
        elif role is Role.TIER0:
            tier, median, favourites = 0, 60.0, rng.randint(1, 3)
        else:
            # Alternate the two ways of being sanctioned: a flagged profile, a sanctioned country.
            tier, median, favourites = rng.choice((1, 2)), 1_000.0, rng.randint(1, 3)
            if sanctioned_seen % 2 == 0:
                sanctioned = True
            else:
                country = sanctioned_countries[sanctioned_seen // 2 % len(sanctioned_countries)]
            sanctioned_seen += 1
        if role is Role.DCA:
            majors = [s for s in symbols if s.partition("/")[0] in ("BTC", "ETH")] or list(symbols[:1])
            chosen_symbol = rng.choice(majors)
            chosen: tuple[str, ...] = (chosen_symbol,)
            cumulative: tuple[float, ...] = (1.0,)
        else:
            chosen, cumulative = _symbol_preferences(rng, symbols, favourites)
        choices = ACCOUNT_TYPES[role]
        if role is Role.RETAIL:
            account_type = None if rng.random() < RETAIL_UNDESIGNATED else "RETAIL"
        else:
            account_type = choices[0] if len(choices) == 1 else rng.choice(choices)
        activity = math.exp(rng.gauss(0.0, 1.0))
        # HFT sizes spread little; a DCA account buys the same notional every time.
        spread = 0.5 if role not in (Role.HFT, Role.DCA) else 0.3
        result.append(
            User(
                user_id=user_id,
                customer_id=f"C{owner:06d}",
                role=role,
                kyc_tier=tier,
                country=country,
                sanctioned=sanctioned,
                linked_accounts=(f"U{linked_partner[number]:06d}",) if number in linked_partner else (),
                activity=activity,
                median_notional=round(median * math.exp(rng.gauss(0.0, spread)), 2),
                symbols=chosen,
                symbol_weights=cumulative,
                exchange=rng.choices(list(exchanges), exchange_weights)[0],
                limit_share=0.85 if role is Role.MARKET_MAKER else rng.uniform(0.2, 0.6),
                account_type=account_type,
                interval_ms=interval_ms,
            )
        )
    return Population(result)


def pick_symbol(rng: random.Random, user: User) -> str:
    """One of ``user``'s symbols, by the catalog's weights."""
    return user.symbols[bisect.bisect(user.symbol_weights, rng.random() * user.symbol_weights[-1])]


def reference_document(population: Population, updated_at: int) -> dict[str, Any]:
    """Reference data for ``riskengine replay --reference`` (``ReferenceData.from_document``)."""
    return {
        "profiles": population.profiles(updated_at),
        "sanctionedUsers": [],
        "sanctionedCountries": sorted(SANCTIONED_COUNTRIES),
        "restrictedCountries": [],
    }
