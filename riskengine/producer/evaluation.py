"""Alert quality per pattern: a replay's alerts and scores against the simulator's scenario labels.

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
  counted in neither). Normal traffic is not filtered through the definitions, so an FP is an
  alert on benign flow (which may well meet the pattern's definition): what a threshold costs.
- **F1** = 2PR / (P + R). The ``all`` row sums labels, detections and alerts over patterns.

Tuning figures (the second and third tables; n/a where the analyzed trades are needed and absent):

- **Benign trades**: the records of analyzed-trades.jsonl (``--trades``) whose tradeId is in no
  label's trade ids (complete or not). **Scenario trades**: the trades of complete labels.
- **FP/10k** (benign alert rate): FP alerts per 10,000 benign trades. **By account type**: FP
  alerts of the accounts of a type (the alert's userId; its ``accountType`` in ``--profiles``;
  ``none`` for no designation or no profile) per 10,000 benign trades of those accounts. Alerts
  without a userId (market-level) count in the overall rate only.
- **top-100 precision**: TP / (TP + FP) of the 100 alerts with the highest ``priority`` (an
  alert without one ranks below every other; ties by alertId), ignored alerts excluded as above;
  each pattern's own 100, and ``all`` over every alert.
- **score AUC**: the ROC AUC of ``riskScore`` for telling the pattern's instances from benign
  trades. Positives: the complete labels of the pattern with at least one trade in the analyzed
  file, each scored by the highest riskScore of its trades (an instance is found through its most
  suspicious trade); negatives: every benign trade. Mann-Whitney: the share of (instance, benign
  trade) pairs the instance wins, ties counting 1/2. n/a for patterns whose labels hold no
  analyzed trade (order-event or market-level ones). ``all``: every such label. The **per-trade
  AUC** (every scenario trade against every benign trade) is shown under the tables.
- **benign HIGH+**: the share of benign trades whose ``finalRiskLevel`` is HIGH or CRITICAL,
  overall and per account type.

Files: ``--trades`` defaults to analyzed-trades.jsonl next to alerts.jsonl when ``--alerts`` is
the replay's folder; ``--profiles`` (UserProfile JSON lines, or a reference JSON with
``profiles``) defaults to RUN.profiles.jsonl next to RUN.labels.jsonl. Without profiles the
account-type split is n/a. ``--report FILE.html`` writes the tables and charts as one
self-contained HTML page (inline CSS and SVG, nothing fetched).
"""

from __future__ import annotations

import bisect
import json
import math
import re
from array import array
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

from riskengine.contracts.schema_files import expanded_schema

from .events import Label

#: Benign alert rates are per this many benign trades.
RATE_BASE = 10_000
#: The benign alert rate a pattern should stay under (per ``RATE_BASE`` benign trades).
RATE_TARGET = 5.0
#: How many of the highest-priority alerts the top-N precision reads.
TOP_N = 100
#: The account type of an account without a designation (or without a profile).
NO_DESIGNATION = "none"
#: Account types in display order (others, if a newer contract adds some, follow by name).
ACCOUNT_TYPES = (NO_DESIGNATION, "RETAIL", "PROFESSIONAL", "MARKET_MAKER", "INSTITUTIONAL", "UNKNOWN")
#: The ``finalRiskLevel`` values counted as HIGH or above.
HIGH_LEVELS = frozenset({"HIGH", "CRITICAL"})


def _rate(count: int, base: int | None) -> float | None:
    return count * RATE_BASE / base if base else None


def _share(part: int, whole: int | None) -> float | None:
    return part / whole if whole else None


