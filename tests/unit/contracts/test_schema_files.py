"""The Avro contracts in schemas/: they expand, parse, and follow the evolution conventions."""

import json
from typing import Any

import fastavro
import pytest

from riskengine.contracts.schema_files import expanded_schema
from riskengine.contracts.topics import RECORD_TOPICS


def _records(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, list):
        return [r for branch in node for r in _records(branch)]
    if not isinstance(node, dict):
        return []
    found = [node] if node.get("type") == "record" else []
    for child in (node.get("items"), node.get("values")):
        found += _records(child)
    for f in node.get("fields", []):
        found += _records(f["type"])
    return found


@pytest.mark.parametrize("name", sorted(RECORD_TOPICS))
def test_every_contract_expands_to_a_self_contained_schema(name):
    schema = expanded_schema(name)
    assert schema["name"] == name
    # Parses on its own: no reference left to a type defined elsewhere.
    fastavro.parse_schema(json.loads(json.dumps(schema)), named_schemas={})


def test_a_named_type_is_defined_once_and_referred_to_by_name_after():
    text = json.dumps(expanded_schema("RiskAnalyzedTrade"))
    assert text.count('"name": "RiskLevel"') == 1
    assert '"riskengine.RiskLevel"' in text
    assert text.count('"name": "PatternType"') == 1


@pytest.mark.parametrize("name", sorted(RECORD_TOPICS))
def test_optional_fields_default_to_null_so_they_can_be_added_and_removed(name):
    for record in _records(expanded_schema(name)):
        for f in record["fields"]:
            if isinstance(f["type"], list) and "null" in f["type"]:
                assert f["type"][0] == "null" and "default" in f and f["default"] is None, (
                    f"{record['name']}.{f['name']}"
                )
