"""Every Maven run of the stack checks the repository's checksums strictly (a mismatch fails it)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from riskengine.settings import Settings
from riskengine_devtools.stack import elasticsearch
from riskengine_devtools.stack.kafka import Kafka
from riskengine_devtools.stack.service import StackError, StackPaths
from riskengine_devtools.stack.tools import maven, maven_artifact_path, maven_fetch, maven_repository

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


@pytest.fixture
def downloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in ``mvn`` that "downloads" a.b:c:1.0:zip as the bytes b"zip", recording its argv."""
    calls = tmp_path / "mvn-calls"
    target = maven_artifact_path(tmp_path, "a.b:c:1.0:zip")
    stand_in = tmp_path / "bin" / "mvn"
    stand_in.parent.mkdir()
    stand_in.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nmkdir -p {target.parent}\nprintf zip > {target}\n')
    stand_in.chmod(0o755)
    monkeypatch.setenv("PATH", f"{stand_in.parent}{os.pathsep}{os.environ['PATH']}")
    return calls


ZIP_SHA256 = hashlib.sha256(b"zip").hexdigest()


async def test_an_artifact_without_a_published_checksum_is_checked_against_its_pinned_digest(
    downloads: Path, tmp_path: Path
) -> None:
    path = await maven_fetch(
        "a.b:c:1.0:zip", cache_dir=tmp_path, log=tmp_path / "log", say=print, sha256=ZIP_SHA256
    )
    assert path.read_bytes() == b"zip"
    (argv,) = _argv(downloads)
    assert "--lax-checksums" in argv and STRICT not in argv  # the pin replaces the repository's


async def test_a_download_that_does_not_match_its_pin_is_deleted_and_fails(
    downloads: Path, tmp_path: Path
) -> None:
    with pytest.raises(StackError, match="pinned"):
        await maven_fetch(
            "a.b:c:1.0:zip", cache_dir=tmp_path, log=tmp_path / "log", say=print, sha256="0" * 64
        )
    assert not maven_artifact_path(tmp_path, "a.b:c:1.0:zip").exists()


def test_elasticsearch_is_fetched_with_a_pinned_digest() -> None:
    assert len(elasticsearch.ARTIFACT_SHA256) == 64 and elasticsearch.VERSION in elasticsearch.ARTIFACT
