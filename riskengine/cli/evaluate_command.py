"""``riskengine evaluate``: precision, recall and F1 per pattern, alerts against scenario labels."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from riskengine.producer import evaluation
from riskengine.producer.evaluation import evaluate, format_table, read_alerts
from riskengine.producer.files import read_labels
from riskengine.settings import Settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``evaluate`` command."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score alerts against the labels of a generated run (precision, recall, F1 per pattern)",
        description="Score a replay's alerts against `riskengine generate` labels.\n\n"
        + (evaluation.__doc__ or "").split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--labels", type=Path, required=True, metavar="FILE", help="the labels file (RUN.labels.jsonl)"
    )
    parser.add_argument(
        "--alerts",
        type=Path,
        required=True,
        metavar="PATH",
        help="alerts.jsonl, or the replay output folder holding it",
    )
    parser.add_argument(
        "--grace-seconds",
        type=float,
        default=60.0,
        metavar="S",
        help="how far past a label's end an alert without shared evidence may be (default 60)",
    )
    parser.add_argument("--json", action="store_true", help="print the scores as JSON")
    parser.set_defaults(handler=run_evaluate)


def run_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    """Print the score table; exit 2 when a file cannot be read."""
    try:
        labels = read_labels(args.labels)
        alerts = read_alerts(args.alerts)
    except OSError as exc:
        print(f"riskengine evaluate: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"riskengine evaluate: {exc}", file=sys.stderr)
        return 2
    scores = evaluate(labels, alerts, round(args.grace_seconds * 1000))
    if args.json:
        print(json.dumps([score.to_dict() for score in scores], indent=2))
    else:
        print(format_table(scores))
    return 0
