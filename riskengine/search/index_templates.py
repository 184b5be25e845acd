"""Elasticsearch index templates for the two searchable topics, with explicit mappings.

Documents are the JSON form of the Avro records (:mod:`riskengine.contracts`): a
``RiskAnalyzedTrade`` under ``risk-analyzed-trades*`` and a ``RiskAlert`` under ``risk-alerts*``.
Ids and enums are ``keyword`` (exact filters and terms aggregations), the epoch-millisecond
``long`` timestamps are ``date``, scores and amounts numeric. ``dynamic: false`` keeps fields not
listed here (evidence, features, nested analyses) in ``_source`` without growing the mapping.
"""

from __future__ import annotations

from typing import Any

from elasticsearch import AsyncElasticsearch

_KEYWORD = {"type": "keyword"}
_DOUBLE = {"type": "double"}
_LONG = {"type": "long"}
#: Documents carry epoch milliseconds; queries (and dashboards) may also use ISO dates.
_DATE = {"type": "date", "format": "epoch_millis||strict_date_optional_time"}

_TRADE = {
    "properties": {
        "tradeId": _KEYWORD,
        "userId": _KEYWORD,
        "customerId": _KEYWORD,
        "symbol": _KEYWORD,
        "side": _KEYWORD,
        "quantity": _DOUBLE,
        "price": _DOUBLE,
        "notional": _DOUBLE,
        "timestamp": _DATE,
        "exchange": _KEYWORD,
        "orderType": _KEYWORD,
        "riskLevel": _KEYWORD,
        "counterpartyUserId": _KEYWORD,
        "orderId": _KEYWORD,
    }
}

#: Index template name -> (index pattern, mappings).
TEMPLATES: dict[str, tuple[str, dict[str, Any]]] = {
    "riskengine-analyzed-trades": (
        "risk-analyzed-trades*",
        {
            "dynamic": False,
            "properties": {
                "originalTrade": _TRADE,
                "riskScore": _DOUBLE,
                "finalRiskLevel": _KEYWORD,
                "triggeredPatterns": _KEYWORD,
                "complianceFlags": _KEYWORD,
                "riskMitigationActions": _KEYWORD,
                "scoreBreakdown": {
                    "properties": {
                        "volume": _DOUBLE,
                        "behavioral": _DOUBLE,
                        "marketImpact": _DOUBLE,
                        "compliance": _DOUBLE,
                    }
                },
                "ruleVersion": _LONG,
                "eventTimestamp": _DATE,
                "processedAt": _DATE,
            },
        },
    ),
    "riskengine-alerts": (
        "risk-alerts*",
        {
            "dynamic": False,
            "properties": {
                "alertId": _KEYWORD,
                "patternType": _KEYWORD,
                # A market-level alert has a symbol and no userId: the market view finds it by
                # an exact symbol term and a missing userId.
                "userId": _KEYWORD,
                "symbol": _KEYWORD,
                "severity": _KEYWORD,
                "description": {"type": "text"},
                "recommendedAction": {"type": "text"},
                "timestamp": _DATE,
                "ruleVersion": _LONG,
            },
        },
    ),
}


async def install_index_templates(es: AsyncElasticsearch) -> list[str]:
    """Create or replace every template in :data:`TEMPLATES` (idempotent); returns their names.

    A template applies to indices created after it: install before the sink writes the first
    document, or the index gets dynamic mappings (timestamps as plain ``long``).
    """
    for name, (pattern, mappings) in TEMPLATES.items():
        await es.indices.put_index_template(
            name=name,
            index_patterns=[pattern],
            template={"mappings": mappings},
        )
    return list(TEMPLATES)
