"""deploy/grafana/riskengine-dashboard.json: it parses, and every metric (and label) it queries is
one the worker's /metrics really exposes, so a renamed metric cannot leave an empty panel behind."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from riskengine.worker.metrics import Metrics, exposition
from riskengine.worker.web_views import prometheus_text, stats_document
from tests.unit.worker.test_metrics import run_worker, stats_of

DASHBOARD = Path(__file__).parents[3] / "deploy" / "grafana" / "riskengine-dashboard.json"
#: Labels Prometheus adds at scrape time, and the histograms' bucket label.
SCRAPE_LABELS = {"instance", "job", "le", "pod", "namespace"}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target."""
    return [(p["title"], t["expr"]) for p in dashboard()["panels"] for t in p["targets"]]


async def exposed() -> dict[str, set[str]]:
    """Sample name -> its label names, from a worker that ran trades (histograms filled)."""
    worker, _events, _trades = await run_worker()
    context = worker.context
    text = prometheus_text(stats_document(None, context), context.metrics)  # type: ignore[arg-type]
    # The labelled figures of a worker owning partitions and with dead letters, which the run has not.
    text += exposition(lambda: stats_of(Metrics()))
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def test_the_dashboard_parses_and_shows_what_an_sre_looks_for():
    board = dashboard()
    assert board["uid"] and board["title"]
    titles = " ".join(p["title"].lower() for p in board["panels"])
    for topic in ("throughput", "lag per partition", "event-time lag", "alerts by pattern", "dead letters"):
        assert topic in titles
    assert "rebalances" in titles
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
    # Latency percentiles come from the histograms.
    assert any("histogram_quantile(0.99" in expr for _t, expr in queries())


def problems(expr: str, names: dict[str, set[str]]) -> list[str]:
    """What in ``expr`` /metrics does not have: metric names, and labels it groups by."""
    metrics = re.findall(r"\briskengine_[a-z0-9_]+", expr)
    if not metrics:
        return ["no riskengine metric"]
    missing = [f"metric {m}" for m in metrics if m not in names]
    if missing:
        return missing
    grouped = {label.strip() for group in re.findall(r"by \(([^)]*)\)", expr) for label in group.split(",")}
    available = set().union(*(names[m] for m in metrics)) | SCRAPE_LABELS
    return [f"label {label}" for label in sorted(grouped - available)]


async def test_every_metric_and_label_the_dashboard_queries_exists():
    names = await exposed()
    for title, expr in queries():
        assert problems(expr, names) == [], title


async def test_the_check_catches_a_renamed_metric_and_a_wrong_label():
    names = await exposed()
    assert problems("sum(rate(riskengine_analysed_total[1m]))", names) == ["metric riskengine_analysed_total"]
    assert problems("sum by (topic) (riskengine_consumer_lag)", names) == ["label topic"]
    assert problems("sum by (partition) (riskengine_consumer_lag)", names) == []
