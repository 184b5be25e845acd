"""The worker's reference feed without Kafka: risk-reference activation, the core's view, /stats.

The reader's consumer is replaced by a fake that hands over records; everything after it (the
holders, the composed ``ReferenceData`` the agent passes to the core, the figures of /stats) is
the worker's own code. The same flow against a real broker and a real worker process is
``tests/integration/test_worker_reference.py``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from riskengine.contracts.avro_codec import SchemaCache
from riskengine.contracts.reference_record import RECORD_NAME, REFERENCE_KEY, profile_record, reference_record
from riskengine.contracts.schema_files import expanded_schema
from riskengine.contracts.topics import TOPICS
from riskengine.core import DEFAULT_RULES, ReferenceData, UserState, evaluate_trade, parse_profile
from riskengine.settings import Settings
from riskengine.worker.context import WorkerContext
from riskengine.worker.metrics import Metrics
from riskengine.worker.tables.reference_feed import ReferenceFeed, ReferenceHolder
from riskengine.worker.web_views import prometheus_text, stats_document

from ..core.builders import trade


def catalog() -> SchemaCache:
    cache = SchemaCache()
    cache.add(1, expanded_schema("UserProfile"), writes="UserProfile")
    cache.add(2, expanded_schema(RECORD_NAME), writes=RECORD_NAME)
    cache.add(3, expanded_schema("RiskRules"), writes="RiskRules")
    return cache


CATALOG = catalog()


def reference(version: int, **document: Any) -> bytes:
    """A wire-format RiskReference message of ``document`` (lists validated as they are given)."""
    record = reference_record(ReferenceData(), version) | document
    return CATALOG.encode(RECORD_NAME, record)


def profile(user: str, country: str) -> bytes:
    record = profile_record(
        parse_profile({"userId": user, "customerId": f"c-{user}", "kycTier": 3, "country": country})
    )
    return CATALOG.encode("UserProfile", record)


# -- activation ---------------------------------------------------------------------------------


def test_a_higher_version_activates_at_once():
    holder = ReferenceHolder(CATALOG)
    assert holder.current.version == 0 and not holder.current.data.sanctioned_countries
    assert holder.offer(reference(3, sanctionedCountries=["KP"]))
    assert holder.current.version == 3 and holder.current.data.sanctioned_countries == {"KP"}
    assert holder.offer(reference(4, sanctionedCountries=["IR"], restrictedCountries=["CU"]))
    assert holder.current.data.sanctioned_countries == {"IR"}, "a version replaces the lists as a whole"
    assert holder.current.data.restricted_countries == {"CU"}
    assert (holder.rejected, holder.stale) == (0, 0)


def test_an_invalid_message_is_counted_and_the_previous_version_stays_active():
    holder = ReferenceHolder(CATALOG)
    holder.offer(reference(2, sanctionedCountries=["KP"]))
    assert not holder.offer(reference(9, sanctionedCountries=["North Korea"]))
    assert not holder.offer(b"\x00\x00\x00\x00\x02garbage")
    assert not holder.offer(b"not avro")
    assert holder.rejected == 3
    assert holder.current.version == 2 and holder.current.data.sanctioned_countries == {"KP"}
    # The invalid 9 was never active: 3 is above the active version and activates.
    assert holder.offer(reference(3, sanctionedCountries=["SY"]))
    assert holder.current.data.sanctioned_countries == {"SY"}


def test_the_invalid_entry_is_named_in_the_last_error():
    holder = ReferenceHolder(CATALOG)
    holder.offer(reference(5, restrictedCountries=["Cuba"]))
    assert holder.rejected == 1 and "restrictedCountries[0]" in holder.last_error


def test_a_version_not_above_the_active_one_is_ignored_and_counted():
    holder = ReferenceHolder(CATALOG)
    active = reference(5, sanctionedUsers=["u-5"])
    holder.offer(active)
    assert not holder.offer(reference(4, sanctionedUsers=["u-4"]))
    assert not holder.offer(reference(5, sanctionedUsers=["u-other"])), "same version, other lists"
    assert holder.stale == 2 and holder.current.data.sanctioned_users == {"u-5"}
    assert not holder.offer(active), "the active record read again"
    assert holder.stale == 2, "is no news and not counted"


def test_the_outcome_does_not_depend_on_the_order_the_versions_are_read_in():
    messages = [reference(v, sanctionedUsers=[f"u-{v}"]) for v in (1, 7, 3)]
    for order in (messages, list(reversed(messages))):
        holder = ReferenceHolder(CATALOG)
        for raw in order:
            holder.offer(raw)
        assert holder.current.version == 7 and holder.current.data.sanctioned_users == {"u-7"}


# -- the feed: reader -> holders -> the core's ReferenceData ----------------------------------------


@dataclass
class Record:
    key: bytes | None
    value: bytes | None


class FakeConsumer:
    """Hands over one batch of records per topic, then nothing."""

    def __init__(self, batches: dict[Any, list[Record]]) -> None:
        self.batches = batches

    async def getmany(self, timeout_ms: int) -> dict[Any, list[Record]]:
        batches, self.batches = self.batches, {}
        return batches


def feed() -> ReferenceFeed:
    return ReferenceFeed(Settings(), TOPICS, CATALOG, Metrics())


def deliver(reference_feed: ReferenceFeed, topic: str, *records: Record) -> None:
    """Hand ``records`` of ``topic`` to the feed's reader as its consumer would."""
    tp = TopicPartition(topic, 0)
    asyncio.run(reference_feed.reader._poll(FakeConsumer({tp: list(records)}), 0))


