"""The one settings object: every knob, read once from ``RISKENGINE_*`` environment variables.

Defaults point at the local stack (``riskengine stack up``) and at ``docker/compose.yml``, which
uses the same ports. A bad value raises :class:`SettingsError` naming the variable, so a worker
fails at start-up instead of at its first message. Secrets are held as :class:`Secret`, whose
``repr`` and ``str`` never show the value.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from riskengine.errors import SettingsError

PREFIX = "RISKENGINE_"

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")


class Secret:
    """A credential. Compares by value, prints as ``'***'``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        """The clear value, for the one client call that needs it."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    __str__ = __repr__


def _setting(default: Any, doc: str, parse: Callable[[str], Any] | None = None) -> Any:
    return field(default=default, metadata={"doc": doc, "parse": parse})


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be a positive integer")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("must be a positive number")
    return value


def _choice(*allowed: str, upper: bool = True) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().upper() if upper else text.strip().lower()
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value

    return parse


def _url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http(s) URL such as http://127.0.0.1:8081")
    return text.rstrip("/")


def _optional_url(text: str) -> str:
    return _url(text) if text else ""


def _bootstrap(text: str) -> str:
    for server in text.split(","):
        host, sep, port = server.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError("must be host:port[,host:port...]")
    return text


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


def _optional_file(text: str) -> str:
    if text and not Path(text).is_file():
        raise ValueError(f"file {text!r} does not exist")
    return text


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise ValueError("must be a number >= 0")
    return value


def _checkpoint_interval(text: str) -> float:
    value = _non_negative_float(text)
    if value > 60:
        raise ValueError("must be at most 60 (events since a checkpoint are processed again after a crash)")
    return value


def _fetch_wait_ms(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 500:
        raise ValueError("must be an integer from 0 to 500 (every event waits up to it on each fetch)")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be an integer >= 0")
    return value


def _name_part(text: str) -> str:
    if text and not all(c.isalnum() or c in "._-" for c in text):
        raise ValueError("may only contain letters, digits, '.', '_' and '-'")
    return text


def _app_id(text: str) -> str:
    if not text:
        raise ValueError("must not be empty")
    return _name_part(text)


@dataclass(frozen=True)
class Settings:
    """Every configurable value. Build it with :meth:`from_env`; field ``x_y`` is ``RISKENGINE_X_Y``."""

    # Kafka
    kafka_bootstrap_servers: str = _setting(
        "127.0.0.1:9092", "Kafka bootstrap servers, host:port[,...]", _bootstrap
    )
    kafka_security_protocol: str = _setting(
        "PLAINTEXT", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL", _choice(*SECURITY_PROTOCOLS)
    )
    kafka_sasl_mechanism: str = _setting(
        "PLAIN", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (SASL protocols only)", _choice(*SASL_MECHANISMS)
    )
    kafka_sasl_username: str = _setting("", "SASL user name")
    kafka_sasl_password: Secret = _setting(Secret(""), "SASL password (secret)")
    kafka_ssl_cafile: str = _setting(
        "", "PEM file of the CA that signed the brokers' certificates", _optional_file
    )
    kafka_ssl_certfile: str = _setting("", "client certificate PEM for mutual TLS (optional)", _optional_file)
    kafka_ssl_keyfile: str = _setting("", "client key PEM for mutual TLS (optional)", _optional_file)
    topic_partitions: int = _setting(6, "partitions of every topic the engine creates", _positive_int)
    topic_replication_factor: int = _setting(
        1, "replication factor of every topic the engine creates", _positive_int
    )
    # Schema registry (any server speaking the Confluent REST API)
    schema_registry_url: str = _setting(
        "http://127.0.0.1:8081/apis/ccompat/v7", "Confluent-compatible schema registry base URL", _url
    )
    schema_registry_username: str = _setting("", "registry basic-auth user name")
    schema_registry_password: Secret = _setting(Secret(""), "registry basic-auth password (secret)")
    # S3 (table snapshots)
    s3_endpoint_url: str = _setting(
        "http://127.0.0.1:7070",
        "S3 endpoint; empty means AWS's default endpoint for the region",
        _optional_url,
    )
    s3_region: str = _setting("us-east-1", "S3 region")
    s3_access_key_id: str = _setting("riskengine", "S3 access key id (the local stack's default)")
    s3_secret_access_key: Secret = _setting(
        Secret("riskengine-local-secret"), "S3 secret access key (secret; the local stack's default)"
    )
    s3_bucket: str = _setting(
        "riskengine-snapshots",
        "bucket for table snapshots; empty: no S3, snapshots go to RISKENGINE_WORKER_SNAPSHOT_DIR",
    )
    # Elasticsearch
    elasticsearch_url: str = _setting("http://127.0.0.1:9200", "Elasticsearch URL", _url)
    elasticsearch_username: str = _setting("", "Elasticsearch user name")
    elasticsearch_password: Secret = _setting(Secret(""), "Elasticsearch password (secret)")
    elasticsearch_index_shards: int = _setting(
        1, "primary shards of each index the search indices' templates create", _positive_int
    )
    elasticsearch_index_replicas: int = _setting(
        0,
        "replica copies of each shard of the search indices (templates, and existing indices at "
        "`connector deploy`); 0: a single node is green, N nodes take up to N-1",
        _non_negative_int,
    )
    # Kafka Connect (the Elasticsearch sink connector)
    connect_url: str = _setting("http://127.0.0.1:8083", "Kafka Connect REST URL", _url)
    # Dashboard and reporting views (riskengine dashboard)
    dashboard_host: str = _setting("127.0.0.1", "interface the dashboard and reporting views listen on")
    dashboard_port: int = _setting(8088, "port of the dashboard and reporting views", _positive_int)
    dashboard_worker_urls: str = _setting(
        "http://127.0.0.1:6066",
        "comma-separated worker web URLs the dashboard reads /stats and /users/{id} from",
    )
    web_allowed_hosts: str = _setting(
        "",
        "comma-separated extra host names the producer, dashboard and worker web servers answer to "
        "(besides 127.0.0.1, localhost and their bind address; DNS-rebinding protection)",
    )
    dashboard_max_streams: int = _setting(
        32, "concurrent alert streams (SSE) the dashboard serves; one more is answered 503", _positive_int
    )
    # Local service stack
    stack_dir: Path = _setting(Path(".stack"), "runtime data, logs and pid files of the local stack", Path)
    cache_dir: Path = _setting(
        Path(".cache/downloads"), "downloaded jars and binaries, re-used across runs", Path
    )
    stack_start_timeout: float = _setting(
        180.0, "seconds to wait for one stack service to become ready", _positive_float
    )
    # Trade producer (producer/, the riskengine-producer service)
    producer_host: str = _setting("127.0.0.1", "interface the producer's REST API listens on")
    producer_port: int = _setting(8090, "port of the producer's REST API", _positive_int)
    producer_admin_token: Secret = _setting(
        Secret(""),
        "bearer token the producer's /api/admin endpoints and /api/trades/produce require; "
        "empty: none, admin endpoints answer localhost only (secret)",
    )
    producer_audit_db: Path = _setting(
        Path("var/producer-audit.sqlite3"), "SQLite file of the producer's audit trail", Path
    )
    producer_rate_ms: float = _setting(
        100.0, "mock trading: mean milliseconds between normal trades", _positive_float
    )
    producer_users: int = _setting(1000, "mock trading: simulated accounts (at least 38)", _positive_int)
    producer_symbols: str = _setting(
        "", "mock trading: comma-separated symbols; empty: the simulator's whole catalog"
    )
    producer_exchanges: str = _setting(
        "", "mock trading: comma-separated exchanges; empty: BINANCE,COINBASE,KRAKEN,FTX,KUCOIN"
    )
    producer_scenarios: str = _setting(
        "all", "mock trading: scenarios injected by default: all, none or comma-separated names"
    )
    producer_scenario_every: int = _setting(
        400, "mock trading: mean normal trades between two scenario injections", _positive_int
    )
    producer_seed: int = _setting(0, "mock trading: random seed; 0 draws a new one per start", int)
    # Process
    log_level: str = _setting("info", "debug, info, warning or error", _choice(*LOG_LEVELS, upper=False))
    log_format: str = _setting(
        "text",
        "text, or json: one JSON object per line with the worker id, and topic, partition and trade id "
        "where known",
        _choice(*LOG_FORMATS, upper=False),
    )
    # Worker (faust -A riskengine worker): app id, topic isolation, web, snapshots, RocksDB sizes
    worker_app_id: str = _setting(
        "riskengine", "Faust app id: consumer group and prefix of the table changelog topics", _app_id
    )
    worker_topic_suffix: str = _setting(
        "", "appended to every engine topic name (isolated test or staging runs on one cluster)", _name_part
    )
    worker_web_host: str = _setting("127.0.0.1", "address the worker's web server binds and advertises")
    worker_web_bind: str = _setting(
        "",
        "address the worker's web server listens on when not RISKENGINE_WORKER_WEB_HOST "
        "(containers: 0.0.0.0, advertising the pod IP); empty: RISKENGINE_WORKER_WEB_HOST",
    )
    worker_admin_token: Secret = _setting(
        Secret(""),
        "bearer token the worker's admin endpoints and /users views require "
        "(secret; empty: no token, admin endpoints answer localhost only)",
    )
    worker_snapshot_interval: float = _setting(
        300.0,
        "seconds between snapshots of each worker's table partitions (POST /admin/snapshot: now); 0 disables",
        _non_negative_float,
    )
    worker_checkpoint_interval: float = _setting(
        5.0,
        "seconds a busy user's whole state may wait to be written again (meanwhile a small output "
        "journal per partition; all are written whenever the worker runs out of events); 0: every batch",
        _checkpoint_interval,
    )
    worker_fetch_wait_ms: int = _setting(
        10,
        "while records flow, ms the broker may hold a fetch of the worker's consumer until 64 KiB of "
        "records are there (after a fetch round without any, a long poll again): fewer, fuller fetch "
        "responses, about a fifth less CPU per event at 1,000 trades/s; 0: never held",
        _fetch_wait_ms,
    )
    worker_snapshot_dir: Path = _setting(
        Path("snapshots"), "snapshot folder used instead of S3 when RISKENGINE_S3_BUCKET is empty", Path
    )
    worker_rocksdb_write_buffer_size: int = _setting(
        4 * 1024 * 1024, "RocksDB memtable bytes per table partition", _positive_int
    )
    worker_rocksdb_block_cache_size: int = _setting(
        8 * 1024 * 1024, "RocksDB block cache bytes per table partition", _positive_int
    )
    worker_session_timeout: float = _setting(
        60.0, "seconds before the group gives a silent worker's partitions to the others", _positive_float
    )
    worker_standby_replicas: int = _setting(
        1, "standby copies of each table partition kept by other workers", _non_negative_int
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every ``RISKENGINE_*`` variable; unknown ``RISKENGINE_*`` names are an error (typos)."""
        env = os.environ if environ is None else environ
        known = {PREFIX + f.name.upper(): f for f in dataclasses.fields(cls)}
        unknown = sorted(name for name in env if name.startswith(PREFIX) and name not in known)
        if unknown:
            raise SettingsError(f"unknown setting {unknown[0]} (see the settings table in README.md)")
        values: dict[str, Any] = {}
        for name, f in known.items():
            if name not in env:
                continue
            raw = env[name]
            if isinstance(f.default, Secret):
                values[f.name] = Secret(raw)
                continue
            parse = f.metadata["parse"]
            try:
                values[f.name] = parse(raw) if parse else raw
            except ValueError as exc:
                shown = "***" if isinstance(f.default, Secret) else repr(raw)
                raise SettingsError(f"{name}={shown}: {exc}") from None
        settings = cls(**values)
        settings._check_consistency()
        return settings

    def _check_consistency(self) -> None:
        sasl = self.kafka_security_protocol.startswith("SASL")
        if sasl and not (self.kafka_sasl_username and self.kafka_sasl_password):
            raise SettingsError(
                f"RISKENGINE_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                "RISKENGINE_KAFKA_SASL_USERNAME and RISKENGINE_KAFKA_SASL_PASSWORD"
            )
        if bool(self.kafka_ssl_certfile) != bool(self.kafka_ssl_keyfile):
            raise SettingsError("RISKENGINE_KAFKA_SSL_CERTFILE and RISKENGINE_KAFKA_SSL_KEYFILE go together")
        if self.schema_registry_password and not self.schema_registry_username:
            raise SettingsError(
                "RISKENGINE_SCHEMA_REGISTRY_PASSWORD is set without RISKENGINE_SCHEMA_REGISTRY_USERNAME"
            )

    @property
    def kafka_uses_tls(self) -> bool:
        """True when the Kafka connection is encrypted (SSL or SASL_SSL)."""
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")

    def describe(self) -> dict[str, str]:
        """Every setting by variable name, secrets masked: safe to log."""
        return {PREFIX + f.name.upper(): str(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def documentation(cls) -> list[tuple[str, str, str]]:
        """(variable, default, description) rows for the README table."""
        rows = []
        for f in dataclasses.fields(cls):
            default = f.default.get() if isinstance(f.default, Secret) else f.default
            rows.append((PREFIX + f.name.upper(), str(default), f.metadata["doc"]))
        return rows
