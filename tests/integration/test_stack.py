"""`riskengine stack` against the running stack: status, idempotent up, and what up configures."""

import json
import subprocess
import sys

import aioboto3
import aiohttp
import pytest

from riskengine.objectstore import s3_client_options
from riskengine.settings import Settings
from riskengine.stack import build_services, service_names
from riskengine.stack.procs import PidRecord, read_pid_file

pytestmark = pytest.mark.integration

_JSON = {"Content-Type": "application/vnd.schemaregistry.v1+json"}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    # The installed entry point, in a child process: the same settings (environment) and folders.
    code = "import sys; from riskengine.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, "stack", *args], capture_output=True, text=True, timeout=600, check=False
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
