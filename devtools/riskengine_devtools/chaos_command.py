"""``riskengine chaos [SCENARIO...]``: the chaos suite (see :mod:`riskengine_devtools.chaos`).

Runs the scenarios one after the other on the local stack (``riskengine stack up`` first), prints
progress, one line per verifier check and a verdict per scenario, and the results table at the end.
Exit code 0 only when every scenario ends ``ALL-RECORDS-DELIVERED``; 1 otherwise; 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from riskengine.cli.unreachable import ServiceUnreachable, reaching, report
from riskengine.settings import Settings
from riskengine_devtools.chaos.scenarios import SCENARIOS, ChaosError, Result, run_scenario


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``chaos`` command."""
    parser = subparsers.add_parser(
        "chaos",
        help="the chaos suite on the local stack: faults under steady load, verified record by record",
        description="Each scenario: fresh topics, worker processes under a supervisor, steady load, a "
        "fault mid-load, then a verifier that reads every output topic back. Scenarios: "
        + "; ".join(f"{s.name}: {s.summary}" for s in SCENARIOS.values()),
    )
    parser.add_argument(
        "scenarios",
        nargs="*",
        metavar="SCENARIO",
        help=f"any of {', '.join(SCENARIOS)} (default: all, in this order)",
    )
    parser.add_argument("--rate", type=float, default=250.0, help="input events/s (default 250)")
    parser.add_argument("--seconds", type=float, default=75.0, help="load duration at that rate (default 75)")
    parser.add_argument(
        "--seed", type=int, default=15, help="seed of the random moments and garbage (default 15)"
    )
    parser.add_argument(
        "--workdir", type=Path, help="worker datadirs and logs (default: RISKENGINE_STACK_DIR/chaos)"
    )
    parser.add_argument("--table", type=Path, help="also write the results table (Markdown) to this file")
    parser.set_defaults(handler=chaos)


def chaos(args: argparse.Namespace, settings: Settings) -> int:
    """Run the selected scenarios and print the results table."""
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown or args.rate <= 0 or args.seconds <= 0:
        print(
            f"riskengine chaos: unknown scenario {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}"
            if unknown
            else "riskengine chaos: --rate and --seconds must be positive",
            file=sys.stderr,
        )
        return 2
    # The clients' lines (group joins; while the broker is down, an error every half second) would
    # drown the progress lines; the load counts its failed sends and the verifier sees the rest.
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    logging.getLogger("elastic_transport").setLevel(logging.WARNING)
    names = args.scenarios or list(SCENARIOS)
    workroot = (args.workdir or settings.stack_dir / "chaos").absolute()
    results: list[Result] = []
    failures: list[str] = []
    for name in names:
        try:
            results.append(
                reaching(
                    run_scenario(
                        SCENARIOS[name], settings, workroot, args.rate, args.seconds, _say, args.seed
                    ),
                    settings,
                )
            )
        except (ChaosError, ServiceUnreachable) as exc:
            if isinstance(exc, ServiceUnreachable):
                report("chaos", exc)
            _say(f"{name}: could not run: {exc}")
            failures.append(name)
    table = results_table(results, failures)
    print("\n" + table, flush=True)
    if args.table:
        args.table.write_text(table + "\n")
    ok = not failures and all(r.verdict == "ALL-RECORDS-DELIVERED" for r in results)
    return 0 if ok else 1


def results_table(results: Sequence[Result], failures: Sequence[str] = ()) -> str:
    """The results as a Markdown table, one row per scenario."""
    rows = [
        "| scenario | inputs | outputs | lost | duplicated | verdict | recovery time | worker restarts |",
        "|---|---:|---:|---:|---:|---|---|---:|",
    ]
    for r in results:
        rows.append(
            f"| {r.scenario} | {r.inputs} | {r.outputs} | {r.lost} | {r.duplicated} | {r.verdict} | "
            f"{r.recovery_text} | {r.restarts} ({r.unplanned} unplanned) |"
        )
    for name in failures:
        rows.append(f"| {name} | - | - | - | - | DID-NOT-RUN | - | - |")
    return "\n".join(rows)
