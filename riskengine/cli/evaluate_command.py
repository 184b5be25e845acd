"""``riskengine evaluate``: alert quality per pattern, alerts and scores against scenario labels."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from riskengine.producer import evaluation
from riskengine.producer.evaluation import (
    TradePopulation,
    default_profiles_path,
    default_trades_path,
    evaluate_run,
    format_report,
    read_alerts,
    read_analyzed_trades,
    read_profiles,
)
from riskengine.producer.evaluation_report import ReportInputs, render_report
from riskengine.producer.files import read_labels
from riskengine.settings import Settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``evaluate`` command."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score alerts and risk scores against the labels of a generated run (precision, recall, "
        "benign alert rates, top-100 precision, score AUC per pattern; optional HTML report)",
        description="Score a replay's alerts and risk scores against `riskengine generate` labels.\n\n"
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
        "--trades",
        type=Path,
        metavar="FILE",
        help="the replay's analyzed-trades.jsonl (default: the one next to alerts.jsonl when --alerts "
        "is the replay folder; without it the trade-based figures are n/a)",
    )
    parser.add_argument(
        "--profiles",
        type=Path,
        metavar="FILE",
        help="the run's UserProfile JSON lines, or a reference JSON with profiles (default: "
        "RUN.profiles.jsonl next to RUN.labels.jsonl; without it the account-type split is n/a)",
    )
    parser.add_argument(
        "--report", type=Path, metavar="FILE.html", help="also write the figures and charts as an HTML page"
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
    """Print the score tables (and write the report); exit 2 when a file cannot be read or written."""
    trades_path: Path | None = args.trades or default_trades_path(args.alerts)
    profiles_path: Path | None = args.profiles or default_profiles_path(args.labels)
    try:
        labels = read_labels(args.labels)
        alerts = read_alerts(args.alerts)
        account_types = None if profiles_path is None else read_profiles(profiles_path)
        trades = (
            None
            if trades_path is None
            else TradePopulation.collect(read_analyzed_trades(trades_path), labels)
        )
    except OSError as exc:
        print(f"riskengine evaluate: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    except ValueError as exc:  # UnicodeDecodeError included
        print(f"riskengine evaluate: {exc}", file=sys.stderr)
        return 2
    result = evaluate_run(labels, alerts, round(args.grace_seconds * 1000), trades, account_types)
    if args.report is not None:
        alerts_file = args.alerts / "alerts.jsonl" if args.alerts.is_dir() else args.alerts
        inputs = ReportInputs(
            labels=str(args.labels),
            alerts=str(alerts_file),
            trades=None if trades_path is None else str(trades_path),
            profiles=None if profiles_path is None else str(profiles_path),
            label_count=len(labels),
            complete_labels=sum(label.complete for label in labels),
            alert_count=len(alerts),
            grace_ms=round(args.grace_seconds * 1000),
        )
        try:
            args.report.parent.mkdir(parents=True, exist_ok=True)
            args.report.write_text(render_report(result, inputs), encoding="utf-8")
        except OSError as exc:
            print(f"riskengine evaluate: cannot write {args.report}: {exc.strerror}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(result.rows(), indent=2))
    else:
        print(format_report(result))
    if args.report is not None:
        print(f"report: {args.report}", file=sys.stderr if args.json else sys.stdout)
    return 0
