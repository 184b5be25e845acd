"""The index templates: patterns for both topics, keyword ids and enums, dates and numeric scores."""

import pytest

from riskengine.contracts.topics import Topics
from riskengine.errors import SettingsError
from riskengine.search.index_templates import TEMPLATES, index_template, missing_properties
from riskengine.settings import Settings


def test_each_searchable_topic_has_one_template() -> None:
    topics = Topics()
    patterns = sorted(pattern for pattern, _ in TEMPLATES.values())
    assert patterns == sorted([f"{topics.alerts}*", f"{topics.analyzed_trades}*"])


def test_ids_and_enums_are_keywords_timestamps_dates_scores_numbers() -> None:
    trades = TEMPLATES["riskengine-analyzed-trades"][1]["properties"]
    alerts = TEMPLATES["riskengine-alerts"][1]["properties"]
    assert trades["originalTrade"]["properties"]["tradeId"] == {"type": "keyword"}
    assert trades["finalRiskLevel"] == {"type": "keyword"}
    assert trades["riskScore"] == {"type": "double"}
    assert trades["eventTimestamp"]["type"] == "date"
    assert alerts["alertId"] == {"type": "keyword"}
    assert alerts["severity"] == {"type": "keyword"}
    assert alerts["timestamp"]["type"] == "date"
    assert all(mappings["dynamic"] is False for _, mappings in TEMPLATES.values())


def test_alerts_map_the_priority_as_an_integer() -> None:
    assert TEMPLATES["riskengine-alerts"][1]["properties"]["priority"] == {"type": "integer"}


def test_missing_properties_are_what_an_older_index_lacks_nested_ones_too() -> None:
    alerts = TEMPLATES["riskengine-alerts"][1]["properties"]
    older = {name: spec for name, spec in alerts.items() if name != "priority"}
    assert missing_properties(alerts, older) == {"priority": {"type": "integer"}}
    assert missing_properties(alerts, alerts) == {}
    assert missing_properties(alerts, {}) == alerts
    # A field mapped with another type (a dynamically mapped index) is left alone: no conflict.
    assert "timestamp" not in missing_properties(alerts, {**older, "timestamp": {"type": "long"}})
    trades = TEMPLATES["riskengine-analyzed-trades"][1]["properties"]
    nested = {**trades, "originalTrade": {"properties": {"tradeId": {"type": "keyword"}}}}
    missing = missing_properties(trades, nested)
    assert list(missing) == ["originalTrade"]
    assert "tradeId" not in missing["originalTrade"]["properties"]
    assert "userId" in missing["originalTrade"]["properties"]


def test_by_default_an_index_has_one_shard_and_no_replica_so_a_single_node_is_green() -> None:
    for pattern, mappings in TEMPLATES.values():
        body = index_template(pattern, mappings, Settings.from_env({}))
        assert body["index_patterns"] == [pattern]
        assert body["template"]["settings"] == {"number_of_shards": 1, "number_of_replicas": 0}
        assert body["template"]["mappings"] == mappings


def test_shards_and_replicas_come_from_the_settings() -> None:
    settings = Settings.from_env(
        {"RISKENGINE_ELASTICSEARCH_INDEX_SHARDS": "3", "RISKENGINE_ELASTICSEARCH_INDEX_REPLICAS": "2"}
    )
    for pattern, mappings in TEMPLATES.values():
        assert index_template(pattern, mappings, settings)["template"]["settings"] == {
            "number_of_shards": 3,
            "number_of_replicas": 2,
        }


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RISKENGINE_ELASTICSEARCH_INDEX_REPLICAS", "-1"),
        ("RISKENGINE_ELASTICSEARCH_INDEX_REPLICAS", "one"),
        ("RISKENGINE_ELASTICSEARCH_INDEX_SHARDS", "0"),
        ("RISKENGINE_ELASTICSEARCH_INDEX_SHARDS", "1.5"),
    ],
)
def test_a_bad_shard_or_replica_count_fails_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env({variable: value})
