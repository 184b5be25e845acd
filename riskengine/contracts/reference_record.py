"""The ``RiskReference`` record of the ``risk-reference`` topic, to and from the core's reference data.

Reference data travels on two compacted topics: the profiles on ``user-profiles`` (one
``UserProfile`` per userId) and everything else (sanctioned users and countries, restricted
countries, static market data) on ``risk-reference`` as one versioned ``RiskReference`` record
under the key :data:`REFERENCE_KEY`. Whoever writes or reads that record goes through this module:

- :func:`reference_record` and :func:`profile_record` turn validated reference data (the JSON of
  ``riskengine replay --reference``, read by ``ReferenceData.from_document``) into the records
  published on the two topics;
- :func:`parse_reference_record` validates a record with the one definition of valid reference
  data, :meth:`riskengine.core.ReferenceData.from_document` (the record's fields are that
  document's keys), and raises :class:`~riskengine.core.InvalidReference` naming the bad entry;
- :func:`decode_reference` decodes and validates a wire-format value;
- :func:`active_version` says which version readers have active after a sequence of values:
  the highest valid one (a reader activates a valid version above its active one and ignores
  everything else, so the order of the values does not change the outcome).

No I/O here: the worker's reference feed, ``riskengine reference publish`` and the producer bring
the bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from riskengine.contracts.avro_codec import DecodeError, SchemaCache
from riskengine.core import EMPTY_REFERENCE, InvalidReference, ReferenceData, UserProfile

#: The one key of the risk-reference topic: compaction keeps only the latest record.
REFERENCE_KEY = b"reference"
#: The record's name in the contracts.
RECORD_NAME = "RiskReference"


@dataclass(frozen=True)
class VersionedReference:
    """A valid ``RiskReference`` record: the lists and markets (no profiles) with their version."""

    version: int
    data: ReferenceData
    updated_at: int = 0
    updated_by: str | None = None


#: What a reader has active before it read any record: version 0, nothing listed.
NO_REFERENCE = VersionedReference(0, EMPTY_REFERENCE)


def profile_record(profile: UserProfile) -> dict[str, Any]:
    """The ``UserProfile`` record of a validated profile (linked accounts sorted, for stable bytes)."""
    return {
        "userId": profile.user_id,
        "customerId": profile.customer_id,
        "kycTier": profile.kyc_tier,
        "country": profile.country,
        "sanctioned": profile.sanctioned,
        "linkedAccounts": sorted(profile.linked_accounts),
        "updatedAt": profile.updated_at,
        "accountType": None if profile.account_type is None else profile.account_type.value,
    }


def reference_record(
    data: ReferenceData, version: int, updated_at: int = 0, updated_by: str | None = None
) -> dict[str, Any]:
    """The ``RiskReference`` record of ``data``'s lists and markets (its profiles are left out).

    Lists are sorted and markets ordered by symbol, so equal data gives equal bytes.
    """
    return {
        "version": version,
        "sanctionedUsers": sorted(data.sanctioned_users),
        "sanctionedCountries": sorted(data.sanctioned_countries),
        "restrictedCountries": sorted(data.restricted_countries),
        "markets": {
            symbol: {"referencePrice": market.reference_price, "recentVolume": market.recent_volume}
            for symbol, market in sorted(data.markets.items())
        },
        "updatedAt": updated_at,
        "updatedBy": updated_by,
    }


def parse_reference_record(record: Mapping[str, Any]) -> VersionedReference:
    """Validate a decoded ``RiskReference`` record; :class:`InvalidReference` names a bad entry."""
    version = _version(record.get("version"))
    # The record's fields are the reference document's keys: one definition of what is valid.
    document = {key: record[key] for key in _LIST_FIELDS if record.get(key) is not None}
    data = ReferenceData.from_document(document)
    updated_at = record.get("updatedAt", 0)
    updated_by = record.get("updatedBy")
    return VersionedReference(
        version,
        data,
        updated_at if isinstance(updated_at, int) else 0,
        updated_by if isinstance(updated_by, str) else None,
    )


def decode_reference(catalog: SchemaCache, value: bytes | None) -> VersionedReference:
    """Decode and validate a risk-reference value (:class:`DecodeError`, :class:`InvalidReference`)."""
    return parse_reference_record(catalog.decode(value, RECORD_NAME))


def active_version(catalog: SchemaCache, values: Iterable[bytes | None]) -> int:
    """The version a reader has active after reading ``values``: the highest valid one, else 0."""
    active = NO_REFERENCE.version
    for value in values:
        try:
            version = decode_reference(catalog, value).version
        except (DecodeError, InvalidReference):
            continue
        active = max(active, version)
    return active


_LIST_FIELDS = ("sanctionedUsers", "sanctionedCountries", "restrictedCountries", "markets")


def _version(version: object) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise InvalidReference(f"version must be a non-negative integer, got {version!r}")
    return version
