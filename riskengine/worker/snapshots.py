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

A store (a bucket anyone with its credentials writes, a shared folder) is not trusted: every
manifest field is validated (types, ranges, allowed characters of ids and names, the snapshot id's
format), a manifest must describe the key it was read from, the restore target must resolve
inside the datadir (symbolic links resolved), and every file's size and SHA-256, recorded at
snapshot time, is verified in a staging folder before anything in the datadir is replaced. A
manifest that fails is listed as invalid with the reason and never restored; the others are
unaffected. Manifests of format 1 (before checksums) are restored only when the caller allows
unverified snapshots (``--allow-unverified``).

Key layout (the same relative paths in the local folder)::

    {app id}/{table}/{partition}/{snapshot id}/{checkpoint file}
    {app id}/{table}/{partition}/{snapshot id}/manifest.json

An empty ``RISKENGINE_S3_BUCKET`` means "no S3": snapshots then go to
``RISKENGINE_WORKER_SNAPSHOT_DIR`` (:func:`snapshot_store`).

This module imports neither Faust nor rocksdict at import time, so the CLI stays light.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from riskengine.core import FORMAT_VERSION
from riskengine.errors import WorkerError
from riskengine.settings import Settings

if TYPE_CHECKING:
    import faust

log = logging.getLogger(__name__)

#: Version of the manifest document itself (2: a SHA-256 per file).
MANIFEST_FORMAT = 2
#: Manifests written before checksums: readable, restored only with ``allow_unverified``.
UNVERIFIED_MANIFEST_FORMAT = 1
MANIFEST = "manifest.json"
#: Limits of what a manifest may claim; generous for the engine's per-partition DBs, and small
#: enough that a hostile manifest cannot make a listing or a restore read or allocate without end.
MAX_MANIFEST_BYTES = 1 << 20
MAX_FILES = 10_000
MAX_FILE_BYTES = 1 << 40
MAX_PARTITION = 99_999
MAX_OFFSET = 2**63 - 1
MAX_FORMAT_VERSION = 1_000_000
#: 9999-12-31T23:59:59.999Z: the last time an ISO date (and a snapshot id) can carry.
MAX_CREATED_AT_MS = 253_402_300_799_999
# App ids and table names become key segments and a file name in the datadir: one segment of
# Kafka's topic characters, starting with a letter or digit (so never "." or "..").
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}", re.ASCII)
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}", re.ASCII)
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}", re.ASCII)
_SNAPSHOT_ID = re.compile(r"[0-9]{8}T[0-9]{9}Z-o[0-9]{1,19}", re.ASCII)
_SHA256 = re.compile(r"[0-9a-f]{64}", re.ASCII)
#: Where Faust keeps a partition DB's last applied changelog offset (``str(offset).encode()``).
OFFSET_KEY = b"__faust\x00offset__"
#: Faust's app ``version`` (the ``v1`` in the datadir layout); the engine never changes it.
APP_VERSION = 1


class SnapshotError(WorkerError):
    """A snapshot cannot be taken, read or restored; the message says why."""


