"""Logging: JSON lines with the worker id and the event's context; httpx quiet at INFO."""

from __future__ import annotations

import io
import json
import logging
import logging.config

import pytest

from riskengine.errors import SettingsError
from riskengine.logs import JsonFormatter, configure, faust_logging_config
from riskengine.settings import Settings


def test_json_lines_carry_the_worker_and_the_context_fields():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(worker="riskengine-worker-1", app="riskengine"))
    log = logging.getLogger("riskengine.test.json")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning(
            "dead letter %s",
            "x",
            extra={"topic": "crypto-trades", "partition": 3, "tradeId": "t-1", "reason": "r"},
        )
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "dead letter x" and first["level"] == "warning"
    assert (first["worker"], first["app"], first["logger"]) == ("riskengine-worker-1", "riskengine", log.name)
    assert (first["topic"], first["partition"], first["tradeId"], first["reason"]) == (
        "crypto-trades",
        3,
        "t-1",
        "r",
    )
    assert first["time"].endswith("Z") and "offset" not in first
    assert "ValueError: boom" in second["exception"]


def test_the_cli_quiets_httpx_and_writes_json_when_asked(capsys):
    configure(Settings.from_env({"RISKENGINE_LOG_FORMAT": "json"}))
    try:
        logging.getLogger("httpx").info('HTTP Request: GET http://registry "HTTP/1.1 200 OK"')
        logging.getLogger("riskengine.test").info("hello")
        lines = capsys.readouterr().err.splitlines()
        assert [json.loads(line)["message"] for line in lines] == ["hello"]
    finally:
        configure(Settings.from_env({}))


def test_the_worker_logging_config_is_valid_for_dict_config():
    text = faust_logging_config(Settings.from_env({}))
    assert text is not None and text["loggers"]["httpx"] == {"level": "WARNING"}
    config = faust_logging_config(Settings.from_env({"RISKENGINE_LOG_FORMAT": "json"}))
    assert config is not None and config.pop("merge") is True
    # What mode merges it into: its default handler renamed nothing, so ours replaces it.
    stream = io.StringIO()
    config["handlers"]["default"]["stream"] = stream
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            **config,
            "root": {"level": "INFO", "handlers": ["default"]},
        }
    )
    try:
        logging.getLogger("riskengine.test.faust").info("ready")
        assert json.loads(stream.getvalue())["message"] == "ready"
    finally:
        configure(Settings.from_env({}))


def test_an_unknown_log_format_is_refused():
    with pytest.raises(SettingsError, match="RISKENGINE_LOG_FORMAT"):
        Settings.from_env({"RISKENGINE_LOG_FORMAT": "xml"})
