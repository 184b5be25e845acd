"""``riskengine reference publish``: a bad file or version publishes nothing; Kafka down is one line.

Run as the installed console script, so what a user sees on stderr (logging included) is what is
checked. Kafka is pointed at a port where nothing listens: a command that got past validation
would fail there with exit 1, so exit 2 also shows nothing was sent. Publishing for real is
``tests/integration/test_worker_reference.py``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

RISKENGINE = Path(sys.executable).parent / "riskengine"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def publish(*argv: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, RISKENGINE_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{closed_port()}")
    return subprocess.run(
        [str(RISKENGINE), "reference", "publish", *argv], env=env, capture_output=True, text=True, timeout=60
    )


def write(tmp_path: Path, document: object) -> str:
    path = tmp_path / "reference.json"
    path.write_text(json.dumps(document))
    return str(path)


PROFILE: dict[str, Any] = {"userId": "u-1", "customerId": "c-1", "kycTier": 1, "country": "DE"}
GOOD: dict[str, Any] = {
    "profiles": [PROFILE],
    "sanctionedCountries": ["KP"],
}


@pytest.mark.parametrize(
    ("document", "named"),
    [
        (GOOD | {"restrictedCountries": ["IR", "Iran"]}, "restrictedCountries[1]"),
        (GOOD | {"profiles": [PROFILE | {"kycTier": 7}]}, "profiles[0].kycTier"),
        (GOOD | {"markets": {"BTC/USDT": {"referencePrice": 0}}}, "markets['BTC/USDT'].referencePrice"),
        (GOOD | {"sanctionedCountry": ["KP"]}, "unknown key 'sanctionedCountry'"),
    ],
)
def test_a_bad_file_is_one_line_naming_the_entry_and_nothing_is_published(tmp_path, document, named):
    done = publish(write(tmp_path, document))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert named in lines[0] and "nothing published" in lines[0]
    assert done.stdout == ""


def test_an_unreadable_file_is_one_line(tmp_path):
    done = publish(str(tmp_path / "missing.json"))
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1
    assert "missing.json" in done.stderr
    (tmp_path / "broken.json").write_text("{")
    done = publish(str(tmp_path / "broken.json"))
    assert done.returncode == 2 and "not valid JSON" in done.stderr and len(done.stderr.splitlines()) == 1


def test_kafka_unreachable_is_one_line_naming_the_setting(tmp_path):
    done = publish(write(tmp_path, GOOD))
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "RISKENGINE_KAFKA_BOOTSTRAP_SERVERS" in lines[0] and "Traceback" not in done.stderr


@pytest.mark.parametrize("version", ["0", "-1", "two"])
def test_a_version_must_be_a_positive_integer(tmp_path, version):
    done = publish(write(tmp_path, GOOD), "--version", version)
    assert done.returncode == 2 and "--version" in done.stderr
