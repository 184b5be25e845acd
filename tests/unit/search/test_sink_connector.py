"""The Elasticsearch sink's connector config, status parsing and CLI, without services."""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import json
import re
import socket
from dataclasses import replace

import pytest

from riskengine.cli import build_parser
from riskengine.cli.connector_command import run_config, run_status
from riskengine.contracts.topics import topic_names
from riskengine.search.index_templates import TEMPLATES
from riskengine.search.sink_connector import (
    CONNECTOR_CLASS,
    CONVERTER_CLASS,
    DEFAULT_NAME,
    ConnectorError,
    ConnectorStatus,
    _tasks_run,
    connector_config,
    dead_letter_topic,
    searchable_topics,
    secret_reference,
    status,
    worker_config_providers,
)
from riskengine.settings import Secret, Settings


def test_the_default_config_indexes_both_topics_by_their_ids_through_the_registry() -> None:
    config = connector_config(Settings.from_env({}))
    assert config["name"] == DEFAULT_NAME
    assert config["connector.class"] == CONNECTOR_CLASS
    assert config["topics"] == "risk-analyzed-trades,risk-alerts"
    assert config["connection.url"] == "http://127.0.0.1:9200"
    assert config["id.fields"] == "risk-analyzed-trades:originalTrade.tradeId,risk-alerts:alertId"
    assert config["value.converter"] == CONVERTER_CLASS
    assert config["value.converter.schema.registry.url"] == "http://127.0.0.1:8081/apis/ccompat/v7"
    assert config["key.converter"] == "org.apache.kafka.connect.storage.StringConverter"
    # Bad records are dead-lettered, retriable failures retried without limit.
    assert config["errors.tolerance"] == "all"
    assert config["errors.retry.timeout"] == "-1"
    assert config["errors.deadletterqueue.topic.name"] == "risk-search-dlq"
    assert all(isinstance(value, str) for value in config.values()), "Connect's REST API takes strings"
    assert not any("password" in key or "username" in key for key in config)


def test_suffixed_topics_are_the_workers_and_keep_the_unsuffixed_id_prefixes() -> None:
    settings = replace(Settings.from_env({}), worker_topic_suffix="-t123", topic_replication_factor=3)
    names = topic_names(settings)
    assert searchable_topics(settings) == [names.analyzed_trades, names.alerts]
    config = connector_config(settings, name="mine")
    assert config["name"] == "mine"
    assert config["topics"] == "risk-analyzed-trades-t123,risk-alerts-t123"
    # The connector matches id rules as topic-name prefixes: one config serves every suffix.
    for topic in searchable_topics(settings):
        prefixes = [rule.split(":")[0] for rule in config["id.fields"].split(",")]
        assert sum(topic.startswith(prefix) for prefix in prefixes) == 1
    assert config["errors.deadletterqueue.topic.name"] == "risk-search-dlq-t123"
    assert config["errors.deadletterqueue.topic.replication.factor"] == "3"
    spec = dead_letter_topic(settings)
    assert (spec.name, spec.partitions, spec.replication_factor) == ("risk-search-dlq-t123", 6, 3)


def test_the_index_templates_cover_the_suffixed_indices_each_once() -> None:
    settings = replace(Settings.from_env({}), worker_topic_suffix="-abc")
    for index in searchable_topics(settings):
        matching = [name for name, (pattern, _) in TEMPLATES.items() if fnmatch.fnmatchcase(index, pattern)]
        assert len(matching) == 1, (index, matching)


def _with_credentials() -> Settings:
    return replace(
        Settings.from_env({}),
        elasticsearch_username="indexer",
        elasticsearch_password=Secret("es-secret"),
        schema_registry_username="reader",
        schema_registry_password=Secret("sr-secret"),
    )


def test_explicit_topics_and_user_names_are_passed_on_and_passwords_by_reference() -> None:
    config = connector_config(_with_credentials(), topics=["risk-alerts-x"])
    assert config["topics"] == "risk-alerts-x"
    assert config["connection.username"] == "indexer"
    assert config["connection.password"] == "${env:RISKENGINE_ELASTICSEARCH_PASSWORD}"
    assert config["value.converter.schema.registry.username"] == "reader"
    assert config["value.converter.schema.registry.password"] == "${env:RISKENGINE_SCHEMA_REGISTRY_PASSWORD}"


