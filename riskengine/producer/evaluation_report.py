"""The ``riskengine evaluate --report`` page: the evaluation's tables and charts in one HTML file.

The page is self-contained and works offline: inline CSS and inline SVG drawn here, no script, no
font, image or style sheet from anywhere. Every string that comes from the inputs (patterns,
account ids and types, file names) is HTML-escaped. Each chart's bars and points carry their
exact value in ``data-value`` attributes, the tables show the figures as the text output does.

Charts: precision and recall per pattern (grouped bars), FP alerts per 10,000 benign trades per
pattern (bars, with the target line), the riskScore densities of benign and scenario trades (20
bins, log scale) and the ROC curves (instances and trades against benign trades).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

from .evaluation import (
    MATCH_HEADER,
    NO_DESIGNATION,
    QUALITY_HEADER,
    RATE_BASE,
    RATE_TARGET,
    TOP_N,
    Evaluation,
    PatternScore,
    TradeFigures,
    account_rows,
    figure,
    histogram,
    match_rows,
    percent,
    quality_rows,
    roc_curve,
)

#: Bins of the riskScore histograms.
BINS = 20
#: Accounts listed in the false-positive table.
TOP_ACCOUNTS = 10

_PRECISION, _RECALL = "#2b6cb0", "#dd6b20"
_BENIGN, _SCENARIO = "#718096", "#c53030"
_LABEL_WIDTH = 170
_LABEL_CHARS = 26

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       color: #1a202c; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #cbd5e0; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #e2e8f0; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.all td { font-weight: bold; border-top: 2px solid #a0aec0; }
td.na { color: #a0aec0; }
figure { margin: 1em 0; } figcaption { font-size: 0.9em; color: #4a5568; max-width: 800px; }
svg { background: #fff; border: 1px solid #e2e8f0; }
svg text { font-family: system-ui, sans-serif; font-size: 11px; fill: #2d3748; }
.legend { font-size: 0.85em; }
p.read { max-width: 850px; line-height: 1.45; }
code { background: #edf2f7; padding: 0 0.2em; }
"""


@dataclass(frozen=True)
class ReportInputs:
    """What the report says about the run's inputs."""

    labels: str
    alerts: str
    trades: str | None
    profiles: str | None
    label_count: int
    complete_labels: int
    alert_count: int
    grace_ms: int


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float) -> str:
    return f"{value:.1f}"


def _short(text: str) -> str:
    return text if len(text) <= _LABEL_CHARS else text[: _LABEL_CHARS - 1] + "…"


def _svg(width: int, height: int, title: str, body: list[str]) -> str:
    return (
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{_e(title)}"><title>{_e(title)}</title>' + "".join(body) + "</svg>"
    )


def _message_svg(title: str, message: str) -> str:
    return _svg(600, 60, title, [f'<text x="20" y="35">{_e(message)}</text>'])


def _bar(x: float, y: float, width: float, height: float, color: str, attrs: dict[str, str], tip: str) -> str:
    data = "".join(f' data-{key}="{_e(value)}"' for key, value in attrs.items())
    return (
        f'<rect x="{_num(x)}" y="{_num(y)}" width="{_num(max(width, 0.0))}" height="{_num(height)}" '
        f'fill="{color}"{data}><title>{_e(tip)}</title></rect>'
    )


def _row_label(y: float, pattern: str) -> str:
    weight = ' font-weight="bold"' if pattern == "all" else ""
    return (
        f'<text x="{_LABEL_WIDTH - 8}" y="{_num(y)}" text-anchor="end" dominant-baseline="middle"{weight}>'
        f"<title>{_e(pattern)}</title>{_e(_short(pattern))}</text>"
    )


def _x_axis(
    left: float, right: float, top: float, bottom: float, ticks: list[tuple[float, str]]
) -> list[str]:
    parts = []
    for value, text in ticks:
        x = left + value * (right - left)
        parts.append(
            f'<line x1="{_num(x)}" y1="{_num(top)}" x2="{_num(x)}" y2="{_num(bottom)}" stroke="#e2e8f0"/>'
            f'<text x="{_num(x)}" y="{_num(bottom + 14)}" text-anchor="middle">{_e(text)}</text>'
        )
    return parts


