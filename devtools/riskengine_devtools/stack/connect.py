"""Kafka Connect, one distributed-mode worker, with riskengine's Elasticsearch sink plugin.

It runs ``org.apache.kafka.connect.cli.ConnectDistributed`` on the classpath the Kafka service
resolves (``kafka-pom.xml`` carries ``connect-runtime`` and ``connect-json``), on the same Java.
The plugin is built from ``connectors/elasticsearch-sink/`` with Maven into the cache, in a folder
named after a hash of its sources: a change to them builds a new plugin at the next start, an
unchanged tree is never rebuilt. Connectors are deployed separately (``riskengine connector
deploy``, :mod:`riskengine.search.sink_connector`); the worker's own state lives in three internal topics.
Connector configs name their passwords (``${env:RISKENGINE_ELASTICSEARCH_PASSWORD}``) instead of
holding them: the worker resolves them from its environment, which the stack fills from the settings.
"""

from __future__ import annotations

import functools
import hashlib
import shutil
from pathlib import Path

import aiohttp

from riskengine.search.sink_connector import (
    CONNECTOR_CLASS,
    SECRET_SETTINGS,
    secret_variable,
    worker_config_providers,
)
from riskengine_devtools.stack.kafka import JAVA_MINIMUM, LOG4J, Kafka, packaged_text
from riskengine_devtools.stack.service import Address, Say, Service, StackError, address_from_url
from riskengine_devtools.stack.tools import find_java, maven, rendered_config, staged_dir

#: The plugin's folder name under ``plugin.path`` and the prefix of its cache folder.
PLUGIN_NAME = "riskengine-elasticsearch-sink"
#: Where the plugin's Maven project lives in a checkout (the repository's top level).
SOURCES = Path(__file__).resolve().parents[3] / "connectors" / "elasticsearch-sink"
#: The stack budgets 512 MB for Connect.
HEAP = ("-Xms256m", "-Xmx512m")
#: The Connect worker group and its internal topics (configs, source offsets, statuses).
GROUP_ID = "riskengine-connect"
_HASH_LENGTH = 12
#: Added to the Kafka service's log4j configuration for the Connect worker.
_LOG4J_EXTRA = """
# Connect logs every RetriableException a sink task throws at ERROR with its stack trace: one per
# retry.backoff.ms during an Elasticsearch outage. The sink says it itself (first failure, then once
# a minute, and when Elasticsearch is back), so these repeats are dropped.
logger.sinktask.name = org.apache.kafka.connect.runtime.WorkerSinkTask
logger.sinktask.level = INFO
logger.sinktask.filter.retriable.type = RegexFilter
logger.sinktask.filter.retriable.regex = .*RetriableException from SinkTask.*
logger.sinktask.filter.retriable.onMatch = DENY
logger.sinktask.filter.retriable.onMismatch = NEUTRAL
# One access-log line per REST call (readiness probes, status polls) would drown the rest.
logger.rest.name = org.apache.kafka.connect.runtime.rest.RestServer
logger.rest.level = WARN
"""
_TIMEOUT = aiohttp.ClientTimeout(total=5)


def source_hash(root: Path) -> str:
    """A hash of the plugin's Maven project: ``pom.xml`` and everything under ``src/``.

    Paths and contents both count, so a renamed or deleted file changes it too.
    """
    digest = hashlib.sha256()
    files = [root / "pom.xml", *sorted(path for path in (root / "src").rglob("*") if path.is_file())]
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:_HASH_LENGTH]


def connect_properties(kafka: Address, rest: Address, plugin_path: Path) -> str:
    """``connect-distributed.properties`` of a single local worker; replication factors are 1."""
    settings = {
        "bootstrap.servers": str(kafka),
        "group.id": GROUP_ID,
        "config.storage.topic": f"{GROUP_ID}-configs",
        "offset.storage.topic": f"{GROUP_ID}-offsets",
        "status.storage.topic": f"{GROUP_ID}-status",
        "config.storage.replication.factor": "1",
        "offset.storage.replication.factor": "1",
        "status.storage.replication.factor": "1",
        # The defaults (25 and 5 partitions) only slow the first start of a one-worker cluster.
        "offset.storage.partitions": "5",
        "status.storage.partitions": "1",
        # Connectors set their own converters; these are the worker's defaults.
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter.schemas.enable": "false",
        "listeners": f"http://{rest}",
        "rest.advertised.host.name": rest.host,
        "rest.advertised.port": str(rest.port),
        "plugin.path": str(plugin_path),
        # Plugins are found through their META-INF/services manifests instead of scanning every
        # class of every jar (Kafka's own plugins carry them too): seconds off each start.
        "plugin.discovery": "service_load",
        # Sink offsets are committed every 5 s, not every minute: less to re-deliver after a restart.
        "offset.flush.interval.ms": "5000",
        # With one worker, a restarted worker must get its tasks back at once, not after 5 minutes.
        "scheduled.rebalance.max.delay.ms": "0",
        # Secrets are resolved here, from the worker's environment, never stored in the config topic.
        **worker_config_providers(),
    }
    return rendered_config(settings)


