"""`riskengine stack` against the running stack: status, idempotent up, and what up configures."""

import json
import os
import socket
import subprocess
import sys
import time

import aioboto3
import aiohttp
import pytest

from riskengine.connections import s3_client_options
from riskengine.settings import Settings
from riskengine_devtools.stack import build_services, service_names
from riskengine_devtools.stack.procs import PidRecord, is_alive, read_pid_file

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


def test_down_stops_what_up_started_and_leaves_other_stacks_alone(settings, tmp_path):
    # A second, private stack (the S3 server only: it starts in a second) in its own folder and port.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "RISKENGINE_STACK_DIR": str(tmp_path / "stack"),
        "RISKENGINE_CACHE_DIR": str(settings.cache_dir.absolute()),
        "RISKENGINE_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    private = Settings.from_env(env)
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
