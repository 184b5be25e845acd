"""The RiskReference record: its topic, its round trip, its validation (the core's), the active version."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from riskengine.contracts.avro_codec import SchemaCache
from riskengine.contracts.reference_record import (
    NO_REFERENCE,
    RECORD_NAME,
    active_version,
    decode_reference,
    parse_reference_record,
    profile_record,
    reference_record,
)
from riskengine.contracts.schema_files import expanded_schema, validate_record
from riskengine.contracts.topics import RECORD_TOPICS, TOPICS, topic_names, topic_specs
from riskengine.core import InvalidReference, ReferenceData, parse_profile
from riskengine.settings import Settings

DOCUMENT: dict[str, Any] = {
    "profiles": [
        {
            "userId": "u-kp",
            "customerId": "c-1",
            "kycTier": 2,
            "country": "KP",
            "linkedAccounts": ["u-b", "u-a"],
        },
    ],
    "sanctionedUsers": ["u-bad"],
    "sanctionedCountries": ["KP", "IR"],
    "restrictedCountries": ["CU"],
    "markets": {
        "BTC/USDT": {"referencePrice": 60_000, "recentVolume": 5e7},
        "SOL/USDT": {"recentVolume": 1e6},
    },
}


def cache() -> SchemaCache:
    catalog = SchemaCache()
    catalog.add(7, expanded_schema(RECORD_NAME), writes=RECORD_NAME)
    return catalog


def encoded(record: dict[str, Any]) -> bytes:
    return cache().encode(RECORD_NAME, record)


def record_of(number: int, **changes: Any) -> dict[str, Any]:
    return reference_record(ReferenceData.from_document(DOCUMENT), number) | changes


def test_the_topic_is_compacted_suffixed_and_carries_the_record():
    assert RECORD_TOPICS[RECORD_NAME] == TOPICS.risk_reference == "risk-reference"
    assert TOPICS.risk_reference in TOPICS.all() and TOPICS.risk_reference in TOPICS.compacted
    settings = dataclasses.replace(Settings(), worker_topic_suffix="-t1")
    assert topic_names(settings).risk_reference == "risk-reference-t1"
    (spec,) = [s for s in topic_specs(settings) if s.name == "risk-reference-t1"]
    assert spec.configs == {"cleanup.policy": "compact"}
    assert spec.partitions == settings.topic_partitions


def test_the_record_fields_are_the_reference_documents_keys():
    """One definition of valid reference data: the record is validated as the document it mirrors."""
    fields = {f["name"] for f in expanded_schema(RECORD_NAME)["fields"]}
    assert fields - {"version", "updatedAt", "updatedBy"} == set(DOCUMENT) - {"profiles"}
    ReferenceData.from_document({key: [] if key != "markets" else {} for key in fields & set(DOCUMENT)})


def test_a_record_round_trips_through_avro_with_its_lists_and_markets():
    data = ReferenceData.from_document(DOCUMENT)
    record = reference_record(data, 4, updated_at=123, updated_by="me")
    validate_record(RECORD_NAME, record)
    assert record["sanctionedCountries"] == ["IR", "KP"], "sorted: equal data, equal bytes"
    assert record["markets"]["SOL/USDT"] == {"referencePrice": None, "recentVolume": 1e6}
    got = decode_reference(cache(), encoded(record))
    assert (got.version, got.updated_at, got.updated_by) == (4, 123, "me")
    assert got.data.sanctioned_users == {"u-bad"}
    assert got.data.sanctioned_countries == {"KP", "IR"} and got.data.restricted_countries == {"CU"}
    assert got.data.markets["BTC/USDT"].reference_price == 60_000.0
    assert got.data.markets["SOL/USDT"].reference_price is None
    assert dict(got.data.profiles) == {}, "profiles travel on user-profiles, not here"
    assert encoded(record) == encoded(reference_record(ReferenceData.from_document(DOCUMENT), 4, 123, "me"))


def test_a_profile_record_fits_the_contract_and_parses_back_to_the_same_profile():
    profile = parse_profile(DOCUMENT["profiles"][0])
    record = profile_record(profile)
    validate_record("UserProfile", record)
    assert record["linkedAccounts"] == ["u-a", "u-b"]
    assert parse_profile(record) == profile


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"sanctionedCountries": ["KP", "Iran"]}, "sanctionedCountries[1]"),
        ({"restrictedCountries": [""]}, "restrictedCountries[0]"),
        ({"sanctionedUsers": ["ok", ""]}, "sanctionedUsers[1]"),
        ({"markets": {"BTC/USDT": {"referencePrice": -1.0, "recentVolume": None}}}, "markets['BTC/USDT']"),
        (
            {"markets": {"ETH/USDT": {"referencePrice": float("nan"), "recentVolume": None}}},
            "markets['ETH/USDT']",
        ),
        ({"version": -3}, "version"),
    ],
)
def test_an_invalid_record_is_refused_naming_the_entry(changes, named):
    with pytest.raises(InvalidReference, match=named.replace("[", r"\[").replace("]", r"\]")):
        parse_reference_record(record_of(2, **changes))


def test_the_same_entries_are_refused_in_a_reference_file():
    """What replay --reference and reference publish read fails the same way."""
    with pytest.raises(InvalidReference, match=r"sanctionedCountries\[1\]"):
        ReferenceData.from_document(json.loads(json.dumps(DOCUMENT | {"sanctionedCountries": ["KP", "kp"]})))


def test_the_active_version_is_the_highest_valid_one_in_any_order():
    valid = [encoded(record_of(v)) for v in (3, 9, 5)]
    invalid = encoded(record_of(12, sanctionedCountries=["North Korea"]))
    values: list[bytes | None] = [valid[0], invalid, None, b"not avro", valid[1], valid[2]]
    assert active_version(cache(), values) == 9
    assert active_version(cache(), list(reversed(values))) == 9
    assert active_version(cache(), [invalid, None]) == NO_REFERENCE.version == 0
    assert active_version(cache(), []) == 0
