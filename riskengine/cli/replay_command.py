"""``riskengine replay``: the detection core over JSON-lines files of trades and order events.

Each input line is one ``CryptoTrade`` (or, with ``--orders``, one ``OrderEvent``) as JSON with the
seed's camelCase field names. Each file's order is its arrival order; the two are interleaved as
the worker interleaves its two topics (:mod:`riskengine.core.event_order`: head by head, by event
time, order events first on ties), with one state per user. Output, in ``--out``:

- ``analyzed-trades.jsonl``: one ``RiskAnalyzedTrade`` record per valid trade (``processedAt``
  is null: replay has no processing clock);
- ``alerts.jsonl``: every ``RiskAlert`` record: the account patterns in the order raised, then the
  market (PRICE_CRASH, PUMP_AND_DUMP) and account-pair (ROUND_TRIP_WASH) ones, which run over every
  account's trades in (timestamp, tradeId) order once the file is read. Which trades they see is
  decided as in the worker (:mod:`riskengine.core.market_feed`): a trade more than
  ``market.allowed.lateness.seconds`` behind its ``crypto-trades`` partition (``--partitions``,
  default ``RISKENGINE_TOPIC_PARTITIONS``) is late for the market. Each trade's market impact is
  scored against its symbol's market context as of a minute before it (``core/market.py``), as
  the worker does.

A line that is not JSON, not an object, or not a valid trade or order event is reported on stderr
with its file, line number and reason, and skipped; the run completes. An order event the order
book finds inconsistent is counted by kind in the summary. Blank lines are ignored. Without ``INPUT`` the
bundled sample (``riskengine/data/sample-trades.jsonl``) is replayed with the bundled reference
data (``sample-reference.json``: profiles, a sanctioned user, a restricted country).

``--rules FILE`` is JSON shaped like a ``RiskRules`` record: ``{"version": 3, "parameters":
{"volume.spike.threshold": "2.0", ...}}``. ``--reference FILE`` is JSON as read by
``ReferenceData.from_document`` (``profiles``, ``sanctionedUsers``, ``sanctionedCountries``,
``restrictedCountries``, ``markets``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TextIO, TypeVar

from riskengine.core import (
    DEFAULT_RULES,
    EMPTY_REFERENCE,
    InvalidReference,
    InvalidRule,
    OrderEvent,
    ReferenceData,
    RiskAlert,
    Rules,
    Trade,
    UserState,
    ahead_of_clock,
    evaluate_order,
    evaluate_trade,
    parse_order_event,
    parse_trade,
)
from riskengine.core.event_order import merge_in_event_time
from riskengine.core.market_feed import PartitionClocks, evaluate_cross_account, kafka_partition
from riskengine.errors import CommandError, CoreError
from riskengine.settings import Settings

ANALYZED_FILE = "analyzed-trades.jsonl"
ALERTS_FILE = "alerts.jsonl"


def sample_path(name: str = "sample-trades.jsonl") -> Path:
    """Path of a file bundled in ``riskengine/data``."""
    return Path(str(resources.files("riskengine").joinpath("data", name)))


class ReplayError(CommandError):
    """The run cannot start: an unreadable input, rules or reference file."""


@dataclass
class ReplaySummary:
    """What a replay did."""

    lines: int = 0
    trades: int = 0
    order_events: int = 0
    late_order_events: int = 0
    #: trades late for the market (kept out of the market and pair states)
    late_for_market: int = 0
    #: executions the market states counted (an execution reported by both sides counts once)
    executions: int = 0
    order_issues: Counter[str] = field(default_factory=Counter)
    malformed: int = 0
    alerts: Counter[str] = field(default_factory=Counter)
    levels: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    #: userId -> state at the end of the run
    states: dict[str, UserState] = field(default_factory=dict)

    @property
    def trades_per_second(self) -> float:
        """Trades analyzed per second of wall-clock time (reading and writing included)."""
        return self.trades / self.seconds if self.seconds > 0 else 0.0

    @property
    def events_per_second(self) -> float:
        """Trades and order events per second of wall-clock time."""
        return (self.trades + self.order_events) / self.seconds if self.seconds > 0 else 0.0


P = TypeVar("P", Trade, OrderEvent)


def read_records(
    lines: Iterable[bytes],
    parse: Callable[[Mapping[str, Any]], P],
    what: str,
    errors: TextIO,
    summary: ReplaySummary,
    prefix: str = "",
    max_skew_ms: int | None = None,
) -> Iterator[P]:
    """Parse JSON lines with ``parse``; report and skip malformed ones (1-based line numbers).

    With ``max_skew_ms``, events dated in the future are rejected too (see :func:`_in_time`).
    """
    parsed = _parse_lines(lines, parse, what, errors, summary, prefix)
    if max_skew_ms is None:
        return (item for _where, item in parsed)
    return _in_time(parsed, what, errors, summary, max_skew_ms)


def _parse_lines(
    lines: Iterable[bytes],
    parse: Callable[[Mapping[str, Any]], P],
    what: str,
    errors: TextIO,
    summary: ReplaySummary,
    prefix: str,
) -> Iterator[tuple[str, P]]:
    for number, raw in enumerate(lines, start=1):
        summary.lines += 1
        where = f"{prefix}line {number}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            _malformed(errors, summary, where, f"not UTF-8: {exc.reason} at byte {exc.start}")
            continue
        if not line.strip():
            continue
        try:
            record: Any = json.loads(line)
        except (json.JSONDecodeError, RecursionError, ValueError) as exc:
            _malformed(errors, summary, where, f"not valid JSON: {exc}")
            continue
        if not isinstance(record, dict):
            _malformed(errors, summary, where, f"expected a JSON object, got {type(record).__name__}")
            continue
        try:
            yield where, parse(record)
        except CoreError as exc:
            _malformed(errors, summary, where, f"invalid {what}: {exc}")


def _in_time(
    parsed: Iterable[tuple[str, P]], what: str, errors: TextIO, summary: ReplaySummary, max_skew_ms: int
) -> Iterator[P]:
    """Drop events dated more than ``max_skew_ms`` ahead of the wall clock, as the worker does.

    Not ahead of the input's own latest time: a file with a quiet spell longer than the skew (or
    the bundled sample's deliberately late trades) would lose every event after the jump.
    """
    now_ms = int(time.time() * 1000)
    for where, item in parsed:
        ahead = ahead_of_clock(item.timestamp, now_ms, max_skew_ms)
        if ahead is not None:
            _malformed(errors, summary, where, f"{what} rejected: {ahead}")
            continue
        yield item


def read_trades(
    lines: Iterable[bytes], errors: TextIO, summary: ReplaySummary, max_skew_ms: int | None = None
) -> Iterator[Trade]:
    """Parse JSON lines into trades; report and skip malformed ones (1-based line numbers)."""
    return read_records(lines, parse_trade, "trade", errors, summary, max_skew_ms=max_skew_ms)


def _malformed(errors: TextIO, summary: ReplaySummary, where: str, reason: str) -> None:
    summary.malformed += 1
    print(f"{where}: {reason} (skipped)", file=errors)


def load_rules(path: Path | None) -> Rules:
    """Rules from a ``{"version": n, "parameters": {...}}`` JSON file, or the defaults."""
    if path is None:
        return DEFAULT_RULES
    document = _load_json(path, "rules")
    if not isinstance(document, dict) or not isinstance(document.get("parameters", {}), dict):
        raise ReplayError(f'rules file {path}: expected {{"version": n, "parameters": {{...}}}}')
    try:
        return Rules.from_parameters(document.get("version", 0), document.get("parameters", {}))
    except InvalidRule as exc:
        raise ReplayError(f"rules file {path}: {exc}") from None


def load_reference(path: Path | None) -> ReferenceData:
    """Reference data from a JSON file, or none."""
    if path is None:
        return EMPTY_REFERENCE
    try:
        return ReferenceData.from_document(_load_json(path, "reference"))
    except InvalidReference as exc:
        raise ReplayError(f"reference file {path}: {exc}") from None


def _load_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ReplayError(f"cannot read {what} file {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ReplayError(f"{what} file {path} is not valid JSON: {exc}") from None


def replay(
    source: Iterable[bytes],
    out_dir: Path,
    rules: Rules,
    reference: ReferenceData,
    errors: TextIO | None = None,
    orders: Iterable[bytes] = (),
    partitions: int = 6,
) -> ReplaySummary:
    """Run the core over ``source`` trade lines and ``orders`` order-event lines (bytes), writing
    the two output files into ``out_dir``; the final states are kept in ``summary.states``.

    Malformed lines are reported on ``errors`` (default: standard error).
    """
    errors = errors or sys.stderr
    summary = ReplaySummary()
    states = summary.states
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    skew = rules.max_future_skew_ms
    trades = read_trades(source, errors, summary, skew)
    order_events = read_records(orders, parse_order_event, "order event", errors, summary, "orders ", skew)
    merged_events = merge_in_event_time(trades, order_events, _trade_time, _order_time)
    merged = list(merged_events)
    # The market first: which trades reach it, what it raises, and the market contexts the
    # accounts' trades are scored against (each as of a minute before the trade).
    clocks = PartitionClocks()
    for_market: list[Trade] = []
    for item in merged:
        if isinstance(item, Trade):
            partition = kafka_partition(item.user_id.encode(), partitions)
            if clocks.admit(partition, item.timestamp, rules.market_lateness_ms):
                for_market.append(item)
            else:
                summary.late_for_market += 1
    cross = evaluate_cross_account(for_market, reference, rules)
    summary.executions = cross.executions
    contexts = cross.contexts
    with (
        (out_dir / ANALYZED_FILE).open("w", encoding="utf-8") as analyzed_out,
        (out_dir / ALERTS_FILE).open("w", encoding="utf-8") as alerts_out,
    ):
        for item in merged:
            state = states.get(item.user_id)
            if state is None:
                state = states[item.user_id] = UserState()
            alerts: tuple[RiskAlert, ...]
            if isinstance(item, Trade):
                market = contexts.for_trade(item.symbol, item.timestamp, rules.market_lateness_ms)
                result = evaluate_trade(state, item, reference, rules, market)
                summary.trades += 1
                summary.levels[result.analyzed.final_risk_level.value] += 1
                analyzed_out.write(_json_line(result.analyzed.to_record()))
                alerts = result.alerts
            else:
                outcome = evaluate_order(state, item, reference, rules)
                summary.order_events += 1
                summary.late_order_events += outcome.late
                if outcome.issue is not None:
                    summary.order_issues[outcome.issue] += 1
                alerts = outcome.alerts
            _write_alerts(alerts, alerts_out, summary)
        _write_alerts(cross.alerts, alerts_out, summary)
    summary.seconds = time.perf_counter() - started
    return summary


def _write_alerts(alerts: Iterable[RiskAlert], out: TextIO, summary: ReplaySummary) -> None:
    for alert in alerts:
        summary.alerts[alert.pattern.value] += 1
        out.write(_json_line(alert.to_record()))


def _trade_time(trade: Trade) -> int:
    return trade.timestamp


def _order_time(event: OrderEvent) -> int:
    return event.timestamp


def _json_line(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``replay`` command."""
    parser = subparsers.add_parser(
        "replay",
        help="run the detection core over CryptoTrade JSON lines",
        description="Run the detection core over CryptoTrade JSON lines (seed field names); write "
        f"{ANALYZED_FILE} and {ALERTS_FILE}. Without INPUT, replays the bundled sample.",
    )
    parser.add_argument(
        "input", nargs="?", type=Path, metavar="INPUT.jsonl", help="trades, one JSON per line"
    )
    parser.add_argument(
        "--orders",
        type=Path,
        metavar="ORDERS.jsonl",
        help="order events (OrderEvent JSON lines), interleaved with the trades by event time",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("out"), metavar="DIR", help="output folder (default out)"
    )
    parser.add_argument(
        "--rules", type=Path, metavar="FILE", help='rules JSON: {"version": n, "parameters": {name: value}}'
    )
    parser.add_argument(
        "--reference",
        type=Path,
        metavar="FILE",
        help="reference data JSON (profiles, sanctions, countries, markets); "
        "default: none, or the bundled sample's when INPUT is omitted",
    )
    parser.add_argument(
        "--partitions",
        type=int,
        metavar="N",
        help="crypto-trades partitions to emulate for the market's lateness rule "
        "(default RISKENGINE_TOPIC_PARTITIONS)",
    )
    parser.set_defaults(handler=run_replay)


