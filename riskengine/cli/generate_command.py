"""``riskengine generate``: the simulated trade stream, with scenario labels, to JSON-lines files.

No services needed. The same arguments (seed included) give byte-identical files. Defaults are
fixed here rather than read from the producer's settings, so a command line alone reproduces a
file.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from pathlib import Path

from riskengine.producer.files import write_run
from riskengine.producer.market import DEFAULT_SYMBOLS
from riskengine.producer.population import PopulationError
from riskengine.producer.scenarios import SCENARIOS, parse_scenarios
from riskengine.producer.simulator import DEFAULT_START_MS, EXCHANGES, InvalidConfig, SimulationConfig
from riskengine.settings import Settings


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _start(text: str) -> int:
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not epoch ms or an ISO 8601 time: {text!r}") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give a time zone (e.g. Z): {text!r}")
    return int(moment.timestamp() * 1000)


def _scenarios(text: str) -> tuple[str, ...]:
    try:
        return parse_scenarios(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``generate`` command."""
    parser = subparsers.add_parser(
        "generate",
        help="write a simulated, labelled trade stream to JSON lines (no Kafka)",
        description="Simulate the venue and write FILE.jsonl (CryptoTrade records, for riskengine replay), "
        "FILE.orders.jsonl (OrderEvent records), FILE.labels.jsonl (one line per scenario instance and "
        "pattern: scenarioId, scenario, patternType, userIds, symbol, startTs, endTs, tradeIds, orderIds, "
        "orderEventIds, complete, verified), FILE.profiles.jsonl (UserProfile records), "
        "FILE.reference.json (for riskengine replay --reference) and FILE.stats.json (the run's figures: "
        "benign instances per pattern, trade records by role, order events per trade record, market "
        "makers' inventories). Same arguments, same bytes.",
    )
    parser.add_argument("--trades", type=int, required=True, metavar="N", help="trades to simulate")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE.jsonl", help="the trades file")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--users", type=int, default=1000, metavar="U", help="accounts (default 1000)")
    parser.add_argument(
        "--scenarios",
        type=_scenarios,
        default=tuple(SCENARIOS),
        metavar="LIST",
        help=f"all (default), none, or a comma-separated list of: {', '.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--scenario-every",
        type=int,
        default=400,
        metavar="K",
        help="mean taker arrivals (about 2.4 trade records each) between two injections (default 400)",
    )
    parser.add_argument(
        "--quiet-ms",
        type=int,
        default=300_000,
        metavar="MS",
        help="how long a scenario's accounts have not traded when it starts (default 300000: 5 minutes)",
    )
    parser.add_argument(
        "--rate-ms",
        type=float,
        default=100.0,
        metavar="MS",
        help="mean simulated interval between normal trades (default 100: 10 trades/s)",
    )
    parser.add_argument(
        "--symbols", type=_names, default=DEFAULT_SYMBOLS, metavar="LIST", help="comma-separated symbols"
    )
    parser.add_argument(
        "--exchanges", type=_names, default=EXCHANGES, metavar="LIST", help="comma-separated exchanges"
    )
    parser.add_argument(
        "--start",
        type=_start,
        default=DEFAULT_START_MS,
        metavar="TIME",
        help="simulated start, epoch ms or ISO 8601 (default 2026-01-01T00:00:00Z)",
    )
    parser.set_defaults(handler=generate)


def generate(args: argparse.Namespace, settings: Settings) -> int:
    """Write the run; print what was written. Exit 2 on a bad parameter."""
    if args.trades < 1:
        print("riskengine generate: --trades must be at least 1", file=sys.stderr)
        return 2
    try:
        config = SimulationConfig(
            seed=args.seed,
            start_ms=args.start,
            rate_ms=args.rate_ms,
            users=args.users,
            symbols=args.symbols,
            exchanges=args.exchanges,
            scenarios=args.scenarios,
            scenario_every=args.scenario_every,
            quiet_ms=args.quiet_ms,
        )
        began = time.perf_counter()
        run = write_run(config, args.trades, args.out)
    except (InvalidConfig, PopulationError) as exc:
        print(f"riskengine generate: {exc}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - began
    stats = run.stats
    print(
        f"trades: {stats.trades:,} ({stats.normal_trades:,} normal, {stats.scenario_trades:,} injected); "
        f"order events: {stats.order_events:,}; users: {run.users:,}; seed {config.seed}; {seconds:.1f} s"
    )
    summary = stats.to_dict()
    print(
        f"order events per trade record: {summary['orderEventsPerTrade']}; "
        f"churn orders: {stats.churn_orders:,}; parent orders: {summary['parentOrders']}"
    )
    print("trade records by role: " + ", ".join(f"{k} {v:,}" for k, v in summary["tradesByRole"].items()))
    print(
        "benign instances (benign trade records completing a definition the oracle checks; reported, "
        "not removed): " + (", ".join(f"{k} {v:,}" for k, v in summary["benignInstances"].items()) or "none")
    )
    makers = summary["makerInventory"]
    if makers:
        worst = max(m["maxShareOfHardLimit"] for m in makers.values())
        finals = sorted(m["finalNotional"] for m in makers.values())
        print(
            f"market makers: {len(makers)}; largest inventory at a fill {worst:.0%} of the hard limit; "
            f"final |inventory| (notional, summed over symbols) median {finals[len(finals) // 2]:,.0f}, "
            f"max {finals[-1]:,.0f}"
        )
    complete = sum(1 for label in run.labels if label.complete)
    print(f"labels: {len(run.labels):,} ({complete:,} complete)")
    for name in config.scenarios:
        print(
            f"  {name:18} started {stats.started[name]:4}  completed {stats.completed[name]:4}  "
            f"skipped {stats.skipped[name]:4} (no free accounts, or the market busy)"
        )
    files = run.files
    print(
        f"files: {files.trades}, {files.orders}, {files.labels}, {files.profiles}, {files.reference}, "
        f"{files.stats}"
    )
    return 0
