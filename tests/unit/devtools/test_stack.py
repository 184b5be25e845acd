"""The local stack without its servers: config rendering, addresses, pid files, the runner's logic.

The runner tests drive stand-in services (a Python HTTP server, a command that exits at once), so
they check start, reuse, stale pid files and stop without Kafka, Java or Go.
"""

from __future__ import annotations

import argparse
import base64
import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp.web import Application, AppRunner, Request, Response, TCPSite, json_response

from riskengine.cli import build_parser
from riskengine.settings import Settings
from riskengine_devtools.stack import SERVICES, build_services, service_names
from riskengine_devtools.stack.kafka import (
    Kafka,
    kafka_version,
    new_cluster_id,
    packaged_text,
    server_properties,
)
from riskengine_devtools.stack.object_store import ObjectStore, versitygw_arguments
from riskengine_devtools.stack.procs import (
    START_MARKER,
    PidRecord,
    accepts_connections,
    is_alive,
    log_tail,
    owns,
    port_free,
    port_holder,
    process_command,
    read_pid_file,
    with_tail,
    write_pid_file,
)
from riskengine_devtools.stack.runner import State, down, inspect, status, up
from riskengine_devtools.stack.schema_registry import SchemaRegistry, apicurio_properties
from riskengine_devtools.stack.service import (
    Address,
    Say,
    Service,
    StackConfigError,
    StackPaths,
    address_from_bootstrap,
    address_from_url,
)
from riskengine_devtools.stack.tools import human_size, java_major, maven_artifact_path, staged_dir
from riskengine_devtools.stack_command import run_status


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# --- addresses ------------------------------------------------------------------------------


def test_default_settings_give_the_documented_addresses(settings: Settings, paths: StackPaths) -> None:
    kafka, registry = Kafka(settings, paths), SchemaRegistry(settings, paths)
    s3 = ObjectStore(settings, paths)
    assert kafka.bound_addresses == (Address("127.0.0.1", 9092), Address("127.0.0.1", 9093))
    assert registry.bound_addresses == (Address("127.0.0.1", 8081), Address("127.0.0.1", 8082))
    assert s3.address == Address("127.0.0.1", 7070)
    assert str(s3.address) == "127.0.0.1:7070"


def test_addresses_follow_the_settings_and_localhost_binds_loopback() -> None:
    assert address_from_bootstrap("kafka_bootstrap_servers", "localhost:19092") == Address("127.0.0.1", 19092)
    assert address_from_url("s3_endpoint_url", "http://localhost:17070") == Address("127.0.0.1", 17070)


@pytest.mark.parametrize(
    ("servers", "message"),
    [
        ("kafka.prod:9092", "does not point at this machine"),
        ("127.0.0.1:9092,127.0.0.1:9094", "exactly one broker"),
        ("127.0.0.1:x", "has no port"),
    ],
)
def test_bootstrap_servers_the_stack_cannot_serve(servers: str, message: str) -> None:
    with pytest.raises(StackConfigError, match=message) as error:
        address_from_bootstrap("kafka_bootstrap_servers", servers)
    assert "RISKENGINE_KAFKA_BOOTSTRAP_SERVERS" in str(error.value)


def test_urls_the_stack_cannot_serve(settings: Settings, paths: StackPaths) -> None:
    with pytest.raises(StackConfigError, match="has no port"):
        address_from_url("s3_endpoint_url", "http://127.0.0.1")
    with pytest.raises(StackConfigError, match="RISKENGINE_S3_ENDPOINT_URL is empty"):
        _ = ObjectStore(replace(settings, s3_endpoint_url=""), paths).address
    confluent_style = replace(settings, schema_registry_url="http://127.0.0.1:8081")
    with pytest.raises(StackConfigError, match="/apis/ccompat/v7"):
        _ = SchemaRegistry(confluent_style, paths).address


def test_relative_folders_become_absolute(settings: Settings) -> None:
    paths = StackPaths.from_settings(replace(settings, stack_dir=Path(".stack")))
    assert paths.stack_dir.is_absolute()
    assert paths.logs == paths.stack_dir / "logs"
    assert paths.run == paths.stack_dir / "run"


def test_service_files_are_named_after_the_service(paths: StackPaths, settings: Settings) -> None:
    kafka = Kafka(settings, paths)
    assert kafka.log_file == paths.stack_dir / "logs" / "kafka.log"
    assert kafka.install_log == paths.stack_dir / "logs" / "kafka-install.log"
    assert kafka.pid_file == paths.stack_dir / "run" / "kafka.pid"
    assert kafka.data_dir == paths.stack_dir / "data" / "kafka"


# --- rendered configuration -----------------------------------------------------------------


