"""The producer publishes its reference lists to risk-reference at start, after the profiles.

Served with the in-memory transport (see ``test_api.py``); the same against the real broker is in
``tests/integration/test_producer.py``.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp.test_utils import TestClient, TestServer

from riskengine.contracts.reference_record import REFERENCE_KEY, decode_reference
from riskengine.producer.api import create_app, reference_message
from riskengine.producer.config import ProducerConfig, SimulationDefaults
from riskengine.producer.population import SANCTIONED_COUNTRIES, reference_document
from riskengine.producer.simulator import Simulator

from .offline_doubles import MemoryTransport, offline_catalog, small_config


async def test_mock_trading_start_publishes_the_reference_lists_after_the_profiles(tmp_path):
    transport = MemoryTransport()

    async def connect(config):
        return transport, offline_catalog()

    config = ProducerConfig(audit_db=tmp_path / "audit.sqlite3", defaults=SimulationDefaults(users=60))
    client = TestClient(TestServer(create_app(config, connect), host="127.0.0.1"))
    await client.start_server()
    try:
        before = time.time_ns() // 1_000_000
        assert (
            await client.post("/api/admin/mock-trading/start?rateMs=50&scenarios=none", json={})
        ).status == 200
        await asyncio.sleep(0.3)
        await client.post("/api/admin/mock-trading/stop", json={})
        assert (
            await client.post("/api/admin/mock-trading/start?rateMs=50&scenarios=none", json={})
        ).status == 200
        await client.post("/api/admin/mock-trading/stop", json={})
        after = time.time_ns() // 1_000_000
    finally:
        await client.close()
    topics = [topic for topic, *_ in transport.sent]
    assert topics[:61] == ["user-profiles"] * 60 + ["risk-reference"]
    published = [(key, value) for topic, key, value, _, _ in transport.sent if topic == "risk-reference"]
    assert len(published) == 2, "one per start"
    versions = []
    for key, value in published:
        assert key == REFERENCE_KEY
        reference = decode_reference(offline_catalog(), value)
        assert reference.data.sanctioned_countries == SANCTIONED_COUNTRIES
        assert not reference.data.sanctioned_users and not reference.data.restricted_countries
        assert before <= reference.version <= after, "versioned with the run's start (epoch ms)"
        versions.append(reference.version)
    assert versions[0] < versions[1], "a later start supersedes the earlier one"


def test_the_published_lists_are_those_of_the_generated_reference_file():
    """The workers then see what ``riskengine replay --reference run.reference.json`` sees."""
    simulator = Simulator(small_config(start_ms=1_800_000_000_000))
    message = reference_message(simulator, ProducerConfig())
    document = reference_document(simulator.population, 1_800_000_000_000)
    assert message.topic == "risk-reference" and message.record_name == "RiskReference"
    assert message.record["version"] == 1_800_000_000_000
    for key in ("sanctionedUsers", "sanctionedCountries", "restrictedCountries"):
        assert message.record[key] == sorted(document[key]), key
    assert message.record["markets"] == document.get("markets", {})