def precision_recall_svg(scores: Sequence[PatternScore]) -> str:
    """Precision and recall per pattern, two horizontal bars per row (n/a written out)."""
    row, top, plot = 30, 30, 480
    height = top + row * len(scores) + 40
    left, right = _LABEL_WIDTH, _LABEL_WIDTH + plot
    body = [
        f'<rect x="{left}" y="8" width="10" height="10" fill="{_PRECISION}"/>'
        f'<text x="{left + 14}" y="17">precision</text>'
        f'<rect x="{left + 90}" y="8" width="10" height="10" fill="{_RECALL}"/>'
        f'<text x="{left + 104}" y="17">recall</text>'
    ]
    body += _x_axis(left, right, top, height - 34, [(v / 4, f"{v / 4:g}") for v in range(5)])
    for i, score in enumerate(scores):
        y = top + i * row
        body.append(_row_label(y + row / 2, score.pattern))
        for j, (metric, value, color) in enumerate(
            (("precision", score.precision, _PRECISION), ("recall", score.recall, _RECALL))
        ):
            by = y + 4 + j * 11
            if value is None:
                body.append(
                    f'<text x="{left + 4}" y="{_num(by + 9)}" fill="#a0aec0" '
                    f'data-pattern="{_e(score.pattern)}" data-metric="{metric}" data-value="n/a">'
                    f"{metric} n/a</text>"
                )
                continue
            attrs = {"pattern": score.pattern, "metric": metric, "value": repr(value)}
            body.append(
                _bar(left, by, value * plot, 10, color, attrs, f"{score.pattern} {metric} {figure(value)}")
            )
    return _svg(right + 20, height, "Precision and recall per pattern", body)


def benign_rate_svg(scores: Sequence[PatternScore]) -> str:
    """FP alerts per 10,000 benign trades per pattern, with the target line."""
    title = f"False-positive alerts per {RATE_BASE:,} benign trades"
    rates = [score.benign_alert_rate for score in scores]
    if all(rate is None for rate in rates):
        return _message_svg(title, "n/a: no analyzed trades (--trades)")
    row, top, plot = 22, 30, 480
    height = top + row * len(scores) + 40
    left, right = _LABEL_WIDTH, _LABEL_WIDTH + plot
    scale_max = _nice_max(max([RATE_TARGET, *(r for r in rates if r is not None)]) * 1.05)
    ticks = [(v / 5, f"{scale_max * v / 5:g}") for v in range(6)]
    body = _x_axis(left, right, top, height - 34, ticks)
    for i, (score, rate) in enumerate(zip(scores, rates, strict=True)):
        y = top + i * row
        body.append(_row_label(y + row / 2, score.pattern))
        if rate is None:
            body.append(
                f'<text x="{left + 4}" y="{_num(y + row / 2 + 4)}" fill="#a0aec0" '
                f'data-pattern="{_e(score.pattern)}" data-value="n/a">n/a</text>'
            )
            continue
        color = _SCENARIO if rate > RATE_TARGET else _PRECISION
        attrs = {"pattern": score.pattern, "metric": "benign-alert-rate", "value": repr(rate)}
        tip = f"{score.pattern}: {rate:.2f} FP per {RATE_BASE:,} benign trades ({score.false_positives} FP)"
        body.append(_bar(left, y + 4, rate / scale_max * plot, row - 8, color, attrs, tip))
        body.append(
            f'<text x="{_num(left + rate / scale_max * plot + 4)}" y="{_num(y + row / 2 + 4)}">'
            f"{rate:.2f}</text>"
        )
    x = left + RATE_TARGET / scale_max * plot
    body.append(
        f'<line x1="{_num(x)}" y1="{top - 6}" x2="{_num(x)}" y2="{height - 34}" stroke="#2d3748" '
        f'stroke-dasharray="5,3" data-target="{RATE_TARGET!r}"/>'
        f'<text x="{_num(x + 4)}" y="{top - 10}">target {RATE_TARGET:g} per {RATE_BASE:,}</text>'
    )
    return _svg(right + 60, height, title, body)