def run_replay(args: argparse.Namespace, settings: Settings) -> int:
    """Replay the file; print the summary. Exit 0 when the run completes, 2 when it cannot start."""
    source: Path = args.input or sample_path()
    reference_file: Path | None = args.reference
    partitions: int = settings.topic_partitions if args.partitions is None else args.partitions
    if partitions < 1:
        print(f"riskengine replay: --partitions must be at least 1, got {partitions}", file=sys.stderr)
        return 2
    if args.input is None and reference_file is None:
        reference_file = sample_path("sample-reference.json")
    try:
        rules = load_rules(args.rules)
        reference = load_reference(reference_file)
    except ReplayError as exc:
        print(f"riskengine replay: {exc}", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as files:
        try:
            handle = files.enter_context(source.open("rb"))
            orders = files.enter_context(args.orders.open("rb")) if args.orders else None
        except OSError as exc:
            print(f"riskengine replay: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
            return 2
        summary = replay(handle, args.out, rules, reference, orders=orders or (), partitions=partitions)
    print(f"input: {source}" + (f", orders: {args.orders}" if args.orders else ""))
    print(
        f"trades: {summary.trades:,} analyzed, {summary.malformed:,} malformed line(s) skipped "
        f"(rules version {rules.version})"
    )
    if args.orders:
        issues = (
            ", ".join(f"{kind}={count}" for kind, count in sorted(summary.order_issues.items())) or "none"
        )
        print(
            f"order events: {summary.order_events:,} applied, {summary.late_order_events:,} beyond the "
            f"allowed lateness, inconsistent: {issues}"
        )
    print(
        f"market: {summary.executions:,} executions counted, {summary.late_for_market:,} trade(s) late for "
        f"the market ({partitions} partitions emulated)"
    )
    levels = ", ".join(f"{level}={summary.levels[level]}" for level in ("LOW", "MEDIUM", "HIGH", "CRITICAL"))
    print(f"risk levels: {levels}")
    total = sum(summary.alerts.values())
    by_pattern = ", ".join(f"{name}={count}" for name, count in sorted(summary.alerts.items())) or "none"
    print(f"alerts: {total} ({by_pattern})")
    print(
        f"throughput: {summary.trades_per_second:,.0f} trades/s, {summary.events_per_second:,.0f} events/s "
        f"({summary.seconds:.3f} s)"
    )
    print(f"output: {args.out / ANALYZED_FILE}, {args.out / ALERTS_FILE}")
    return 0
