"""Periodic table snapshots: RocksDB checkpoints of a worker's partitions, with a manifest, in S3.

A worker's :class:`Snapshotter` checkpoints every *active* partition of its RocksDB tables
(``rocksdict.Checkpoint``: point-in-time per partition, hard links on the same file system, so it
is fast enough to run on the event loop), reads the changelog offset the checkpoint itself holds
(Faust stores the last applied offset in each partition DB under :data:`OFFSET_KEY`), and uploads
the files off the event loop followed by ``manifest.json``. The manifest is written last, so a
snapshot without one is incomplete and never listed.

The stored offset is written when the broker acknowledges a changelog record, after the value
itself, so a checkpoint may hold values newer than its offset, never older: replaying the
changelog after the offset re-applies those same records, and the restored partition converges to
the changelog's state.

``riskengine snapshot restore`` writes the latest snapshot of each partition into a datadir's table
layout (``{datadir}/v{version}/tables/{table}-{partition}.db``). Faust then reads the offset from
the restored DB and replays only the changelog records after it.

Key layout (the same relative paths in the local folder)::

    {app id}/{table}/{partition}/{snapshot id}/{checkpoint file}
    {app id}/{table}/{partition}/{snapshot id}/manifest.json

An empty ``RISKENGINE_S3_BUCKET`` means "no S3": snapshots then go to
``RISKENGINE_WORKER_SNAPSHOT_DIR`` (:func:`snapshot_store`).

This module imports neither Faust nor rocksdict at import time, so the CLI stays light.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from riskengine.core import FORMAT_VERSION
from riskengine.errors import WorkerError
from riskengine.settings import Settings

if TYPE_CHECKING:
    import faust

log = logging.getLogger(__name__)

#: Version of the manifest document itself.
MANIFEST_FORMAT = 1
MANIFEST = "manifest.json"
#: Where Faust keeps a partition DB's last applied changelog offset (``str(offset).encode()``).
OFFSET_KEY = b"__faust\x00offset__"
#: Faust's app ``version`` (the ``v1`` in the datadir layout); the engine never changes it.
APP_VERSION = 1


class SnapshotError(WorkerError):
    """A snapshot cannot be taken, read or restored; the message says why."""


@dataclass(frozen=True)
class SnapshotFile:
    """One file of a checkpoint, relative to the snapshot folder."""

    name: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """What one snapshot of one table partition holds."""

    snapshot_id: str
    app_id: str
    table: str
    partition: int
    changelog_topic: str
    changelog_offset: int
    created_at_ms: int
    state_format: int
    table_format: int
    files: tuple[SnapshotFile, ...]

    @property
    def size(self) -> int:
        """Bytes of all files of the snapshot."""
        return sum(f.size for f in self.files)

    @property
    def prefix(self) -> str:
        """The key prefix (folder) of this snapshot."""
        return snapshot_prefix(self.app_id, self.table, self.partition, self.snapshot_id)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document stored as ``manifest.json``."""
        return {
            "manifestFormat": MANIFEST_FORMAT,
            "snapshotId": self.snapshot_id,
            "appId": self.app_id,
            "table": self.table,
            "partition": self.partition,
            "changelogTopic": self.changelog_topic,
            "changelogOffset": self.changelog_offset,
            "createdAtMs": self.created_at_ms,
            "createdAt": iso_time(self.created_at_ms),
            "stateFormatVersion": self.state_format,
            "tableFormatVersion": self.table_format,
            "files": [{"name": f.name, "size": f.size} for f in self.files],
        }

    def to_json(self) -> bytes:
        """``manifest.json``'s bytes."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """Parse ``manifest.json``; :class:`SnapshotError` names what is wrong."""
        try:
            doc = json.loads(data)
            if doc["manifestFormat"] != MANIFEST_FORMAT:
                raise SnapshotError(f"unsupported manifest format {doc['manifestFormat']!r}")
            files = tuple(SnapshotFile(str(f["name"]), int(f["size"])) for f in doc["files"])
            manifest = cls(
                snapshot_id=str(doc["snapshotId"]),
                app_id=str(doc["appId"]),
                table=str(doc["table"]),
                partition=int(doc["partition"]),
                changelog_topic=str(doc["changelogTopic"]),
                changelog_offset=int(doc["changelogOffset"]),
                created_at_ms=int(doc["createdAtMs"]),
                state_format=int(doc["stateFormatVersion"]),
                table_format=int(doc["tableFormatVersion"]),
                files=files,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise SnapshotError(f"invalid manifest: {exc!r}") from exc
        for f in files:
            _check_file_name(f.name)
        return manifest


def iso_time(ms: int) -> str:
    """Epoch milliseconds as an ISO-8601 UTC time."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_snapshot_id(created_at_ms: int, offset: int) -> str:
    """A snapshot id that sorts by time (then offset), e.g. ``20261129T045229123Z-o41``."""
    stamp = datetime.fromtimestamp(created_at_ms / 1000, UTC)
    return f"{stamp:%Y%m%dT%H%M%S}{created_at_ms % 1000:03d}Z-o{offset}"