def test_the_feed_follows_risk_reference_and_the_core_sees_profiles_with_the_active_lists():
    reference_feed = feed()
    deliver(
        reference_feed,
        TOPICS.user_profiles,
        Record(b"u-kp", profile("u-kp", "KP")),
        Record(b"u-ir", profile("u-ir", "IR")),
    )

    def flags(user: str) -> tuple[set[str], set[str]]:
        result = evaluate_trade(UserState(), trade(0, user=user), reference_feed.data, DEFAULT_RULES)
        return set(result.analyzed.compliance_flags), {a.pattern.value for a in result.alerts}

    before_flags, before_alerts = flags("u-kp")
    assert "SANCTIONED_COUNTRY" not in before_flags and not before_alerts, "no lists yet"
    deliver(
        reference_feed,
        TOPICS.risk_reference,
        Record(REFERENCE_KEY, reference(1, sanctionedCountries=["KP"], restrictedCountries=["IR"])),
    )
    kp_flags, kp_alerts = flags("u-kp")
    assert "SANCTIONED_COUNTRY" in kp_flags and kp_alerts == {"SANCTIONS_HIT"}
    ir_flags, ir_alerts = flags("u-ir")
    assert "RESTRICTED_COUNTRY" in ir_flags and "SANCTIONS_HIT" not in ir_alerts
    assert reference_feed.data.profiles["u-kp"].country == "KP", "the profiles stay live"

    # A tombstone and an invalid newer version change nothing; a valid newer one does.
    deliver(
        reference_feed,
        TOPICS.risk_reference,
        Record(REFERENCE_KEY, None),
        Record(REFERENCE_KEY, reference(2, sanctionedCountries=["kp"])),
    )
    assert "SANCTIONED_COUNTRY" in flags("u-kp")[0] and reference_feed.lists.rejected == 1
    deliver(
        reference_feed, TOPICS.risk_reference, Record(REFERENCE_KEY, reference(3, sanctionedUsers=["u-ir"]))
    )
    assert "SANCTIONED_COUNTRY" not in flags("u-kp")[0]
    assert {"SANCTIONED_USER"} <= flags("u-ir")[0] and "RESTRICTED_COUNTRY" not in flags("u-ir")[0]


