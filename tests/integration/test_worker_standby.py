"""A standby replica that becomes active holds what the changelog holds (real Kafka, worker processes).

The chaos ``sequence`` scenario ended, now and then, with pair states that had lost their earlier
legs: the worker that took the pair partitions over had been their standby, and its RocksDB lacked
keys the changelog holds. Here a third worker, already a member, gets standbys that read the
changelogs from the start while the others write, then takes every partition over; its databases
are compared key by key with every table's changelog.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import rocksdict

from riskengine.core import Trade
from riskengine.settings import Settings
from riskengine.worker.tables.user_state import MARKET_TABLE_NAME, PAIR_TABLE_NAME, TABLE_NAME
from riskengine_devtools.chaos.kafka_io import read_all

from .test_worker import collect
from .test_worker_crash import generated_flow, in_event_time, send_in_event_time
from .worker_harness import WorkerProcess, isolated, prepare, running

TABLES = (TABLE_NAME, MARKET_TABLE_NAME, PAIR_TABLE_NAME)


async def changelog_values(settings: Settings, table: str) -> dict[int, dict[bytes, bytes | None]]:
    """Partition -> key -> the last value the table's changelog holds for it."""
    latest: dict[int, dict[bytes, bytes | None]] = {}
    for record in await read_all(settings, f"{settings.worker_app_id}-{table}-changelog"):
        latest.setdefault(record.partition, {})[record.key] = record.value
    return latest


def local_values(datadir: Path, table: str, partition: int, keys: list[bytes]) -> dict[bytes, bytes | None]:
    """The values of ``keys`` in a stopped worker's RocksDB partition of ``table``."""
    db = rocksdict.Rdict(
        str(datadir / "v1" / "tables" / f"{table}-{partition}.db"),
        options=rocksdict.Options(raw_mode=True),
        access_type=rocksdict.AccessType.read_only(),
    )
    try:
        return {key: db.get(key) for key in keys}
    finally:
        db.close()


async def test_a_standby_that_takes_over_holds_every_key_of_the_changelog(settings, unique, tmp_path):
    """w1 and w2 write the changelogs; w3 joins; w1 leaves, so w3 (a member already) gets standbys
    that read the changelogs from the start; the second half of the load is written; w2 leaves and
    w3 takes every partition over. w3's databases hold every key's last value."""
    own = isolated(settings, unique)
    catalog = await prepare(own)
    workers = [
        WorkerProcess(own, tmp_path / f"data-{n}", name=f"w{n}", worker_session_timeout="6")
        for n in (1, 2, 3)
    ]
    trades, orders = generated_flow(1500)
    flow = in_event_time(trades, orders)
    half = len(flow) // 2
    analyzed = f"risk-analyzed-trades{own.worker_topic_suffix}"

    async def sent_and_analyzed(start: int, end: int) -> None:
        await send_in_event_time(own, catalog, flow[start:end])
        done = sum(1 for item in flow[:end] if isinstance(item, Trade))
        await collect(own, analyzed, lambda records: len(records) >= done, wait_s=90.0)

    async with running(workers[:2]):
        await sent_and_analyzed(0, half)
        async with running(workers[2:]):
            await asyncio.sleep(4)
            workers[0].stop()
            await asyncio.sleep(4)
            await sent_and_analyzed(half, len(flow))
            workers[1].stop()
            await asyncio.sleep(8)
    lost: dict[str, int] = {}
    held = 0
    for table in TABLES:
        for partition, values in (await changelog_values(own, table)).items():
            keys = [key for key in values if not key.startswith(b"__faust")]
            found = local_values(tmp_path / "data-3", table, partition, keys)
            held += len(keys)
            lost[f"{table}/{partition}"] = sum(1 for key in keys if found[key] != values[key])
    assert held > 300, "the run writes states of every table"
    assert sum(lost.values()) == 0, lost
