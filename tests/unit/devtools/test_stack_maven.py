"""Every Maven run of the stack checks the repository's checksums strictly (a mismatch fails it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from riskengine.settings import Settings
from riskengine_devtools.stack.kafka import Kafka
from riskengine_devtools.stack.service import StackPaths
from riskengine_devtools.stack.tools import maven, maven_fetch, maven_repository

STRICT = "--strict-checksums"


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in ``mvn`` first on PATH, appending each command line (one line) to the file returned."""
    calls = tmp_path / "mvn-calls"
    stand_in = tmp_path / "bin" / "mvn"
    stand_in.parent.mkdir()
    stand_in.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    stand_in.chmod(0o755)
    monkeypatch.setenv("PATH", f"{stand_in.parent}{os.pathsep}{os.environ['PATH']}")
    return calls


def _argv(calls: Path) -> list[list[str]]:
    return [line.split() for line in calls.read_text().splitlines()]


async def test_a_maven_run_is_batch_strict_and_uses_the_caches_repository(runs: Path, tmp_path: Path) -> None:
    await maven(["validate"], what="test", cache_dir=tmp_path, log=tmp_path / "log", say=print)
    (argv,) = _argv(runs)
    assert argv[:3] == ["-B", STRICT, "-Dstyle.color=never"]
    assert f"-Dmaven.repo.local={maven_repository(tmp_path)}" in argv
    assert argv[-1] == "validate"


async def test_an_artifact_download_is_strict(runs: Path, tmp_path: Path) -> None:
    await maven_fetch("a.b:c:1.0:zip", cache_dir=tmp_path, log=tmp_path / "log", say=print)
    (argv,) = _argv(runs)
    assert STRICT in argv
    assert "-Dartifact=a.b:c:1.0:zip" in argv


async def test_the_kafka_classpath_download_is_strict(
    runs: Path, settings: Settings, paths: StackPaths
) -> None:
    assert await Kafka(settings, paths).install(print)
    (argv,) = _argv(runs)
    assert STRICT in argv
    assert "dependency:copy-dependencies" in argv