def test_markets_of_the_active_version_reach_the_core():
    reference_feed = feed()
    deliver(reference_feed, TOPICS.user_profiles, Record(b"u-1", profile("u-1", "DE")))
    item = trade(0, user="u-1", symbol="BTC/USDT", notional=1_000.0, quantity=1.0)
    before = evaluate_trade(UserState(), item, reference_feed.data, DEFAULT_RULES).analyzed
    markets = {"BTC/USDT": {"referencePrice": 500.0, "recentVolume": 10_000.0}}
    deliver(reference_feed, TOPICS.risk_reference, Record(REFERENCE_KEY, reference(1, markets=markets)))
    after = evaluate_trade(UserState(), item, reference_feed.data, DEFAULT_RULES).analyzed
    assert after.market_impact.price_deviation == 1.0 and before.market_impact.price_deviation == 0.0
    assert after.market_impact.liquidity_consumption == 0.1


def test_stats_and_metrics_report_the_reference_version_and_the_ignored_messages():
    reference_feed = feed()
    deliver(
        reference_feed,
        TOPICS.risk_reference,
        Record(REFERENCE_KEY, reference(4, sanctionedCountries=["KP", "IR"], restrictedCountries=["CU"])),
        Record(REFERENCE_KEY, reference(3)),
        Record(REFERENCE_KEY, reference(8, sanctionedUsers=[""])),
    )
    context = WorkerContext(Settings(), TOPICS, CATALOG, Metrics(), reference_feed)  # type: ignore[arg-type]
    stats = stats_document(SimpleNamespace(), context)  # type: ignore[arg-type]
    assert stats["referenceVersion"] == 4
    assert (stats["referenceRejected"], stats["referenceIgnoredStale"]) == (1, 1)
    assert "sanctionedUsers[0]" in stats["referenceLastError"]
    assert stats["referenceLists"] == {
        "sanctionedUsers": 0,
        "sanctionedCountries": 2,
        "restrictedCountries": 1,
        "markets": 0,
    }
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(prometheus_text(stats))
        for sample in family.samples
    }
    assert samples["riskengine_reference_version"] == 4
    assert samples["riskengine_reference_rejected_total"] == 1
    assert samples["riskengine_reference_ignored_stale_total"] == 1


# -- profiles ------------------------------------------------------------------------------------


def test_profiles_follow_every_update_and_an_invalid_value_counts_once() -> None:
    """The view caches decoded profiles (the core asks several times per trade): a changed value is
    seen at once, an equal one sent again is not decoded again, a tombstone removes the profile."""
    metrics = Metrics()
    reference_feed = ReferenceFeed(Settings(), TOPICS, CATALOG, metrics)
    profiles = reference_feed.profiles
    assert profiles.get("u-1") is None and profiles.get("u-1", "none") == "none"
    deliver(reference_feed, TOPICS.user_profiles, Record(b"u-1", profile("u-1", "KP")))
    assert profiles.get("u-1").country == "KP" and profiles["u-1"].country == "KP"
    deliver(reference_feed, TOPICS.user_profiles, Record(b"u-1", profile("u-1", "IR")))
    assert profiles.get("u-1").country == "IR", "a changed value is decoded again"
    assert profiles["u-1"].country == "IR"

    invalid = b"\x00\x00\x00\x00\x01" + b"\xff" * 3
    deliver(reference_feed, TOPICS.user_profiles, Record(b"u-2", invalid))
    assert profiles.get("u-2") is None and "u-2" not in profiles
    # The same bytes again (a new object): remembered as invalid, not reported again.
    deliver(reference_feed, TOPICS.user_profiles, Record(b"u-2", bytes(bytearray(invalid))))
    assert profiles.get("u-2", "none") == "none"
    assert metrics.invalid_profiles == 1

    deliver(reference_feed, TOPICS.user_profiles, Record(b"u-1", None))
    assert profiles.get("u-1") is None and "u-1" not in profiles
    deliver(reference_feed, TOPICS.user_profiles, Record(b"u-1", profile("u-1", "DE")))
    assert profiles.get("u-1").country == "DE", "a profile sent after its tombstone"
    assert sorted(profiles) == ["u-1", "u-2"] and len(profiles) == 2