def snapshot_prefix(app_id: str, table: str, partition: int, snapshot_id: str) -> str:
    """``{app id}/{table}/{partition}/{snapshot id}/``: where one snapshot's files live."""
    return f"{app_id}/{table}/{partition}/{snapshot_id}/"


def table_path(datadir: Path, table: str, partition: int) -> Path:
    """Where Faust opens the DB of ``table``/``partition`` for a worker run with ``--datadir``."""
    return datadir / f"v{APP_VERSION}" / "tables" / f"{table}-{partition}.db"


def latest(manifests: Iterable[Manifest]) -> dict[tuple[str, int], Manifest]:
    """The newest snapshot of each (table, partition)."""
    newest: dict[tuple[str, int], Manifest] = {}
    for manifest in manifests:
        key = (manifest.table, manifest.partition)
        current = newest.get(key)
        if current is None or (manifest.created_at_ms, manifest.changelog_offset) > (
            current.created_at_ms,
            current.changelog_offset,
        ):
            newest[key] = manifest
    return newest


def _check_file_name(name: str) -> None:
    # A manifest names files to write under a datadir: never let one escape the snapshot folder.
    if not name or "/" in name or "\\" in name or name in (".", "..") or name == MANIFEST:
        raise SnapshotError(f"invalid file name {name!r} in manifest")


def checkpoint_files(directory: Path) -> tuple[SnapshotFile, ...]:
    """The files of a checkpoint folder (RocksDB checkpoints are flat)."""
    files = []
    for path in sorted(directory.iterdir()):
        if not path.is_file():
            raise SnapshotError(f"unexpected non-file {path.name!r} in checkpoint {directory}")
        files.append(SnapshotFile(path.name, path.stat().st_size))
    return tuple(files)


def read_offset(db_path: Path) -> int | None:
    """The changelog offset stored in a (closed) partition DB or checkpoint, None when absent."""
    import rocksdict

    db = rocksdict.Rdict(
        str(db_path),
        # Faust opens its DBs in raw mode: keys and values are plain bytes.
        options=rocksdict.Options(raw_mode=True),
        access_type=rocksdict.AccessType.read_only(),
    )
    try:
        raw = db.get(OFFSET_KEY)
    finally:
        db.close()
    return None if raw is None else int(raw)


# -- stores ------------------------------------------------------------------------------------


class SnapshotStore(Protocol):
    """Where snapshots live: S3 or a local folder."""

    @property
    def location(self) -> str:
        """Human-readable location (for logs and the CLI)."""
        ...

    async def upload(self, manifest: Manifest, directory: Path) -> None:
        """Store the files of ``directory`` and then ``manifest`` (the completion marker)."""
        ...

    async def manifests(self, app_id: str, table: str | None = None) -> list[Manifest]:
        """Every complete snapshot of ``app_id`` (of ``table`` only, when given)."""
        ...

    async def download(self, manifest: Manifest, directory: Path) -> None:
        """Write the snapshot's files into ``directory`` (created; must not exist)."""
        ...


def _list_prefix(app_id: str, table: str | None) -> str:
    return f"{app_id}/{table}/" if table else f"{app_id}/"


class LocalStore:
    """Snapshots in a folder, with the same relative layout as the S3 keys."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def location(self) -> str:
        """The folder."""
        return str(self.root)

    async def upload(self, manifest: Manifest, directory: Path) -> None:
        """Copy the files, then write the manifest (in a thread: file I/O)."""
        await asyncio.to_thread(self._upload, manifest, directory)

    def _upload(self, manifest: Manifest, directory: Path) -> None:
        target = self.root / manifest.prefix
        target.mkdir(parents=True, exist_ok=True)
        for f in manifest.files:
            shutil.copyfile(directory / f.name, target / f.name)
        (target / MANIFEST).write_bytes(manifest.to_json())

    async def manifests(self, app_id: str, table: str | None = None) -> list[Manifest]:
        """Every ``manifest.json`` under the app's (or table's) folder."""
        return await asyncio.to_thread(self._manifests, app_id, table)

    def _manifests(self, app_id: str, table: str | None) -> list[Manifest]:
        base = self.root / _list_prefix(app_id, table)
        if not base.is_dir():
            return []
        return [Manifest.from_json(path.read_bytes()) for path in sorted(base.rglob(MANIFEST))]

    async def download(self, manifest: Manifest, directory: Path) -> None:
        """Copy the snapshot's files into ``directory``."""
        await asyncio.to_thread(self._download, manifest, directory)

    def _download(self, manifest: Manifest, directory: Path) -> None:
        directory.mkdir(parents=True)
        source = self.root / manifest.prefix
        for f in manifest.files:
            shutil.copyfile(source / f.name, directory / f.name)