@dataclass(frozen=True)
class SnapshotFile:
    """One file of a checkpoint, relative to the snapshot folder; ``sha256`` (hex) None before format 2."""

    name: str
    size: int
    sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The file's entry in ``manifest.json``."""
        entry: dict[str, Any] = {"name": self.name, "size": self.size}
        if self.sha256 is not None:
            entry["sha256"] = self.sha256
        return entry


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

    def __post_init__(self) -> None:
        # Every Manifest is safe to turn into keys and datadir paths, however it was made.
        _check_name("appId", self.app_id)
        _check_name("table", self.table)
        _check_pattern("snapshotId", self.snapshot_id, _SNAPSHOT_ID)
        _check_pattern("changelogTopic", self.changelog_topic, _TOPIC)
        _check_int("partition", self.partition, MAX_PARTITION)
        _check_int("changelogOffset", self.changelog_offset, MAX_OFFSET)
        _check_int("createdAtMs", self.created_at_ms, MAX_CREATED_AT_MS)
        _check_int("stateFormatVersion", self.state_format, MAX_FORMAT_VERSION)
        _check_int("tableFormatVersion", self.table_format, MAX_FORMAT_VERSION)
        if not 1 <= len(self.files) <= MAX_FILES:
            raise SnapshotError(
                f"a snapshot has 1 to {MAX_FILES} files, the manifest lists {len(self.files)}"
            )
        names = set()
        for f in self.files:
            _check_file_name(f.name)
            _check_int(f"size of {f.name!r}", f.size, MAX_FILE_BYTES)
            if f.sha256 is not None:
                _check_pattern(f"sha256 of {f.name!r}", f.sha256, _SHA256)
            if f.name in names:
                raise SnapshotError(f"file {f.name!r} is listed twice in the manifest")
            names.add(f.name)
        if len({f.sha256 is None for f in self.files}) > 1:
            raise SnapshotError("some files of the manifest have a sha256 and some do not")

    @property
    def verified(self) -> bool:
        """Whether every file has a SHA-256 to verify (format 2); False for format 1 manifests."""
        return all(f.sha256 is not None for f in self.files)

    @property
    def key(self) -> str:
        """The key (relative path) this manifest must be stored under."""
        return self.prefix + MANIFEST

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
            "manifestFormat": MANIFEST_FORMAT if self.verified else UNVERIFIED_MANIFEST_FORMAT,
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
            "files": [f.to_dict() for f in self.files],
        }

    def to_json(self) -> bytes:
        """``manifest.json``'s bytes."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, key: str | None = None) -> Manifest:
        """Parse and validate ``manifest.json``; :class:`SnapshotError` names what is wrong.

        ``key``: where the document was read from (the key, or the path relative to the store's
        folder); the manifest must describe exactly that key, so a manifest copied elsewhere (or
        naming another app, table, partition or snapshot than its place) is refused.
        """
        if len(data) > MAX_MANIFEST_BYTES:
            raise SnapshotError(f"manifest of {len(data)} bytes (at most {MAX_MANIFEST_BYTES})")
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise SnapshotError(f"manifest is not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise SnapshotError(f"manifest is a JSON {type(doc).__name__}, not an object")
        form = _field(doc, "manifestFormat", int)
        if form not in (MANIFEST_FORMAT, UNVERIFIED_MANIFEST_FORMAT):
            raise SnapshotError(f"unsupported manifest format {form!r}")
        entries = _field(doc, "files", list)
        if len(entries) > MAX_FILES:
            raise SnapshotError(f"a snapshot has 1 to {MAX_FILES} files, the manifest lists {len(entries)}")
        files = []
        for entry in entries:
            if not isinstance(entry, dict):
                raise SnapshotError(f"a files entry is a JSON {type(entry).__name__}, not an object")
            name = _field(entry, "name", str)
            digest = _field(entry, "sha256", str) if form == MANIFEST_FORMAT else None
            files.append(SnapshotFile(name, _field(entry, "size", int), digest))
        manifest = cls(
            snapshot_id=_field(doc, "snapshotId", str),
            app_id=_field(doc, "appId", str),
            table=_field(doc, "table", str),
            partition=_field(doc, "partition", int),
            changelog_topic=_field(doc, "changelogTopic", str),
            changelog_offset=_field(doc, "changelogOffset", int),
            created_at_ms=_field(doc, "createdAtMs", int),
            state_format=_field(doc, "stateFormatVersion", int),
            table_format=_field(doc, "tableFormatVersion", int),
            files=tuple(files),
        )
        expected_id = new_snapshot_id(manifest.created_at_ms, manifest.changelog_offset)
        if manifest.snapshot_id != expected_id:
            raise SnapshotError(
                f"snapshotId {manifest.snapshot_id!r} does not match createdAtMs and changelogOffset "
                f"({expected_id!r})"
            )
        if key is not None and key != manifest.key:
            raise SnapshotError(f"manifest read from {key!r} describes {manifest.key!r}")
        return manifest


@dataclass(frozen=True)
class InvalidManifest:
    """A ``manifest.json`` that cannot be used: where it is and why."""

    key: str
    reason: str


@dataclass(frozen=True)
class Scan:
    """What a store holds for an app: the valid manifests and the invalid ones."""

    manifests: list[Manifest]
    invalid: list[InvalidManifest]


_T = TypeVar("_T")


def _field(doc: dict[str, Any], name: str, kind: type[_T]) -> _T:
    """``doc[name]``, of JSON type ``kind`` exactly (a bool is not an int, a float is not either)."""
    if name not in doc:
        raise SnapshotError(f"manifest has no {name!r}")
    value = doc[name]
    if type(value) is not kind:
        raise SnapshotError(f"{name!r} is a JSON {type(value).__name__}, expected {kind.__name__}")
    return value


def _shown(value: object) -> str:
    # Error messages name the value, cut short: a hostile manifest chooses it.
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_pattern(what: str, value: object, pattern: re.Pattern[str]) -> None:
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise SnapshotError(f"invalid {what} {_shown(value)} in manifest")


def _check_name(what: str, value: object) -> None:
    """An app id or table name: one key segment and part of a datadir file name."""
    if not isinstance(value, str) or _NAME.fullmatch(value) is None:
        raise SnapshotError(
            f"invalid {what} {_shown(value)}: 1 to 200 of A-Z a-z 0-9 . _ -, starting with a letter or digit"
        )


def _check_int(what: str, value: object, maximum: int) -> None:
    if type(value) is not int or not 0 <= value <= maximum:
        raise SnapshotError(f"{what} {_shown(value)} is not an integer from 0 to {maximum}")


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
    if not isinstance(name, str) or _FILE_NAME.fullmatch(name) is None or name == MANIFEST:
        raise SnapshotError(f"invalid file name {_shown(name)} in manifest")


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file's bytes, in hex (read in chunks: checkpoint SSTs may be large)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def checkpoint_files(directory: Path) -> tuple[SnapshotFile, ...]:
    """The files of a checkpoint folder (RocksDB checkpoints are flat), with their SHA-256."""
    files = []
    for path in sorted(directory.iterdir()):
        if not path.is_file() or path.is_symlink():
            raise SnapshotError(f"unexpected non-file {path.name!r} in checkpoint {directory}")
        files.append(SnapshotFile(path.name, path.stat().st_size, sha256_of(path)))
    return tuple(files)


def verify_files(manifest: Manifest, directory: Path) -> None:
    """Check every file of ``directory`` against ``manifest``: size, then SHA-256 when recorded.

    :class:`SnapshotError` names the first file that does not match.
    """
    for f in manifest.files:
        path = directory / f.name
        size = path.stat().st_size
        if size != f.size:
            raise SnapshotError(f"{f.name}: {size} bytes, the manifest says {f.size}")
        if f.sha256 is not None:
            digest = sha256_of(path)
            if digest != f.sha256:
                raise SnapshotError(
                    f"{f.name}: SHA-256 {digest} does not match the manifest's {f.sha256} "
                    f"(snapshot {manifest.snapshot_id} of {manifest.table}/{manifest.partition})"
                )


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

    async def scan(self, app_id: str, table: str | None = None) -> Scan:
        """Every ``manifest.json`` of ``app_id`` (of ``table`` only, when given), valid or not."""
        ...

    async def manifests(self, app_id: str, table: str | None = None) -> list[Manifest]:
        """Every complete, valid snapshot of ``app_id`` (of ``table`` only); invalid ones are logged."""
        ...

    async def download(self, manifest: Manifest, directory: Path) -> None:
        """Write the snapshot's files into ``directory`` (created; must not exist)."""
        ...


