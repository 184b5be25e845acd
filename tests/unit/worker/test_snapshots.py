"""Snapshot manifests, key layout, the local folder store and restore (no services; real rocksdict)."""

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import rocksdict

from riskengine.cli import main
from riskengine.core import FORMAT_VERSION
from riskengine.settings import Settings
from riskengine.worker.snapshots import (
    MANIFEST,
    OFFSET_KEY,
    LocalStore,
    Manifest,
    S3Store,
    SnapshotError,
    SnapshotFile,
    checkpoint_files,
    latest,
    new_snapshot_id,
    read_offset,
    restore_partition,
    snapshot_prefix,
    snapshot_store,
    table_path,
)


def a_manifest(**changes: Any) -> Manifest:
    manifest = Manifest(
        snapshot_id="20261129T050549123Z-o41",
        app_id="riskengine",
        table="user-state",
        partition=3,
        changelog_topic="riskengine-user-state-changelog",
        changelog_offset=41,
        created_at_ms=1_795_928_749_123,
        state_format=FORMAT_VERSION,
        table_format=1,
        files=(SnapshotFile("CURRENT", 16), SnapshotFile("000009.sst", 1000)),
    )
    return dataclasses.replace(manifest, **changes)


def a_checkpoint(tmp_path: Path, offset: int, value: bytes = b"state") -> tuple[Path, Manifest]:
    """A real RocksDB checkpoint of a Faust-like partition DB (raw mode, offset key)."""
    db = rocksdict.Rdict(str(tmp_path / "live.db"), options=rocksdict.Options(raw_mode=True))
    db[b"user-1"] = value
    db[OFFSET_KEY] = str(offset).encode()
    directory = tmp_path / f"checkpoint-{offset}"
    rocksdict.Checkpoint(db).create_checkpoint(str(directory))
    db.close()
    manifest = a_manifest(
        snapshot_id=new_snapshot_id(1_795_928_749_000 + offset, offset),
        created_at_ms=1_795_928_749_000 + offset,
        changelog_offset=offset,
        files=checkpoint_files(directory),
    )
    return directory, manifest


def test_manifest_round_trips_through_json():
    manifest = a_manifest()
    document = json.loads(manifest.to_json())
    assert document["changelogOffset"] == 41
    assert document["stateFormatVersion"] == FORMAT_VERSION
    assert document["createdAt"] == "2026-11-29T05:05:49.123Z"
    assert document["files"] == [{"name": "CURRENT", "size": 16}, {"name": "000009.sst", "size": 1000}]
    assert Manifest.from_json(manifest.to_json()) == manifest
    assert manifest.size == 1016


@pytest.mark.parametrize(
    "change",
    [
        {"manifestFormat": 99},
        {"changelogOffset": "many"},
        {"files": [{"name": "../../etc/passwd", "size": 1}]},
        {"files": [{"name": MANIFEST, "size": 1}]},
    ],
)
def test_bad_manifests_are_rejected(change):
    document = a_manifest().to_dict() | change
    with pytest.raises(SnapshotError):
        Manifest.from_json(json.dumps(document).encode())


def test_key_layout_and_datadir_layout():
    assert snapshot_prefix("app", "user-state", 2, "S1") == "app/user-state/2/S1/"
    assert a_manifest().prefix == "riskengine/user-state/3/20261129T050549123Z-o41/"
    assert table_path(Path("d"), "user-state", 4) == Path("d/v1/tables/user-state-4.db")


def test_snapshot_ids_sort_by_time_and_latest_picks_the_newest_per_partition():
    assert new_snapshot_id(1_795_928_749_123, 41) == "20261129T050549123Z-o41"
    assert new_snapshot_id(1_000, 5) < new_snapshot_id(2_000, 1)
    old = a_manifest(created_at_ms=1_000, changelog_offset=5)
    new = a_manifest(created_at_ms=2_000, changelog_offset=9)
    other = a_manifest(partition=0, created_at_ms=500)
    assert latest([new, other, old]) == {("user-state", 3): new, ("user-state", 0): other}


