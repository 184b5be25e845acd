"""``riskengine snapshot list|restore``: the table snapshots workers upload (riskengine.worker.snapshots)."""

from __future__ import annotations

import argparse
from pathlib import Path

from riskengine.cli.unreachable import ServiceUnreachable, reaching, report
from riskengine.settings import Settings
from riskengine.worker.snapshots import (
    SnapshotError,
    Staged,
    check_restorable,
    discard,
    iso_time,
    latest,
    refuse_existing,
    replace_partition,
    restore_target,
    snapshot_store,
    stage_partition,
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``snapshot`` command."""
    parser = subparsers.add_parser(
        "snapshot",
        help="list table snapshots or seed a worker's datadir from the latest ones",
        description="Snapshots are in RISKENGINE_S3_BUCKET, or in RISKENGINE_WORKER_SNAPSHOT_DIR when "
        "the bucket is empty; RISKENGINE_WORKER_APP_ID selects the deployment.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list", help="print every snapshot: table, partition, offset, time, size; invalid manifests and why"
    )
    listing.add_argument("--table", help="only this table (e.g. user-state)")
    listing.set_defaults(handler=list_snapshots)
    restore = actions.add_parser(
        "restore",
        help="write the latest snapshot of each partition into a (stopped) worker's datadir",
    )
    restore.add_argument("--datadir", type=Path, required=True, help="the worker's --datadir")
    restore.add_argument("--table", help="only this table (default: every table)")
    restore.add_argument(
        "--partitions", type=int, nargs="+", metavar="N", help="only these partitions (default: all)"
    )
    restore.add_argument(
        "--force", action="store_true", help="replace partition DBs that already exist in the datadir"
    )
    restore.add_argument(
        "--allow-unverified",
        action="store_true",
        help="also restore snapshots whose manifest has no checksums (format 1, before checksums)",
    )
    restore.set_defaults(handler=restore_snapshots)


def list_snapshots(args: argparse.Namespace, settings: Settings) -> int:
    """Print the snapshots of the configured app id, oldest first per partition, then the invalid
    manifests with the reason (one bad manifest does not hide the others; the exit status stays 0)."""
    store = snapshot_store(settings)
    try:
        scan = reaching(store.scan(settings.worker_app_id, args.table), settings)
    except ServiceUnreachable as exc:
        return report("snapshot", exc)
    except SnapshotError as exc:
        print(f"riskengine snapshot: {exc}")
        return 1
    manifests = scan.manifests
    invalid = f", {len(scan.invalid)} invalid" if scan.invalid else ""
    print(f"snapshots of {settings.worker_app_id} in {store.location}: {len(manifests)}{invalid}")
    if manifests:
        print(
            f"{'table':16} {'partition':>9} {'offset':>10} {'created (UTC)':24} {'bytes':>10}  "
            f"{'checksums':10} snapshot"
        )
    for m in sorted(manifests, key=lambda m: (m.table, m.partition, m.created_at_ms, m.changelog_offset)):
        print(
            f"{m.table:16} {m.partition:>9} {m.changelog_offset:>10} {iso_time(m.created_at_ms):24} "
            f"{m.size:>10}  {'sha256' if m.verified else 'none':10} {m.snapshot_id}"
        )
    for bad in scan.invalid:
        print(f"INVALID {bad.key}: {bad.reason}")
    return 0


def restore_snapshots(args: argparse.Namespace, settings: Settings) -> int:
    """Restore the latest snapshot of every selected partition; exit 1 with the reason on failure."""
    try:
        return reaching(_restore(args, settings), settings)
    except ServiceUnreachable as exc:
        return report("snapshot restore", exc)
    except SnapshotError as exc:
        print(f"riskengine snapshot restore: {exc}")
        return 1


async def _restore(args: argparse.Namespace, settings: Settings) -> int:
    store = snapshot_store(settings)
    scan = await store.scan(settings.worker_app_id, args.table)
    for bad in scan.invalid:
        # Never restored; the latest valid snapshot of its partition (if any) is used instead, and
        # the worker replays the changelog from that snapshot's offset.
        print(f"skipped invalid manifest {bad.key}: {bad.reason}")
    newest = latest(scan.manifests)
    chosen = [m for key, m in sorted(newest.items()) if args.partitions is None or key[1] in args.partitions]
    missing = sorted(set(args.partitions or ()) - {m.partition for m in chosen})
    if missing:
        raise SnapshotError(
            f"no snapshot of partition(s) {', '.join(map(str, missing))} of {settings.worker_app_id} "
            f"in {store.location}"
        )
    if not chosen:
        raise SnapshotError(f"no snapshots of {settings.worker_app_id} in {store.location}")
    # Check every snapshot and target, then download and verify every snapshot, and only then
    # replace anything: a refusal, a failed download or a checksum mismatch leaves the datadir as
    # it was, never half-restored.
    for m in chosen:
        check_restorable(m, args.allow_unverified)
        target = restore_target(args.datadir, m.table, m.partition)
        if not args.force:
            refuse_existing(target)
    staged: list[Staged] = []
    try:
        for m in chosen:
            staged.append(await stage_partition(store, m, args.datadir, args.force, args.allow_unverified))
        for ready in staged:
            path = await replace_partition(ready)
            m = ready.manifest
            print(
                f"restored {m.table}/{m.partition} at changelog offset {m.changelog_offset} "
                f"(snapshot {m.snapshot_id}, {iso_time(m.created_at_ms)}) -> {path}"
            )
    finally:
        for ready in staged:
            await discard(ready)
    print(f"{len(chosen)} partition(s) restored; the worker replays only the changelog after these offsets")
    return 0
