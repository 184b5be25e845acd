"""The container images, checked without a container engine: hadolint, shellcheck, the rules we
hold the Dockerfiles to, and the entrypoint's roles run with stand-in commands."""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[3]
DOCKER = ROOT / "docker"
DOCKERFILES = (DOCKER / "Dockerfile", DOCKER / "connect.Dockerfile")
#: hadolint and shellcheck come as binaries inside their wheels (the test extra), next to Python.
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    assert path.is_file(), f"{name} is missing from {BIN}: make install (the test extra pins it)"
    return str(path)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing(dockerfile: Path):
    # --failure-threshold info: even an informational finding fails the check.
    result = subprocess.run(
        [_tool("hadolint"), "--no-color", "--failure-threshold", "info", str(dockerfile)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_finds_nothing_in_the_entrypoint():
    result = subprocess.run(
        [_tool("shellcheck"), str(DOCKER / "entrypoint.sh")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _stages(dockerfile: Path) -> list[list[str]]:
    """The instructions of each stage (continuation lines joined), comments dropped."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def _base_images(dockerfile: Path) -> list[str]:
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", dockerfile.read_text(), re.MULTILINE))
    images = []
    for stage in _stages(dockerfile):
        image = stage[0].split()[1]
        images.append(re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image))
    return images


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_are_multi_stage_pinned_non_root_and_health_checked(dockerfile: Path):
    stages = _stages(dockerfile)
    assert len(stages) >= 2, "the build runs in its own stage"
    for image in _base_images(dockerfile):
        _name, _, tag = image.partition(":")
        assert tag and tag != "latest" and re.search(r"\d+\.\d+", tag), f"{image}: pin an exact version"
    final = stages[-1]
    users = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    assert users, "the final stage names its user"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) > 0, "a numeric, non-root user (runAsNonRoot can verify it)"
    assert any(line.upper().startswith("HEALTHCHECK ") for line in final)
    final_text = " ".join(final)
    for tool in ("gcc", "build-essential", "mvn ", "apt-get install"):
        assert tool not in final_text, f"{tool} in the final stage"


def test_maven_in_the_connect_image_checks_checksums_strictly():
    runs = re.findall(r"\bmvn [^\n]*", (DOCKER / "connect.Dockerfile").read_text())
    assert runs, "the plugin is built with Maven"
    for run in runs:
        assert "--strict-checksums" in run.split(), run


def test_the_engine_image_installs_the_pins_of_setup_cfg():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    required = [r.strip() for r in config["options"]["install_requires"].splitlines() if "==" in r]
    pins = {
        line.split("==")[0].lower(): line.split("==")[1]
        for line in (DOCKER / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    }
    for requirement in required:
        name, version = requirement.split("==")
        name = re.sub(r"\[.*\]", "", name).lower()
        assert pins.get(name) == version, (
            f"docker/constraints.txt pins {name} {pins.get(name)}, setup.cfg {version}"
        )
    engine = (DOCKER / "Dockerfile").read_text()
    assert "--requirement /src/constraints.txt" in engine and "--only-binary=:all:" in engine


def test_the_engine_image_compiles_the_core_with_the_mypy_of_setup_cfg():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    mypy = next(r.strip() for r in config["options.extras_require"]["test"].splitlines() if "mypy==" in r)
    build, final = _stages(DOCKER / "Dockerfile")[0], _stages(DOCKER / "Dockerfile")[-1]
    build_text = " ".join(build)
    assert mypy in build_text and "build-native-core --force" in build_text
    # The image is not built at all when its core would run interpreted.
    assert "assert core.BUILD.compiled" in build_text
    assert "build-tools" not in " ".join(final), "mypy's virtualenv stays in the build stage"


@pytest.fixture
def stand_ins(tmp_path: Path) -> Path:
    """A PATH folder whose faust, riskengine and riskengine-producer print their arguments."""
    for name in ("faust", "riskengine", "riskengine-producer"):
        script = tmp_path / name
        script.write_text(f'#!/bin/sh\necho {name} "$@"\n')
        script.chmod(0o755)
    return tmp_path


def _entrypoint(stand_ins: Path, *args: str, **env: str) -> str:
    environment = {"PATH": f"{stand_ins}:{os.environ['PATH']}", **env}
    result = subprocess.run(
        ["sh", str(DOCKER / "entrypoint.sh"), *args],
        capture_output=True,
        text=True,
        check=True,
        env=environment,
    )
    return result.stdout.strip()


def test_the_entrypoint_starts_each_role(stand_ins: Path):
    assert _entrypoint(stand_ins) == (
        "faust -A riskengine --datadir /var/lib/riskengine/worker --loglevel info worker --web-port 6066"
    )
    assert _entrypoint(stand_ins, "worker", "--web-port", "6067", RISKENGINE_LOG_LEVEL="debug").endswith(
        "--loglevel debug worker --web-port 6066 --web-port 6067"
    )
    assert _entrypoint(stand_ins, "producer") == "riskengine-producer"
    assert _entrypoint(stand_ins, "dashboard", "--port", "9000") == "riskengine dashboard --port 9000"
    assert _entrypoint(stand_ins, "riskengine", "topics", "create") == "riskengine topics create"