@dataclass(frozen=True)
class PatternScore:
    """The figures of one pattern (or of all, for the total row).

    The tuning figures default to "not measured": ``benign_trades`` is None without analyzed trades,
    the ``*_by_account`` maps are None without profiles.
    """

    pattern: str
    labels: int
    detected: int
    alerts: int
    true_positives: int
    false_positives: int
    ignored: int
    top_alerts: int = 0
    top_true_positives: int = 0
    top_false_positives: int = 0
    benign_trades: int | None = None
    false_positives_by_account: Mapping[str, int] | None = None
    benign_trades_by_account: Mapping[str, int] | None = None
    scored_instances: int | None = None
    score_auc: float | None = None

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

    @property
    def top_precision(self) -> float | None:
        """TP / (TP + FP) among the ``TOP_N`` highest-priority alerts; None without counted ones."""
        counted = self.top_true_positives + self.top_false_positives
        return self.top_true_positives / counted if counted else None

    @property
    def benign_alert_rate(self) -> float | None:
        """FP alerts per ``RATE_BASE`` benign trades; None without benign trades."""
        return _rate(self.false_positives, self.benign_trades)

    @property
    def benign_alert_rate_by_account(self) -> dict[str, float | None] | None:
        """Account type -> its FP alerts per ``RATE_BASE`` of its benign trades; None without profiles."""
        if self.false_positives_by_account is None or self.benign_trades_by_account is None:
            return None
        kinds = set(self.false_positives_by_account) | set(self.benign_trades_by_account)
        return {
            kind: _rate(self.false_positives_by_account.get(kind, 0), self.benign_trades_by_account.get(kind))
            for kind in sort_account_types(kinds)
        }

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
            "benignTrades": self.benign_trades,
            "benignAlertRate": self.benign_alert_rate,
            "falsePositivesByAccountType": (
                None if self.false_positives_by_account is None else dict(self.false_positives_by_account)
            ),
            "benignAlertRateByAccountType": self.benign_alert_rate_by_account,
            "top100Alerts": self.top_alerts,
            "top100TruePositives": self.top_true_positives,
            "top100FalsePositives": self.top_false_positives,
            "top100Precision": self.top_precision,
            "scoredInstances": self.scored_instances,
            "scoreAuc": self.score_auc,
        }


def sort_account_types(kinds: Iterable[str]) -> list[str]:
    """``kinds`` in :data:`ACCOUNT_TYPES` order, unknown ones after by name."""
    order = {kind: position for position, kind in enumerate(ACCOUNT_TYPES)}
    return sorted(set(kinds), key=lambda kind: (order.get(kind, len(order)), kind))


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


# --- The analyzed trades and the profiles ---------------------------------------------------------


class TradeRecord(NamedTuple):
    """What the evaluation reads of one ``RiskAnalyzedTrade``."""

    trade_id: str
    user_id: str
    risk_score: float
    level: str


_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_PREFIX = '{"originalTrade":{"tradeId":"'
_USER = '","userId":"'
_SCORE = '},"riskScore":'
_LEVEL = ',"finalRiskLevel":"'


def _flat_crypto_trade() -> bool:
    """Whether ``CryptoTrade`` holds no object and no riskScore/finalRiskLevel field (see below)."""

    def flat(schema: Any) -> bool:
        if isinstance(schema, list):
            return all(flat(branch) for branch in schema)
        if isinstance(schema, dict):
            return schema.get("type") == "enum" or (
                isinstance(schema.get("type"), str) and flat(schema["type"])
            )
        return schema in {"null", "boolean", "int", "long", "float", "double", "string"}

    fields = expanded_schema("CryptoTrade")["fields"]
    return all(f["name"] not in {"riskScore", "finalRiskLevel"} and flat(f["type"]) for f in fields)


#: The fast path's reading of ``},"riskScore":`` as the key after ``originalTrade`` holds.
FAST_PATH = _flat_crypto_trade()


