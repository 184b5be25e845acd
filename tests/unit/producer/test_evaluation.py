"""Matching alerts to labels; precision / recall / F1, benign alert rates, top-100 precision, AUC."""

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from riskengine.producer.evaluation import (
    FAST_PATH,
    PatternScore,
    TradePopulation,
    TradeRecord,
    _fast_record,
    default_profiles_path,
    default_trades_path,
    evaluate,
    evaluate_run,
    format_report,
    format_table,
    histogram,
    read_alerts,
    read_analyzed_trades,
    read_profiles,
    roc_auc,
    roc_curve,
    top_alerts,
)
from riskengine.producer.events import Label, LabelRole


def label(
    sid: str,
    pattern: str,
    trades: tuple[str, ...],
    users: tuple[str, ...] = ("u1",),
    complete: bool = True,
    start: int = 1_000,
    end: int = 2_000,
    symbol: str = "BTC/USDT",
    orders: tuple[str, ...] = (),
) -> Label:
    return Label(
        sid, "s", pattern, LabelRole.PRIMARY, users, symbol, start, end, trades, (), orders, complete, True
    )


def alert(
    pattern: str, evidence: list[str], user: str | None = "u1", ts: int = 1_500, symbol: str = "BTC/USDT"
) -> dict[str, Any]:
    return {
        "patternType": pattern,
        "evidence": list(evidence),
        "userId": user,
        "timestamp": ts,
        "symbol": symbol,
    }


def by_pattern(scores: list[PatternScore]) -> dict[str, PatternScore]:
    return {s.pattern: s for s in scores}


def test_evidence_overlap_is_a_true_positive_and_merged_alerts_still_detect():
    labels = [
        label("S1", "WASH_TRADING", ("t1", "t2", "t3")),
        label("S2", "WASH_TRADING", ("t4", "t5", "t6")),
    ]
    alerts = [alert("WASH_TRADING", ["t1", "t2", "t3"]), alert("WASH_TRADING", ["t2", "t3", "t9"])]
    score = by_pattern(evaluate(labels, alerts))["WASH_TRADING"]
    assert (score.labels, score.detected, score.alerts, score.true_positives, score.false_positives) == (
        2,
        1,
        2,
        2,
        0,
    )
    assert score.recall == 0.5 and score.precision == 1.0
    assert score.f1 == pytest.approx(2 * 0.5 / 1.5)


def test_a_pattern_mismatch_or_unlabelled_evidence_is_a_false_positive():
    labels = [label("S1", "WASH_TRADING", ("t1", "t2", "t3"))]
    alerts = [alert("VOLUME_SPIKE", ["t1", "t2", "t3"], user="u9"), alert("WASH_TRADING", ["t7"], user="u9")]
    scores = by_pattern(evaluate(labels, alerts))
    assert scores["VOLUME_SPIKE"].false_positives == 1 and scores["VOLUME_SPIKE"].precision == 0.0
    assert scores["VOLUME_SPIKE"].recall is None and scores["VOLUME_SPIKE"].f1 is None
    assert scores["WASH_TRADING"].false_positives == 1 and scores["WASH_TRADING"].recall == 0.0


def test_order_event_ids_count_as_evidence():
    labels = [label("S1", "SPOOFING", ("t1",), orders=("e1", "e2"))]
    assert by_pattern(evaluate(labels, [alert("SPOOFING", ["e2"])]))["SPOOFING"].true_positives == 1


def test_without_shared_evidence_user_and_time_span_decide():
    labels = [label("S1", "PUMP_AND_DUMP", ("t1",), users=("u1", "u2"))]
    hit = alert("PUMP_AND_DUMP", ["x"], user="u2", ts=2_000 + 60_000)
    late = alert("PUMP_AND_DUMP", ["x"], user="u2", ts=2_000 + 60_001)
    market = alert("PUMP_AND_DUMP", ["x"], user=None, ts=1_500, symbol="BTC/USDT")
    scores = by_pattern(evaluate(labels, [hit, late, market]))["PUMP_AND_DUMP"]
    assert (scores.true_positives, scores.false_positives, scores.detected) == (2, 1, 1)


