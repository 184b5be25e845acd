"""The settings object: defaults, parsing, validation, and that secrets never print."""

from pathlib import Path

import pytest

from riskengine.errors import SettingsError
from riskengine.settings import Secret, Settings


def test_defaults_point_at_the_local_stack():
    settings = Settings.from_env({})
    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert settings.schema_registry_url == "http://127.0.0.1:8081/apis/ccompat/v7"
    assert settings.s3_endpoint_url == "http://127.0.0.1:7070"
    assert settings.topic_partitions == 6


def test_values_are_parsed_to_their_types():
    settings = Settings.from_env(
        {
            "RISKENGINE_TOPIC_PARTITIONS": "12",
            "RISKENGINE_STACK_START_TIMEOUT": "30.5",
            "RISKENGINE_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
            "RISKENGINE_KAFKA_SASL_MECHANISM": "scram-sha-512",
            "RISKENGINE_KAFKA_SASL_USERNAME": "svc",
            "RISKENGINE_KAFKA_SASL_PASSWORD": "hunter2",
            "RISKENGINE_STACK_DIR": "/tmp/x",
        }
    )
    assert settings.topic_partitions == 12
    assert settings.stack_start_timeout == 30.5
    assert settings.kafka_security_protocol == "SASL_SSL"
    assert settings.kafka_sasl_mechanism == "SCRAM-SHA-512"
    assert settings.kafka_sasl_password.get() == "hunter2"
    assert settings.stack_dir == Path("/tmp/x")
    assert settings.kafka_uses_tls


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("RISKENGINE_TOPIC_PARTITIONS", "0", "positive integer"),
        ("RISKENGINE_TOPIC_PARTITIONS", "six", "invalid literal"),
        ("RISKENGINE_KAFKA_SECURITY_PROTOCOL", "TLS", "PLAINTEXT, SSL"),
        ("RISKENGINE_KAFKA_SASL_MECHANISM", "GSSAPI", "SCRAM-SHA-256"),
        ("RISKENGINE_KAFKA_BOOTSTRAP_SERVERS", "localhost", "host:port"),
        ("RISKENGINE_SCHEMA_REGISTRY_URL", "127.0.0.1:8081", "http(s) URL"),
        ("RISKENGINE_KAFKA_SSL_CAFILE", "/nonexistent/ca.pem", "does not exist"),
        ("RISKENGINE_LOG_LEVEL", "chatty", "debug, info"),
        ("RISKENGINE_STACK_START_TIMEOUT", "-1", "positive number"),
        ("RISKENGINE_WORKER_CHECKPOINT_INTERVAL", "1e300", "at most 60"),
        ("RISKENGINE_WORKER_CHECKPOINT_INTERVAL", "nan", ">= 0"),
    ],
)
def test_a_bad_value_names_the_setting(name, value, expected):
    with pytest.raises(SettingsError) as info:
        Settings.from_env({name: value})
    assert name in str(info.value)
    assert expected in str(info.value)


def test_an_unknown_setting_is_a_typo_not_silence():
    with pytest.raises(SettingsError, match=r"RISKENGINE_KAFKA_BOOTSTRAP_SERVER\b"):
        Settings.from_env({"RISKENGINE_KAFKA_BOOTSTRAP_SERVER": "127.0.0.1:9092"})


def test_sasl_needs_credentials():
    with pytest.raises(SettingsError, match="RISKENGINE_KAFKA_SASL_USERNAME"):
        Settings.from_env({"RISKENGINE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})


def test_client_certificate_and_key_go_together(tmp_path):
    cert = tmp_path / "client.pem"
    cert.write_text("x")
    with pytest.raises(SettingsError, match="RISKENGINE_KAFKA_SSL_KEYFILE"):
        Settings.from_env({"RISKENGINE_KAFKA_SSL_CERTFILE": str(cert)})


def test_secrets_never_print():
    settings = Settings.from_env(
        {
            "RISKENGINE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "RISKENGINE_KAFKA_SASL_USERNAME": "svc",
            "RISKENGINE_KAFKA_SASL_PASSWORD": "hunter2",
            "RISKENGINE_SCHEMA_REGISTRY_USERNAME": "reg",
            "RISKENGINE_SCHEMA_REGISTRY_PASSWORD": "reg-pass",
            "RISKENGINE_S3_SECRET_ACCESS_KEY": "s3-pass",
            "RISKENGINE_ELASTICSEARCH_PASSWORD": "es-pass",
        }
    )
    shown = repr(settings) + str(settings.describe())
    for secret in ("hunter2", "reg-pass", "s3-pass", "es-pass"):
        assert secret not in shown
    assert settings.describe()["RISKENGINE_KAFKA_SASL_USERNAME"] == "svc"


def test_secret_compares_by_value_and_masks():
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert "a" not in repr(Secret("a"))
    assert not Secret("")


def test_readme_documents_every_setting():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for name, default, _doc in Settings.documentation():
        assert f"`{name}`" in readme, f"{name} missing from the README settings table"
        if default and not name.endswith(("PASSWORD", "SECRET_ACCESS_KEY")):
            assert f"`{default}`" in readme, f"default of {name} missing from the README"
