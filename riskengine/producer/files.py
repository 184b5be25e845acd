"""Writing a simulated run to JSON-lines files (``riskengine generate``), and reading labels back.

For ``--out RUN.jsonl`` the files are:

- ``RUN.jsonl``: the trades, one ``CryptoTrade`` record per line (camelCase), for ``riskengine
  replay``;
- ``RUN.orders.jsonl``: the ``OrderEvent`` records;
- ``RUN.labels.jsonl``: one :class:`~riskengine.producer.events.Label` per line;
- ``RUN.profiles.jsonl``: one ``UserProfile`` record per account;
- ``RUN.reference.json``: the profiles and the sanctioned countries as ``riskengine replay
  --reference`` reads them;
- ``RUN.stats.json``: :meth:`~riskengine.producer.simulator.SimulationStats.to_dict` of the run
  (benign instances per pattern, trade records by role, order events per trade record, the market
  makers' inventories, scenarios started, completed and skipped).

Lines are compact JSON with keys in contract order, so equal runs give byte-identical files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .events import EventKind, Label
from .population import reference_document
from .simulator import SimulationConfig, SimulationStats, Simulator


@dataclass(frozen=True)
class RunFiles:
    """The paths of one generated run."""

    trades: Path
    orders: Path
    labels: Path
    profiles: Path
    reference: Path
    stats: Path

    @classmethod
    def for_output(cls, out: Path) -> RunFiles:
        """The side files next to ``out`` (``X.jsonl`` -> ``X.labels.jsonl`` and so on)."""
        stem = out.name[: -len(".jsonl")] if out.name.endswith(".jsonl") else out.name
        return cls(
            trades=out,
            orders=out.with_name(f"{stem}.orders.jsonl"),
            labels=out.with_name(f"{stem}.labels.jsonl"),
            profiles=out.with_name(f"{stem}.profiles.jsonl"),
            reference=out.with_name(f"{stem}.reference.json"),
            stats=out.with_name(f"{stem}.stats.json"),
        )


@dataclass(frozen=True)
class GeneratedRun:
    """What :func:`write_run` wrote."""

    files: RunFiles
    stats: SimulationStats
    labels: list[Label]
    users: int


def _line(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"


def write_run(config: SimulationConfig, trades: int, out: Path) -> GeneratedRun:
    """Simulate ``trades`` trades with ``config`` and write the run's files (see the module doc)."""
    files = RunFiles.for_output(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    simulator = Simulator(config)
    with (
        files.trades.open("w", encoding="utf-8") as trade_file,
        files.orders.open("w", encoding="utf-8") as order_file,
    ):
        sinks: dict[EventKind, TextIO] = {EventKind.TRADE: trade_file, EventKind.ORDER: order_file}
        for event in simulator.events(max_trades=trades):
            sinks[event.kind].write(_line(event.record))
    labels = sorted(
        simulator.drain_labels(), key=lambda label: (label.start_ts, label.scenario_id, label.role)
    )
    with files.labels.open("w", encoding="utf-8") as handle:
        handle.writelines(_line(label.to_record()) for label in labels)
    with files.profiles.open("w", encoding="utf-8") as handle:
        handle.writelines(_line(profile) for profile in simulator.profiles())
    document = reference_document(simulator.population, config.start_ms)
    files.reference.write_text(json.dumps(document, separators=(",", ":")) + "\n", encoding="utf-8")
    files.stats.write_text(json.dumps(simulator.stats.to_dict(), indent=1) + "\n", encoding="utf-8")
    return GeneratedRun(files, simulator.stats, labels, len(simulator.population.users))


def read_labels(path: Path) -> list[Label]:
    """Labels from a labels file; ValueError names the line of a malformed one."""
    labels: list[Label] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                labels.append(Label.from_record(json.loads(line)))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: not a label: {exc!r}") from None
    return labels
