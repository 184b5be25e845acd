"""A production install carries no development tooling.

The main distribution's wheel (built here offline, as ``pip wheel`` builds it for an install) has the
worker's namespace packages and the Avro schemas, and nothing of riskengine-devtools: no module, no
stack config file, no code that drives Maven, Go or the JVM servers. Without riskengine-devtools the
``riskengine`` command names them for ``stack``, ``demo`` and the benchmarks; with it, it has them.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import riskengine.cli
from riskengine.cli import DEVTOOLS_COMMANDS, PLUGIN_GROUP, build_parser, main

REPO = Path(__file__).resolve().parents[3]
#: Left out of the copy the wheel is built from: git, environments, downloads, caches ...
NOT_SOURCES = (".git", ".venv", ".stack", ".cache", ".*_cache", ".hypothesis")
#: ... and what earlier builds left.
BUILT = ("__pycache__", "build", "dist", "*.egg-info")
#: What only the development tools' code says: Maven, Go builds, the JVM servers of the stack.
TOOLING_STRINGS = ("mvn", "go install", "ConnectDistributed", "kafka.Kafka")
#: Folders whose files must be in the wheel (the worker's namespace packages, the contracts).
PACKAGED = [
    ("riskengine/worker/agents", "*.py"),
    ("riskengine/worker/tables", "*.py"),
    ("riskengine/contracts/schemas", "*.avsc"),
]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Every file of the main distribution's wheel, by its path in the wheel.

    Built from a copy of the checkout: setuptools builds in the source folder, and a ``build/`` left
    there by an earlier build would go into the wheel too. No index and no build isolation: the
    build backend is the one installed beside the tests.
    """
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(*NOT_SOURCES, *BUILT))
    offline = ["--no-deps", "--no-build-isolation", "--no-index", "--quiet"]
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", *offline, "--wheel-dir", str(work / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (path,) = (work / "dist").glob("*.whl")
    assert path.name.startswith("riskengine-"), path.name
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


@pytest.mark.parametrize(("folder", "pattern"), PACKAGED)
def test_the_wheel_has_the_workers_namespace_packages_and_the_schemas(
    wheel: dict[str, bytes], folder: str, pattern: str
) -> None:
    expected = {f"{folder}/{path.name}" for path in (REPO / folder).glob(pattern)}
    assert expected, f"nothing matches {folder}/{pattern} in the checkout"
    assert sorted(expected - set(wheel)) == []


def test_the_wheel_has_no_module_of_the_development_tools(wheel: dict[str, bytes]) -> None:
    assert [name for name in wheel if "riskengine_devtools" in name] == []
    (top_level,) = [name for name in wheel if name.endswith(".dist-info/top_level.txt")]
    assert wheel[top_level].decode().split() == ["riskengine"]
    (declared,) = [name for name in wheel if name.endswith(".dist-info/entry_points.txt")]
    assert "riskengine_devtools" not in wheel[declared].decode()
    assert f"[{PLUGIN_GROUP}]" not in wheel[declared].decode()


def test_the_wheel_has_none_of_the_stacks_config_files(wheel: dict[str, bytes]) -> None:
    assert [name for name in wheel if name.endswith((".xml", ".properties"))] == []


def test_no_module_in_the_wheel_drives_maven_go_or_the_stacks_servers(wheel: dict[str, bytes]) -> None:
    found = {
        name: [text for text in TOOLING_STRINGS if text in content.decode()]
        for name, content in wheel.items()
        if name.endswith(".py")
    }
    assert {name: texts for name, texts in found.items() if texts} == {}


def commands(parser: argparse.ArgumentParser) -> set[str]:
    """The sub-commands ``parser`` knows."""
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(subparsers.choices)


@pytest.mark.parametrize("argv", [["stack", "up"], ["demo"], ["bench", "core"], ["bench-e2e"]])
def test_without_the_development_tools_their_commands_say_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    monkeypatch.setattr(riskengine.cli, "entry_points", lambda **_: [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"riskengine {argv[0]}: part of the development tools, which are not installed" in err
    assert "./devtools" in err
    assert commands(build_parser()).isdisjoint(DEVTOOLS_COMMANDS)


def test_with_the_development_tools_their_commands_are_registered() -> None:
    assert set(DEVTOOLS_COMMANDS) <= commands(build_parser())
    # ... by riskengine-devtools' entry points: the main distribution declares none of them.
    declared = {
        entry.name: entry.dist.name if entry.dist else None for entry in entry_points(group=PLUGIN_GROUP)
    }
    assert declared == dict.fromkeys(DEVTOOLS_COMMANDS, "riskengine-devtools")