def _fast_record(line: str) -> TradeRecord | None:
    """The four fields of a line laid out as replay writes it, or None to parse the line in full.

    The layout is the contract's field order in compact JSON: ``{"originalTrade":{"tradeId":"…",
    "userId":"…",…},"riskScore":N,"finalRiskLevel":"…",…}``. A quoted key with its colon cannot
    occur inside a JSON string (its quotes would be escaped), and ``CryptoTrade`` holds no object, so
    the first ``},"riskScore":`` closes ``originalTrade``. A value with an escape, a number that is
    not plain JSON or any other layout (spaces, another order) goes to ``json.loads``.
    """
    if not FAST_PATH or not line.startswith(_PREFIX):
        return None
    if not (line.endswith("}\n") or line.endswith("}")):
        return None
    trade_end = line.find('"', 29)
    if trade_end < 0 or not line.startswith(_USER, trade_end):
        return None
    user_start = trade_end + 12
    user_end = line.find('"', user_start)
    if user_end < 0:
        return None
    score_at = line.find(_SCORE, user_end)
    if score_at < 0:
        return None
    number = _JSON_NUMBER.match(line, score_at + 14)
    if number is None or not line.startswith(_LEVEL, number.end()):
        return None
    level_start = number.end() + 19
    level_end = line.find('"', level_start)
    if level_end < 0:
        return None
    trade_id, user_id, level = line[29:trade_end], line[user_start:user_end], line[level_start:level_end]
    if "\\" in trade_id or "\\" in user_id or "\\" in level:
        return None
    return TradeRecord(trade_id, user_id, float(number.group()), level)


def _full_record(line: str) -> TradeRecord | None:
    record = json.loads(line)
    if not isinstance(record, dict):
        return None
    trade = record.get("originalTrade")
    score = record.get("riskScore")
    level = record.get("finalRiskLevel")
    if not isinstance(trade, dict) or not isinstance(level, str):
        return None
    trade_id, user_id = trade.get("tradeId"), trade.get("userId")
    if not isinstance(trade_id, str) or not isinstance(user_id, str):
        return None
    if isinstance(score, bool) or not isinstance(score, int | float):
        return None
    return TradeRecord(trade_id, user_id, float(score), level)


def read_analyzed_trades(path: Path) -> Iterator[TradeRecord]:
    """``RiskAnalyzedTrade`` lines (replay's analyzed-trades.jsonl), one at a time.

    Reads line by line and keeps nothing; lines as replay writes them take a fast path that
    locates the four fields without parsing the rest. ValueError names the line of a malformed
    record.
    """
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            record = _fast_record(line)
            if record is None:
                if not line.strip():
                    continue
                try:
                    record = _full_record(line)
                except ValueError as exc:
                    raise ValueError(f"{path}:{number}: not JSON: {exc}") from None
                if record is None:
                    raise ValueError(f"{path}:{number}: not a RiskAnalyzedTrade record")
            if not math.isfinite(record.risk_score):
                raise ValueError(f"{path}:{number}: riskScore is not a finite number")
            yield record


def _account_type(value: Any) -> str:
    if isinstance(value, dict) and len(value) == 1:  # Avro JSON union form {"riskengine.AccountType": ...}
        value = next(iter(value.values()))
    return NO_DESIGNATION if value is None else str(value)


def read_profiles(path: Path) -> dict[str, str]:
    """userId -> account type (``none`` for no designation), from UserProfile JSON lines.

    A JSON document with a ``profiles`` list (``RUN.reference.json``) is read as well.
    ValueError names the line of a malformed profile.
    """
    text = path.read_text(encoding="utf-8")
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    if isinstance(document, dict) and isinstance(document.get("profiles"), list):
        entries: list[tuple[str, Any]] = [
            (f"{path}: profile {n}", p) for n, p in enumerate(document["profiles"], 1)
        ]
    else:
        entries = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                entries.append((f"{path}:{number}", json.loads(line)))
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: not JSON: {exc}") from None
    types: dict[str, str] = {}
    for where, profile in entries:
        if not isinstance(profile, dict) or not isinstance(profile.get("userId"), str):
            raise ValueError(f"{where}: not a UserProfile record")
        types[profile["userId"]] = _account_type(profile.get("accountType"))
    return types


def default_trades_path(alerts: Path) -> Path | None:
    """analyzed-trades.jsonl next to alerts.jsonl when ``alerts`` is the replay's folder."""
    if alerts.is_dir() and (alerts / "analyzed-trades.jsonl").is_file():
        return alerts / "analyzed-trades.jsonl"
    return None


