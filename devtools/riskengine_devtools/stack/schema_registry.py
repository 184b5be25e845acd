"""The schema registry: Apicurio Registry 3, which serves the Confluent REST API at /apis/ccompat/v7.

Maven Central publishes its Quarkus fast-jar bundle (``tar.gz``, classifier ``all``). Apicurio 3.3
is compiled for Java 21, so it runs on the newest JDK found (Temurin 25 here), not the default 17.
Storage is ``kafkasql``: the registry keeps its schemas in a topic of the stack's own Kafka, so
schema ids stay valid for as long as the messages that carry them (an in-memory registry would
hand out the same ids to other schemas after a restart).
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import aiohttp

from riskengine_devtools.stack.service import (
    Address,
    Say,
    Service,
    StackConfigError,
    StackError,
    address_from_url,
)
from riskengine_devtools.stack.tools import find_java, maven_fetch, staged_dir

VERSION = "3.3.3"
ARTIFACT = f"io.apicurio:apicurio-registry-app:{VERSION}:tar.gz:all"
CCOMPAT_PATH = "/apis/ccompat/v7"
JAVA_MINIMUM = 21
HEAP = ("-Xms64m", "-Xmx384m")
#: Global compatibility level, set after every start: the registry then rejects (409) a new schema
#: version that readers of the previous one could not use.
COMPATIBILITY = "BACKWARD"
_JSON = "application/vnd.schemaregistry.v1+json"
_TIMEOUT = aiohttp.ClientTimeout(total=5)


def apicurio_properties(address: Address, management: Address, kafka: str) -> list[str]:
    """The ``-D`` options: both listeners on loopback, storage in Kafka, deletes allowed (tests clean up)."""
    properties = {
        "apicurio.storage.kind": "kafkasql",
        "apicurio.kafkasql.bootstrap.servers": kafka,
        "quarkus.http.host": address.host,
        "quarkus.http.port": str(address.port),
        "quarkus.management.host": management.host,
        "quarkus.management.port": str(management.port),
        "apicurio.rest.deletion.artifact.enabled": "true",
        "apicurio.rest.deletion.artifact-version.enabled": "true",
        "apicurio.rest.deletion.group.enabled": "true",
    }
    return [f"-D{key}={value}" for key, value in properties.items()]


class SchemaRegistry(Service):
    """Avro contracts for every topic, through the Confluent-compatible API."""

    name = "registry"
    system_user = "riskengine-registry"

    @property
    def url(self) -> str:
        """The Confluent API base URL clients use (the setting, without a trailing slash)."""
        return self.settings.schema_registry_url.rstrip("/")

    @property
    def address(self) -> Address:
        address = address_from_url("schema_registry_url", self.url)
        if not self.url.endswith(CCOMPAT_PATH):
            raise StackConfigError(
                f"RISKENGINE_SCHEMA_REGISTRY_URL={self.url!r}: the local registry (Apicurio) serves the "
                f"Confluent API at http://{address}{CCOMPAT_PATH}"
            )
        return address

    @property
    def management(self) -> Address:
        """Quarkus' management listener (health, metrics): the HTTP port + 1, as Kafka's controller.

        Its default, 9000, collides too often; deriving it lets a second stack run beside the
        first on other ports.
        """
        return Address(self.address.host, self.address.port + 1)

    @property
    def bound_addresses(self) -> tuple[Address, ...]:
        return (self.address, self.management)

    @property
    def product(self) -> str:
        return f"Apicurio Registry {VERSION}"

    @property
    def home(self) -> Path:
        """The unpacked Quarkus application."""
        return self.paths.cache_dir / f"apicurio-registry-{VERSION}"

    async def install(self, say: Say) -> bool:
        if (self.home / "quarkus-run.jar").is_file():
            return False
        say(f"{self.name:9} downloading {ARTIFACT} with Maven (log {self.install_log})")
        tarball = await maven_fetch(ARTIFACT, cache_dir=self.paths.cache_dir, log=self.install_log, say=say)
        with staged_dir(self.home) as partial:
            try:
                with tarfile.open(tarball) as archive:
                    archive.extractall(partial, filter="data")
            except (OSError, tarfile.TarError) as exc:
                raise StackError(f"unpacking {tarball} ({ARTIFACT}): {exc}") from None
            if not (partial / "quarkus-run.jar").is_file():
                raise StackError(f"{ARTIFACT} holds no quarkus-run.jar at its top level")
        return True

    def command(self) -> list[str]:
        return [
            find_java(JAVA_MINIMUM),
            *HEAP,
            "-XX:+ExitOnOutOfMemoryError",
            *apicurio_properties(self.address, self.management, self.settings.kafka_bootstrap_servers),
            "-jar",
            str(self.home / "quarkus-run.jar"),
        ]

    async def probe(self) -> bool:
        """Ready once the API answers and Quarkus' readiness check is UP.

        The HTTP listener opens before the kafkasql storage has replayed its journal topic: until
        then the API lists what was replayed so far and a write waits for the replay (10 s after
        the listener opened, with the 6,144 journal records this machine's earlier runs left, so
        the set-up's PUT timed out). The readiness check (``PersistenceSimpleReadinessCheck``)
        answers 503 until the replay is done.
        """
        try:
            async with aiohttp.ClientSession(timeout=_TIMEOUT) as session:
                async with session.get(f"http://{self.management}/health/ready") as response:
                    if response.status != 200:
                        return False
                async with session.get(f"{self.url}/subjects") as response:
                    return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def configure(self) -> str:
        body = json.dumps({"compatibility": COMPATIBILITY})
        async with aiohttp.ClientSession(timeout=_TIMEOUT, headers={"Content-Type": _JSON}) as session:
            async with session.put(f"{self.url}/config", data=body) as response:
                if response.status != 200:
                    raise StackError(
                        f"PUT {self.url}/config answered {response.status}: {await response.text()}"
                    )
            async with session.get(f"{self.url}/config") as response:
                level = (await response.json(content_type=None)).get("compatibilityLevel")
        if level != COMPATIBILITY:
            raise StackError(f"{self.url}/config reports compatibility {level}, not {COMPATIBILITY}")
        return f"global compatibility {COMPATIBILITY}"
