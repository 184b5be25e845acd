"""The Elasticsearch sink connector: its Kafka Connect config, and deploying it.

The connector (``connectors/elasticsearch-sink/``, built and loaded by the stack's ``connect``
service) indexes ``risk-analyzed-trades`` and ``risk-alerts`` (with
``RISKENGINE_WORKER_TOPIC_SUFFIX`` appended) into Elasticsearch indices named like the topics, which
is where :mod:`riskengine.search.reporting` reads them. Values are decoded from the registry's Avro (its
own ``RegistryAvroConverter``) into the same JSON the contracts define; the document ``_id`` is the
trade id or alert id, so a re-delivered or re-processed record replaces its document.

:func:`connector_config` is pure (unit-tested, and the source of the copy in
``docker/compose.yml``); :func:`deploy` installs the index templates and PUTs the config through
Connect's REST API, then waits until the connector and its task run.

Passwords never travel in the connector config: Connect keeps that config in plain text in its
config topic and serves it on ``GET /connectors/{name}/config``. The config names them instead
(``${env:RISKENGINE_ELASTICSEARCH_PASSWORD}``), and the Connect worker resolves the reference from
its own environment through Kafka's ``EnvVarConfigProvider`` (:func:`worker_config_providers`,
which the worker's properties must carry) each time it starts the connector or a task.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import elastic_transport
from aiokafka.errors import KafkaError
from elasticsearch import ApiError

from riskengine.contracts.topics import TOPICS, TopicLayoutError, TopicSpec, ensure_topics, topic_names
from riskengine.errors import SearchError
from riskengine.search.index_templates import add_missing_fields, install_index_templates, update_replicas
from riskengine.search.reporting import elasticsearch_client
from riskengine.settings import PREFIX, Settings

CONNECTOR_CLASS = "io.riskengine.connect.ElasticsearchSinkConnector"
CONVERTER_CLASS = "io.riskengine.connect.RegistryAvroConverter"
#: The connector's name on the Connect cluster (``--name`` changes it).
DEFAULT_NAME = "riskengine-elasticsearch-sink"
#: Unsuffixed topic -> the record field that is the document ``_id`` (dotted: nested record).
#: The connector matches these as topic-name prefixes, so suffixed topics need no other entry.
ID_FIELDS: dict[str, str] = {TOPICS.analyzed_trades: "originalTrade.tradeId", TOPICS.alerts: "alertId"}
#: Records that cannot be decoded or indexed go here (with Connect's error headers), never lost.
DEAD_LETTER_TOPIC = "risk-search-dlq"
#: Seconds :func:`deploy` waits for the connector and its task to run.
DEPLOY_TIMEOUT = 60.0
_RUNNING = "RUNNING"
_FAILED = "FAILED"
_TIMEOUT = aiohttp.ClientTimeout(total=15)
#: The Connect worker's config provider for secrets: ``${env:NAME}`` in a connector config.
SECRETS_PROVIDER = "env"
SECRETS_PROVIDER_CLASS = "org.apache.kafka.common.config.provider.EnvVarConfigProvider"
#: The settings whose values the connector needs: the worker reads them from its environment
#: under the same variable names, and no other variable (its allowlist).
SECRET_SETTINGS = ("elasticsearch_password", "schema_registry_password")

Say = Callable[[str], None]


class ConnectorError(SearchError):
    """Connect or Elasticsearch is unreachable, refused the connector, or the connector failed."""


def searchable_topics(settings: Settings) -> list[str]:
    """The topics the connector indexes, with ``RISKENGINE_WORKER_TOPIC_SUFFIX`` appended."""
    names = topic_names(settings)
    return [names.analyzed_trades, names.alerts]


def secret_variable(field: str) -> str:
    """The environment variable of the secret setting ``field`` (``RISKENGINE_...``)."""
    if field not in SECRET_SETTINGS:
        raise ValueError(f"{field} is not one of the connector's secrets {SECRET_SETTINGS}")
    return PREFIX + field.upper()


def secret_reference(field: str) -> str:
    """What the connector config holds for the secret setting ``field``: a reference, not the value."""
    return f"${{{SECRETS_PROVIDER}:{secret_variable(field)}}}"


def worker_config_providers() -> dict[str, str]:
    """The Connect worker properties that resolve :func:`secret_reference` (the stack and the image).

    The allowlist limits the provider to the connector's secrets: a connector config cannot read
    any other variable of the worker's environment.
    """
    allowed = "|".join(secret_variable(field) for field in SECRET_SETTINGS)
    return {
        "config.providers": SECRETS_PROVIDER,
        f"config.providers.{SECRETS_PROVIDER}.class": SECRETS_PROVIDER_CLASS,
        f"config.providers.{SECRETS_PROVIDER}.param.allowlist.pattern": f"^({allowed})$",
    }


def connector_config(
    settings: Settings, name: str = DEFAULT_NAME, topics: Sequence[str] | None = None
) -> dict[str, str]:
    """The connector's config as Connect's REST API takes it (every value a string).

    ``topics`` defaults to :func:`searchable_topics`. URLs and user names are the settings' own:
    they must be what the Connect worker sees (``docker/compose.yml`` uses container host names).
    Passwords are :func:`secret_reference` placeholders the worker resolves from its environment,
    never their values.
    """
    config = {
        "name": name,
        "connector.class": CONNECTOR_CLASS,
        "tasks.max": "1",
        "topics": ",".join(topics if topics is not None else searchable_topics(settings)),
        "connection.url": settings.elasticsearch_url,
        "id.fields": ",".join(f"{topic}:{field}" for topic, field in ID_FIELDS.items()),
        "batch.size": "500",
        # Elasticsearch down, 429 or 5xx: the batch is re-delivered after this long, until it passes.
        "retry.backoff.ms": "1000",
        # A document Elasticsearch rejects (mapping conflict) goes to the dead-letter topic.
        "behavior.on.document.error": "log",
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        "value.converter": CONVERTER_CLASS,
        "value.converter.schema.registry.url": settings.schema_registry_url,
        # Undecodable records and rejected documents: logged and dead-lettered, not fatal; a
        # retriable failure (registry unreachable) is retried without limit instead of skipped.
        "errors.tolerance": "all",
        "errors.log.enable": "true",
        "errors.log.include.messages": "false",
        "errors.retry.timeout": "-1",
        "errors.retry.delay.max.ms": "10000",
        "errors.deadletterqueue.topic.name": dead_letter_topic(settings).name,
        "errors.deadletterqueue.topic.replication.factor": str(settings.topic_replication_factor),
        "errors.deadletterqueue.context.headers.enable": "true",
    }
    if settings.elasticsearch_username:
        config["connection.username"] = settings.elasticsearch_username
        config["connection.password"] = secret_reference("elasticsearch_password")
    if settings.schema_registry_username:
        config["value.converter.schema.registry.username"] = settings.schema_registry_username
        config["value.converter.schema.registry.password"] = secret_reference("schema_registry_password")
    return config


@dataclass(frozen=True)
class TaskStatus:
    """One task of a connector, as ``/connectors/{name}/status`` reports it."""

    id: int
    state: str
    worker_id: str
    trace: str = ""


@dataclass(frozen=True)
class ConnectorStatus:
    """A connector's state and its tasks'."""

    name: str
    state: str
    worker_id: str
    tasks: tuple[TaskStatus, ...]
    trace: str = ""

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ConnectorStatus:
        """Parse Connect's status document."""
        connector = body.get("connector", {})
        return cls(
            name=str(body.get("name", "")),
            state=str(connector.get("state", "UNKNOWN")),
            worker_id=str(connector.get("worker_id", "")),
            trace=str(connector.get("trace", "")),
            tasks=tuple(
                TaskStatus(
                    id=int(task.get("id", -1)),
                    state=str(task.get("state", "UNKNOWN")),
                    worker_id=str(task.get("worker_id", "")),
                    trace=str(task.get("trace", "")),
                )
                for task in body.get("tasks", [])
            ),
        )

    @property
    def running(self) -> bool:
        """The connector and at least one task run, and no task is in another state."""
        return (
            self.state == _RUNNING and bool(self.tasks) and all(task.state == _RUNNING for task in self.tasks)
        )

    def failure(self) -> str | None:
        """What failed (connector or task, with Connect's stack trace), or None."""
        if self.state == _FAILED:
            return f"connector {self.name} FAILED on {self.worker_id}:\n{self.trace}"
        for task in self.tasks:
            if task.state == _FAILED:
                return f"connector {self.name} task {task.id} FAILED on {task.worker_id}:\n{task.trace}"
        return None

    def describe(self) -> str:
        """One line per connector and task."""
        lines = [f"connector {self.name}: {self.state} on {self.worker_id}"]
        lines += [f"  task {task.id}: {task.state} on {task.worker_id}" for task in self.tasks]
        return "\n".join(lines)