def test_no_secret_value_is_anywhere_in_the_config() -> None:
    # Connect stores the config in plain text in its config topic and serves it on its REST API.
    text = json.dumps(connector_config(_with_credentials()))
    assert "es-secret" not in text and "sr-secret" not in text


def test_the_worker_resolves_exactly_the_referenced_variables_from_its_environment() -> None:
    providers = worker_config_providers()
    assert providers["config.providers"] == "env"
    assert providers["config.providers.env.class"] == (
        "org.apache.kafka.common.config.provider.EnvVarConfigProvider"
    )
    allowlist = re.compile(providers["config.providers.env.param.allowlist.pattern"])
    references = [value for value in connector_config(_with_credentials()).values() if "${" in value]
    variables = [value.removeprefix("${env:").removesuffix("}") for value in references]
    assert len(variables) == 2
    settings = {name for name, _default, _doc in Settings.documentation()}
    for variable in variables:
        assert allowlist.fullmatch(variable) and variable in settings, variable
    for other in ("PATH", "HOME", "RISKENGINE_S3_SECRET_ACCESS_KEY", "XRISKENGINE_ELASTICSEARCH_PASSWORD"):
        assert not allowlist.fullmatch(other), other


def test_only_secret_settings_have_a_reference() -> None:
    assert secret_reference("elasticsearch_password") == "${env:RISKENGINE_ELASTICSEARCH_PASSWORD}"
    with pytest.raises(ValueError, match="not one of the connector's secrets"):
        secret_reference("elasticsearch_url")


def test_the_config_command_prints_references_not_passwords(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_config(argparse.Namespace(name=DEFAULT_NAME), _with_credentials()) == 0
    out = capsys.readouterr().out
    shown = json.loads(out)
    assert shown["connection.password"] == "${env:RISKENGINE_ELASTICSEARCH_PASSWORD}"
    assert shown["connection.username"] == "indexer"
    assert "es-secret" not in out and "sr-secret" not in out


def _status(connector: str, *tasks: str, trace: str = "") -> ConnectorStatus:
    return ConnectorStatus.from_json(
        {
            "name": "sink",
            "connector": {"state": connector, "worker_id": "127.0.0.1:8083"},
            "tasks": [
                {"id": n, "state": state, "worker_id": "127.0.0.1:8083", "trace": trace}
                for n, state in enumerate(tasks)
            ],
        }
    )


def test_status_is_running_only_with_every_task_running() -> None:
    assert _status("RUNNING", "RUNNING").running
    assert not _status("RUNNING").running, "no task yet"
    assert not _status("RUNNING", "RUNNING", "UNASSIGNED").running
    assert not _status("PAUSED", "RUNNING").running
    assert _status("RUNNING", "RUNNING").failure() is None


def test_a_failed_task_is_reported_with_its_trace() -> None:
    failed = _status("RUNNING", "RUNNING", "FAILED", trace="ConnectException: boom\n\tat x")
    failure = failed.failure()
    assert failure is not None and "task 1 FAILED" in failure and "ConnectException: boom" in failure
    assert "task 1: FAILED" in failed.describe()


def test_tasks_count_only_once_they_carry_the_deployed_config() -> None:
    config = {"topics": "a", "connection.url": "http://x:9200"}
    assert _tasks_run(config, [dict(config, **{"task.class": "T"})])
    assert not _tasks_run(config, [{"topics": "old", "connection.url": "http://x:9200"}])
    assert not _tasks_run(config, [])


def test_connect_unreachable_names_the_setting(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = replace(Settings.from_env({}), connect_url=f"http://127.0.0.1:{port}")
    with pytest.raises(ConnectorError, match="RISKENGINE_CONNECT_URL"):
        asyncio.run(status(settings))
    assert run_status(argparse.Namespace(name=DEFAULT_NAME), settings) == 1
    assert "is unreachable" in capsys.readouterr().out


def test_the_cli_parses_connector_actions() -> None:
    args = build_parser().parse_args(["connector", "deploy", "--name", "x", "--timeout", "5"])
    assert (args.action, args.name, args.timeout) == ("deploy", "x", 5.0)
    for action in ("status", "delete", "config"):
        assert build_parser().parse_args(["connector", action]).name == DEFAULT_NAME