def _nice_max(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten at or above ``value``."""
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power


def score_histogram_svg(figures: TradeFigures | None) -> str:
    """Densities of riskScore, benign against scenario trades, 20 bins, log scale."""
    title = "riskScore density: benign trades vs scenario trades (log scale)"
    if figures is None or not figures.benign_scores:
        return _message_svg(title, "n/a: no analyzed trades (--trades)")
    series = [
        (
            "benign",
            f"benign trades ({len(figures.benign_scores):,})",
            histogram(figures.benign_scores, BINS),
            _BENIGN,
        ),
        (
            "scenario",
            f"scenario trades ({len(figures.scenario_scores):,})",
            histogram(figures.scenario_scores, BINS),
            _SCENARIO,
        ),
    ]
    positive = [d for _, _, densities, _ in series for d in densities if d > 0]
    low = 10 ** math.floor(math.log10(min(positive)))
    high = 10 ** math.ceil(math.log10(max(positive)))
    if high <= low:
        high = low * 10
    left, top, width, plot_h = 60, 40, 600, 280
    bottom = top + plot_h
    bin_w = width / BINS

    def y_of(density: float) -> float:
        return (
            bottom - (math.log10(density) - math.log10(low)) / (math.log10(high) - math.log10(low)) * plot_h
        )

    body = []
    decade = low
    while decade <= high * 1.0001:
        y = y_of(decade)
        body.append(
            f'<line x1="{left}" y1="{_num(y)}" x2="{left + width}" y2="{_num(y)}" stroke="#e2e8f0"/>'
            f'<text x="{left - 6}" y="{_num(y + 4)}" text-anchor="end">{decade:g}</text>'
        )
        decade *= 10
    for i in range(0, BINS + 1, 4):
        x = left + i * bin_w
        body.append(f'<text x="{_num(x)}" y="{bottom + 16}" text-anchor="middle">{i / BINS:g}</text>')
    body.append(f'<text x="{left + width / 2}" y="{bottom + 34}" text-anchor="middle">riskScore</text>')
    body.append(
        f'<text x="14" y="{top + plot_h / 2}" transform="rotate(-90 14 {top + plot_h / 2})" '
        f'text-anchor="middle">density</text>'
    )
    for s, (key, legend, densities, color) in enumerate(series):
        body.append(
            f'<rect x="{left + 10 + s * 230}" y="12" width="10" height="10" fill="{color}" '
            f'fill-opacity="0.5" stroke="{color}"/>'
            f'<text x="{left + 24 + s * 230}" y="21">{_e(legend)}</text>'
        )
        for i, density in enumerate(densities):
            attrs = {"series": key, "bin": str(i), "value": repr(density)}
            if density <= 0:
                continue
            y = y_of(density)
            tip = f"{legend}: riskScore {i / BINS:g}-{(i + 1) / BINS:g}, density {density:.4g}"
            rect = _bar(left + i * bin_w + 1, y, bin_w - 2, bottom - y, color, attrs, tip)
            body.append(rect.replace("<rect ", f'<rect fill-opacity="0.45" stroke="{color}" ', 1))
    body.append(
        f'<rect x="{left}" y="{top}" width="{width}" height="{plot_h}" fill="none" stroke="#a0aec0"/>'
    )
    return _svg(left + width + 20, bottom + 44, title, body)


def roc_svg(figures: TradeFigures | None, instance_auc: float | None) -> str:
    """The ROC curves: instances (max riskScore) and scenario trades, against benign trades."""
    title = "ROC of riskScore against benign trades"
    if figures is None or not figures.benign_scores:
        return _message_svg(title, "n/a: no analyzed trades (--trades)")
    curves = [
        (
            "instances",
            f"instances, max riskScore (AUC {figure(instance_auc)})",
            figures.instance_scores,
            _SCENARIO,
        ),
        ("trades", f"scenario trades (AUC {figure(figures.trade_auc)})", figures.scenario_scores, _PRECISION),
    ]
    left, top, size = 60, 50, 340
    bottom = top + size
    body = []
    for v in range(5):
        t = v / 4
        x, y = left + t * size, bottom - t * size
        body.append(
            f'<line x1="{_num(x)}" y1="{top}" x2="{_num(x)}" y2="{bottom}" stroke="#e2e8f0"/>'
            f'<line x1="{left}" y1="{_num(y)}" x2="{left + size}" y2="{_num(y)}" stroke="#e2e8f0"/>'
            f'<text x="{_num(x)}" y="{bottom + 16}" text-anchor="middle">{t:g}</text>'
            f'<text x="{left - 6}" y="{_num(y + 4)}" text-anchor="end">{t:g}</text>'
        )
    body.append(
        f'<line x1="{left}" y1="{bottom}" x2="{left + size}" y2="{top}" stroke="#a0aec0" '
        f'stroke-dasharray="4,3"/>'
        f'<text x="{left + size / 2}" y="{bottom + 34}" text-anchor="middle">false positive rate '
        f"(benign trades at or above the threshold)</text>"
        f'<text x="16" y="{top + size / 2}" transform="rotate(-90 16 {top + size / 2})" '
        f'text-anchor="middle">true positive rate</text>'
    )
    for c, (key, legend, positives, color) in enumerate(curves):
        body.append(
            f'<line x1="{left + 10}" y1="{14 + c * 16}" x2="{left + 30}" y2="{14 + c * 16}" stroke="{color}" '
            f'stroke-width="2"/><text x="{left + 36}" y="{18 + c * 16}">{_e(legend)}</text>'
        )
        curve = roc_curve(positives, figures.benign_scores)
        if not curve:
            continue
        points = " ".join(f"{_num(left + fpr * size)},{_num(bottom - tpr * size)}" for fpr, tpr in curve)
        body.append(
            f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2" data-curve="{key}" '
            f'data-points="{len(curve)}"/>'
        )
    body.append(f'<rect x="{left}" y="{top}" width="{size}" height="{size}" fill="none" stroke="#a0aec0"/>')
    return _svg(left + size + 30, bottom + 44, title, body)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], total_row: bool = True) -> str:
    head = "".join(f"<th>{_e(cell)}</th>" for cell in header)
    body = []
    for row in rows:
        css = ' class="all"' if total_row and row[0] == "all" else ""
        cells = "".join(f'<td class="na">{_e(c)}</td>' if c == "n/a" else f"<td>{_e(c)}</td>" for c in row)
        body.append(f"<tr{css}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _figure_block(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{_e(caption)}</figcaption></figure>"


def _inputs_table(evaluation: Evaluation, inputs: ReportInputs) -> str:
    figures = evaluation.trades
    rows: list[tuple[str, str]] = [
        ("labels file", inputs.labels),
        ("labels (complete)", f"{inputs.label_count:,} ({inputs.complete_labels:,})"),
        ("alerts file", inputs.alerts),
        ("alerts", f"{inputs.alert_count:,}"),
        ("analyzed trades file", inputs.trades or "none (trade-based figures n/a)"),
        ("profiles file", inputs.profiles or "none (account-type split n/a)"),
        ("grace after a label's end", f"{inputs.grace_ms / 1000:g} s"),
    ]
    if evaluation.profiles is not None:
        rows.append(("profiles", f"{evaluation.profiles:,}"))
    if figures is not None:
        rows += [
            ("analyzed trades", f"{figures.analyzed:,}"),
            ("benign trades", f"{figures.benign:,}"),
            (
                "scenario trades (found / in complete labels)",
                f"{len(figures.scenario_scores):,} / {figures.label_trades:,}",
            ),
            (
                "instances scored (complete labels with an analyzed trade)",
                f"{len(figures.instance_scores):,}",
            ),
        ]
    body = "".join(f"<tr><td>{_e(name)}</td><td>{_e(value)}</td></tr>" for name, value in rows)
    return f"<table><tbody>{body}</tbody></table>"


def _summary(evaluation: Evaluation) -> str:
    figures = evaluation.trades
    if figures is None:
        return "<p>No analyzed trades: benign alert rates, score AUC and the benign HIGH+ share are n/a.</p>"
    return (
        f"<p>Benign HIGH+ share: <strong>{_e(percent(figures.benign_high_share))}</strong> of "
        f"{figures.benign:,} benign trades. Per-trade score AUC (every scenario trade against every "
        f"benign trade): <strong>{_e(figure(figures.trade_auc))}</strong>.</p>"
    )


def _fp_accounts(evaluation: Evaluation) -> str:
    if not evaluation.false_positive_accounts:
        return "<p>No false-positive alert names an account.</p>"
    rows = [
        (user, kind if evaluation.profiles is not None else "n/a", str(count))
        for user, kind, count in evaluation.false_positive_accounts[:TOP_ACCOUNTS]
    ]
    return _table(("account", "account type", "FP alerts"), rows, total_row=False)


_HOW_TO_READ = f"""
<p class="read">Each <strong>alert</strong> is matched to the scenario labels of the generated run: a
<strong>TP</strong> matches a complete label of its pattern, an <strong>FP</strong> matches no label
(it fired on benign flow), an <em>ignored</em> one matches only a label the run cut short.
<strong>Recall</strong> is the share of labelled instances detected; <strong>precision</strong> the
share of counted alerts that are TP. To tune a threshold, read the <strong>FP/10k</strong> column:
false-positive alerts per {RATE_BASE:,} benign trades, the analysts' workload the threshold costs
(target: under {RATE_TARGET:g}); the account-type split shows whether the noise comes from, say,
market makers. <strong>Top-{TOP_N} precision</strong> is the precision of the {TOP_N} alerts with
the highest priority: what an analyst reading the queue from the top finds. <strong>Score AUC</strong>
is the probability that an instance's most suspicious trade scores above a random benign trade
(0.5: no better than chance; 1: every instance above every benign trade); the score histogram and
the ROC curve show where the score separates them, and the <strong>benign HIGH+</strong> share is the
part of normal flow that the risk level alone would escalate. Accounts without a designation (or
without a profile) count as <code>{NO_DESIGNATION}</code>; alerts without an account (market-level)
count in the overall rates only.</p>
"""


def render_report(evaluation: Evaluation, inputs: ReportInputs) -> str:
    """The whole page."""
    scores = evaluation.scores
    instance_auc = evaluation.total.score_auc
    split = account_rows(evaluation)
    split_html = (
        _table(split[0], split[1])
        if split is not None
        else "<p>n/a: no profiles (--profiles) or no analyzed trades (--trades).</p>"
    )
    sections = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>riskengine evaluate: alert quality</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Alert quality per pattern</h1>",
        _HOW_TO_READ,
        "<h2>Inputs</h2>",
        _inputs_table(evaluation, inputs),
        "<h2>Detection: precision and recall</h2>",
        _table(MATCH_HEADER, match_rows(scores)),
        _figure_block(
            precision_recall_svg(scores),
            "Precision (TP / (TP + FP)) and recall (detected / labels) per pattern; n/a where undefined.",
        ),
        "<h2>Tuning: benign alert rate, top-100 precision, score AUC</h2>",
        _table(QUALITY_HEADER, quality_rows(scores)),
        _summary(evaluation),
        _figure_block(
            benign_rate_svg(scores),
            f"False-positive alerts per {RATE_BASE:,} benign trades; the dashed line is the target of "
            f"{RATE_TARGET:g}; red bars are above it.",
        ),
        "<h3>By account type</h3>",
        split_html,
        "<h3>Accounts with the most false positives</h3>",
        _fp_accounts(evaluation),
        "<h2>Risk score</h2>",
        _figure_block(
            score_histogram_svg(evaluation.trades),
            f"Normalised densities of riskScore in {BINS} bins (each series integrates to 1), log "
            "scale so the small scenario population stays visible.",
        ),
        _figure_block(
            roc_svg(evaluation.trades, instance_auc),
            "True positive rate against false positive rate as the riskScore threshold falls; the "
            "diagonal is chance.",
        ),
        "</body></html>",
    ]
    return "\n".join(sections) + "\n"
