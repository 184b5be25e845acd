"""Elasticsearch index templates for the two searchable topics, with explicit mappings.

Documents are the JSON form of the Avro records (:mod:`riskengine.contracts`): a
``RiskAnalyzedTrade`` under ``risk-analyzed-trades*`` and a ``RiskAlert`` under ``risk-alerts*``.
Ids and enums are ``keyword`` (exact filters and terms aggregations), the epoch-millisecond
``long`` timestamps are ``date``, scores and amounts numeric. ``dynamic: false`` keeps fields not
listed here (evidence, features, nested analyses) in ``_source`` without growing the mapping.

Templates change only by adding fields (a field's type never changes: that would need a reindex).
A template applies to indices created after it, so :func:`add_missing_fields` also adds the new
fields to the indices that already exist (Elasticsearch accepts new fields in a live mapping).
A document indexed before its index had the field keeps the value in ``_source`` only: it is not
searchable, sortable or aggregated on that field until it is indexed again.

Shards and replicas come from the settings (``RISKENGINE_ELASTICSEARCH_INDEX_SHARDS``, ``_REPLICAS``):
by default one shard and no replica, so the indices of a single node are green (a replica is never
allocated on the node holding its primary: with one, a single node stays yellow). The replica
count of an existing index can change (:func:`update_replicas`); its shard count cannot.
"""

from __future__ import annotations

from typing import Any

from elasticsearch import AsyncElasticsearch, NotFoundError

from riskengine.settings import Settings

_KEYWORD = {"type": "keyword"}
_DOUBLE = {"type": "double"}
_LONG = {"type": "long"}
_INTEGER = {"type": "integer"}
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
                # 0-100, null (no value in the index) in alerts from engines before it existed.
                "priority": _INTEGER,
            },
        },
    ),
}


def index_settings(settings: Settings) -> dict[str, int]:
    """The index settings every template gives its indices: shards and replicas from ``settings``."""
    return {
        "number_of_shards": settings.elasticsearch_index_shards,
        "number_of_replicas": settings.elasticsearch_index_replicas,
    }


def index_template(pattern: str, mappings: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The body of ``PUT _index_template/<name>`` for one entry of :data:`TEMPLATES`."""
    return {
        "index_patterns": [pattern],
        "template": {"settings": index_settings(settings), "mappings": mappings},
    }


async def install_index_templates(es: AsyncElasticsearch, settings: Settings) -> list[str]:
    """Create or replace every template in :data:`TEMPLATES` (idempotent); returns their names.

    A template applies to indices created after it: install before the sink writes the first
    document, or the index gets dynamic mappings (timestamps as plain ``long``) and one replica.
    """
    for name, (pattern, mappings) in TEMPLATES.items():
        await es.indices.put_index_template(name=name, **index_template(pattern, mappings, settings))
    return list(TEMPLATES)


async def update_replicas(es: AsyncElasticsearch, settings: Settings) -> dict[str, tuple[int, int]]:
    """Give the existing indices of the templates' patterns the configured replica count.

    Returns index -> (replicas before, after), only for indices that changed: an index created
    before the templates had replicas (or with another setting) turns green on a single node.
    """
    wanted = settings.elasticsearch_index_replicas
    changed: dict[str, tuple[int, int]] = {}
    for pattern, _mappings in TEMPLATES.values():
        response = await es.indices.get_settings(
            index=pattern, name="index.number_of_replicas", allow_no_indices=True, expand_wildcards="open"
        )
        for index, body in sorted(response.body.items()):
            current = int(body["settings"]["index"]["number_of_replicas"])
            if current == wanted:
                continue
            try:
                await es.indices.put_settings(index=index, settings={"index": {"number_of_replicas": wanted}})
            except NotFoundError:
                continue  # deleted meanwhile: nothing to update
            changed[index] = (current, wanted)
    return changed


def missing_properties(wanted: dict[str, Any], present: dict[str, Any]) -> dict[str, Any]:
    """The part of the ``wanted`` properties that ``present`` (an index's properties) lacks.

    Objects present on both sides are compared field by field; a field present with another type
    is left alone (changing a type needs a reindex, and the index keeps working as it is).
    """
    missing: dict[str, Any] = {}
    for name, spec in wanted.items():
        have = present.get(name)
        if have is None:
            missing[name] = spec
        elif "properties" in spec and "properties" in have:
            inner = missing_properties(spec["properties"], have["properties"])
            if inner:
                missing[name] = {"properties": inner}
    return missing


def _paths(properties: dict[str, Any], prefix: str = "") -> list[str]:
    paths = []
    for name, spec in properties.items():
        if "properties" in spec:
            paths += _paths(spec["properties"], f"{prefix}{name}.")
        else:
            paths.append(prefix + name)
    return paths


async def add_missing_fields(es: AsyncElasticsearch) -> dict[str, list[str]]:
    """Add the templates' fields that existing indices lack to their mappings (idempotent).

    Returns index -> the dotted fields added (only indices that changed). Indices created before
    a template gained a field (``priority`` of the alerts) get it here, so sorting and filtering on
    it work on them too; their documents indexed before keep the field unindexed (see the module).
    """
    added: dict[str, list[str]] = {}
    for pattern, mappings in TEMPLATES.values():
        response = await es.indices.get_mapping(index=pattern, allow_no_indices=True, expand_wildcards="open")
        for index, body in sorted(response.body.items()):
            present = body.get("mappings", {}).get("properties", {})
            missing = missing_properties(mappings["properties"], present)
            if missing:
                try:
                    await es.indices.put_mapping(index=index, properties=missing)
                except NotFoundError:
                    continue  # deleted meanwhile: nothing to update
                added[index] = _paths(missing)
    return added
