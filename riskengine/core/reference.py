"""Reference data the core reads but never changes: profiles, sanctions, geography, markets.

:class:`ReferenceData` is an immutable snapshot; the caller builds a new one when a profile or a
list changes (the Faust adapter from its global tables, ``riskengine replay`` from a JSON file).

``markets`` is optional static market data (symbol -> reference price and recent volume). When a
symbol has an entry, market impact is measured against it; otherwise against the user's own recent
prices and the rules' liquidity figures (see :mod:`riskengine.core.evaluate`), which keeps every
user's results a function of that user's trades alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from riskengine.errors import CoreError

from .models import InvalidProfile, UserProfile, parse_profile


@dataclass(frozen=True, slots=True)
class MarketReference:
    """Static market data for one symbol: a reference price and a recent traded notional."""

    reference_price: float | None = None
    recent_volume: float | None = None


class InvalidReference(CoreError):
    """A reference-data document has a bad entry; the message names it."""


@dataclass(frozen=True, slots=True)
class ReferenceData:
    """Profiles by userId, sanctioned users, sanctioned and restricted countries, market data."""

    profiles: Mapping[str, UserProfile] = field(default_factory=lambda: MappingProxyType({}))
    sanctioned_users: frozenset[str] = frozenset()
    sanctioned_countries: frozenset[str] = frozenset()
    restricted_countries: frozenset[str] = frozenset()
    markets: Mapping[str, MarketReference] = field(default_factory=lambda: MappingProxyType({}))

    def is_sanctioned(self, user_id: str) -> bool:
        """True if the user is on the sanctions list or their profile says so."""
        if user_id in self.sanctioned_users:
            return True
        profile = self.profiles.get(user_id)
        return profile is not None and profile.sanctioned

    def linked(self, user_id: str, customer_id: str, other_user_id: str) -> bool:
        """True if ``other_user_id`` is the user, a linked account, or has the same customerId."""
        if other_user_id == user_id:
            return True
        profile = self.profiles.get(user_id)
        if profile is not None and other_user_id in profile.linked_accounts:
            return True
        other = self.profiles.get(other_user_id)
        if other is None:
            return False
        return other.customer_id == customer_id or user_id in other.linked_accounts

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> ReferenceData:
        """Build from a JSON-like document.

        Keys (all optional): ``profiles`` (a list of ``UserProfile`` records), ``sanctionedUsers``,
        ``sanctionedCountries``, ``restrictedCountries`` (lists of strings), ``markets`` (symbol ->
        ``{"referencePrice": number, "recentVolume": number}``). Raises :class:`InvalidReference`
        naming the bad entry.
        """
        if not isinstance(document, Mapping):
            raise InvalidReference("reference data must be an object")
        unknown = set(document) - {
            "profiles",
            "sanctionedUsers",
            "sanctionedCountries",
            "restrictedCountries",
            "markets",
        }
        if unknown:
            raise InvalidReference(f"unknown key {sorted(unknown)[0]!r}")
        profiles: dict[str, UserProfile] = {}
        for position, record in enumerate(document.get("profiles", [])):
            try:
                profile = parse_profile(record)
            except InvalidProfile as exc:
                raise InvalidReference(f"profiles[{position}].{exc}") from None
            profiles[profile.user_id] = profile
        markets: dict[str, MarketReference] = {}
        raw_markets = document.get("markets", {})
        if not isinstance(raw_markets, Mapping):
            raise InvalidReference("markets must be an object of symbol -> market data")
        for symbol, entry in raw_markets.items():
            if not isinstance(entry, Mapping):
                raise InvalidReference(f"markets[{symbol!r}] must be an object")
            markets[symbol] = MarketReference(
                reference_price=_optional_positive(entry, "referencePrice", symbol),
                recent_volume=_optional_positive(entry, "recentVolume", symbol),
            )
        return cls(
            profiles=MappingProxyType(profiles),
            sanctioned_users=_names(document, "sanctionedUsers"),
            sanctioned_countries=_names(document, "sanctionedCountries", country=True),
            restricted_countries=_names(document, "restrictedCountries", country=True),
            markets=MappingProxyType(markets),
        )


def _names(document: Mapping[str, Any], key: str, country: bool = False) -> frozenset[str]:
    values = document.get(key, [])
    if not isinstance(values, (list, tuple)):
        raise InvalidReference(f"{key} must be a list of strings, got {type(values).__name__}")
    for position, value in enumerate(values):
        if not isinstance(value, str) or not value:
            raise InvalidReference(f"{key}[{position}] must be a non-empty string, got {value!r}")
        # Profiles carry alpha-2 codes (parse_profile); any other spelling would never match one.
        if country and (len(value) != 2 or not value.isalpha() or not value.isupper()):
            raise InvalidReference(
                f"{key}[{position}] must be an ISO 3166-1 alpha-2 code such as IR, got {value!r}"
            )
    return frozenset(values)


def _optional_positive(entry: Mapping[str, Any], key: str, symbol: str) -> float | None:
    value = entry.get(key)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise InvalidReference(f"markets[{symbol!r}].{key} must be a number > 0, got {value!r}")
    return float(value)


#: No profiles, no sanctions, no market data.
EMPTY_REFERENCE = ReferenceData()