def test_incomplete_labels_are_not_ground_truth_and_their_alerts_are_ignored():
    labels = [label("S1", "STRUCTURING", ("t1", "t2"), complete=False)]
    scores = by_pattern(evaluate(labels, [alert("STRUCTURING", ["t1", "t2"])]))
    assert scores["STRUCTURING"].labels == 0 and scores["STRUCTURING"].ignored == 1
    assert scores["STRUCTURING"].precision is None


def test_the_all_row_sums_and_the_table_lists_every_pattern_in_contract_order():
    labels = [label("S1", "WASH_TRADING", ("t1",)), label("S2", "VOLUME_SPIKE", ("t2",))]
    scores = evaluate(labels, [alert("WASH_TRADING", ["t1"]), alert("FLASH_CRASH", ["t3"])])
    assert [s.pattern for s in scores] == ["VOLUME_SPIKE", "WASH_TRADING", "FLASH_CRASH", "all"]
    total = scores[-1]
    assert (total.labels, total.detected, total.true_positives, total.false_positives) == (2, 1, 1, 1)
    table = format_table(scores).splitlines()
    assert table[0].split() == [
        "pattern",
        "labels",
        "detected",
        "recall",
        "alerts",
        "TP",
        "FP",
        "ignored",
        "precision",
        "F1",
    ]
    assert table[1].split()[:4] == ["VOLUME_SPIKE", "1", "0", "0.000"]
    assert table[-1].split()[0] == "all"


def test_alerts_are_read_from_a_file_or_a_replay_folder(tmp_path):
    (tmp_path / "alerts.jsonl").write_text('{"patternType": "LARGE_ORDER", "evidence": ["t1"]}\n\n')
    assert read_alerts(tmp_path) == [{"patternType": "LARGE_ORDER", "evidence": ["t1"]}]
    (tmp_path / "bad.jsonl").write_text('{"alertId": "x"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:1"):
        read_alerts(tmp_path / "bad.jsonl")


# --- Tuning figures: benign alert rate, top-100 precision, score AUC, benign HIGH+ -----------------


def test_auc_of_a_perfect_a_reversed_and_a_tied_ranking():
    negatives = sorted([0.1, 0.2, 0.3, 0.4])
    assert roc_auc([0.5, 0.9], negatives) == 1.0
    assert roc_auc([0.0, 0.05], negatives) == 0.0
    assert roc_auc([0.25, 0.25], [0.25, 0.25, 0.25]) == 0.5
    # 0.3 beats 0.1 and 0.2, ties 0.3 (1/2), loses to 0.4: 2.5 / 4.
    assert roc_auc([0.3], negatives) == pytest.approx(2.5 / 4)
    assert roc_auc([], negatives) is None and roc_auc([0.5], []) is None


def test_auc_equals_the_pairwise_mann_whitney_count():
    positives = [0.9, 0.4, 0.4, 0.7, 0.1, 0.55]
    negatives = [0.2, 0.4, 0.4, 0.05, 0.7, 0.3, 0.1, 0.95]
    pairs = [1.0 if p > n else 0.5 if p == n else 0.0 for p in positives for n in negatives]
    assert roc_auc(positives, sorted(negatives)) == pytest.approx(sum(pairs) / len(pairs))
    curve = roc_curve(sorted(positives), sorted(negatives))
    assert curve[0] == (0.0, 0.0) and curve[-1] == (1.0, 1.0)
    # With every distinct score a threshold, the trapezoids under the curve are the same AUC.
    area = sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in itertools.pairwise(curve))
    assert area == pytest.approx(sum(pairs) / len(pairs))


def test_histogram_densities_integrate_to_one():
    densities = histogram(sorted([0.0, 0.01, 0.5, 0.99, 1.0, 1.2, -0.1]), bins=20)
    assert len(densities) == 20 and sum(d * 0.05 for d in densities) == pytest.approx(1.0)
    assert densities[0] == pytest.approx(3 / 7 / 0.05) and densities[19] == pytest.approx(3 / 7 / 0.05)


