"""Connector passwords stay out of Kafka Connect's config topic and REST API, and still reach the task.

The stack's Connect worker resolves ``${env:...}`` references from its own environment, which
``stack up`` fills from the settings: these tests assume the stack was started with the same
``RISKENGINE_*`` settings as the tests (as ``make test`` does), whatever the passwords are.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import aiohttp
import pytest
from aiohttp import web
from elasticsearch import ApiError, AsyncElasticsearch

from riskengine.contracts.topics import ensure_topics, topic_specs
from riskengine.search.reporting import Indices, elasticsearch_client
from riskengine.search.sink_connector import (
    ConnectClient,
    connect_client,
    connector_config,
    delete,
    deploy,
    searchable_topics,
    wait_running,
)
from riskengine.settings import Secret, Settings
from riskengine_devtools.stack.connect import GROUP_ID

from .kafka_io import consume, end_offsets
from .worker_harness import free_port, isolated, send

pytestmark = pytest.mark.integration

#: Where the stack's Connect worker keeps connector and task configs (plain text).
CONFIG_TOPIC = f"{GROUP_ID}-configs"


async def _config_topic(settings: Settings) -> bytes:
    """Every key and value in Connect's config topic, concatenated."""
    ends = await end_offsets(settings, CONFIG_TOPIC)
    records = await consume(settings, CONFIG_TOPIC, sum(ends.values()))
    assert len(records) == sum(ends.values()), "could not read the whole config topic"
    return b"\n".join((record.key or b"") + b"=" + (record.value or b"") for record in records)


async def _rest_documents(connect: ConnectClient, name: str) -> str:
    """What Connect's REST API serves about the connector: config, info, tasks, all connectors."""
    bodies = []
    for path in (f"/connectors/{name}/config", f"/connectors/{name}", f"/connectors/{name}/tasks"):
        status, body = await connect.request("GET", path)
        assert status == 200, (path, status, body)
        bodies.append(body)
    status, body = await connect.request("GET", "/connectors?expand=info&expand=status")
    assert status == 200 and name in body, body
    bodies.append(body)
    return json.dumps(bodies)


@pytest.fixture
def secret_settings(settings: Settings, unique: str) -> Settings:
    """This test's topics, with user names and passwords (values that exist only in this test)."""
    return replace(
        isolated(settings, unique),
        elasticsearch_username="indexer",
        elasticsearch_password=Secret(f"es-password-{unique}"),
        schema_registry_username="reader",
        schema_registry_password=Secret(f"registry-password-{unique}"),
    )


@pytest.fixture
async def connector(secret_settings: Settings, unique: str) -> AsyncIterator[str]:
    """A connector name of this test's; the connector and its index are removed afterwards."""
    specs = [spec for spec in topic_specs(secret_settings) if spec.name in searchable_topics(secret_settings)]
    await ensure_topics(secret_settings, specs)
    name = f"riskengine-test-secrets-{unique}"
    try:
        yield name
    finally:
        await delete(secret_settings, name)
        async with elasticsearch_client(secret_settings) as es:
            await es.indices.delete(
                index=Indices.from_settings(secret_settings).alerts, ignore_unavailable=True
            )


def _worker_secrets(settings: Settings) -> list[str]:
    """The passwords the stack's Connect worker holds (resolved into the tasks it runs), if set."""
    values = [settings.elasticsearch_password.get(), settings.schema_registry_password.get()]
    return [value for value in values if value]


async def test_deployed_passwords_are_in_neither_the_rest_api_nor_the_config_topic(
    settings: Settings, secret_settings: Settings, connector: str
) -> None:
    status = await deploy(secret_settings, name=connector)
    assert status.running, status.describe()
    secrets = [secret_settings.elasticsearch_password.get(), secret_settings.schema_registry_password.get()]
    secrets += _worker_secrets(settings)

    async with connect_client(secret_settings) as connect:
        served = await _rest_documents(connect, connector)
        _, config = await connect.request("GET", f"/connectors/{connector}/config")
    stored = await _config_topic(secret_settings)
    # The topic read is the one holding this connector's config (the check below can find something).
    assert connector.encode() in stored
    for secret in secrets:
        assert secret not in served, "a password is served by Connect's REST API"
        assert secret.encode() not in stored, f"a password is stored in {CONFIG_TOPIC}"
    # References instead, which the worker resolves (next test).
    assert config["connection.password"] == "${env:RISKENGINE_ELASTICSEARCH_PASSWORD}"
    assert config["value.converter.schema.registry.password"] == "${env:RISKENGINE_SCHEMA_REGISTRY_PASSWORD}"
    assert b"${env:RISKENGINE_ELASTICSEARCH_PASSWORD}" in stored


async def _indexed(es: AsyncElasticsearch, index: str, document: str) -> bool:
    try:
        return bool(await es.exists(index=index, id=document))
    except ApiError as exc:
        if exc.status_code == 503:
            return False  # the index was just created: no shard yet
        raise


@asynccontextmanager
async def _recording_proxy(target: str) -> AsyncIterator[tuple[str, list[str | None]]]:
    """A pass-through to ``target`` noting each request's Authorization header: what the task sends."""
    seen: list[str | None] = []
    async with aiohttp.ClientSession() as client:

        async def forward(request: web.Request) -> web.Response:
            seen.append(request.headers.get("Authorization"))
            headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
            async with client.request(
                request.method, target + request.path_qs, data=await request.read(), headers=headers
            ) as answer:
                body = await answer.read()
                return web.Response(
                    status=answer.status, body=body, headers={"Content-Type": answer.headers["Content-Type"]}
                )

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", forward)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            yield f"http://127.0.0.1:{port}", seen
        finally:
            await runner.cleanup()


async def test_the_task_authenticates_with_the_workers_password_not_the_reference(
    settings: Settings, secret_settings: Settings, connector: str, unique: str
) -> None:
    # The worker's own password: from the settings the stack started it with (empty when unset).
    expected = (
        "Basic " + base64.b64encode(f"indexer:{settings.elasticsearch_password.get()}".encode()).decode()
    )
    alerts = Indices.from_settings(secret_settings).alerts
    async with _recording_proxy(secret_settings.elasticsearch_url) as (proxy, seen):
        config = connector_config(replace(secret_settings, elasticsearch_url=proxy), name=connector)
        # JSON text values: this test needs the connection, not the registry's Avro.
        config["value.converter"] = "org.apache.kafka.connect.storage.StringConverter"
        async with connect_client(secret_settings) as connect:
            await connect.put_config(connector, config)
            await wait_running(connect, connector, config, 60.0)
        alert_id = f"A-{unique}"
        alert = {"alertId": alert_id, "severity": "HIGH", "timestamp": 1_767_225_600_000}
        await send(secret_settings, alerts, [(None, json.dumps(alert).encode())])
        async with elasticsearch_client(settings) as es:
            for _ in range(300):
                if await _indexed(es, alerts, alert_id):
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail(f"the alert was not indexed through the proxy; requests seen: {len(seen)}")
    assert seen, "the task sent nothing through the proxy"
    # Resolved by the worker: the reference's own text never reaches Elasticsearch.
    assert set(seen) == {expected}, "the task did not send the worker's password"
    # The task ran with the resolved password; Connect kept and serves only the reference.
    stored = await _config_topic(settings)
    async with connect_client(settings) as connect:
        served = await _rest_documents(connect, connector)
    for secret in _worker_secrets(settings):
        assert secret not in served and secret.encode() not in stored
