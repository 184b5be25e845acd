"""Matching alerts to labels, and the precision / recall / F1 arithmetic."""

from typing import Any

import pytest

from riskengine.producer.evaluation import PatternScore, evaluate, format_table, read_alerts
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
