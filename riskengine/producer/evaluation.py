"""Precision, recall and F1 per pattern: alerts against the simulator's scenario labels.

Matching (also the ``riskengine evaluate`` help text):

- Ground truth is every **complete** label (primary and incidental) of the labels file. A label
  left incomplete by the end of the run is not ground truth.
- An alert **matches** a label when its ``patternType`` is the label's pattern and either its
  ``evidence`` shares an id with the label's trades, orders or order events, or (for alerts
  citing other ids, e.g. market-level ones) its ``userId`` is one of the label's accounts (or,
  for an alert without a userId, its ``symbol`` is the label's symbol) and its ``timestamp`` lies
  in the label's time span extended by ``grace_ms``.
- **Recall** of a pattern: labels matched by at least one alert / labels. An engine that merges
  repeated matches into one alert is not penalised, since one alert detects the instance.
- **Precision** of a pattern: alerts matching a complete label (TP) / (TP + FP), where FP are the
  alerts matching no label at all. Alerts that match only incomplete labels are *ignored* (shown,
  counted in neither). The simulator keeps normal traffic free of every labelled pattern, so an
  FP is an alert on behaviour that does not meet the pattern's definition.
- **F1** = 2PR / (P + R). The ``all`` row sums labels, detections and alerts over patterns.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from riskengine.contracts.schema_files import expanded_schema

from .events import Label


@dataclass(frozen=True)
class PatternScore:
    """The figures of one pattern (or of all, for the total row)."""

    pattern: str
    labels: int
    detected: int
    alerts: int
    true_positives: int
    false_positives: int
    ignored: int

    @property
    def recall(self) -> float | None:
        """Detected labels / labels; None without labels."""
        return self.detected / self.labels if self.labels else None

    @property
    def precision(self) -> float | None:
        """TP / (TP + FP); None without counted alerts."""
        counted = self.true_positives + self.false_positives
        return self.true_positives / counted if counted else None

    @property
    def f1(self) -> float | None:
        """Harmonic mean of precision and recall; None when either is undefined or both are 0."""
        p, r = self.precision, self.recall
        if p is None or r is None or p + r == 0:
            return None
        return 2 * p * r / (p + r)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able row."""
        return {
            "pattern": self.pattern,
            "labels": self.labels,
            "detected": self.detected,
            "recall": self.recall,
            "alerts": self.alerts,
            "truePositives": self.true_positives,
            "falsePositives": self.false_positives,
            "ignored": self.ignored,
            "precision": self.precision,
            "f1": self.f1,
        }


def _pattern_order() -> dict[str, int]:
    symbols = expanded_schema("PatternType")["symbols"]
    return {symbol: position for position, symbol in enumerate(symbols)}


class _Index:
    """Labels by (pattern, event id) and by (pattern, account / symbol)."""

    def __init__(self, labels: Iterable[Label]) -> None:
        self.by_event: dict[tuple[str, str], list[Label]] = defaultdict(list)
        self.by_user: dict[tuple[str, str], list[Label]] = defaultdict(list)
        self.by_symbol: dict[tuple[str, str], list[Label]] = defaultdict(list)
        for label in labels:
            for event_id in label.event_ids:
                self.by_event[(label.pattern, event_id)].append(label)
            for user_id in label.user_ids:
                self.by_user[(label.pattern, user_id)].append(label)
            if label.symbol is not None:
                self.by_symbol[(label.pattern, label.symbol)].append(label)

    def matches(self, alert: Mapping[str, Any], grace_ms: int) -> list[Label]:
        pattern = str(alert.get("patternType"))
        found: dict[str, Label] = {}
        for event_id in alert.get("evidence") or ():
            for label in self.by_event.get((pattern, str(event_id)), ()):
                found[f"{label.scenario_id}/{label.pattern}"] = label
        if found:
            return list(found.values())
        timestamp = alert.get("timestamp")
        if not isinstance(timestamp, int):
            return []
        user_id, symbol = alert.get("userId"), alert.get("symbol")
        if user_id is not None:
            candidates = self.by_user.get((pattern, str(user_id)), [])
        else:
            candidates = self.by_symbol.get((pattern, str(symbol)), [])
        return [c for c in candidates if c.start_ts <= timestamp <= c.end_ts + grace_ms]


def evaluate(
    labels: Iterable[Label], alerts: Iterable[Mapping[str, Any]], grace_ms: int = 60_000
) -> list[PatternScore]:
    """One score per pattern seen in the labels or the alerts (contract order), then ``all``."""
    labels = list(labels)
    index = _Index(labels)
    truth = [label for label in labels if label.complete]
    detected: set[tuple[str, str]] = set()
    alert_counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # alerts, tp, fp, ignored
    for alert in alerts:
        pattern = str(alert.get("patternType"))
        counts = alert_counts[pattern]
        counts[0] += 1
        matched = index.matches(alert, grace_ms)
        complete = [label for label in matched if label.complete]
        for label in complete:
            detected.add((label.scenario_id, label.pattern))
        if complete:
            counts[1] += 1
        elif matched:
            counts[3] += 1
        else:
            counts[2] += 1
    order = _pattern_order()
    # Patterns with only incomplete labels still get a row (0 labels), so nothing vanishes silently.
    patterns = sorted(
        {label.pattern for label in labels} | set(alert_counts), key=lambda p: (order.get(p, len(order)), p)
    )
    scores = []
    for pattern in patterns:
        pattern_labels = [label for label in truth if label.pattern == pattern]
        alerts_, tp, fp, ignored = alert_counts.get(pattern, [0, 0, 0, 0])
        scores.append(
            PatternScore(
                pattern,
                len(pattern_labels),
                sum((label.scenario_id, pattern) in detected for label in pattern_labels),
                alerts_,
                tp,
                fp,
                ignored,
            )
        )
    scores.append(
        PatternScore(
            "all",
            sum(s.labels for s in scores),
            sum(s.detected for s in scores),
            sum(s.alerts for s in scores),
            sum(s.true_positives for s in scores),
            sum(s.false_positives for s in scores),
            sum(s.ignored for s in scores),
        )
    )
    return scores


def read_alerts(path: Path) -> list[dict[str, Any]]:
    """``RiskAlert`` records from a JSON-lines file (or ``alerts.jsonl`` in a directory)."""
    if path.is_dir():
        path = path / "alerts.jsonl"
    alerts: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: not JSON: {exc}") from None
            if not isinstance(record, dict) or "patternType" not in record:
                raise ValueError(f"{path}:{number}: not a RiskAlert record")
            alerts.append(record)
    return alerts


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def format_table(scores: Iterable[PatternScore]) -> str:
    """The scores as an aligned text table."""
    header = ("pattern", "labels", "detected", "recall", "alerts", "TP", "FP", "ignored", "precision", "F1")
    rows = [
        (
            s.pattern,
            str(s.labels),
            str(s.detected),
            _figure(s.recall),
            str(s.alerts),
            str(s.true_positives),
            str(s.false_positives),
            str(s.ignored),
            _figure(s.precision),
            _figure(s.f1),
        )
        for s in scores
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])] + [
            cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells))
    return "\n".join(lines)