class ConnectClient:
    """Kafka Connect's REST API at ``RISKENGINE_CONNECT_URL``; errors become :class:`ConnectorError`."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self._session = session
        self.url = url.rstrip("/")

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One call; returns (status, parsed JSON or None)."""
        try:
            async with self._session.request(method, self.url + path, json=body) as response:
                text = await response.text()
                try:
                    parsed = await response.json(content_type=None) if text else None
                except ValueError:
                    parsed = text
                return response.status, parsed
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ConnectorError(
                f"Kafka Connect at {self.url} is unreachable ({type(exc).__name__}: {exc}); "
                "start it with `riskengine stack up` or set RISKENGINE_CONNECT_URL"
            ) from exc

    async def put_config(self, name: str, config: dict[str, str]) -> bool:
        """Create or update ``name``; True when it was created. Retries 409 (a rebalance) briefly."""
        deadline = time.monotonic() + 30.0
        while True:
            status, body = await self.request("PUT", f"/connectors/{quote(name, safe='')}/config", config)
            if status in (200, 201):
                return status == 201
            if status == 409 and time.monotonic() < deadline:
                await asyncio.sleep(0.5)  # the worker group is rebalancing; it answers once settled
                continue
            raise ConnectorError(f"Kafka Connect refused connector {name} ({status}): {_message(body)}")

    async def status(self, name: str) -> ConnectorStatus | None:
        """The connector's status, or None when Connect does not know it."""
        status, body = await self.request("GET", f"/connectors/{quote(name, safe='')}/status")
        if status == 404:
            return None
        if status != 200 or not isinstance(body, dict):
            raise ConnectorError(f"Kafka Connect status of {name} failed ({status}): {_message(body)}")
        return ConnectorStatus.from_json(body)

    async def task_configs(self, name: str) -> list[dict[str, str]]:
        """The configs the connector's tasks were started with ([] while there are none)."""
        status, body = await self.request("GET", f"/connectors/{quote(name, safe='')}/tasks")
        if status != 200 or not isinstance(body, list):
            return []
        return [dict(task.get("config", {})) for task in body if isinstance(task, dict)]

    async def delete(self, name: str) -> bool:
        """Remove the connector; False when it did not exist."""
        status, body = await self.request("DELETE", f"/connectors/{quote(name, safe='')}")
        if status == 404:
            return False
        if status not in (200, 204):
            raise ConnectorError(f"Kafka Connect could not delete {name} ({status}): {_message(body)}")
        return True


