"""`riskengine stack` against the running stack: status, idempotent up, and what up configures."""

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import aioboto3
import aiohttp
import pytest

from riskengine.connections import s3_client_options
from riskengine.settings import Settings
from riskengine_devtools.stack import build_services, service_names
from riskengine_devtools.stack.procs import PidRecord, is_alive, owns, read_pid_file

pytestmark = pytest.mark.integration

_JSON = {"Content-Type": "application/vnd.schemaregistry.v1+json"}


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # The installed entry point, in a child process: the same settings (environment) and folders.
    code = "import sys; from riskengine.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, "stack", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
    )


def _pids(settings: Settings) -> dict[str, PidRecord | None]:
    return {service.name: read_pid_file(service.pid_file) for service in build_services(settings)}


def test_status_reports_every_service_ready(settings):
    result = _cli("status")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert sorted(rows) == sorted(service_names())
    for name, row in rows.items():
        assert " ready " in row, row
        assert "127.0.0.1:" in row, name


def test_a_second_up_starts_nothing(settings):
    before = _pids(settings)
    assert all(record is not None for record in before.values()), "stack not started by `stack up`"
    result = _cli("up")
    assert result.returncode == 0, result.stdout + result.stderr
    actions = {line.split()[0]: line.split()[2] for line in result.stdout.splitlines() if "pid" in line}
    assert actions == dict.fromkeys(service_names(), "reused"), result.stdout
    assert "started" not in result.stdout
    assert _pids(settings) == before


async def test_up_set_the_registry_to_backward_compatibility(settings, unique):
    url = settings.schema_registry_url
    subject = f"it-stack-{unique}-value"
    v1 = {"type": "record", "name": "T", "fields": [{"name": "a", "type": "string"}]}
    # A new field without a default: readers of v2 cannot read v1 data.
    v2 = {**v1, "fields": [*v1["fields"], {"name": "b", "type": "int"}]}
    async with aiohttp.ClientSession(headers=_JSON) as http:
        async with http.get(f"{url}/config") as response:
            assert (await response.json(content_type=None))["compatibilityLevel"] == "BACKWARD"
        try:
            async with http.post(
                f"{url}/subjects/{subject}/versions", data=json.dumps({"schema": json.dumps(v1)})
            ) as response:
                assert response.status == 200
            async with http.post(
                f"{url}/subjects/{subject}/versions", data=json.dumps({"schema": json.dumps(v2)})
            ) as response:
                assert response.status == 409
        finally:
            async with http.delete(f"{url}/subjects/{subject}"):
                pass
            async with http.delete(f"{url}/subjects/{subject}?permanent=true"):
                pass


async def test_up_created_the_snapshot_bucket(settings):
    async with aioboto3.Session().client("s3", **s3_client_options(settings)) as s3:
        await s3.head_bucket(Bucket=settings.s3_bucket)


def _ids(pid: int) -> dict[str, list[int]]:
    """The real, effective, saved and file-system user and group ids of ``pid``."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {field: [int(value) for value in status[field].split()] for field in ("Uid", "Gid")}


def _group(leader: int) -> list[int]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[2]) == leader and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def test_every_server_runs_unprivileged(settings):
    for service in build_services(settings):
        record = read_pid_file(service.pid_file)
        assert record is not None and owns(record), f"{service.name} not started by `stack up`"
        # The recorded process is the server (or Elasticsearch's launcher parent), not a root wrapper;
        # so is everything in the process group it leads (Elasticsearch's JVMs).
        processes = _group(record.pid)
        assert record.pid in processes, service.name
        for pid in processes:
            ids = _ids(pid)
            assert 0 not in ids["Uid"] and 0 not in ids["Gid"], f"{service.name}: pid {pid} {ids}"
        # As root, each server is its own account and owns what it writes.
        if os.geteuid() == 0:
            assert service.system_user is not None, service.name
            uid = pwd.getpwnam(service.system_user).pw_uid
            assert _ids(record.pid)["Uid"][0] == uid, service.name
            for folder in service.writable_dirs:
                assert folder.stat().st_uid == uid, f"{service.name}: {folder}"


def test_down_stops_what_up_started_and_leaves_other_stacks_alone(settings, unique):
    # A second, private stack (the S3 server only: it starts in a second) in its own folder and port;
    # under the stack dir, not pytest's folder: that one is private to root, and the server is not.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stack_dir = settings.stack_dir.absolute() / f"it-s3-{unique}"
    env = {
        **os.environ,
        "RISKENGINE_STACK_DIR": str(stack_dir),
        "RISKENGINE_CACHE_DIR": str(settings.cache_dir.absolute()),
        "RISKENGINE_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    private = Settings.from_env(env)
    try:
        _up_and_down_a_private_s3(settings, private, env)
    finally:
        _cli("down", "--only", "s3", env=env)
        shutil.rmtree(stack_dir, ignore_errors=True)


def _up_and_down_a_private_s3(settings: Settings, private: Settings, env: dict[str, str]) -> None:
    assert _cli("up", "--only", "s3", env=env).returncode == 0
    (service,) = build_services(private, ["s3"])
    record = read_pid_file(service.pid_file)
    assert record is not None and is_alive(record.pid)
    shared_before = _pids(settings)

    result = _cli("down", "--only", "s3", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    deadline = time.monotonic() + 10
    while is_alive(record.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not is_alive(record.pid), "stack down left the S3 server running"
    assert read_pid_file(service.pid_file) is None
    # The shared stack the other tests use is untouched.
    assert _pids(settings) == shared_before
    assert _cli("status").returncode == 0
