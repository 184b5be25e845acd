"""docker/compose.yml serves the same ports and settings as the local stack's defaults."""

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from riskengine.settings import Settings

COMPOSE = Path(__file__).parents[2] / "docker" / "compose.yml"


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def _host_port(service: dict[str, Any]) -> int:
    (mapping,) = service["ports"]
    host, port, _container = mapping.split(":")
    assert host == "127.0.0.1", "compose services bind to 127.0.0.1 only"
    return int(port)


def test_every_service_is_on_the_port_the_settings_default_to():
    settings = Settings.from_env({})
    services = _compose()["services"]
    assert _host_port(services["kafka"]) == int(settings.kafka_bootstrap_servers.rsplit(":", 1)[1])
    assert _host_port(services["schema-registry"]) == urlsplit(settings.schema_registry_url).port
    assert _host_port(services["s3"]) == urlsplit(settings.s3_endpoint_url).port
    assert _host_port(services["elasticsearch"]) == urlsplit(settings.elasticsearch_url).port
    assert _host_port(services["kafka-connect"]) == 8083


def test_kafka_runs_in_kraft_mode_and_advertises_the_default_bootstrap():
    settings = Settings.from_env({})
    env = _compose()["services"]["kafka"]["environment"]
    assert "controller" in env["KAFKA_PROCESS_ROLES"]
    assert f"PLAINTEXT://{settings.kafka_bootstrap_servers}" in env["KAFKA_ADVERTISED_LISTENERS"]


def test_registry_serves_the_confluent_api_path_of_the_default_url():
    assert urlsplit(Settings.from_env({}).schema_registry_url).path == "/apis/ccompat/v7"
    assert "apicurio" in _compose()["services"]["schema-registry"]["image"]


def test_object_store_credentials_and_bucket_match_the_settings():
    settings = Settings.from_env({})
    compose = _compose()
    env = compose["services"]["s3"]["environment"]
    assert env["MINIO_ROOT_USER"] == settings.s3_access_key_id
    assert env["MINIO_ROOT_PASSWORD"] == settings.s3_secret_access_key.get()
    assert settings.s3_bucket in " ".join(compose["services"]["s3-bucket"]["command"])


def test_the_documented_worker_settings_are_real_settings_with_their_defaults():
    documented = _compose()["x-riskengine-settings"]
    assert Settings.from_env(documented) == Settings.from_env({})