def _list_prefix(app_id: str, table: str | None) -> str:
    # Both come from settings or the command line, and become a folder to walk: one segment each.
    _check_name("app id", app_id)
    if table is not None:
        _check_name("table", table)
    return f"{app_id}/{table}/" if table else f"{app_id}/"


def _valid(scan: Scan) -> list[Manifest]:
    for bad in scan.invalid:
        log.warning("invalid snapshot manifest %s ignored: %s", bad.key, bad.reason)
    return scan.manifests


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

    async def scan(self, app_id: str, table: str | None = None) -> Scan:
        """Every ``manifest.json`` under the app's (or table's) folder, each read on its own."""
        return await asyncio.to_thread(self._scan, app_id, table)

    async def manifests(self, app_id: str, table: str | None = None) -> list[Manifest]:
        """The valid manifests under the app's (or table's) folder."""
        return _valid(await self.scan(app_id, table))

    def _scan(self, app_id: str, table: str | None) -> Scan:
        base = self.root / _list_prefix(app_id, table)
        found: list[Manifest] = []
        invalid: list[InvalidManifest] = []
        if not base.is_dir():
            return Scan(found, invalid)
        for path in sorted(base.rglob(MANIFEST)):
            key = path.relative_to(self.root).as_posix()
            try:
                size = path.stat().st_size
                if size > MAX_MANIFEST_BYTES:
                    raise SnapshotError(f"manifest of {size} bytes (at most {MAX_MANIFEST_BYTES})")
                found.append(Manifest.from_json(path.read_bytes(), key))
            except SnapshotError as exc:
                invalid.append(InvalidManifest(key, str(exc)))
            except OSError as exc:
                invalid.append(InvalidManifest(key, f"unreadable: {exc}"))
        return Scan(found, invalid)

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

    async def scan(self, app_id: str, table: str | None = None) -> Scan:
        """List the app's keys and read every ``manifest.json``, each on its own."""
        from botocore.exceptions import ClientError

        found: list[Manifest] = []
        invalid: list[InvalidManifest] = []
        async with self._client() as s3:
            paginator = s3.get_paginator("list_objects_v2")
            sizes: dict[str, int] = {}
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=_list_prefix(app_id, table)):
                sizes.update((item["Key"], int(item.get("Size", 0))) for item in page.get("Contents", []))
            for key in sorted(k for k in sizes if k.endswith("/" + MANIFEST)):
                try:
                    if sizes[key] > MAX_MANIFEST_BYTES:
                        raise SnapshotError(f"manifest of {sizes[key]} bytes (at most {MAX_MANIFEST_BYTES})")
                    # A ranged read: an object that grew after the listing is still read bounded
                    # (aiobotocore's body takes no size argument).
                    response = await s3.get_object(
                        Bucket=self.bucket, Key=key, Range=f"bytes=0-{MAX_MANIFEST_BYTES}"
                    )
                    async with response["Body"] as body:
                        data = await body.read()
                    if len(data) > MAX_MANIFEST_BYTES:
                        raise SnapshotError(f"manifest over {MAX_MANIFEST_BYTES} bytes")
                    found.append(Manifest.from_json(data, key))
                except SnapshotError as exc:
                    invalid.append(InvalidManifest(key, str(exc)))
                except ClientError as exc:  # e.g. deleted between the listing and the read
                    invalid.append(InvalidManifest(key, f"unreadable: {exc}"))
        return Scan(found, invalid)

    async def manifests(self, app_id: str, table: str | None = None) -> list[Manifest]:
        """The app's valid manifests."""
        return _valid(await self.scan(app_id, table))

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