def test_server_properties_are_a_single_combined_node(tmp_path: Path) -> None:
    text = server_properties(Address("127.0.0.1", 9092), Address("127.0.0.1", 9093), tmp_path)
    props = dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092"
    assert props["log.dirs"] == str(tmp_path)
    assert props["group.initial.rebalance.delay.ms"] == "0"
    factors = [key for key in props if key.endswith(("replication.factor", "min.isr"))]
    assert len(factors) == 5
    assert all(props[key] == "1" for key in factors)


def test_the_pom_pins_kafka_4_1_or_newer_and_the_dependency_plugin() -> None:
    pom = packaged_text("kafka-pom.xml")
    major, minor, *_ = (int(part) for part in kafka_version(pom).split("."))
    assert (major, minor) >= (4, 1)
    assert "<artifactId>maven-dependency-plugin</artifactId>\n        <version>3.8." in pom
    assert "<packaging>pom</packaging>" in pom
    assert "rootLogger" in packaged_text("kafka-log4j2.properties")


def test_kafka_runs_with_a_1g_heap_and_the_cached_classpath(
    settings: Settings, paths: StackPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("riskengine_devtools.stack.kafka.find_java", lambda minimum: "java")
    command = Kafka(settings, paths).command()
    assert "-Xmx1g" in command
    assert "-Xms256m" in command
    assert command[-2:] == ["kafka.Kafka", str(paths.stack_dir / "conf" / "kafka" / "server.properties")]
    assert f"{paths.cache_dir}/kafka-{kafka_version(packaged_text('kafka-pom.xml'))}/libs/*" in command


def test_cluster_ids_look_like_kafkas() -> None:
    for _ in range(200):
        cluster_id = new_cluster_id()
        assert len(cluster_id) == 22
        assert not cluster_id.startswith("-")
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_apicurio_binds_both_listeners_to_loopback_stores_in_kafka_and_allows_deletes() -> None:
    options = apicurio_properties(Address("127.0.0.1", 8081), Address("127.0.0.1", 9011), "127.0.0.1:9092")
    assert "-Dapicurio.storage.kind=kafkasql" in options
    assert "-Dapicurio.kafkasql.bootstrap.servers=127.0.0.1:9092" in options
    assert "-Dquarkus.http.host=127.0.0.1" in options
    assert "-Dquarkus.http.port=8081" in options
    assert "-Dquarkus.management.host=127.0.0.1" in options
    assert "-Dquarkus.management.port=9011" in options
    for flag in ("artifact", "artifact-version", "group"):
        assert f"-Dapicurio.rest.deletion.{flag}.enabled=true" in options


def test_versitygw_gets_the_address_and_folders_and_keys_only_by_environment(
    settings: Settings, paths: StackPaths
) -> None:
    arguments = versitygw_arguments(Address("127.0.0.1", 7070), "us-east-1", Path("/m"), Path("/b"))
    assert arguments[:2] == ["--port", "127.0.0.1:7070"]
    assert arguments[-4:] == ["posix", "--sidecar", "/m", "/b"]
    store = ObjectStore(settings, paths)
    assert store.command()[1:] == versitygw_arguments(
        Address("127.0.0.1", 7070), settings.s3_region, store.metadata_dir, store.buckets_dir
    )
    secret = settings.s3_secret_access_key.get()
    assert secret not in " ".join(store.command())  # the command line is world-readable in /proc
    assert store.environment() == {"ROOT_ACCESS_KEY": settings.s3_access_key_id, "ROOT_SECRET_KEY": secret}


# --- tools ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "25.0.3" 2026-04-21 LTS', 25),
        ('java version "1.8.0_401"', 8),
        ('openjdk version "21" 2023-09-19', 21),
        ("no version here", None),
    ],
)
def test_java_versions_are_parsed(output: str, major: int | None) -> None:
    assert java_major(output) == major


def test_maven_artifact_paths(tmp_path: Path) -> None:
    path = maven_artifact_path(tmp_path, "io.apicurio:apicurio-registry-app:3.3.3:tar.gz:all")
    expected = "m2/io/apicurio/apicurio-registry-app/3.3.3/apicurio-registry-app-3.3.3-all.tar.gz"
    assert path == tmp_path / expected
    assert maven_artifact_path(tmp_path, "a.b:c:1:jar").name == "c-1.jar"


def test_staged_dir_replaces_the_target_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "thing"
    with pytest.raises(RuntimeError), staged_dir(target) as partial:
        (partial / "half").write_text("x")
        raise RuntimeError("download failed")
    assert not target.exists()
    assert not (tmp_path / "thing.partial").exists()
    with staged_dir(target) as partial:
        (partial / "whole").write_text("x")
    assert [path.name for path in target.iterdir()] == ["whole"]