def ranked(alert_id: str, priority: Any, evidence: str) -> dict[str, Any]:
    record = alert("WASH_TRADING", [evidence], user="u7")
    record["alertId"] = alert_id
    if priority != "missing":
        record["priority"] = priority
    return record


def test_top_100_takes_the_highest_priorities_then_the_alert_ids():
    labels = [label("S1", "WASH_TRADING", ("t1",), users=("u1",))]
    alerts = [ranked(f"hi-{i:03}", 90, "t1") for i in range(60)]  # 60 TP at 90
    # 100 alerts at 20: by alertId, a000..a019 are TP, a020..a099 FP; 40 of them make the top 100.
    alerts += [ranked(f"a{i:03}", 20, "t1" if i < 20 else "x") for i in reversed(range(100))]
    alerts += [ranked(f"0-{i}", None, "t1") for i in range(5)]  # no priority: last, whatever the id
    alerts += [ranked(f"00-{i}", "missing", "t1") for i in range(5)]
    score = by_pattern(evaluate(labels, alerts))["WASH_TRADING"]
    assert (score.top_alerts, score.top_true_positives, score.top_false_positives) == (100, 80, 20)
    assert score.top_precision == 0.8
    assert score.precision == pytest.approx(90 / 170)
    top = top_alerts(alerts)
    assert [a["alertId"] for a in top[58:62]] == ["hi-058", "hi-059", "a000", "a001"]
    assert top[-1]["alertId"] == "a039"


def test_top_100_without_priorities_orders_by_alert_id_and_skips_ignored_alerts():
    labels = [label("S1", "LARGE_ORDER", ("t1",)), label("S2", "LARGE_ORDER", ("t2",), complete=False)]
    alerts = [
        {**alert("LARGE_ORDER", ["t2"]), "alertId": "b"},  # ignored: only an incomplete label
        {**alert("LARGE_ORDER", ["x"], user="u9"), "alertId": "c", "priority": None},
        {**alert("LARGE_ORDER", ["t1"]), "alertId": "a"},
    ]
    scores = by_pattern(evaluate(labels, alerts))
    assert [a["alertId"] for a in top_alerts(alerts)] == ["a", "b", "c"]
    assert scores["LARGE_ORDER"].top_alerts == 3 and scores["LARGE_ORDER"].top_precision == 0.5
    assert scores["all"].top_alerts == 3 and scores["all"].top_precision == 0.5


def trade(trade_id: str, user: str, score: float, level: str = "LOW") -> TradeRecord:
    return TradeRecord(trade_id, user, score, level)


def tuning_run() -> tuple[list[Label], list[dict[str, Any]], list[TradeRecord]]:
    labels = [
        label("S1", "WASH_TRADING", ("s1", "s2"), users=("u1",)),
        label("S2", "WASH_TRADING", ("s3",), users=("u2",), start=5_000, end=6_000),
        label("S3", "SPOOFING", (), users=("u1",), orders=("e1",)),  # no trades: AUC n/a
        label("S4", "STRUCTURING", ("s4",), complete=False),  # neither benign nor scenario
    ]
    trades = [
        trade("s1", "u1", 0.95, "CRITICAL"),
        trade("s2", "u1", 0.10),
        trade("s3", "u2", 0.40),
        trade("s4", "u1", 0.99, "CRITICAL"),
        # benign: u1 (MARKET_MAKER) 4, u2 (no designation) 2, u3 (no profile) 2
        trade("b1", "u1", 0.10),
        trade("b2", "u1", 0.20),
        trade("b3", "u1", 0.70, "HIGH"),
        trade("b4", "u1", 0.90, "CRITICAL"),
        trade("b5", "u2", 0.30),
        trade("b6", "u2", 0.40, "MEDIUM"),
        trade("b7", "u3", 0.05),
        trade("b8", "u3", 0.50),
    ]
    alerts = [
        alert("WASH_TRADING", ["s1"]),  # TP
        alert("WASH_TRADING", ["b3"], user="u1", ts=500_000),  # FP, MARKET_MAKER
        alert("WASH_TRADING", ["b7"], user="u3", ts=500_000),  # FP, no profile: none
        alert("PUMP_AND_DUMP", ["b1"], user=None, ts=500_000),  # FP, market-level: overall only
    ]
    return labels, alerts, trades