class KafkaConnect(Service):
    """Moves the analysed trades and alerts from Kafka into Elasticsearch."""

    name = "connect"
    system_user = "riskengine-connect"

    @property
    def address(self) -> Address:
        return address_from_url("connect_url", self.settings.connect_url)

    @property
    def kafka(self) -> Kafka:
        """The Kafka service whose classpath (and broker) Connect uses."""
        return Kafka(self.settings, self.paths)

    @property
    def sources(self) -> Path:
        """The plugin's Maven project; raises :class:`StackError` outside a checkout."""
        if not (SOURCES / "pom.xml").is_file():
            raise StackError(
                f"the Elasticsearch sink's sources are not at {SOURCES}: run the stack from a "
                "checkout of riskengine (make install)"
            )
        return SOURCES

    @functools.cached_property
    def build_id(self) -> str:
        """The hash of the plugin's sources (taken once per service object)."""
        return source_hash(self.sources)

    @property
    def product(self) -> str:
        try:
            plugin = f"{PLUGIN_NAME} {self.build_id}"
        except StackError:
            plugin = f"{PLUGIN_NAME} (sources missing)"
        return f"Kafka Connect {self.kafka.version} + {plugin}"

    @property
    def plugin_home(self) -> Path:
        """The built plugin of the current sources (``plugins/`` is what ``plugin.path`` names)."""
        return self.paths.cache_dir / f"{PLUGIN_NAME}-{self.build_id}"

    @property
    def plugin_path(self) -> Path:
        """The folder holding exactly one plugin folder: this build's jars."""
        return self.plugin_home / "plugins"

    async def install(self, say: Say) -> bool:
        # The Kafka classpath is the Kafka service's download; see prepare().
        if (self.plugin_path / PLUGIN_NAME).is_dir():
            return False
        sources, build_id = self.sources, self.build_id
        say(f"{self.name:9} building the Elasticsearch sink {build_id} with Maven (log {self.install_log})")
        with staged_dir(self.plugin_home) as partial:
            # Build a copy: target/ stays out of the work tree, and the sources cannot change mid-build.
            project = partial / "build"
            shutil.copytree(sources, project, ignore=shutil.ignore_patterns("target"))
            jars = partial / "plugins" / PLUGIN_NAME
            await maven(
                [
                    "-f",
                    str(project / "pom.xml"),
                    f"-Dsource.hash={build_id}",
                    "package",
                    "dependency:copy-dependencies",
                    "-DincludeScope=runtime",
                    f"-DoutputDirectory={jars}",
                ],
                what=f"Maven build of {sources}",
                cache_dir=self.paths.cache_dir,
                log=self.install_log,
                say=say,
            )
            built = sorted((project / "target").glob("*.jar"))
            if not built:
                raise StackError(f"the Maven build of {sources} made no jar; log: {self.install_log}")
            for jar in built:
                shutil.copy2(jar, jars / jar.name)
            shutil.rmtree(project)
        self._remove_older_builds()
        return True

    def _remove_older_builds(self) -> None:
        # Only one build is ever used (plugin.path names it); older ones are dead weight.
        for folder in self.paths.cache_dir.glob(f"{PLUGIN_NAME}-*"):
            if folder != self.plugin_home and folder.is_dir():
                shutil.rmtree(folder, ignore_errors=True)

    async def prepare(self) -> None:
        await super().prepare()
        kafka = self.kafka
        if not (kafka.home / "libs").is_dir():
            # Only with `--only connect` on a fresh cache: `up` downloads every selected service
            # first, so the Kafka service's own download has finished by now when it is selected.
            await kafka.install(lambda _line: None)
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        (self.conf_dir / "connect-distributed.properties").write_text(
            connect_properties(kafka.address, self.address, self.plugin_path)
        )
        (self.conf_dir / "log4j2.properties").write_text(packaged_text(LOG4J) + _LOG4J_EXTRA)

    def command(self) -> list[str]:
        return [
            find_java(JAVA_MINIMUM),
            *HEAP,
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.conf_dir / 'log4j2.properties'}",
            "-cp",
            f"{self.kafka.home / 'libs'}/*",
            "org.apache.kafka.connect.cli.ConnectDistributed",
            str(self.conf_dir / "connect-distributed.properties"),
        ]

    def environment(self) -> dict[str, str]:
        """The passwords the connector config refers to, under the names it uses (empty when unset)."""
        return {secret_variable(field): getattr(self.settings, field).get() for field in SECRET_SETTINGS}

    async def _get(self, session: aiohttp.ClientSession, path: str) -> object:
        async with session.get(f"http://{self.address}{path}") as response:
            if response.status != 200:
                return None
            return await response.json(content_type=None)

    async def plugin_version(self) -> str | None:
        """The version of the sink plugin the running worker loaded, or None (not up, not loaded)."""
        try:
            async with aiohttp.ClientSession(timeout=_TIMEOUT) as session:
                if not isinstance(await self._get(session, "/"), dict):
                    return None
                plugins = await self._get(session, "/connector-plugins")
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        for plugin in plugins if isinstance(plugins, list) else []:
            if isinstance(plugin, dict) and plugin.get("class") == CONNECTOR_CLASS:
                return str(plugin.get("version", ""))
        return None

    async def probe(self) -> bool:
        # GET / answers as soon as the REST server is up; the plugin list only once the worker has
        # loaded its plugins and joined its group.
        return await self.plugin_version() is not None

    async def configure(self) -> str:
        version = await self.plugin_version() or "?"
        if not version.endswith("+" + self.build_id):
            return (
                f"plugin {version} loaded, but the sources are now {self.build_id}: restart it "
                "(riskengine stack down --only connect; riskengine stack up --only connect)"
            )
        return f"plugin {PLUGIN_NAME} {version} loaded"
