"""The index templates: patterns for both topics, keyword ids and enums, dates and numeric scores."""

from riskengine.contracts.topics import Topics
from riskengine.search.index_templates import TEMPLATES


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
