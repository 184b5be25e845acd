"""Kafka's command-line tools in the local stack: the pom brings kafka-tools, `stack up` writes
wrappers named like Kafka's own bin/ scripts (tests/integration/test_kafka_tools.py runs them)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from riskengine.settings import Settings
from riskengine_devtools.stack.kafka import TOOLS, Kafka, kafka_version, packaged_text
from riskengine_devtools.stack.service import StackPaths


def test_the_pom_puts_kafkas_tools_on_the_classpath():
    pom = packaged_text("kafka-pom.xml")
    assert "<artifactId>kafka-tools</artifactId>" in pom
    assert kafka_version(pom)
    assert "SYSTEM_ERR" in packaged_text("kafka-tools-log4j2.properties")


def test_the_seeds_monitoring_tools_are_all_there():
    assert {
        "kafka-console-consumer.sh",
        "kafka-topics.sh",
        "kafka-consumer-groups.sh",
        "kafka-get-offsets.sh",
    } <= set(TOOLS)


async def test_configure_writes_a_wrapper_per_tool_once_the_classpath_has_them(
    settings: Settings, paths: StackPaths, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr("riskengine_devtools.stack.kafka.find_java", lambda minimum: "/usr/bin/java")
    kafka = Kafka(settings, paths)
    libs = kafka.home / "libs"
    libs.mkdir(parents=True)
    # A classpath from before kafka-tools joined the pom: no wrapper, and the way to get them.
    assert "restart" in await kafka.configure()
    assert not kafka.tools_dir.exists()
    (libs / f"kafka-tools-{kafka.version}.jar").write_bytes(b"")
    assert str(kafka.tools_dir) in await kafka.configure()
    for name, main in TOOLS.items():
        script = kafka.tools_dir / name
        assert os.access(script, os.X_OK)
        text = script.read_text()
        assert f'-cp "{libs}/*" {main} "$@"' in text and text.startswith("#!/bin/sh\n")
        assert "/usr/bin/java" in text and "tools-log4j2.properties" in text
    assert Path(kafka.tools_dir) == paths.stack_dir / "bin"
