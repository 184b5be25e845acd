"""Kafka's own command-line tools, from the stack's wrappers, against the real broker."""

from __future__ import annotations

import asyncio
import subprocess

from riskengine.settings import Settings
from riskengine_devtools.stack.kafka import Kafka
from riskengine_devtools.stack.service import StackPaths

from .kafka_io import produce


def tool(settings: Settings, name: str) -> str:
    path = Kafka(settings, StackPaths.from_settings(settings)).tools_dir / name
    assert path.is_file(), f"{path} is missing: `riskengine stack up` writes it (restart kafka if it says so)"
    return str(path)


def run(*argv: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


async def test_console_consumer_topics_groups_and_offsets(settings, unique):
    topic = f"tools-{unique}"
    await produce(settings, topic, [(f"k{n}".encode(), f"record {n}".encode()) for n in range(3)])
    server = ("--bootstrap-server", settings.kafka_bootstrap_servers)
    listed = await asyncio.to_thread(run, tool(settings, "kafka-topics.sh"), *server, "--list")
    assert topic in listed.split()
    consumed = await asyncio.to_thread(
        run,
        tool(settings, "kafka-console-consumer.sh"),
        *server,
        *("--topic", topic, "--from-beginning", "--max-messages", "3", "--group", f"tools-{unique}"),
        *("--property", "print.key=true"),
    )
    assert sorted(consumed.splitlines()) == [f"k{n}\trecord {n}" for n in range(3)]
    groups = await asyncio.to_thread(
        run, tool(settings, "kafka-consumer-groups.sh"), *server, "--describe", "--group", f"tools-{unique}"
    )
    assert topic in groups
    offsets = await asyncio.to_thread(run, tool(settings, "kafka-get-offsets.sh"), *server, "--topic", topic)
    assert sum(int(line.rsplit(":", 1)[1]) for line in offsets.split()) == 3
