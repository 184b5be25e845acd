"""Apache Kafka, one node in KRaft combined mode (broker and controller in one JVM).

The classpath comes from Maven Central through ``kafka-pom.xml``; the controller listens on the
broker port + 1. Storage is formatted once, on the first start.
"""

from __future__ import annotations

import base64
import logging
import uuid
import xml.etree.ElementTree as ET
from importlib import resources
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from riskengine_devtools.stack.procs import accepts_connections
from riskengine_devtools.stack.service import (
    LOOPBACK,
    Address,
    Say,
    Service,
    StackError,
    address_from_bootstrap,
)
from riskengine_devtools.stack.tools import find_java, maven, rendered_config, run_logged, staged_dir

POM = "kafka-pom.xml"
LOG4J = "kafka-log4j2.properties"
TOOLS_LOG4J = "kafka-tools-log4j2.properties"
#: Kafka's command-line tools, as Kafka's own bin/ names them -> their main class (kafka-tools, and
#: the core jar for kafka-configs). `stack up` writes one wrapper each into <stack dir>/bin.
TOOLS = {
    "kafka-topics.sh": "org.apache.kafka.tools.TopicCommand",
    "kafka-console-consumer.sh": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "kafka-console-producer.sh": "org.apache.kafka.tools.ConsoleProducer",
    "kafka-consumer-groups.sh": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "kafka-get-offsets.sh": "org.apache.kafka.tools.GetOffsetShell",
    "kafka-configs.sh": "kafka.admin.ConfigCommand",
}
_MAVEN_NS = {"m": "http://maven.apache.org/POM/4.0.0"}
#: Kafka 4 needs Java 17 for the broker.
JAVA_MINIMUM = 17
#: Kafka's own check: at least 512 MB; the stack budgets 1 GB.
HEAP = ("-Xms256m", "-Xmx1g")


def packaged_text(name: str) -> str:
    """A file shipped in this package (the pom, the log4j configuration)."""
    return resources.files("riskengine_devtools.stack").joinpath(name).read_text()


def kafka_version(pom: str) -> str:
    """The ``kafka.version`` property of the classpath pom."""
    node = ET.fromstring(pom).find("m:properties/m:kafka.version", _MAVEN_NS)
    if node is None or not (node.text or "").strip():
        raise StackError(f"{POM} has no <kafka.version> property")
    return (node.text or "").strip()


def server_properties(broker: Address, controller: Address, log_dir: Path) -> str:
    """``server.properties`` of a single combined-mode node; replication factors are all 1."""
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{controller}",
        "listeners": f"PLAINTEXT://{broker},CONTROLLER://{controller}",
        "advertised.listeners": f"PLAINTEXT://{broker}",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": "1",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "min.insync.replicas": "1",
        # Consumer groups in tests should not wait 3 s for more members that never come.
        "group.initial.rebalance.delay.ms": "0",
    }
    return rendered_config(settings)


def tool_script(java: str, libs: Path, log4j: Path, main: str) -> str:
    """A wrapper running one of Kafka's tools on the stack's classpath, like Kafka's own bin/ scripts."""
    return "\n".join(
        [
            "#!/bin/sh",
            "# Written by `riskengine stack up`: Kafka's own tool on the stack's classpath.",
            f'exec "{java}" -Xmx256m -Dlog4j2.configurationFile="{log4j}" -cp "{libs}/*" {main} "$@"',
            "",
        ]
    )


