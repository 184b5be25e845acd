"""The simulated accounts: retail traders, market makers, whales and bad actors, with profiles.

Roles decide how an account trades and which scenarios may use it:

- ``RETAIL``: most accounts; KYC tier 0-2, small sizes, trade now and then.
- ``MARKET_MAKER``: tier 3, trade all symbols often, quote and cancel, are the usual counterparty.
- ``WHALE``: tier 3, rare and large trades (below the LARGE_ORDER thresholds in normal flow); the
  large-order scenario uses them.
- Bad actors, reserved for scenarios (they also trade normally between them, except the
  sanctioned ones): ``ABUSER`` (tier 3: wash trading, spikes, spoofing, pump rings, ...),
  ``LINKED`` (pairs of accounts of one customer: self trades), ``TIER0`` (unverified: KYC breaches)
  and ``SANCTIONED`` (a sanctioned profile, or a country on :data:`SANCTIONED_COUNTRIES`; they
  only ever trade inside the sanctioned-user scenario).

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
    WHALE = "WHALE"
    ABUSER = "ABUSER"
    LINKED = "LINKED"
    TIER0 = "TIER0"
    SANCTIONED = "SANCTIONED"


#: Share of the normal trade flow each role carries (bad actors' camouflage included).
FLOW_SHARE: dict[Role, float] = {
    Role.RETAIL: 0.70,
    Role.MARKET_MAKER: 0.20,
    Role.WHALE: 0.02,
    Role.ABUSER: 0.04,
    Role.LINKED: 0.02,
    Role.TIER0: 0.02,
}


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
        if role is Role.RETAIL:
            tier = rng.choices((0, 1, 2), (10, 50, 40))[0]
            median = (60.0, 300.0, 1_500.0)[tier]
            favourites = rng.randint(1, 4)
        elif role is Role.MARKET_MAKER:
            tier, median, favourites = 3, 3_000.0, len(symbols)
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
        chosen, cumulative = _symbol_preferences(rng, symbols, favourites)
        result.append(
            User(
                user_id=user_id,
                customer_id=f"C{owner:06d}",
                role=role,
                kyc_tier=tier,
                country=country,
                sanctioned=sanctioned,
                linked_accounts=(f"U{linked_partner[number]:06d}",) if number in linked_partner else (),
                activity=math.exp(rng.gauss(0.0, 1.0)),
                median_notional=round(median * math.exp(rng.gauss(0.0, 0.5)), 2),
                symbols=chosen,
                symbol_weights=cumulative,
                exchange=rng.choices(list(exchanges), exchange_weights)[0],
                limit_share=0.85 if role is Role.MARKET_MAKER else rng.uniform(0.2, 0.6),
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
