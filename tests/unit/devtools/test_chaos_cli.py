"""``riskengine chaos``'s command line, results table and exit reasons (no services)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from riskengine_devtools.chaos.scenarios import SCENARIOS, Result, why_exited
from riskengine_devtools.chaos.verifier import DELIVERED, LOST, Recovery
from riskengine_devtools.chaos_command import results_table

RISKENGINE = Path(sys.executable).parent / "riskengine"


def test_an_unknown_scenario_is_refused_before_anything_runs() -> None:
    done = subprocess.run(
        [str(RISKENGINE), "chaos", "sigkill", "no-such-scenario"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert "unknown scenario no-such-scenario" in done.stderr
    assert ", ".join(SCENARIOS) in done.stderr


def test_the_issue_s_scenarios_are_all_there_in_priority_order() -> None:
    assert list(SCENARIOS) == ["sigkill", "sequence", "poison", "broker", "registry", "elastic", "s3"]


def _result(name: str, verdict: str, recovery: Recovery, note: str = "") -> Result:
    return Result(name, 100, 40, 0 if verdict == DELIVERED else 3, 2, verdict, recovery, 5, 1, 90.0, (), note)


def test_the_results_table_has_a_row_per_scenario_with_every_column() -> None:
    table = results_table(
        [
            _result("sigkill", DELIVERED, Recovery((1.5, 4.25), 2000)),
            _result("broker", LOST, Recovery((None,), 2000)),
            _result("elastic", DELIVERED, Recovery((0.0,), 2000), "index complete 6 s after ES was back"),
            _result("poison", DELIVERED, Recovery((), 2000)),
        ],
        ["s3"],
    )
    lines = table.splitlines()
    assert lines[0].split("|")[1:-1] == [
        " scenario ",
        " inputs ",
        " outputs ",
        " lost ",
        " duplicated ",
        " verdict ",
        " recovery time ",
        " worker restarts ",
    ]
    assert lines[2] == (
        "| sigkill | 100 | 40 | 0 | 2 | ALL-RECORDS-DELIVERED | 4.2 s (each: 1.5, 4.2) | 5 (1 unplanned) |"
    )
    assert "| broker | 100 | 40 | 3 | 2 | RECORDS-LOST | never |" in lines[3]
    assert "0.0 s; index complete 6 s after ES was back" in lines[4]
    assert "| poison |" in lines[5] and "| - |" in lines[5]
    assert lines[6] == "| s3 | - | - | - | - | DID-NOT-RUN | - | - |"


def test_the_reason_a_worker_exited_is_its_last_error_line() -> None:
    log = "\n".join(
        [
            "[2026-12-02 15:24:50,000] [1] [INFO] [^Worker]: Starting...",
            "[2026-12-02 15:24:50,875] [1] [ERROR] [^Worker]: Error: RegistryError('unreachable')",
            "Traceback (most recent call last):",
            "[2026-12-02 15:24:51,000] [1] [INFO] [^Worker]: Closing event loop",
        ]
    )
    assert why_exited(log).endswith("Error: RegistryError('unreachable')")
    assert why_exited("only a line\n") == "only a line"
    assert why_exited("") == "empty log"