def test_an_empty_bucket_means_the_local_folder(tmp_path):
    local = snapshot_store(Settings(s3_bucket="", worker_snapshot_dir=tmp_path))
    assert isinstance(local, LocalStore) and local.root == tmp_path
    assert isinstance(snapshot_store(Settings()), S3Store)


async def test_local_store_round_trip_and_restore(tmp_path):
    directory, manifest = a_checkpoint(tmp_path, 41)
    assert read_offset(directory) == 41
    store = LocalStore(tmp_path / "snapshots")
    await store.upload(manifest, directory)
    assert await store.manifests("riskengine") == [manifest]
    assert await store.manifests("riskengine", "user-state") == [manifest]
    assert await store.manifests("riskengine", "other-table") == []
    assert await store.manifests("other-app") == []

    datadir = tmp_path / "data"
    path = await restore_partition(store, manifest, datadir, force=False)
    assert path == table_path(datadir, "user-state", 3)
    assert read_offset(path) == 41
    db = rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True))
    assert db[b"user-1"] == b"state"
    db.close()

    with pytest.raises(SnapshotError, match="--force"):
        await restore_partition(store, manifest, datadir, force=False)
    newer_dir, newer = a_checkpoint(tmp_path, 77, b"newer state")
    await store.upload(newer, newer_dir)
    assert latest(await store.manifests("riskengine"))[("user-state", 3)] == newer
    await restore_partition(store, newer, datadir, force=True)
    assert read_offset(path) == 77
    assert not path.with_name(path.name + ".restoring").exists()


async def test_restore_refuses_newer_state_formats_and_damaged_files(tmp_path):
    directory, manifest = a_checkpoint(tmp_path, 5)
    store = LocalStore(tmp_path / "snapshots")
    await store.upload(manifest, directory)
    with pytest.raises(SnapshotError, match="newer"):
        await restore_partition(
            store, dataclasses.replace(manifest, state_format=FORMAT_VERSION + 1), tmp_path / "d", False
        )
    with pytest.raises(SnapshotError, match="table format 3, newer"):
        await restore_partition(store, dataclasses.replace(manifest, table_format=3), tmp_path / "d", False)
    lying = dataclasses.replace(manifest, changelog_offset=6)
    with pytest.raises(SnapshotError, match="offset 5"):
        await restore_partition(store, lying, tmp_path / "d", False)
    first = manifest.files[0]
    (store.root / manifest.prefix / first.name).write_bytes(b"x" * (first.size + 1))
    with pytest.raises(SnapshotError, match="bytes"):
        await restore_partition(store, manifest, tmp_path / "d", False)
    assert not table_path(tmp_path / "d", "user-state", 3).exists()


def test_cli_lists_and_restores_from_the_local_folder(tmp_path, monkeypatch, capsys):
    directory, manifest = a_checkpoint(tmp_path, 12)
    # Synchronous test: the CLI runs its own event loop.
    LocalStore(tmp_path / "snapshots")._upload(manifest, directory)
    monkeypatch.setenv("RISKENGINE_S3_BUCKET", "")
    monkeypatch.setenv("RISKENGINE_WORKER_SNAPSHOT_DIR", str(tmp_path / "snapshots"))

    assert main(["snapshot", "list"]) == 0
    out = capsys.readouterr().out
    assert manifest.snapshot_id in out and "user-state" in out and " 12 " in out

    datadir = tmp_path / "data"
    assert main(["snapshot", "restore", "--datadir", str(datadir), "--partitions", "0"]) == 1
    assert "no snapshot of partition(s) 0" in capsys.readouterr().out
    assert main(["snapshot", "restore", "--datadir", str(datadir)]) == 0
    assert read_offset(table_path(datadir, "user-state", 3)) == 12
    assert main(["snapshot", "restore", "--datadir", str(datadir), "--partitions", "3"]) == 1
    assert "--force" in capsys.readouterr().out
    assert main(["snapshot", "restore", "--datadir", str(datadir), "--force"]) == 0
