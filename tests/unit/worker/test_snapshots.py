"""Snapshot manifests, key layout, the local folder store and restore (no services; real rocksdict)."""

import dataclasses
import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import rocksdict

from riskengine.cli import main
from riskengine.core import FORMAT_VERSION
from riskengine.settings import Settings
from riskengine.worker.snapshots import (
    MANIFEST,
    MANIFEST_FORMAT,
    MAX_MANIFEST_BYTES,
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
    restore_target,
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


# -- hostile manifests: validated, bound to their key, checksummed, never written outside --------


def document(manifest: Manifest, **changes: Any) -> dict[str, Any]:
    return manifest.to_dict() | changes


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"table": "/etc/outside"}, "invalid table '/etc/outside'"),
        ({"table": ".."}, "invalid table"),
        ({"table": "user-state/../../x"}, "invalid table"),
        ({"table": "x" * 201}, "invalid table"),
        ({"appId": "../other"}, "invalid appId"),
        ({"snapshotId": "../../../outside"}, "invalid snapshotId"),
        ({"snapshotId": "20261129T050549123Z-o42"}, "does not match createdAtMs"),
        ({"partition": -1}, "partition -1 is not an integer"),
        ({"partition": True}, "'partition' is a JSON bool"),
        ({"partition": "3"}, "'partition' is a JSON str"),
        ({"changelogOffset": 41.0}, "'changelogOffset' is a JSON float"),
        ({"changelogOffset": 2**64}, "changelogOffset"),
        ({"changelogTopic": "a/b"}, "invalid changelogTopic"),
        ({"createdAtMs": 10**20}, "createdAtMs"),
        ({"files": []}, "1 to 10000 files"),
        ({"files": "CURRENT"}, "'files' is a JSON str"),
        ({"files": [["CURRENT", 16]]}, "not an object"),
        ({"files": [{"name": "CURRENT", "size": 16}]}, "no 'sha256'"),
        ({"files": [{"name": "CURRENT", "size": 16, "sha256": "ab"}]}, "invalid sha256"),
        ({"files": [{"name": "CURRENT", "size": -1, "sha256": "0" * 64}]}, "size of 'CURRENT'"),
        ({"files": [{"name": "/abs", "size": 1, "sha256": "0" * 64}]}, "invalid file name"),
        ({"files": [{"name": "CURRENT", "size": 1, "sha256": "0" * 64}] * 2}, "listed twice"),
        ({"manifestFormat": 2.0}, "'manifestFormat' is a JSON float"),
    ],
)
def test_manifest_fields_are_validated(tmp_path, change, reason):
    _directory, manifest = a_checkpoint(tmp_path, 41)
    assert manifest.verified
    with pytest.raises(SnapshotError, match=re.escape(reason)):
        Manifest.from_json(json.dumps(document(manifest, **change)).encode())


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"\x00garbage{", "not JSON"),
        (b"[1, 2]", "a JSON list, not an object"),
        (b"{}", "no 'manifestFormat'"),
        (b"[" * 100_000, "not JSON"),
        (b" " * (MAX_MANIFEST_BYTES + 1), "bytes (at most"),
    ],
)
def test_garbage_manifests_are_rejected(data, reason):
    with pytest.raises(SnapshotError, match=re.escape(reason)):
        Manifest.from_json(data)


def test_a_manifest_is_safe_however_it_is_made():
    with pytest.raises(SnapshotError, match="invalid table"):
        a_manifest(table="/elsewhere")
    with pytest.raises(SnapshotError, match="invalid snapshotId"):
        dataclasses.replace(a_manifest(), snapshot_id="../x")


def test_a_manifest_is_bound_to_its_key(tmp_path):
    _directory, manifest = a_checkpoint(tmp_path, 41)
    data = manifest.to_json()
    assert Manifest.from_json(data, manifest.key) == manifest
    for elsewhere in (
        "riskengine/user-state/4/" + manifest.snapshot_id + "/" + MANIFEST,
        "other-app/user-state/3/" + manifest.snapshot_id + "/" + MANIFEST,
        "riskengine/other-table/3/" + manifest.snapshot_id + "/" + MANIFEST,
        "riskengine/user-state/3/20261129T050549000Z-o1/" + MANIFEST,
        "riskengine/" + MANIFEST,
    ):
        with pytest.raises(SnapshotError, match="describes"):
            Manifest.from_json(data, elsewhere)


