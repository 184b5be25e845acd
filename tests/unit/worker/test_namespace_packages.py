"""Python started in the repository root still imports other distributions' ``tables`` and ``agents``.

The links ``agents`` -> riskengine/worker/agents and ``tables`` -> riskengine/worker/tables sit in the
repository root, which is ``sys.path[0]`` of a Python started there. The folders have no __init__.py:
as namespace portions they give way to a regular package of the same name anywhere on the path
(PyTables' ``tables``, say). An __init__.py in either would make the link shadow that package.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
NAMES = ("tables", "agents")
#: Run in the repository root: what comes first on the path, and where each name is found.
PROGRAM = "import sys, tables, agents; print(sys.path[0]); print(tables.__file__, agents.__file__)"


def test_the_repository_roots_links_shadow_no_installed_tables_or_agents(tmp_path: Path) -> None:
    for name in NAMES:
        assert (REPO / name).resolve() == REPO / "riskengine" / "worker" / name, f"{name} link moved"
    site = tmp_path / "site-packages"
    for name in NAMES:
        (site / name).mkdir(parents=True)
        (site / name / "__init__.py").write_text(f'"""Another distribution\'s {name}."""\n')
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONSAFEPATH", "PYTHONHOME")}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, tables, agents; print(sys.path[0]); print(tables.__file__, agents.__file__)",
        ],
        cwd=REPO,
        env={**environment, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    first_on_path, found = done.stdout.splitlines()
    assert first_on_path == ""  # the current folder, the repository root, comes first
    assert found.split() == [str(site / name / "__init__.py") for name in NAMES]
