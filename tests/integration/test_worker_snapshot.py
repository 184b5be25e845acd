"""(e) Snapshot, wipe the datadir, restore: the worker resumes with the same state.

A real worker processes trades, snapshots its table partitions to the stack's S3 server
(``POST /admin/snapshot``), processes more trades (the changelog tail), and stops. Its datadir is
wiped and seeded again with ``riskengine snapshot restore``. The restarted worker must

1. serve every user's state exactly as before the stop,
2. start its changelog recovery at the snapshot's offsets (read from its own "offsets at start of
   reading" log table), so it replays only the tail, not the whole changelog, and
3. keep processing correctly: after more trades, every user's state equals the detection core's.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import aioboto3
import aiohttp
import pytest
from aiokafka import TopicPartition

from riskengine.connections import s3_client_options
from riskengine.core import DEFAULT_RULES, EMPTY_REFERENCE, Side, Trade, encode_state, evaluate_many
from riskengine.settings import Settings
from riskengine.worker.repartition import CLOCK_KEY
from riskengine.worker.snapshots import LocalStore, Manifest, latest, read_offset, table_path
from riskengine.worker.tables.user_state import (
    JOURNAL_KEY,
    MARKET_TABLE_NAME,
    PAIR_TABLE_NAME,
    TABLE_NAME,
    Envelope,
    encode_envelope,
)
from riskengine.worker.web_views import state_document

from .kafka_io import committed_to_the_end, end_offsets
from .test_worker import collect
from .worker_harness import WorkerProcess, isolated, prepare, send_trades

TOKEN = "snapshot-admin-token"
USERS = 24
RISKENGINE = Path(sys.executable).parent / "riskengine"


def trades(start: int, count: int) -> list[Trade]:
    """Deterministic trades number ``start`` .. ``start + count - 1``, in event-time order."""
    rng = random.Random(start)
    out = []
    for n in range(start, start + count):
        user = f"snap-u{rng.randrange(USERS)}"
        quantity = rng.choice((1.0, 2.0, 5.0, 40.0))
        price = 100.0 * (1 + rng.random())
        out.append(
            Trade(
                trade_id=f"snap-t{n}",
                user_id=user,
                customer_id=f"c-{user}",
                symbol=rng.choice(("BTC/USDT", "ETH/USDT")),
                side=rng.choice((Side.BUY, Side.SELL)),
                quantity=quantity,
                price=price,
                notional=quantity * price,
                timestamp=1_764_000_000_000 + n * 250,
                exchange="TEST",
                order_type="LIMIT",
            )
        )
    return out


async def produce_and_wait(settings: Settings, catalog: Any, batch: list[Trade], total: int) -> None:
    """Send ``batch`` and wait until ``total`` distinct trades have an analyzed output."""
    suffix = settings.worker_topic_suffix
    await send_trades(settings, catalog, batch)

    def trade_ids(records: list[Any]) -> set[str]:
        return {catalog.decode(r.value, "RiskAnalyzedTrade")["originalTrade"]["tradeId"] for r in records}

    records = await collect(
        settings, f"risk-analyzed-trades{suffix}", lambda rs: len(trade_ids(rs)) >= total, wait_s=45.0
    )
    assert len(trade_ids(records)) == total, f"{len(trade_ids(records))} of {total} trades analyzed"


async def user_documents(session: aiohttp.ClientSession, worker: WorkerProcess) -> dict[str, Any]:
    """Every test user's /users document from ``worker`` (the workers here have an admin token,
    which the table views require too)."""
    documents = {}
    for n in range(USERS):
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with session.get(f"{worker.url}/users/snap-u{n}", headers=headers) as response:
            assert response.status == 200, (n, await response.text())
            documents[f"snap-u{n}"] = await response.json()
    return documents


def active_start_offsets(log: str, topic: str) -> dict[int, int]:
    """Partition -> offset from the worker's "active offsets at start of reading" log table."""
    marker = log.lower().find("active offsets at start of reading")
    assert marker >= 0, f"no recovery offsets table in the log:\n{log[-3000:]}"
    found: dict[int, int] = {}
    for line in log[marker:].splitlines()[1:]:
        row = re.match(r"^\s*[|│┃]\s*(\S+)\s*[|│┃]\s*(\d+)\s*[|│┃]\s*(-?\d+)\s*[|│┃]", line)
        if row:
            found[int(row.group(2))] = int(row.group(3))
        elif found and not re.match(r"^\s*[+|│┃├└┌─═╞╘╒]", line):
            break
    assert found, f"could not read the recovery offsets table:\n{log[marker : marker + 2000]}"
    assert topic in log[marker : marker + 2000]
    return found


