"""`riskengine schemas export` (self-contained contracts, suffixed subjects) and the JSON lines of
`riskengine tail`, without services."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import fastavro
import pytest

from riskengine.cli import main
from riskengine.cli.tail_command import record_line, topic_name
from riskengine.contracts.avro_codec import SchemaCache
from riskengine.contracts.schema_files import expanded_schema
from riskengine.contracts.topics import INPUT_CONTRACTS, RECORD_TOPICS, compatibility, record_subjects
from riskengine.settings import Settings
from riskengine.worker.repartition import execution_value, idle_marker_value
from tests.unit.core.builders import trade


def test_export_writes_every_contract_self_contained_with_its_subject(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("RISKENGINE_WORKER_TOPIC_SUFFIX", "-staging")
    assert main(["schemas", "export", str(tmp_path / "avsc")]) == 0
    folder = tmp_path / "avsc"
    index = json.loads((folder / "subjects.json").read_text())
    assert set(index) == {f"riskengine.{name}.avsc" for name in RECORD_TOPICS}
    for name, topic in RECORD_TOPICS.items():
        file = folder / f"riskengine.{name}.avsc"
        # Parsed alone, with no named types known beforehand: nothing is a reference to elsewhere.
        parsed = fastavro.parse_schema(json.loads(file.read_text()), named_schemas={})
        assert isinstance(parsed, dict) and parsed["name"] == f"riskengine.{name}"
        assert index[file.name] == {"subject": f"{topic}-staging-value", "compatibility": compatibility(name)}
    assert "crypto-trades-staging-value (FULL_TRANSITIVE)" in capsys.readouterr().out


def test_a_plain_avsc_file_does_not_stand_alone():
    # What the issue measured: the repository's own CryptoTrade.avsc refers to riskengine.Side.
    raw = json.loads(
        (Path(__file__).parents[3] / "riskengine/contracts/schemas/riskengine.CryptoTrade.avsc").read_text()
    )
    with pytest.raises(fastavro.schema.UnknownType):
        fastavro.parse_schema(raw, named_schemas={})
    fastavro.parse_schema(expanded_schema("CryptoTrade"), named_schemas={})


def test_inputs_are_full_transitive_and_outputs_backward():
    assert {name for name in RECORD_TOPICS if compatibility(name) == "FULL_TRANSITIVE"} == INPUT_CONTRACTS
    assert {"CryptoTrade", "OrderEvent", "UserProfile"} <= INPUT_CONTRACTS
    assert compatibility("RiskAlert") == compatibility("RiskAnalyzedTrade") == "BACKWARD"


def test_subjects_follow_the_suffixed_topic_names():
    assert record_subjects()["CryptoTrade"] == "crypto-trades-value"
    assert record_subjects("-a1")["RiskAlert"] == "risk-alerts-a1-value"


def test_tail_appends_the_suffix_to_engine_topics_only():
    settings = Settings.from_env({"RISKENGINE_WORKER_TOPIC_SUFFIX": "-x"})
    assert topic_name(settings, "risk-alerts") == "risk-alerts-x"
    assert topic_name(settings, "_connect-offsets") == "_connect-offsets"


def message(
    value: bytes | None, key: bytes | None = b"u-1", headers: list[tuple[str, bytes]] | None = None
) -> SimpleNamespace:
    return SimpleNamespace(
        topic="crypto-trades",
        partition=2,
        offset=41,
        timestamp=1_700_000_000_000,
        key=key,
        value=value,
        headers=headers or [],
    )


def test_tail_lines_decode_avro_and_show_anything_else_readably():
    cache = SchemaCache()
    cache.add(7, expanded_schema("CryptoTrade"), writes="CryptoTrade")
    record = trade(0, "BUY", 1_000, quantity=1_000, user="u-1").to_record()
    line = json.loads(record_line(message(cache.encode("CryptoTrade", record)), cache.decode_as_written))
    assert (line["topic"], line["partition"], line["offset"], line["key"]) == ("crypto-trades", 2, 41, "u-1")
    assert line["value"]["tradeId"] == record["tradeId"] and line["value"]["side"] == "BUY"
    # JSON, text, bytes (a dead letter's original value) and headers.
    assert json.loads(record_line(message(b'{"s": 1}'), cache.decode_as_written))["value"] == {"s": 1}
    assert json.loads(record_line(message(b"plain"), cache.decode_as_written))["value"] == "plain"
    odd = json.loads(
        record_line(message(b"\x00\x00\x00\x00\x63\xff", headers=[("reason", b"r")]), cache.decode_as_written)
    )
    assert odd["value"] is None and odd["valueBase64"] == "AAAAAGP/" and odd["headers"] == {"reason": "r"}
    assert json.loads(record_line(message(None, key=None), cache.decode_as_written))["value"] is None
    # The worker's packed repartition records, as the documents they stand for.
    executed = trade(0, "BUY", 1_000, quantity=1_000, user="u-1")
    packed = execution_value(executed, 3, -5_000, "c-1", "c-1|c-2")
    shown = json.loads(record_line(message(packed), cache.decode_as_written))["value"]
    assert shown == {
        "trade": executed.to_record(),
        "source": 3,
        "promise": -5_000,
        "owner": "c-1",
        "pair": "c-1|c-2",
    }
    idle = json.loads(record_line(message(idle_marker_value(2, 41)), cache.decode_as_written))["value"]
    assert idle == {"source": 2, "idle": True, "end": 41}