def test_benign_alert_rates_and_their_account_type_split():
    labels, alerts, trades = tuning_run()
    population = TradePopulation.collect(iter(trades), labels)
    assert (population.analyzed, population.benign) == (12, 8)
    result = evaluate_run(
        labels, alerts, trades=population, account_types={"u1": "MARKET_MAKER", "u2": "none"}
    )
    scores = by_pattern(result.scores)
    wash, pump, total = scores["WASH_TRADING"], scores["PUMP_AND_DUMP"], scores["all"]
    assert wash.benign_alert_rate == 2 * 10_000 / 8 and pump.benign_alert_rate == 10_000 / 8
    assert total.benign_alert_rate == 3 * 10_000 / 8
    assert wash.benign_alert_rate_by_account == {"none": 10_000 / 4, "MARKET_MAKER": 10_000 / 4}
    assert pump.benign_alert_rate_by_account == {"none": 0.0, "MARKET_MAKER": 0.0}
    assert total.benign_alert_rate_by_account == wash.benign_alert_rate_by_account
    assert scores["SPOOFING"].benign_alert_rate == 0.0
    assert result.false_positive_accounts == [("u1", "MARKET_MAKER", 1), ("u3", "none", 1)]
    figures = result.trades
    assert figures is not None
    assert figures.benign_high_share == 2 / 8
    assert figures.benign_high_share_by_account == {"none": 0.0, "MARKET_MAKER": 2 / 4}
    row = result.rows()[-1]
    assert row["pattern"] == "all" and row["benignAlertRate"] == 3750.0
    assert row["benignHighShare"] == 0.25 and row["scenarioTrades"] == 3


def test_instances_are_scored_by_their_most_suspicious_trade():
    labels, alerts, trades = tuning_run()
    result = evaluate_run(labels, alerts, trades=TradePopulation.collect(trades, labels))
    scores = by_pattern(result.scores)
    benign = [0.10, 0.20, 0.70, 0.90, 0.30, 0.40, 0.05, 0.50]
    # S1 by 0.95 (beats all 8); S2 by 0.40 (beats 4, ties 1).
    assert scores["WASH_TRADING"].scored_instances == 2
    assert scores["WASH_TRADING"].score_auc == pytest.approx((8 + 4.5) / 16)
    assert scores["SPOOFING"].score_auc is None and scores["SPOOFING"].scored_instances == 0
    assert scores["STRUCTURING"].score_auc is None  # its only label is incomplete
    assert scores["all"].score_auc == scores["WASH_TRADING"].score_auc
    figures = result.trades
    assert figures is not None and list(figures.benign_scores) == sorted(benign)
    # Per trade: 0.95 beats 8; 0.10 beats 1, ties 1; 0.40 beats 4, ties 1.
    assert figures.trade_auc == pytest.approx((8 + 1.5 + 4.5) / 24)
    # Without profiles the split is n/a, the rest stays.
    assert scores["WASH_TRADING"].benign_alert_rate_by_account is None
    assert figures.benign_high_share_by_account is None


def test_without_trades_the_trade_figures_are_none_and_the_json_keys_stay():
    labels, alerts, _ = tuning_run()
    result = evaluate_run(labels, alerts)
    total = result.rows()[-1]
    assert total["benignAlertRate"] is None and total["scoreAuc"] is None
    assert total["tradeScoreAuc"] is None and total["benignHighShare"] is None
    assert total["top100Precision"] == 0.25
    assert "n/a" in format_report(result)