async def delete_prefix(settings: Settings, prefix: str) -> None:
    """Remove this test's snapshots from the bucket."""
    async with aioboto3.Session().client("s3", **s3_client_options(settings)) as s3:
        listed = await s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix=prefix)
        for item in listed.get("Contents", []):
            await s3.delete_object(Bucket=settings.s3_bucket, Key=item["Key"])


@pytest.fixture
async def snapshot_setup(settings, unique, tmp_path):
    own = isolated(settings, unique)
    catalog = await prepare(own)
    workers: list[WorkerProcess] = []
    try:
        yield own, catalog, workers, tmp_path / "data"
    finally:
        for worker in workers:
            worker.stop()
        await delete_prefix(own, f"{own.worker_app_id}/")


def run_cli(worker: WorkerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """``riskengine ARGS`` with the worker's environment (app id, S3 settings)."""
    return subprocess.run(
        [str(RISKENGINE), *args], env=worker.env, capture_output=True, text=True, timeout=60, check=False
    )


async def test_snapshot_wipe_restore_resumes_with_the_same_state(snapshot_setup):
    settings, catalog, workers, datadir = snapshot_setup
    changelog = f"{settings.worker_app_id}-{TABLE_NAME}-changelog"
    before, tail_trades, after = trades(0, 480), trades(480, 60), trades(540, 120)
    first = WorkerProcess(settings, datadir, name="w-first", worker_admin_token=TOKEN)
    workers.append(first)
    first.start()
    await first.wait_ready()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        await produce_and_wait(settings, catalog, before, len(before))
        # The outputs are out before every user's state is written (checkpoints): wait until every
        # trade is acked, so committed, so its user's state is in the changelog, for a snapshot at
        # the changelog's end.
        trades_topic = f"crypto-trades{settings.worker_topic_suffix}"
        committed, input_ends = await committed_to_the_end(settings, settings.worker_app_id, trades_topic)
        assert committed == input_ends

        async with session.post(f"{first.url}/admin/snapshot", json={}) as response:
            assert response.status == 401, "the admin endpoint must require the token"
        async with session.post(f"{first.url}/admin/snapshot", json={}, headers=headers) as response:
            assert response.status == 200, await response.text()
            body = await response.json()
        every = [Manifest.from_json(json.dumps(d).encode()) for d in body["snapshots"]]
        # The market and pair tables are snapshotted too; this test follows the per-user one.
        assert {m.table for m in every} <= {TABLE_NAME, MARKET_TABLE_NAME, PAIR_TABLE_NAME}
        manifests = {m.partition: m for m in every if m.table == TABLE_NAME}
        at_snapshot = await end_offsets(settings, changelog)
        written = {tp.partition: offset for tp, offset in at_snapshot.items() if offset > 0}
        # Every partition with state was snapshotted, each at its last changelog record.
        assert {p: m.changelog_offset for p, m in manifests.items()} == {p: e - 1 for p, e in written.items()}
        assert all(m.table == TABLE_NAME and m.changelog_topic == changelog for m in manifests.values())

        # The changelog tail: processed after the snapshot, so only replay can bring it back.
        await produce_and_wait(settings, catalog, tail_trades, len(before) + len(tail_trades))
        # Outputs go out (step 4) before the inputs are acked (step 5) and committed: a stop in
        # between re-delivers the tail to the next worker, which would write it to the changelog twice.
        committed, input_ends = await committed_to_the_end(settings, settings.worker_app_id, trades_topic)
        assert committed == input_ends
        expected = await user_documents(session, first)
        first.stop()
        ends = await end_offsets(settings, changelog)

        shutil.rmtree(datadir)
        listed = run_cli(first, "snapshot", "list")
        assert listed.returncode == 0, listed.stdout + listed.stderr
        assert f"snapshots of {settings.worker_app_id} in s3://" in listed.stdout
        for m in manifests.values():
            assert m.snapshot_id in listed.stdout
        restored = run_cli(first, "snapshot", "restore", "--datadir", str(datadir))
        assert restored.returncode == 0, restored.stdout + restored.stderr
        for m in manifests.values():
            assert read_offset(table_path(datadir, TABLE_NAME, m.partition)) == m.changelog_offset
        again = run_cli(first, "snapshot", "restore", "--datadir", str(datadir))
        assert again.returncode == 1 and "--force" in again.stdout, "must refuse to overwrite"

        second = WorkerProcess(settings, datadir, name="w-second", worker_admin_token=TOKEN)
        workers.append(second)
        second.start()
        await second.wait_ready()

        # (2) Recovery started at the snapshot offsets: it read only the tail of the changelog.
        starts = active_start_offsets(second.log(), changelog)
        assert {p: starts[p] for p in manifests} == {p: m.changelog_offset for p, m in manifests.items()}
        total = sum(ends.values())
        replayed = sum(end - 1 - starts[tp.partition] for tp, end in ends.items())
        # The worker writes one changelog record per user per checkpoint (and its partitions' market
        # clocks and output journals), so the tail has at most one user record per tail trade.
        tail_records = sum(end - at_snapshot.get(tp, 0) for tp, end in ends.items())
        tail = [
            r
            for r in await collect(settings, changelog, lambda rs: False, wait_s=2.0)
            if r.offset >= at_snapshot.get(TopicPartition(changelog, r.partition), 0)
        ]
        assert len(tail) == tail_records
        assert 0 < sum(1 for r in tail if r.key not in (CLOCK_KEY, JOURNAL_KEY)) <= len(tail_trades)
        assert replayed == tail_records, (replayed, total)
        assert replayed < total

        # (1) Same state as before the stop, including the tail.
        assert await user_documents(session, second) == expected

        # (3) Processing continues: the state equals the core over every trade.
        everything = before + tail_trades + after
        await produce_and_wait(settings, catalog, after, len(everything))
        states, _ = evaluate_many(everything, EMPTY_REFERENCE, DEFAULT_RULES)
        got = await user_documents(session, second)
    for user, state in states.items():
        want = json.loads(
            json.dumps(state_document(user, encode_envelope(Envelope(-1, (-1, -1), encode_state(state)))))
        )
        for volatile in ("lastApplied", "pendingOutputs"):
            del want[volatile], got[user][volatile]
        assert got[user] == want, user


async def test_timer_snapshots_go_to_the_local_folder_without_a_bucket(snapshot_setup, tmp_path):
    """The periodic timer, with an empty RISKENGINE_S3_BUCKET: manifests appear in the folder."""
    settings, catalog, workers, datadir = snapshot_setup
    changelog = f"{settings.worker_app_id}-{TABLE_NAME}-changelog"
    folder = tmp_path / "snapshots"
    worker = WorkerProcess(
        settings,
        datadir,
        s3_bucket="",
        worker_snapshot_dir=str(folder),
        worker_snapshot_interval="1",
    )
    workers.append(worker)
    worker.start()
    await worker.wait_ready()
    batch = trades(0, 120)
    await produce_and_wait(settings, catalog, batch, len(batch))
    ends = {tp.partition: end for tp, end in (await end_offsets(settings, changelog)).items() if end > 0}
    store = LocalStore(folder)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    newest: dict[int, int] = {}
    while loop.time() < deadline:
        found = latest(await store.manifests(settings.worker_app_id, TABLE_NAME))
        newest = {partition: m.changelog_offset for (_table, partition), m in found.items()}
        if newest == {p: end - 1 for p, end in ends.items()}:
            break
        await asyncio.sleep(0.5)
    assert newest == {p: end - 1 for p, end in ends.items()}, worker.log()[-3000:]