def _message(body: Any) -> str:
    if isinstance(body, dict) and "message" in body:
        return str(body["message"])
    return str(body)[:500]


@asynccontextmanager
async def connect_client(settings: Settings) -> AsyncIterator[ConnectClient]:
    """A :class:`ConnectClient` for ``RISKENGINE_CONNECT_URL``."""
    async with aiohttp.ClientSession(timeout=_TIMEOUT) as session:
        yield ConnectClient(session, settings.connect_url)


@dataclass(frozen=True)
class TemplatesInstalled:
    """What :func:`install_templates` did."""

    #: The templates' names.
    names: list[str]
    #: Index -> the fields its mapping gained.
    fields_added: dict[str, list[str]]
    #: Index -> its replica count (before, after).
    replicas_changed: dict[str, tuple[int, int]]


async def install_templates(settings: Settings) -> TemplatesInstalled:
    """The index templates (:mod:`riskengine.search.index_templates`), before the connector makes an
    index; then, for the indices that already exist, the fields the templates gained since and the
    configured replica count."""
    try:
        async with elasticsearch_client(settings) as es:
            return TemplatesInstalled(
                await install_index_templates(es, settings),
                await add_missing_fields(es),
                await update_replicas(es, settings),
            )
    except elastic_transport.TransportError as exc:
        raise ConnectorError(
            f"Elasticsearch at {settings.elasticsearch_url} is unreachable ({exc}); "
            "start it with `riskengine stack up` or set RISKENGINE_ELASTICSEARCH_URL"
        ) from exc
    except ApiError as exc:
        raise ConnectorError(f"Elasticsearch refused the index templates: {exc}") from exc


