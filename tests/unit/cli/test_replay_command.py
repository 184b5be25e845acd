"""``riskengine replay``: the bundled sample, malformed lines, rules files, output contracts."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from riskengine.cli.replay_command import ALERTS_FILE, ANALYZED_FILE, register, run_replay, sample_path
from riskengine.contracts.schema_files import validate_record
from riskengine.settings import Settings

from ..core.test_models import RECORD


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["replay", *argv])


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_bundled_sample_raises_every_pattern_of_the_core(tmp_path, capsys):
    assert run_replay(parse("--out", str(tmp_path)), Settings()) == 0
    out = capsys.readouterr().out
    analyzed = read(tmp_path / ANALYZED_FILE)
    alerts = read(tmp_path / ALERTS_FILE)
    assert len(analyzed) == sum(1 for line in sample_path().read_text().splitlines() if line.strip())
    assert {a["patternType"] for a in alerts} == {
        "VOLUME_SPIKE",
        "WASH_TRADING",
        "LARGE_ORDER",
        "FLASH_CRASH",
        "SELF_TRADE",
        "STRUCTURING",
        "SANCTIONS_HIT",
        "KYC_LIMIT_BREACH",
    }
    for record in analyzed:
        validate_record("RiskAnalyzedTrade", record)
    for record in alerts:
        validate_record("RiskAlert", record)
    assert any("LATE_EVENT" in r["complianceFlags"] for r in analyzed)
    assert f"trades: {len(analyzed)} analyzed, 0 malformed" in out
    assert "WASH_TRADING=" in out and "trades/s" in out


def test_malformed_lines_are_reported_with_line_number_and_skipped(tmp_path, capsys):
    good = json.dumps(RECORD)
    source = tmp_path / "in.jsonl"
    source.write_bytes(
        "\n".join(
            [
                good,
                "{not json",
                "[1, 2]",
                json.dumps({**RECORD, "tradeId": "t-2", "quantity": -1}),
                "",
                json.dumps({k: v for k, v in RECORD.items() if k != "side"} | {"tradeId": "t-3"}),
            ]
        ).encode()
        + b"\n\xff\xfe\n"
        + json.dumps({**RECORD, "tradeId": "t-4", "timestamp": RECORD["timestamp"] + 1}).encode()
        + b"\n"
    )
    assert run_replay(parse(str(source), "--out", str(tmp_path / "o")), Settings()) == 0
    captured = capsys.readouterr()
    errors = captured.err.splitlines()
    assert errors[0].startswith("line 2: not valid JSON")
    assert errors[1].startswith("line 3: expected a JSON object")
    assert errors[2].startswith("line 4: invalid trade: quantity:")
    assert errors[3].startswith("line 6: invalid trade: side: missing")
    assert errors[4].startswith("line 7: not UTF-8")
    assert len(errors) == 5
    assert [r["originalTrade"]["tradeId"] for r in read(tmp_path / "o" / ANALYZED_FILE)] == [
        RECORD["tradeId"],
        "t-4",
    ]
    assert "2 analyzed, 5 malformed" in captured.out


def test_rules_file_is_applied_and_a_bad_one_is_named(tmp_path, capsys):
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"version": 9, "parameters": {"threshold.btc": "20000"}}))
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(RECORD) + "\n")
    assert run_replay(parse(str(source), "--out", str(tmp_path), "--rules", str(rules)), Settings()) == 0
    (alert,) = [a for a in read(tmp_path / ALERTS_FILE) if a["patternType"] == "LARGE_ORDER"]
    assert alert["ruleVersion"] == 9
    rules.write_text(json.dumps({"version": 9, "parameters": {"threshold.btc": "-1"}}))
    assert run_replay(parse(str(source), "--out", str(tmp_path), "--rules", str(rules)), Settings()) == 2
    assert "threshold.btc" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--rules", "--reference"])
def test_unreadable_files_stop_the_run_before_it_starts(tmp_path, capsys, option):
    assert run_replay(parse("--out", str(tmp_path), option, str(tmp_path / "missing.json")), Settings()) == 2
    assert "missing.json" in capsys.readouterr().err


def test_missing_input_file(tmp_path, capsys):
    assert run_replay(parse(str(tmp_path / "none.jsonl"), "--out", str(tmp_path)), Settings()) == 2
    assert "none.jsonl" in capsys.readouterr().err


def test_extreme_values_are_per_line_errors_and_the_lines_after_them_still_run(tmp_path, capsys):
    ts = RECORD["timestamp"]
    source = tmp_path / "in.jsonl"
    lines = [
        json.dumps(RECORD),
        # A 400-digit quantity, 1e300 (with a matching notional), a year-5138 and a pre-2009 time.
        json.dumps({**RECORD, "tradeId": "t-2"}).replace(
            f'"quantity": {RECORD["quantity"]}', '"quantity": ' + "9" * 400
        ),
        json.dumps({**RECORD, "tradeId": "t-3", "quantity": 1e298, "notional": 1e298 * RECORD["price"]}),
        json.dumps({**RECORD, "tradeId": "t-4", "timestamp": 99_999_999_999_999}),
        json.dumps({**RECORD, "tradeId": "t-5", "timestamp": 1_000}),
        json.dumps({**RECORD, "tradeId": "t-6", "timestamp": ts + 1}),
    ]
    source.write_text("\n".join(lines) + "\n")
    assert run_replay(parse(str(source), "--out", str(tmp_path / "o")), Settings()) == 0
    errors = capsys.readouterr().err.splitlines()
    assert errors[0].startswith("line 2: invalid trade: quantity: must be a finite number")
    assert len(errors[0]) < 200  # the 400 digits are not echoed back
    assert errors[1].startswith("line 3: invalid trade: quantity: must be at most 1e+15")
    assert errors[2].startswith("line 4: trade rejected: event time 99999999999999 is")
    assert errors[3].startswith("line 5: invalid trade: timestamp: must be between")
    assert len(errors) == 4
    analyzed = read(tmp_path / "o" / ANALYZED_FILE)
    assert [r["originalTrade"]["tradeId"] for r in analyzed] == [RECORD["tradeId"], "t-6"]
    # The far-future line moved nothing: the next trade is not late.
    assert "LATE_EVENT" not in analyzed[1]["complianceFlags"]
