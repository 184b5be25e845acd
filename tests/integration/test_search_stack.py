"""The Elasticsearch stack service for real: a private node started, used and stopped by the runner,
and the index templates on the shared stack's single node.

Private (its own folder and ports, the shared download cache) so it neither needs nor disturbs a
search service of the shared stack. The folder is under the stack dir, not pytest's temporary
folder: that one is private to root, and the server runs as an unprivileged user.
"""

import asyncio
import shutil
import socket
import time
from dataclasses import replace
from pathlib import Path

import pytest
from elasticsearch import AsyncElasticsearch

from riskengine.search.index_templates import TEMPLATES, install_index_templates, update_replicas
from riskengine.search.reporting import elasticsearch_client
from riskengine_devtools.stack.elasticsearch import Elasticsearch
from riskengine_devtools.stack.procs import is_alive, read_pid_file
from riskengine_devtools.stack.runner import down, up
from riskengine_devtools.stack.service import StackPaths

pytestmark = pytest.mark.integration


def _free_port_pair() -> int:
    # The HTTP port and the transport port 100 above it must both be free.
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port + 100 < 65536:
            with socket.socket() as other:
                try:
                    other.bind(("127.0.0.1", port + 100))
                except OSError:
                    continue
            return port


def _group_members(leader: int) -> list[int]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == leader and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


async def test_a_private_node_indexes_upserts_by_id_and_stops_completely(settings, unique):
    stack_dir = settings.stack_dir.absolute() / f"it-elastic-{unique}"
    private = replace(
        settings, stack_dir=stack_dir, elasticsearch_url=f"http://127.0.0.1:{_free_port_pair()}"
    )
    service = Elasticsearch(private, StackPaths.from_settings(private))
    lines: list[str] = []
    try:
        assert await up([service], 180.0, lines.append) == 0, "\n".join(lines)
        record = read_pid_file(service.pid_file)
        assert record is not None
        # `timeout 0`, the CLI JVM and the server JVM share the group.
        assert len(_group_members(record.pid)) >= 2

        async with AsyncElasticsearch(private.elasticsearch_url) as es:
            assert (await es.cluster.health())["status"] in ("green", "yellow")
            for score in (10, 20):
                await es.index(index="it-trades", id="T-1", document={"score": score}, refresh=True)
            await es.index(index="it-trades", id="T-2", document={"score": 5}, refresh=True)
            assert (await es.count(index="it-trades"))["count"] == 2
            assert (await es.get(index="it-trades", id="T-1"))["_source"] == {"score": 20}

            # The project's templates install (twice: idempotent) and type a new alerts index.
            assert await install_index_templates(es, private) == list(TEMPLATES)
            await install_index_templates(es, private)
            alert = {"alertId": "A-1", "severity": "HIGH", "timestamp": 1_767_225_600_000, "evidence": ["x"]}
            await es.index(index="risk-alerts-it", id="A-1", document=alert, refresh=True)
            mapping = (await es.indices.get_mapping(index="risk-alerts-it"))["risk-alerts-it"]["mappings"]
            assert mapping["properties"]["alertId"] == {"type": "keyword"}
            assert mapping["properties"]["timestamp"]["type"] == "date"
            assert "evidence" not in mapping["properties"]  # dynamic: false
            hits = await es.search(
                index="risk-alerts-it", query={"range": {"timestamp": {"gte": "2026-01-01"}}}
            )
            assert hits["hits"]["total"]["value"] == 1

        assert await down([service], lines.append) == 0, "\n".join(lines)
        assert not is_alive(record.pid)
        assert _group_members(record.pid) == [], "stack down left Elasticsearch processes behind"
    finally:
        await down([service], lines.append)
        shutil.rmtree(stack_dir, ignore_errors=True)


async def _health(es: AsyncElasticsearch, index: str, wanted: str, within_s: float = 30.0) -> str:
    """The index's health once it is ``wanted``, or whatever it is after ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while True:
        status: str = (await es.cluster.health(index=index))["status"]
        if status == wanted or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.2)


async def test_templated_indices_are_green_on_the_single_node_stack(settings, unique):
    alerts, older = f"risk-alerts-{unique}", f"risk-analyzed-trades-{unique}"
    async with elasticsearch_client(settings) as es:
        try:
            # An index made with a replica (Elasticsearch's default before the templates set one):
            # never allocated on the node holding the primary, so a single node stays yellow.
            await es.indices.create(index=older, settings={"number_of_replicas": 1})
            assert await _health(es, older, "yellow") == "yellow"

            await install_index_templates(es, settings)
            alert = {"alertId": "A-1", "severity": "HIGH", "timestamp": 1_767_225_600_000}
            await es.index(index=alerts, id="A-1", document=alert, refresh=True)
            assert await _health(es, alerts, "green") == "green"
            index = (await es.indices.get_settings(index=alerts))[alerts]["settings"]["index"]
            assert (index["number_of_shards"], index["number_of_replicas"]) == (
                str(settings.elasticsearch_index_shards),
                str(settings.elasticsearch_index_replicas),
            )

            # What `connector deploy` does to the indices that already exist.
            assert (await update_replicas(es, settings))[older] == (1, settings.elasticsearch_index_replicas)
            assert await _health(es, older, "green") == "green"
            assert older not in await update_replicas(es, settings)  # idempotent
        finally:
            await es.indices.delete(index=[alerts, older], ignore_unavailable=True)
