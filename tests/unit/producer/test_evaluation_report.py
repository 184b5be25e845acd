"""The ``evaluate --report`` page: self-contained, escaped, one SVG per chart, the computed numbers."""

import html
import re
from typing import Any

import pytest

from riskengine.producer.evaluation import (
    Evaluation,
    TradePopulation,
    TradeRecord,
    evaluate_run,
    figure,
    histogram,
    rate_figure,
)
from riskengine.producer.evaluation_report import BINS, ReportInputs, render_report
from riskengine.producer.events import Label, LabelRole

HOSTILE_PATTERN = '<script>alert("p")</script>'
HOSTILE_USER = "u'\"><svg onload=alert(1)>&amp;"


def label(sid: str, pattern: str, trades: tuple[str, ...], user: str, complete: bool = True) -> Label:
    return Label(
        sid,
        "s",
        pattern,
        LabelRole.PRIMARY,
        (user,),
        "BTC/USDT",
        1_000,
        2_000,
        trades,
        (),
        (),
        complete,
        True,
    )


def alert(
    alert_id: str, pattern: str, evidence: str, user: str | None, priority: int | None
) -> dict[str, Any]:
    return {
        "alertId": alert_id,
        "patternType": pattern,
        "evidence": [evidence],
        "userId": user,
        "symbol": "BTC/USDT",
        "timestamp": 900_000,
        "priority": priority,
    }


def run(with_trades: bool = True, with_profiles: bool = True) -> Evaluation:
    labels = [
        label("S1", "WASH_TRADING", ("s1", "s2"), "u1"),
        label("S2", "LARGE_ORDER", ("s3",), "u2"),
        label("S3", HOSTILE_PATTERN, ("s4",), HOSTILE_USER),
    ]
    trades = [
        TradeRecord("s1", "u1", 0.9, "CRITICAL"),
        TradeRecord("s2", "u1", 0.2, "LOW"),
        TradeRecord("s3", "u2", 0.7, "HIGH"),
        TradeRecord("s4", HOSTILE_USER, 0.4, "MEDIUM"),
    ] + [TradeRecord(f"b{i}", ("u1", "u2", HOSTILE_USER)[i % 3], i / 200, "LOW") for i in range(200)]
    alerts = [
        alert("a1", "WASH_TRADING", "s1", "u1", 80),
        alert("a2", "WASH_TRADING", "b5", "u1", 10),
        alert("a3", "LARGE_ORDER", "s3", "u2", None),
        alert("a4", HOSTILE_PATTERN, "b7", HOSTILE_USER, 50),
        alert("a5", "PRICE_CRASH", "b9", None, 30),
    ]
    population = TradePopulation.collect(trades, labels) if with_trades else None
    profiles = {"u1": "MARKET_MAKER", "u2": "RETAIL", HOSTILE_USER: HOSTILE_USER} if with_profiles else None
    return evaluate_run(labels, alerts, trades=population, account_types=profiles)


INPUTS = ReportInputs(
    labels="run.labels.jsonl",
    alerts=f"replay/{HOSTILE_PATTERN}.jsonl",
    trades="replay/analyzed-trades.jsonl",
    profiles="run.profiles.jsonl",
    label_count=3,
    complete_labels=3,
    alert_count=5,
    grace_ms=60_000,
)


def data_values(page: str, **attrs: str) -> list[str]:
    """The data-value of every element carrying the given data-* attributes (in that order)."""
    selector = "".join(f'data-{key}="{re.escape(html.escape(value))}" ' for key, value in attrs.items())
    return re.findall(selector + r'data-value="([^"]*)"', page)


def test_one_svg_per_chart_and_nothing_fetched():
    page = render_report(run(), INPUTS)
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") == 4 and page.count("</svg>") == 4
    lowered = page.lower()
    for reference in ("http://", "https://", "src=", "<script", "<img", "<link", "@import", "url("):
        assert reference not in lowered, reference


def test_input_strings_are_escaped():
    page = render_report(run(), INPUTS)
    assert HOSTILE_PATTERN not in page and HOSTILE_USER not in page
    assert "<svg onload" not in page
    assert html.escape(HOSTILE_PATTERN) in page
    assert html.escape(HOSTILE_USER) in page  # the false-positive accounts table
    assert html.escape(f"replay/{HOSTILE_PATTERN}.jsonl") in page


def test_the_numbers_on_the_page_are_the_computed_ones():
    result = run()
    page = render_report(result, INPUTS)
    scores = {s.pattern: s for s in result.scores}
    for pattern, score in scores.items():
        for metric, value in (("precision", score.precision), ("recall", score.recall)):
            expected = ["n/a" if value is None else repr(value)]
            assert data_values(page, pattern=pattern, metric=metric) == expected, (pattern, metric)
        assert data_values(page, pattern=pattern, metric="benign-alert-rate") == [
            repr(score.benign_alert_rate)
        ]
    wash = scores["WASH_TRADING"]
    assert wash.benign_alert_rate == pytest.approx(10_000 / 200)
    # The tables show the figures as the text output formats them.
    cells = re.findall(r"<tr[^>]*><td>WASH_TRADING</td>(.*?)</tr>", page)
    match_row, quality_row, split_row = (re.findall(r"<td[^>]*>([^<]*)</td>", row) for row in cells)
    assert match_row[2] == figure(wash.recall) and match_row[-2] == figure(wash.precision)
    assert quality_row == [
        "1",
        rate_figure(wash.benign_alert_rate),
        "2",
        figure(wash.top_precision),
        "1",
        figure(wash.score_auc),
    ]
    # Columns RETAIL, MARKET_MAKER (u1: 1 FP, 67 benign trades), then the unknown (hostile) type.
    assert split_row == ["0.00", rate_figure(10_000 / 67), "0.00"]
    assert f"<th>{html.escape(HOSTILE_USER)}</th>" in page
    figures = result.trades
    assert figures is not None
    for series, values in (("benign", figures.benign_scores), ("scenario", figures.scenario_scores)):
        densities = histogram(values, BINS)
        shown = {
            int(b): float(v)
            for b, v in re.findall(f'data-series="{series}" data-bin="(\\d+)" data-value="([^"]*)"', page)
        }
        assert shown == {i: d for i, d in enumerate(densities) if d > 0}
    assert f"<strong>{figure(figures.trade_auc)}</strong>" in page
    assert 'data-curve="instances"' in page and 'data-curve="trades"' in page


def test_without_trades_or_profiles_the_charts_say_n_a():
    page = render_report(run(with_trades=False), INPUTS)
    assert page.count("<svg") == 4
    assert page.count("n/a: no analyzed trades (--trades)") == 3
    assert data_values(page, pattern="WASH_TRADING", metric="precision") == ["0.5"]
    page = render_report(run(with_profiles=False), INPUTS)
    assert "n/a: no profiles (--profiles)" in page and page.count("<svg") == 4
