"""``riskengine generate`` and ``riskengine evaluate``: files, reproducibility, the replay pipeline."""

import json
from pathlib import Path

import pytest

from riskengine.cli import main
from riskengine.core import ReferenceData, parse_profile, parse_trade
from riskengine.producer.files import RunFiles, read_labels, write_run

from .offline_doubles import small_config


def test_side_files_are_named_after_the_output():
    files = RunFiles.for_output(Path("/x/run.jsonl"))
    assert (
        files.orders.name,
        files.labels.name,
        files.profiles.name,
        files.reference.name,
        files.stats.name,
    ) == (
        "run.orders.jsonl",
        "run.labels.jsonl",
        "run.profiles.jsonl",
        "run.reference.json",
        "run.stats.json",
    )


def test_a_run_is_written_byte_identically_twice(tmp_path):
    first = write_run(small_config(), 4_000, tmp_path / "a" / "run.jsonl")
    second = write_run(small_config(), 4_000, tmp_path / "b" / "run.jsonl")
    for a, b in zip(vars(first.files).values(), vars(second.files).values(), strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
    other = write_run(small_config(seed=99), 4_000, tmp_path / "c" / "run.jsonl")
    assert other.files.trades.read_bytes() != first.files.trades.read_bytes()


def test_the_files_hold_valid_records_and_labels(tmp_path):
    run = write_run(small_config(), 4_000, tmp_path / "run.jsonl")
    trades = [parse_trade(json.loads(line)) for line in run.files.trades.read_text().splitlines()]
    assert len(trades) == 4_000
    ids = {t.trade_id for t in trades}
    labels = read_labels(run.files.labels)
    assert labels == run.labels and labels
    assert all(set(label.trade_ids) <= ids for label in labels)
    profiles = [parse_profile(json.loads(line)) for line in run.files.profiles.read_text().splitlines()]
    assert len(profiles) == run.users == 200
    ReferenceData.from_document(json.loads(run.files.reference.read_text()))


def test_generate_and_evaluate_commands(tmp_path, capsys):
    out = tmp_path / "run.jsonl"
    args = [
        "generate",
        "--trades",
        "3000",
        "--users",
        "150",
        "--seed",
        "5",
        "--scenarios",
        "large_order,kyc_limit_breach",
    ]
    assert main([*args, "--scenario-every", "50", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "trades: 3,000" in printed and "large_order" in printed
    assert "benign instances" in printed and "order events per trade record" in printed
    stats = json.loads((tmp_path / "run.stats.json").read_text())
    assert stats["trades"] == 3_000 and "benignInstances" in stats and stats["makerInventory"]
    labels = read_labels(tmp_path / "run.labels.jsonl")
    assert {label.scenario for label in labels} == {"large_order", "kyc_limit_breach"}
    # Alerts exactly on the labels: perfect scores.
    alerts = tmp_path / "alerts.jsonl"
    alerts.write_text(
        "".join(
            json.dumps({"patternType": label.pattern, "evidence": list(label.trade_ids)}) + "\n"
            for label in labels
            if label.complete
        )
    )
    assert (
        main(["evaluate", "--labels", str(tmp_path / "run.labels.jsonl"), "--alerts", str(alerts), "--json"])
        == 0
    )
    scores = {row["pattern"]: row for row in json.loads(capsys.readouterr().out)}
    assert scores["all"]["recall"] == 1.0 and scores["all"]["precision"] == 1.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scenarios", "wash"], "unknown scenario 'wash'"),
        (["--users", "10"], "at least 46 users"),
        (["--symbols", "BTC/EUR"], "unknown symbol 'BTC/EUR'"),
        (["--rate-ms", "0"], "rate_ms"),
    ],
)
def test_generate_rejects_bad_parameters(tmp_path, capsys, args, message):
    code: int | str | None = None
    try:
        code = main(["generate", "--trades", "10", "--out", str(tmp_path / "x.jsonl"), *args])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_evaluate_reports_an_unreadable_file(tmp_path, capsys):
    assert main(["evaluate", "--labels", str(tmp_path / "none.jsonl"), "--alerts", str(tmp_path)]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_replay_of_a_generated_run_finds_every_seed_pattern_label(tmp_path, capsys):
    """The whole offline pipeline: generate, the detection core's replay, evaluate.

    Benign flow is not filtered through the definitions (a market maker alternates sides all day),
    so alerts on it are expected; what must hold is that every labelled instance is detected.
    """
    out = tmp_path / "run.jsonl"
    scenarios = "volume_spike,wash_trading,large_order,flash_crash"
    assert (
        main(
            [
                "generate",
                "--trades",
                "20000",
                "--users",
                "300",
                "--scenarios",
                scenarios,
                "--scenario-every",
                "40",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    reference = tmp_path / "run.reference.json"
    assert main(["replay", str(out), "--reference", str(reference), "--out", str(tmp_path / "replay")]) == 0
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                "--labels",
                str(tmp_path / "run.labels.jsonl"),
                "--alerts",
                str(tmp_path / "replay"),
                "--json",
            ]
        )
        == 0
    )
    scores = {row["pattern"]: row for row in json.loads(capsys.readouterr().out)}
    for pattern in ("VOLUME_SPIKE", "WASH_TRADING", "LARGE_ORDER", "FLASH_CRASH"):
        assert scores[pattern]["labels"] >= 5, pattern
        assert scores[pattern]["recall"] == 1.0, scores[pattern]