def test_human_sizes() -> None:
    assert human_size(999) == "999 B"
    assert human_size(54_300_000) == "54.3 MB"
    assert human_size(2_500_000_000) == "2.5 GB"


# --- pid files and processes ----------------------------------------------------------------


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    process = subprocess.Popen(argv)
    # Popen returns before the child has exec'd; until then /proc shows another command line.
    deadline = time.monotonic() + 10
    while process_command(process.pid) != shlex.join(argv) and time.monotonic() < deadline:
        time.sleep(0.01)
    yield process
    process.kill()
    process.wait()


def test_pid_files_round_trip_and_the_first_line_is_the_pid(tmp_path: Path) -> None:
    path = tmp_path / "run" / "x.pid"
    write_pid_file(path, 1234, ["java", "-cp", "a b/*", "Main"])
    assert path.read_text().splitlines()[0] == "1234"
    assert read_pid_file(path) == PidRecord(1234, "java -cp 'a b/*' Main")
    assert read_pid_file(tmp_path / "missing.pid") is None
    for bad in ("not a pid\n", "0\njava\n", "-5\n"):
        (tmp_path / "bad.pid").write_text(bad)
        with pytest.raises(ValueError, match="does not start with a pid"):
            read_pid_file(tmp_path / "bad.pid")


def test_ownership_needs_the_same_pid_and_command(sleeper: subprocess.Popen[bytes]) -> None:
    argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    command = process_command(sleeper.pid)
    assert command is not None
    assert owns(PidRecord(sleeper.pid, command))
    assert not owns(PidRecord(sleeper.pid, "java kafka.Kafka server.properties"))
    assert command == shlex.join(argv)


