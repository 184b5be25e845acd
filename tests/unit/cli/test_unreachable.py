"""Every command that reaches a service prints one clear line naming the service and the setting
when it is unreachable, and exits 1 (no traceback). The services are pointed at a port nobody
listens on: no stack, no stand-ins."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from riskengine.cli import main


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed again: connecting is refused


@pytest.fixture
def nowhere(monkeypatch: pytest.MonkeyPatch) -> str:
    """Every service's setting pointed at a closed port; returns ``127.0.0.1:<port>``."""
    address = f"127.0.0.1:{closed_port()}"
    monkeypatch.setenv("RISKENGINE_KAFKA_BOOTSTRAP_SERVERS", address)
    for name in ("SCHEMA_REGISTRY_URL", "S3_ENDPOINT_URL", "CONNECT_URL", "ELASTICSEARCH_URL"):
        monkeypatch.setenv(f"RISKENGINE_{name}", f"http://{address}")
    return address


def reference_file(tmp_path: Path) -> str:
    path = tmp_path / "reference.json"
    path.write_text('{"profiles": [], "sanctionedUsers": []}')
    return str(path)


COMMANDS = {
    "topics create": (["topics", "create"], "Kafka", "RISKENGINE_KAFKA_BOOTSTRAP_SERVERS"),
    "schemas register": (["schemas", "register"], "schema registry", "RISKENGINE_SCHEMA_REGISTRY_URL"),
    "snapshot list": (["snapshot", "list"], "S3", "RISKENGINE_S3_ENDPOINT_URL"),
    "snapshot restore": (["snapshot", "restore", "--datadir", "{tmp}/w"], "S3", "RISKENGINE_S3_ENDPOINT_URL"),
    "tail": (["tail", "risk-alerts"], "Kafka", "RISKENGINE_KAFKA_BOOTSTRAP_SERVERS"),
    "reference publish": (
        ["reference", "publish", "{reference}"],
        "Kafka",
        "RISKENGINE_KAFKA_BOOTSTRAP_SERVERS",
    ),
    "connector status": (["connector", "status"], "Kafka Connect", "RISKENGINE_CONNECT_URL"),
    "bench-e2e": (
        ["bench-e2e", "--trades", "100", "--event-loop", "aio", "--order-flow-trades", "0"],
        "Kafka",
        "RISKENGINE_KAFKA_BOOTSTRAP_SERVERS",
    ),
}


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unreachable_service_is_one_line_naming_it_and_its_setting(command, nowhere, tmp_path, capsys):
    argv, service, setting = COMMANDS[command]
    argv = [a.format(tmp=tmp_path, reference=reference_file(tmp_path)) for a in argv]
    assert main(argv) == 1
    captured = capsys.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    (line,) = lines
    assert "Traceback" not in line
    assert service in line and setting in line and nowhere in line, line
    assert line.startswith("riskengine ")


def test_an_s3_refusal_is_one_line_too():
    from botocore.exceptions import ClientError

    from riskengine.cli.unreachable import unreachable_line
    from riskengine.settings import Settings

    refused = ClientError({"Error": {"Code": "NoSuchBucket", "Message": "gone"}}, "ListObjectsV2")
    line = unreachable_line(RuntimeError("listing failed"), Settings.from_env({}))
    assert line is None  # not a service failure: the command's own error handling applies
    wrapped = RuntimeError("listing failed")
    wrapped.__cause__ = refused
    line = unreachable_line(wrapped, Settings.from_env({"RISKENGINE_S3_BUCKET": "b-1"}))
    assert line is not None and "refused" in line and "b-1" in line and "RISKENGINE_S3_BUCKET" in line
    assert "NoSuchBucket" in line and "\n" not in line