def new_cluster_id() -> str:
    """A random cluster id as ``kafka-storage random-uuid`` makes it, without starting a JVM."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        # Kafka's Uuid.randomUuid() rejects ids starting with '-': they read as command-line options.
        if not text.startswith("-"):
            return text


class Kafka(Service):
    """The broker the engine, its tests and Kafka Connect talk to."""

    name = "kafka"
    system_user = "riskengine-kafka"
    stop_timeout = 60.0  # a controlled shutdown flushes every partition

    @property
    def address(self) -> Address:
        return address_from_bootstrap("kafka_bootstrap_servers", self.settings.kafka_bootstrap_servers)

    @property
    def controller(self) -> Address:
        """The KRaft controller listener: the broker port + 1."""
        return Address(LOOPBACK, self.address.port + 1)

    @property
    def bound_addresses(self) -> tuple[Address, ...]:
        return (self.address, self.controller)

    @property
    def version(self) -> str:
        """The Kafka version the pom pins."""
        return kafka_version(packaged_text(POM))

    @property
    def product(self) -> str:
        return f"Kafka {self.version}"

    @property
    def home(self) -> Path:
        """The resolved classpath (``libs/``) and the pom it came from."""
        return self.paths.cache_dir / f"kafka-{self.version}"

    async def install(self, say: Say) -> bool:
        pom = packaged_text(POM)
        copied = self.home / "pom.xml"
        # A changed pom (a dependency added) must re-resolve even when the version is the same.
        if (self.home / "libs").is_dir() and copied.is_file() and copied.read_text() == pom:
            return False
        say(f"{self.name:9} downloading the {self.product} classpath with Maven (log {self.install_log})")
        with staged_dir(self.home) as partial:
            (partial / "pom.xml").write_text(pom)
            await maven(
                [
                    "-f",
                    str(partial / "pom.xml"),
                    "dependency:copy-dependencies",
                    "-DincludeScope=runtime",
                    f"-DoutputDirectory={partial / 'libs'}",
                ],
                what=f"Maven download of org.apache.kafka:kafka_2.13:{self.version} and its dependencies",
                cache_dir=self.paths.cache_dir,
                log=self.install_log,
                say=say,
            )
        return True

    def _java(self, main: str, *args: str, heap: tuple[str, ...] = ()) -> list[str]:
        return [
            find_java(JAVA_MINIMUM),
            *heap,
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.conf_dir / 'log4j2.properties'}",
            "-cp",
            f"{self.home / 'libs'}/*",
            main,
            *args,
        ]

    @property
    def tools_dir(self) -> Path:
        """Where the wrappers of Kafka's command-line tools go (:data:`TOOLS`)."""
        return self.paths.stack_dir / "bin"

    def write_tools(self) -> list[Path]:
        """The wrappers of :data:`TOOLS` (console consumer, topics, consumer groups, offsets...)."""
        self.tools_dir.mkdir(parents=True, exist_ok=True)
        log4j = self.conf_dir / "tools-log4j2.properties"
        log4j.write_text(packaged_text(TOOLS_LOG4J))
        java = find_java(JAVA_MINIMUM)
        written = []
        for name, main in TOOLS.items():
            path = self.tools_dir / name
            path.write_text(tool_script(java, self.home / "libs", log4j, main))
            path.chmod(0o755)
            written.append(path)
        return written

    async def configure(self) -> str:
        """After every ``up``: the tools' wrappers, when the classpath has the tools."""
        if not any((self.home / "libs").glob("kafka-tools-[0-9]*.jar")):
            # A broker started before kafka-tools joined the pom: its classpath is re-resolved at
            # its next start.
            return "Kafka's command-line tools need a restart (stack down --only kafka, then up)"
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.write_tools()
        return f"Kafka's tools in {self.tools_dir}"

    async def prepare(self) -> None:
        await super().prepare()
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        properties = self.conf_dir / "server.properties"
        properties.write_text(server_properties(self.address, self.controller, self.data_dir))
        (self.conf_dir / "log4j2.properties").write_text(packaged_text(LOG4J))
        if (self.data_dir / "meta.properties").is_file():
            return  # formatted by an earlier start: the data and the cluster id are kept
        await run_logged(
            self._java(
                "kafka.tools.StorageTool",
                "format",
                "-t",
                new_cluster_id(),
                "-c",
                str(properties),
                "--ignore-formatted",
            ),
            what=f"formatting Kafka storage in {self.data_dir}",
            log=self.log_file,
            say=lambda _: None,
        )

    def command(self) -> list[str]:
        return self._java("kafka.Kafka", str(self.conf_dir / "server.properties"), heap=HEAP)

    async def probe(self) -> bool:
        if not await accepts_connections(self.address):
            return False
        admin = AIOKafkaAdminClient(
            bootstrap_servers=str(self.address), client_id="riskengine-stack", request_timeout_ms=5000
        )
        # aiokafka logs every refused or early request at ERROR: expected while the broker boots.
        aiokafka_log = logging.getLogger("aiokafka")
        level = aiokafka_log.level
        aiokafka_log.setLevel(logging.CRITICAL)
        try:
            await admin.start()
            await admin.list_topics()
        except (KafkaError, OSError, TimeoutError):
            return False  # the broker has not joined its own controller yet
        finally:
            await admin.close()
            aiokafka_log.setLevel(level)
        return True