def dead_letter_topic(settings: Settings) -> TopicSpec:
    """The connector's dead-letter topic, laid out like the engine's topics."""
    return TopicSpec(
        DEAD_LETTER_TOPIC + settings.worker_topic_suffix,
        settings.topic_partitions,
        settings.topic_replication_factor,
        {},
    )


async def create_dead_letter_topic(settings: Settings) -> str:
    """Create the dead-letter topic unless it exists (Connect would, but with its own layout)."""
    spec = dead_letter_topic(settings)
    try:
        return (await ensure_topics(settings, [spec]))[spec.name]
    except TopicLayoutError as exc:
        raise ConnectorError(str(exc)) from exc
    except (KafkaError, OSError) as exc:
        raise ConnectorError(
            f"Kafka at {settings.kafka_bootstrap_servers} is unreachable ({exc}); "
            "start it with `riskengine stack up` or set RISKENGINE_KAFKA_BOOTSTRAP_SERVERS"
        ) from exc


async def deploy(
    settings: Settings,
    name: str = DEFAULT_NAME,
    topics: Sequence[str] | None = None,
    wait_s: float = DEPLOY_TIMEOUT,
    say: Say | None = None,
) -> ConnectorStatus:
    """Install the index templates, create or update the connector, wait until it and its task run.

    Also adds fields the templates gained to existing indices' mappings (``priority`` of the
    alerts), gives them the configured replica count, and creates the dead-letter topic.
    Idempotent: deploying the same config again changes nothing. Raises :class:`ConnectorError`
    with Connect's stack trace when the connector or a task fails, or when it is not running after
    ``wait_s`` seconds.
    """
    report = say or (lambda _line: None)
    installed = await install_templates(settings)
    report(f"index templates installed: {', '.join(installed.names)}")
    for index, fields in installed.fields_added.items():
        report(f"index {index}: mapping gained {', '.join(fields)}")
    for index, (before, after) in installed.replicas_changed.items():
        report(f"index {index}: replicas {before} -> {after}")
    report(
        f"dead-letter topic {dead_letter_topic(settings).name}: {await create_dead_letter_topic(settings)}"
    )
    config = connector_config(settings, name=name, topics=topics)
    async with connect_client(settings) as connect:
        created = await connect.put_config(name, config)
        report(f"connector {name} {'created' if created else 'updated'} on {connect.url}")
        return await wait_running(connect, name, config, wait_s)


async def wait_running(
    connect: ConnectClient, name: str, config: dict[str, str], wait_s: float
) -> ConnectorStatus:
    """Wait until the connector and every task run ``config``; fail fast when one FAILED."""
    deadline = time.monotonic() + wait_s
    last: ConnectorStatus | None = None
    while time.monotonic() < deadline:
        last = await connect.status(name)
        if last is not None:
            failure = last.failure()
            if failure is not None:
                raise ConnectorError(failure)
            # After an update, the old tasks report RUNNING until Connect restarts them with the
            # new config: only tasks that carry every value of ours count.
            if last.running and _tasks_run(config, await connect.task_configs(name)):
                return last
        await asyncio.sleep(0.25)
    shown = last.describe() if last is not None else f"connector {name}: not known to Connect yet"
    raise ConnectorError(f"connector {name} not running after {wait_s:.0f} s:\n{shown}")


def _tasks_run(config: dict[str, str], tasks: list[dict[str, str]]) -> bool:
    return bool(tasks) and all(all(task.get(key) == value for key, value in config.items()) for task in tasks)


async def status(settings: Settings, name: str = DEFAULT_NAME) -> ConnectorStatus | None:
    """The connector's status, or None when it is not deployed."""
    async with connect_client(settings) as connect:
        return await connect.status(name)


async def delete(settings: Settings, name: str = DEFAULT_NAME) -> bool:
    """Remove the connector (its indices stay); False when it was not deployed."""
    async with connect_client(settings) as connect:
        return await connect.delete(name)
