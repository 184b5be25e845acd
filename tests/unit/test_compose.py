"""docker/compose.yml serves the same ports and settings as the local stack's defaults."""

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from riskengine.search.index_templates import TEMPLATES, index_template
from riskengine.search.sink_connector import (
    DEFAULT_NAME,
    SECRET_SETTINGS,
    connector_config,
    secret_variable,
    worker_config_providers,
)
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
    assert _host_port(services["kafka-connect"]) == urlsplit(settings.connect_url).port


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


#: How Kafka Connect reaches Elasticsearch and the registry inside the compose network.
CONTAINER_URLS = {
    "RISKENGINE_ELASTICSEARCH_URL": "http://elasticsearch:9200",
    "RISKENGINE_SCHEMA_REGISTRY_URL": "http://schema-registry:8080/apis/ccompat/v7",
}


def test_the_connector_block_is_connector_config_with_container_host_names():
    block = _compose()["x-riskengine-connector"]
    config = json.loads(block["config"])
    assert config == connector_config(Settings.from_env(CONTAINER_URLS))
    # Apart from the two URLs, exactly what `riskengine connector deploy` sends with the defaults.
    local = connector_config(Settings.from_env({}))
    assert {key for key in config if config[key] != local[key]} == {
        "connection.url",
        "value.converter.schema.registry.url",
    }
    # The registry container serves on 8080 (published on 8081 for the host).
    assert _compose()["services"]["schema-registry"]["ports"] == ["127.0.0.1:8081:8080"]


def test_the_index_templates_block_is_what_install_index_templates_puts():
    templates = _compose()["x-riskengine-connector"]["index-templates"]
    assert set(templates) == set(TEMPLATES)
    for name, (pattern, mappings) in TEMPLATES.items():
        # With the default shards and replicas (a single Elasticsearch node here too: green).
        assert json.loads(templates[name]) == index_template(pattern, mappings, Settings.from_env({}))


def test_connector_deploy_puts_the_blocks_and_connect_loads_the_built_plugin():
    compose = _compose()
    services = compose["services"]
    deploy = services["connector-deploy"]
    env, command = deploy["environment"], deploy["command"][0]
    block = compose["x-riskengine-connector"]
    assert env["CONNECTOR_CONFIG"] == block["config"]
    assert f"/connectors/{DEFAULT_NAME}/config" in command
    for variable, name in (
        ("TEMPLATE_TRADES", "riskengine-analyzed-trades"),
        ("TEMPLATE_ALERTS", "riskengine-alerts"),
    ):
        assert env[variable] == block["index-templates"][name]
        assert f'"$${variable}" http://elasticsearch:9200/_index_template/{name}' in command
    # Connect's image puts the plugin it builds where the worker's plugin.path looks.
    connect = services["kafka-connect"]
    dockerfile = (COMPOSE.parent / Path(connect["build"]["dockerfile"]).name).read_text()
    assert "/plugin /opt/connectors/riskengine-elasticsearch-sink" in dockerfile
    properties = (COMPOSE.parent / "connect-distributed.properties").read_text()
    assert "plugin.path=/opt/connectors" in properties.splitlines()
    assert "/opt/riskengine/connect-distributed.properties" in dockerfile
    assert deploy["depends_on"]["kafka-connect"] == {"condition": "service_healthy"}


def test_the_connect_container_resolves_password_references_from_its_environment():
    properties = (COMPOSE.parent / "connect-distributed.properties").read_text().splitlines()
    for key, value in worker_config_providers().items():
        assert f"{key}={value}" in properties
    environment = _compose()["services"]["kafka-connect"]["environment"]
    for field in SECRET_SETTINGS:
        variable = secret_variable(field)
        # Passed on from the shell that runs compose, never written here.
        assert environment[variable] == f"${{{variable}:-}}"


ENGINE_SERVICES = ("setup", "worker-1", "worker-2", "producer", "dashboard")


def _engine_settings(environment: dict[str, str]) -> Settings:
    """The settings a container of the engine image reads (its other variables are the image's)."""
    return Settings.from_env({k: v for k, v in environment.items() if k.startswith("RISKENGINE_")})


def test_the_engine_runs_in_compose_from_the_engine_image_with_real_settings():
    services = _compose()["services"]
    for name in ENGINE_SERVICES:
        service = services[name]
        assert service["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}, name
        # Every RISKENGINE_* the file sets is a setting with a valid value (an unknown one raises).
        settings = _engine_settings(service["environment"])
        assert settings.kafka_bootstrap_servers == "kafka:29092", name
    assert [services[w]["command"][0] for w in ("worker-1", "worker-2")] == ["worker", "worker"]


def test_each_worker_is_reachable_where_it_advertises_and_checks_its_own_health():
    services = _compose()["services"]
    dashboard = _engine_settings(services["dashboard"]["environment"])
    urls = []
    for name in ("worker-1", "worker-2"):
        service = services[name]
        port = int(service["command"][service["command"].index("--web-port") + 1])
        settings = _engine_settings(service["environment"])
        assert settings.worker_web_host == service["hostname"] == name
        assert settings.worker_web_bind == "0.0.0.0"  # so the health check reaches it on 127.0.0.1
        assert service["environment"]["HEALTHCHECK_URL"] == f"http://127.0.0.1:{port}/health"
        assert _host_port(service) == port
        assert service["volumes"] == [f"{name}-data:/var/lib/riskengine"]
        urls.append(f"http://{name}:{port}")
    assert dashboard.dashboard_worker_urls.split(",") == urls


def test_the_producer_and_dashboard_listen_on_the_published_ports():
    services = _compose()["services"]
    producer = _engine_settings(services["producer"]["environment"])
    assert _host_port(services["producer"]) == producer.producer_port
    assert services["producer"]["environment"]["HEALTHCHECK_URL"].endswith(
        f":{producer.producer_port}/health"
    )
    dashboard = _engine_settings(services["dashboard"]["environment"])
    assert _host_port(services["dashboard"]) == dashboard.dashboard_port
    assert "0.0.0.0" == producer.producer_host == dashboard.dashboard_host  # inside their containers
    start = services["mock-trading"]["command"][-1]
    assert start.startswith(f"http://producer:{producer.producer_port}/api/admin/mock-trading/start")


def test_the_container_settings_block_is_what_the_engine_services_share():
    compose = _compose()
    shared = compose["x-riskengine-container-settings"]
    for name in ENGINE_SERVICES:
        environment = compose["services"][name]["environment"]
        assert {k: environment[k] for k in shared} == shared, name
