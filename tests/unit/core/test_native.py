"""The compiled core (``make native``): used only while it matches the sources, same results.

The in-process suite runs whichever build :data:`riskengine.core.BUILD` chose (compiled under
``make test``, which builds it); the other build is run here in a subprocess over a copy of the
package without the compiled folder, through the pinned-output test, so both builds meet the
same digest.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import riskengine.core.evaluate
import riskengine.core.patterns.spoofing
from riskengine.core import BUILD
from riskengine.core.native import (
    COMPILED_DIR,
    PACKAGE,
    STAMP,
    compiled_module,
    compiled_sources,
    read_build,
    source_digest,
)

REPO = Path(__file__).resolve().parents[3]


def _stamp(tmp_path: Path, content: str) -> Path:
    """A build folder in ``tmp_path``: the stamp, and an (empty) extension file per module."""
    for source in compiled_sources():
        extension = compiled_module(source, tmp_path)
        extension.parent.mkdir(parents=True, exist_ok=True)
        extension.touch()
    stamp = tmp_path / "STAMP.json"
    stamp.write_text(content)
    return stamp


def test_a_build_is_used_only_when_its_stamp_matches_the_sources(tmp_path: Path) -> None:
    matching = _stamp(tmp_path, json.dumps({"digest": source_digest(), "compiler": "mypyc 9"}))
    assert read_build(matching).compiled and read_build(matching).detail == "mypyc 9"
    compiled_module(PACKAGE / "state.py", tmp_path).unlink()
    incomplete_folder = read_build(matching)
    assert not incomplete_folder.compiled and "missing state.py" in incomplete_folder.detail

    missing = read_build(tmp_path / "absent.json")
    others = tmp_path / "others"
    others.mkdir()
    stale = read_build(_stamp(others, json.dumps({"digest": "0" * 64, "compiler": "mypyc 9"})))
    unreadable = read_build(_stamp(others, "{not json"))
    incomplete = read_build(_stamp(others, json.dumps({"digest": source_digest()})))
    assert not any(build.compiled for build in (missing, stale, unreadable, incomplete))
    assert "make native" in str(missing) and "stale" in str(stale)
    assert "unreadable" in str(unreadable) and "unreadable" in str(incomplete)


def test_the_digest_covers_every_compiled_module_and_no_chooser() -> None:
    names = {path.relative_to(COMPILED_DIR.parent).as_posix() for path in compiled_sources()}
    assert {"evaluate.py", "state.py", "order_book.py", "patterns/spoofing.py"} <= names
    # The modules that choose the build run before it is chosen: never compiled.
    assert not names & {"__init__.py", "native.py", "patterns/__init__.py"}


def test_this_process_runs_the_build_its_folder_holds() -> None:
    assert read_build(STAMP) == BUILD
    if BUILD.compiled:
        assert all(compiled_module(source).is_file() for source in compiled_sources())
    for module in (riskengine.core.evaluate, riskengine.core.patterns.spoofing):
        file = Path(str(module.__file__))
        assert (file.suffix == ".so") is BUILD.compiled, (module.__name__, file, BUILD)
        assert (COMPILED_DIR in file.parents) is BUILD.compiled


def test_the_interpreted_core_gives_the_pinned_outputs_as_the_compiled_one_does(tmp_path: Path) -> None:
    if not BUILD.compiled:
        pytest.skip(f"this process runs the interpreted core ({BUILD}): the suite itself covers it")
    ignore = shutil.ignore_patterns("_compiled", "__pycache__", "*.egg-info")
    for folder in ("riskengine", "tests"):
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=ignore, symlinks=True)
    for config in ("setup.cfg", "pyproject.toml"):
        shutil.copy2(REPO / config, tmp_path / config)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/unit/worker/test_output_parity.py",
            "tests/unit/core/test_native.py::test_this_process_runs_the_build_its_folder_holds",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "3 passed" in done.stdout, done.stdout[-3000:]