def default_profiles_path(labels: Path) -> Path | None:
    """``RUN.profiles.jsonl`` next to ``RUN.labels.jsonl``, when it exists."""
    suffix = ".labels.jsonl"
    if not labels.name.endswith(suffix):
        return None
    candidate = labels.with_name(labels.name[: -len(suffix)] + ".profiles.jsonl")
    return candidate if candidate.is_file() else None


# --- Ranking arithmetic ---------------------------------------------------------------------------


def roc_auc(positives: Iterable[float], negatives_sorted: Sequence[float]) -> float | None:
    """Mann-Whitney AUC: the share of (positive, negative) pairs the positive wins, ties 1/2.

    ``negatives_sorted`` must be sorted ascending; O(P log N). None when either side is empty.
    """
    total = 0.0
    count = 0
    for score in positives:
        below = bisect.bisect_left(negatives_sorted, score)
        equal = bisect.bisect_right(negatives_sorted, score, lo=below) - below
        total += below + equal / 2
        count += 1
    if not count or not negatives_sorted:
        return None
    return total / (count * len(negatives_sorted))


def roc_curve(
    positives_sorted: Sequence[float], negatives_sorted: Sequence[float], points: int = 400
) -> list[tuple[float, float]]:
    """(false positive rate, true positive rate) from (0, 0) to (1, 1), at most ~``points`` steps.

    Each point flags the scores at or above a threshold; the thresholds are the distinct scores
    (thinned evenly when there are more), so the straight segments between points follow the
    ties as the Mann-Whitney AUC counts them. Both inputs sorted ascending; [] when one is empty.
    """
    if not positives_sorted or not negatives_sorted:
        return []
    candidates = set(_thin(_distinct(positives_sorted), points // 2))
    candidates.update(_thin(_distinct(negatives_sorted), points // 2))
    n_pos, n_neg = len(positives_sorted), len(negatives_sorted)
    curve = [(0.0, 0.0)]
    for threshold in sorted(candidates, reverse=True):
        tpr = (n_pos - bisect.bisect_left(positives_sorted, threshold)) / n_pos
        fpr = (n_neg - bisect.bisect_left(negatives_sorted, threshold)) / n_neg
        curve.append((fpr, tpr))
    if curve[-1] != (1.0, 1.0):
        curve.append((1.0, 1.0))
    return curve


def _distinct(values_sorted: Sequence[float]) -> list[float]:
    out: list[float] = []
    for value in values_sorted:
        if not out or value != out[-1]:
            out.append(value)
    return out


def _thin(values: list[float], keep: int) -> list[float]:
    if len(values) <= keep:
        return values
    step = (len(values) - 1) / (keep - 1)
    return [values[round(i * step)] for i in range(keep)]


def histogram(
    values_sorted: Sequence[float], bins: int = 20, low: float = 0.0, high: float = 1.0
) -> list[float]:
    """Normalised densities (integral 1) of ``values_sorted`` over ``bins`` equal bins of [low, high].

    Values outside the range count in the edge bins; the last bin includes ``high``. [] without values.
    """
    if not values_sorted:
        return []
    width = (high - low) / bins
    edges = [bisect.bisect_left(values_sorted, low + i * width) for i in range(1, bins)]
    bounds = [0, *edges, len(values_sorted)]
    total = len(values_sorted)
    return [(bounds[i + 1] - bounds[i]) / (total * width) for i in range(bins)]


def _priority(alert: Mapping[str, Any]) -> float | None:
    value = alert.get("priority")
    if isinstance(value, dict) and len(value) == 1:  # Avro JSON union form {"int": 42}
        value = next(iter(value.values()))
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def top_alerts(alerts: Iterable[Mapping[str, Any]], n: int = TOP_N) -> list[Mapping[str, Any]]:
    """The ``n`` alerts with the highest priority; no priority ranks last; ties by alertId."""

    def key(alert: Mapping[str, Any]) -> tuple[bool, float, str]:
        priority = _priority(alert)
        alert_id = alert.get("alertId")
        return (priority is None, -(priority or 0.0), "" if alert_id is None else str(alert_id))

    return sorted(alerts, key=key)[:n]


# --- The evaluation -------------------------------------------------------------------------------


@dataclass
class TradePopulation:
    """What the evaluation keeps of the analyzed trades: benign scores and per-account counts.

    ``benign_scores`` is sorted once :meth:`collect` returns; ``label_scores`` holds the riskScore
    of the trades that some label (complete or not) names.
    """

    analyzed: int = 0
    benign_scores: array[float] = field(default_factory=lambda: array("d"))
    benign_high: int = 0
    benign_by_user: dict[str, list[int]] = field(default_factory=dict)  # user -> [benign, HIGH+]
    label_scores: dict[str, float] = field(default_factory=dict)

    @classmethod
    def collect(cls, trades: Iterable[TradeRecord], labels: Iterable[Label]) -> TradePopulation:
        """Stream ``trades`` once, splitting them into benign and labelled ones."""
        labelled = {trade_id for label in labels for trade_id in label.trade_ids}
        population = cls()
        scores = population.benign_scores
        by_user = population.benign_by_user
        label_scores = population.label_scores
        analyzed = high = 0
        for trade in trades:
            analyzed += 1
            if trade.trade_id in labelled:
                label_scores[trade.trade_id] = trade.risk_score
                continue
            scores.append(trade.risk_score)
            counts = by_user.get(trade.user_id)
            if counts is None:
                counts = by_user[trade.user_id] = [0, 0]
            counts[0] += 1
            if trade.level in HIGH_LEVELS:
                counts[1] += 1
                high += 1
        population.analyzed = analyzed
        population.benign_high = high
        population.benign_scores = array("d", sorted(scores))
        return population

    @property
    def benign(self) -> int:
        """Benign trades."""
        return len(self.benign_scores)


@dataclass(frozen=True)
class TradeFigures:
    """The run-level figures of the analyzed trades (the ``all`` row's extras)."""

    JSON_KEYS: ClassVar[tuple[str, ...]] = (
        "analyzedTrades",
        "scenarioTrades",
        "labelTrades",
        "benignHighShare",
        "benignHighShareByAccountType",
        "tradeScoreAuc",
    )

    analyzed: int
    benign: int
    benign_high: int
    benign_by_account: Mapping[str, tuple[int, int]] | None  # type -> (benign, HIGH+); None w/o profiles
    label_trades: int  # distinct trade ids of complete labels
    scenario_scores: Sequence[float]  # riskScore of the complete labels' trades found, sorted
    instance_scores: Sequence[float]  # max riskScore per complete label with a trade found, sorted
    benign_scores: Sequence[float]  # sorted
    trade_auc: float | None

    @property
    def benign_high_share(self) -> float | None:
        """Share of benign trades at HIGH or CRITICAL."""
        return _share(self.benign_high, self.benign)

    @property
    def benign_high_share_by_account(self) -> dict[str, float | None] | None:
        """Account type -> the share of its benign trades at HIGH or CRITICAL; None without profiles."""
        if self.benign_by_account is None:
            return None
        return {kind: _share(high, benign) for kind, (benign, high) in self.benign_by_account.items()}

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able extras of the ``all`` row."""
        return {
            "analyzedTrades": self.analyzed,
            "scenarioTrades": len(self.scenario_scores),
            "labelTrades": self.label_trades,
            "benignHighShare": self.benign_high_share,
            "benignHighShareByAccountType": self.benign_high_share_by_account,
            "tradeScoreAuc": self.trade_auc,
        }


@dataclass(frozen=True)
class Evaluation:
    """Every figure of one run: the rows (patterns, then ``all``) and the trade figures."""

    scores: list[PatternScore]
    trades: TradeFigures | None
    profiles: int | None  # accounts in the profiles file; None without one
    false_positive_accounts: list[tuple[str, str, int]]  # (userId, account type, FP alerts), most first

    @property
    def total(self) -> PatternScore:
        """The ``all`` row."""
        return self.scores[-1]

    def rows(self) -> list[dict[str, Any]]:
        """The ``--json`` rows; the ``all`` row carries the run-level trade figures as well."""
        rows = [score.to_dict() for score in self.scores]
        rows[-1].update(
            self.trades.to_dict() if self.trades is not None else dict.fromkeys(TradeFigures.JSON_KEYS)
        )
        return rows


def evaluate(
    labels: Iterable[Label], alerts: Iterable[Mapping[str, Any]], grace_ms: int = 60_000
) -> list[PatternScore]:
    """One score per pattern seen in the labels or the alerts (contract order), then ``all``."""
    return evaluate_run(labels, alerts, grace_ms).scores


def evaluate_run(
    labels: Iterable[Label],
    alerts: Iterable[Mapping[str, Any]],
    grace_ms: int = 60_000,
    trades: TradePopulation | None = None,
    account_types: Mapping[str, str] | None = None,
) -> Evaluation:
    """Every figure of the module doc; the trade figures need ``trades``, the split ``account_types``."""
    labels = list(labels)
    alerts = list(alerts)
    index = _Index(labels)
    truth = [label for label in labels if label.complete]
    detected: set[tuple[str, str]] = set()
    alert_counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # alerts, tp, fp, ignored
    outcome: list[int] = []  # per alert: 1 TP, 0 FP, -1 ignored
    fp_by_account: dict[str, Counter[str]] = defaultdict(Counter)  # pattern -> type -> FP
    fp_by_user: Counter[str] = Counter()
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
            outcome.append(1)
        elif matched:
            counts[3] += 1
            outcome.append(-1)
        else:
            counts[2] += 1
            outcome.append(0)
            user = alert.get("userId")
            if user is not None:
                fp_by_user[str(user)] += 1
                if account_types is not None:
                    fp_by_account[pattern][account_types.get(str(user), NO_DESIGNATION)] += 1

    # Top-N: each pattern's own N highest-priority alerts, and the N of all.
    alert_outcome = {id(alert): result for alert, result in zip(alerts, outcome, strict=True)}
    by_pattern_alerts: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for alert in alerts:
        by_pattern_alerts[str(alert.get("patternType"))].append(alert)

    def top_counts(group: list[Mapping[str, Any]]) -> tuple[int, int, int]:
        chosen = [alert_outcome[id(alert)] for alert in top_alerts(group)]
        return len(chosen), chosen.count(1), chosen.count(0)

    # Benign trades per account type, and the instances' scores.
    figures: TradeFigures | None = None
    benign_by_account: dict[str, int] | None = None
    benign_high_by_account: dict[str, tuple[int, int]] | None = None
    instance_scores: dict[str, list[float]] = defaultdict(list)  # pattern -> max score per label
    if trades is not None:
        if account_types is not None:
            by_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0])
            for user, (benign, high) in trades.benign_by_user.items():
                kind = by_kind[account_types.get(user, NO_DESIGNATION)]
                kind[0] += benign
                kind[1] += high
            kinds = sort_account_types(by_kind)
            benign_by_account = {kind: by_kind[kind][0] for kind in kinds}
            benign_high_by_account = {kind: (by_kind[kind][0], by_kind[kind][1]) for kind in kinds}
        scenario: dict[str, float] = {}
        for label in truth:
            found = [trades.label_scores[t] for t in label.trade_ids if t in trades.label_scores]
            if found:
                instance_scores[label.pattern].append(max(found))
            for trade_id in label.trade_ids:
                if trade_id in trades.label_scores:
                    scenario[trade_id] = trades.label_scores[trade_id]
        scenario_scores = sorted(scenario.values())
        figures = TradeFigures(
            analyzed=trades.analyzed,
            benign=trades.benign,
            benign_high=trades.benign_high,
            benign_by_account=benign_high_by_account,
            label_trades=len({t for label in truth for t in label.trade_ids}),
            scenario_scores=scenario_scores,
            instance_scores=sorted(s for group in instance_scores.values() for s in group),
            benign_scores=trades.benign_scores,
            trade_auc=roc_auc(scenario_scores, trades.benign_scores),
        )

    def trade_fields(pattern: str, instances: list[float]) -> dict[str, Any]:
        if trades is None:
            return {}
        by_account = None
        if account_types is not None:
            if pattern == "all":
                merged: Counter[str] = Counter()
                for counter in fp_by_account.values():
                    merged.update(counter)
                by_account = dict(merged)
            else:
                by_account = dict(fp_by_account.get(pattern, {}))
        return {
            "benign_trades": trades.benign,
            "false_positives_by_account": by_account,
            "benign_trades_by_account": benign_by_account,
            "scored_instances": len(instances),
            "score_auc": roc_auc(instances, trades.benign_scores),
        }

    order = _pattern_order()
    # Patterns with only incomplete labels still get a row (0 labels), so nothing vanishes silently.
    patterns = sorted(
        {label.pattern for label in labels} | set(alert_counts), key=lambda p: (order.get(p, len(order)), p)
    )
    scores = []
    for pattern in patterns:
        pattern_labels = [label for label in truth if label.pattern == pattern]
        alerts_, tp, fp, ignored = alert_counts.get(pattern, [0, 0, 0, 0])
        top, top_tp, top_fp = top_counts(by_pattern_alerts.get(pattern, []))
        scores.append(
            PatternScore(
                pattern,
                len(pattern_labels),
                sum((label.scenario_id, pattern) in detected for label in pattern_labels),
                alerts_,
                tp,
                fp,
                ignored,
                top,
                top_tp,
                top_fp,
                **trade_fields(pattern, instance_scores.get(pattern, [])),
            )
        )
    top, top_tp, top_fp = top_counts(alerts)
    scores.append(
        PatternScore(
            "all",
            sum(s.labels for s in scores),
            sum(s.detected for s in scores),
            sum(s.alerts for s in scores),
            sum(s.true_positives for s in scores),
            sum(s.false_positives for s in scores),
            sum(s.ignored for s in scores),
            top,
            top_tp,
            top_fp,
            **trade_fields("all", [s for group in instance_scores.values() for s in group]),
        )
    )
    fp_accounts = [
        (user, NO_DESIGNATION if account_types is None else account_types.get(user, NO_DESIGNATION), count)
        for user, count in sorted(fp_by_user.items(), key=lambda item: (-item[1], item[0]))
    ]
    return Evaluation(scores, figures, None if account_types is None else len(account_types), fp_accounts)


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


# --- Text -----------------------------------------------------------------------------------------


def figure(value: float | None) -> str:
    """A ratio with 3 decimals, or n/a."""
    return "n/a" if value is None else f"{value:.3f}"


def rate_figure(value: float | None) -> str:
    """A rate per 10,000 with 2 decimals, or n/a."""
    return "n/a" if value is None else f"{value:.2f}"


def percent(value: float | None) -> str:
    """A share as a percentage with 2 decimals, or n/a."""
    return "n/a" if value is None else f"{value * 100:.2f}%"


def _align(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])] + [
            cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


MATCH_HEADER = ("pattern", "labels", "detected", "recall", "alerts", "TP", "FP", "ignored", "precision", "F1")


def match_rows(scores: Iterable[PatternScore]) -> list[tuple[str, ...]]:
    """The matching figures of each row, formatted as the text table and the HTML report show them."""
    return [
        (
            s.pattern,
            str(s.labels),
            str(s.detected),
            figure(s.recall),
            str(s.alerts),
            str(s.true_positives),
            str(s.false_positives),
            str(s.ignored),
            figure(s.precision),
            figure(s.f1),
        )
        for s in scores
    ]


def format_table(scores: Iterable[PatternScore]) -> str:
    """The scores as an aligned text table."""
    return _align(MATCH_HEADER, match_rows(scores))


QUALITY_HEADER = ("pattern", "FP", "FP/10k", "top-100", "top-100 precision", "instances", "score AUC")


def quality_rows(scores: Iterable[PatternScore]) -> list[tuple[str, ...]]:
    """The tuning figures of each row, formatted as the text table and the HTML report show them."""
    return [
        (
            s.pattern,
            str(s.false_positives),
            rate_figure(s.benign_alert_rate),
            str(s.top_alerts),
            figure(s.top_precision),
            "n/a" if s.scored_instances is None else str(s.scored_instances),
            figure(s.score_auc),
        )
        for s in scores
    ]


def account_columns(evaluation: Evaluation) -> list[str]:
    """The account types of the split: those with benign trades or false positives."""
    kinds: set[str] = set()
    for score in evaluation.scores:
        kinds.update(score.benign_alert_rate_by_account or {})
    return sort_account_types(kinds)


def account_rows(evaluation: Evaluation) -> tuple[tuple[str, ...], list[tuple[str, ...]]] | None:
    """FP/10k per pattern and account type, then the benign trades and HIGH+ share per type."""
    columns = account_columns(evaluation)
    figures = evaluation.trades
    if figures is None or figures.benign_by_account is None:
        return None
    rows: list[tuple[str, ...]] = []
    for score in evaluation.scores:
        rates = score.benign_alert_rate_by_account or {}
        rows.append((score.pattern, *(rate_figure(rates.get(kind)) for kind in columns)))
    shares = figures.benign_high_share_by_account or {}
    rows.append(("benign trades", *(f"{figures.benign_by_account.get(k, (0, 0))[0]:,}" for k in columns)))
    rows.append(("benign HIGH+", *(percent(shares.get(k)) for k in columns)))
    return ("FP/10k by account type", *columns), rows


def summary_lines(evaluation: Evaluation) -> list[str]:
    """The run-level figures, one per line."""
    figures = evaluation.trades
    if figures is None:
        return ["no analyzed trades (--trades): FP/10k, instances, score AUC and benign HIGH+ are n/a"]
    return [
        f"analyzed trades: {figures.analyzed:,}; benign: {figures.benign:,}; scenario trades: "
        f"{len(figures.scenario_scores):,} of {figures.label_trades:,} in complete labels",
        f"benign HIGH+ share: {percent(figures.benign_high_share)}; per-trade score AUC "
        f"(scenario trades vs benign trades): {figure(figures.trade_auc)}",
        "account types: "
        + (
            "n/a (no profiles: --profiles)"
            if evaluation.profiles is None
            else f"{evaluation.profiles:,} profiles; accounts without one count as {NO_DESIGNATION}"
        ),
    ]


#: Patterns need this many counted alerts (TP + FP) before their precision suggests a weight.
MIN_ALERTS_FOR_WEIGHT = 5


def suggested_weight(precision: float) -> float:
    """The ``priority.pattern.weights`` entry a pattern's precision suggests: ``0.25 + 0.75 x
    precision^(1/3)`` to one decimal (0.4 at 1 % true, 0.6 at 10 %, 1 when nearly all are true)."""
    return round(min(1.0, 0.25 + 0.75 * math.pow(precision, 1.0 / 3.0)), 1)


def suggested_weights(scores: Iterable[PatternScore]) -> str:
    """``priority.pattern.weights`` from this run's decisions (labels): the patterns with enough
    alerts whose suggested weight is below 1, in contract order (tuning against past decisions)."""
    pairs = []
    for score in scores:
        precision = score.precision
        if score.pattern == "all" or precision is None:
            continue
        if score.true_positives + score.false_positives < MIN_ALERTS_FOR_WEIGHT:
            continue
        weight = suggested_weight(precision)
        if weight < 1.0:
            pairs.append(f"{score.pattern}:{weight:g}")
    return ",".join(pairs)


def format_report(evaluation: Evaluation) -> str:
    """The text output: the match table, the tuning table, the account-type split, the summary."""
    parts = [format_table(evaluation.scores), _align(QUALITY_HEADER, quality_rows(evaluation.scores))]
    split = account_rows(evaluation)
    if split is not None:
        parts.append(_align(*split))
    lines = summary_lines(evaluation)
    lines.append(
        "suggested rule priority.pattern.weights (from this run's decisions): "
        + (suggested_weights(evaluation.scores) or "(none below 1)")
    )
    parts.append("\n".join(lines))
    return "\n\n".join(parts)