class S3Store:
    """Snapshots in an S3 bucket (aioboto3: async requests; file reads and writes in a thread)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.bucket = settings.s3_bucket

    @property
    def location(self) -> str:
        """``s3://bucket`` and the endpoint."""
        return f"s3://{self.bucket} at {self.settings.s3_endpoint_url or 'AWS'}"

    def _client(self) -> Any:
        import aioboto3

        from riskengine.connections import s3_client_options

        return aioboto3.Session().client("s3", **s3_client_options(self.settings))

    async def upload(self, manifest: Manifest, directory: Path) -> None:
        """Put every file, then the manifest."""
        async with self._client() as s3:
            for f in manifest.files:
                # Read in a thread; each file is held in memory once (checkpoint SSTs of small
                # per-partition DBs; multipart upload would be the next step for very large ones).
                body = await asyncio.to_thread((directory / f.name).read_bytes)
                await s3.put_object(Bucket=self.bucket, Key=manifest.prefix + f.name, Body=body)
            await s3.put_object(
                Bucket=self.bucket,
                Key=manifest.prefix + MANIFEST,
                Body=manifest.to_json(),
                ContentType="application/json",
            )

    async def manifests(self, app_id: str, table: str | None = None) -> list[Manifest]:
        """List the app's keys and read every ``manifest.json``."""
        found = []
        async with self._client() as s3:
            paginator = s3.get_paginator("list_objects_v2")
            keys: list[str] = []
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=_list_prefix(app_id, table)):
                keys.extend(item["Key"] for item in page.get("Contents", []))
            for key in sorted(k for k in keys if k.endswith("/" + MANIFEST)):
                response = await s3.get_object(Bucket=self.bucket, Key=key)
                async with response["Body"] as body:
                    found.append(Manifest.from_json(await body.read()))
        return found

    async def download(self, manifest: Manifest, directory: Path) -> None:
        """Get every file of the snapshot into ``directory``."""
        await asyncio.to_thread(directory.mkdir, parents=True)
        async with self._client() as s3:
            for f in manifest.files:
                response = await s3.get_object(Bucket=self.bucket, Key=manifest.prefix + f.name)
                async with response["Body"] as body:
                    data = await body.read()
                await asyncio.to_thread((directory / f.name).write_bytes, data)


def snapshot_store(settings: Settings) -> SnapshotStore:
    """S3 when ``RISKENGINE_S3_BUCKET`` is set, else the local ``RISKENGINE_WORKER_SNAPSHOT_DIR``."""
    if settings.s3_bucket:
        return S3Store(settings)
    return LocalStore(settings.worker_snapshot_dir)


# -- restore -----------------------------------------------------------------------------------


def refuse_existing(target: Path) -> None:
    """Raise :class:`SnapshotError` if ``target`` is a non-empty partition DB (restore needs --force)."""
    if target.exists() and any(target.iterdir()):
        raise SnapshotError(
            f"{target} already holds a partition DB: stop the worker and pass --force to replace it"
        )


async def restore_partition(store: SnapshotStore, manifest: Manifest, datadir: Path, force: bool) -> Path:
    """Write ``manifest``'s snapshot as the partition DB under ``datadir``; returns the DB path.

    Refuses a snapshot of a newer state format than this release reads, and an existing non-empty
    partition DB unless ``force``. The files go to a staging folder first and replace the DB only
    once complete and verified (sizes and the stored changelog offset), so a failed download never
    leaves a half-written DB behind.
    """
    if manifest.state_format > FORMAT_VERSION:
        raise SnapshotError(
            f"snapshot {manifest.snapshot_id} has state format {manifest.state_format}, newer than "
            f"this release's {FORMAT_VERSION}: restore it with a newer release"
        )
    from riskengine.worker.tables.user_state import TABLE_FORMAT

    if manifest.table_format > TABLE_FORMAT:
        raise SnapshotError(
            f"snapshot {manifest.snapshot_id} has table format {manifest.table_format}, newer than "
            f"this release's {TABLE_FORMAT}: restore it with a newer release"
        )
    target = table_path(datadir, manifest.table, manifest.partition)
    if not force:
        refuse_existing(target)
    staging = target.with_name(target.name + ".restoring")
    await asyncio.to_thread(shutil.rmtree, staging, True)
    await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
    try:
        await store.download(manifest, staging)
        for f in manifest.files:
            size = (staging / f.name).stat().st_size
            if size != f.size:
                raise SnapshotError(f"{f.name}: {size} bytes, the manifest says {f.size}")
        offset = await asyncio.to_thread(read_offset, staging)
        if offset != manifest.changelog_offset:
            raise SnapshotError(
                f"restored DB holds changelog offset {offset}, the manifest says {manifest.changelog_offset}"
            )
        await asyncio.to_thread(shutil.rmtree, target, True)
        staging.rename(target)
    finally:
        await asyncio.to_thread(shutil.rmtree, staging, True)
    return target