ANALYZED: dict[str, Any] = {
    "originalTrade": {
        "tradeId": "T-1",
        "userId": "U1",
        "symbol": "BTC/USDT",
        "riskLevel": None,
        "counterpartyUserId": "U2",
    },
    "riskScore": 0.4125,
    "finalRiskLevel": "MEDIUM",
    "triggeredPatterns": [],
    "scoreBreakdown": {"volume": 0.1},
}


def test_the_fast_path_holds_for_the_contract():
    # CryptoTrade has no object and no riskScore field, so replay's layout can be read by position.
    assert FAST_PATH
    line = json.dumps(ANALYZED, separators=(",", ":"))
    assert _fast_record(line) == _fast_record(line + "\n") == TradeRecord("T-1", "U1", 0.4125, "MEDIUM")
    assert _fast_record(json.dumps(ANALYZED)) is None  # spaces: parsed in full


def test_analyzed_trades_are_read_the_same_with_or_without_the_fast_path(tmp_path):
    escaped = {**ANALYZED, "originalTrade": {**ANALYZED["originalTrade"], "tradeId": 'T-"2', "userId": "Ü"}}
    nested = {**ANALYZED, "scoreBreakdown": {"riskScore": 0.9, "finalRiskLevel": "LOW"}}
    exponent = {**ANALYZED, "riskScore": 1e-7}
    records = [ANALYZED, escaped, nested, exponent, {**ANALYZED, "riskScore": 1}]
    compact = [json.dumps(r, separators=(",", ":")) for r in records]
    spaced = [json.dumps(r) for r in records]
    path = tmp_path / "analyzed.jsonl"
    path.write_text("\n".join([*compact, "", *spaced]) + "\n")
    read = list(read_analyzed_trades(path))
    expected = [
        TradeRecord(
            r["originalTrade"]["tradeId"], r["originalTrade"]["userId"], r["riskScore"], r["finalRiskLevel"]
        )
        for r in records
    ]
    assert read == expected + expected


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"analyzed\.jsonl:2: not JSON"),
        ('{"riskScore": 0.1}', r"analyzed\.jsonl:2: not a RiskAnalyzedTrade"),
        ('{"originalTrade":{"tradeId":"T","userId":"U"},"riskScore":NaN,"finalRiskLevel":"LOW"}', "finite"),
        (
            '{"originalTrade":{"tradeId":"T","userId":"U"},"riskScore":"0.5","finalRiskLevel":"LOW"}',
            "not a Risk",
        ),
    ],
)
def test_a_malformed_analyzed_trade_names_its_line(tmp_path, line, message):
    path = tmp_path / "analyzed.jsonl"
    path.write_text(json.dumps(ANALYZED, separators=(",", ":")) + "\n" + line + "\n")
    with pytest.raises(ValueError, match=message):
        list(read_analyzed_trades(path))