def test_checkpoint_files_record_a_sha256_and_manifests_without_one_are_format_1(tmp_path):
    directory, manifest = a_checkpoint(tmp_path, 41)
    current = next(f for f in manifest.files if f.name == "CURRENT")
    assert current.sha256 == hashlib.sha256((directory / "CURRENT").read_bytes()).hexdigest()
    assert json.loads(manifest.to_json())["manifestFormat"] == MANIFEST_FORMAT == 2
    legacy = dataclasses.replace(manifest, files=tuple(SnapshotFile(f.name, f.size) for f in manifest.files))
    assert not legacy.verified
    assert json.loads(legacy.to_json())["manifestFormat"] == 1
    assert Manifest.from_json(legacy.to_json()) == legacy


class Scene:
    """A local snapshot store with valid snapshots, a datadir, and sentinels outside the datadir."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tmp = tmp_path
        self.root = tmp_path / "snapshots"
        self.store = LocalStore(self.root)
        self.datadir = tmp_path / "data"
        # Where the reported attack deleted and wrote: "{table}-{partition}.db" of an absolute table.
        self.victim = tmp_path / "victim-3.db"
        self.victim.mkdir()
        (self.victim / "keep.txt").write_text("keep")
        monkeypatch.setenv("RISKENGINE_S3_BUCKET", "")
        monkeypatch.setenv("RISKENGINE_WORKER_SNAPSHOT_DIR", str(self.root))

    def upload(self, offset: int, partition: int = 3, value: bytes = b"state") -> Manifest:
        work = self.tmp / f"work-{partition}-{offset}"
        work.mkdir()
        directory, manifest = a_checkpoint(work, offset, value)
        manifest = dataclasses.replace(manifest, partition=partition)
        self.store._upload(manifest, directory)
        return manifest

    def plant(self, key: str, data: bytes | dict[str, Any], files_from: Manifest | None = None) -> None:
        """Write a manifest at ``key`` (with the snapshot files of ``files_from`` next to it)."""
        folder = (self.root / key).parent
        folder.mkdir(parents=True, exist_ok=True)
        if files_from is not None:
            for f in files_from.files:
                shutil.copyfile(self.root / files_from.prefix / f.name, folder / f.name)
        (self.root / key).write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())

    def outside_untouched(self) -> None:
        assert sorted(p.name for p in self.tmp.iterdir() if p.name.startswith("victim")) == ["victim-3.db"]
        assert [p.name for p in self.victim.iterdir()] == ["keep.txt"]
        assert (self.victim / "keep.txt").read_text() == "keep"


@pytest.fixture
def scene(tmp_path, monkeypatch) -> Scene:
    return Scene(tmp_path, monkeypatch)


def test_an_absolute_table_path_neither_deletes_nor_writes_outside_the_datadir(scene, capsys):
    good = scene.upload(12)
    table = str(scene.tmp / "victim")
    # Planted where the old code looked for its files ("{app}/{table}/..." with the absolute table),
    # next to a valid snapshot of partition 3: the old code replaced victim-3.db with the snapshot.
    key = f"riskengine/{table.lstrip('/')}/3/{good.snapshot_id}/{MANIFEST}"
    scene.plant(key, document(good, table=table), files_from=good)
    assert main(["snapshot", "restore", "--datadir", str(scene.datadir), "--force"]) == 0
    out = capsys.readouterr().out
    assert f"skipped invalid manifest {key}: invalid table {table!r}" in out
    assert "1 partition(s) restored" in out
    assert read_offset(table_path(scene.datadir, "user-state", 3)) == 12
    scene.outside_untouched()
    # Alone, it restores nothing.
    shutil.rmtree(scene.root / good.prefix)
    assert main(["snapshot", "restore", "--datadir", str(scene.datadir), "--force"]) == 1
    assert "no snapshots of riskengine" in capsys.readouterr().out
    scene.outside_untouched()


@pytest.mark.parametrize("field", ["snapshotId", "appId"])
def test_dot_dot_ids_are_invalid(scene, capsys, field):
    good = scene.upload(12)
    scene.plant(good.key, document(good, **{field: "../../victim"}))
    assert main(["snapshot", "restore", "--datadir", str(scene.datadir), "--force"]) == 1
    assert f"invalid {field} '../../victim'" in capsys.readouterr().out
    scene.outside_untouched()


def test_a_manifest_under_another_key_is_invalid(scene, capsys):
    good = scene.upload(12)
    # A copy of partition 3's manifest and files planted as partition 4's.
    key = good.key.replace("/3/", "/4/")
    scene.plant(key, good.to_json(), files_from=good)
    assert main(["snapshot", "list"]) == 0
    out = capsys.readouterr().out
    assert f"INVALID {key}: manifest read from {key!r} describes {good.key!r}" in out
    assert main(["snapshot", "restore", "--datadir", str(scene.datadir), "--partitions", "4"]) == 1
    assert "no snapshot of partition(s) 4" in capsys.readouterr().out
    scene.outside_untouched()


def test_a_bad_checksum_stops_the_restore_before_anything_is_replaced(scene, capsys):
    first = scene.upload(12, partition=3, value=b"first")
    other = scene.upload(20, partition=5, value=b"other")
    assert main(["snapshot", "restore", "--datadir", str(scene.datadir)]) == 0
    newer3 = scene.upload(30, partition=3, value=b"newer")
    newer5 = scene.upload(40, partition=5, value=b"newer")
    # Same size, other bytes: only the checksum can tell.
    damaged = next(f for f in newer5.files if f.name == "CURRENT")
    path = scene.root / newer5.prefix / damaged.name
    path.write_bytes(bytes(b ^ 1 for b in path.read_bytes()))
    capsys.readouterr()
    assert main(["snapshot", "restore", "--datadir", str(scene.datadir), "--force"]) == 1
    out = capsys.readouterr().out
    assert "CURRENT: SHA-256" in out and "does not match the manifest's" in out
    assert f"snapshot {newer5.snapshot_id} of user-state/5" in out
    # Neither partition was replaced, though partition 3's newer snapshot was fine.
    assert read_offset(table_path(scene.datadir, "user-state", 3)) == first.changelog_offset
    assert read_offset(table_path(scene.datadir, "user-state", 5)) == other.changelog_offset
    assert not list((scene.datadir / "v1" / "tables").glob("*.restoring"))
    assert newer3.changelog_offset == 30
    scene.outside_untouched()


def test_one_garbage_manifest_does_not_break_listing_or_restoring_the_others(scene, capsys):
    good = scene.upload(12)
    garbage = "riskengine/user-state/7/20261129T050549123Z-o1/" + MANIFEST
    scene.plant(garbage, b"\x00 not json {")
    assert main(["snapshot", "list"]) == 0
    out = capsys.readouterr().out
    assert "snapshots of riskengine in" in out and ": 1, 1 invalid" in out
    assert good.snapshot_id in out and "sha256" in out
    assert f"INVALID {garbage}: manifest is not JSON" in out
    assert main(["snapshot", "restore", "--datadir", str(scene.datadir)]) == 0
    out = capsys.readouterr().out
    assert f"skipped invalid manifest {garbage}" in out
    assert read_offset(table_path(scene.datadir, "user-state", 3)) == 12
    scene.outside_untouched()


def test_a_restore_target_that_is_a_link_out_of_the_datadir_is_refused(scene, capsys):
    scene.upload(12)
    tables = scene.datadir / "v1" / "tables"
    tables.mkdir(parents=True)
    (tables / "user-state-3.db").symlink_to(scene.victim, target_is_directory=True)
    assert main(["snapshot", "restore", "--datadir", str(scene.datadir), "--force"]) == 1
    assert "outside the datadir" in capsys.readouterr().out
    scene.outside_untouched()
    with pytest.raises(SnapshotError, match="outside the datadir"):
        restore_target(scene.datadir, "user-state", 3)
    (tables / "user-state-3.db").unlink()
    (tables / "user-state-3.db").symlink_to(tables / "elsewhere", target_is_directory=True)
    with pytest.raises(SnapshotError, match="symbolic link"):
        restore_target(scene.datadir, "user-state", 3)
    with pytest.raises(SnapshotError, match="invalid table"):
        restore_target(scene.datadir, "../../victim", 3)


def test_manifests_without_checksums_are_restored_only_when_allowed(scene, capsys):
    good = scene.upload(12)
    legacy = dataclasses.replace(good, files=tuple(SnapshotFile(f.name, f.size) for f in good.files))
    scene.plant(good.key, legacy.to_json())
    assert main(["snapshot", "list"]) == 0
    assert " none " in capsys.readouterr().out
    assert main(["snapshot", "restore", "--datadir", str(scene.datadir)]) == 1
    assert "no checksums (manifest format 1): pass --allow-unverified" in capsys.readouterr().out
    assert not table_path(scene.datadir, "user-state", 3).exists()
    assert main(["snapshot", "restore", "--datadir", str(scene.datadir), "--allow-unverified"]) == 0
    assert read_offset(table_path(scene.datadir, "user-state", 3)) == 12


def test_listing_refuses_a_table_argument_that_is_a_path(scene, capsys):
    scene.upload(12)
    assert main(["snapshot", "list", "--table", "../../victim"]) == 1
    assert "invalid table" in capsys.readouterr().out


class FakeS3:
    """An in-process stand-in for the aioboto3 S3 client: listing and reading objects."""

    def __init__(self, objects: dict[str, bytes], listed: dict[str, int]) -> None:
        self.objects = objects
        self.listed = listed

    async def __aenter__(self) -> "FakeS3":
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def get_paginator(self, name: str) -> "FakeS3":
        assert name == "list_objects_v2"
        return self

    async def paginate(self, Bucket: str, Prefix: str) -> Any:
        yield {
            "Contents": [
                {"Key": k, "Size": s} for k, s in sorted(self.listed.items()) if k.startswith(Prefix)
            ]
        }

    async def get_object(self, Bucket: str, Key: str, Range: str | None = None) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        if Key not in self.objects:
            raise ClientError({"Error": {"Code": "NoSuchKey", "Message": "gone"}}, "GetObject")
        data = self.objects[Key]
        if Range is not None:
            first, _, last = Range.removeprefix("bytes=").partition("-")
            data = data[int(first) : int(last) + 1]

        class Body:
            async def __aenter__(self) -> "Body":
                return self

            async def __aexit__(self, *exc: object) -> None:
                return None

            async def read(self) -> bytes:
                # As aiobotocore's body: no size argument.
                return data

        return {"Body": Body()}


async def test_s3_listing_reads_each_manifest_on_its_own(tmp_path, monkeypatch):
    _directory, good = a_checkpoint(tmp_path, 41)
    moved = good.key.replace("/3/", "/4/")
    objects = {
        good.key: good.to_json(),
        "riskengine/user-state/5/x/" + MANIFEST: b"garbage",
        moved: good.to_json(),
    }
    listed = {key: len(data) for key, data in objects.items()}
    listed["riskengine/user-state/6/gone/" + MANIFEST] = 10
    listed["riskengine/user-state/7/huge/" + MANIFEST] = MAX_MANIFEST_BYTES + 1
    store = S3Store(Settings(s3_bucket="bucket"))
    monkeypatch.setattr(store, "_client", lambda: FakeS3(objects, listed))
    scan = await store.scan("riskengine")
    assert scan.manifests == [good]
    reasons = {bad.key.split("/")[2]: bad.reason for bad in scan.invalid}
    assert sorted(reasons) == ["4", "5", "6", "7"]
    assert "describes" in reasons["4"] and "not JSON" in reasons["5"]
    assert "unreadable" in reasons["6"] and "NoSuchKey" in reasons["6"]
    assert "at most" in reasons["7"]
    assert await store.manifests("riskengine") == [good]
    with pytest.raises(SnapshotError, match="invalid table"):
        await store.scan("riskengine", "../other")
