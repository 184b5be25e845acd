"""Integration tests run against the real local stack (`riskengine stack up`; `make test` starts it)."""

import socket
import uuid
from urllib.parse import urlsplit

import pytest

from riskengine.settings import Settings

pytestmark = pytest.mark.integration


def pytest_collection_modifyitems(items):
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def settings() -> Settings:
    """The settings every integration test uses; fails fast when the stack is not up."""
    settings = Settings.from_env()
    host, port = settings.kafka_bootstrap_servers.split(",")[0].rsplit(":", 1)
    endpoints = {
        "kafka": (host, int(port)),
        "schema registry": (
            urlsplit(settings.schema_registry_url).hostname,
            urlsplit(settings.schema_registry_url).port,
        ),
        "s3": (urlsplit(settings.s3_endpoint_url).hostname, urlsplit(settings.s3_endpoint_url).port),
    }
    down = [
        f"{name} at {h}:{p}" for name, (h, p) in endpoints.items() if not _reachable(str(h), int(p or 80))
    ]
    if down:
        pytest.fail(f"stack not reachable ({', '.join(down)}): run `riskengine stack up` or `make test`")
    return settings


@pytest.fixture
def unique() -> str:
    """A suffix that keeps one test's topics and subjects apart from every other run's."""
    return uuid.uuid4().hex[:10]