def test_profiles_from_json_lines_or_a_reference_document(tmp_path):
    lines = tmp_path / "run.profiles.jsonl"
    lines.write_text(
        '{"userId": "u1", "accountType": "MARKET_MAKER"}\n{"userId": "u2", "accountType": null}\n'
        '{"userId": "u3"}\n\n{"userId": "u4", "accountType": {"riskengine.AccountType": "RETAIL"}}\n'
    )
    expected = {"u1": "MARKET_MAKER", "u2": "none", "u3": "none", "u4": "RETAIL"}
    assert read_profiles(lines) == expected
    reference = tmp_path / "run.reference.json"
    reference.write_text(
        json.dumps({"profiles": [json.loads(x) for x in lines.read_text().split("\n") if x]})
    )
    assert read_profiles(reference) == expected
    (tmp_path / "bad.jsonl").write_text('{"userId": "u1"}\n{"kycTier": 1}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: not a UserProfile"):
        read_profiles(tmp_path / "bad.jsonl")


def test_default_paths_follow_the_generate_and_replay_naming(tmp_path):
    labels = tmp_path / "run.labels.jsonl"
    assert default_profiles_path(labels) is None
    (tmp_path / "run.profiles.jsonl").write_text("")
    assert default_profiles_path(labels) == tmp_path / "run.profiles.jsonl"
    assert default_profiles_path(tmp_path / "labels.jsonl") is None
    assert default_trades_path(tmp_path) is None
    (tmp_path / "analyzed-trades.jsonl").write_text("")
    assert default_trades_path(tmp_path) == tmp_path / "analyzed-trades.jsonl"
    assert default_trades_path(tmp_path / "alerts.jsonl") is None


# --- The command, end to end --------------------------------------------------------------------


def main(argv: list[str]) -> int:
    from riskengine.cli import main as cli_main  # the whole CLI: imported by the tests that run it

    return cli_main(argv)


@pytest.fixture(scope="module")
def replayed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("evaluate")
    run = folder / "run.jsonl"
    generate = ["generate", "--trades", "3000", "--users", "150", "--seed", "5", "--scenario-every", "60"]
    assert main([*generate, "--out", str(run)]) == 0
    replay = ["replay", str(run), "--orders", str(folder / "run.orders.jsonl")]
    assert (
        main([*replay, "--reference", str(folder / "run.reference.json"), "--out", str(folder / "replay")])
        == 0
    )
    return folder


def test_evaluate_finds_the_replay_files_and_writes_the_report(replayed_run, capsys):
    capsys.readouterr()
    report = replayed_run / "out" / "report.html"
    labels = str(replayed_run / "run.labels.jsonl")
    args = ["evaluate", "--labels", labels, "--alerts", str(replayed_run / "replay")]
    assert main([*args, "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["pattern", "labels", "detected"]
    assert "top-100 precision" in out and "score AUC" in out and "FP/10k by account type" in out
    assert "analyzed trades: 3,000" in out and f"report: {report}" in out
    html = report.read_text()
    assert html.count("<svg") == 4 and "http" not in html
    assert main([*args, "--json"]) == 0
    rows = {row["pattern"]: row for row in json.loads(capsys.readouterr().out)}
    total = rows["all"]
    assert total["analyzedTrades"] == 3000 and total["benignTrades"] + total["labelTrades"] >= 3000 - 100
    assert total["scoreAuc"] is not None and 0.0 <= total["tradeScoreAuc"] <= 1.0
    assert total["benignAlertRateByAccountType"] is not None
    assert total["recall"] is not None and total["top100Alerts"] == min(100, total["alerts"])


def test_evaluate_without_trades_prints_n_a_and_a_bad_trades_file_exits_2(replayed_run, tmp_path, capsys):
    labels = str(replayed_run / "run.labels.jsonl")
    alerts = str(replayed_run / "replay" / "alerts.jsonl")
    assert main(["evaluate", "--labels", labels, "--alerts", alerts]) == 0
    out = capsys.readouterr().out
    assert "no analyzed trades" in out
    bad = tmp_path / "analyzed.jsonl"
    bad.write_text("[1, 2]\n")
    assert main(["evaluate", "--labels", labels, "--alerts", alerts, "--trades", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"riskengine evaluate: {bad}:1: not a RiskAnalyzedTrade record"]
    assert main(["evaluate", "--labels", labels, "--alerts", alerts, "--profiles", str(tmp_path / "no")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_suggested_priority_weights_follow_each_patterns_precision():
    from riskengine.core import Rules
    from riskengine.producer.evaluation import PatternScore, suggested_weight, suggested_weights

    assert suggested_weight(1.0) == 1.0 and suggested_weight(0.01) == 0.4 and suggested_weight(0.1) == 0.6
    scores = [
        PatternScore("VOLUME_SPIKE", 5, 5, 500, 5, 495, 0),
        PatternScore("SANCTIONS_HIT", 5, 5, 5, 5, 0, 0),
        PatternScore("LAYERING", 1, 1, 3, 1, 2, 0),  # too few alerts to say
        PatternScore("all", 11, 11, 508, 11, 497, 0),
    ]
    suggestion = suggested_weights(scores)
    assert suggestion == "VOLUME_SPIKE:0.4"
    # The suggestion is a valid rule value as it stands.
    assert Rules.from_parameters(1, {"priority.pattern.weights": suggestion}).priority_weights
