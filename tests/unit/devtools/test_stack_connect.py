"""The Kafka Connect stack service without a server: address, rendered config, command, the build."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest

from riskengine.search.sink_connector import CONNECTOR_CLASS, CONVERTER_CLASS, worker_config_providers
from riskengine.settings import Secret, Settings
from riskengine_devtools.stack.connect import (
    PLUGIN_NAME,
    SOURCES,
    KafkaConnect,
    connect_properties,
    source_hash,
)
from riskengine_devtools.stack.kafka import POM, kafka_version, packaged_text
from riskengine_devtools.stack.service import Address, StackConfigError, StackPaths

_MAVEN = {"m": "http://maven.apache.org/POM/4.0.0"}


@pytest.fixture
def service(settings: Settings, paths: StackPaths) -> KafkaConnect:
    return KafkaConnect(settings, paths)


def _properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_rest_listens_where_the_setting_points(settings: Settings) -> None:
    paths = StackPaths.from_settings(settings)
    assert KafkaConnect(settings, paths).address == Address("127.0.0.1", 8083)
    assert KafkaConnect(replace(settings, connect_url="http://localhost:18083"), paths).address == Address(
        "127.0.0.1", 18083
    )
    remote = KafkaConnect(replace(settings, connect_url="http://connect.prod:8083"), paths)
    with pytest.raises(StackConfigError, match="RISKENGINE_CONNECT_URL"):
        _ = remote.address


def test_the_worker_is_one_local_distributed_node_loading_only_our_plugin(tmp_path: Path) -> None:
    props = _properties(
        connect_properties(Address("127.0.0.1", 9092), Address("127.0.0.1", 8083), tmp_path / "plugins")
    )
    assert props["bootstrap.servers"] == "127.0.0.1:9092"
    assert props["listeners"] == "http://127.0.0.1:8083"
    assert props["rest.advertised.host.name"] == "127.0.0.1"
    assert props["plugin.path"] == str(tmp_path / "plugins")
    assert props["plugin.discovery"] == "service_load"
    for store in ("config", "offset", "status"):
        assert props[f"{store}.storage.replication.factor"] == "1"
        assert props[f"{store}.storage.topic"].startswith("riskengine-connect-")


def test_the_worker_resolves_the_connectors_password_references(tmp_path: Path) -> None:
    props = _properties(
        connect_properties(Address("127.0.0.1", 9092), Address("127.0.0.1", 8083), tmp_path / "plugins")
    )
    assert worker_config_providers().items() <= props.items()
    assert props["config.providers.env.class"].endswith("EnvVarConfigProvider")


def test_the_worker_gets_the_passwords_from_the_settings(settings: Settings, paths: StackPaths) -> None:
    secret = replace(
        settings,
        elasticsearch_password=Secret("es-secret"),
        schema_registry_password=Secret("sr-secret"),
    )
    assert KafkaConnect(secret, paths).environment() == {
        "RISKENGINE_ELASTICSEARCH_PASSWORD": "es-secret",
        "RISKENGINE_SCHEMA_REGISTRY_PASSWORD": "sr-secret",
    }


def test_the_command_runs_connect_distributed_on_the_kafka_classpath_with_512_mb(
    service: KafkaConnect, settings: Settings
) -> None:
    argv = service.command()
    assert "-Xmx512m" in argv
    assert argv[argv.index("-cp") + 1] == f"{settings.cache_dir.absolute()}/kafka-4.1.1/libs/*"
    assert argv[-2:] == [
        "org.apache.kafka.connect.cli.ConnectDistributed",
        str(service.conf_dir / "connect-distributed.properties"),
    ]


def test_the_plugin_folder_is_named_after_the_sources(service: KafkaConnect, settings: Settings) -> None:
    assert service.build_id == source_hash(SOURCES)
    assert service.plugin_home == settings.cache_dir.absolute() / f"{PLUGIN_NAME}-{service.build_id}"
    assert service.plugin_path == service.plugin_home / "plugins"
    assert service.build_id in service.product


def test_the_source_hash_follows_contents_and_names(tmp_path: Path) -> None:
    (tmp_path / "src" / "main").mkdir(parents=True)
    (tmp_path / "pom.xml").write_text("<project/>")
    (tmp_path / "src" / "main" / "A.java").write_text("class A {}")
    first = source_hash(tmp_path)
    assert source_hash(tmp_path) == first
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "out.jar").write_bytes(b"built")
    assert source_hash(tmp_path) == first, "build output is not a source"
    (tmp_path / "src" / "main" / "A.java").write_text("class A { }")
    changed = source_hash(tmp_path)
    assert changed != first
    (tmp_path / "src" / "main" / "A.java").rename(tmp_path / "src" / "main" / "B.java")
    assert source_hash(tmp_path) not in (first, changed)


def test_the_plugin_builds_against_the_stacks_kafka_for_java_17() -> None:
    pom = ET.parse(SOURCES / "pom.xml").getroot()
    assert pom.findtext("m:properties/m:kafka.version", namespaces=_MAVEN) == kafka_version(
        packaged_text(POM)
    )
    assert pom.findtext("m:properties/m:maven.compiler.release", namespaces=_MAVEN) == "17"
    scopes = {
        dependency.findtext("m:artifactId", namespaces=_MAVEN): dependency.findtext(
            "m:scope", namespaces=_MAVEN
        )
        for dependency in pom.iterfind("m:dependencies/m:dependency", _MAVEN)
    }
    # What the Connect runtime carries must not be packaged again into the plugin.
    assert scopes["connect-api"] == scopes["jackson-databind"] == scopes["slf4j-api"] == "provided"
    assert scopes["avro"] is None


def test_the_kafka_classpath_carries_connect() -> None:
    pom = packaged_text(POM)
    assert "<artifactId>connect-runtime</artifactId>" in pom
    assert "<artifactId>connect-json</artifactId>" in pom


def test_the_plugin_declares_the_classes_the_deployment_names() -> None:
    services = SOURCES / "src" / "main" / "resources" / "META-INF" / "services"
    assert (services / "org.apache.kafka.connect.sink.SinkConnector").read_text().split() == [CONNECTOR_CLASS]
    assert (services / "org.apache.kafka.connect.storage.Converter").read_text().split() == [CONVERTER_CLASS]
    for name in (CONNECTOR_CLASS, CONVERTER_CLASS):
        assert (SOURCES / "src" / "main" / "java" / (name.replace(".", "/") + ".java")).is_file()
