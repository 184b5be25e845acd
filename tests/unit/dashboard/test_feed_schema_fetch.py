"""The dashboard feed's fetch of a schema id it has not seen, against an in-process registry stub:
a brief outage is retried, only a 404 is remembered (riskengine.contracts.avro_codec.fetch_schema,
as in the worker). The stub answers the one request involved, GET /schemas/ids/{id}; the feed and
the registry client are the real ones.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from schema_registry.client import AsyncSchemaRegistryClient

from riskengine.contracts import avro_codec
from riskengine.contracts.avro_codec import SchemaCache, SchemaCatalog
from riskengine.contracts.schema_files import expanded_schema
from riskengine.dashboard.feed import AlertFeed, Broadcaster
from riskengine.settings import Settings

#: The id the dashboard's catalog writes RiskAlert with, and the id of a newer writer's version.
OWN_ID, NEWER_ID = 1, 99


def newer_alert_schema() -> dict[str, Any]:
    """RiskAlert as a later worker release writes it (one optional field more)."""
    schema = copy.deepcopy(expanded_schema("RiskAlert"))
    schema["fields"].append({"name": "analystNote", "type": ["null", "string"], "default": None})
    return schema


def alert_record(n: int) -> dict[str, Any]:
    """A RiskAlert as the newer writer writes it."""
    return {
        "alertId": f"a-{n}",
        "patternType": "LARGE_ORDER",
        "userId": "u-1",
        "symbol": "BTC/USDT",
        "severity": "HIGH",
        "description": "a large order",
        "recommendedAction": "review",
        "timestamp": 1_764_000_000_000 + n,
        "evidence": [f"t-{n}"],
        "features": [],
        "ruleVersion": 1,
        "orderActivity": [],
        "priority": 70,
        "analystNote": "newer field",
    }


def written(schema_id: int, n: int) -> bytes:
    """Alert ``n`` in the wire format, written under ``schema_id`` with the newer schema."""
    cache = SchemaCache()
    cache.add(schema_id, newer_alert_schema(), writes="RiskAlert")
    return cache.encode("RiskAlert", alert_record(n))


class RegistryStub:
    """GET /schemas/ids/{id} answered by a script of 'down' (503), 'missing' (404) or 'up' (200),
    one per request; the last one repeats."""

    def __init__(self) -> None:
        self.script = ["up"]
        self.requests: list[int] = []

    async def by_id(self, request: web.Request) -> web.Response:
        """One scripted answer."""
        self.requests.append(int(request.match_info["schema_id"]))
        state = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if state == "down":
            return web.json_response({"error_code": 50301, "message": "restarting"}, status=503)
        if state == "missing":
            return web.json_response({"error_code": 40403, "message": "Schema not found"}, status=404)
        return web.json_response({"schema": json.dumps(newer_alert_schema())})


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    monkeypatch.setattr(avro_codec, "FETCH_RETRY_DELAYS_S", (0.0, 0.0, 0.0))


@pytest.fixture
async def registry():
    """The stub served on 127.0.0.1, and a catalog on it that writes RiskAlert under OWN_ID."""
    stub = RegistryStub()
    app = web.Application()
    app.router.add_get("/schemas/ids/{schema_id}", stub.by_id)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    catalog = SchemaCatalog(AsyncSchemaRegistryClient(url=str(server.make_url(""))))
    catalog.add(OWN_ID, expanded_schema("RiskAlert"), writes="RiskAlert")
    yield stub, catalog
    await server.close()


def a_feed() -> AlertFeed:
    """A feed that is not consuming: the tests hand it messages as its consumer would."""
    return AlertFeed(Settings.from_env({}), "risk-alerts", Broadcaster())


async def test_an_alert_with_a_new_schema_id_is_decoded_through_a_brief_registry_outage(registry):
    stub, catalog = registry
    stub.script = ["down", "down", "up"]
    feed = a_feed()
    await feed._deliver(catalog, written(NEWER_ID, 1))
    # Later alerts with that id decode from the catalog, without asking again.
    await feed._deliver(catalog, written(NEWER_ID, 2))
    assert stub.requests == [NEWER_ID] * 3
    assert [alert["alertId"] for alert in feed.broadcaster.recent] == ["a-1", "a-2"]
    assert (feed.received, feed.undecodable) == (2, 0)
    assert "analystNote" not in feed.broadcaster.recent[0], "read as this dashboard's RiskAlert"


async def test_a_schema_id_the_registry_does_not_have_is_asked_for_once_in_a_while(registry):
    stub, catalog = registry
    stub.script = ["missing"]
    feed = a_feed()
    for n in range(3):
        await feed._deliver(catalog, written(NEWER_ID + 1, n))
    assert (feed.received, feed.undecodable) == (0, 3)
    assert stub.requests == [NEWER_ID + 1], "the 404 is remembered: one request for the storm"
    assert feed._not_found.capacity == avro_codec.NOT_FOUND_CAPACITY
    assert feed._not_found.ttl_s == avro_codec.NOT_FOUND_TTL_S


async def test_a_registry_down_through_every_attempt_leaves_the_alert_to_be_read_again(registry):
    stub, catalog = registry
    stub.script = ["down"] * 4 + ["up"]
    feed = a_feed()
    with pytest.raises(avro_codec.RegistryUnavailable, match="4 attempts"):
        await feed._deliver(catalog, written(NEWER_ID, 1))
    # The consumer reconnects and reads the alert again; the outage was not remembered.
    await feed._deliver(catalog, written(NEWER_ID, 1))
    assert [alert["alertId"] for alert in feed.broadcaster.recent] == ["a-1"]
    assert len(stub.requests) == 5
