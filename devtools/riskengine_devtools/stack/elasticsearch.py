"""Elasticsearch 9, one node, from the minimal distribution Elastic publishes to Maven Central.

The ``integ-test-zip`` distribution has no bundled JDK (it runs on the newest JDK found, Java 21 at
least) and few modules: indexing, ``_bulk``, search, mappings, index templates and most
aggregations work; ``GET /`` (so ``es.info()``/``es.ping()``), painless and ingest pipelines do not,
hence the readiness probe on ``/_cluster/health``. Elasticsearch refuses to run as root; like every
stack server, it runs as its own system user when the stack runs as root
(:mod:`riskengine_devtools.stack.accounts`), and owns its config, data and log folders.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

import aiohttp

from riskengine_devtools.stack.service import LOOPBACK, Address, Say, Service, StackError, address_from_url
from riskengine_devtools.stack.tools import find_java, maven_fetch, rendered_config, staged_dir

VERSION = "9.2.0"
ARTIFACT = f"org.elasticsearch.distribution.integ-test-zip:elasticsearch:{VERSION}:zip"
#: The repository serves this zip without a checksum file, which Maven's strict check refuses: its
#: SHA-256 is pinned here instead (taken from the first download; change it with VERSION).
ARTIFACT_SHA256 = "bf44938a0490ba2a303d39c9cb64b38963dd08c812ce93e10816e878585bcb6b"
#: Elasticsearch 9 needs Java 21; the default Java 17 is too old.
JAVA_MINIMUM = 21
HEAP = "-Xms768m -Xmx768m"
#: The node-to-node transport port is the HTTP port + this (9200 -> 9300, as Elasticsearch's defaults).
TRANSPORT_OFFSET = 100
#: Files of the distribution's config folder the server reads besides ``elasticsearch.yml``.
_CONFIG_FILES = ("jvm.options", "log4j2.properties")
_SECURITY_MODULE = "x-pack-security"
_TIMEOUT = aiohttp.ClientTimeout(total=5)


def elasticsearch_yml(
    http: Address, transport: Address, data: Path, logs: Path, *, has_security: bool
) -> str:
    """``elasticsearch.yml`` of a single local node without TLS or authentication."""
    settings = {
        "cluster.name": "riskengine-local",
        "node.name": "riskengine-local",
        "discovery.type": "single-node",
        "network.host": http.host,
        "http.port": str(http.port),
        "transport.port": str(transport.port),
        "path.data": str(data),
        "path.logs": str(logs),
        # A developer's disk above 90 % would otherwise turn every index read-only.
        "cluster.routing.allocation.disk.threshold_enabled": "false",
    }
    if has_security:
        # The setting is unknown (a start-up error) to a distribution without the security module.
        settings["xpack.security.enabled"] = "false"
    return rendered_config(settings, ": ")


def unpack_zip(archive: Path, target: Path) -> None:
    """Extract ``archive`` into ``target`` without its single top-level folder, keeping file modes.

    :mod:`zipfile` drops the Unix permission bits, and the launch scripts must stay executable.
    """
    with zipfile.ZipFile(archive) as bundle:
        for member in bundle.infolist():
            parts = PurePosixPath(member.filename).parts[1:]
            if not parts or ".." in parts:
                continue
            destination = target.joinpath(*parts)
            if member.is_dir():
                destination.mkdir(parents=True, exist_ok=True)
                continue
            destination.parent.mkdir(parents=True, exist_ok=True)
            with bundle.open(member) as source, destination.open("wb") as out:
                shutil.copyfileobj(source, out)
            mode = stat.S_IMODE(member.external_attr >> 16)
            if mode:
                destination.chmod(mode)


class Elasticsearch(Service):
    """The search index of analysed trades and alerts."""

    name = "elastic"
    # The account earlier versions of the stack created for it, kept.
    system_user = "riskengine-es"

    @property
    def address(self) -> Address:
        return address_from_url("elasticsearch_url", self.settings.elasticsearch_url)

    @property
    def transport(self) -> Address:
        """The node-to-node listener (bound even by a single node)."""
        return Address(LOOPBACK, self.address.port + TRANSPORT_OFFSET)

    @property
    def bound_addresses(self) -> tuple[Address, ...]:
        return (self.address, self.transport)

    @property
    def product(self) -> str:
        return f"Elasticsearch {VERSION}"

    @property
    def home(self) -> Path:
        """The unpacked distribution."""
        return self.paths.cache_dir / f"elasticsearch-{VERSION}"

    @property
    def es_logs(self) -> Path:
        """Elasticsearch's own log files (the launcher's output goes to :attr:`log_file`)."""
        return self.paths.logs / self.name

    @property
    def writable_dirs(self) -> tuple[Path, ...]:
        # The server writes its keystore into the config folder, besides data and logs.
        return (self.conf_dir, self.data_dir, self.es_logs)

    async def install(self, say: Say) -> bool:
        if (self.home / "bin" / "elasticsearch").is_file():
            return False
        say(f"{self.name:9} downloading {ARTIFACT} with Maven (log {self.install_log})")
        archive = await maven_fetch(
            ARTIFACT, cache_dir=self.paths.cache_dir, log=self.install_log, say=say, sha256=ARTIFACT_SHA256
        )
        with staged_dir(self.home) as partial:
            try:
                unpack_zip(archive, partial)
            except (OSError, zipfile.BadZipFile) as exc:
                raise StackError(f"unpacking {archive} ({ARTIFACT}): {exc}") from None
            if not (partial / "bin" / "elasticsearch").is_file():
                raise StackError(f"{ARTIFACT} holds no bin/elasticsearch")
        return True

    async def prepare(self) -> None:
        await super().prepare()
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.es_logs.mkdir(parents=True, exist_ok=True)
        for name in _CONFIG_FILES:
            shutil.copyfile(self.home / "config" / name, self.conf_dir / name)
        (self.conf_dir / "jvm.options.d").mkdir(exist_ok=True)
        has_security = (self.home / "modules" / _SECURITY_MODULE).is_dir()
        (self.conf_dir / "elasticsearch.yml").write_text(
            elasticsearch_yml(
                self.address, self.transport, self.data_dir, self.es_logs, has_security=has_security
            )
        )

    def command(self) -> list[str]:
        # The launcher script execs the CLI JVM, so its pid would soon run another command line
        # than the pid file records (the runner would call it stale). GNU timeout without a limit
        # (0) stays the parent instead: the pid recorded keeps its command line, leads the process
        # group the runner signals, passes SIGTERM on and exits only once the launcher has.
        return ["timeout", "0", str(self.home / "bin" / "elasticsearch")]

    def environment(self) -> dict[str, str]:
        java_home = Path(find_java(JAVA_MINIMUM)).resolve().parent.parent
        return {"ES_JAVA_HOME": str(java_home), "ES_PATH_CONF": str(self.conf_dir), "ES_JAVA_OPTS": HEAP}

    async def probe(self) -> bool:
        try:
            async with (
                aiohttp.ClientSession(timeout=_TIMEOUT) as session,
                session.get(f"http://{self.address}/_cluster/health") as response,
            ):
                if response.status != 200:
                    return False
                health = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return False
        return isinstance(health, dict) and health.get("status") in ("green", "yellow")
