"""``riskengine demo`` (what ``make demo`` runs) end to end on the running stack, for a minute.

Isolated like the other tests: its own topic suffix, app id, ports and workdir; the stack is
already up, so the demo reuses it and leaves it running. The Elasticsearch connector it deploys
is deleted afterwards.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from riskengine.settings import Settings

RISKENGINE = Path(sys.executable).parent / "riskengine"


def _command_lines() -> list[str]:
    lines = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            lines.append(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return lines


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def demo_env(settings: Settings, unique: str, tmp_path: Path):
    env = {
        **os.environ,
        "RISKENGINE_WORKER_TOPIC_SUFFIX": f"-demo{unique}",
        "RISKENGINE_WORKER_APP_ID": f"riskengine-demo-{unique}",
        "RISKENGINE_DASHBOARD_PORT": str(_free_port()),
        "RISKENGINE_PRODUCER_PORT": str(_free_port()),
        "RISKENGINE_PRODUCER_AUDIT_DB": str(tmp_path / "audit.sqlite3"),
        "RISKENGINE_WORKER_SNAPSHOT_DIR": str(tmp_path / "snapshots"),
    }
    yield env
    subprocess.run([str(RISKENGINE), "connector", "delete"], env=env, capture_output=True, timeout=60)


def test_demo_runs_everything_shows_alerts_and_stops_what_it_started(demo_env, tmp_path):
    ports = f"{_free_port()},{_free_port()}"
    workdir = tmp_path / "demo"
    result = subprocess.run(
        [str(RISKENGINE), "demo", "--duration", "75", "--workdir", str(workdir), "--worker-ports", ports],
        env=demo_env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    for step in ("stack up:", "riskengine topics create", "riskengine connector deploy", "ready:"):
        assert step in out, f"missing {step!r}:\n{out[-4000:]}"
    first = re.search(r"first alert on the dashboard, ([\d.]+) s after the demo started", out)
    assert first, f"no alert reached the dashboard:\n{out[-4000:]}"
    summaries = re.findall(
        r"produced ([\d.]+)/s, analyzed ([\d.]+)/s by 2/2 workers, lag \d+; alerts: (.*)", out
    )
    assert summaries, out[-4000:]
    assert any(float(analyzed) > 0 and alerts != "none yet" for _, analyzed, alerts in summaries), summaries
    assert "stopping the stack" not in out, "the stack was already up: the demo must leave it running"
    # Everything the demo started is gone: no process still runs from its workdir or on its ports.
    assert [line for line in _command_lines() if str(workdir) in line] == []
    for port in [
        *ports.split(","),
        demo_env["RISKENGINE_DASHBOARD_PORT"],
        demo_env["RISKENGINE_PRODUCER_PORT"],
    ]:
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", int(port))) != 0, f"port {port} still answers"
