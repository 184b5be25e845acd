"""Integration tests run against the real local stack (`riskengine stack up`; `make test` starts it)."""

import asyncio
import socket
import uuid
from collections.abc import Iterator
from urllib.parse import quote, urlsplit

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from riskengine.connections import client_options
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


#: Every suffix handed out by `unique` in this session: what the session's cleanup removes.
ISSUED: list[str] = []


@pytest.fixture
def unique() -> str:
    """A suffix that keeps one test's topics and subjects apart from every other run's."""
    suffix = uuid.uuid4().hex[:10]
    ISSUED.append(suffix)
    return suffix


def leftovers(names: list[str], issued: list[str]) -> list[str]:
    """The names that carry one of the session's suffixes (topics, changelogs, subjects)."""
    return sorted(name for name in names if any(suffix in name for suffix in issued))


async def remove_leftovers(settings: Settings, issued: list[str]) -> tuple[list[str], list[str]]:
    """Delete the topics and registry subjects whose names carry one of ``issued``."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        topics = leftovers(list(await admin.list_topics()), issued)
        for start in range(0, len(topics), 100):
            await admin.delete_topics(topics[start : start + 100])
    finally:
        await admin.close()
    url = settings.schema_registry_url
    auth = None
    if settings.schema_registry_username:
        auth = (settings.schema_registry_username, settings.schema_registry_password.get())
    async with httpx.AsyncClient(auth=auth, timeout=10.0) as registry:
        subjects = leftovers((await registry.get(f"{url}/subjects")).json(), issued)
        for subject in subjects:
            # Soft delete, then permanent: the Confluent API wants both steps.
            await registry.delete(f"{url}/subjects/{quote(subject, safe='')}")
            await registry.delete(f"{url}/subjects/{quote(subject, safe='')}", params={"permanent": "true"})
    return topics, subjects


@pytest.fixture(scope="session", autouse=True)
def _remove_what_the_session_created(settings: Settings) -> Iterator[None]:
    """After the session, delete the topics and subjects the tests made: a broker that collects
    every run's topics starts slower each time."""
    yield
    if not ISSUED:
        return
    topics, subjects = asyncio.run(remove_leftovers(settings, ISSUED))
    print(f"\nremoved {len(topics)} test topics and {len(subjects)} test subjects")