def test_a_dead_child_is_not_alive(sleeper: subprocess.Popen[bytes]) -> None:
    assert is_alive(sleeper.pid)
    sleeper.kill()
    deadline = time.monotonic() + 5
    while is_alive(sleeper.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not is_alive(sleeper.pid)
    assert process_command(sleeper.pid) is None


def test_port_checks_name_the_holder() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert not port_free(Address("127.0.0.1", port))
        holder = port_holder(port)
        assert holder.startswith(f"pid {os.getpid()} (")
    assert port_free(Address("127.0.0.1", port))


def test_log_tail_shows_only_the_last_run(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text(f"{START_MARKER}1\nold failure\n{START_MARKER}2\n" + "".join(f"l{n}\n" for n in range(30)))
    assert log_tail(log, 3) == ["l27", "l28", "l29"]
    assert "old failure" not in log_tail(log, 100)
    message = with_tail("kafka: exited", log, 2)
    assert message.splitlines() == ["kafka: exited", f"  last lines of {log}:", "    l28", "    l29"]
    assert "no output" in with_tail("x", tmp_path / "missing.log")


# --- the runner, with stand-in services -----------------------------------------------------


class HttpService(Service):
    """A stand-in service: Python's HTTP server on a free port."""

    name = "web"
    stop_timeout = 5.0
    port = 0

    @property
    def address(self) -> Address:
        return Address("127.0.0.1", self.port)

    @property
    def product(self) -> str:
        return "http.server"

    async def install(self, say: Say) -> bool:
        return False

    def command(self) -> list[str]:
        return [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(self.port)]

    async def probe(self) -> bool:
        return await accepts_connections(self.address)

    async def configure(self) -> str:
        return "configured"


class CrashingService(HttpService):
    """Exits at once, with a last word in its log."""

    name = "crash"

    def command(self) -> list[str]:
        return [sys.executable, "-c", "import sys; print('bad config: no such file'); sys.exit(3)"]


@pytest.fixture
def web(settings: Settings, paths: StackPaths) -> Iterator[HttpService]:
    service = HttpService(settings, paths)
    service.port = _free_port()
    yield service
    record = read_pid_file(service.pid_file)
    if record is not None and owns(record):
        os.kill(record.pid, 9)


async def test_up_starts_reuses_and_down_stops(web: HttpService) -> None:
    lines: list[str] = []
    assert (await inspect(web)).state is State.STOPPED
    assert await status([web], lines.append) == 1

    assert await up([web], 10, lines.append) == 0
    assert "started  http.server, pid" in lines[-2]
    assert lines[-2].endswith("; configured")
    first = read_pid_file(web.pid_file)
    assert first is not None and owns(first)
    assert (await inspect(web)).state is State.READY

    assert await up([web], 10, lines.append) == 0
    assert "reused" in lines[-2]
    assert "(1 reused)" in lines[-1]
    assert read_pid_file(web.pid_file) == first

    assert await status([web], lines.append) == 0
    assert await down([web], lines.append) == 0
    assert "stopped pid" in lines[-1]
    assert not web.pid_file.exists()
    assert not is_alive(first.pid)
    assert await down([web], lines.append) == 0
    assert "no pid file" in lines[-1]


async def test_a_stale_pid_file_is_reported_then_replaced(web: HttpService) -> None:
    write_pid_file(web.pid_file, 999_999, web.command())
    found = await inspect(web)
    assert found.state is State.STALE
    lines: list[str] = []
    assert await status([web], lines.append) == 1
    assert "stale pid" in lines[-1]
    assert await up([web], 10, lines.append) == 0
    record = read_pid_file(web.pid_file)
    assert record is not None and record.pid != 999_999
    assert await down([web], lines.append) == 0


async def test_down_leaves_a_pid_that_now_runs_another_program(
    web: HttpService, sleeper: subprocess.Popen[bytes]
) -> None:
    write_pid_file(web.pid_file, sleeper.pid, web.command())
    lines: list[str] = []
    assert await down([web], lines.append) == 0
    assert "another program: left alone" in lines[-1]
    assert sleeper.poll() is None


async def test_a_taken_port_names_its_holder_and_skips_the_rest(web: HttpService) -> None:
    lines: list[str] = []
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", web.port))
        squatter.listen()
        assert (await inspect(web)).state is State.PORT_TAKEN
        other = HttpService(web.settings, web.paths)
        assert await up([web, other], 10, lines.append) == 1
    assert "FAILED" in lines[0]
    assert f"127.0.0.1:{web.port} is in use by pid" in lines[0]
    assert "skipped" in lines[1]


async def test_a_crash_during_start_up_shows_the_log(settings: Settings, paths: StackPaths) -> None:
    crash = CrashingService(settings, paths)
    crash.port = _free_port()
    lines: list[str] = []
    assert await up([crash], 10, lines.append) == 1
    report = "\n".join(lines)
    assert "crash: pid" in report
    assert "exited during start-up" in report
    assert "bad config: no such file" in report
    assert str(crash.log_file) in report
    assert not crash.pid_file.exists()


async def _registry_stand_in(readiness: list[int]) -> tuple[AppRunner, int]:
    """An HTTP server on a port and the next one, answering like Apicurio while its storage replays:
    the API on the first, Quarkus' readiness check (``readiness[0]``) on the second."""

    async def subjects(request: Request) -> Response:
        return json_response([])

    async def ready(request: Request) -> Response:
        return json_response({"status": "UP" if readiness[0] == 200 else "DOWN"}, status=readiness[0])

    app = Application()
    app.router.add_get("/apis/ccompat/v7/subjects", subjects)
    app.router.add_get("/health/ready", ready)
    runner = AppRunner(app)
    await runner.setup()
    for _ in range(20):
        port = _free_port()
        try:
            await TCPSite(runner, "127.0.0.1", port).start()
            await TCPSite(runner, "127.0.0.1", port + 1).start()
        except OSError:
            continue
        return runner, port
    await runner.cleanup()
    raise AssertionError("no two adjacent free ports")


async def test_the_registry_is_not_ready_while_its_readiness_check_is_down(
    settings: Settings, paths: StackPaths
) -> None:
    readiness = [503]
    runner, port = await _registry_stand_in(readiness)
    try:
        registry = SchemaRegistry(
            replace(settings, schema_registry_url=f"http://127.0.0.1:{port}/apis/ccompat/v7"), paths
        )
        assert registry.management == Address("127.0.0.1", port + 1)
        assert not await registry.probe()
        readiness[0] = 200
        assert await registry.probe()
    finally:
        await runner.cleanup()


# --- wiring ---------------------------------------------------------------------------------


def test_services_start_in_the_documented_order(settings: Settings) -> None:
    assert service_names() == ["kafka", "registry", "s3", "elastic", "connect"]
    assert len({service.name for service in SERVICES}) == len(SERVICES)
    assert [service.name for service in build_services(settings, ["s3", "kafka"])] == ["kafka", "s3"]


def test_the_cli_parses_stack_actions_and_only() -> None:
    args = build_parser().parse_args(["stack", "up", "--only", "kafka,registry"])
    assert args.only == ["kafka", "registry"]
    assert callable(args.handler)
    for action in ("down", "status"):
        assert build_parser().parse_args(["stack", action]).only == []


def test_the_cli_rejects_unknown_services(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["stack", "up", "--only", "kafka,zookeeper"])
    assert "unknown service zookeeper" in capsys.readouterr().err


def test_status_exits_2_for_settings_the_stack_cannot_serve(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    remote = replace(settings, kafka_bootstrap_servers="kafka.prod:9092")
    assert run_status(argparse.Namespace(only=["kafka"]), remote) == 2
    assert "does not point at this machine" in capsys.readouterr().out