# -- the worker side ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Checkpoint:
    table: str
    partition: int
    changelog_topic: str
    directory: Path


class Snapshotter:
    """Checkpoints the worker's active table partitions and uploads them (timer and admin view)."""

    def __init__(self, app: faust.App, store: SnapshotStore) -> None:
        self.app = app
        self.store = store
        # One snapshot at a time: the timer and the admin view may both ask.
        self._lock = asyncio.Lock()
        #: (table, partition) -> changelog offset of the last snapshot uploaded by this worker
        self.uploaded: dict[tuple[str, int], int] = {}

    async def snapshot(self) -> list[Manifest]:
        """Snapshot every active partition now; returns the manifests written.

        A partition whose changelog offset has not moved since this worker's last upload of it is
        skipped: its snapshot would hold the same state. Raises :class:`SnapshotError` while tables
        recover (their DBs are then being rewritten).
        """
        from riskengine.worker.faust_compat import recovering

        async with self._lock:
            if recovering(self.app):
                raise SnapshotError("tables are recovering or rebalancing; try again later")
            work = Path(self.app.conf.datadir) / "snapshot-work" / f"{time.time_ns()}"
            try:
                checkpoints = self._checkpoint(work)
                manifests = []
                for checkpoint in checkpoints:
                    manifest = await asyncio.to_thread(self._describe, checkpoint)
                    key = (checkpoint.table, checkpoint.partition)
                    if manifest is None or self.uploaded.get(key) == manifest.changelog_offset:
                        continue
                    await self.store.upload(manifest, checkpoint.directory)
                    self.uploaded[key] = manifest.changelog_offset
                    manifests.append(manifest)
            finally:
                await asyncio.to_thread(shutil.rmtree, work, True)
        for manifest in manifests:
            log.info(
                "snapshot %s/%d at changelog offset %d (%d bytes) -> %s",
                manifest.table,
                manifest.partition,
                manifest.changelog_offset,
                manifest.size,
                self.store.location,
            )
        return manifests

    async def on_timer(self) -> None:
        """The periodic snapshot: skipped during recovery; a failure is logged, never raised."""
        try:
            await self.snapshot()
        except SnapshotError as exc:
            log.info("snapshot skipped: %s", exc)
        except Exception:  # An unreachable store must not stop the worker; the next run retries.
            log.exception("snapshot failed")

    def _checkpoint(self, work: Path) -> list[_Checkpoint]:
        """Checkpoint the active partition DBs, synchronously on the event loop.

        Running between two events means no table write interleaves, and the checkpoint (a memtable
        flush plus hard links) is quick for the small per-partition DBs the settings allow.
        """
        import rocksdict

        from riskengine.worker.faust_compat import held_partitions

        actives = self.app.assignor.assigned_actives()
        done = []
        for table in self.app.tables.values():
            topic = table.changelog_topic.get_topic_name()
            for partition, db in sorted(held_partitions(table).items()):
                # Standby partitions are skipped: their owner snapshots them.
                if (topic, partition) not in actives:
                    continue
                directory = work / f"{table.name}-{partition}"
                directory.parent.mkdir(parents=True, exist_ok=True)
                rocksdict.Checkpoint(db).create_checkpoint(str(directory))
                done.append(_Checkpoint(table.name, partition, topic, directory))
        return done

    def _describe(self, checkpoint: _Checkpoint) -> Manifest | None:
        """The manifest of a checkpoint; None when it has no changelog offset yet (nothing applied)."""
        from riskengine.worker.tables.user_state import TABLE_FORMAT, TABLE_NAME

        files = checkpoint_files(checkpoint.directory)
        offset = read_offset(checkpoint.directory)
        if offset is None:
            return None
        created = int(time.time() * 1000)
        return Manifest(
            snapshot_id=new_snapshot_id(created, offset),
            app_id=self.app.conf.id,
            table=checkpoint.table,
            partition=checkpoint.partition,
            changelog_topic=checkpoint.changelog_topic,
            changelog_offset=offset,
            created_at_ms=created,
            state_format=FORMAT_VERSION,
            table_format=TABLE_FORMAT if checkpoint.table == TABLE_NAME else 0,
            files=files,
        )
