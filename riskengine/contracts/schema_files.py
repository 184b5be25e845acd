"""The Avro contracts in ``riskengine/contracts/schemas/``: loading and expansion.

Every ``.avsc`` file is named after the full name of the type it defines
(``riskengine.CryptoTrade.avsc``), so records can refer to shared enums and records by name. The
registry gets each top-level schema fully expanded (no references), which every server speaking
the Confluent REST API accepts.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import fastavro

NAMESPACE = "riskengine"


def schema_text(name: str) -> str:
    """The raw text of ``riskengine/contracts/schemas/riskengine.<name>.avsc``."""
    return resources.files("riskengine.contracts").joinpath("schemas", f"{NAMESPACE}.{name}.avsc").read_text()


_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})


@cache
def expanded_schema(name: str) -> dict[str, Any]:
    """The named schema with every referenced type defined inline, as a JSON-able dict.

    A named type is defined at its first use and referred to by full name after that, as Avro
    requires.
    """
    defined: set[str] = set()

    def expand(node: Any) -> Any:
        if isinstance(node, str):
            if node in _PRIMITIVES:
                return node
            full = node if "." in node else f"{NAMESPACE}.{node}"
            if full in defined:
                return full
            return expand(json.loads(schema_text(full.rsplit(".", 1)[1])))
        if isinstance(node, list):
            return [expand(branch) for branch in node]
        kind = node["type"]
        if kind in ("record", "enum", "fixed"):
            defined.add(f"{node.get('namespace', NAMESPACE)}.{node['name']}")
        if kind == "record":
            return {**node, "fields": [{**f, "type": expand(f["type"])} for f in node["fields"]]}
        if kind == "array":
            return {**node, "items": expand(node["items"])}
        if kind == "map":
            return {**node, "values": expand(node["values"])}
        return node

    expanded: dict[str, Any] = expand(name)
    return expanded


@cache
def parsed_schema(name: str) -> Any:
    """The fastavro-parsed form of :func:`expanded_schema`, for reading and writing."""
    return fastavro.parse_schema(expanded_schema(name))


def validate_record(name: str, record: dict[str, Any]) -> None:
    """Raise ``fastavro.validation.ValidationError`` if ``record`` does not fit the contract."""
    fastavro.validation.validate(record, parsed_schema(name), raise_errors=True)