def _staging(target: Path) -> Path:
    return target.with_name(target.name + ".restoring")


def restore_target(datadir: Path, table: str, partition: int) -> Path:
    """Where ``table``/``partition`` is restored: :func:`table_path` under the resolved datadir.

    :class:`SnapshotError` unless it (and its staging folder) resolve inside the datadir and are
    not symbolic links: a table name or a link planted in the datadir must not make a restore
    delete or write anything elsewhere.
    """
    _check_name("table", table)
    _check_int("partition", partition, MAX_PARTITION)
    root = datadir.resolve()
    target = table_path(root, table, partition)
    for path in (target, _staging(target)):
        resolved = path.resolve()
        if not resolved.is_relative_to(root) or resolved == root:
            raise SnapshotError(f"restore target {path} resolves to {resolved}, outside the datadir {root}")
        if path.is_symlink():
            raise SnapshotError(f"restore target {path} is a symbolic link: remove it first")
    return target


def check_restorable(manifest: Manifest, allow_unverified: bool = False) -> None:
    """Refuse a snapshot this release cannot read, or without checksums unless ``allow_unverified``."""
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
    if not manifest.verified and not allow_unverified:
        raise SnapshotError(
            f"snapshot {manifest.snapshot_id} of {manifest.table}/{manifest.partition} has no "
            "checksums (manifest format 1): pass --allow-unverified to restore it anyway"
        )


@dataclass(frozen=True)
class Staged:
    """A snapshot downloaded and verified next to the partition DB it will replace."""

    manifest: Manifest
    target: Path
    staging: Path


async def stage_partition(
    store: SnapshotStore, manifest: Manifest, datadir: Path, force: bool, allow_unverified: bool = False
) -> Staged:
    """Download ``manifest``'s snapshot next to its partition DB and verify it; replaces nothing.

    Verified: every file's size and SHA-256 and the changelog offset the DB holds. On any failure
    the staging folder is removed and :class:`SnapshotError` says why (naming the file).
    """
    check_restorable(manifest, allow_unverified)
    target = restore_target(datadir, manifest.table, manifest.partition)
    if not force:
        refuse_existing(target)
    staging = _staging(target)
    await asyncio.to_thread(shutil.rmtree, staging, True)
    await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
    try:
        await store.download(manifest, staging)
        await asyncio.to_thread(verify_files, manifest, staging)
        offset = await asyncio.to_thread(read_offset, staging)
        if offset != manifest.changelog_offset:
            raise SnapshotError(
                f"restored DB holds changelog offset {offset}, the manifest says {manifest.changelog_offset}"
            )
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, staging, True)
        raise
    return Staged(manifest, target, staging)


async def replace_partition(staged: Staged) -> Path:
    """Replace the partition DB with the staged snapshot; returns the DB path."""
    await asyncio.to_thread(shutil.rmtree, staged.target, True)
    staged.staging.rename(staged.target)
    return staged.target


async def discard(staged: Staged) -> None:
    """Remove a staged snapshot that will not be used."""
    await asyncio.to_thread(shutil.rmtree, staged.staging, True)


async def restore_partition(
    store: SnapshotStore, manifest: Manifest, datadir: Path, force: bool, allow_unverified: bool = False
) -> Path:
    """Write ``manifest``'s snapshot as the partition DB under ``datadir``; returns the DB path.

    Refuses a snapshot of a newer state format than this release reads, one without checksums
    unless ``allow_unverified``, a target outside ``datadir``, and an existing non-empty partition
    DB unless ``force``. The files go to a staging folder first and replace the DB only once
    complete and verified (sizes, SHA-256 and the stored changelog offset), so a failed download
    or a damaged file never leaves a half-written DB behind.
    """
    staged = await stage_partition(store, manifest, datadir, force, allow_unverified)
    try:
        return await replace_partition(staged)
    finally:
        await discard(staged)


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
